//! Streams and consumers: `serve` only verifies them (the operator owns NATS
//! topology); `jetpost nats declare` and `jetpost nats aggregate …` create and change them.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};

use super::account::AccountSpec;

/// What is wrong with an account's stream or consumer; each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error(
        "account \"{account}\": stream \"{stream}\" does not exist; create it with `jetpost nats declare` (or nats stream add)"
    )]
    StreamMissing { account: String, stream: String },
    #[error(
        "account \"{account}\": consumer \"{consumer}\" does not exist on stream \"{stream}\"; create a durable pull consumer with explicit ack (`jetpost nats declare`)"
    )]
    ConsumerMissing {
        account: String,
        stream: String,
        consumer: String,
    },
    #[error(
        "account \"{account}\": consumer \"{consumer}\" on stream \"{stream}\" is a push consumer; jetpost needs a durable pull consumer (create it with `jetpost nats declare`)"
    )]
    PushConsumer {
        account: String,
        stream: String,
        consumer: String,
    },
    #[error(
        "account \"{account}\": consumer \"{consumer}\" on stream \"{stream}\" is ephemeral; jetpost needs a durable pull consumer so that no message is lost while it reconnects"
    )]
    NotDurable {
        account: String,
        stream: String,
        consumer: String,
    },
    #[error(
        "account \"{account}\": consumer \"{consumer}\" on stream \"{stream}\" has ack policy {policy}; jetpost needs explicit ack (it acks each message after committing it)"
    )]
    AckPolicy {
        account: String,
        stream: String,
        consumer: String,
        policy: String,
    },
    #[error("account \"{account}\": JetStream request about stream \"{stream}\" failed: {detail}")]
    Request {
        account: String,
        stream: String,
        detail: String,
    },
}

/// A verified account: the handles to consume and the facts consumption needs.
pub struct Verified {
    pub consumer: consumer::PullConsumer,
    pub ack_wait: Duration,
    pub max_ack_pending: i64,
    /// The longest pull request the consumer accepts (zero: no limit).
    pub max_expires: Duration,
    /// The stream's creation time (unix nanoseconds); part of derived event ids.
    pub stream_created: i64,
    pub pending: u64,
}

/// Checks that the account's stream exists and its consumer is a durable pull consumer with
/// explicit ack, and returns a handle to consume it.
pub async fn verify(
    js: &jetstream::Context,
    spec: &AccountSpec,
) -> Result<Verified, TopologyError> {
    let request = |detail: String| TopologyError::Request {
        account: spec.name.clone(),
        stream: spec.stream.clone(),
        detail,
    };
    let stream = js.get_stream(&spec.stream).await.map_err(|err| {
        let missing = matches!(err.kind(), jetstream::context::GetStreamErrorKind::JetStream(e)
            if e.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND);
        if missing {
            TopologyError::StreamMissing {
                account: spec.name.clone(),
                stream: spec.stream.clone(),
            }
        } else {
            request(err.to_string())
        }
    })?;
    // `get_stream` fetched the stream's info already.
    let stream_created = stream.cached_info().created;
    let info = stream.consumer_info(&spec.consumer).await.map_err(|err| {
        let missing = match err.kind() {
            jetstream::context::ConsumerInfoErrorKind::NotFound => true,
            jetstream::context::ConsumerInfoErrorKind::JetStream(e) => {
                e.error_code() == jetstream::ErrorCode::CONSUMER_NOT_FOUND
            }
            _ => false,
        };
        if missing {
            TopologyError::ConsumerMissing {
                account: spec.name.clone(),
                stream: spec.stream.clone(),
                consumer: spec.consumer.clone(),
            }
        } else {
            request(err.to_string())
        }
    })?;
    let names = || {
        (
            spec.name.clone(),
            spec.stream.clone(),
            spec.consumer.clone(),
        )
    };
    if info.config.deliver_subject.is_some() {
        let (account, stream, consumer) = names();
        return Err(TopologyError::PushConsumer {
            account,
            stream,
            consumer,
        });
    }
    if info.config.durable_name.is_none() {
        let (account, stream, consumer) = names();
        return Err(TopologyError::NotDurable {
            account,
            stream,
            consumer,
        });
    }
    if info.config.ack_policy != consumer::AckPolicy::Explicit {
        let (account, stream, consumer) = names();
        let policy = format!("{:?}", info.config.ack_policy).to_lowercase();
        return Err(TopologyError::AckPolicy {
            account,
            stream,
            consumer,
            policy,
        });
    }
    let config = <consumer::pull::Config as consumer::FromConsumer>::try_from_consumer_config(
        info.config.clone(),
    )
    .map_err(|err| request(err.to_string()))?;
    Ok(Verified {
        ack_wait: info.config.ack_wait,
        max_ack_pending: info.config.max_ack_pending,
        max_expires: info.config.max_expires,
        stream_created: stream_created.unix_timestamp_nanos() as i64,
        pending: info.num_pending,
        consumer: consumer::Consumer::new(config, info, js.clone()),
    })
}

