//! Delivery: sending events to destinations. This part holds the webhook provider (one
//! attempt, its signatures and its outcome) and the SSRF guard it connects through.

pub mod attempt;
pub mod signature;
pub mod ssrf;
pub mod webhook;

pub use attempt::{AttemptCode, AttemptResult};
pub use signature::WebhookCredentials;
pub use webhook::{WebhookProvider, WebhookRequest, validate_custom_headers, validate_webhook_url};
