//! The `destinations` scenario's sinks: a RabbitMQ exchange with a queue bound to it, an SQS
//! queue on moto's standalone server and a topic on a tansu broker (Kafka protocol), each with a
//! consumer that stamps every message's event id into the tally, as the receiver does for
//! webhooks. The rig seeds the tenant's destination
//! from [`Sink::destination`].

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use aws_sdk_sqs::config::{BehaviorVersion, Credentials, Region};
use futures::StreamExt as _;
use lapin::options::{
    BasicConsumeOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties, ExchangeKind};
use rskafka::client::partition::{PartitionClient, UnknownTopicHandling};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::rig::SeededDestination;
use super::tally::Tally;
use super::tansu::{self, TansuBroker};

/// The broker the RabbitMQ run publishes to (`JETPOST_BENCH_RABBITMQ` overrides).
const RABBITMQ: &str = "127.0.0.1:5672";
const SQS_KEY: &str = "AKIDJETPOSTBENCH";
const SQS_SECRET: &str = "jetpost-bench-secret";
/// SQS consumers receiving in parallel (each takes up to 10 messages per call).
const SQS_RECEIVERS: usize = 8;

/// Where one run of the scenario delivers, with the consumer reading it back.
pub struct Sink {
    destination: SeededDestination,
    reader: Reader,
    stop: CancellationToken,
    consumers: Vec<JoinHandle<()>>,
    /// Kept alive for the run: moto's process, RabbitMQ's connection, the tansu broker.
    _moto: Option<tokio::process::Child>,
    _rabbitmq: Option<Connection>,
    _tansu: Option<TansuBroker>,
}

/// How a sink is read back once the rig's tally exists.
enum Reader {
    RabbitMq(Option<lapin::Consumer>),
    Sqs {
        client: aws_sdk_sqs::Client,
        queue_url: String,
    },
    Kafka(Option<Arc<PartitionClient>>),
}

impl Sink {
    /// A fresh exchange and queue on the machine's RabbitMQ.
    pub async fn rabbitmq() -> anyhow::Result<Sink> {
        let server =
            std::env::var("JETPOST_BENCH_RABBITMQ").unwrap_or_else(|_| RABBITMQ.to_owned());
        let name = format!("jetpost-bench-{}", uuid::Uuid::new_v4().simple());
        let (connection, deliveries) = bound_queue(&server, &name).await?;
        Ok(Sink {
            destination: SeededDestination {
                kind: "rabbitmq".into(),
                config: [
                    ("server_url".to_owned(), server),
                    ("exchange".to_owned(), name),
                ]
                .into(),
                credentials: [
                    ("username".to_owned(), "guest".to_owned()),
                    ("password".to_owned(), "guest".to_owned()),
                ]
                .into(),
            },
            reader: Reader::RabbitMq(Some(deliveries)),
            stop: CancellationToken::new(),
            consumers: Vec::new(),
            _moto: None,
            _rabbitmq: Some(connection),
            _tansu: None,
        })
    }

    /// A queue on a moto server started here (`MOTO_SERVER_BIN`, else
    /// `.tools/bin/moto_server`).
    pub async fn sqs() -> anyhow::Result<Sink> {
        let binary = tool_binary("MOTO_SERVER_BIN", "moto_server")?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let moto = tokio::process::Command::new(&binary)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let endpoint = format!("http://127.0.0.1:{port}");
        let client = sqs_client(&endpoint);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let queue_url = loop {
            match client
                .create_queue()
                .queue_name("jetpost-bench")
                .send()
                .await
            {
                Ok(created) => break created.queue_url.context("moto gave no queue URL")?,
                Err(_) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(err) => bail!("moto at {endpoint} did not create a queue: {err}"),
            }
        };
        Ok(Sink {
            destination: SeededDestination {
                kind: "aws_sqs".into(),
                config: [
                    ("queue_url".to_owned(), queue_url.clone()),
                    ("endpoint".to_owned(), endpoint),
                ]
                .into(),
                credentials: [
                    ("key".to_owned(), SQS_KEY.to_owned()),
                    ("secret".to_owned(), SQS_SECRET.to_owned()),
                ]
                .into(),
            },
            reader: Reader::Sqs { client, queue_url },
            stop: CancellationToken::new(),
            consumers: Vec::new(),
            _moto: Some(moto),
            _rabbitmq: None,
            _tansu: None,
        })
    }

