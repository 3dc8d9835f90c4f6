//! `aws_kinesis`: each event is one Kinesis PutRecord to `config.stream_name`. The record is
//! `{"data": <the event's data>, "metadata": {…}}` (Outpost's envelope), or the event's data
//! alone when `config.metadata_in_payload` is `false`. The partition key is
//! `config.partition_key_template` (JMESPath over that payload), falling back to the event id
//! when unset, null, empty or failing, as Outpost does.

use std::collections::BTreeMap;
use std::sync::Arc;

use aws_sdk_kinesis::primitives::Blob;
use chrono::Utc;
use futures::future::BoxFuture;
use serde_json::{Value, json};

use super::client::{self, ClientParts, LazyClient};
use super::fields::{self, StoredCredentials, get};
use super::{AwsSettings, delivery_metadata, event_metadata};
use crate::destination::template::{self, Template};
use crate::destination::{
    AttemptCode, CredentialsWrite, DestinationType, Fields, Outcome, Publisher,
};
use crate::store::{Destination, Event};

/// The type name.
pub const TYPE: &str = "aws_kinesis";

pub struct KinesisType {
    settings: AwsSettings,
}

impl KinesisType {
    pub fn new(settings: AwsSettings) -> KinesisType {
        KinesisType { settings }
    }
}

/// Outpost's stream name pattern `^[a-zA-Z0-9_.-]+$`.
fn is_stream_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

fn partition_key_template(config: &Fields) -> Result<Option<Template>, String> {
    match get(config, "partition_key_template") {
        "" => Ok(None),
        text => Template::compile("partition_key_template", text).map(Some),
    }
}

