//! Delivery: sending events to destinations. The dispatcher takes deliveries handed over by
//! ingest through its `Inbox` and claims due ones from the store, within its lanes (`lanes`),
//! and sends each as one attempt through the destination's publisher (`destination::Registry`),
//! then applies the retry policy, alerts and operator events (`aftermath`).

mod aftermath;
pub mod alert;
mod attempt;
mod backoff;
mod claim;
mod completions;
pub mod dispatcher;
mod health;
mod inbox;
mod lanes;
pub mod operator_events;
pub mod options;
pub mod retry;

pub use dispatcher::{Dispatcher, DispatcherError};
pub use health::{DispatcherHealth, DispatcherStatus};
pub use inbox::{Handoff, Inbox, Reserved};
pub use operator_events::OperatorEvents;
pub use options::{DEFAULT_MAX_IDLE_WAIT, DispatcherOptions, LEASE_MARGIN, default_owner};
pub use retry::{RetryPolicy, Verdict};
