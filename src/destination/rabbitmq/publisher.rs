//! One rabbitmq destination opened for delivery: its AMQP connection and confirm-mode channel,
//! opened on the first attempt, reused by the next ones, opened again after a failure, closed
//! when the registry lets the destination go. Also the classification of lapin's errors into
//! attempt codes.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::Utc;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::uri::{AMQPAuthority, AMQPQueryString, AMQPScheme, AMQPUri, AMQPUserInfo};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ErrorKind};
use serde_json::json;
use tokio::sync::Mutex;

use super::target::RabbitMqTarget;
use crate::destination::dial::check_host;
use crate::destination::gauge::Counted;
use crate::destination::metadata::message_metadata;
use crate::destination::{AttemptCode, Outcome};
use crate::store::Event;

/// AMQP's persistent delivery mode: the broker writes the message to disk in durable queues.
const PERSISTENT: u8 = 2;

/// A failed step: the code and a message for people (never the password).
type Failure = (AttemptCode, String);

/// The opened destination. Attempts share one connection and channel.
pub struct RabbitMqPublisher {
    target: RabbitMqTarget,
    block_private_ips: bool,
    /// Bounds a whole attempt (connecting included).
    timeout: Duration,
    link: Arc<Mutex<Option<Arc<Link>>>>,
    closed: AtomicBool,
}

/// An open connection with its channel in confirm mode.
struct Link {
    connection: Connection,
    channel: Channel,
    _counted: Counted,
}

impl Link {
    fn usable(&self) -> bool {
        self.connection.status().connected() && self.channel.status().connected()
    }
}

impl RabbitMqPublisher {
    pub fn new(target: RabbitMqTarget, block_private_ips: bool, timeout: Duration) -> Self {
        RabbitMqPublisher {
            target,
            block_private_ips,
            timeout,
            link: Arc::default(),
            closed: AtomicBool::new(false),
        }
    }

    pub async fn publish(&self, event: &Event) -> Outcome {
        let sent_at = Utc::now();
        let attempt = tokio::time::timeout(self.timeout, self.send(event));
        match attempt.await {
            Ok(Ok(())) => Outcome::accepted(
                json!({"exchange": self.target.exchange, "routing_key": event.topic}),
                sent_at,
            ),
            Ok(Err((code, message))) => Outcome::failed(code, message, sent_at),
            Err(_) => {
                // The connection may be stuck halfway; the next attempt starts afresh.
                self.drop_link(None).await;
                Outcome::failed(
                    AttemptCode::Timeout,
                    format!(
                        "RabbitMQ at {} did not confirm within {:?}",
                        self.target.server_url, self.timeout
                    ),
                    sent_at,
                )
            }
        }
    }

    async fn send(&self, event: &Event) -> Result<(), Failure> {
        let link = self.link().await?;
        let properties = BasicProperties::default()
            .with_content_type(ShortString::from("application/json"))
            .with_delivery_mode(PERSISTENT)
            .with_message_id(ShortString::from(event.id.as_str()))
            .with_headers(self.headers(event, Utc::now()));
        let published = link
            .channel
            .basic_publish(
                ShortString::from(self.target.exchange.as_str()),
                ShortString::from(event.topic.as_str()),
                // Not mandatory, as Outpost: a message no queue is bound for is dropped by the
                // broker and still confirmed.
                BasicPublishOptions::default(),
                event.data.as_bytes(),
                properties,
            )
            .await;
        let confirmed = match published {
            Ok(confirm) => confirm.await,
            Err(error) => Err(error),
        };
        match confirmed {
            Ok(Confirmation::Ack(_)) => Ok(()),
            Ok(Confirmation::Nack(_)) => Err((
                AttemptCode::ServiceError,
                format!(
                    "RabbitMQ at {} refused the message (nack): it could not store it; \
                     retried",
                    self.target.server_url
                ),
            )),
            Ok(Confirmation::NotRequested) => Err((
                AttemptCode::ServiceError,
                "the channel is not in confirm mode".to_owned(),
            )),
            Err(error) => {
                let failure = self.classify(&error, false);
                self.drop_link(Some(&link)).await;
                Err(failure)
            }
        }
    }