/// What `jetpost nats declare` asks for.
#[derive(Debug, Clone)]
pub struct Declaration {
    pub stream: String,
    pub subjects: Vec<String>,
    pub consumer: String,
    pub max_deliver: Option<i64>,
    pub ack_wait: Duration,
    /// Upper bound of unacknowledged messages; keep it above jetpost's in-flight bound.
    pub max_ack_pending: i64,
}

/// Creates a work-queue file stream and a durable pull consumer with explicit ack, or checks that
/// existing ones fit. Returns one line per thing done, for the operator.
pub async fn declare(js: &jetstream::Context, d: &Declaration) -> Result<Vec<String>, String> {
    let mut report = Vec::new();
    let stream = match js.get_stream(&d.stream).await {
        Ok(mut stream) => {
            let info = stream
                .info()
                .await
                .map_err(|e| format!("stream \"{}\": {e}", d.stream))?;
            let missing: Vec<&String> = d
                .subjects
                .iter()
                .filter(|s| !info.config.subjects.contains(s))
                .collect();
            if !missing.is_empty() {
                return Err(format!(
                    "stream \"{}\" exists with subjects {:?}, which lack {:?}; change the stream or pick other subjects",
                    d.stream, info.config.subjects, missing
                ));
            }
            report.push(format!(
                "stream \"{}\" exists with subjects {:?}",
                d.stream, info.config.subjects
            ));
            stream
        }
        Err(_) => {
            let stream = js
                .create_stream(stream::Config {
                    name: d.stream.clone(),
                    subjects: d.subjects.clone(),
                    retention: stream::RetentionPolicy::WorkQueue,
                    storage: stream::StorageType::File,
                    ..Default::default()
                })
                .await
                .map_err(|e| format!("creating stream \"{}\": {e}", d.stream))?;
            report.push(format!(
                "created work-queue stream \"{}\" with subjects {:?}",
                d.stream, d.subjects
            ));
            stream
        }
    };
    match stream.consumer_info(&d.consumer).await {
        Ok(info) => {
            let c = &info.config;
            if c.deliver_subject.is_some()
                || c.durable_name.is_none()
                || c.ack_policy != consumer::AckPolicy::Explicit
            {
                return Err(format!(
                    "consumer \"{}\" exists but is not a durable pull consumer with explicit ack; delete it and run declare again",
                    d.consumer
                ));
            }
            report.push(format!(
                "consumer \"{}\" exists (pull, explicit ack, ack_wait {:?}, max_deliver {})",
                d.consumer, c.ack_wait, c.max_deliver
            ));
        }
        Err(_) => {
            stream
                .create_consumer(consumer::pull::Config {
                    durable_name: Some(d.consumer.clone()),
                    ack_policy: consumer::AckPolicy::Explicit,
                    ack_wait: d.ack_wait,
                    max_deliver: d.max_deliver.unwrap_or(-1),
                    max_ack_pending: d.max_ack_pending,
                    ..Default::default()
                })
                .await
                .map_err(|e| format!("creating consumer \"{}\": {e}", d.consumer))?;
            report.push(format!(
                "created durable pull consumer \"{}\" (explicit ack, ack_wait {:?}, max_ack_pending {})",
                d.consumer, d.ack_wait, d.max_ack_pending
            ));
        }
    }
    Ok(report)
}

