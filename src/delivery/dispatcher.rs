//! The dispatcher's lifecycle: `start` builds its parts on the `Inbox` made for it (the claim
//! loop, the attempts, the hand-offs taken from ingest, the upkeep), and `stop` ends them in
//! order: no more claims or hand-offs, attempts in flight finish within the grace, operator
//! events still queued go out. Replicas share one store; leases keep them apart.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use super::aftermath::Aftermath;
use super::alert::ExhaustedRetriesWindow;
use super::attempt::Attempts;
use super::claim::Claims;
use super::completions::Completions;
use super::health::{DispatcherHealth, DispatcherStatus, Health};
use super::inbox::{Handed, Inbox};
use super::operator_events::{OperatorEvents, OperatorEventsError};
use crate::destination::{IDLE_CLOSE, Registry};
use crate::store::{BackendKind, DeliveryStatus, Store};

/// How long queued operator events may take to go out on shutdown.
const OPERATOR_EVENTS_GRACE: Duration = Duration::from_secs(5);

/// The dispatcher could not start.
#[derive(Debug, thiserror::Error)]
pub enum DispatcherError {
    #[error(transparent)]
    OperatorEvents(#[from] OperatorEventsError),
}

/// The running dispatcher. `stop` ends it gracefully; dropping it abandons attempts in flight
/// (their leases expire and any replica, or the next start, takes them again).
pub struct Dispatcher {
    owner: String,
    shutdown_grace: Duration,
    health: Arc<Health>,
    attempts: Arc<Attempts>,
    /// Stop claiming and taking hand-offs.
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Dispatcher {
    /// Starts claiming and delivering, and takes the deliveries ingest hands over through
    /// `inbox` (made with this dispatcher's options).
    pub fn start(
        store: Store,
        destinations: impl Into<Registry>,
        inbox: Inbox,
    ) -> Result<Dispatcher, DispatcherError> {
        let Inbox {
            door,
            handed,
            options,
        } = inbox;
        let destinations = destinations.into();
        let events = OperatorEvents::start(&options.operator_events)?;
        let health = Arc::new(Health::default());
        health.running.store(true, Ordering::Relaxed);
        health.claiming.store(true, Ordering::Relaxed);
        let committers = match store.backend() {
            BackendKind::Sqlite => 1,
            BackendKind::Postgres => 4,
        };
        let settled = Arc::new(Notify::new());
        let stop = door.stop.clone();
        let attempts = Arc::new(Attempts {
            store: store.clone(),
            completions: Completions::start(store.clone(), committers),
            destinations: destinations.clone(),
            retry: options.retry.clone(),
            aftermath: Aftermath {
                store: store.clone(),
                alerts: options.alerts,
                retry: options.retry.clone(),
                exhausted: ExhaustedRetriesWindow::new(options.exhausted_retries_window),
                events,
            },
            health: health.clone(),
            settled: settled.clone(),
            abandon: CancellationToken::new(),
            tasks: TaskTracker::new(),
        });
        let claims = Claims {
            store: store.clone(),
            owner: options.owner.clone(),
            lease: options.lease,
            max_concurrency: options.max_concurrency,
            per_destination: options.max_concurrency_per_destination,
            max_idle_wait: options.max_idle_wait,
            lanes: door.lanes.clone(),
            queued: door.queued.clone(),
            settled,
            health: health.clone(),
            attempts: attempts.clone(),
            stop: stop.clone(),
        };
        info!(
            owner = %options.owner,
            max_concurrency = options.max_concurrency,
            per_destination = options.max_concurrency_per_destination,
            lease = ?options.lease,
            "delivery dispatcher started"
        );
        let tasks = vec![
            tokio::spawn(claims.run()),
            tokio::spawn(take_hand_offs(handed, attempts.clone(), stop.clone())),
            tokio::spawn(upkeep(
                store,
                destinations,
                options.gauge_interval,
                stop.clone(),
            )),
        ];
        // Only now can handed-over deliveries be taken.
        door.open();
        Ok(Dispatcher {
            owner: options.owner,
            shutdown_grace: options.shutdown_grace,
            health,
            attempts,
            stop,
            tasks,
        })
    }

    /// The lease owner this dispatcher claims as.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    pub fn status(&self) -> DispatcherStatus {
        self.health().snapshot()
    }

    /// A handle on the status that outlives `stop` (for `/healthz`).
    pub fn health(&self) -> DispatcherHealth {
        DispatcherHealth(self.health.clone())
    }

    /// Stops claiming and taking hand-offs, lets attempts in flight finish for up to
    /// `shutdown_grace`, then abandons the rest (their leases expire and they are attempted
    /// again later), and sends the operator events still queued.
    pub async fn stop(mut self) {
        self.stop.cancel();
        for task in std::mem::take(&mut self.tasks) {
            let _ = task.await;
        }
        let attempts = &self.attempts;
        attempts.tasks.close();
        let grace = self.shutdown_grace;
        if tokio::time::timeout(grace, attempts.tasks.wait())
            .await
            .is_err()
        {
            warn!(
                in_flight = self.health.in_flight.load(Ordering::Relaxed),
                "attempts still in flight after {grace:?}; abandoning them (their leases \
                 expire and they are attempted again)"
            );
            attempts.abandon.cancel();
            attempts.tasks.wait().await;
        }
        attempts.aftermath.events.stop(OPERATOR_EVENTS_GRACE).await;
        self.health.running.store(false, Ordering::Relaxed);
        info!(owner = %self.owner, "delivery dispatcher stopped");
    }
}

impl Drop for Dispatcher {
    fn drop(&mut self) {
        // After `stop` this changes nothing; otherwise it ends the loops and attempts now.
        self.stop.cancel();
        self.attempts.abandon.cancel();
        self.health.running.store(false, Ordering::Relaxed);
    }
}

/// Starts the first attempt of each delivery ingest hands over, until `stop`; those handed
/// over before it still get theirs.
async fn take_hand_offs(
    mut handed: mpsc::UnboundedReceiver<Handed>,
    attempts: Arc<Attempts>,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            next = handed.recv() => match next {
                Some(Handed { claimed, room }) => attempts.spawn(claimed, room),
                None => return,
            },
            _ = stop.cancelled() => break,
        }
    }
    handed.close();
    while let Some(Handed { claimed, room }) = handed.recv().await {
        attempts.spawn(claimed, room);
    }
}

/// Every `interval`: refreshes `jetpost_deliveries_pending` (the queue across all replicas)
/// and closes destination publishers idle for `IDLE_CLOSE`.
async fn upkeep(store: Store, destinations: Registry, interval: Duration, stop: CancellationToken) {
    loop {
        match store.count_deliveries(DeliveryStatus::Pending).await {
            Ok(pending) => metrics::gauge!("jetpost_deliveries_pending").set(pending as f64),
            Err(err) => debug!("cannot count pending deliveries: {err}"),
        }
        // Destinations deleted through another replica, or gone quiet, keep no client open.
        let closed = destinations.close_idle(IDLE_CLOSE);
        if closed > 0 {
            debug!(closed, "closed idle destination publishers");
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}
