//! `aws_sqs`: each event is one SQS SendMessage to `config.queue_url`, the event's `data` as
//! the message body and Outpost's metadata as one `metadata` message attribute (a JSON
//! object, data type String). The endpoint is `config.endpoint`, else the queue URL's own
//! origin; the region is read from an AWS queue URL's host (`us-east-1` otherwise).

use std::collections::BTreeMap;
use std::sync::Arc;

use aws_sdk_sqs::types::MessageAttributeValue;
use chrono::Utc;
use futures::future::BoxFuture;
use serde_json::{Value, json};

use super::client::{self, ClientParts, LazyClient};
use super::fields::{self, StoredCredentials, get};
use super::{AwsSettings, delivery_metadata, event_metadata};
use crate::destination::{
    AttemptCode, CredentialsWrite, DestinationType, Fields, Outcome, Publisher,
};
use crate::store::{Destination, Event};

/// The type name.
pub const TYPE: &str = "aws_sqs";

/// The region of queues whose URL names none (LocalStack, moto, other SQS-compatible hosts).
const DEFAULT_REGION: &str = "us-east-1";

pub struct SqsType {
    settings: AwsSettings,
}

impl SqsType {
    pub fn new(settings: AwsSettings) -> SqsType {
        SqsType { settings }
    }
}

impl DestinationType for SqsType {
    fn name(&self) -> &'static str {
        TYPE
    }

    fn metadata(&self) -> Value {
        json!({
            "type": TYPE,
            "label": "AWS SQS",
            "link": "https://aws.amazon.com/sqs/",
            "description": "Send events to a Amazon SQS endpoint of your choice using a service account to authenticate.",
            "icon": fields::icon("#D82D6D", 'Q'),
            "instructions": "# AWS SQS\n\nEnter the URL of the queue \
                (`https://sqs.<region>.amazonaws.com/<account>/<queue>`) and the access key of an \
                IAM user or role allowed `sqs:SendMessage` on it. Each event becomes one message: \
                the event's data is the body; the event id, topic, timestamp and metadata are in \
                the `metadata` message attribute (a JSON object).",
            "config_fields": [
                {
                    "key": "queue_url",
                    "type": "text",
                    "label": "Queue URL",
                    "description": "The URL of your AWS SQS queue",
                    "required": true,
                    "pattern": "^https?:\\/\\/[^\\s]+$"
                },
                fields::endpoint_field("SQS"),
            ],
            "credential_fields": fields::credential_fields(Some(
                "AWS Session Token (optional, for temporary credentials)"
            )),
        })
    }

    fn validate_config(&self, config: &Fields) -> Vec<String> {
        let mut problems = Vec::new();
        match get(config, "queue_url") {
            "" => problems.push("config.queue_url is required".to_owned()),
            url => {
                if let Err(problem) =
                    fields::validate_url("queue_url", url, self.settings.block_private_ips)
                {
                    problems.push(problem);
                }
            }
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
        get(config, "queue_url").to_owned()
    }

    fn open(&self, destination: &Destination) -> Result<Arc<dyn Publisher>, String> {
        let queue_url =
            fields::validate_url("queue_url", get(&destination.config, "queue_url"), false)
                .map_err(|problem| format!("destination {problem}; fix it with PATCH"))?;
        let endpoint = match get(&destination.config, "endpoint") {
            "" => queue_url.clone(),
            endpoint => fields::validate_url("endpoint", endpoint, false)
                .map_err(|problem| format!("destination {problem}; fix it with PATCH"))?,
        };
        let refused = self
            .settings
            .block_private_ips
            .then(|| fields::blocked_literal(&endpoint))
            .flatten()
            .map(|blocked| format!("SQS endpoint {blocked}"));
        let region = region_of(queue_url.host_str().unwrap_or_default());
        let credentials = StoredCredentials::of(destination)?;
        let parts = ClientParts::new(
            self.settings,
            &credentials,
            &region,
            Some(endpoint.origin().ascii_serialization()),
        );
        Ok(Arc::new(OpenedSqs {
            queue_url: queue_url.to_string(),
            delivery_metadata: delivery_metadata(destination),
            refused,
            client: LazyClient::new(TYPE, move || build(&parts)),
        }))
    }
}

fn build(parts: &ClientParts) -> aws_sdk_sqs::Client {
    let mut config = aws_sdk_sqs::Config::builder()
        .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
        .region(parts.region.clone())
        .credentials_provider(parts.credentials.clone())
        .http_client(parts.http())
        .timeout_config(parts.timeouts())
        .retry_config(parts.retries());
    if let Some(endpoint) = &parts.endpoint {
        config = config.endpoint_url(endpoint);
    }
    aws_sdk_sqs::Client::from_conf(config.build())
}

