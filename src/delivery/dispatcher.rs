//! The dispatcher: starts the first attempt of deliveries ingest hands over (`Handoff`), claims
//! due deliveries from the store (at once when ingest commits pending ones, and when retries or
//! expired leases fall due), sends each as one attempt within the global and per-destination
//! bounds, records the attempt and what follows under the delivery's lease, and raises alerts
//! and operator events. Replicas share one store; leases keep them apart.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::{Notify, OwnedSemaphorePermit};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use super::alert::{AlertPolicy, DEFAULT_EXHAUSTED_RETRIES_WINDOW, ExhaustedRetriesWindow};
use super::completions::Completions;
use super::lanes::{Lane, Lanes, Reservation};
use super::operator_events::{
    self, AttemptData, AttemptPayload, ConsecutiveFailureData, ConsecutiveFailures,
    DestinationDisabledData, DestinationPayload, EventPayload, OperatorEvents, OperatorEventsError,
};
use super::retry::{AttemptFacts, DEFAULT_RETRY_AFTER_CAP, RetryPolicy, Verdict};
use crate::config::{Config, OperatorEventsConfig, RetrySchedule};
use crate::destination::{AttemptCode, IDLE_CLOSE, Outcome, Registry};
use crate::ingest::RoutingCache;
use crate::store::{
    Attempt, AttemptCompletion, AttemptRecorded, AttemptStatus, BackendKind, ClaimRequest,
    ClaimedDelivery, Delivery, DeliveryOutcome, DeliveryStatus, Destination, Event, Lease,
    NewAttempt, NewLease, Store, StoreError,
};

/// Added to the delivery timeout to make the lease: time to record the attempt afterwards.
pub const LEASE_MARGIN: Duration = Duration::from_secs(10);
/// The longest the dispatcher sleeps without looking for due deliveries.
pub const DEFAULT_MAX_IDLE_WAIT: Duration = Duration::from_secs(1);
/// The shortest sleep after an empty claim: due deliveries that could not be claimed (their
/// destination is at its in-flight limit, or another replica is claiming them) are looked at
/// again after this, or sooner when an attempt of ours finishes.
const MIN_IDLE_WAIT: Duration = Duration::from_millis(50);
/// After a finished attempt, how long the claim loop lets others finish too before it claims
/// again for due deliveries held back by their destination's cap: a slow endpoint's backlog
/// would otherwise cost a claim transaction per finished attempt of every other destination.
const SETTLED_GATHER: Duration = Duration::from_millis(10);
const STORE_BACKOFF_FIRST: Duration = Duration::from_millis(100);
const STORE_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How long queued operator events may take to go out on shutdown.
const OPERATOR_EVENTS_GRACE: Duration = Duration::from_secs(5);

/// How the dispatcher runs; `from_config` fills it from the service configuration.
#[derive(Clone)]
pub struct DispatcherOptions {
    /// Recorded as the lease owner; unique per process (`from_config` makes one).
    pub owner: String,
    /// Attempts in flight at most (`delivery_max_concurrency`).
    pub max_concurrency: usize,
    /// Attempts in flight per destination at most, counting other replicas' leases
    /// (`delivery_max_concurrency_per_destination`).
    pub max_concurrency_per_destination: u32,
    /// How long a claim holds a delivery; must exceed the delivery timeout, or a slow attempt
    /// loses its delivery to another worker and the endpoint gets it twice.
    pub lease: Duration,
    pub retry: RetryPolicy,
    pub alerts: AlertPolicy,
    /// At most one exhausted-retries alert per destination in this window (0 = every time).
    pub exhausted_retries_window: Duration,
    pub operator_events: OperatorEventsConfig,
    /// Invalidated when the dispatcher disables a destination, so ingest stops routing to it
    /// at once (other replicas learn it through the store's change feed).
    pub routing: Option<Arc<RoutingCache>>,
    /// Longest sleep between looks at the store for due retries and expired leases.
    pub max_idle_wait: Duration,
    /// How long `stop` lets attempts in flight finish.
    pub shutdown_grace: Duration,
    /// How often `jetpost_deliveries_pending` is refreshed.
    pub gauge_interval: Duration,
}

