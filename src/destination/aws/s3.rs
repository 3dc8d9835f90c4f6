//! `aws_s3`: each event is one S3 PutObject into `config.bucket`: the event's `data` as the
//! object (`application/json`), Outpost's metadata as the object's user metadata, the key from
//! `config.key_template` (JMESPath over `data`, `metadata` and `time`; Outpost's default
//! `<rfc3339_nano>_<event-id>.json`) and `config.storage_class` (default STANDARD).
//! `config.endpoint` (a jetpost addition) points at an S3-compatible service, path-style.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::StorageClass;
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
pub const TYPE: &str = "aws_s3";

/// Outpost's default object key: the event time with nanoseconds, then the event id.
pub const DEFAULT_KEY_TEMPLATE: &str =
    r#"join('', [time.rfc3339_nano, '_', metadata."event-id", '.json'])"#;

pub struct S3Type {
    settings: AwsSettings,
}

impl S3Type {
    pub fn new(settings: AwsSettings) -> S3Type {
        S3Type { settings }
    }
}

/// `storage_class` as S3 spells it (matched without regard to case), `STANDARD` when unset.
fn storage_class(value: &str) -> Option<&'static str> {
    if value.is_empty() {
        return Some("STANDARD");
    }
    StorageClass::values()
        .iter()
        .copied()
        .find(|known| known.eq_ignore_ascii_case(value))
}

fn key_template(config: &Fields) -> Result<Template, String> {
    match get(config, "key_template") {
        "" => Template::compile("key_template", DEFAULT_KEY_TEMPLATE),
        text => Template::compile("key_template", text),
    }
}

impl DestinationType for S3Type {
    fn name(&self) -> &'static str {
        TYPE
    }

    fn metadata(&self) -> Value {
        json!({
            "type": TYPE,
            "label": "AWS S3",
            "description": "Store events in an Amazon S3 bucket",
            "link": "https://aws.amazon.com/s3/",
            "icon": fields::icon("#7AA116", 'S'),
            "instructions": "# AWS S3\n\nEnter the bucket and its region, and the access key \
                of an IAM user or role allowed `s3:PutObject` on the bucket. Each event becomes \
                one JSON object (the event's data); the event id, topic, timestamp and metadata \
                are the object's user metadata (`x-amz-meta-*`). The object key is a JMESPath \
                expression over `data`, `metadata` and `time` (`year`, `month`, `day`, `hour`, \
                `minute`, `second`, `date`, `datetime`, `unix`, `rfc3339`, `rfc3339_nano`).",
            "config_fields": [
                {
                    "key": "bucket",
                    "type": "text",
                    "label": "Bucket Name",
                    "description": "The name of your AWS S3 bucket",
                    "required": true
                },
                {
                    "key": "region",
                    "type": "text",
                    "label": "AWS Region",
                    "description": "The AWS region where your bucket is located",
                    "required": true,
                    "pattern": "^[a-z]{2}-[a-z]+-[0-9]+$"
                },
                {
                    "key": "key_template",
                    "type": "text",
                    "label": "Object Key Template",
                    "description": format!(
                        "JMESPath expression for generating S3 object keys. Default: {DEFAULT_KEY_TEMPLATE}"
                    ),
                    "required": false,
                    "placeholder": "join('/', [time.year, time.month, time.day, metadata.\"event-id\", '.json'])"
                },
                {
                    "key": "storage_class",
                    "type": "text",
                    "label": "S3 Storage Class",
                    "description": "The storage class for the S3 objects (e.g., STANDARD, INTELLIGENT_TIERING, GLACIER, etc.)",
                    "required": false,
                    "default": "STANDARD"
                },
                fields::endpoint_field("S3"),
            ],
            "credential_fields": fields::credential_fields(Some("AWS Session Token (optional)")),
        })
    }

    fn validate_config(&self, config: &Fields) -> Vec<String> {
        let mut problems = Vec::new();
        if get(config, "bucket").trim().is_empty() {
            problems.push("config.bucket is required".to_owned());
        }
        fields::validate_region(config, &mut problems);
        if let Err(problem) = key_template(config) {
            problems.push(problem);
        }
        let class = get(config, "storage_class");
        if storage_class(class).is_none() {
            problems.push(format!(
                "config.storage_class {class:?} is not an S3 storage class; use one of {}",
                StorageClass::values().join(", ")
            ));
        }
        fields::validate_endpoint(config, self.settings.block_private_ips, &mut problems);
        problems
    }

    fn validate_credentials(&self, credentials: &Fields) -> Vec<String> {
        fields::validate_credentials(credentials)
    }

    fn prepare_credentials(&self, write: CredentialsWrite<'_>) -> Result<Fields, Vec<String>> {
        Ok(fields::kept_credentials(write.merged))
    }

    fn target(&self, config: &Fields) -> String {
        format!("{} in {}", get(config, "bucket"), get(config, "region"))
    }

    fn open(&self, destination: &Destination) -> Result<Arc<dyn Publisher>, String> {
        let config = &destination.config;
        let fix = |problem: String| format!("destination {problem}; fix it with PATCH");
        let bucket = get(config, "bucket").trim().to_owned();
        if bucket.is_empty() {
            return Err(fix("config.bucket is missing".into()));
        }
        let region = get(config, "region");
        if !fields::is_region(region) {
            return Err(fix(format!(
                "config.region {region:?} is not an AWS region"
            )));
        }
        let key_template = key_template(config).map_err(fix)?;
        let storage_class = storage_class(get(config, "storage_class"))
            .ok_or_else(|| fix("config.storage_class is not an S3 storage class".into()))?;
        let endpoint = match get(config, "endpoint") {
            "" => None,
            endpoint => Some(fields::validate_url("endpoint", endpoint, false).map_err(fix)?),
        };
        let refused = endpoint
            .as_ref()
            .filter(|_| self.settings.block_private_ips)
            .and_then(fields::blocked_literal)
            .map(|blocked| format!("S3 endpoint {blocked}"));
        let parts = ClientParts::new(
            self.settings,
            &StoredCredentials::of(destination)?,
            region,
            endpoint.map(|url| url.to_string().trim_end_matches('/').to_owned()),
        );
        Ok(Arc::new(OpenedS3 {
            bucket,
            key_template,
            storage_class: StorageClass::from(storage_class),
            delivery_metadata: delivery_metadata(destination),
            refused,
            client: LazyClient::new(TYPE, move || build(&parts)),
        }))
    }
}