/// The region in an AWS queue URL's host: `sqs.<region>.amazonaws.com` or the legacy
/// `<region>.queue.amazonaws.com`; `us-east-1` for other hosts.
fn region_of(host: &str) -> String {
    let labels: Vec<&str> = host.split('.').collect();
    let region = match labels.as_slice() {
        ["sqs", region, "amazonaws", ..] => Some(*region),
        [region, "queue", "amazonaws", ..] => Some(*region),
        _ => None,
    };
    region
        .filter(|r| fields::is_region(r))
        .unwrap_or(DEFAULT_REGION)
        .to_owned()
}

/// An SQS destination opened for delivery.
struct OpenedSqs {
    queue_url: String,
    delivery_metadata: BTreeMap<String, String>,
    /// Why nothing may be sent (the endpoint is a non-public IP literal), if so.
    refused: Option<String>,
    client: LazyClient<aws_sdk_sqs::Client>,
}

impl Publisher for OpenedSqs {
    fn publish<'a>(&'a self, event: &'a Event) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            if let Some(refused) = &self.refused {
                return Outcome::not_sent(AttemptCode::BlockedAddress, refused.clone());
            }
            let sent_at = Utc::now();
            let metadata = event_metadata(&self.delivery_metadata, event, sent_at);
            let attribute = MessageAttributeValue::builder()
                .data_type("String")
                .string_value(serde_json::to_string(&metadata).unwrap_or_default())
                .build();
            let attribute = match attribute {
                Ok(attribute) => attribute,
                Err(e) => {
                    return Outcome::failed(
                        AttemptCode::InvalidRequest,
                        format!("SQS SendMessage: the metadata attribute could not be built: {e}"),
                        sent_at,
                    );
                }
            };
            let sent = self
                .client
                .get()
                .send_message()
                .queue_url(&self.queue_url)
                .message_body(&event.data)
                .message_attributes("metadata", attribute)
                .send()
                .await;
            match sent {
                Ok(output) => {
                    Outcome::accepted(json!({ "message_id": output.message_id() }), sent_at)
                }
                Err(error) => client::failure("SQS SendMessage", error, sent_at),
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

    fn sqs(block_private_ips: bool) -> SqsType {
        SqsType::new(AwsSettings {
            block_private_ips,
            timeout: Duration::from_secs(5),
        })
    }

    #[tokio::test]
    async fn a_private_endpoint_stored_before_the_guard_is_refused_without_sending() {
        use chrono::Utc;

        use crate::store::Credentials;

        let destination = Destination {
            tenant_id: "t".into(),
            id: "d".into(),
            kind: TYPE.into(),
            topics: vec!["*".into()],
            filter: None,
            config: map(&[("queue_url", "http://127.0.0.1:9/123456789012/q")]),
            credentials: Credentials(map(&[("key", "k"), ("secret", "s")])),
            delivery_metadata: None,
            metadata: None,
            disabled_at: None,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        };
        let event = Event {
            tenant_id: "t".into(),
            id: "e".into(),
            destination_id: None,
            topic: "t".into(),
            time: Utc::now(),
            metadata: None,
            data: "{}".into(),
            eligible_for_retry: true,
            destination_ids: vec![],
            created_at: Utc::now(),
        };
        let outcome = sqs(true).open(&destination).unwrap().publish(&event).await;
        assert_eq!(outcome.code, AttemptCode::BlockedAddress);
        assert!(
            outcome
                .error
                .unwrap()
                .starts_with("SQS endpoint 127.0.0.1 is a loopback"),
            "names the address"
        );
    }

    #[test]
    fn the_region_comes_from_an_aws_queue_url() {
        assert_eq!(region_of("sqs.eu-west-2.amazonaws.com"), "eu-west-2");
        assert_eq!(region_of("ap-south-1.queue.amazonaws.com"), "ap-south-1");
        assert_eq!(region_of("queue.amazonaws.com"), "us-east-1");
        assert_eq!(region_of("127.0.0.1"), "us-east-1");
    }

    #[test]
    fn config_needs_a_queue_url_and_refuses_private_hosts_when_blocking() {
        assert_eq!(
            sqs(false).validate_config(&map(&[])),
            ["config.queue_url is required"]
        );
        let url = "http://127.0.0.1:5000/123456789012/q";
        assert!(
            sqs(false)
                .validate_config(&map(&[("queue_url", url)]))
                .is_empty()
        );
        let problems = sqs(true).validate_config(&map(&[
            ("queue_url", "https://sqs.us-east-1.amazonaws.com/1/q"),
            ("endpoint", "http://169.254.169.254"),
        ]));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("config.endpoint: 169.254.169.254 is"),
            "{problems:?}"
        );
        assert_eq!(
            sqs(true).validate_config(&map(&[("queue_url", url)])).len(),
            1
        );
    }
}