    /// A one-partition topic on a tansu broker started here (`TANSU_BIN`, else
    /// `.tools/bin/tansu`), logins with SCRAM-SHA-512.
    pub async fn kafka() -> anyhow::Result<Sink> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let broker = TansuBroker::start(port, port).await?;
        let client = broker.client().await?;
        client
            .controller_client()?
            .create_topic("jetpost-bench", 1, 1, 5_000)
            .await
            .context("creating the topic on tansu")?;
        let partition = client
            .partition_client("jetpost-bench", 0, UnknownTopicHandling::Retry)
            .await?;
        Ok(Sink {
            destination: SeededDestination {
                kind: "kafka".into(),
                config: [
                    ("brokers".to_owned(), broker.address()),
                    ("topic".to_owned(), "jetpost-bench".to_owned()),
                    ("sasl_mechanism".to_owned(), "scram-sha-512".to_owned()),
                ]
                .into(),
                credentials: [
                    ("username".to_owned(), tansu::USER.to_owned()),
                    ("password".to_owned(), tansu::PASSWORD.to_owned()),
                ]
                .into(),
            },
            reader: Reader::Kafka(Some(Arc::new(partition))),
            stop: CancellationToken::new(),
            consumers: Vec::new(),
            _moto: None,
            _rabbitmq: None,
            _tansu: Some(broker),
        })
    }

    /// The destination the tenant gets.
    pub fn destination(&self) -> SeededDestination {
        self.destination.clone()
    }

    /// Starts reading the sink back: every message's event id is stamped into `tally`.
    pub fn consume(&mut self, tally: Arc<Tally>) {
        match &mut self.reader {
            Reader::RabbitMq(deliveries) => {
                let Some(mut deliveries) = deliveries.take() else {
                    return;
                };
                let until = self.stop.clone();
                self.consumers.push(tokio::spawn(async move {
                    loop {
                        let delivery = tokio::select! {
                            _ = until.cancelled() => return,
                            delivery = deliveries.next() => delivery,
                        };
                        match delivery {
                            Some(Ok(delivery)) => match delivery.properties.message_id() {
                                Some(id) => tally.arrived(id.as_str()),
                                None => tally.arrived(""),
                            },
                            Some(Err(_)) | None => return,
                        }
                    }
                }));
            }
            Reader::Kafka(partition) => {
                let Some(partition) = partition.take() else {
                    return;
                };
                let until = self.stop.clone();
                self.consumers.push(tokio::spawn(async move {
                    read_kafka(partition, tally, until).await
                }));
            }
            Reader::Sqs { client, queue_url } => {
                for _ in 0..SQS_RECEIVERS {
                    let (client, url) = (client.clone(), queue_url.clone());
                    let (tally, until) = (tally.clone(), self.stop.clone());
                    self.consumers.push(tokio::spawn(async move {
                        receive_sqs(client, url, tally, until).await
                    }));
                }
            }
        }
    }

    /// Stops the consumers (and moto, tansu and the RabbitMQ connection, when dropped).
    pub async fn stop(self) {
        self.stop.cancel();
        for consumer in self.consumers {
            let _ = consumer.await;
        }
    }
}

