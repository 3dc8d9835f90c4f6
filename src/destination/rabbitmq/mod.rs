//! The rabbitmq destination type (Outpost's): each event published to an exchange over AMQP
//! 0-9-1 with the topic as routing key, confirmed by the broker. `rules` checks API writes,
//! `target` parses a stored destination once, `publisher` holds its connection.

mod publisher;
mod rules;
mod target;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;

pub use publisher::RabbitMqPublisher;
pub use rules::TYPE;
pub use target::RabbitMqTarget;

use super::{CredentialsWrite, DestinationType, Fields, Outcome, Publisher, login};
use crate::store::{Destination, Event};

/// The rabbitmq type. Each destination opens its own connection.
pub struct RabbitMqType {
    block_private_ips: bool,
    timeout: Duration,
}

impl RabbitMqType {
    /// `timeout` bounds one attempt, connecting included; `block_private_ips` refuses
    /// servers on non-public addresses.
    pub fn new(block_private_ips: bool, timeout: Duration) -> RabbitMqType {
        RabbitMqType {
            block_private_ips,
            timeout,
        }
    }
}

impl DestinationType for RabbitMqType {
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

    fn displayed_credentials(&self, credentials: &Fields, _now: DateTime<Utc>) -> Fields {
        login::displayed(credentials)
    }

    fn target(&self, config: &Fields) -> String {
        rules::target(config)
    }

    fn open(&self, destination: &Destination) -> Result<Arc<dyn Publisher>, String> {
        let target = RabbitMqTarget::parse(destination)?;
        Ok(Arc::new(RabbitMqPublisher::new(
            target,
            self.block_private_ips,
            self.timeout,
        )))
    }
}

impl Publisher for RabbitMqPublisher {
    fn publish<'a>(&'a self, event: &'a Event) -> BoxFuture<'a, Outcome> {
        Box::pin(RabbitMqPublisher::publish(self, event))
    }

    fn close(&self) {
        RabbitMqPublisher::close(self);
    }
}
