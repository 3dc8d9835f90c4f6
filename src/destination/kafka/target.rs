//! A kafka destination as the dispatcher opens it: its stored `config` and `credentials`
//! parsed once into where and as whom its records go.

use std::collections::BTreeMap;

use super::rules::{self, Broker, Mechanism};
use crate::config::Secret;
use crate::destination::login::{PASSWORD, USERNAME};
use crate::destination::template::Template;
use crate::store::Destination;

/// Where a kafka destination's records go. Debug output never shows the password.
#[derive(Debug)]
pub struct KafkaTarget {
    /// `tenant/destination`, the client id the brokers see.
    pub name: String,
    /// `config.brokers` as stored, for messages.
    pub brokers_text: String,
    pub brokers: Vec<Broker>,
    pub topic: String,
    pub tls: bool,
    pub login: Login,
    /// `None`: the event id is the record key.
    pub partition_key: Option<Template>,
    pub delivery_metadata: BTreeMap<String, String>,
}

/// A SASL login.
#[derive(Debug)]
pub struct Login {
    pub mechanism: Mechanism,
    pub username: String,
    pub password: Secret,
}

impl KafkaTarget {
    /// Parses `destination`; an error names the field that makes publishing impossible.
    pub fn parse(destination: &Destination) -> Result<KafkaTarget, String> {
        let config = &destination.config;
        let credentials = &destination.credentials.0;
        let fix = |problem: String| format!("destination {problem}");
        let brokers = rules::brokers(config).map_err(fix)?;
        let topic = config
            .get("topic")
            .filter(|t| !t.is_empty())
            .ok_or("destination config.topic is missing; set the topic to produce to")?;
        let login = Login {
            mechanism: rules::mechanism(config).map_err(fix)?,
            username: credentials
                .get(USERNAME)
                .filter(|u| !u.is_empty())
                .ok_or("destination credentials.username is missing; set the SASL user")?
                .clone(),
            password: Secret::new(
                credentials
                    .get(PASSWORD)
                    .ok_or("destination credentials.password is missing; set the SASL password")?
                    .clone(),
            ),
        };
        Ok(KafkaTarget {
            name: format!("jetpost-{}/{}", destination.tenant_id, destination.id),
            brokers_text: config.get("brokers").cloned().unwrap_or_default(),
            brokers,
            topic: topic.clone(),
            tls: rules::tls(config).map_err(fix)?,
            login,
            partition_key: rules::partition_key_template(config).map_err(fix)?,
            delivery_metadata: destination.delivery_metadata.clone().unwrap_or_default(),
        })
    }
}