    /// The open link, or a new one.
    async fn link(&self) -> Result<Arc<Link>, Failure> {
        let mut slot = self.link.lock().await;
        if let Some(link) = slot.as_ref()
            && link.usable()
        {
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
        if let Some(broken) = slot.take() {
            close_in_background(broken);
        }
        let link = Arc::new(self.connect().await?);
        *slot = Some(link.clone());
        Ok(link)
    }

    async fn connect(&self) -> Result<Link, Failure> {
        let target = &self.target;
        check_host(&target.host, target.port, self.block_private_ips).await?;
        let uri = AMQPUri {
            scheme: if target.tls {
                AMQPScheme::AMQPS
            } else {
                AMQPScheme::AMQP
            },
            authority: AMQPAuthority {
                userinfo: AMQPUserInfo {
                    username: target.username.clone(),
                    password: target.password.expose().to_owned(),
                },
                host: target.host.clone(),
                port: target.port,
            },
            vhost: "/".to_owned(),
            query: AMQPQueryString {
                connection_timeout: Some(self.timeout.as_millis() as u64),
                ..AMQPQueryString::default()
            },
        };
        let properties = ConnectionProperties::default()
            .with_connection_name(LongString::from(format!("jetpost {}", target.name)));
        let connection = Connection::connect_uri(uri, properties)
            .await
            .map_err(|error| self.classify(&error, true))?;
        let channel = match connection.create_channel().await {
            Ok(channel) => channel,
            Err(error) => {
                close_connection_in_background(connection);
                return Err(self.classify(&error, false));
            }
        };
        if let Err(error) = channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
        {
            close_connection_in_background(connection);
            return Err(self.classify(&error, false));
        }
        Ok(Link {
            connection,
            channel,
            _counted: Counted::new(super::TYPE),
        })
    }

    /// Forgets the link (only `failed`, when given, so a link another attempt just opened
    /// stays) and closes it.
    async fn drop_link(&self, failed: Option<&Arc<Link>>) {
        let mut slot = self.link.lock().await;
        let matches = match (slot.as_ref(), failed) {
            (Some(current), Some(failed)) => Arc::ptr_eq(current, failed),
            (Some(_), None) => true,
            (None, _) => false,
        };
        if matches && let Some(link) = slot.take() {
            close_in_background(link);
        }
    }

    /// Closes the connection; attempts still running fail and are retried elsewhere.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let taken = match self.link.try_lock() {
            Ok(mut slot) => slot.take(),
            Err(_) => None,
        };
        match taken {
            Some(link) => close_in_background(link),
            None => {
                // An attempt holds the slot (it is connecting): close once it lets go.
                if let Ok(handle) = tokio::runtime::Handle::try_current() {
                    let link = self.link.clone();
                    handle.spawn(async move {
                        if let Some(link) = link.lock().await.take() {
                            close_in_background(link);
                        }
                    });
                }
            }
        }
    }

    /// The message headers: Outpost's metadata (event id, topic, timestamp, delivery and
    /// event metadata) as AMQP long strings.
    fn headers(&self, event: &Event, sent_at: chrono::DateTime<Utc>) -> FieldTable {
        let mut table = FieldTable::default();
        for (key, value) in message_metadata(event, &self.target.delivery_metadata, sent_at) {
            table.insert(
                ShortString::from(key),
                AMQPValue::LongString(LongString::from(value)),
            );
        }
        table
    }

    /// The code and message for a lapin error; `connecting` while logging in, where RabbitMQ
    /// answers a wrong user or password with ACCESS_REFUSED.
    fn classify(&self, error: &lapin::Error, connecting: bool) -> Failure {
        let target = &self.target;
        let server = &target.server_url;
        match error.kind() {
            ErrorKind::ProtocolError(amqp) => {
                let text = amqp.get_message().as_str();
                match amqp.get_id() {
                    403 if connecting => (
                        AttemptCode::AuthFailed,
                        format!(
                            "RabbitMQ at {server} refused the login of user {:?} ({text}); \
                             check credentials.username and credentials.password",
                            target.username
                        ),
                    ),
                    403 => (
                        AttemptCode::AccessDenied,
                        format!(
                            "user {:?} may not publish to exchange {:?} on {server} ({text}); \
                             grant it write permission",
                            target.username, target.exchange
                        ),
                    ),
                    530 => (
                        AttemptCode::AccessDenied,
                        format!(
                            "user {:?} may not use the virtual host on {server} ({text})",
                            target.username
                        ),
                    ),
                    404 => (
                        AttemptCode::NotFound,
                        format!(
                            "exchange {:?} does not exist on {server} ({text}); declare it or \
                             fix config.exchange",
                            target.exchange
                        ),
                    ),
                    311 => (
                        AttemptCode::Rejected,
                        format!("RabbitMQ at {server} refused the message as too large ({text})"),
                    ),
                    _ => (
                        AttemptCode::ServiceError,
                        format!("RabbitMQ at {server} closed the connection: {text}"),
                    ),
                }
            }
            ErrorKind::IOError(io) | ErrorKind::RuntimeShutdownError(io) => {
                (io_code(io), format!("RabbitMQ at {server}: {io}"))
            }
            ErrorKind::MissingHeartbeatError => (
                AttemptCode::Timeout,
                format!("RabbitMQ at {server} stopped answering heartbeats"),
            ),
            ErrorKind::InvalidConnectionState(_) | ErrorKind::InvalidChannelState(..) => (
                AttemptCode::ConnectionReset,
                format!("the connection to RabbitMQ at {server} was closed: {error}"),
            ),
            _ => (
                AttemptCode::ServiceError,
                format!("RabbitMQ at {server}: {error}"),
            ),
        }
    }
}

fn io_code(error: &io::Error) -> AttemptCode {
    if error
        .get_ref()
        .is_some_and(|inner| inner.is::<rustls::Error>())
    {
        return AttemptCode::TlsError;
    }
    match error.kind() {
        io::ErrorKind::ConnectionRefused => AttemptCode::ConnectionRefused,
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe
        | io::ErrorKind::UnexpectedEof => AttemptCode::ConnectionReset,
        io::ErrorKind::TimedOut => AttemptCode::Timeout,
        io::ErrorKind::InvalidData => AttemptCode::TlsError,
        _ => AttemptCode::NetworkError,
    }
}

fn close_in_background(link: Arc<Link>) {
    // While an attempt still holds the link, the last holder's drop closes it (lapin closes a
    // connection when its last handle goes).
    if let Ok(link) = Arc::try_unwrap(link) {
        close_connection_in_background(link.connection);
    }
}

fn close_connection_in_background(connection: Connection) {
    if let Ok(handle) = tokio::runtime::Handle::try_current() {
        handle.spawn(async move {
            let _ = connection
                .close(200, ShortString::from("jetpost closed the destination"))
                .await;
        });
    }
}
