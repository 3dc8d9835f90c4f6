//! The webhook destination type: events POSTed to a URL, signed in Outpost's default format
//! or Standard Webhooks format, through the SSRF guard. `rules` checks API writes, `target`
//! parses a stored destination once, `provider` sends one request over the shared HTTP client.

mod attempt;
mod provider;
mod rules;
pub mod signature;
mod ssrf;
mod target;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;

pub use attempt::{AttemptResult, parse_retry_after};
pub use provider::{
    CustomHeaderError, ProviderError, STANDARD_HEADER_PREFIX, UrlError, WebhookProvider,
    WebhookRequest, validate_custom_headers, validate_webhook_url,
};
pub use rules::TYPE;
pub use signature::WebhookCredentials;
pub use ssrf::{BlockedAddress, blocked_reason};
pub use target::WebhookTarget;

use super::{CredentialsWrite, DestinationType, Fields, Outcome, Publisher};
use crate::store::{Destination, Event};

/// The webhook type, with the HTTP client every webhook destination shares (the
/// per-destination part is only the parsed `WebhookTarget`).
pub struct WebhookType {
    provider: WebhookProvider,
}

impl WebhookType {
    pub fn new(provider: WebhookProvider) -> WebhookType {
        WebhookType { provider }
    }
}

impl DestinationType for WebhookType {
    fn name(&self) -> &'static str {
        rules::TYPE
    }

    fn metadata(&self) -> serde_json::Value {
        rules::schema(self.provider.mode())
    }

    fn validate_config(&self, config: &Fields) -> Vec<String> {
        rules::validate_config(config, self.provider.settings())
    }

    fn validate_credentials(&self, credentials: &Fields) -> Vec<String> {
        rules::validate_credentials(credentials)
    }

    fn prepare_credentials(&self, write: CredentialsWrite<'_>) -> Result<Fields, Vec<String>> {
        rules::prepare_credentials(
            write.merged,
            write.sent,
            write.original,
            write.writer,
            self.provider.mode(),
            write.now,
        )
    }

    fn displayed_credentials(&self, credentials: &Fields, now: DateTime<Utc>) -> Fields {
        rules::displayed_credentials(credentials, now)
    }

    fn target(&self, config: &Fields) -> String {
        config.get("url").cloned().unwrap_or_default()
    }

    fn open(&self, destination: &Destination) -> Result<Arc<dyn Publisher>, String> {
        Ok(Arc::new(OpenedWebhook {
            target: WebhookTarget::parse(destination)?,
            provider: self.provider.clone(),
        }))
    }
}

/// A webhook destination opened for delivery.
struct OpenedWebhook {
    target: WebhookTarget,
    provider: WebhookProvider,
}

impl Publisher for OpenedWebhook {
    fn publish<'a>(&'a self, event: &'a Event) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let request = self.target.request(event);
            self.provider.send(&request).await.into_outcome()
        })
    }
}
