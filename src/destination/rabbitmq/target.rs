//! A rabbitmq destination as the dispatcher opens it: its stored `config` and `credentials`
//! parsed once into where and as whom its messages go.

use std::collections::BTreeMap;

use super::rules;
use crate::config::Secret;
use crate::destination::login::{PASSWORD, USERNAME};
use crate::store::Destination;

/// Where a rabbitmq destination's messages go. Debug output never shows the password.
#[derive(Debug, Clone)]
pub struct RabbitMqTarget {
    /// `tenant/destination`, the connection's name in RabbitMQ's management views.
    pub name: String,
    /// `config.server_url` as written, for messages.
    pub server_url: String,
    pub host: String,
    pub port: u16,
    pub tls: bool,
    pub exchange: String,
    pub username: String,
    pub password: Secret,
    pub delivery_metadata: BTreeMap<String, String>,
}

impl RabbitMqTarget {
    /// Parses `destination`; an error names the field that makes publishing impossible.
    pub fn parse(destination: &Destination) -> Result<RabbitMqTarget, String> {
        let config = &destination.config;
        let credentials = &destination.credentials.0;
        let tls = rules::tls(config).map_err(|e| format!("destination {e}"))?;
        let server_url = config.get("server_url").cloned().unwrap_or_default();
        let (host, port) =
            rules::host_and_port(&server_url, tls).map_err(|e| format!("destination {e}"))?;
        let exchange = config
            .get("exchange")
            .filter(|e| !e.is_empty())
            .ok_or("destination config.exchange is missing; set the exchange to publish to")?;
        let username = credentials
            .get(USERNAME)
            .filter(|u| !u.is_empty())
            .ok_or("destination credentials.username is missing; set the RabbitMQ user")?;
        let password = credentials
            .get(PASSWORD)
            .ok_or("destination credentials.password is missing; set the RabbitMQ password")?;
        Ok(RabbitMqTarget {
            name: format!("{}/{}", destination.tenant_id, destination.id),
            server_url,
            host,
            port,
            tls,
            exchange: exchange.clone(),
            username: username.clone(),
            password: Secret::new(password.clone()),
            delivery_metadata: destination.delivery_metadata.clone().unwrap_or_default(),
        })
    }
}
