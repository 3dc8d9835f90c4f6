//! Exclusive ownership (`publishmq.nats.ownership: exclusive`): replicas sharing one Postgres
//! store each consume only their share of the accounts, so connections grow with accounts, not
//! accounts × replicas.
//!
//! Every `RENEW_EVERY` the steward renews this replica's lease, which lists the live replicas;
//! computes its share with rendezvous hashing (`ownership::share_of`); and takes or renews the
//! leases of its share plus every account it still has a pump for (a draining pump keeps its
//! lease until it has settled). While part of its share is still held by another replica it
//! beats every `WAITING_EVERY` instead, to take those accounts soon after they are free. It consumes an account only while it holds the account's lease.
//! An account it no longer holds or wants is released once its last pump has ended, and the
//! replica it now belongs to takes it on its next beat.
//!
//! A replica that dies stops renewing: its accounts' leases run out after `LEASE` and the others
//! take them. A replica that cannot reach the store stops pulling before its leases could run
//! out (`valid_until`), so two replicas never consume one account at once.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::ownership::share_of;
use super::pump::ActivePumps;

/// How long a replica's and an account's lease runs without renewal: a dead replica's accounts
/// move after at most this (plus one beat of the replica taking them).
pub const LEASE: Duration = Duration::from_secs(6);
/// How often the steward renews; three chances before a lease runs out.
pub const RENEW_EVERY: Duration = Duration::from_secs(2);
/// How often it beats while part of its share is held by another replica (that has died, or
/// is letting go): the account moves this soon after that lease ends.
const WAITING_EVERY: Duration = Duration::from_millis(500);
/// How long after another replica's lease should have run out the steward looks again.
const EXPIRY_SLACK: Duration = Duration::from_millis(100);
/// How long before its leases could run out a replica that cannot renew them stops pulling.
/// Its clock started before the store's (`valid_until` is measured from before the request), so
/// this only has to cover stopping the pull loops.
const MARGIN: Duration = Duration::from_secs(1);

/// What a heartbeat returns.
#[derive(Debug, Clone, Default)]
pub struct Beat {
    /// The live replicas' ids.
    pub live: Vec<String>,
    /// How soon the first other live replica's lease runs out unless renewed: a replica that
    /// died. The next beat comes then, so its accounts move as soon as they are free.
    pub first_expiry: Option<Duration>,
}

/// Where leases are kept: the store, in the service (see `app`).
pub trait LeaseBook: Send + Sync + 'static {
    /// Renews `replica`'s lease and returns the live replicas.
    fn heartbeat<'a>(
        &'a self,
        replica: &'a str,
        lease: Duration,
    ) -> BoxFuture<'a, Result<Beat, String>>;
    /// Marks `replica` as leaving: the others stop counting it live.
    fn leaving<'a>(&'a self, replica: &'a str) -> BoxFuture<'a, Result<(), String>>;
    /// Takes or renews the leases of `accounts` that are free, run out or `replica`'s own;
    /// returns those `replica` holds now.
    fn hold<'a>(
        &'a self,
        replica: &'a str,
        accounts: &'a [String],
        lease: Duration,
    ) -> BoxFuture<'a, Result<Vec<String>, String>>;
    /// Gives up `replica`'s leases of `accounts`.
    fn release<'a>(
        &'a self,
        replica: &'a str,
        accounts: &'a [String],
    ) -> BoxFuture<'a, Result<u64, String>>;
}

/// What exclusive ownership needs: this replica's id and the lease book.
#[derive(Clone)]
pub struct Exclusive {
    pub replica_id: String,
    pub book: Arc<dyn LeaseBook>,
}

impl std::fmt::Debug for Exclusive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exclusive")
            .field("replica_id", &self.replica_id)
            .finish_non_exhaustive()
    }
}

/// A replica id unique to this process: the host name (a pod's name in Kubernetes) and a
/// random suffix, so two processes on one host, or a restarted one, never share an id.
pub fn new_replica_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "jetpost".to_owned());
    format!("{host}-{:08x}", rand::random::<u32>())
}

/// Where the steward stands, for `NatsSource::stop`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Standing {
    pub leaving: bool,
    /// Account leases held after the last beat.
    pub held: usize,
}

