//! Delivery: sending events to destinations. The dispatcher takes deliveries handed over by
//! ingest and claims due ones from the store, within its lanes (`lanes`), and sends each through
//! the webhook provider (one attempt, its signatures and its outcome, through the SSRF guard),
//! then applies the retry policy, alerts and operator events.

pub mod alert;
pub mod attempt;
pub mod claimed;
mod completions;
pub mod dispatcher;
mod lanes;
pub mod operator_events;
pub mod retry;
pub mod signature;
pub mod ssrf;
pub mod webhook;

pub use attempt::{AttemptCode, AttemptResult};
pub use dispatcher::{
    Dispatcher, DispatcherError, DispatcherHealth, DispatcherOptions, DispatcherStatus, Handoff,
    Reserved,
};
pub use operator_events::OperatorEvents;
pub use retry::{RetryPolicy, Verdict};
pub use signature::WebhookCredentials;
pub use webhook::{WebhookProvider, WebhookRequest, validate_custom_headers, validate_webhook_url};
