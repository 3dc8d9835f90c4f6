//! One kafka destination opened for delivery: its client (logged in, with the topic's
//! partitions and a producer per partition), built on the first attempt, reused by the next
//! ones, built again after a failure, dropped when the registry lets the destination go.
//! Also how records are keyed and partitioned, and how rskafka's errors become attempt codes.

use std::collections::{BTreeMap, HashMap};
use std::error::Error as StdError;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex as SyncMutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rskafka::client::error::{Error as KafkaError, ProtocolError};
use rskafka::client::partition::{Compression, PartitionClient, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder, Credentials, SaslConfig};
use rskafka::record::Record;
use rskafka::{BackoffConfig, BackoffError, ConnectionError, SaslError};
use serde_json::json;
use tokio::sync::Mutex;

use super::rules::{Mechanism, TYPE};
use super::target::KafkaTarget;
use crate::destination::dial::check_host;
use crate::destination::gauge::Counted;
use crate::destination::metadata::message_metadata;
use crate::destination::template::parsed_data;
use crate::destination::{AttemptCode, Outcome};
use crate::store::Event;

/// A failed step: the code and a message for people (never the password).
type Failure = (AttemptCode, String);

/// How long the topic's partition list is trusted before it is read again, so partitions
/// added to the topic start receiving records.
const PARTITIONS_REFRESH: Duration = Duration::from_secs(300);

/// The opened destination. Attempts share one client.
pub struct KafkaPublisher {
    target: KafkaTarget,
    block_private_ips: bool,
    /// Bounds a whole attempt (connecting included).
    timeout: Duration,
    link: Arc<Mutex<Option<Arc<Link>>>>,
    closed: AtomicBool,
}

/// A logged-in client with what it knows of the topic.
struct Link {
    client: Client,
    partitions: SyncMutex<Partitions>,
    producers: SyncMutex<HashMap<i32, Arc<PartitionClient>>>,
    _counted: Counted,
}

/// The topic's partition ids, ascending, and when they were read.
struct Partitions {
    ids: Vec<i32>,
    read_at: Instant,
}

/// Where a record went.
struct Produced {
    key: String,
    partition: i32,
    offset: i64,
}

impl KafkaPublisher {
    pub fn new(target: KafkaTarget, block_private_ips: bool, timeout: Duration) -> Self {
        KafkaPublisher {
            target,
            block_private_ips,
            timeout,
            link: Arc::default(),
            closed: AtomicBool::new(false),
        }
    }

    pub async fn publish(&self, event: &Event) -> Outcome {
        let sent_at = Utc::now();
        match tokio::time::timeout(self.timeout, self.send(event, sent_at)).await {
            Ok(Ok(produced)) => Outcome::accepted(
                json!({
                    "topic": self.target.topic,
                    "partition": produced.partition,
                    "offset": produced.offset,
                    "key": produced.key,
                }),
                sent_at,
            ),
            Ok(Err((code, message))) => Outcome::failed(code, message, sent_at),
            Err(_) => {
                // The client may be stuck halfway; the next attempt starts afresh.
                self.drop_link(None).await;
                Outcome::failed(
                    AttemptCode::Timeout,
                    format!(
                        "Kafka at {} did not acknowledge the record within {:?}",
                        self.target.brokers_text, self.timeout
                    ),
                    sent_at,
                )
            }
        }
    }

    async fn send(&self, event: &Event, sent_at: DateTime<Utc>) -> Result<Produced, Failure> {
        let link = self.link().await?;
        let metadata = message_metadata(event, &self.target.delivery_metadata, sent_at);
        let key = self.key(event, &metadata);
        let result = self.produce(&link, event, key, metadata, sent_at).await;
        if let Err((code, _)) = &result
            && breaks_link(*code)
        {
            self.drop_link(Some(link.as_ref())).await;
        }
        result
    }

    async fn produce(
        &self,
        link: &Link,
        event: &Event,
        key: String,
        metadata: BTreeMap<String, String>,
        sent_at: DateTime<Utc>,
    ) -> Result<Produced, Failure> {
        let ids = self.partition_ids(link).await?;
        let partition = partition_for(key.as_bytes(), &ids);
        let producer = self.producer(link, partition).await?;
        let mut headers: BTreeMap<String, Vec<u8>> = metadata
            .into_iter()
            .map(|(k, v)| (k, v.into_bytes()))
            .collect();
        headers.insert("content-type".to_owned(), b"application/json".to_vec());
        let record = Record {
            key: Some(key.clone().into_bytes()),
            value: Some(event.data.as_bytes().to_vec()),
            headers,
            timestamp: sent_at,
        };
        let offsets = producer
            .produce(vec![record], Compression::NoCompression)
            .await
            .map_err(|error| self.classify(&error))?;
        Ok(Produced {
            key,
            partition,
            offset: offsets.first().copied().unwrap_or(-1),
        })
    }