impl DestinationType for KinesisType {
    fn name(&self) -> &'static str {
        TYPE
    }

    fn metadata(&self) -> Value {
        json!({
            "type": TYPE,
            "label": "AWS Kinesis",
            "description": "Send events to Amazon Kinesis Data Streams for real-time processing",
            "link": "https://aws.amazon.com/kinesis/data-streams/",
            "icon": fields::icon("#F37B44", 'K'),
            "instructions": "# AWS Kinesis\n\nEnter the stream name and its region, and the \
                access key of an IAM user or role allowed `kinesis:PutRecord` on the stream. Each \
                event becomes one record: `{\"data\": …, \"metadata\": {…}}` with the event id, \
                topic, timestamp and metadata, or the event's data alone when \
                metadata_in_payload is false. The partition key is the event id unless a \
                JMESPath template over the record picks another (e.g. `data.user_id`).",
            "config_fields": [
                {
                    "key": "stream_name",
                    "type": "text",
                    "label": "Stream Name",
                    "description": "The name of your AWS Kinesis stream",
                    "required": true,
                    "pattern": "^[a-zA-Z0-9_.-]+$"
                },
                {
                    "key": "region",
                    "type": "text",
                    "label": "AWS Region",
                    "description": "The AWS region where your Kinesis stream is located",
                    "required": true,
                    "pattern": "^[a-z]{2}-[a-z]+-[0-9]+$"
                },
                {
                    "key": "endpoint",
                    "type": "text",
                    "label": "Endpoint",
                    "description": "Custom endpoint URL for AWS Kinesis (optional, for testing or VPC endpoints)",
                    "required": false,
                    "pattern": "^https?:\\/\\/[^\\s]+$"
                },
                {
                    "key": "partition_key_template",
                    "type": "text",
                    "label": "Partition Key Template",
                    "description": "JMESPath template to extract the partition key from the event payload (e.g., metadata.\"event-id\"). Default is event ID, which is also used as fallback if template evaluation fails or returns empty.",
                    "required": false
                },
                {
                    "key": "metadata_in_payload",
                    "type": "checkbox",
                    "label": "Metadata in Payload",
                    "description": "Send each record as {\"data\": …, \"metadata\": {…}} (true, the default) or the event's data alone (false).",
                    "required": false,
                    "default": "true"
                }
            ],
            "credential_fields": fields::credential_fields(Some(
                "AWS Session Token (optional, for temporary credentials)"
            )),
        })
    }

    fn validate_config(&self, config: &Fields) -> Vec<String> {
        let mut problems = Vec::new();
        match get(config, "stream_name") {
            "" => problems.push("config.stream_name is required".to_owned()),
            name if !is_stream_name(name) => problems.push(format!(
                "config.stream_name {name:?} may only contain letters, digits, '_', '.' and '-'"
            )),
            _ => {}
        }
        fields::validate_region(config, &mut problems);
        fields::validate_endpoint(config, self.settings.block_private_ips, &mut problems);
        if let Err(problem) = partition_key_template(config) {
            problems.push(problem);
        }
        fields::validate_bool(config, "metadata_in_payload", &mut problems);
        problems
    }

    fn validate_credentials(&self, credentials: &Fields) -> Vec<String> {
        fields::validate_credentials(credentials)
    }

    fn prepare_credentials(&self, write: CredentialsWrite<'_>) -> Result<Fields, Vec<String>> {
        Ok(fields::kept_credentials(write.merged))
    }

    fn target(&self, config: &Fields) -> String {
        format!(
            "{} in {}",
            get(config, "stream_name"),
            get(config, "region")
        )
    }

    fn open(&self, destination: &Destination) -> Result<Arc<dyn Publisher>, String> {
        let config = &destination.config;
        let fix = |problem: String| format!("destination {problem}; fix it with PATCH");
        let stream_name = get(config, "stream_name").to_owned();
        if !is_stream_name(&stream_name) {
            return Err(fix(format!(
                "config.stream_name {stream_name:?} is not a stream name"
            )));
        }
        let region = get(config, "region");
        if !fields::is_region(region) {
            return Err(fix(format!(
                "config.region {region:?} is not an AWS region"
            )));
        }
        let partition_key = partition_key_template(config).map_err(fix)?;
        let endpoint = match get(config, "endpoint") {
            "" => None,
            endpoint => Some(fields::validate_url("endpoint", endpoint, false).map_err(fix)?),
        };
        let refused = endpoint
            .as_ref()
            .filter(|_| self.settings.block_private_ips)
            .and_then(fields::blocked_literal)
            .map(|blocked| format!("Kinesis endpoint {blocked}"));
        let parts = ClientParts::new(
            self.settings,
            &StoredCredentials::of(destination)?,
            region,
            endpoint.map(|url| url.to_string().trim_end_matches('/').to_owned()),
        );
        Ok(Arc::new(OpenedKinesis {
            stream_name,
            partition_key,
            metadata_in_payload: get(config, "metadata_in_payload") != "false",
            delivery_metadata: delivery_metadata(destination),
            refused,
            client: LazyClient::new(TYPE, move || build(&parts)),
        }))
    }
}

fn build(parts: &ClientParts) -> aws_sdk_kinesis::Client {
    let mut config = aws_sdk_kinesis::Config::builder()
        .behavior_version(aws_sdk_kinesis::config::BehaviorVersion::latest())
        .region(parts.region.clone())
        .credentials_provider(parts.credentials.clone())
        .http_client(parts.http())
        .timeout_config(parts.timeouts())
        .retry_config(parts.retries());
    if let Some(endpoint) = &parts.endpoint {
        config = config.endpoint_url(endpoint);
    }
    aws_sdk_kinesis::Client::from_conf(config.build())
}

/// A Kinesis destination opened for delivery.
struct OpenedKinesis {
    stream_name: String,
    partition_key: Option<Template>,
    metadata_in_payload: bool,
    delivery_metadata: BTreeMap<String, String>,
    /// Why nothing may be sent (the endpoint is a non-public IP literal), if so.
    refused: Option<String>,
    client: LazyClient<aws_sdk_kinesis::Client>,
}