impl std::fmt::Debug for DispatcherOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DispatcherOptions")
            .field("owner", &self.owner)
            .field("max_concurrency", &self.max_concurrency)
            .field(
                "max_concurrency_per_destination",
                &self.max_concurrency_per_destination,
            )
            .field("lease", &self.lease)
            .field("retry", &self.retry)
            .field("alerts", &self.alerts)
            .field("operator_events", &self.operator_events)
            .finish_non_exhaustive()
    }
}

impl DispatcherOptions {
    pub fn from_config(config: &Config) -> Self {
        DispatcherOptions {
            owner: default_owner(),
            max_concurrency: config.delivery_max_concurrency.max(1),
            max_concurrency_per_destination: u32::try_from(
                config.delivery_max_concurrency_per_destination,
            )
            .unwrap_or(u32::MAX)
            .max(1),
            lease: config.delivery_timeout() + LEASE_MARGIN,
            retry: RetryPolicy::new(RetrySchedule::from_config(config), DEFAULT_RETRY_AFTER_CAP),
            alerts: AlertPolicy {
                consecutive_failure_count: config.alert.consecutive_failure_count,
                auto_disable_destination: config.alert.auto_disable_destination,
            },
            exhausted_retries_window: DEFAULT_EXHAUSTED_RETRIES_WINDOW,
            operator_events: config.operator_events.clone(),
            routing: None,
            max_idle_wait: DEFAULT_MAX_IDLE_WAIT,
            shutdown_grace: config.shutdown_timeout(),
            gauge_interval: Duration::from_secs(5),
        }
    }
}

/// `<host>-<pid>-<random>`: tells replicas, and restarts of one, apart in `lease_owner`.
pub fn default_owner() -> String {
    let host = ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|path| std::fs::read_to_string(path).ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "jetpost".to_owned());
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}-{}-{}", std::process::id(), &random[..8])
}

/// The dispatcher could not start.
#[derive(Debug, thiserror::Error)]
pub enum DispatcherError {
    #[error(transparent)]
    OperatorEvents(#[from] OperatorEventsError),
}

/// A snapshot of the dispatcher for `/healthz`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DispatcherStatus {
    /// Started and not stopped.
    pub running: bool,
    /// Attempts in flight now.
    pub in_flight: usize,
    /// Whether the last claim reached the store (false while the store is unavailable).
    pub claiming: bool,
    /// Attempts this dispatcher recorded since it started.
    pub attempts_recorded: u64,
    /// The last store error, and when it happened.
    pub last_error: Option<String>,
    pub last_error_at: Option<DateTime<Utc>>,
}

/// A cheap, cloneable view of the dispatcher's health, for the API.
#[derive(Clone, Debug)]
pub struct DispatcherHealth(Arc<Health>);

impl DispatcherHealth {
    pub fn snapshot(&self) -> DispatcherStatus {
        let last = self.0.last_error.lock().unwrap_or_else(|e| e.into_inner());
        DispatcherStatus {
            running: self.0.running.load(Ordering::Relaxed),
            in_flight: self.0.in_flight.load(Ordering::Relaxed),
            claiming: self.0.claiming.load(Ordering::Relaxed),
            attempts_recorded: self.0.attempts_recorded.load(Ordering::Relaxed),
            last_error: last.as_ref().map(|(_, e)| e.clone()),
            last_error_at: last.as_ref().map(|(at, _)| *at),
        }
    }
}

#[derive(Debug, Default)]
struct Health {
    running: AtomicBool,
    in_flight: AtomicUsize,
    claiming: AtomicBool,
    attempts_recorded: AtomicU64,
    last_error: std::sync::Mutex<Option<(DateTime<Utc>, String)>>,
}

impl Health {
    fn note_error(&self, error: &StoreError) {
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((Utc::now(), error.to_string()));
    }
}

/// The running dispatcher. `stop` ends it gracefully; dropping it abandons attempts in flight
/// (their leases expire and any replica, or the next start, takes them again).
pub struct Dispatcher {
    shared: Arc<Shared>,
    claim_loop: Option<JoinHandle<()>>,
    upkeep: Option<JoinHandle<()>>,
}

