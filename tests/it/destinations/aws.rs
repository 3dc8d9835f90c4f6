//! The AWS destination types against moto (a real SQS, S3 and Kinesis implementation): events
//! published on a tenant's NATS account arrive once with their exact bytes and metadata (read
//! back with the SDK), attempts are recorded through the API, an unreachable service is
//! retried until it answers, missing queues/buckets/streams and refused credentials get their
//! codes, and a changed or deleted destination lets go of its client. Then the API side:
//! `/destination-types`, CRUD and validation, checked against Outpost's contract.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream;
use aws_sdk_kinesis::types::ShardIteratorType;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::{TenantStream, field_keys};
use crate::api::{Auth, Service, assert_error, messages};
use crate::support::db::TestDb;
use crate::support::moto::{self, AccessKey, Moto};
use crate::support::nats::LocalNatsServer;
use crate::support::proxy::Proxy;

const TENANT: &str = "t1";
const DESTINATIONS: &str = "/api/v1/tenants/t1/destinations";
/// Generous: two cores shared by moto, nats-server and jetpost.
const WAIT: Duration = Duration::from_secs(60);

/// Key order, a big integer, escapes and non-ASCII text that must survive byte for byte.
const DATA: &str =
    r#"{"zebra":1,"user":"u7","big":12345678901234567890,"esc":"<\u003c>\n","text":"héllo"}"#;

#[derive(Debug, Clone, Copy)]
enum Kind {
    Sqs,
    S3,
    Kinesis,
}

/// One message, object or record as the service holds it.
#[derive(Debug)]
struct Received {
    /// The event's data as delivered (for Kinesis, the `data` of the envelope).
    body: String,
    metadata: BTreeMap<String, String>,
    /// What else the service says about it: message id, object key and content type,
    /// partition key.
    about: Value,
}

impl Kind {
    fn type_name(self) -> &'static str {
        match self {
            Kind::Sqs => "aws_sqs",
            Kind::S3 => "aws_s3",
            Kind::Kinesis => "aws_kinesis",
        }
    }

    /// Creates the queue, bucket or stream `name`.
    async fn create(self, moto: &Moto, name: &str) {
        match self {
            Kind::Sqs => {
                moto.sqs()
                    .create_queue()
                    .queue_name(name)
                    .send()
                    .await
                    .unwrap();
            }
            Kind::S3 => {
                moto.s3().create_bucket().bucket(name).send().await.unwrap();
            }
            Kind::Kinesis => {
                moto.kinesis()
                    .create_stream()
                    .stream_name(name)
                    .shard_count(1)
                    .send()
                    .await
                    .unwrap();
            }
        }
    }

    /// The destination `config` for `name` on `moto`, sent through `endpoint` (a proxy) when
    /// given.
    fn config(self, moto: &Moto, name: &str, endpoint: Option<String>) -> Value {
        let endpoint = endpoint.unwrap_or_else(|| moto.endpoint());
        match self {
            Kind::Sqs => json!({
                "queue_url": format!("{}/{}/{name}", moto.endpoint(), moto::ACCOUNT),
                "endpoint": endpoint,
            }),
            Kind::S3 => json!({
                "bucket": name,
                "region": moto::REGION,
                "endpoint": endpoint,
                "key_template": r#"join('', [metadata.topic, '/', metadata."event-id", '.json'])"#,
                "storage_class": "standard_ia",
            }),
            Kind::Kinesis => json!({
                "stream_name": name,
                "region": moto::REGION,
                "endpoint": endpoint,
                "partition_key_template": "data.user",
            }),
        }
    }

    /// Everything `name` holds now (SQS messages are deleted once read).
    async fn received(self, moto: &Moto, name: &str) -> Vec<Received> {
        match self {
            Kind::Sqs => sqs_messages(moto, name).await,
            Kind::S3 => s3_objects(moto, name).await,
            Kind::Kinesis => kinesis_records(moto, name).await,
        }
    }
}