impl OpenedKinesis {
    /// The record's bytes and its partition key.
    fn record(&self, event: &Event, metadata: BTreeMap<String, String>) -> (Vec<u8>, String) {
        let metadata_json = serde_json::to_string(&metadata).unwrap_or_default();
        let (record, scope) = if self.metadata_in_payload {
            // The event's data goes in byte for byte; keys in Outpost's (sorted) order.
            let record = format!(r#"{{"data":{},"metadata":{metadata_json}}}"#, event.data);
            let scope = json!({ "data": template::parsed_data(&event.data), "metadata": metadata });
            (record.into_bytes(), scope)
        } else {
            (
                event.data.clone().into_bytes(),
                template::parsed_data(&event.data),
            )
        };
        let key = self
            .partition_key
            .as_ref()
            .and_then(|template| template.evaluate(scope).ok().flatten())
            .unwrap_or_else(|| event.id.clone());
        (record, key)
    }
}

impl Publisher for OpenedKinesis {
    fn publish<'a>(&'a self, event: &'a Event) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            if let Some(refused) = &self.refused {
                return Outcome::not_sent(AttemptCode::BlockedAddress, refused.clone());
            }
            let sent_at = Utc::now();
            let metadata = event_metadata(&self.delivery_metadata, event, sent_at);
            let (record, partition_key) = self.record(event, metadata);
            let sent = self
                .client
                .get()
                .put_record()
                .stream_name(&self.stream_name)
                .data(Blob::new(record))
                .partition_key(&partition_key)
                .send()
                .await;
            match sent {
                Ok(output) => Outcome::accepted(
                    json!({
                        "shard_id": output.shard_id(),
                        "sequence_number": output.sequence_number(),
                        "partition_key": partition_key,
                    }),
                    sent_at,
                ),
                Err(error) => client::failure("Kinesis PutRecord", error, sent_at),
            }
        })
    }

    fn close(&self) {
        self.client.close();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn map(pairs: &[(&str, &str)]) -> Fields {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn kinesis() -> KinesisType {
        KinesisType::new(AwsSettings {
            block_private_ips: false,
            timeout: Duration::from_secs(5),
        })
    }

    fn opened(config: &[(&str, &str)]) -> OpenedKinesis {
        let config = map(config);
        OpenedKinesis {
            stream_name: "s".into(),
            partition_key: partition_key_template(&config).unwrap(),
            metadata_in_payload: get(&config, "metadata_in_payload") != "false",
            delivery_metadata: BTreeMap::new(),
            refused: None,
            client: LazyClient::new(TYPE, || unreachable!("no client in this test")),
        }
    }

    fn event() -> Event {
        Event {
            tenant_id: "t".into(),
            id: "e1".into(),
            destination_id: None,
            topic: "order.paid".into(),
            time: Utc::now(),
            metadata: None,
            data: r#"{"z":1,"user":"u7"}"#.into(),
            eligible_for_retry: true,
            destination_ids: vec![],
            created_at: Utc::now(),
        }
    }

    #[test]
    fn records_carry_data_byte_for_byte_with_or_without_metadata() {
        let metadata = BTreeMap::from([("event-id".to_owned(), "e1".to_owned())]);
        let (record, key) = opened(&[]).record(&event(), metadata.clone());
        assert_eq!(
            String::from_utf8(record).unwrap(),
            r#"{"data":{"z":1,"user":"u7"},"metadata":{"event-id":"e1"}}"#
        );
        assert_eq!(key, "e1");
        let (record, key) = opened(&[
            ("metadata_in_payload", "false"),
            ("partition_key_template", "user"),
        ])
        .record(&event(), metadata.clone());
        assert_eq!(record, br#"{"z":1,"user":"u7"}"#);
        assert_eq!(key, "u7");
        let (_, key) =
            opened(&[("partition_key_template", "data.missing")]).record(&event(), metadata);
        assert_eq!(key, "e1", "falls back to the event id");
    }

    #[test]
    fn config_problems_name_their_fields() {
        assert_eq!(
            kinesis().validate_config(&map(&[])),
            [
                "config.stream_name is required",
                "config.region is required"
            ]
        );
        let problems = kinesis().validate_config(&map(&[
            ("stream_name", "bad name"),
            ("region", "us-east-1"),
            ("partition_key_template", "[["),
            ("metadata_in_payload", "yes"),
        ]));
        let fields: Vec<&str> = problems
            .iter()
            .map(|p| p.split(' ').next().unwrap())
            .collect();
        assert_eq!(
            fields,
            [
                "config.stream_name",
                "config.partition_key_template",
                "config.metadata_in_payload"
            ],
            "{problems:?}"
        );
    }
}
