//! Where events come from: the `IngestSink` contract every source hands its messages to, and the
//! NATS JetStream source. A source proves the tenant; the sink validates, stores and decides how
//! the message is settled.

pub mod nats;

use futures::future::BoxFuture;

/// A message a source took in, with the tenant identity the source proved already spliced in.
#[derive(Debug, Clone)]
pub struct SourceMessage {
    /// The event JSON, with the top-level `tenant_id` set by the source (never the payload's).
    pub body: Vec<u8>,
    /// The tenant the source proved (the account's, or the subject token's in aggregate mode).
    pub tenant_id: String,
    /// The id for an event whose body has no `id`: the same on every redelivery.
    pub default_id: String,
    /// The source account's name, for logs and metrics.
    pub account: String,
}

/// What became of a message; decides how it is settled with its source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Durably committed, or already committed before (a duplicate): ack.
    Committed { duplicate: bool },
    /// Valid, but nothing to deliver (unknown tenant, no matching destination): ack, not stored.
    NotRouted,
    /// Permanently invalid: terminate it, never redeliver. The reason is logged and counted.
    Rejected(String),
    /// Not committed this time (e.g. the store is down): redeliver after a delay.
    Retry(String),
}

/// The receiving end of every source: ingest implements it; tests use their own.
pub trait IngestSink: Send + Sync + 'static {
    /// Takes one message in. The returned outcome is final for this delivery of the message.
    fn ingest(&self, message: SourceMessage) -> BoxFuture<'_, Outcome>;
}