struct Shared {
    store: Store,
    /// Records finished attempts in batches.
    completions: Completions,
    /// The destination types and the publishers opened for destinations.
    destinations: Registry,
    options: DispatcherOptions,
    events: OperatorEvents,
    exhausted: ExhaustedRetriesWindow,
    health: Arc<Health>,
    wake: Arc<Notify>,
    /// Notified whenever an attempt of ours finishes: a destination may be below its
    /// in-flight limit again.
    settled: Notify,
    lanes: Arc<Lanes>,
    /// Stop claiming.
    stop: CancellationToken,
    /// Abandon attempts in flight.
    abandon: CancellationToken,
    attempts: TaskTracker,
}

impl Dispatcher {
    /// Starts claiming and delivering. `wake` is notified after commits that created
    /// deliveries (`Ingest::deliveries_committed`) and after manual retries: the dispatcher
    /// claims at once instead of waiting for its next look at the store.
    pub fn start(
        store: Store,
        destinations: impl Into<Registry>,
        options: DispatcherOptions,
        wake: Arc<Notify>,
    ) -> Result<Dispatcher, DispatcherError> {
        let events = OperatorEvents::start(&options.operator_events)?;
        let health = Arc::new(Health::default());
        health.running.store(true, Ordering::Relaxed);
        health.claiming.store(true, Ordering::Relaxed);
        let committers = match store.backend() {
            BackendKind::Sqlite => 1,
            BackendKind::Postgres => 4,
        };
        let shared = Arc::new(Shared {
            completions: Completions::start(store.clone(), committers),
            store,
            destinations: destinations.into(),
            exhausted: ExhaustedRetriesWindow::new(options.exhausted_retries_window),
            lanes: Arc::new(Lanes::new(
                options.max_concurrency,
                options.max_concurrency_per_destination,
            )),
            options,
            events,
            health,
            wake,
            settled: Notify::new(),
            stop: CancellationToken::new(),
            abandon: CancellationToken::new(),
            attempts: TaskTracker::new(),
        });
        info!(
            owner = %shared.options.owner,
            max_concurrency = shared.options.max_concurrency,
            per_destination = shared.options.max_concurrency_per_destination,
            lease = ?shared.options.lease,
            "delivery dispatcher started"
        );
        let claim_loop = tokio::spawn(claim_loop(shared.clone()));
        let upkeep = tokio::spawn(upkeep(shared.clone()));
        Ok(Dispatcher {
            shared,
            claim_loop: Some(claim_loop),
            upkeep: Some(upkeep),
        })
    }

    /// The handle ingest hands freshly committed deliveries over with.
    pub fn handoff(&self) -> Handoff {
        Handoff(self.shared.clone())
    }

    /// The lease owner this dispatcher claims as.
    pub fn owner(&self) -> &str {
        &self.shared.options.owner
    }

    pub fn status(&self) -> DispatcherStatus {
        self.health().snapshot()
    }

    /// A handle on the status that outlives `stop` (for `/healthz`).
    pub fn health(&self) -> DispatcherHealth {
        DispatcherHealth(self.shared.health.clone())
    }

    /// Stops claiming, lets attempts in flight finish for up to `shutdown_grace`, then
    /// abandons the rest (their leases expire and they are attempted again later), and sends
    /// the operator events still queued.
    pub async fn stop(mut self) {
        let shared = self.shared.clone();
        shared.stop.cancel();
        if let Some(claim_loop) = self.claim_loop.take() {
            let _ = claim_loop.await;
        }
        if let Some(upkeep) = self.upkeep.take() {
            let _ = upkeep.await;
        }
        shared.attempts.close();
        let grace = shared.options.shutdown_grace;
        if tokio::time::timeout(grace, shared.attempts.wait())
            .await
            .is_err()
        {
            warn!(
                in_flight = shared.health.in_flight.load(Ordering::Relaxed),
                "attempts still in flight after {grace:?}; abandoning them (their leases \
                 expire and they are attempted again)"
            );
            shared.abandon.cancel();
            shared.attempts.wait().await;
        }
        shared.events.stop(OPERATOR_EVENTS_GRACE).await;
        shared.health.running.store(false, Ordering::Relaxed);
        info!(owner = %shared.options.owner, "delivery dispatcher stopped");
    }
}

