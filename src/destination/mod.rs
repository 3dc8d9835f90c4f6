//! Destinations: where events go. Every destination type (`webhook`, `hookdeck`, `rabbitmq`,
//! `nats`, `aws_sqs`, `aws_s3`, `aws_kinesis`, `kafka`, one module each) provides the same
//! shape: its `/destination-types` description, its `config` and `credentials` rules
//! (checked once at API write), and a publisher opened once per destination version that sends
//! one event and reports the outcome. The `Registry` holds the types and the opened publishers;
//! the API and the dispatcher reach types only through it.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;

use crate::store::{Destination, Event};

pub mod aws;
pub mod dial;
pub mod gauge;
pub mod hookdeck;
pub mod kafka;
pub mod login;
pub mod metadata;
pub mod nats;
pub mod outcome;
pub mod rabbitmq;
mod registry;
pub mod template;
pub mod webhook;

pub use outcome::{AttemptCode, Outcome, OutcomeClass, UnknownAttemptCode};
pub use registry::{BUILTIN_TYPES, IDLE_CLOSE, Registry, UNAVAILABLE_TYPES};

/// A destination's `config` or `credentials`: Outpost keeps both as maps of strings.
pub type Fields = BTreeMap<String, String>;

/// Who is writing a destination's credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writer {
    Admin,
    Tenant,
}

/// What a credentials write asks for, for `DestinationType::prepare_credentials`.
#[derive(Debug, Clone, Copy)]
pub struct CredentialsWrite<'a> {
    /// The requested credentials: a create's, or the stored ones merged with a patch.
    pub merged: &'a Fields,
    /// What this request itself sent.
    pub sent: &'a Fields,
    /// The stored credentials on update; `None` on create.
    pub original: Option<&'a Fields>,
    pub writer: Writer,
    pub now: DateTime<Utc>,
}

/// One destination type. Validation messages name their field (`config.url is required`);
/// the API answers them as a 422.
pub trait DestinationType: Send + Sync {
    /// The `type` of its destinations (`webhook`).
    fn name(&self) -> &'static str;

    /// Its `/destination-types` entry, in Outpost's shape (`type`, `label`, `description`,
    /// `icon`, `instructions`, `config_fields`, `credential_fields`).
    fn metadata(&self) -> serde_json::Value;

    /// Problems with a destination's `config`, each naming its field.
    fn validate_config(&self, config: &Fields) -> Vec<String>;

    /// Problems with the credentials to be stored, each naming its field.
    fn validate_credentials(&self, credentials: &Fields) -> Vec<String>;

    /// The credentials to store for `write` (generated secrets, rotations, who may set
    /// what), or the problems, each naming its field.
    fn prepare_credentials(&self, write: CredentialsWrite<'_>) -> Result<Fields, Vec<String>>;

    /// Completes a write that passed validation, where the type asks its service: the
    /// config to store (e.g. what the service says about the credentials), or the problems,
    /// each naming its field. `original` holds the stored credentials on update. By default
    /// the config is kept as sent.
    fn resolve_config<'a>(
        &'a self,
        config: Fields,
        _credentials: &'a Fields,
        _original: Option<&'a Fields>,
    ) -> BoxFuture<'a, Result<Fields, Vec<String>>> {
        Box::pin(async move { Ok(config) })
    }

    /// The credentials as API responses show them. By default every value is masked.
    fn displayed_credentials(&self, credentials: &Fields, _now: DateTime<Utc>) -> Fields {
        masked(credentials)
    }

    /// Outpost's read-only `target` of a destination: where its events go, for people.
    fn target(&self, config: &Fields) -> String;

    /// The publisher for this version of `destination`, with its config and credentials
    /// parsed. An error says which field makes publishing impossible; the attempt then fails
    /// as `invalid_request` (permanent) until the destination is changed.
    fn open(&self, destination: &Destination) -> Result<Arc<dyn Publisher>, String>;
}

/// One opened destination: sends events to it, reusing whatever client it opened.
pub trait Publisher: Send + Sync {
    /// Sends `event` once. Never fails: every problem is an outcome with its code.
    fn publish<'a>(&'a self, event: &'a Event) -> BoxFuture<'a, Outcome>;

    /// The registry let go of this publisher (its destination changed or was deleted);
    /// attempts in flight may still hold it. Types with a per-destination connection close
    /// it here; the default has nothing to close.
    fn close(&self) {}
}

/// Every value masked (`obfuscate`).
pub fn masked(fields: &Fields) -> Fields {
    fields
        .iter()
        .map(|(k, v)| (k.clone(), obfuscate(v)))
        .collect()
}

/// Outpost's masking of secret values: the first 4 characters of values of 10 or more, then
/// `*`s.
pub fn obfuscate(value: &str) -> String {
    let chars: Vec<char> = value.chars().collect();
    if chars.len() < 10 {
        "*".repeat(chars.len())
    } else {
        chars[..4].iter().collect::<String>() + &"*".repeat(chars.len() - 4)
    }
}
