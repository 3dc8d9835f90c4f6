//! A nats destination as the dispatcher opens it: its stored `config` and `credentials`
//! parsed once into where, how and as whom its messages go.

use std::collections::BTreeMap;

use super::rules::{self, CREDS, PASSWORD, ServerAddr, TOKEN, TOPIC_PLACEHOLDER, USERNAME};
use crate::config::Secret;
use crate::store::Destination;

/// How the client logs in. Debug output never shows a secret.
#[derive(Debug, Clone)]
pub enum Login {
    None,
    Creds(Secret),
    Token(Secret),
    User { username: String, password: Secret },
}

/// Where a nats destination's messages go.
#[derive(Debug, Clone)]
pub struct NatsTarget {
    /// `tenant/destination`, the client's name in the server's `/connz`.
    pub name: String,
    pub servers: Vec<ServerAddr>,
    /// `config.servers` as written, for messages.
    pub servers_text: String,
    /// `config.subject`, `{topic}` not yet replaced.
    pub subject: String,
    pub jetstream: bool,
    pub login: Login,
    pub delivery_metadata: BTreeMap<String, String>,
}

impl NatsTarget {
    /// Parses `destination`; an error names the field that makes publishing impossible.
    pub fn parse(destination: &Destination) -> Result<NatsTarget, String> {
        let config = &destination.config;
        let credentials = &destination.credentials.0;
        let in_destination = |e: String| format!("destination {e}");
        let servers = rules::servers(config).map_err(in_destination)?;
        let jetstream = rules::jetstream(config).map_err(in_destination)?;
        let subject = config
            .get("subject")
            .filter(|s| !s.is_empty())
            .ok_or("destination config.subject is missing; set the subject to publish to")?;
        let get = |key: &str| credentials.get(key).filter(|v| !v.is_empty());
        let login = match (get(CREDS), get(TOKEN), get(USERNAME), get(PASSWORD)) {
            (Some(creds), ..) => Login::Creds(Secret::new(creds.clone())),
            (None, Some(token), ..) => Login::Token(Secret::new(token.clone())),
            (None, None, Some(username), password) => Login::User {
                username: username.clone(),
                password: Secret::new(password.cloned().unwrap_or_default()),
            },
            _ => Login::None,
        };
        Ok(NatsTarget {
            name: format!("{}/{}", destination.tenant_id, destination.id),
            servers_text: config.get("servers").cloned().unwrap_or_default(),
            servers,
            subject: subject.clone(),
            jetstream,
            login,
            delivery_metadata: destination.delivery_metadata.clone().unwrap_or_default(),
        })
    }

    /// The subject of an event on `topic`.
    pub fn subject_for(&self, topic: &str) -> String {
        self.subject.replace(TOPIC_PLACEHOLDER, topic)
    }
}
