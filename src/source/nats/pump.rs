//! One account's supervised consumer: connect, verify the stream and durable pull consumer, pull
//! with an idle heartbeat, hand each message to the ingest sink and settle it by the outcome.
//! Any failure is reported in the account's status and retried with jittered, capped backoff;
//! a stale pull stream (missed heartbeats, consumer deleted, reconnect) is rebuilt.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::pull;
use async_nats::jetstream::{self, AckKind};
use futures::{FutureExt, StreamExt};
use rand::Rng;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::account::{AccountSpec, TenantRule};
use super::status::{AccountState, AccountStatus};
use super::topology::{self, Verified};
use crate::event::{derive_event_id, splice_tenant};
use crate::source::{IngestSink, Outcome, SourceMessage};

/// Idle heartbeat of pull requests: two missed ones end the pull stream, which is then rebuilt.
/// Every idle account gets one per period, so it is what idle accounts cost (10,000 accounts at
/// 5 s were 2,000 messages/s); a deleted consumer, a reconnect or a lame-duck server are
/// signalled at once and do not wait for it. It only catches a pull request the server lost
/// silently (or a dead connection), within two periods.
const HEARTBEAT: Duration = Duration::from_secs(30);
/// How long a pull request waits for messages before it is renewed; at least two heartbeats.
const PULL_EXPIRES: Duration = Duration::from_secs(120);
/// The client's PING to the server; a dead connection is also found by missed heartbeats.
const PING_INTERVAL: Duration = Duration::from_secs(120);
/// The connection's initial read buffer (async-nats' default is 64 KiB): it grows when a
/// message needs more (a pull batch of events grows it to the batch's size), but an idle
/// account, which reads only heartbeats and PINGs, never does; over time every page of it is
/// touched as the read position advances, so the default costs 64 KiB per account. 512 bytes
/// instead of 4 KiB saved 3 KiB per idle account in the benchmark.
const READ_BUFFER: u16 = 512;
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// What every account's pump shares.
pub struct PumpShared {
    pub servers: Vec<String>,
    pub sink: Arc<dyn IngestSink>,
    /// In-flight messages per account; also the pull batch size.
    pub max_in_flight: usize,
    /// How long a draining pump waits for in-flight messages.
    pub drain_timeout: Duration,
    /// Turns to connect and set up a consumer (`SETUPS_AT_ONCE`): thousands of accounts
    /// starting together otherwise swamp the server, time out and back off for many seconds.
    pub setup_slots: Arc<Semaphore>,
    /// Which accounts have a pump task alive, draining ones included.
    pub active: ActivePumps,
}

/// The accounts with a pump task alive (consuming, connecting or still settling after a drain
/// began), so that an account's lease is kept until its last pump has ended.
#[derive(Debug, Default, Clone)]
pub struct ActivePumps {
    counts: Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>,
    /// Woken when an account's last pump ends.
    ended: Arc<tokio::sync::Notify>,
}

impl ActivePumps {
    /// Counts a pump of `account` until the returned guard drops.
    fn enter(&self, account: &str) -> ActiveGuard {
        *self
            .counts
            .lock()
            .expect("active pumps lock")
            .entry(account.to_owned())
            .or_default() += 1;
        ActiveGuard {
            active: self.clone(),
            account: account.to_owned(),
        }
    }

    /// The accounts with a pump alive.
    pub fn names(&self) -> std::collections::BTreeSet<String> {
        let counts = self.counts.lock().expect("active pumps lock");
        counts.keys().cloned().collect()
    }

    /// Resolves when some account's last pump ends.
    pub async fn one_ended(&self) {
        self.ended.notified().await;
    }
}

struct ActiveGuard {
    active: ActivePumps,
    account: String,
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        let mut counts = self.active.counts.lock().expect("active pumps lock");
        if let Some(count) = counts.get_mut(&self.account) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.account);
                self.active.ended.notify_waiters();
            }
        }
    }
}

