//! One nats destination opened for delivery: its client, connected on the first attempt,
//! reused by the next ones, connected again after it lost the server, closed when the registry
//! lets the destination go. Also how async-nats's errors become attempt codes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex as SyncMutex};
use std::time::Duration;

use async_nats::connection::State;
use async_nats::{
    Client, ConnectErrorKind, ConnectOptions, Event as ClientEvent, HeaderMap, ServerError,
};
use chrono::Utc;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use super::target::{Login, NatsTarget};
use crate::destination::dial::check_host;
use crate::destination::gauge::Counted;
use crate::destination::metadata::message_metadata;
use crate::destination::{AttemptCode, Outcome};
use crate::store::Event;

/// A failed step: the code and a message for people (never a secret).
type Failure = (AttemptCode, String);

/// The opened destination. Attempts share one client.
pub struct NatsPublisher {
    target: NatsTarget,
    block_private_ips: bool,
    /// Bounds a whole attempt (connecting included).
    timeout: Duration,
    client: Arc<Mutex<Option<Connected>>>,
    closed: AtomicBool,
}

#[derive(Clone)]
struct Connected {
    client: Client,
    /// The last error the server reported on this connection (a permissions violation
    /// arrives this way, not as the answer to a publish).
    server_error: Arc<SyncMutex<Option<String>>>,
    _counted: Arc<Counted>,
}

impl NatsPublisher {
    pub fn new(target: NatsTarget, block_private_ips: bool, timeout: Duration) -> Self {
        NatsPublisher {
            target,
            block_private_ips,
            timeout,
            client: Arc::default(),
            closed: AtomicBool::new(false),
        }
    }

    pub async fn publish(&self, event: &Event) -> Outcome {
        let sent_at = Utc::now();
        match tokio::time::timeout(self.timeout, self.send(event)).await {
            Ok(Ok(response)) => Outcome::accepted(response, sent_at),
            Ok(Err((code, message))) => Outcome::failed(code, message, sent_at),
            Err(_) => {
                // A publish the server refused for permissions gets no acknowledgement: the
                // violation it reported says why better than the timeout does.
                let subject = self.target.subject_for(&event.topic);
                let denied = match self.client.try_lock() {
                    Ok(slot) => slot.as_ref().and_then(|c| denied(c, &subject)),
                    Err(_) => None,
                };
                match denied {
                    Some(message) => Outcome::failed(AttemptCode::AccessDenied, message, sent_at),
                    None => Outcome::failed(
                        AttemptCode::Timeout,
                        format!(
                            "NATS at {} did not accept the message within {:?}",
                            self.target.servers_text, self.timeout
                        ),
                        sent_at,
                    ),
                }
            }
        }
    }

    async fn send(&self, event: &Event) -> Result<Value, Failure> {
        let connected = self.connected().await?;
        let subject = self.target.subject_for(&event.topic);
        let headers = self.headers(event);
        let payload = bytes::Bytes::from(event.data.clone());
        let result = if self.target.jetstream {
            self.publish_jetstream(&connected, &subject, headers, payload)
                .await
        } else {
            self.publish_core(&connected, &subject, headers, payload)
                .await
        };
        result.map_err(|failure| match denied(&connected, &subject) {
            Some(message) => (AttemptCode::AccessDenied, message),
            None => failure,
        })
    }

    async fn publish_core(
        &self,
        connected: &Connected,
        subject: &str,
        headers: HeaderMap,
        payload: bytes::Bytes,
    ) -> Result<Value, Failure> {
        connected
            .client
            .publish_with_headers(subject.to_owned(), headers, payload)
            .await
            .map_err(|error| match error.kind() {
                async_nats::client::PublishErrorKind::MaxPayloadExceeded => (
                    AttemptCode::Rejected,
                    format!("NATS refused the message: {error}"),
                ),
                async_nats::client::PublishErrorKind::InvalidSubject => (
                    AttemptCode::InvalidRequest,
                    format!("{subject:?} is not a valid subject; check config.subject"),
                ),
                async_nats::client::PublishErrorKind::Send => (
                    AttemptCode::ConnectionReset,
                    format!("the connection to NATS closed: {error}"),
                ),
            })?;
        connected.client.flush().await.map_err(|error| {
            (
                AttemptCode::ConnectionReset,
                format!("the connection to NATS closed: {error}"),
            )
        })?;
        if let Some(message) = denied(connected, subject) {
            return Err((AttemptCode::AccessDenied, message));
        }
        Ok(json!({ "subject": subject }))
    }

