//! The kafka destination type (Outpost's): each event produced as one record to a topic,
//! keyed by the event id or a partition key template, logged in with SASL (PLAIN or SCRAM),
//! optionally over TLS, acknowledged by all in-sync replicas. `rules` checks API writes,
//! `target` parses a stored destination once, `publisher` holds its client.

mod publisher;
mod rules;
mod target;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;

pub use publisher::KafkaPublisher;
pub use rules::TYPE;
pub use target::KafkaTarget;

use super::{CredentialsWrite, DestinationType, Fields, Outcome, Publisher, login};
use crate::store::{Destination, Event};

/// The kafka type. Each destination builds its own client.
pub struct KafkaType {
    block_private_ips: bool,
    timeout: Duration,
}

impl KafkaType {
    /// `timeout` bounds one attempt, connecting included; `block_private_ips` refuses
    /// brokers on non-public addresses.
    pub fn new(block_private_ips: bool, timeout: Duration) -> KafkaType {
        KafkaType {
            block_private_ips,
            timeout,
        }
    }
}

impl DestinationType for KafkaType {
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
        login::validate(credentials)
    }

    fn prepare_credentials(&self, write: CredentialsWrite<'_>) -> Result<Fields, Vec<String>> {
        Ok(login::kept(write.merged))
    }

    fn resolve_config<'a>(
        &'a self,
        config: Fields,
        _credentials: &'a Fields,
        _original: Option<&'a Fields>,
    ) -> BoxFuture<'a, Result<Fields, Vec<String>>> {
        Box::pin(async move { Ok(rules::normalized(config)) })
    }

    fn displayed_credentials(&self, credentials: &Fields, _now: DateTime<Utc>) -> Fields {
        login::displayed(credentials)
    }

    fn target(&self, config: &Fields) -> String {
        rules::target(config)
    }

    fn open(&self, destination: &Destination) -> Result<Arc<dyn Publisher>, String> {
        let target = KafkaTarget::parse(destination)?;
        Ok(Arc::new(KafkaPublisher::new(
            target,
            self.block_private_ips,
            self.timeout,
        )))
    }
}

impl Publisher for KafkaPublisher {
    fn publish<'a>(&'a self, event: &'a Event) -> BoxFuture<'a, Outcome> {
        Box::pin(KafkaPublisher::publish(self, event))
    }

    fn close(&self) {
        KafkaPublisher::close(self);
    }
}