    /// The record key: the partition key template's result over `{data, metadata}`, else
    /// (no template, a failing one, an empty result) the event id, as Outpost.
    fn key(&self, event: &Event, metadata: &BTreeMap<String, String>) -> String {
        self.target
            .partition_key
            .as_ref()
            .and_then(|template| {
                let scope = json!({"data": parsed_data(&event.data), "metadata": metadata});
                template.evaluate(scope).ok().flatten()
            })
            .unwrap_or_else(|| event.id.clone())
    }

    /// The topic's partitions, read again when older than `PARTITIONS_REFRESH`.
    async fn partition_ids(&self, link: &Link) -> Result<Vec<i32>, Failure> {
        {
            let known = lock(&link.partitions);
            if known.read_at.elapsed() < PARTITIONS_REFRESH {
                return Ok(known.ids.clone());
            }
        }
        let ids = self.read_partitions(&link.client).await?;
        *lock(&link.partitions) = Partitions {
            ids: ids.clone(),
            read_at: Instant::now(),
        };
        Ok(ids)
    }

    async fn read_partitions(&self, client: &Client) -> Result<Vec<i32>, Failure> {
        let topics = client
            .list_topics()
            .await
            .map_err(|error| self.classify(&error))?;
        let topic = &self.target.topic;
        match topics.into_iter().find(|t| &t.name == topic) {
            Some(found) if !found.partitions.is_empty() => {
                Ok(found.partitions.into_iter().collect())
            }
            _ => Err((
                AttemptCode::NotFound,
                format!(
                    "topic {topic:?} does not exist on {}; create it or fix config.topic \
                     (jetpost does not create topics)",
                    self.target.brokers_text
                ),
            )),
        }
    }

    /// The producer of `partition`, made on its first record (it finds the partition's
    /// leader) and kept.
    async fn producer(&self, link: &Link, partition: i32) -> Result<Arc<PartitionClient>, Failure> {
        if let Some(producer) = lock(&link.producers).get(&partition) {
            return Ok(producer.clone());
        }
        let producer = link
            .client
            .partition_client(
                self.target.topic.clone(),
                partition,
                UnknownTopicHandling::Error,
            )
            .await
            .map_err(|error| self.classify(&error))?;
        let producer = Arc::new(producer);
        lock(&link.producers).insert(partition, producer.clone());
        Ok(producer)
    }

    /// The open link, or a new one.
    async fn link(&self) -> Result<Arc<Link>, Failure> {
        let mut slot = self.link.lock().await;
        if let Some(link) = slot.as_ref() {
            return Ok(link.clone());
        }
        if self.closed.load(Ordering::SeqCst) {
            return Err((
                AttemptCode::ServiceError,
                "the destination changed while this attempt was starting; it is retried with \
                 the new settings"
                    .to_owned(),
            ));
        }
        let link = Arc::new(self.connect().await?);
        *slot = Some(link.clone());
        Ok(link)
    }

    async fn connect(&self) -> Result<Link, Failure> {
        let target = &self.target;
        for broker in &target.brokers {
            check_host(&broker.host, broker.port, self.block_private_ips).await?;
        }
        let mut builder = ClientBuilder::new(target.brokers.iter().map(|b| b.address()).collect())
            .client_id(target.name.as_str())
            // rskafka retries a broken connection until this deadline, then says why; the
            // attempt's own timeout stays the outer bound.
            .backoff_config(BackoffConfig {
                deadline: Some(self.timeout.mul_f32(0.8)),
                ..BackoffConfig::default()
            });
        let login = &target.login;
        let credentials =
            Credentials::new(login.username.clone(), login.password.expose().to_owned());
        builder = builder.sasl_config(match login.mechanism {
            Mechanism::Plain => SaslConfig::Plain(credentials),
            Mechanism::ScramSha256 => SaslConfig::ScramSha256(credentials),
            Mechanism::ScramSha512 => SaslConfig::ScramSha512(credentials),
        });
        if target.tls {
            builder = builder.tls_config(tls_config()?);
        }
        let client = builder
            .build()
            .await
            .map_err(|error| self.classify(&error))?;
        let ids = self.read_partitions(&client).await?;
        Ok(Link {
            client,
            partitions: SyncMutex::new(Partitions {
                ids,
                read_at: Instant::now(),
            }),
            producers: SyncMutex::default(),
            _counted: Counted::new(TYPE),
        })
    }