/// Connects to the RabbitMQ at `server` as guest, declares a topic exchange and a queue, both
/// named `name` and deleted when unused, binds every routing key, and consumes the queue
/// (acknowledged on delivery). Also the `jetpost dev` demo's RabbitMQ.
pub async fn bound_queue(
    server: &str,
    name: &str,
) -> anyhow::Result<(Connection, lapin::Consumer)> {
    let connection = tokio::time::timeout(
        Duration::from_secs(10),
        Connection::connect(
            &format!("amqp://guest:guest@{server}/%2f"),
            ConnectionProperties::default(),
        ),
    )
    .await
    .map_err(|_| anyhow::anyhow!("RabbitMQ at {server} did not answer within 10 s"))?
    .with_context(|| format!("connecting to RabbitMQ at {server} (guest/guest)"))?;
    let channel = connection.create_channel().await?;
    let auto_delete = ExchangeDeclareOptions {
        auto_delete: true,
        ..Default::default()
    };
    channel
        .exchange_declare(
            name.into(),
            ExchangeKind::Topic,
            auto_delete,
            FieldTable::default(),
        )
        .await?;
    let queue = QueueDeclareOptions {
        auto_delete: true,
        ..Default::default()
    };
    channel
        .queue_declare(name.into(), queue, FieldTable::default())
        .await?;
    channel
        .queue_bind(
            name.into(),
            name.into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let deliveries = channel
        .basic_consume(
            name.into(),
            "jetpost".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    Ok((connection, deliveries))
}

/// Receives, stamps and deletes messages until stopped. The event id is in the `metadata`
/// attribute (JSON), as jetpost sends it.
async fn receive_sqs(
    client: aws_sdk_sqs::Client,
    queue_url: String,
    tally: Arc<Tally>,
    stop: CancellationToken,
) {
    while !stop.is_cancelled() {
        let received = client
            .receive_message()
            .queue_url(&queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .message_attribute_names("All")
            .send();
        let received = tokio::select! {
            _ = stop.cancelled() => return,
            received = received => received,
        };
        let Ok(received) = received else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let mut delete = client.delete_message_batch().queue_url(&queue_url);
        let messages = received.messages.unwrap_or_default();
        for (i, message) in messages.iter().enumerate() {
            tally.arrived(&sqs_event_id(message).unwrap_or_default());
            if let Some(handle) = &message.receipt_handle
                && let Ok(entry) = aws_sdk_sqs::types::DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(handle)
                    .build()
            {
                delete = delete.entries(entry);
            }
        }
        if !messages.is_empty() {
            let _ = delete.send().await;
        }
    }
}

/// Reads the topic's partition from the start, stamping each record's `event-id` header,
/// until stopped.
async fn read_kafka(partition: Arc<PartitionClient>, tally: Arc<Tally>, stop: CancellationToken) {
    let mut offset = 0;
    while !stop.is_cancelled() {
        let fetched = partition.fetch_records(offset, 1..4_000_000, 500);
        let fetched = tokio::select! {
            _ = stop.cancelled() => return,
            fetched = fetched => fetched,
        };
        let Ok((records, _high_watermark)) = fetched else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        for found in records {
            offset = offset.max(found.offset + 1);
            let id = found
                .record
                .headers
                .get("event-id")
                .cloned()
                .unwrap_or_default();
            tally.arrived(&String::from_utf8_lossy(&id));
        }
    }
}

fn sqs_event_id(message: &aws_sdk_sqs::types::Message) -> Option<String> {
    let metadata = message.message_attributes.as_ref()?.get("metadata")?;
    let metadata: serde_json::Value = serde_json::from_str(metadata.string_value()?).ok()?;
    metadata["event-id"].as_str().map(str::to_owned)
}

fn sqs_client(endpoint: &str) -> aws_sdk_sqs::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let config = aws_sdk_sqs::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(
            SQS_KEY,
            SQS_SECRET,
            None,
            None,
            "jetpost-bench",
        ))
        .endpoint_url(endpoint)
        .http_client(http)
        .build();
    aws_sdk_sqs::Client::from_conf(config)
}

/// A tool `scripts/install-tools.sh` installs: `$<env>`, else `.tools/bin/<name>`.
fn tool_binary(env: &str, name: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::var_os(env)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(format!(".tools/bin/{name}")));
    if !path.exists() {
        bail!(
            "{name} not found at {}: run scripts/install-tools.sh from the project root, or \
             set {env}",
            path.display()
        );
    }
    Ok(path)
}