/// The running steward.
pub struct Steward {
    leave: CancellationToken,
    stop: CancellationToken,
    standing: watch::Receiver<Standing>,
    task: JoinHandle<()>,
}

impl Steward {
    /// Starts beating; `known` are the accounts subject to ownership, `owned` receives those
    /// this replica may consume, `active` tells which accounts still have a pump.
    pub fn start(
        exclusive: Exclusive,
        known: watch::Receiver<BTreeSet<String>>,
        owned: watch::Sender<BTreeSet<String>>,
        active: ActivePumps,
    ) -> Steward {
        let (standing_tx, standing) = watch::channel(Standing::default());
        let leave = CancellationToken::new();
        let stop = CancellationToken::new();
        let beats = Beats {
            me: exclusive.replica_id,
            book: exclusive.book,
            known,
            owned,
            active,
            standing: standing_tx,
            held: BTreeSet::new(),
            valid_until: None,
            leaving: false,
            waiting: false,
            next_expiry: None,
            marked_leaving: false,
        };
        let task = tokio::spawn(beats.run(leave.clone(), stop.clone()));
        Steward {
            leave,
            stop,
            standing,
            task,
        }
    }

    /// Hands every account over: marks this replica leaving (the others compute their shares
    /// without it), stops consuming, and releases each account once its pump has settled;
    /// returns when nothing is held any more or after `within`.
    pub async fn hand_over(&mut self, within: Duration) {
        self.leave.cancel();
        let handed = self.standing.wait_for(|s| s.leaving && s.held == 0);
        if tokio::time::timeout(within, handed).await.is_err() {
            warn!(
                "NATS accounts not all handed over within {within:?}; their leases run out by themselves"
            );
        }
    }

    /// Stops beating and releases whatever is still held.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

struct Beats {
    me: String,
    book: Arc<dyn LeaseBook>,
    known: watch::Receiver<BTreeSet<String>>,
    owned: watch::Sender<BTreeSet<String>>,
    active: ActivePumps,
    standing: watch::Sender<Standing>,
    /// The account leases held as of the last successful beat.
    held: BTreeSet<String>,
    /// Until when the held leases surely run in the store.
    valid_until: Option<Instant>,
    /// Handing over: the share is empty.
    leaving: bool,
    /// Part of the share is held by another replica.
    waiting: bool,
    /// When the first other live replica's lease runs out unless renewed.
    next_expiry: Option<Instant>,
    /// The store knows this replica is leaving.
    marked_leaving: bool,
}

impl Beats {
    async fn run(mut self, leave: CancellationToken, stop: CancellationToken) {
        info!(replica = %self.me, "NATS account ownership: exclusive; this replica's id");
        loop {
            self.leaving = leave.is_cancelled();
            let deadline = self.valid_until;
            tokio::select! {
                _ = stop.cancelled() => break,
                done = tokio::time::timeout(2 * RENEW_EVERY, self.beat()) => {
                    if let Err(elapsed) = done {
                        self.failed(format!("the store did not answer within {elapsed}"));
                    }
                }
                _ = sleep_until(deadline) => self.lose_all(),
            }
            let pace = if self.waiting {
                WAITING_EVERY
            } else {
                RENEW_EVERY
            };
            let next = self
                .next_expiry
                .map_or(Instant::now() + pace, |at| at.min(Instant::now() + pace));
            let deadline = self.valid_until;
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep_until(next) => {}
                _ = leave.cancelled(), if !self.leaving => {}
                _ = self.active.one_ended() => {}
                _ = self.known.changed() => {}
                _ = sleep_until(deadline) => self.lose_all(),
            }
        }
        let held: Vec<String> = std::mem::take(&mut self.held).into_iter().collect();
        if !held.is_empty()
            && let Err(err) = self.book.release(&self.me, &held).await
        {
            warn!(
                "releasing NATS account leases at exit failed ({err}); they run out by themselves"
            );
        }
        self.publish(BTreeSet::new());
    }