    async fn publish_jetstream(
        &self,
        connected: &Connected,
        subject: &str,
        headers: HeaderMap,
        payload: bytes::Bytes,
    ) -> Result<Value, Failure> {
        use async_nats::jetstream::context::PublishErrorKind as Kind;
        let mut js = async_nats::jetstream::new(connected.client.clone());
        js.set_timeout(self.timeout);
        let classify = |error: async_nats::jetstream::context::PublishError| match error.kind() {
            Kind::StreamNotFound => (
                AttemptCode::NotFound,
                format!(
                    "no JetStream stream captures subject {subject:?} on {}; create one or set \
                     config.jetstream to \"false\"",
                    self.target.servers_text
                ),
            ),
            Kind::TimedOut => (
                AttemptCode::Timeout,
                format!("no JetStream acknowledgement for {subject:?}: {error}"),
            ),
            Kind::BrokenPipe => (
                AttemptCode::ConnectionReset,
                format!("the connection to NATS closed: {error}"),
            ),
            Kind::MaxPayloadExceeded => (
                AttemptCode::Rejected,
                format!("NATS refused the message: {error}"),
            ),
            Kind::MaxAckPending => (
                AttemptCode::Throttled,
                format!("JetStream is busy: {error}"),
            ),
            _ => (
                AttemptCode::ServiceError,
                format!("JetStream refused the message: {error}"),
            ),
        };
        let ack = js
            .publish_with_headers(subject.to_owned(), headers, payload)
            .await
            .map_err(classify)?
            .await
            .map_err(classify)?;
        Ok(json!({
            "subject": subject,
            "stream": ack.stream,
            "sequence": ack.sequence,
            "duplicate": ack.duplicate,
        }))
    }

    /// The connected client, or a new one.
    async fn connected(&self) -> Result<Connected, Failure> {
        let mut slot = self.client.lock().await;
        if let Some(connected) = slot.as_ref() {
            if connected.client.connection_state() == State::Connected {
                return Ok(connected.clone());
            }
            // Lost the server: start afresh, so this attempt reports why it cannot connect
            // instead of queueing behind the client's own reconnects.
            if let Some(lost) = slot.take() {
                close_in_background(lost.client);
            }
        }
        if self.closed.load(Ordering::SeqCst) {
            return Err((
                AttemptCode::ServiceError,
                "the destination changed while this attempt was starting; it is retried with \
                 the new settings"
                    .to_owned(),
            ));
        }
        let connected = self.connect().await?;
        *slot = Some(connected.clone());
        Ok(connected)
    }