    /// Forgets the link (only `failed`, when given, so a link another attempt just opened
    /// stays); its connections close with the last attempt still using it.
    async fn drop_link(&self, failed: Option<&Link>) {
        let mut slot = self.link.lock().await;
        let matches = match (slot.as_deref(), failed) {
            (Some(current), Some(failed)) => std::ptr::eq(current, failed),
            (Some(_), None) => true,
            (None, _) => false,
        };
        if matches {
            slot.take();
        }
    }

    /// Drops the client; attempts still running finish on it, later ones fail and are
    /// retried with the destination's new version.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        if let Ok(mut slot) = self.link.try_lock() {
            slot.take();
        } else if let Ok(handle) = tokio::runtime::Handle::try_current() {
            // An attempt holds the slot (it is connecting): drop once it lets go.
            let link = self.link.clone();
            handle.spawn(async move {
                link.lock().await.take();
            });
        }
    }

    /// The code and message for an rskafka error.
    fn classify(&self, error: &KafkaError) -> Failure {
        let brokers = &self.target.brokers_text;
        match cause(error) {
            Cause::Broker(code) => self.broker_failure(code),
            Cause::Login(why) => (
                AttemptCode::AuthFailed,
                format!(
                    "Kafka at {brokers} refused the login of user {:?} ({why}); check \
                     credentials.username, credentials.password and config.sasl_mechanism",
                    self.username()
                ),
            ),
            Cause::Network => {
                let text = chain_text(error);
                let lower = text.to_ascii_lowercase();
                let code = if lower.contains("connection refused") {
                    AttemptCode::ConnectionRefused
                } else if lower.contains("failed to lookup address")
                    || lower.contains("name or service not known")
                    || lower.contains("no address associated")
                {
                    AttemptCode::DnsError
                } else if lower.contains("connection reset")
                    || lower.contains("broken pipe")
                    || lower.contains("early eof")
                    || lower.contains("unexpected eof")
                {
                    AttemptCode::ConnectionReset
                } else if lower.contains("certificate") || lower.contains("tls") {
                    AttemptCode::TlsError
                } else if lower.contains("timed out") || lower.contains("deadline") {
                    AttemptCode::Timeout
                } else if lower.contains("io error") || lower.contains("error connecting") {
                    AttemptCode::NetworkError
                } else {
                    AttemptCode::ServiceError
                };
                (code, format!("Kafka at {brokers}: {text}"))
            }
        }
    }

    /// The code and message for an error code the broker answered.
    fn broker_failure(&self, code: ProtocolError) -> Failure {
        let brokers = &self.target.brokers_text;
        let topic = &self.target.topic;
        let user = self.username();
        match code {
            ProtocolError::SaslAuthenticationFailed
            | ProtocolError::UnsupportedSaslMechanism
            | ProtocolError::IllegalSaslState => (
                AttemptCode::AuthFailed,
                format!(
                    "Kafka at {brokers} refused the login of user {user:?} ({code}); check \
                     credentials.username, credentials.password and config.sasl_mechanism"
                ),
            ),
            ProtocolError::TopicAuthorizationFailed | ProtocolError::ClusterAuthorizationFailed => {
                (
                    AttemptCode::AccessDenied,
                    format!(
                        "user {user:?} may not write to topic {topic:?} on {brokers}; grant it WRITE \
                     on the topic"
                    ),
                )
            }
            ProtocolError::UnknownTopicOrPartition => (
                AttemptCode::NotFound,
                format!(
                    "topic {topic:?} does not exist on {brokers}; create it or fix config.topic \
                     (jetpost does not create topics)"
                ),
            ),
            ProtocolError::MessageTooLarge
            | ProtocolError::RecordListTooLarge
            | ProtocolError::InvalidRecord
            | ProtocolError::CorruptMessage => (
                AttemptCode::Rejected,
                format!("Kafka at {brokers} refused the record for good: {code}"),
            ),
            ProtocolError::ThrottlingQuotaExceeded => (
                AttemptCode::Throttled,
                format!("Kafka at {brokers} throttled the producer: {code}"),
            ),
            ProtocolError::RequestTimedOut => (
                AttemptCode::Timeout,
                format!("Kafka at {brokers} timed out the request: {code}"),
            ),
            _ => (
                AttemptCode::ServiceError,
                format!("Kafka at {brokers} answered {code}"),
            ),
        }
    }

    fn username(&self) -> &str {
        &self.target.login.username
    }
}

