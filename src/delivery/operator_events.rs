//! Outpost's operator events over HTTP: the envelope (`id`, `topic`, `time`, `tenant_id`,
//! `data`), the topic filter, the payloads of the delivery topics, and a best-effort sender
//! (`X-Outpost-Signature: v0=<hex HMAC-SHA256>`, three tries) that never blocks delivery.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::value::RawValue;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::config::{OperatorEventsConfig, Secret};
use crate::destination::webhook::signature::sign_default;
use crate::store::{Attempt, Destination, Event, Metadata};

pub const TOPIC_CONSECUTIVE_FAILURE: &str = "alert.destination.consecutive_failure";
pub const TOPIC_DESTINATION_DISABLED: &str = "alert.destination.disabled";
pub const TOPIC_EXHAUSTED_RETRIES: &str = "alert.attempt.exhausted_retries";
pub const TOPIC_ATTEMPT_SUCCESS: &str = "attempt.success";
pub const TOPIC_ATTEMPT_FAILED: &str = "attempt.failed";

/// The header carrying the signature (Outpost's name).
pub const SIGNATURE_HEADER: &str = "x-outpost-signature";

/// Events waiting to be sent; beyond this they are dropped (and counted), never waited for.
const QUEUE: usize = 4096;
/// Requests in flight to the operator endpoint.
const SENDERS: usize = 8;
/// Outpost's sender: three tries, 100 ms then 200 ms apart.
const TRIES: u32 = 3;
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends operator events; cheap to clone. `off()` (or no topics) sends nothing.
#[derive(Clone, Default)]
pub struct OperatorEvents {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    /// `None`: every topic (`*`).
    topics: Option<Vec<String>>,
    queue: mpsc::Sender<Outgoing>,
    stop: CancellationToken,
    task: std::sync::Mutex<Option<JoinHandle<()>>>,
}

struct Outgoing {
    topic: &'static str,
    body: Bytes,
}

impl std::fmt::Debug for OperatorEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorEvents")
            .field("on", &self.inner.is_some())
            .finish()
    }
}

/// The operator event endpoint's HTTP client could not be built.
#[derive(Debug, thiserror::Error)]
#[error("could not build the operator events HTTP client: {0}")]
pub struct OperatorEventsError(#[source] reqwest::Error);

impl OperatorEvents {
    /// Sends nothing.
    pub fn off() -> Self {
        OperatorEvents { inner: None }
    }

    /// Starts the sender when `config` has topics and an HTTP URL; otherwise `off()`. Needs a
    /// Tokio runtime.
    pub fn start(config: &OperatorEventsConfig) -> Result<Self, OperatorEventsError> {
        let Some(url) = config
            .http
            .url
            .clone()
            .filter(|_| !config.topics.is_empty())
        else {
            return Ok(Self::off());
        };
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .user_agent(format!("jetpost/{}", env!("CARGO_PKG_VERSION")))
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(OperatorEventsError)?;
        let topics = if config.topics.iter().any(|t| t == "*") {
            None
        } else {
            Some(config.topics.clone())
        };
        let (queue, receiver) = mpsc::channel(QUEUE);
        let stop = CancellationToken::new();
        let sink = Sink {
            client,
            url,
            signing_secret: config.http.signing_secret.clone(),
        };
        let task = tokio::spawn(send_loop(sink, receiver, stop.clone()));
        Ok(OperatorEvents {
            inner: Some(Arc::new(Inner {
                topics,
                queue,
                stop,
                task: std::sync::Mutex::new(Some(task)),
            })),
        })
    }

    /// Whether events of `topic` are sent (build payloads only then).
    pub fn enabled(&self, topic: &str) -> bool {
        self.inner.as_ref().is_some_and(|inner| {
            inner
                .topics
                .as_ref()
                .is_none_or(|topics| topics.iter().any(|t| t == topic))
        })
    }

    /// Queues an event for sending and returns at once; dropped (logged, counted) when the
    /// topic is off, or when the queue is full because the endpoint cannot keep up.
    pub fn emit(&self, topic: &'static str, tenant_id: &str, data: &impl Serialize) {
        let Some(inner) = self.inner.as_ref().filter(|_| self.enabled(topic)) else {
            return;
        };
        let envelope = Envelope {
            id: uuid::Uuid::new_v4().to_string(),
            topic,
            time: rfc3339(Utc::now()),
            tenant_id: (!tenant_id.is_empty()).then_some(tenant_id),
            data,
        };
        let body = match serde_json::to_vec(&envelope) {
            Ok(body) => Bytes::from(body),
            Err(err) => {
                warn!(topic, "operator event not sent: cannot encode it: {err}");
                return;
            }
        };
        if inner.queue.try_send(Outgoing { topic, body }).is_err() {
            metrics::counter!("jetpost_operator_events_total", "result" => "dropped").increment(1);
            warn!(
                topic,
                "operator event dropped: the operator endpoint is not keeping up"
            );
        }
    }

    /// Stops taking events and sends what is queued, for at most `grace`.
    pub async fn stop(&self, grace: Duration) {
        let Some(inner) = &self.inner else { return };
        inner.stop.cancel();
        let task = inner.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(mut task) = task
            && tokio::time::timeout(grace, &mut task).await.is_err()
        {
            warn!("operator events still unsent after {grace:?}; dropping them");
            task.abort();
        }
    }
}

#[derive(Serialize)]
struct Envelope<'a, T: Serialize> {
    id: String,
    topic: &'a str,
    time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    tenant_id: Option<&'a str>,
    data: &'a T,
}

