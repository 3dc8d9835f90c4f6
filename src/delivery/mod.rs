//! Delivery: sending events to destinations. The dispatcher takes deliveries handed over by
//! ingest and claims due ones from the store, within its lanes (`lanes`), and sends each as one
//! attempt through the destination's publisher (`destination::Registry`), then applies the
//! retry policy, alerts and operator events.

pub mod alert;
mod completions;
pub mod dispatcher;
mod lanes;
pub mod operator_events;
pub mod retry;

pub use dispatcher::{
    Dispatcher, DispatcherError, DispatcherHealth, DispatcherOptions, DispatcherStatus, Handoff,
    Reserved,
};
pub use operator_events::OperatorEvents;
pub use retry::{RetryPolicy, Verdict};