async fn sqs_messages(moto: &Moto, name: &str) -> Vec<Received> {
    let sqs = moto.sqs();
    let url = format!("{}/{}/{name}", moto.endpoint(), moto::ACCOUNT);
    let mut all = Vec::new();
    loop {
        let batch = sqs
            .receive_message()
            .queue_url(&url)
            .max_number_of_messages(10)
            .message_attribute_names("All")
            .send()
            .await
            .unwrap();
        let messages = batch.messages.unwrap_or_default();
        if messages.is_empty() {
            return all;
        }
        for message in messages {
            let attributes = message.message_attributes.clone().unwrap_or_default();
            assert_eq!(
                attributes.keys().collect::<Vec<_>>(),
                ["metadata"],
                "Outpost's one attribute"
            );
            let metadata = &attributes["metadata"];
            assert_eq!(metadata.data_type(), "String");
            all.push(Received {
                body: message.body().unwrap().to_owned(),
                metadata: serde_json::from_str(metadata.string_value().unwrap()).unwrap(),
                about: json!({ "message_id": message.message_id() }),
            });
            sqs.delete_message()
                .queue_url(&url)
                .receipt_handle(message.receipt_handle().unwrap())
                .send()
                .await
                .unwrap();
        }
    }
}

async fn s3_objects(moto: &Moto, bucket: &str) -> Vec<Received> {
    let s3 = moto.s3();
    let listed = s3.list_objects_v2().bucket(bucket).send().await.unwrap();
    let mut all = Vec::new();
    for object in listed.contents() {
        let key = object.key().unwrap();
        let got = s3
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .unwrap();
        let content_type = got.content_type().map(str::to_owned);
        let storage_class = got.storage_class().map(|c| c.as_str().to_owned());
        let metadata = got.metadata().cloned().unwrap_or_default();
        let body = got.body.collect().await.unwrap().into_bytes();
        all.push(Received {
            body: String::from_utf8(body.to_vec()).unwrap(),
            metadata: metadata.into_iter().collect(),
            about: json!({
                "key": key,
                "content_type": content_type,
                "storage_class": storage_class,
            }),
        });
    }
    all
}