    async fn beat(&mut self) {
        let began = Instant::now();
        if self.leaving && !self.marked_leaving {
            match self.book.leaving(&self.me).await {
                Ok(()) => self.marked_leaving = true,
                Err(err) => warn!("marking this replica as leaving failed: {err}"),
            }
        }
        let Beat { live, first_expiry } = match self.book.heartbeat(&self.me, LEASE).await {
            Ok(beat) => beat,
            Err(err) => return self.failed(err),
        };
        // Just after the lease runs out, unless renewed in between (then it beats as usual).
        self.next_expiry = first_expiry.map(|left| began + left + EXPIRY_SLACK);
        metrics::gauge!("jetpost_nats_replicas_live").set(live.len() as f64);
        let (share, busy) = {
            let known = self.known.borrow_and_update();
            let share: BTreeSet<String> = if self.leaving {
                BTreeSet::new()
            } else {
                share_of(&self.me, known.iter().map(String::as_str), &live)
                    .into_iter()
                    .map(str::to_owned)
                    .collect()
            };
            // A pump still settling keeps its account's lease until it has ended.
            let busy: Vec<String> = self
                .active
                .names()
                .into_iter()
                .filter(|a| known.contains(a) || self.held.contains(a))
                .collect();
            (share, busy)
        };
        let wanted: BTreeSet<String> = share.iter().cloned().chain(busy).collect();
        let asked: Vec<String> = wanted.iter().cloned().collect();
        let held: BTreeSet<String> = match self.book.hold(&self.me, &asked, LEASE).await {
            Ok(held) => held.into_iter().collect(),
            Err(err) => return self.failed(err),
        };
        self.valid_until = Some(began + LEASE - MARGIN);
        metrics::counter!("jetpost_nats_lease_renewals_total", "result" => "ok").increment(1);

        let gained = held.difference(&self.held).count();
        if gained > 0 {
            info!(replica = %self.me, accounts = gained, "NATS accounts acquired");
            metrics::counter!("jetpost_nats_account_handovers_total", "change" => "acquired")
                .increment(gained as u64);
        }
        let released: Vec<String> = self.held.difference(&wanted).cloned().collect();
        if !released.is_empty() {
            match self.book.release(&self.me, &released).await {
                Ok(_) => {
                    info!(replica = %self.me, accounts = released.len(), "NATS accounts released")
                }
                // They are not renewed any more: they run out within a lease.
                Err(err) => warn!(
                    "releasing NATS account leases failed ({err}); they run out by themselves"
                ),
            }
            metrics::counter!("jetpost_nats_account_handovers_total", "change" => "released")
                .increment(released.len() as u64);
        }
        let owned: BTreeSet<String> = held.intersection(&share).cloned().collect();
        self.waiting = owned.len() < share.len();
        self.held = held;
        self.publish(owned);
    }

    /// A beat failed: keep consuming until `valid_until` (the deadline arm of `run` stops it).
    fn failed(&mut self, err: String) {
        metrics::counter!("jetpost_nats_lease_renewals_total", "result" => "failed").increment(1);
        // Back to the normal pace: a store that does not answer is not asked faster.
        self.waiting = false;
        self.next_expiry = None;
        warn!(
            replica = %self.me,
            "renewing NATS account leases failed: {err}; consuming the owned accounts until their leases could run out"
        );
        if self
            .valid_until
            .is_some_and(|until| Instant::now() >= until)
        {
            self.lose_all();
        }
    }

    /// The leases could have run out: stop consuming every account at once.
    fn lose_all(&mut self) {
        self.valid_until = None;
        if !self.held.is_empty() {
            warn!(
                replica = %self.me,
                accounts = self.held.len(),
                "NATS account leases not renewed in time; stopped consuming them until the store answers again"
            );
            metrics::counter!("jetpost_nats_account_handovers_total", "change" => "expired")
                .increment(self.held.len() as u64);
        }
        self.held.clear();
        self.publish(BTreeSet::new());
    }

    fn publish(&mut self, owned: BTreeSet<String>) {
        metrics::gauge!("jetpost_nats_accounts_owned").set(owned.len() as f64);
        self.owned.send_if_modified(|current| {
            let changed = *current != owned;
            *current = owned;
            changed
        });
        self.standing.send_replace(Standing {
            leaving: self.leaving,
            held: self.held.len(),
        });
    }
}

/// Sleeps until `deadline`; never resolves without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