/// Accounts connecting and verifying their consumer at the same time.
pub const SETUPS_AT_ONCE: usize = 64;

/// A running account consumer.
pub struct Pump {
    pub spec: Arc<AccountSpec>,
    pub generation: u64,
    cancel: CancellationToken,
    consuming: watch::Receiver<bool>,
    task: JoinHandle<()>,
}

impl Pump {
    /// Starts consuming `spec` in the background; `status` is the account's shared status.
    pub fn start(
        spec: Arc<AccountSpec>,
        status: Arc<AccountStatus>,
        shared: Arc<PumpShared>,
        parent: &CancellationToken,
    ) -> Pump {
        let cancel = parent.child_token();
        let alive = shared.active.enter(&spec.name);
        let generation = status.next_generation();
        status.set(generation, AccountState::Connecting, None);
        let (consuming_tx, consuming) = watch::channel(false);
        let supervisor = Supervisor {
            spec: spec.clone(),
            status,
            generation,
            shared,
            cancel: cancel.clone(),
            consuming: consuming_tx,
        };
        let task = tokio::spawn(async move {
            let _alive = alive;
            supervisor.run().await;
        });
        Pump {
            spec,
            generation,
            cancel,
            consuming,
            task,
        }
    }

    /// Resolves once the pump consumes.
    pub fn ready(&self) -> Ready {
        Ready(self.consuming.clone())
    }

    /// Stops pulling, lets in-flight messages finish (up to the drain timeout), closes the
    /// connection.
    pub async fn drain(self) {
        self.cancel.cancel();
        if let Err(err) = self.task.await {
            error!(account = %self.spec.name, "account task ended abnormally: {err}");
        }
    }
}

/// Pauses an account's pulling while ingest reports transient failures (the store is down), so
/// a backlog is not cycled through and nak'ed message by message; lifted by the next success.
#[derive(Default)]
struct Backpressure {
    /// Consecutive transient failures and when pulling may resume.
    state: std::sync::Mutex<(u32, Option<tokio::time::Instant>)>,
}

impl Backpressure {
    fn failed(&self) {
        let mut state = self.state.lock().expect("backpressure lock");
        state.0 = state.0.saturating_add(1);
        state.1 = Some(tokio::time::Instant::now() + backoff(state.0));
    }

    fn succeeded(&self) {
        *self.state.lock().expect("backpressure lock") = (0, None);
    }

    async fn wait(&self) {
        let until = self.state.lock().expect("backpressure lock").1;
        if let Some(until) = until {
            tokio::time::sleep_until(until).await;
        }
    }
}

/// Waits for a pump to consume (see `Pump::ready`).
pub struct Ready(watch::Receiver<bool>);

impl Ready {
    pub async fn wait(mut self) {
        let _ = self.0.wait_for(|consuming| *consuming).await;
    }
}

struct Supervisor {
    spec: Arc<AccountSpec>,
    status: Arc<AccountStatus>,
    generation: u64,
    shared: Arc<PumpShared>,
    cancel: CancellationToken,
    consuming: watch::Sender<bool>,
}

/// Why a pull loop ended.
enum PullEnd {
    Cancelled,
    Rebuild(String),
}

