//! The kafka destination tests' broker: the bench's tansu (`jetpost::bench::tansu`, a
//! Kafka-protocol broker from crates.io with one SCRAM user), one per test, with helpers to
//! create topics and read back what jetpost produced. A missing tansu fails the test saying
//! how to install it.

use std::time::Duration;

use jetpost::bench::tansu::TansuBroker;
use rskafka::client::Client;
use rskafka::client::partition::{PartitionClient, UnknownTopicHandling};
use rskafka::record::RecordAndOffset;

use crate::support::nats::PATIENCE;

pub struct Tansu(TansuBroker);

impl Tansu {
    /// A broker on a free port, advertising that port.
    pub async fn start() -> Tansu {
        let port = free_port();
        Tansu::start_on(port, port).await
    }

    /// A broker listening on `port` that tells clients to connect to `advertised` (a proxy in
    /// front of it).
    pub async fn start_on(port: u16, advertised: u16) -> Tansu {
        match TansuBroker::start(port, advertised).await {
            Ok(broker) => Tansu(broker),
            Err(err) => panic!("the kafka destination tests need tansu: {err:#}"),
        }
    }

    /// `127.0.0.1:<advertised port>`: what a destination's `config.brokers` names.
    pub fn address(&self) -> String {
        self.0.address()
    }

    /// A client logged in as the broker's SCRAM user.
    pub async fn client(&self) -> Client {
        self.0.client().await.unwrap()
    }

    /// Creates `topic` with `partitions` partitions.
    pub async fn create_topic(&self, topic: &str, partitions: i32) {
        self.client()
            .await
            .controller_client()
            .unwrap()
            .create_topic(topic, partitions, 1, 5_000)
            .await
            .unwrap();
    }

    async fn partition(&self, topic: &str, partition: i32) -> PartitionClient {
        self.client()
            .await
            .partition_client(topic, partition, UnknownTopicHandling::Retry)
            .await
            .unwrap()
    }

    /// Every record of `topic`'s `partition`, oldest first.
    pub async fn records(&self, topic: &str, partition: i32) -> Vec<RecordAndOffset> {
        let client = self.partition(topic, partition).await;
        let mut records = Vec::new();
        let mut offset = 0;
        loop {
            let (batch, high_watermark) = client
                .fetch_records(offset, 1..1_000_000, 100)
                .await
                .unwrap();
            if batch.is_empty() {
                break;
            }
            offset = batch.last().unwrap().offset + 1;
            records.extend(batch);
            if offset >= high_watermark {
                break;
            }
        }
        records
    }

    /// The records of `topic` across its `partitions`, waiting until there are at least
    /// `count`; with their partition.
    pub async fn wait_for(
        &self,
        topic: &str,
        partitions: i32,
        count: usize,
    ) -> Vec<(i32, RecordAndOffset)> {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let mut all = Vec::new();
            for partition in 0..partitions {
                for record in self.records(topic, partition).await {
                    all.push((partition, record));
                }
            }
            if all.len() >= count {
                return all;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} of {count} records arrived on {topic} within {PATIENCE:?}",
                all.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
