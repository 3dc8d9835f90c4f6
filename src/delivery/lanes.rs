//! This process's delivery capacity: the global slots (`delivery_max_concurrency`) and, per
//! destination, its lanes: deliveries claimed or handed off by ingest whose request has not
//! ended yet (a hand-off's lane is taken before its commit). Claims count every replica's leases
//! in the store; a hand-off has no store round trip to ask, so it counts this process's lanes
//! here and takes at most `cap - 1` of them,
//! leaving the last one to the store's queue (retries, recovered leases, manual retries), which
//! can therefore never be starved by fresh events. A destination whose lanes are all taken and
//! none given back for a while is slow: it counts as saturated for a second, and hand-offs to it
//! give up at once meanwhile.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

type DestinationKey = (String, String);

#[derive(Default)]
struct Leases {
    held: u32,
    /// Told when one of these lanes is given back: a waiting hand-off may take it.
    freed: Arc<Notify>,
    /// When a lane was last given back, or taken while none was held.
    turned_at: Option<Instant>,
    /// The destination stalled recently: all its lanes were taken and none was given back for
    /// `STALLED_AFTER` (a slow endpoint). Until then its deliveries queue in the store at once
    /// instead of each waiting in vain (and holding its tenant's in-flight slots meanwhile).
    saturated_until: Option<Instant>,
}

impl Leases {
    /// Counts one more lane held.
    fn take(&mut self, now: Instant) {
        if self.held == 0 {
            self.turned_at = Some(now);
        }
        self.held += 1;
    }
}

/// All lanes taken and none given back for this long: the destination is slow, not just busy.
/// A busy destination's lanes turn over every few milliseconds, and a hand-off waits for one
/// (its source stops pulling meanwhile: backpressure); a slow one's requests hold theirs.
const STALLED_AFTER: Duration = Duration::from_millis(250);
/// How long a destination counts as saturated after it stalled.
const SATURATED_FOR: Duration = Duration::from_secs(1);

pub(super) struct Lanes {
    slots: Arc<Semaphore>,
    /// Leases a hand-off may hold per destination (0: hand-offs are off).
    handoff_cap: u32,
    leases: Mutex<HashMap<DestinationKey, Leases>>,
}

/// Room for one delivery: a global slot and a lane counted against its destination, both given
/// back once the request is done (the store's lease lasts until the attempt is recorded).
pub(super) struct Reservation {
    pub slot: OwnedSemaphorePermit,
    pub lane: Lane,
}

impl Lanes {
    pub fn new(max_concurrency: usize, per_destination: u32) -> Lanes {
        Lanes {
            slots: Arc::new(Semaphore::new(max_concurrency.max(1))),
            handoff_cap: per_destination.saturating_sub(1),
            leases: Mutex::new(HashMap::new()),
        }
    }

    pub fn slots(&self) -> &Arc<Semaphore> {
        &self.slots
    }

    /// Counts a lane taken by a claim (the store already checked the destination's cap).
    pub fn claimed(self: &Arc<Self>, tenant_id: &str, destination_id: &str) -> Lane {
        let key = (tenant_id.to_owned(), destination_id.to_owned());
        self.lock()
            .entry(key.clone())
            .or_default()
            .take(Instant::now());
        Lane {
            lanes: self.clone(),
            key,
        }
    }

