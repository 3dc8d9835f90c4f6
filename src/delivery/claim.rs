//! The claim loop: claims due deliveries from the store whenever there is room (a global slot
//! taken before each claim), starts their attempts, and sleeps when there is nothing to claim
//! until deliveries are queued, an attempt finishes or the next due time comes.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error};

use super::attempt::Attempts;
use super::backoff::{STORE_BACKOFF_FIRST, doubled, with_jitter};
use super::health::Health;
use super::lanes::{Lanes, Reservation};
use crate::store::{ClaimRequest, Store};

/// The shortest sleep after an empty claim: due deliveries that could not be claimed (their
/// destination is at its in-flight limit, or another replica is claiming them) are looked at
/// again after this, or sooner when an attempt of ours finishes.
const MIN_IDLE_WAIT: Duration = Duration::from_millis(50);
/// After a finished attempt, how long the claim loop lets others finish too before it claims
/// again for due deliveries held back by their destination's cap: a slow endpoint's backlog
/// would otherwise cost a claim transaction per finished attempt of every other destination.
const SETTLED_GATHER: Duration = Duration::from_millis(10);

/// What the claim loop reads and where it reports.
pub(super) struct Claims {
    pub store: Store,
    /// The lease owner claims are made as.
    pub owner: String,
    pub lease: Duration,
    pub max_concurrency: usize,
    pub per_destination: u32,
    pub max_idle_wait: Duration,
    pub lanes: Arc<Lanes>,
    /// Deliveries were queued in the store: claim now.
    pub queued: Arc<Notify>,
    /// An attempt of ours finished: a destination may be below its cap again.
    pub settled: Arc<Notify>,
    pub health: Arc<Health>,
    pub attempts: Arc<Attempts>,
    pub stop: CancellationToken,
}

impl Claims {
    /// Claims until `stop`; never holds a lease without a slot for its attempt.
    pub async fn run(self) {
        let mut backoff = STORE_BACKOFF_FIRST;
        loop {
            // Armed before the store is read, so a commit that lands during the claim still
            // wakes the wait below.
            let woken = self.queued.notified();
            let settled = self.settled.notified();
            tokio::pin!(woken, settled);
            woken.as_mut().enable();
            settled.as_mut().enable();

            // A slot first, then the claim: never hold a lease without a worker for it.
            let first = tokio::select! {
                _ = self.stop.cancelled() => return,
                permit = self.lanes.slots().clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => return,
                },
            };
            let mut slots = vec![first];
            while slots.len() < self.max_concurrency {
                match self.lanes.slots().clone().try_acquire_owned() {
                    Ok(permit) => slots.push(permit),
                    Err(_) => break,
                }
            }
            let wanted = slots.len();
            let request = ClaimRequest {
                owner: &self.owner,
                now: Utc::now(),
                limit: u32::try_from(wanted).unwrap_or(u32::MAX),
                per_destination: self.per_destination,
                lease: self.lease,
            };
            let claimed = match self.store.claim_due(&request).await {
                Ok(claimed) => claimed,
                Err(err) => {
                    drop(slots);
                    self.health.claiming.store(false, Ordering::Relaxed);
                    self.health.note_error(&err);
                    error!("cannot claim deliveries: {err}; retrying in {backoff:?}");
                    tokio::select! {
                        _ = self.stop.cancelled() => return,
                        _ = tokio::time::sleep(with_jitter(backoff)) => {}
                    }
                    backoff = doubled(backoff);
                    continue;
                }
            };
            backoff = STORE_BACKOFF_FIRST;
            self.health.claiming.store(true, Ordering::Relaxed);
            let got = claimed.len();
            for delivery in claimed {
                // One slot per claimed delivery; `got <= wanted` by the claim's limit.
                let Some(slot) = slots.pop() else { break };
                let lane = self.lanes.claimed(
                    &delivery.delivery.tenant_id,
                    &delivery.delivery.destination_id,
                );
                self.attempts.spawn(delivery, Reservation { slot, lane });
            }
            drop(slots);
            if got > 0 {
                // There may be more: claim again right away.
                continue;
            }

            // Due deliveries left unclaimed are held back by their destination's cap: a
            // finished attempt may make room. Otherwise finished attempts (mostly hand-offs)
            // are no reason to ask the store again.
            let (wait, blocked) = match self.store.next_due_at().await {
                Ok(Some(at)) => {
                    let until = (at - Utc::now()).to_std().unwrap_or(Duration::ZERO);
                    let wait = until.clamp(MIN_IDLE_WAIT, self.max_idle_wait.max(MIN_IDLE_WAIT));
                    (wait, until.is_zero())
                }
                Ok(None) => (self.max_idle_wait, false),
                Err(err) => {
                    self.health.note_error(&err);
                    debug!("cannot read the next due time: {err}");
                    (self.max_idle_wait, false)
                }
            };
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = &mut woken => {}
                _ = &mut settled, if blocked => tokio::time::sleep(SETTLED_GATHER).await,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}