async fn kinesis_records(moto: &Moto, stream: &str) -> Vec<Received> {
    let kinesis = moto.kinesis();
    let shards = kinesis
        .list_shards()
        .stream_name(stream)
        .send()
        .await
        .unwrap();
    let mut all = Vec::new();
    for shard in shards.shards() {
        let iterator = kinesis
            .get_shard_iterator()
            .stream_name(stream)
            .shard_id(shard.shard_id())
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await
            .unwrap();
        let records = kinesis
            .get_records()
            .shard_iterator(iterator.shard_iterator().unwrap())
            .send()
            .await
            .unwrap();
        for record in records.records() {
            let text = String::from_utf8(record.data().as_ref().to_vec()).unwrap();
            // Outpost's envelope, `data` first and byte for byte.
            let rest = text
                .strip_prefix(r#"{"data":"#)
                .unwrap_or_else(|| panic!("not an envelope: {text}"));
            let split = rest
                .rfind(r#","metadata":"#)
                .unwrap_or_else(|| panic!("no metadata: {text}"));
            let metadata: Value = serde_json::from_str(&text).unwrap();
            all.push(Received {
                body: rest[..split].to_owned(),
                metadata: serde_json::from_value(metadata["metadata"].clone()).unwrap(),
                about: json!({
                    "partition_key": record.partition_key(),
                    "sequence_number": record.sequence_number(),
                    "shard_id": shard.shard_id(),
                }),
            });
        }
    }
    all
}

/// jetpost (in-process) consuming tenant `t1`'s NATS account, retrying every second.
struct Bed {
    svc: Service,
    js: jetstream::Context,
    _nats: LocalNatsServer,
}

impl Bed {
    async fn start() -> Bed {
        let (svc, js, nats) = TenantStream::start(|c| {
            c.retry_schedule = vec![1, 1, 1, 1, 1];
            c.retry_max_limit = 5;
        })
        .await
        .into_parts();
        Bed {
            svc,
            js,
            _nats: nats,
        }
    }

    /// Creates destination `id` of `kind` with `config` and `credentials`; returns it.
    async fn destination(&self, id: &str, kind: Kind, config: Value, credentials: Value) -> Value {
        self.svc
            .admin(
                Method::POST,
                DESTINATIONS,
                Some(&json!({
                    "id": id,
                    "type": kind.type_name(),
                    "topics": "*",
                    "config": config,
                    "credentials": credentials,
                    "delivery_metadata": {"app": "jetpost-test"},
                })),
                StatusCode::CREATED,
            )
            .await
    }

    /// Publishes event `id` (topic `order.paid`, metadata `source: shop`, data `DATA`) on the
    /// tenant's NATS account.
    async fn publish(&self, id: &str) {
        let raw = format!(
            r#"{{"id":"{id}","topic":"order.paid","metadata":{{"source":"shop"}},"data":{DATA}}}"#
        );
        self.js
            .publish("events.orders", raw.into())
            .await
            .unwrap()
            .await
            .unwrap();
    }

    /// The attempts of event `id` to `destination`, oldest first, once there are `count`.
    async fn attempts(&self, id: &str, destination: &str, count: usize) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let list = self
                .svc
                .admin(
                    Method::GET,
                    &format!(
                        "/api/v1/attempts?event_id={id}&destination_id={destination}&include=response_data&include=destination"
                    ),
                    None,
                    StatusCode::OK,
                )
                .await;
            let mut models = list["models"].as_array().cloned().unwrap_or_default();
            if models.len() >= count {
                models.sort_by_key(|a| a["attempt_number"].as_u64());
                return models;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{count} attempt(s) of {id} to {destination} not within {WAIT:?}: {list}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The attempts of event `id` to `destination` once one succeeded.
    async fn delivered(&self, id: &str, destination: &str) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let attempts = self.attempts(id, destination, 1).await;
            if attempts.iter().any(|a| a["status"] == "success") {
                return attempts;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{id} to {destination} not delivered within {WAIT:?}: {attempts:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The `jetpost_destination_clients{type}` gauge (0 when absent).
    async fn clients(&self, kind: Kind) -> f64 {
        let text = crate::support::http_client()
            .get(self.svc.url("/metrics"))
            .bearer_auth(crate::api::API_KEY)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let series = format!(
            "jetpost_destination_clients{{type=\"{}\"}} ",
            kind.type_name()
        );
        text.lines()
            .find_map(|line| line.strip_prefix(&series))
            .map_or(0.0, |value| value.trim().parse().unwrap())
    }
}

fn credentials() -> Value {
    json!({"key": moto::KEY, "secret": moto::SECRET})
}

/// One event arrives exactly once with its bytes and Outpost's metadata, and the attempt is
/// recorded as `OK` with what the service answered.
async fn delivers_exact_bytes_and_metadata(kind: Kind) {
    let moto = Moto::start().await;
    kind.create(&moto, "orders").await;
    let bed = Bed::start().await;
    bed.destination(
        "d1",
        kind,
        kind.config(&moto, "orders", None),
        credentials(),
    )
    .await;
    bed.publish("e1").await;

    let attempts = bed.delivered("e1", "d1").await;
    assert_eq!(attempts.len(), 1, "{attempts:?}");
    let attempt = &attempts[0];
    assert_eq!(attempt["code"], "OK");
    // (`destination_type` itself is still always "webhook": attempts do not keep their
    // destination's type yet.)
    assert_eq!(attempt["destination"]["type"], kind.type_name());
    let response = &attempt["response_data"];

    let received = kind.received(&moto, "orders").await;
    assert_eq!(received.len(), 1, "exactly once: {received:?}");
    let got = &received[0];
    assert_eq!(got.body, DATA);
    assert_eq!(got.metadata["event-id"], "e1");
    assert_eq!(got.metadata["topic"], "order.paid");
    assert_eq!(got.metadata["source"], "shop");
    assert_eq!(got.metadata["app"], "jetpost-test");
    assert!(
        chrono::DateTime::parse_from_rfc3339(&got.metadata["timestamp"]).is_ok(),
        "{:?}",
        got.metadata
    );
    assert_eq!(got.metadata.len(), 5, "{:?}", got.metadata);
    match kind {
        Kind::Sqs => {
            assert_eq!(response["message_id"], got.about["message_id"]);
        }
        Kind::S3 => {
            assert_eq!(got.about["key"], "order.paid/e1.json");
            assert_eq!(got.about["content_type"], "application/json");
            assert_eq!(got.about["storage_class"], "STANDARD_IA");
            assert_eq!(response["bucket"], "orders");
            assert_eq!(response["key"], "order.paid/e1.json");
            assert!(response["etag"].is_string(), "{response}");
        }
        Kind::Kinesis => {
            assert_eq!(got.about["partition_key"], "u7");
            assert_eq!(response["partition_key"], "u7");
            assert_eq!(response["shard_id"], got.about["shard_id"]);
            assert_eq!(response["sequence_number"], got.about["sequence_number"]);
        }
    }
}

/// The service unreachable (a proxy in front of moto, cut): attempts fail with a network
/// code and are retried; once it answers again the event arrives, once.
async fn retries_until_the_service_is_back(kind: Kind) {
    let moto = Moto::start().await;
    kind.create(&moto, "orders").await;
    let proxy = Proxy::start(([127, 0, 0, 1], moto.port()).into()).await;
    let bed = Bed::start().await;
    let through_proxy = format!("http://127.0.0.1:{}", proxy.port());
    bed.destination(
        "d1",
        kind,
        kind.config(&moto, "orders", Some(through_proxy)),
        credentials(),
    )
    .await;
    proxy.cut();
    bed.publish("e1").await;

    let failed = bed.attempts("e1", "d1", 1).await;
    let code = failed[0]["code"].as_str().unwrap();
    assert!(
        ["connection_refused", "connection_reset", "network_error"].contains(&code),
        "{failed:?}"
    );
    assert_eq!(failed[0]["status"], "failed");
    proxy.restore();

    let attempts = bed.delivered("e1", "d1").await;
    assert!(attempts.len() >= 2, "{attempts:?}");
    assert_eq!(attempts.last().unwrap()["code"], "OK");
    let received = kind.received(&moto, "orders").await;
    assert_eq!(received.len(), 1, "once: {received:?}");
    assert_eq!(received[0].body, DATA);
}

/// A queue, bucket or stream that does not exist: `not_found`, retried (it may be created).
async fn a_missing_target_is_not_found(kind: Kind) {
    let moto = Moto::start().await;
    let bed = Bed::start().await;
    bed.destination(
        "d1",
        kind,
        kind.config(&moto, "missing", None),
        credentials(),
    )
    .await;
    bed.publish("e1").await;
    let attempts = bed.attempts("e1", "d1", 2).await;
    for attempt in &attempts {
        assert_eq!(attempt["code"], "not_found", "{attempts:?}");
        assert_eq!(attempt["status"], "failed");
    }
}

/// moto enforcing IAM (after the calls that create its users): an unknown access key and a
/// wrong secret are `auth_failed`, a key without the permission is `access_denied`; all are
/// permanent, so each event gets one attempt.
async fn refused_credentials_are_permanent(kind: Kind) {
    // Two users of three IAM calls each, then every call is authenticated.
    let moto = Moto::start_with(&[("INITIAL_NO_AUTH_ACTION_COUNT", "6")]).await;
    let writer = moto
        .iam_user("writer", &["sqs:*", "s3:*", "kinesis:*"])
        .await;
    let reader = moto
        .iam_user(
            "reader",
            &["sqs:ReceiveMessage", "s3:GetObject", "kinesis:GetRecords"],
        )
        .await;
    create_as(kind, &moto, &writer, "orders").await;
    let bed = Bed::start().await;
    let cases = [
        (
            "unknown-key",
            json!({"key": "AKIAUNKNOWNKEY000000", "secret": "x"}),
            "auth_failed",
        ),
        (
            "wrong-secret",
            json!({"key": writer.key, "secret": "wrong"}),
            "auth_failed",
        ),
        (
            "no-permission",
            json!({"key": reader.key, "secret": reader.secret}),
            "access_denied",
        ),
        (
            "allowed",
            json!({"key": writer.key, "secret": writer.secret}),
            "OK",
        ),
    ];
    for (id, credentials, _) in &cases {
        bed.destination(
            id,
            kind,
            kind.config(&moto, "orders", None),
            credentials.clone(),
        )
        .await;
    }
    bed.publish("e1").await;
    for (id, _, code) in &cases {
        let attempts = bed.attempts("e1", id, 1).await;
        assert_eq!(attempts[0]["code"], *code, "{id}: {attempts:?}");
    }
    // Retries run every second here: after three of them a refused destination still has
    // its one attempt.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (id, _, code) in &cases[..3] {
        let attempts = bed.attempts("e1", id, 1).await;
        assert_eq!(
            attempts.len(),
            1,
            "{id} ({code}) is not retried: {attempts:?}"
        );
    }
}

/// Creates the target as an IAM user (moto enforcing IAM).
async fn create_as(kind: Kind, moto: &Moto, key: &AccessKey, name: &str) {
    match kind {
        Kind::Sqs => {
            moto.sqs_as(key)
                .create_queue()
                .queue_name(name)
                .send()
                .await
                .unwrap();
        }
        Kind::S3 => {
            moto.s3_as(key)
                .create_bucket()
                .bucket(name)
                .send()
                .await
                .unwrap();
        }
        Kind::Kinesis => {
            moto.kinesis_as(key)
                .create_stream()
                .stream_name(name)
                .shard_count(1)
                .send()
                .await
                .unwrap();
        }
    }
}

macro_rules! per_type {
    ($scenario:ident) => {
        mod $scenario {
            use super::Kind;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn aws_sqs() {
                super::$scenario(Kind::Sqs).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn aws_s3() {
                super::$scenario(Kind::S3).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn aws_kinesis() {
                super::$scenario(Kind::Kinesis).await;
            }
        }
    };
}

per_type!(delivers_exact_bytes_and_metadata);
per_type!(retries_until_the_service_is_back);
per_type!(a_missing_target_is_not_found);
per_type!(refused_credentials_are_permanent);

/// The registry opens one client per destination version: kept across events, closed when
/// the destination changes (the next event opens a new one) and when it is deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_or_deleting_a_destination_drops_its_client() {
    let kind = Kind::Sqs;
    let moto = Moto::start().await;
    kind.create(&moto, "orders").await;
    let bed = Bed::start().await;
    bed.destination(
        "d1",
        kind,
        kind.config(&moto, "orders", None),
        credentials(),
    )
    .await;
    assert_eq!(bed.clients(kind).await, 0.0, "opened on the first event");
    bed.publish("e1").await;
    bed.delivered("e1", "d1").await;
    bed.publish("e2").await;
    bed.delivered("e2", "d1").await;
    assert_eq!(bed.clients(kind).await, 1.0, "one client for both events");

    bed.svc
        .admin(
            Method::PATCH,
            &format!("{DESTINATIONS}/d1"),
            Some(&json!({"delivery_metadata": {"app": "changed"}})),
            StatusCode::OK,
        )
        .await;
    bed.publish("e3").await;
    bed.delivered("e3", "d1").await;
    assert_eq!(
        bed.clients(kind).await,
        1.0,
        "the old version's client closed, the new one's open"
    );
    let received = kind.received(&moto, "orders").await;
    assert_eq!(received.len(), 3);
    assert_eq!(received[2].metadata["app"], "changed");

    bed.svc
        .admin(
            Method::DELETE,
            &format!("{DESTINATIONS}/d1"),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(bed.clients(kind).await, 0.0, "closed with its destination");
}

// ---- The API: /destination-types, CRUD and validation (no AWS service needed). ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destination_types_describe_outposts_fields() {
    let svc = Service::start().await;
    let (status, all) = svc.get("/api/v1/destination-types", &Auth::Admin).await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["type"].as_str().unwrap())
        .collect();
    for kind in ["aws_sqs", "aws_s3", "aws_kinesis"] {
        assert!(names.contains(&kind), "{names:?}");
    }
    for (kind, label, config, required) in [
        (
            "aws_sqs",
            "AWS SQS",
            vec!["queue_url", "endpoint"],
            vec!["queue_url"],
        ),
        (
            "aws_s3",
            "AWS S3",
            vec![
                "bucket",
                "region",
                "key_template",
                "storage_class",
                "endpoint",
            ],
            vec!["bucket", "region"],
        ),
        (
            "aws_kinesis",
            "AWS Kinesis",
            vec![
                "stream_name",
                "region",
                "endpoint",
                "partition_key_template",
                "metadata_in_payload",
            ],
            vec!["stream_name", "region"],
        ),
    ] {
        let (status, described) = svc
            .get(&format!("/api/v1/destination-types/{kind}"), &Auth::Admin)
            .await;
        assert_eq!(status, StatusCode::OK, "{described}");
        assert_eq!(described["type"], kind);
        assert_eq!(described["label"], label);
        assert_eq!(field_keys(&described["config_fields"]), config);
        let required_keys: Vec<String> = described["config_fields"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["required"] == true)
            .map(|f| f["key"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(required_keys, required);
        assert_eq!(
            field_keys(&described["credential_fields"]),
            ["key", "secret", "session"]
        );
        assert!(
            described["credential_fields"]
                .as_array()
                .unwrap()
                .iter()
                .all(|f| f["sensitive"] == true)
        );
        assert!(described["instructions"].as_str().unwrap().len() > 50);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_destinations_are_created_read_changed_and_deleted() {
    let svc = Service::start().await;
    svc.tenant(TENANT).await;
    let secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    for (id, kind, config, target) in [
        (
            "q",
            "aws_sqs",
            json!({"queue_url": "https://sqs.eu-west-1.amazonaws.com/123456789012/orders"}),
            "https://sqs.eu-west-1.amazonaws.com/123456789012/orders",
        ),
        (
            "b",
            "aws_s3",
            json!({"bucket": "archive", "region": "eu-west-1"}),
            "archive in eu-west-1",
        ),
        (
            "k",
            "aws_kinesis",
            json!({"stream_name": "events", "region": "us-west-2"}),
            "events in us-west-2",
        ),
    ] {
        let created = svc
            .admin(
                Method::POST,
                DESTINATIONS,
                Some(&json!({
                    "id": id,
                    "type": kind,
                    "topics": ["order.paid"],
                    "config": config,
                    "credentials": {"key": "AKIAIOSFODNN7EXAMPLE", "secret": secret, "other": "dropped"},
                })),
                StatusCode::CREATED,
            )
            .await;
        assert_eq!(created["type"], kind);
        assert_eq!(created["config"], config);
        assert_eq!(created["target"], target);
        // Secrets are masked as Outpost masks them; unknown credential keys are not kept.
        assert_eq!(
            created["credentials"],
            json!({"key": "AKIA****************", "secret": "wJal************************************"})
        );
        let path = format!("{DESTINATIONS}/{id}");
        let got = svc.admin(Method::GET, &path, None, StatusCode::OK).await;
        assert_eq!(got, created);

        let patched = svc
            .admin(
                Method::PATCH,
                &path,
                Some(&json!({"credentials": {"session": "token-from-sts"}, "topics": "*"})),
                StatusCode::OK,
            )
            .await;
        assert_eq!(patched["topics"], json!(["*"]));
        assert_eq!(patched["credentials"]["session"], "toke**********");
        assert_eq!(patched["credentials"]["key"], "AKIA****************");

        svc.admin(Method::DELETE, &path, None, StatusCode::OK).await;
        let (status, json) = svc.get(&path, &Auth::Admin).await;
        assert_error(status, &json, StatusCode::NOT_FOUND);
    }
}

/// A create that must be refused with exactly `expected` (422 messages naming fields).
async fn refused(svc: &Service, body: Value, expected: &[&str]) {
    let (status, json) = svc
        .call(Method::POST, DESTINATIONS, &Auth::Admin, Some(&body))
        .await;
    assert_error(status, &json, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(messages(&json), expected, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_aws_destinations_are_422_naming_the_field() {
    // The SSRF guard on, as in production.
    let svc = Service::start_with(TestDb::sqlite().await, |c| {
        c.destinations.webhook.block_private_ips = true;
    })
    .await;
    svc.tenant(TENANT).await;
    let keys = json!({"key": "AKIAIOSFODNN7EXAMPLE", "secret": "s"});
    let body = |kind: &str, config: Value, credentials: Value| json!({"type": kind, "topics": "*", "config": config, "credentials": credentials});
    refused(
        &svc,
        body("aws_sqs", json!({}), json!({})),
        &[
            "config.queue_url is required",
            "credentials.key is required",
            "credentials.secret is required",
        ],
    )
    .await;
    refused(
        &svc,
        body(
            "aws_sqs",
            json!({"queue_url": "sqs://queue", "endpoint": "http://169.254.169.254"}),
            keys.clone(),
        ),
        &[
            "config.queue_url must use http or https, not \"sqs\"",
            "config.endpoint: 169.254.169.254 is a link-local address; webhooks to non-public \
             addresses are blocked (destinations.webhook.block_private_ips)",
        ],
    )
    .await;
    refused(
        &svc,
        body("aws_s3", json!({"region": "Europe"}), keys.clone()),
        &[
            "config.bucket is required",
            "config.region must be an AWS region such as us-east-1, not \"Europe\"",
        ],
    )
    .await;
    let (status, json) = svc
        .call(
            Method::POST,
            DESTINATIONS,
            &Auth::Admin,
            Some(&body(
                "aws_s3",
                json!({"bucket": "b", "region": "us-east-1", "key_template": "join('', [",
                       "storage_class": "FROZEN", "endpoint": "http://localhost:4566"}),
                keys.clone(),
            )),
        )
        .await;
    assert_error(status, &json, StatusCode::UNPROCESSABLE_ENTITY);
    let problems = messages(&json);
    assert_eq!(problems.len(), 3, "{problems:?}");
    assert!(
        problems[0].starts_with("config.key_template is not a valid JMESPath expression"),
        "{problems:?}"
    );
    assert!(
        problems[1].starts_with("config.storage_class \"FROZEN\" is not an S3 storage class"),
        "{problems:?}"
    );
    assert!(
        problems[2].starts_with("config.endpoint: localhost"),
        "{problems:?}"
    );
    refused(
        &svc,
        body(
            "aws_kinesis",
            json!({"stream_name": "a b", "region": "us-east-1", "metadata_in_payload": "yes"}),
            keys.clone(),
        ),
        &[
            "config.stream_name \"a b\" may only contain letters, digits, '_', '.' and '-'",
            "config.metadata_in_payload must be \"true\" or \"false\"",
        ],
    )
    .await;

    // A PATCH is checked against the merged destination.
    svc.admin(
        Method::POST,
        DESTINATIONS,
        Some(&json!({"id": "k", "type": "aws_kinesis", "topics": "*",
                     "config": {"stream_name": "s", "region": "us-east-1"}, "credentials": keys})),
        StatusCode::CREATED,
    )
    .await;
    let (status, json) = svc
        .call(
            Method::PATCH,
            &format!("{DESTINATIONS}/k"),
            &Auth::Admin,
            Some(&json!({"config": {"partition_key_template": "data.[", "region": null}})),
        )
        .await;
    assert_error(status, &json, StatusCode::UNPROCESSABLE_ENTITY);
    let problems = messages(&json);
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert_eq!(problems[0], "config.region is required");
    assert!(
        problems[1].starts_with("config.partition_key_template is not a valid JMESPath"),
        "{problems:?}"
    );
}