    /// Waits until `deadline` for a lane of the destination and then a global slot; `None`
    /// if either stayed taken (the delivery then queues in the store instead).
    pub async fn reserve(
        self: &Arc<Self>,
        tenant_id: &str,
        destination_id: &str,
        deadline: Instant,
    ) -> Option<Reservation> {
        if self.handoff_cap == 0 {
            return None;
        }
        let key = (tenant_id.to_owned(), destination_id.to_owned());
        loop {
            let (freed, stalls_at) = {
                let mut leases = self.lock();
                let entry = leases.entry(key.clone()).or_default();
                let now = Instant::now();
                if entry.held < self.handoff_cap {
                    entry.take(now);
                    break;
                }
                if entry.saturated_until.is_some_and(|until| now < until) {
                    return None;
                }
                let stalls_at = entry.turned_at.unwrap_or(now) + STALLED_AFTER;
                if now >= stalls_at {
                    entry.saturated_until = Some(now + SATURATED_FOR);
                    return None;
                }
                (entry.freed.clone(), stalls_at)
            };
            if Instant::now() >= deadline {
                return None;
            }
            // A lane given back between the check and this wait leaves a permit in `freed`;
            // waking at `stalls_at` looks again whether any was given back meanwhile.
            let _ = tokio::time::timeout_at(deadline.min(stalls_at), freed.notified()).await;
        }
        let lane = Lane {
            lanes: self.clone(),
            key,
        };
        let slot = match self.slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => tokio::time::timeout_at(deadline, self.slots.clone().acquire_owned())
                .await
                .ok()?
                .ok()?,
        };
        Some(Reservation { slot, lane })
    }

    /// Leases this process holds on the destination now.
    #[cfg(test)]
    fn held(&self, tenant_id: &str, destination_id: &str) -> u32 {
        self.lock()
            .get(&(tenant_id.to_owned(), destination_id.to_owned()))
            .map_or(0, |l| l.held)
    }

    fn release(&self, key: &DestinationKey) {
        let mut leases = self.lock();
        let Some(entry) = leases.get_mut(key) else {
            return;
        };
        entry.held = entry.held.saturating_sub(1);
        entry.turned_at = Some(Instant::now());
        entry.freed.notify_one();
        // Kept while someone waits on `freed`, so the waiter hears of the next lane given back.
        if entry.held == 0 && Arc::strong_count(&entry.freed) == 1 {
            leases.remove(key);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<DestinationKey, Leases>> {
        self.leases.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One lane counted against its destination, until dropped.
pub(super) struct Lane {
    lanes: Arc<Lanes>,
    key: DestinationKey,
}

impl Drop for Lane {
    fn drop(&mut self) {
        self.lanes.release(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn soon(ms: u64) -> Instant {
        Instant::now() + Duration::from_millis(ms)
    }

    #[tokio::test]
    async fn hand_offs_leave_one_lane_to_the_store_queue() {
        let lanes = Arc::new(Lanes::new(10, 3));
        let a = lanes.reserve("t", "d", soon(10)).await.expect("first lane");
        let b = lanes
            .reserve("t", "d", soon(10))
            .await
            .expect("second lane");
        assert!(lanes.reserve("t", "d", soon(20)).await.is_none());
        // Another destination is not affected; a claim may still take the third lease.
        let other = lanes
            .reserve("t", "e", soon(10))
            .await
            .expect("other destination");
        let claimed = lanes.claimed("t", "d");
        assert_eq!(lanes.held("t", "d"), 3);
        drop((a, b, other, claimed));
        assert_eq!(lanes.held("t", "d"), 0);
        assert!(lanes.lock().is_empty(), "idle destinations are forgotten");
    }

    #[tokio::test]
    async fn a_waiting_hand_off_takes_the_lane_that_frees() {
        let lanes = Arc::new(Lanes::new(10, 2));
        let first = lanes.reserve("t", "d", soon(10)).await.expect("lane");
        let waiter = {
            let lanes = lanes.clone();
            tokio::spawn(async move { lanes.reserve("t", "d", soon(5_000)).await.is_some() })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(first);
        assert!(waiter.await.unwrap(), "the waiter got the freed lane");
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_destination_stops_making_hand_offs_wait() {
        let lanes = Arc::new(Lanes::new(10, 2));
        let busy = lanes.reserve("t", "d", soon(10)).await.expect("lane");
        // A wait for a lane that is never given back ends once the destination stalls...
        let started = Instant::now();
        assert!(lanes.reserve("t", "d", soon(5_000)).await.is_none());
        assert_eq!(started.elapsed(), STALLED_AFTER);
        // ...the next ones give up at once while the destination counts as saturated...
        let started = Instant::now();
        assert!(lanes.reserve("t", "d", soon(5_000)).await.is_none());
        assert_eq!(started.elapsed(), Duration::ZERO);
        // ...and as long as it stays stalled; a lane given back ends that.
        tokio::time::advance(SATURATED_FOR).await;
        assert!(lanes.reserve("t", "d", soon(5_000)).await.is_none());
        drop(busy);
        tokio::time::advance(SATURATED_FOR).await;
        assert!(lanes.reserve("t", "d", soon(10)).await.is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_destination_whose_lanes_turn_over_keeps_hand_offs_waiting() {
        let lanes = Arc::new(Lanes::new(10, 2));
        let first = lanes.reserve("t", "d", soon(10)).await.expect("lane");
        let waiter = |lanes: Arc<Lanes>| {
            tokio::spawn(async move { lanes.reserve("t", "d", soon(5_000)).await })
        };
        let (a, b) = (waiter(lanes.clone()), waiter(lanes.clone()));
        // Each lane is held for less than STALLED_AFTER, but B waits for two of them.
        tokio::time::sleep(STALLED_AFTER * 4 / 5).await;
        drop(first);
        let second = a.await.unwrap().expect("A got the lane given back");
        tokio::time::sleep(STALLED_AFTER * 4 / 5).await;
        drop(second);
        assert!(
            b.await.unwrap().is_some(),
            "B kept waiting past STALLED_AFTER while lanes turned over"
        );
    }

    #[tokio::test]
    async fn no_global_slot_means_no_hand_off() {
        let lanes = Arc::new(Lanes::new(1, 16));
        let first = lanes.reserve("t", "d", soon(10)).await.expect("slot");
        assert!(lanes.reserve("t", "e", soon(20)).await.is_none());
        assert_eq!(lanes.held("t", "e"), 0, "the lane was given back");
        drop(first);
    }

    #[tokio::test]
    async fn a_cap_of_one_turns_hand_offs_off() {
        let lanes = Arc::new(Lanes::new(10, 1));
        assert!(lanes.reserve("t", "d", soon(10)).await.is_none());
    }
}