struct Sink {
    client: reqwest::Client,
    url: String,
    signing_secret: Secret,
}

impl Sink {
    async fn send(&self, event: &Outgoing) -> Result<(), String> {
        let mut request = self
            .client
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(event.body.clone());
        if !self.signing_secret.is_empty() {
            let signature = sign_default(self.signing_secret.expose(), &event.body);
            request = request.header(SIGNATURE_HEADER, format!("v0={signature}"));
        }
        let response = request.send().await.map_err(|e| e.to_string())?;
        let status = response.status();
        if status.as_u16() >= 400 {
            return Err(format!("the endpoint answered {status}"));
        }
        Ok(())
    }

    async fn send_with_tries(&self, event: Outgoing) {
        let mut backoff = FIRST_BACKOFF;
        for attempt in 1..=TRIES {
            match self.send(&event).await {
                Ok(()) => {
                    metrics::counter!("jetpost_operator_events_total", "result" => "sent")
                        .increment(1);
                    debug!(topic = event.topic, "operator event sent");
                    return;
                }
                Err(err) if attempt == TRIES => {
                    metrics::counter!("jetpost_operator_events_total", "result" => "failed")
                        .increment(1);
                    warn!(
                        topic = event.topic,
                        "operator event not delivered after {TRIES} tries: {err}"
                    );
                }
                Err(_) => {
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                }
            }
        }
    }
}

async fn send_loop(sink: Sink, mut queue: mpsc::Receiver<Outgoing>, stop: CancellationToken) {
    let sink = Arc::new(sink);
    let senders = Arc::new(Semaphore::new(SENDERS));
    let tracker = TaskTracker::new();
    loop {
        let event = tokio::select! {
            event = queue.recv() => event,
            _ = stop.cancelled() => {
                // Take nothing new; what is queued still goes out.
                queue.close();
                queue.recv().await
            }
        };
        let Some(event) = event else { break };
        let Ok(permit) = senders.clone().acquire_owned().await else {
            break;
        };
        let sink = sink.clone();
        tracker.spawn(async move {
            sink.send_with_tries(event).await;
            drop(permit);
        });
    }
    tracker.close();
    tracker.wait().await;
}

fn rfc3339(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

// --- payloads (Outpost's shapes) ---

/// Outpost's event object.
#[derive(Debug, Serialize)]
pub struct EventPayload<'a> {
    pub id: &'a str,
    pub tenant_id: &'a str,
    /// Outpost sends an empty string when the event named no destination.
    pub destination_id: &'a str,
    pub matched_destination_ids: &'a [String],
    pub topic: &'a str,
    pub eligible_for_retry: bool,
    pub time: String,
    pub metadata: Option<&'a Metadata>,
    /// The event's `data`, its bytes as published.
    pub data: Option<Box<RawValue>>,
}

impl<'a> EventPayload<'a> {
    pub fn of(event: &'a Event) -> Self {
        EventPayload {
            id: &event.id,
            tenant_id: &event.tenant_id,
            destination_id: event.destination_id.as_deref().unwrap_or_default(),
            matched_destination_ids: &event.destination_ids,
            topic: &event.topic,
            eligible_for_retry: event.eligible_for_retry,
            time: rfc3339(event.time),
            metadata: event.metadata.as_ref(),
            data: RawValue::from_string(event.data.clone()).ok(),
        }
    }
}

/// Outpost's attempt object.
#[derive(Debug, Serialize)]
pub struct AttemptPayload<'a> {
    pub id: &'a str,
    pub tenant_id: &'a str,
    pub event_id: &'a str,
    pub destination_id: &'a str,
    pub destination_type: &'a str,
    pub attempt_number: u32,
    pub manual: bool,
    pub status: &'a str,
    pub time: String,
    pub code: &'a str,
    pub response_data: Option<&'a serde_json::Value>,
}