/// How a tenant account's stream is sourced into the aggregate stream (NATS-NOTES: the central
/// account imports the tenant's `$JS.API.CONSUMER.>`, `$JS.FC.>` and `deliver.<tenant>.>`).
#[derive(Debug, Clone)]
pub struct TenantSource {
    pub tenant: String,
    /// The tenant's stream in its own account.
    pub stream: String,
    /// The subjects of the tenant's stream to source, e.g. `events.>`.
    pub filter: String,
    /// Where the central account reaches the tenant's JetStream API, e.g. `JS.<tenant>.API`.
    pub api_prefix: String,
    /// The delivery prefix imported from the tenant, e.g. `deliver.<tenant>`.
    pub deliver_prefix: String,
    /// The subject prefix in the aggregate stream; the tenant token sits at `{tenant_id}` of the
    /// aggregate's `tenant_subject`, e.g. `tenant.<tenant>`.
    pub subject_prefix: String,
}

impl TenantSource {
    fn source_name(&self) -> String {
        self.stream.clone()
    }

    fn matches(&self, source: &stream::Source) -> bool {
        source.name == self.source_name()
            && source.external.as_ref().map(|e| e.api_prefix.as_str())
                == Some(self.api_prefix.as_str())
    }

    fn to_source(&self) -> stream::Source {
        // `events.>` → `tenant.<t>.events.>`: the transform keeps the tenant's subject under the prefix.
        stream::Source {
            name: self.source_name(),
            external: Some(stream::External {
                api_prefix: self.api_prefix.clone(),
                delivery_prefix: Some(self.deliver_prefix.clone()),
            }),
            subject_transforms: vec![stream::SubjectTransform {
                source: self.filter.clone(),
                destination: format!("{}.{}", self.subject_prefix, self.filter),
            }],
            ..Default::default()
        }
    }
}

/// Adds a tenant's stream as a source of the aggregate stream, creating the aggregate stream (limits
/// retention, see NATS-NOTES) when it does not exist. Adding an existing source is a no-op.
pub async fn add_tenant_source(
    js: &jetstream::Context,
    aggregate: &str,
    tenant: &TenantSource,
) -> Result<String, String> {
    match js.get_stream(aggregate).await {
        Ok(mut stream) => {
            let mut config = stream
                .info()
                .await
                .map_err(|e| format!("stream \"{aggregate}\": {e}"))?
                .config
                .clone();
            let sources = config.sources.get_or_insert_with(Vec::new);
            if sources.iter().any(|s| tenant.matches(s)) {
                return Ok(format!(
                    "tenant \"{}\" is already a source of \"{aggregate}\"",
                    tenant.tenant
                ));
            }
            sources.push(tenant.to_source());
            js.update_stream(config)
                .await
                .map_err(|e| format!("updating stream \"{aggregate}\": {e}"))?;
            Ok(format!(
                "added tenant \"{}\" (stream \"{}\") as a source of \"{aggregate}\"",
                tenant.tenant, tenant.stream
            ))
        }
        Err(_) => {
            js.create_stream(stream::Config {
                name: aggregate.to_owned(),
                retention: stream::RetentionPolicy::Limits,
                storage: stream::StorageType::File,
                sources: Some(vec![tenant.to_source()]),
                ..Default::default()
            })
            .await
            .map_err(|e| format!("creating aggregate stream \"{aggregate}\": {e}"))?;
            Ok(format!(
                "created aggregate stream \"{aggregate}\" sourcing tenant \"{}\"",
                tenant.tenant
            ))
        }
    }
}

/// Removes a tenant's stream from the aggregate stream's sources; messages already sourced stay.
pub async fn remove_tenant_source(
    js: &jetstream::Context,
    aggregate: &str,
    tenant: &TenantSource,
) -> Result<String, String> {
    let mut stream = js
        .get_stream(aggregate)
        .await
        .map_err(|e| format!("stream \"{aggregate}\": {e}"))?;
    let mut config = stream
        .info()
        .await
        .map_err(|e| format!("stream \"{aggregate}\": {e}"))?
        .config
        .clone();
    let sources = config.sources.get_or_insert_with(Vec::new);
    let before = sources.len();
    sources.retain(|s| !tenant.matches(s));
    if sources.len() == before {
        return Ok(format!(
            "tenant \"{}\" was not a source of \"{aggregate}\"",
            tenant.tenant
        ));
    }
    js.update_stream(config)
        .await
        .map_err(|e| format!("updating stream \"{aggregate}\": {e}"))?;
    Ok(format!(
        "removed tenant \"{}\" from the sources of \"{aggregate}\"",
        tenant.tenant
    ))
}
