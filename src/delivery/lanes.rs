//! This process's delivery capacity: the global slots (`delivery_max_concurrency`) and, per
//! destination, the leases it holds (claimed or handed off by ingest, not yet recorded). Claims
//! count every replica's leases in the store; a hand-off has no store round trip to ask, so it
//! counts this process's leases here and takes at most `cap - 1` of a destination's lanes,
//! leaving the last one to the store's queue (retries, recovered leases, manual retries), which
//! can therefore never be starved by fresh events. A destination whose wait for a lane ran out
//! counts as saturated for a second: hand-offs to it give up at once meanwhile.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

type DestinationKey = (String, String);

#[derive(Default)]
struct Leases {
    held: u32,
    /// Told when one of these leases ends: a waiting hand-off may take it.
    freed: Arc<Notify>,
    /// A wait for a lane ran out recently: the destination is saturated (a slow endpoint), and
    /// until then its deliveries queue in the store at once instead of each waiting in vain
    /// (and holding its tenant's in-flight slots meanwhile).
    saturated_until: Option<Instant>,
}

/// How long a destination counts as saturated after a wait for one of its lanes ran out.
const SATURATED_FOR: Duration = Duration::from_secs(1);

pub(super) struct Lanes {
    slots: Arc<Semaphore>,
    /// Leases a hand-off may hold per destination (0: hand-offs are off).
    handoff_cap: u32,
    leases: Mutex<HashMap<DestinationKey, Leases>>,
}

/// Room for one delivery: a global slot (given back once the request is done) and a lease
/// counted against its destination (given back when the attempt has been recorded).
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

    /// Counts a lease taken by a claim (the store already checked the destination's cap).
    pub fn claimed(self: &Arc<Self>, tenant_id: &str, destination_id: &str) -> Lane {
        let key = (tenant_id.to_owned(), destination_id.to_owned());
        self.lock().entry(key.clone()).or_default().held += 1;
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
            let freed = {
                let mut leases = self.lock();
                let entry = leases.entry(key.clone()).or_default();
                if entry.held < self.handoff_cap {
                    entry.held += 1;
                    break;
                }
                if entry
                    .saturated_until
                    .is_some_and(|until| Instant::now() < until)
                {
                    return None;
                }
                entry.freed.clone()
            };
            // A lease that ends between the check and this wait leaves a permit in `freed`.
            if tokio::time::timeout_at(deadline, freed.notified())
                .await
                .is_err()
            {
                self.saturated(&key);
                return None;
            }
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

    fn saturated(&self, key: &DestinationKey) {
        if let Some(entry) = self.lock().get_mut(key) {
            entry.saturated_until = Some(Instant::now() + SATURATED_FOR);
        }
    }

    fn release(&self, key: &DestinationKey) {
        let mut leases = self.lock();
        let Some(entry) = leases.get_mut(key) else {
            return;
        };
        entry.held = entry.held.saturating_sub(1);
        entry.freed.notify_one();
        // Kept while someone waits on `freed`, so the waiter hears of the next lease ending.
        if entry.held == 0 && Arc::strong_count(&entry.freed) == 1 {
            leases.remove(key);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<DestinationKey, Leases>> {
        self.leases.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One lease counted against its destination, until dropped.
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
    async fn a_saturated_destination_stops_making_hand_offs_wait() {
        let lanes = Arc::new(Lanes::new(10, 2));
        let busy = lanes.reserve("t", "d", soon(10)).await.expect("lane");
        // The first wait runs its course...
        let started = Instant::now();
        assert!(lanes.reserve("t", "d", soon(500)).await.is_none());
        assert!(started.elapsed() >= Duration::from_millis(500));
        // ...the next ones give up at once while the destination counts as saturated...
        let started = Instant::now();
        assert!(lanes.reserve("t", "d", soon(500)).await.is_none());
        assert!(started.elapsed() < Duration::from_millis(10));
        // ...and wait again once that has passed.
        tokio::time::advance(SATURATED_FOR).await;
        let started = Instant::now();
        assert!(lanes.reserve("t", "d", soon(100)).await.is_none());
        assert!(started.elapsed() >= Duration::from_millis(100));
        drop(busy);
        assert!(lanes.reserve("t", "d", soon(10)).await.is_some());
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