/// The partition of a record with `key`: FNV-1a (32 bits) of the key, as a signed number,
/// modulo the partition count, made positive: kafka-go's `Hash` balancer (and Sarama's), so a
/// key lands on the same partition as with Outpost.
fn partition_for(key: &[u8], ids: &[i32]) -> i32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in key {
        hash ^= u32::from(*byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    let index = (hash as i32) % (ids.len() as i32);
    ids[index.unsigned_abs() as usize]
}

/// Failures after which the client is built afresh: the connection itself may be at fault.
fn breaks_link(code: AttemptCode) -> bool {
    matches!(
        code,
        AttemptCode::Timeout
            | AttemptCode::ConnectionRefused
            | AttemptCode::DnsError
            | AttemptCode::TlsError
            | AttemptCode::ConnectionReset
            | AttemptCode::NetworkError
            | AttemptCode::ServiceError
    )
}

/// What an rskafka error comes down to.
enum Cause {
    /// The broker answered this error code (also when rskafka gave up retrying it).
    Broker(ProtocolError),
    /// The SASL login failed other than by a broken connection (no common mechanism, a SCRAM
    /// proof that does not verify: a wrong password).
    Login(String),
    /// The connection: refused, reset, timed out, unreadable.
    Network,
}

fn cause(error: &KafkaError) -> Cause {
    let mut current: Option<&(dyn StdError + 'static)> = Some(error);
    while let Some(level) = current {
        if let Some(KafkaError::ServerError { protocol_error, .. }) =
            level.downcast_ref::<KafkaError>()
        {
            return Cause::Broker(*protocol_error);
        }
        match level.downcast_ref::<SaslError>() {
            Some(SaslError::ApiError(code)) => return Cause::Broker(*code),
            // The connection broke during the login: a network failure.
            Some(SaslError::RequestError(_)) | None => {}
            Some(other) => return Cause::Login(other.to_string()),
        }
        current = cause_of(level);
    }
    // rskafka reports a failed connection attempt as text only (its retries keep the last
    // error as a plain message): a login that failed other than by a broken connection.
    let text = chain_text(error);
    match text.split_once("Sasl handshake failed: ") {
        Some((_, why)) if !why.starts_with("Request error") => Cause::Login(why.to_owned()),
        _ => Cause::Network,
    }
}

/// What caused `error`: its `source()`, and for rskafka's connection retries (which do not
/// report their last error as a source) that last error.
fn cause_of<'a>(error: &'a (dyn StdError + 'static)) -> Option<&'a (dyn StdError + 'static)> {
    match error.downcast_ref::<ConnectionError>() {
        Some(ConnectionError::RetryFailed(BackoffError::DeadlineExceded { source, .. })) => {
            Some(source.as_ref())
        }
        _ => error.source(),
    }
}

/// The error and its causes in one line.
fn chain_text(error: &KafkaError) -> String {
    let mut text = error.to_string();
    let mut current = cause_of(error);
    while let Some(level) = current {
        let part = level.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        current = cause_of(level);
    }
    text
}

/// TLS with the platform's trusted roots, as the webhook client.
fn tls_config() -> Result<Arc<rustls::ClientConfig>, Failure> {
    use rustls_platform_verifier::ConfigVerifierExt;
    let _ = rustls::crypto::ring::default_provider().install_default();
    rustls::ClientConfig::with_platform_verifier()
        .map(Arc::new)
        .map_err(|error| {
            (
                AttemptCode::TlsError,
                format!("could not load the system's TLS roots: {error}"),
            )
        })
}

fn lock<T>(mutex: &SyncMutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_land_on_the_partitions_kafka_go_picks() {
        // FNV-1a 32 of "" is 0x811c9dc5 (-2128831035 as i32; Go's % keeps the sign: -2 mod 7,
        // made positive); of "a" 0xe40c292c (-468965076: 1 of 5); of "order-1" 0x2b7fcd6d
        // (729795949: 1 of 4).
        assert_eq!(partition_for(b"", &[0, 1, 2, 3, 4, 5, 6]), 2);
        assert_eq!(partition_for(b"a", &[0, 1, 2, 3, 4]), 1);
        assert_eq!(partition_for(b"order-1", &[10, 11, 12, 13]), 11);
        assert_eq!(partition_for(b"anything", &[7]), 7);
    }
}