impl Supervisor {
    async fn run(self) {
        let permits = Arc::new(Semaphore::new(self.shared.max_in_flight.max(1)));
        let mut failures = 0u32;
        while !self.cancel.is_cancelled() {
            self.set(AccountState::Connecting, None);
            let result = self.connect_and_consume(&permits).await;
            self.consuming.send_replace(false);
            match result {
                Ok(()) => break,
                Err(err) => {
                    failures = if self.status.state() == AccountState::Consuming {
                        1
                    } else {
                        failures + 1
                    };
                    self.set(AccountState::Failed, Some(err.clone()));
                    let delay = backoff(failures);
                    warn!(account = %self.spec.name, error = %err, retry_in = ?delay, "account failed");
                    tokio::select! {
                        _ = self.cancel.cancelled() => break,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
        debug!(account = %self.spec.name, "account stopped");
    }

    fn set(&self, state: AccountState, error: Option<String>) {
        self.status.set(self.generation, state, error);
    }

    /// One connection's life: Ok when cancelled (drained), Err with the reason otherwise.
    async fn connect_and_consume(&self, permits: &Arc<Semaphore>) -> Result<(), String> {
        let Some(slot) = self.setup_slot().await else {
            return Ok(());
        };
        let mut slot = Some(slot);
        let (reconnects_tx, mut reconnects) = watch::channel(0u64);
        // Boxed: futures that run once per connection would otherwise stay allocated inside
        // every idle account's task (the task is as large as its largest state).
        let client = Box::pin(self.connect(reconnects_tx)).await?;
        let js = jetstream::new(client.clone());
        let mut in_flight = JoinSet::new();
        let result = loop {
            if slot.is_none() {
                match self.setup_slot().await {
                    Some(taken) => slot = Some(taken),
                    None => break Ok(()),
                }
            }
            reconnects.borrow_and_update();
            let verified = match Box::pin(topology::verify(&js, &self.spec)).await {
                Ok(verified) => verified,
                Err(err) => break Err(err.to_string()),
            };
            let (messages, job) = match Box::pin(self.open_pull(verified)).await {
                Ok(pull) => pull,
                Err(err) => break Err(err),
            };
            slot.take();
            self.set(AccountState::Consuming, None);
            self.status.set_probe(self.generation, Some(js.clone()));
            self.consuming.send_replace(true);
            info!(account = %self.spec.name, stream = %self.spec.stream, consumer = %self.spec.consumer, "consuming");
            // Boxed too: inline, the task would also be as large as its drain and backoff states.
            let consume = self.consume(messages, job, permits, &mut in_flight, &mut reconnects);
            match Box::pin(consume).await {
                Ok(PullEnd::Cancelled) => break Ok(()),
                Ok(PullEnd::Rebuild(reason)) => {
                    info!(account = %self.spec.name, %reason, "rebuilding the pull consumer");
                    self.set(AccountState::Connecting, Some(reason));
                    tokio::select! {
                        _ = self.cancel.cancelled() => break Ok(()),
                        _ = tokio::time::sleep(jitter(Duration::from_millis(500))) => {}
                    }
                }
                Err(err) => break Err(err),
            }
        };
        drop(slot);
        self.status.set_probe(self.generation, None);
        if self.cancel.is_cancelled() {
            self.set(AccountState::Draining, None);
        }
        // Dropping a JoinSet aborts its tasks: let in-flight messages settle first.
        let settled = tokio::time::timeout(self.shared.drain_timeout, async {
            while in_flight.join_next().await.is_some() {}
        })
        .await;
        if settled.is_err() {
            warn!(account = %self.spec.name, left = in_flight.len(), "drain timeout: unsettled messages will be redelivered");
        }
        let _ = Box::pin(client.drain()).await;
        result
    }

    /// Waits for a turn to connect and set up the consumer (`None`: cancelled meanwhile).
    async fn setup_slot(&self) -> Option<OwnedSemaphorePermit> {
        tokio::select! {
            biased;
            _ = self.cancel.cancelled() => None,
            slot = self.shared.setup_slots.clone().acquire_owned() => slot.ok(),
        }
    }

    async fn connect(&self, reconnects: watch::Sender<u64>) -> Result<async_nats::Client, String> {
        let name = self.spec.name.clone();
        let status = self.status.clone();
        let generation = self.generation;
        // The first `Connected` is the initial connect; only later ones are reconnects.
        let connected_before = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut options = async_nats::ConnectOptions::new()
            .name(format!("jetpost:{name}"))
            .connection_timeout(Duration::from_secs(5))
            .ping_interval(PING_INTERVAL)
            .read_buffer_capacity(READ_BUFFER)
            .event_callback(move |event| {
                let (name, status, reconnects) = (name.clone(), status.clone(), reconnects.clone());
                let connected_before = connected_before.clone();
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            info!(account = %name, "connected to NATS");
                            if connected_before.swap(true, std::sync::atomic::Ordering::SeqCst) {
                                reconnects.send_modify(|n| *n += 1);
                            }
                        }
                        async_nats::Event::Disconnected => {
                            warn!(account = %name, "disconnected from NATS");
                            status.set(
                                generation,
                                AccountState::Connecting,
                                Some("disconnected from NATS".into()),
                            );
                        }
                        async_nats::Event::LameDuckMode => {
                            warn!(account = %name, "NATS server entered lame duck mode")
                        }
                        other => debug!(account = %name, event = %other, "NATS connection event"),
                    }
                }
            });
        if let Some(path) = &self.spec.credentials_file {
            options = options.credentials_file(path).await.map_err(|err| {
                format!(
                    "account \"{}\": credentials_file {}: {err}",
                    self.spec.name,
                    path.display()
                )
            })?;
        }
        options
            .connect(self.shared.servers.as_slice())
            .await
            .map_err(|err| {
                let hint = match err.kind() {
                    async_nats::ConnectErrorKind::AuthorizationViolation => {
                        " (the server refused the credentials: check the account's .creds file)"
                    }
                    _ => "",
                };
                format!(
                    "account \"{}\": cannot connect to {}: {err}{hint}",
                    self.spec.name,
                    self.shared.servers.join(",")
                )
            })
    }

    /// Pulls and hands messages over until cancelled or the pull stream must be rebuilt.
    /// Starts pulling from a verified consumer.
    async fn open_pull(&self, verified: Verified) -> Result<(pull::Stream, Arc<Job>), String> {
        let max_in_flight = self.shared.max_in_flight.max(1);
        if verified.max_ack_pending > 0 && (verified.max_ack_pending as usize) < max_in_flight {
            warn!(
                account = %self.spec.name,
                max_ack_pending = verified.max_ack_pending,
                publish_max_concurrency = max_in_flight,
                "the consumer's max_ack_pending is below jetpost's in-flight bound; raise it or the account will stall under load"
            );
        }
        self.status.set_pending(verified.pending);
        let job = Arc::new(Job {
            spec: self.spec.clone(),
            backpressure: Arc::new(Backpressure::default()),
            status: self.status.clone(),
            sink: self.shared.sink.clone(),
            ack_wait: verified.ack_wait,
            stream_created: verified.stream_created,
        });
        let (expires, heartbeat) = pull_timing(verified.max_expires);
        let messages = verified
            .consumer
            .stream()
            .max_messages_per_batch(max_in_flight)
            .heartbeat(heartbeat)
            .expires(expires)
            .messages()
            .await
            .map_err(|err| {
                format!(
                    "account \"{}\": cannot pull from consumer \"{}\": {err}",
                    self.spec.name, self.spec.consumer
                )
            })?;
        Ok((messages, job))
    }

    /// Pulls and hands messages over until cancelled or the pull stream must be rebuilt. Kept
    /// lean: this is the state every idle account's task sits in.
    async fn consume(
        &self,
        mut messages: pull::Stream,
        job: Arc<Job>,
        permits: &Arc<Semaphore>,
        in_flight: &mut JoinSet<()>,
        reconnects: &mut watch::Receiver<u64>,
    ) -> Result<PullEnd, String> {
        let backpressure = job.backpressure.clone();
        loop {
            while let Some(done) = in_flight.try_join_next() {
                if let Err(err) = done {
                    error!(account = %self.spec.name, "message task failed: {err}");
                }
            }
            tokio::select! {
                biased;
                _ = self.cancel.cancelled() => return Ok(PullEnd::Cancelled),
                _ = backpressure.wait() => {}
            }
            // The permit is taken before pulling more, so a busy account never holds more than
            // `max_in_flight` messages in ingest.
            let permit = tokio::select! {
                biased;
                _ = self.cancel.cancelled() => return Ok(PullEnd::Cancelled),
                permit = permits.clone().acquire_owned() => permit.map_err(|_| "in-flight limiter closed".to_string())?,
            };
            tokio::select! {
                biased;
                _ = self.cancel.cancelled() => {
                    Box::pin(release_buffered(&mut messages)).await;
                    return Ok(PullEnd::Cancelled);
                }
                changed = reconnects.changed() => {
                    if changed.is_ok() {
                        return Ok(PullEnd::Rebuild("reconnected to NATS".into()));
                    }
                }
                next = messages.next() => match next {
                    Some(Ok(message)) => {
                        let job = job.clone();
                        in_flight.spawn(async move {
                            job.handle(message).await;
                            drop(permit);
                        });
                    }
                    Some(Err(err)) => return Ok(PullEnd::Rebuild(format!("pull stream: {err}"))),
                    None => return Ok(PullEnd::Rebuild("pull stream ended".into())),
                },
            }
        }
    }
}

/// Hands messages pulled but not yet started back to the server at once (instead of after
/// ack_wait), so a replacement connection or another replica takes them without delay.
async fn release_buffered(messages: &mut async_nats::jetstream::consumer::pull::Stream) {
    while let Some(Some(Ok(message))) = messages.next().now_or_never() {
        let _ = message.ack_with(AckKind::Nak(None)).await;
    }
}

/// Everything one message needs: settled by the ingest outcome.
struct Job {
    spec: Arc<AccountSpec>,
    backpressure: Arc<Backpressure>,
    status: Arc<AccountStatus>,
    sink: Arc<dyn IngestSink>,
    ack_wait: Duration,
    stream_created: i64,
}

impl Job {
    async fn handle(&self, message: jetstream::Message) {
        self.status.count_received();
        let (stream_seq, delivered) = match message.info() {
            Ok(info) => {
                // The server counts what is left for the consumer in every delivery.
                self.status.set_pending(info.pending);
                (info.stream_sequence, info.delivered)
            }
            Err(err) => {
                // Not a JetStream message: nothing to settle.
                warn!(account = %self.spec.name, "message without JetStream metadata: {err}");
                return;
            }
        };
        let tenant = match &self.spec.tenant {
            TenantRule::Account(tenant) => Ok(tenant.as_str()),
            TenantRule::Subject(pattern) => pattern.tenant_of(&message.subject),
        };
        let body = tenant.and_then(|tenant| {
            splice_tenant(&message.payload, tenant)
                .map(|body| (tenant.to_owned(), body))
                .map_err(|err| err.to_string())
        });
        let outcome = match body {
            Err(reason) => Outcome::Rejected(reason),
            Ok((tenant_id, body)) => {
                let msg_id = message
                    .headers
                    .as_ref()
                    .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
                    .map(|v| v.as_str());
                let default_id = derive_event_id(
                    msg_id,
                    &self.spec.name,
                    &self.spec.stream,
                    self.stream_created,
                    stream_seq,
                );
                let input = SourceMessage {
                    body,
                    tenant_id,
                    default_id,
                    account: self.spec.name.clone(),
                };
                self.with_progress_acks(&message, self.sink.ingest(input))
                    .await
            }
        };
        self.settle(&message, outcome, stream_seq, delivered).await;
    }

