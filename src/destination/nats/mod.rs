//! The nats destination type (a jetpost addition): each event published to a subject on the
//! tenant's own NATS server, optionally acknowledged by a JetStream stream. `rules` checks API
//! writes, `target` parses a stored destination once, `publisher` holds its client.

mod publisher;
mod rules;
mod target;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;

pub use publisher::NatsPublisher;
pub use rules::TYPE;
pub use target::NatsTarget;

use super::{CredentialsWrite, DestinationType, Fields, Outcome, Publisher};
use crate::store::{Destination, Event};

/// The nats type. Each destination opens its own client.
pub struct NatsType {
    block_private_ips: bool,
    timeout: Duration,
}

impl NatsType {
    /// `timeout` bounds one attempt, connecting included; `block_private_ips` refuses
    /// servers on non-public addresses.
    pub fn new(block_private_ips: bool, timeout: Duration) -> NatsType {
        NatsType {
            block_private_ips,
            timeout,
        }
    }
}

impl DestinationType for NatsType {
    fn name(&self) -> &'static str {
        TYPE
    }

    fn metadata(&self) -> serde_json::Value {
        rules::schema()
    }

    fn validate_config(&self, config: &Fields) -> Vec<String> {
        rules::validate_config(config, self.block_private_ips)
    }

    fn validate_credentials(&self, credentials: &Fields) -> Vec<String> {
        rules::validate_credentials(credentials)
    }

    fn prepare_credentials(&self, write: CredentialsWrite<'_>) -> Result<Fields, Vec<String>> {
        Ok(rules::prepare_credentials(write.merged))
    }

    fn displayed_credentials(&self, credentials: &Fields, _now: DateTime<Utc>) -> Fields {
        rules::displayed_credentials(credentials)
    }

    fn target(&self, config: &Fields) -> String {
        rules::target(config)
    }

    fn open(&self, destination: &Destination) -> Result<Arc<dyn Publisher>, String> {
        let target = NatsTarget::parse(destination)?;
        Ok(Arc::new(NatsPublisher::new(
            target,
            self.block_private_ips,
            self.timeout,
        )))
    }
}

impl Publisher for NatsPublisher {
    fn publish<'a>(&'a self, event: &'a Event) -> BoxFuture<'a, Outcome> {
        Box::pin(NatsPublisher::publish(self, event))
    }

    fn close(&self) {
        NatsPublisher::close(self);
    }
}