fn build(parts: &ClientParts) -> aws_sdk_s3::Client {
    let mut config = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(parts.region.clone())
        .credentials_provider(parts.credentials.clone())
        .http_client(parts.http())
        .timeout_config(parts.timeouts())
        .retry_config(parts.retries());
    if let Some(endpoint) = &parts.endpoint {
        // S3-compatible services rarely have a host per bucket.
        config = config.endpoint_url(endpoint).force_path_style(true);
    }
    aws_sdk_s3::Client::from_conf(config.build())
}

/// An S3 destination opened for delivery.
struct OpenedS3 {
    bucket: String,
    key_template: Template,
    storage_class: StorageClass,
    delivery_metadata: BTreeMap<String, String>,
    /// Why nothing may be sent (the endpoint is a non-public IP literal), if so.
    refused: Option<String>,
    client: LazyClient<aws_sdk_s3::Client>,
}

impl Publisher for OpenedS3 {
    fn publish<'a>(&'a self, event: &'a Event) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            if let Some(refused) = &self.refused {
                return Outcome::not_sent(AttemptCode::BlockedAddress, refused.clone());
            }
            let sent_at = Utc::now();
            let metadata = event_metadata(&self.delivery_metadata, event, sent_at);
            let scope = json!({
                "data": template::parsed_data(&event.data),
                "metadata": metadata,
                "time": template::time_fields(event.time),
            });
            let key = match self.key_template.evaluate(scope) {
                Ok(Some(key)) => key,
                Ok(None) => {
                    return Outcome::failed(
                        AttemptCode::InvalidRequest,
                        "config.key_template gave no key for this event (null or empty); \
                         change the template so every event has one"
                            .to_owned(),
                        sent_at,
                    );
                }
                Err(e) => {
                    return Outcome::failed(
                        AttemptCode::InvalidRequest,
                        format!("config.key_template: {e}"),
                        sent_at,
                    );
                }
            };
            let sent = self
                .client
                .get()
                .put_object()
                .bucket(&self.bucket)
                .key(&key)
                .body(ByteStream::from(event.data.clone().into_bytes()))
                .content_type("application/json")
                .storage_class(self.storage_class.clone())
                .set_metadata(Some(metadata.into_iter().collect::<HashMap<_, _>>()))
                .send()
                .await;
            match sent {
                Ok(output) => Outcome::accepted(
                    json!({ "bucket": self.bucket, "key": key, "etag": output.e_tag() }),
                    sent_at,
                ),
                Err(error) => client::failure("S3 PutObject", error, sent_at),
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

    fn s3() -> S3Type {
        S3Type::new(AwsSettings {
            block_private_ips: true,
            timeout: Duration::from_secs(5),
        })
    }

    #[test]
    fn config_problems_name_their_fields() {
        assert_eq!(
            s3().validate_config(&map(&[])),
            ["config.bucket is required", "config.region is required"]
        );
        let problems = s3().validate_config(&map(&[
            ("bucket", "b"),
            ("region", "mars"),
            ("key_template", "join("),
            ("storage_class", "COLD"),
            ("endpoint", "http://10.0.0.1:9000"),
        ]));
        let fields: Vec<&str> = problems
            .iter()
            .map(|p| p.split([' ', ':']).next().unwrap())
            .collect();
        assert_eq!(
            fields,
            [
                "config.region",
                "config.key_template",
                "config.storage_class",
                "config.endpoint"
            ],
            "{problems:?}"
        );
        assert!(
            s3().validate_config(&map(&[
                ("bucket", "b"),
                ("region", "eu-west-1"),
                ("storage_class", "intelligent_tiering"),
            ]))
            .is_empty()
        );
    }

    #[test]
    fn storage_classes_are_matched_without_case_and_default_to_standard() {
        assert_eq!(storage_class(""), Some("STANDARD"));
        assert_eq!(storage_class("glacier"), Some("GLACIER"));
        assert_eq!(storage_class("COLD"), None);
    }

    #[test]
    fn the_default_key_is_outposts() {
        let template = key_template(&map(&[])).unwrap();
        let time = chrono::DateTime::parse_from_rfc3339("2026-01-02T03:04:05.5Z")
            .unwrap()
            .to_utc();
        let key = template
            .evaluate(json!({"data": {}, "metadata": {"event-id": "e1"}, "time": template::time_fields(time)}))
            .unwrap();
        assert_eq!(key.as_deref(), Some("2026-01-02T03:04:05.5Z_e1.json"));
    }
}