impl Drop for Dispatcher {
    fn drop(&mut self) {
        // After `stop` this changes nothing; otherwise it ends the loops and attempts now.
        self.shared.stop.cancel();
        self.shared.abandon.cancel();
        self.shared.health.running.store(false, Ordering::Relaxed);
    }
}

/// Ingest's way to hand a delivery it commits straight to this dispatcher instead of leaving
/// it pending for a claim to find: `reserve` room (a lane of the destination and a global slot,
/// waiting for one up to a deadline), commit the delivery already leased to this dispatcher
/// (`lease`), then `start` its first attempt. A fresh event's first attempt then costs no claim
/// transaction, and waits for no claim loop. Room that is not found leaves the delivery to the
/// store's queue, as before.
#[derive(Clone)]
pub struct Handoff(Arc<Shared>);

/// Room reserved for one handed-off delivery; given back when dropped unused.
pub struct Reserved(Reservation);

impl Handoff {
    /// Room for a delivery to the destination, waiting until `deadline` at most; `None` once
    /// the dispatcher is stopping.
    pub async fn reserve(
        &self,
        tenant_id: &str,
        destination_id: &str,
        deadline: tokio::time::Instant,
    ) -> Option<Reserved> {
        if self.0.stop.is_cancelled() {
            return None;
        }
        let room = self.0.lanes.reserve(tenant_id, destination_id, deadline);
        tokio::select! {
            room = room => room.map(Reserved),
            _ = self.0.stop.cancelled() => None,
        }
    }

    /// The lease to commit reserved deliveries under: this dispatcher's, from now.
    pub fn lease(&self, destination_ids: Vec<String>) -> NewLease {
        NewLease {
            owner: self.0.options.owner.clone(),
            expires_at: later(Utc::now(), self.0.options.lease),
            destination_ids,
        }
    }

    /// Starts the first attempt of a delivery committed under `lease` with id `delivery_id`.
    pub fn start(
        &self,
        delivery_id: i64,
        lease: &NewLease,
        event: Event,
        destination: Destination,
        room: Reserved,
    ) {
        let now = Utc::now();
        let delivery = Delivery {
            id: delivery_id,
            tenant_id: event.tenant_id.clone(),
            event_id: event.id.clone(),
            destination_id: destination.id.clone(),
            status: DeliveryStatus::Delivering,
            attempts: 0,
            next_attempt_at: Some(lease.expires_at),
            manual: false,
            lease_owner: Some(lease.owner.clone()),
            lease_expires_at: Some(lease.expires_at),
            created_at: now,
            updated_at: now,
        };
        let claimed = ClaimedDelivery {
            lease: Lease {
                delivery_id,
                owner: lease.owner.clone(),
                expires_at: lease.expires_at,
            },
            delivery,
            event,
            destination,
        };
        metrics::counter!("jetpost_deliveries_handed_off_total").increment(1);
        spawn_attempt(&self.0, claimed, room.0);
    }
}