impl<'a> AttemptPayload<'a> {
    pub fn of(attempt: &'a Attempt, destination_type: &'a str) -> Self {
        AttemptPayload {
            id: &attempt.id,
            tenant_id: &attempt.tenant_id,
            event_id: &attempt.event_id,
            destination_id: &attempt.destination_id,
            destination_type,
            attempt_number: attempt.attempt_number,
            manual: attempt.manual,
            status: attempt.status.as_str(),
            time: rfc3339(attempt.time),
            code: &attempt.code,
            response_data: attempt.response_data.as_ref(),
        }
    }
}

/// Outpost's destination projection in alert payloads (no credentials, no metadata).
#[derive(Debug, Serialize)]
pub struct DestinationPayload<'a> {
    pub id: &'a str,
    pub tenant_id: &'a str,
    #[serde(rename = "type")]
    pub kind: &'a str,
    pub topics: &'a [String],
    pub config: &'a BTreeMap<String, String>,
    pub created_at: String,
    pub disabled_at: Option<String>,
}

impl<'a> DestinationPayload<'a> {
    pub fn of(destination: &'a Destination) -> Self {
        DestinationPayload {
            id: &destination.id,
            tenant_id: &destination.tenant_id,
            kind: &destination.kind,
            topics: &destination.topics,
            config: &destination.config,
            created_at: rfc3339(destination.created_at),
            disabled_at: destination.disabled_at.map(rfc3339),
        }
    }
}

/// `attempt.success`, `attempt.failed` and `alert.attempt.exhausted_retries`.
#[derive(Debug, Serialize)]
pub struct AttemptData<'a> {
    pub tenant_id: &'a str,
    pub event: &'a EventPayload<'a>,
    pub attempt: &'a AttemptPayload<'a>,
    pub destination: &'a DestinationPayload<'a>,
}

/// Where a destination's failure streak stands.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ConsecutiveFailures {
    pub current: u32,
    pub max: u32,
    /// The level reached, in percent.
    pub threshold: u8,
}

/// `alert.destination.consecutive_failure`.
#[derive(Debug, Serialize)]
pub struct ConsecutiveFailureData<'a> {
    pub tenant_id: &'a str,
    pub event: &'a EventPayload<'a>,
    pub attempt: &'a AttemptPayload<'a>,
    pub destination: &'a DestinationPayload<'a>,
    pub consecutive_failures: ConsecutiveFailures,
}

/// `alert.destination.disabled`.
#[derive(Debug, Serialize)]
pub struct DestinationDisabledData<'a> {
    pub tenant_id: &'a str,
    pub destination: &'a DestinationPayload<'a>,
    pub disabled_at: String,
    /// Always `consecutive_failure`.
    pub reason: &'a str,
    pub event: &'a EventPayload<'a>,
    pub attempt: &'a AttemptPayload<'a>,
}

impl DestinationDisabledData<'_> {
    pub fn disabled_at(at: DateTime<Utc>) -> String {
        rfc3339(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(topics: &[&str]) -> OperatorEventsConfig {
        OperatorEventsConfig {
            topics: topics.iter().map(|t| t.to_string()).collect(),
            http: crate::config::OperatorEventsHttpConfig {
                url: Some("http://127.0.0.1:9/".into()),
                ..Default::default()
            },
        }
    }

    #[tokio::test]
    async fn topics_filter_what_is_sent() {
        let off = OperatorEvents::off();
        assert!(!off.enabled(TOPIC_ATTEMPT_FAILED));

        let some = OperatorEvents::start(&config(&[TOPIC_DESTINATION_DISABLED])).unwrap();
        assert!(some.enabled(TOPIC_DESTINATION_DISABLED));
        assert!(!some.enabled(TOPIC_ATTEMPT_FAILED));
        some.stop(Duration::from_secs(1)).await;

        let all = OperatorEvents::start(&config(&["*"])).unwrap();
        assert!(all.enabled(TOPIC_ATTEMPT_SUCCESS));
        all.stop(Duration::from_secs(1)).await;

        let no_topics = OperatorEvents::start(&config(&[])).unwrap();
        assert!(!no_topics.enabled(TOPIC_ATTEMPT_SUCCESS));
    }

    #[test]
    fn event_payload_keeps_data_bytes() {
        let event = Event {
            tenant_id: "t".into(),
            id: "e".into(),
            destination_id: None,
            topic: "order.paid".into(),
            time: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            metadata: None,
            data: r#"{"b":1,"a":12345678901234567890}"#.into(),
            eligible_for_retry: true,
            destination_ids: vec!["d".into()],
            created_at: Utc::now(),
        };
        let json = serde_json::to_string(&EventPayload::of(&event)).unwrap();
        assert!(
            json.contains(r#""data":{"b":1,"a":12345678901234567890}"#),
            "{json}"
        );
        assert!(json.contains(r#""destination_id":"""#), "{json}");
        assert!(json.contains(r#""time":"2023-11-14T22:13:20Z""#), "{json}");
    }
}