    /// Tells the server the message is being worked on while ingest runs long, so it is not
    /// redelivered to another consumer meanwhile.
    async fn with_progress_acks(
        &self,
        message: &jetstream::Message,
        ingest: impl std::future::Future<Output = Outcome>,
    ) -> Outcome {
        let period = (self.ack_wait / 3).max(Duration::from_millis(500));
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        tokio::pin!(ingest);
        loop {
            tokio::select! {
                outcome = &mut ingest => return outcome,
                _ = ticks.tick() => {
                    let _ = message.ack_with(AckKind::Progress).await;
                }
            }
        }
    }

    async fn settle(
        &self,
        message: &jetstream::Message,
        outcome: Outcome,
        stream_seq: u64,
        delivered: i64,
    ) {
        let account = &self.spec.name;
        match &outcome {
            Outcome::Retry(_) => self.backpressure.failed(),
            _ => self.backpressure.succeeded(),
        }
        let (kind, result) = match &outcome {
            Outcome::Committed { duplicate: false } => (AckKind::Ack, "accepted"),
            Outcome::Committed { duplicate: true } => (AckKind::Ack, "duplicate"),
            Outcome::NotRouted => (AckKind::Ack, "not_routed"),
            Outcome::Rejected(reason) => {
                self.status.count_rejected();
                warn!(%account, subject = %message.subject, stream_seq, %reason, "rejected message terminated");
                (AckKind::Term, "rejected")
            }
            Outcome::Retry(reason) => {
                let delay = nak_delay(delivered);
                warn!(%account, stream_seq, delivered, retry_in = ?delay, %reason, "message not committed; nak");
                (AckKind::Nak(Some(delay)), "retried")
            }
        };
        metrics::counter!("jetpost_nats_messages_total", "account" => account.clone(), "result" => result).increment(1);
        if let Err(err) = message.ack_with(kind).await {
            // The server redelivers after ack_wait; the event id makes that a duplicate.
            warn!(%account, stream_seq, "settling the message failed ({result}): {err}");
        }
    }
}

/// A pull request's expiry and idle heartbeat: ours, within the consumer's `max_expires` if it
/// has one (the server refuses longer requests), the heartbeat at most half the expiry.
fn pull_timing(max_expires: Duration) -> (Duration, Duration) {
    let expires = if max_expires.is_zero() {
        PULL_EXPIRES
    } else {
        PULL_EXPIRES.min(max_expires)
    };
    (expires, HEARTBEAT.min(expires / 2))
}

/// Redelivery delay after a transient failure: 1 s doubling per delivery, capped at 30 s.
fn nak_delay(delivered: i64) -> Duration {
    let exponent = (delivered.max(1) - 1).min(5) as u32;
    jitter(Duration::from_secs(1 << exponent).min(MAX_BACKOFF))
}

/// Reconnect backoff: 500 ms doubling per consecutive failure, capped, with jitter.
fn backoff(failures: u32) -> Duration {
    let base = Duration::from_millis(500).saturating_mul(1 << failures.saturating_sub(1).min(6));
    jitter(base.min(MAX_BACKOFF))
}

/// Between 75 % and 100 % of `d`, so many accounts failing together do not retry in step.
fn jitter(d: Duration) -> Duration {
    d.mul_f64(rand::rng().random_range(0.75..=1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        assert!(backoff(1) <= Duration::from_millis(500));
        assert!(backoff(3) >= Duration::from_millis(1500) && backoff(3) <= Duration::from_secs(2));
        assert!(backoff(50) <= MAX_BACKOFF);
        assert!(nak_delay(1) <= Duration::from_secs(1));
        assert!(nak_delay(100) <= MAX_BACKOFF);
    }

    #[test]
    fn pull_timing_respects_the_consumers_max_expires() {
        assert_eq!(pull_timing(Duration::ZERO), (PULL_EXPIRES, HEARTBEAT));
        assert_eq!(
            pull_timing(Duration::from_secs(10)),
            (Duration::from_secs(10), Duration::from_secs(5))
        );
        assert_eq!(
            pull_timing(Duration::from_secs(3600)),
            (PULL_EXPIRES, HEARTBEAT)
        );
    }
}