/// Claims due deliveries whenever there is room, and sleeps when there is nothing to claim
/// until a commit, a finished attempt or the next due time (at most `max_idle_wait`).
async fn claim_loop(shared: Arc<Shared>) {
    let mut backoff = STORE_BACKOFF_FIRST;
    loop {
        // Armed before the store is read, so a commit that lands during the claim still
        // wakes the wait below.
        let woken = shared.wake.notified();
        let settled = shared.settled.notified();
        tokio::pin!(woken, settled);
        woken.as_mut().enable();
        settled.as_mut().enable();

        // A slot first, then the claim: never hold a lease without a worker for it.
        let first = tokio::select! {
            _ = shared.stop.cancelled() => return,
            permit = shared.lanes.slots().clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
        };
        let mut slots = vec![first];
        while slots.len() < shared.options.max_concurrency {
            match shared.lanes.slots().clone().try_acquire_owned() {
                Ok(permit) => slots.push(permit),
                Err(_) => break,
            }
        }
        let wanted = slots.len();
        let request = ClaimRequest {
            owner: &shared.options.owner,
            now: Utc::now(),
            limit: u32::try_from(wanted).unwrap_or(u32::MAX),
            per_destination: shared.options.max_concurrency_per_destination,
            lease: shared.options.lease,
        };
        let claimed = match shared.store.claim_due(&request).await {
            Ok(claimed) => claimed,
            Err(err) => {
                drop(slots);
                shared.health.claiming.store(false, Ordering::Relaxed);
                shared.health.note_error(&err);
                error!("cannot claim deliveries: {err}; retrying in {backoff:?}");
                tokio::select! {
                    _ = shared.stop.cancelled() => return,
                    _ = tokio::time::sleep(with_jitter(backoff)) => {}
                }
                backoff = (backoff * 2).min(STORE_BACKOFF_MAX);
                continue;
            }
        };
        backoff = STORE_BACKOFF_FIRST;
        shared.health.claiming.store(true, Ordering::Relaxed);
        let got = claimed.len();
        for delivery in claimed {
            // One slot per claimed delivery; `got <= wanted` by the claim's limit.
            let Some(slot) = slots.pop() else { break };
            let lane = shared.lanes.claimed(
                &delivery.delivery.tenant_id,
                &delivery.delivery.destination_id,
            );
            spawn_attempt(&shared, delivery, Reservation { slot, lane });
        }
        drop(slots);
        if got > 0 {
            // There may be more: claim again right away.
            continue;
        }

        // Due deliveries left unclaimed are held back by their destination's cap: a finished
        // attempt may make room. Otherwise finished attempts (mostly hand-offs) are no reason to
        // ask the store again.
        let (wait, blocked) = match shared.store.next_due_at().await {
            Ok(Some(at)) => {
                let until = (at - Utc::now()).to_std().unwrap_or(Duration::ZERO);
                let wait = until.clamp(
                    MIN_IDLE_WAIT,
                    shared.options.max_idle_wait.max(MIN_IDLE_WAIT),
                );
                (wait, until.is_zero())
            }
            Ok(None) => (shared.options.max_idle_wait, false),
            Err(err) => {
                shared.health.note_error(&err);
                debug!("cannot read the next due time: {err}");
                (shared.options.max_idle_wait, false)
            }
        };
        tokio::select! {
            _ = shared.stop.cancelled() => return,
            _ = &mut woken => {}
            _ = &mut settled, if blocked => tokio::time::sleep(SETTLED_GATHER).await,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Every `gauge_interval`: refreshes `jetpost_deliveries_pending` (the queue across all
/// replicas) and closes destination publishers idle for `IDLE_CLOSE`.
async fn upkeep(shared: Arc<Shared>) {
    loop {
        match shared.store.count_deliveries(DeliveryStatus::Pending).await {
            Ok(pending) => metrics::gauge!("jetpost_deliveries_pending").set(pending as f64),
            Err(err) => debug!("cannot count pending deliveries: {err}"),
        }
        // Destinations deleted through another replica, or gone quiet, keep no client open.
        let closed = shared.destinations.close_idle(IDLE_CLOSE);
        if closed > 0 {
            debug!(closed, "closed idle destination publishers");
        }
        tokio::select! {
            _ = shared.stop.cancelled() => return,
            _ = tokio::time::sleep(shared.options.gauge_interval) => {}
        }
    }
}

/// Counts the attempt in flight while it runs; wakes the claim loop when it ends.
struct InFlight<'a>(&'a Shared);

impl<'a> InFlight<'a> {
    fn enter(shared: &'a Shared) -> Self {
        let now = shared.health.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        metrics::gauge!("jetpost_deliveries_in_flight").set(now as f64);
        InFlight(shared)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let now = self.0.health.in_flight.fetch_sub(1, Ordering::Relaxed) - 1;
        metrics::gauge!("jetpost_deliveries_in_flight").set(now as f64);
        self.0.settled.notify_one();
    }
}

/// Runs one attempt as a task of the dispatcher (abandoned when `stop` runs out of grace).
fn spawn_attempt(shared: &Arc<Shared>, claimed: ClaimedDelivery, room: Reservation) {
    let shared = shared.clone();
    let tracker = shared.attempts.clone();
    tracker.spawn(async move {
        let abandon = shared.abandon.clone();
        tokio::select! {
            _ = abandon.cancelled() => {}
            _ = attempt(&shared, claimed, room.slot, room.lane) => {}
        }
    });
}

/// One attempt of one claimed delivery, from the request to the recorded outcome. The lane
/// (the lease counted against the destination) ends with the function, once the outcome is
/// recorded.
async fn attempt(
    shared: &Shared,
    claimed: ClaimedDelivery,
    slot: OwnedSemaphorePermit,
    _lane: Lane,
) {
    let _in_flight = InFlight::enter(shared);
    let ClaimedDelivery {
        delivery,
        lease,
        event,
        destination,
    } = claimed;

    let result = match shared.destinations.publisher(&destination) {
        Ok(publisher) => publisher.publish(&event).await,
        Err(problem) => Outcome::not_sent(AttemptCode::InvalidRequest, problem),
    };
    // The slot is for the request; recording and alerts need no endpoint capacity.
    drop(slot);

    let facts = AttemptFacts {
        success: result.success,
        code: result.code,
        retry_after: result.retry_after,
        attempt_number: delivery.attempts + 1,
        manual: delivery.manual,
        eligible_for_retry: event.eligible_for_retry,
    };
    let verdict = {
        let mut rng = rand::rng();
        shared.options.retry.decide(&facts, &mut rng)
    };
    let now = Utc::now();
    let (outcome, retry_at) = match verdict {
        Verdict::Delivered => (DeliveryOutcome::Success, None),
        Verdict::RetryIn(delay) => {
            let at = later(now, delay);
            (DeliveryOutcome::RetryAt(at), Some(at))
        }
        Verdict::GiveUp(_) => (DeliveryOutcome::Failed, None),
    };
    let new_attempt = NewAttempt {
        id: uuid::Uuid::now_v7().to_string(),
        status: if result.success {
            AttemptStatus::Success
        } else {
            AttemptStatus::Failed
        },
        code: result.code.to_string(),
        response_data: Some(result.response_data.clone()),
        time: result.sent_at,
    };

    metrics::histogram!("jetpost_delivery_duration_seconds").record(result.duration.as_secs_f64());
    let completion = AttemptCompletion {
        lease: lease.clone(),
        attempt: new_attempt.clone(),
        outcome,
    };
    let recorded = match shared.completions.record(completion).await {
        Ok(recorded) => Ok(recorded),
        Err(err) => {
            // Nothing of the batch was written: record this attempt on its own, so one bad
            // item (or a deadlock between batches) costs only its own attempt.
            debug!(event_id = %event.id, "batch not recorded ({err}); recording the attempt alone");
            record(shared, &lease, &new_attempt, outcome).await
        }
    };
    let recorded = match recorded {
        Ok(Some(recorded)) => recorded,
        Ok(None) => {
            metrics::counter!("jetpost_deliveries_total", "result" => "lease_lost").increment(1);
            warn!(
                tenant = %event.tenant_id, event_id = %event.id,
                destination_id = %destination.id, attempt = facts.attempt_number,
                code = %result.code,
                "attempt not recorded: the delivery's lease ran out and another worker holds \
                 it now (the endpoint may get this event twice; raise delivery_timeout_seconds \
                 if attempts take longer)"
            );
            return;
        }
        Err(err) => {
            metrics::counter!("jetpost_deliveries_total", "result" => "unrecorded").increment(1);
            shared.health.note_error(&err);
            error!(
                tenant = %event.tenant_id, event_id = %event.id,
                destination_id = %destination.id, attempt = facts.attempt_number,
                code = %result.code,
                "attempt not recorded: {err}; the delivery is attempted again when its lease \
                 expires"
            );
            return;
        }
    };

    shared
        .health
        .attempts_recorded
        .fetch_add(1, Ordering::Relaxed);
    let result_label = match verdict {
        Verdict::Delivered => "success",
        Verdict::RetryIn(_) => "retry_scheduled",
        Verdict::GiveUp(_) => "failed",
    };
    metrics::counter!("jetpost_deliveries_total", "result" => result_label).increment(1);
    if result.success && !delivery.manual {
        let waited = (Utc::now() - event.created_at).to_std().unwrap_or_default();
        metrics::histogram!("jetpost_ingest_to_delivery_seconds").record(waited.as_secs_f64());
    }
    let next = match (verdict, retry_at) {
        (Verdict::GiveUp(reason), _) => format!("gave up ({})", reason.as_str()),
        (_, Some(at)) => format!("retry at {}", at.to_rfc3339()),
        _ => String::new(),
    };
    info!(
        tenant = %event.tenant_id,
        event_id = %event.id,
        destination_id = %destination.id,
        attempt = recorded.attempt_number,
        manual = delivery.manual,
        code = %result.code,
        duration_ms = result.duration.as_millis() as u64,
        outcome = result_label,
        next = %next,
        "delivery attempt"
    );
    if let Some(problem) = &result.error {
        debug!(tenant = %event.tenant_id, event_id = %event.id, destination_id = %destination.id, "attempt error: {problem}");
    }

    let stored = Attempt {
        id: new_attempt.id,
        tenant_id: event.tenant_id.clone(),
        event_id: event.id.clone(),
        destination_id: destination.id.clone(),
        delivery_id: delivery.id,
        attempt_number: recorded.attempt_number,
        manual: delivery.manual,
        status: new_attempt.status,
        code: new_attempt.code,
        response_data: new_attempt.response_data,
        time: new_attempt.time,
        destination_type: destination.kind.clone(),
    };
    after_attempt(shared, &event, destination, &stored, recorded, verdict).await;
}

/// Records the attempt, retrying transient store errors while the lease still holds.
async fn record(
    shared: &Shared,
    lease: &Lease,
    attempt: &NewAttempt,
    outcome: DeliveryOutcome,
) -> Result<Option<AttemptRecorded>, StoreError> {
    let mut backoff = STORE_BACKOFF_FIRST;
    loop {
        match shared.store.record_attempt(lease, attempt, outcome).await {
            Err(err) if err.is_transient() && later(Utc::now(), backoff) < lease.expires_at => {
                warn!("recording attempt {} failed: {err}; retrying", attempt.id);
                tokio::time::sleep(with_jitter(backoff)).await;
                backoff = (backoff * 2).min(STORE_BACKOFF_MAX);
            }
            other => return other,
        }
    }
}

/// Alerts and operator events owed for a recorded attempt (Outpost's plan): a crossed
/// consecutive-failure level (disabling the destination at 100 % when configured), an
/// exhausted-retries alert, and `attempt.success` / `attempt.failed`.
async fn after_attempt(
    shared: &Shared,
    event: &Event,
    mut destination: Destination,
    attempt: &Attempt,
    recorded: AttemptRecorded,
    verdict: Verdict,
) {
    let events = &shared.events;
    let alerts = shared.options.alerts;
    let level = if attempt.status == AttemptStatus::Failed {
        alerts.level(recorded.consecutive_failures)
    } else {
        None
    };
    let exhausted = matches!(verdict, Verdict::GiveUp(reason) if shared.options.retry.is_exhaustion(reason))
        && shared
            .exhausted
            .admit(&event.tenant_id, &destination.id, Instant::now());

    let mut disabled_at = None;
    if let Some(level) = level {
        warn!(
            tenant = %event.tenant_id,
            destination_id = %destination.id,
            consecutive_failures = recorded.consecutive_failures,
            threshold = level,
            "destination failed {} attempts in a row ({level}% of alert.consecutive_failure_count)",
            recorded.consecutive_failures
        );
        if alerts.disables_at(level) {
            match shared
                .store
                .disable_destination(&event.tenant_id, &destination.id)
                .await
            {
                Ok(disabled) => {
                    if let Some(routing) = &shared.options.routing {
                        routing.invalidate(&event.tenant_id);
                    }
                    metrics::counter!("jetpost_destinations_disabled_total").increment(1);
                    warn!(
                        tenant = %event.tenant_id,
                        destination_id = %destination.id,
                        "destination disabled after {} consecutive failed attempts \
                         (alert.auto_disable_destination); enable it once the endpoint is fixed",
                        recorded.consecutive_failures
                    );
                    disabled_at = disabled.disabled_at;
                    destination.disabled_at = disabled.disabled_at;
                }
                Err(err) => error!(
                    tenant = %event.tenant_id,
                    destination_id = %destination.id,
                    "could not disable the failing destination: {err}"
                ),
            }
        }
    }
    if exhausted {
        warn!(
            tenant = %event.tenant_id,
            event_id = %event.id,
            destination_id = %destination.id,
            "delivery failed after every retry"
        );
    }

    let attempt_topic = if attempt.status == AttemptStatus::Success {
        operator_events::TOPIC_ATTEMPT_SUCCESS
    } else {
        operator_events::TOPIC_ATTEMPT_FAILED
    };
    let wanted = |topic| events.enabled(topic);
    if !(wanted(attempt_topic)
        || (level.is_some() && wanted(operator_events::TOPIC_CONSECUTIVE_FAILURE))
        || (disabled_at.is_some() && wanted(operator_events::TOPIC_DESTINATION_DISABLED))
        || (exhausted && wanted(operator_events::TOPIC_EXHAUSTED_RETRIES)))
    {
        return;
    }
    let tenant_id = event.tenant_id.as_str();
    let event_payload = EventPayload::of(event);
    let attempt_payload = AttemptPayload::of(attempt, &destination.kind);
    let destination_payload = DestinationPayload::of(&destination);
    if let Some(at) = disabled_at {
        events.emit(
            operator_events::TOPIC_DESTINATION_DISABLED,
            tenant_id,
            &DestinationDisabledData {
                tenant_id,
                destination: &destination_payload,
                disabled_at: DestinationDisabledData::disabled_at(at),
                reason: "consecutive_failure",
                event: &event_payload,
                attempt: &attempt_payload,
            },
        );
    }
    if let Some(level) = level {
        events.emit(
            operator_events::TOPIC_CONSECUTIVE_FAILURE,
            tenant_id,
            &ConsecutiveFailureData {
                tenant_id,
                event: &event_payload,
                attempt: &attempt_payload,
                destination: &destination_payload,
                consecutive_failures: ConsecutiveFailures {
                    current: recorded.consecutive_failures,
                    max: alerts.consecutive_failure_count,
                    threshold: level,
                },
            },
        );
    }
    let data = AttemptData {
        tenant_id,
        event: &event_payload,
        attempt: &attempt_payload,
        destination: &destination_payload,
    };
    if exhausted {
        events.emit(operator_events::TOPIC_EXHAUSTED_RETRIES, tenant_id, &data);
    }
    events.emit(attempt_topic, tenant_id, &data);
}

/// `now + delay`, saturating far in the future instead of overflowing.
fn later(now: DateTime<Utc>, delay: Duration) -> DateTime<Utc> {
    // A century is "never" for a retry, and keeps every backend's timestamp range.
    const FAR: TimeDelta = TimeDelta::days(36_500);
    let delta = TimeDelta::from_std(delay).unwrap_or(FAR).min(FAR);
    now.checked_add_signed(delta).unwrap_or(now + FAR)
}

/// Up to a quarter more, so replicas retrying the store do not knock in step.
fn with_jitter(delay: Duration) -> Duration {
    use rand::Rng;
    let extra = rand::rng().random_range(0.0..0.25);
    delay.mul_f64(1.0 + extra)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_saturates() {
        let now = Utc::now();
        assert_eq!(
            later(now, Duration::from_secs(2)),
            now + TimeDelta::seconds(2)
        );
        let far = later(now, Duration::MAX);
        assert!(far > now + TimeDelta::days(36_000));
    }

    #[test]
    fn owner_names_host_and_process() {
        let a = default_owner();
        let b = default_owner();
        assert_ne!(a, b);
        assert!(a.contains(&format!("-{}-", std::process::id())), "{a}");
    }

    #[test]
    fn options_follow_the_config() {
        let config = Config {
            delivery_timeout_seconds: 7,
            delivery_max_concurrency: 3,
            delivery_max_concurrency_per_destination: 2,
            retry_schedule: vec![1, 2],
            ..Config::default()
        };
        let options = DispatcherOptions::from_config(&config);
        assert_eq!(options.lease, Duration::from_secs(17));
        assert_eq!(options.max_concurrency, 3);
        assert_eq!(options.max_concurrency_per_destination, 2);
        assert_eq!(options.retry.schedule().max_retries(), 2);
        assert_eq!(options.alerts.consecutive_failure_count, 100);
    }
}
