//! The AWS destination types: `aws_sqs` (SendMessage), `aws_s3` (PutObject) and `aws_kinesis`
//! (PutRecord), through the official SDK clients. `fields` holds the API-write rules they
//! share (credentials, region, endpoint), `client` the SDK plumbing (static credentials, no
//! ambient lookups, short timeouts, the SSRF-guarded resolver, error → attempt code) and
//! `template` the JMESPath keys of S3 objects and Kinesis records.

mod client;
mod fields;
pub mod kinesis;
pub mod s3;
pub mod sqs;

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};

pub use kinesis::KinesisType;
pub use s3::S3Type;
pub use sqs::SqsType;

use crate::store::{Destination, Event};

/// What the AWS types take from the server's configuration.
#[derive(Debug, Clone, Copy)]
pub struct AwsSettings {
    /// Refuse endpoints that are or resolve to non-public addresses
    /// (`destinations.webhook.block_private_ips`).
    pub block_private_ips: bool,
    /// Bounds one attempt: connecting, sending and the answer (the delivery timeout).
    pub timeout: Duration,
}

/// Outpost's metadata of one event to one destination: `timestamp` (the attempt's, RFC 3339),
/// `event-id` and `topic`, overridden by the destination's `delivery_metadata`, overridden
/// in turn by the event's `metadata`.
fn event_metadata(
    destination_metadata: &BTreeMap<String, String>,
    event: &Event,
    now: DateTime<Utc>,
) -> BTreeMap<String, String> {
    let mut metadata = BTreeMap::from([
        (
            "timestamp".to_owned(),
            now.to_rfc3339_opts(SecondsFormat::Secs, true),
        ),
        ("event-id".to_owned(), event.id.clone()),
        ("topic".to_owned(), event.topic.clone()),
    ]);
    metadata.extend(destination_metadata.clone());
    if let Some(own) = &event.metadata {
        metadata.extend(own.clone());
    }
    metadata
}

/// The destination's `delivery_metadata`, or none.
fn delivery_metadata(destination: &Destination) -> BTreeMap<String, String> {
    destination.delivery_metadata.clone().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_metadata_overrides_delivery_metadata_which_overrides_the_system_keys() {
        let event = Event {
            tenant_id: "t".into(),
            id: "e1".into(),
            destination_id: None,
            topic: "order.paid".into(),
            time: Utc::now(),
            metadata: Some(BTreeMap::from([("source".into(), "shop".into())])),
            data: "{}".into(),
            eligible_for_retry: true,
            destination_ids: vec![],
            created_at: Utc::now(),
        };
        let now = DateTime::parse_from_rfc3339("2026-12-06T01:02:03.456Z")
            .unwrap()
            .to_utc();
        let destination = BTreeMap::from([
            ("topic".to_owned(), "renamed".to_owned()),
            ("source".to_owned(), "destination".to_owned()),
        ]);
        let metadata = event_metadata(&destination, &event, now);
        assert_eq!(metadata["timestamp"], "2026-12-06T01:02:03Z");
        assert_eq!(metadata["event-id"], "e1");
        assert_eq!(metadata["topic"], "renamed");
        assert_eq!(metadata["source"], "shop");
    }
}