    async fn connect(&self) -> Result<Connected, Failure> {
        let target = &self.target;
        for server in &target.servers {
            check_host(&server.host, server.port, self.block_private_ips).await?;
        }
        let server_error: Arc<SyncMutex<Option<String>>> = Arc::default();
        let recorded = server_error.clone();
        let options = match &target.login {
            Login::None => ConnectOptions::new(),
            Login::Creds(creds) => {
                ConnectOptions::with_credentials(creds.expose()).map_err(|_| {
                    (
                        AttemptCode::AuthFailed,
                        "credentials.creds is not a NATS .creds file; replace it".to_owned(),
                    )
                })?
            }
            Login::Token(token) => ConnectOptions::new().token(token.expose().to_owned()),
            Login::User { username, password } => ConnectOptions::new()
                .user_and_password(username.clone(), password.expose().to_owned()),
        };
        let urls: Vec<async_nats::ServerAddr> = target
            .servers
            .iter()
            .map(|s| s.url.parse())
            .collect::<Result<_, _>>()
            .map_err(|error| {
                (
                    AttemptCode::InvalidRequest,
                    format!("config.servers: {error}"),
                )
            })?;
        let client = options
            .name(format!("jetpost {}", target.name))
            .connection_timeout(self.timeout)
            // Only the servers the tenant named: the ones a server advertises were never checked.
            .ignore_discovered_servers()
            .event_callback(move |event| {
                let recorded = recorded.clone();
                async move {
                    if let ClientEvent::ServerError(ServerError::Other(message)) = event {
                        *recorded.lock().unwrap_or_else(|e| e.into_inner()) = Some(message);
                    }
                }
            })
            .connect(urls)
            .await
            .map_err(|error| {
                let servers = &target.servers_text;
                match error.kind() {
                    ConnectErrorKind::AuthorizationViolation | ConnectErrorKind::Authentication => {
                        (
                            AttemptCode::AuthFailed,
                            format!(
                                "NATS at {servers} refused the login ({error}); check the \
                             destination's credentials"
                            ),
                        )
                    }
                    ConnectErrorKind::Dns => {
                        (AttemptCode::DnsError, format!("NATS at {servers}: {error}"))
                    }
                    ConnectErrorKind::TimedOut => {
                        (AttemptCode::Timeout, format!("NATS at {servers}: {error}"))
                    }
                    ConnectErrorKind::Tls => {
                        (AttemptCode::TlsError, format!("NATS at {servers}: {error}"))
                    }
                    _ => {
                        let text = error.to_string();
                        let code = if text.contains("refused") {
                            AttemptCode::ConnectionRefused
                        } else {
                            AttemptCode::NetworkError
                        };
                        (code, format!("NATS at {servers}: {text}"))
                    }
                }
            })?;
        Ok(Connected {
            client,
            server_error,
            _counted: Arc::new(Counted::new(super::TYPE)),
        })
    }

    /// Closes the client; attempts still running fail and are retried.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        if let Ok(mut slot) = self.client.try_lock() {
            if let Some(connected) = slot.take() {
                close_in_background(connected.client);
            }
            return;
        }
        // An attempt holds the slot (it is connecting): close once it lets go.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let slot = self.client.clone();
            handle.spawn(async move {
                if let Some(connected) = slot.lock().await.take() {
                    close_in_background(connected.client);
                }
            });
        }
    }

    /// `Nats-Msg-Id` (the event id, so JetStream drops a retried duplicate), the content type,
    /// and Outpost's metadata (event id, topic, timestamp, delivery and event metadata).
    fn headers(&self, event: &Event) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (key, value) in message_metadata(event, &self.target.delivery_metadata, Utc::now()) {
            // A key or value NATS cannot carry in a header is skipped, not fatal.
            if let (Ok(name), Ok(value)) = (
                key.parse::<async_nats::HeaderName>(),
                value.parse::<async_nats::HeaderValue>(),
            ) {
                headers.insert(name, value);
            } else {
                tracing::warn!(header = key, "metadata skipped: not valid in a NATS header");
            }
        }
        headers.insert("Content-Type", "application/json");
        headers.insert("Nats-Msg-Id", event.id.as_str());
        headers
    }
}

/// The permissions violation the server reported for `subject`, as a message.
fn denied(connected: &Connected, subject: &str) -> Option<String> {
    let mut recorded = connected
        .server_error
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let message = recorded.as_deref()?;
    if !message
        .to_ascii_lowercase()
        .contains("permissions violation")
        || !message.contains(subject)
    {
        return None;
    }
    let message = format!(
        "NATS refused the publish ({}); allow this user to publish to {subject:?}",
        message.trim_matches('\'')
    );
    *recorded = None;
    Some(message)
}

fn close_in_background(client: Client) {
    if let Ok(handle) = tokio::runtime::Handle::try_current() {
        handle.spawn(async move {
            let _ = client.drain().await;
        });
    }
}
