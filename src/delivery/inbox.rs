//! The dispatcher's inbound side, made before the dispatcher so that neither ingest nor the API
//! needs the dispatcher itself: `Inbox::new` (in `app::run`) gives ingest its `Handoff` and the
//! API its wake-up, and is then given to `Dispatcher::start`, which takes the deliveries handed
//! over through it. Until a dispatcher starts on it, and once that dispatcher stops, nothing is
//! handed off: deliveries are committed pending and wait for a claim.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use super::backoff::later;
use super::lanes::{Lanes, Reservation};
use super::options::DispatcherOptions;
use crate::store::{
    ClaimedDelivery, Delivery, DeliveryStatus, Destination, Event, Lease, NewLease,
};

/// The dispatcher's inbound side before and while it runs; see the module doc.
pub struct Inbox {
    pub(super) door: Arc<Door>,
    pub(super) handed: mpsc::UnboundedReceiver<Handed>,
    pub(super) options: DispatcherOptions,
}

/// What ingest and the dispatcher share: the lanes, the lease terms and the wake-up.
pub(super) struct Door {
    owner: String,
    lease: Duration,
    pub lanes: Arc<Lanes>,
    /// Notified when deliveries are queued in the store (pending): claim them now.
    pub queued: Arc<Notify>,
    /// A dispatcher started on this inbox.
    started: AtomicBool,
    /// That dispatcher is stopping: no more hand-offs.
    pub stop: CancellationToken,
    handed: mpsc::UnboundedSender<Handed>,
}

/// A delivery committed leased to the dispatcher, for its first attempt.
pub(super) struct Handed {
    pub claimed: ClaimedDelivery,
    pub room: Reservation,
}

impl Door {
    fn new(
        owner: String,
        lease: Duration,
        lanes: Lanes,
    ) -> (Arc<Door>, mpsc::UnboundedReceiver<Handed>) {
        let (handed, receiver) = mpsc::unbounded_channel();
        let door = Door {
            owner,
            lease,
            lanes: Arc::new(lanes),
            queued: Arc::new(Notify::new()),
            started: AtomicBool::new(false),
            stop: CancellationToken::new(),
            handed,
        };
        (Arc::new(door), receiver)
    }

    /// Lets hand-offs through: the dispatcher now takes them.
    pub fn open(&self) {
        self.started.store(true, Ordering::SeqCst);
    }
}

impl Inbox {
    /// The inbox of the dispatcher that will run with `options` (its lanes and lease terms).
    pub fn new(options: DispatcherOptions) -> Inbox {
        let lanes = Lanes::new(
            options.max_concurrency,
            options.max_concurrency_per_destination,
        );
        let (door, handed) = Door::new(options.owner.clone(), options.lease, lanes);
        Inbox {
            door,
            handed,
            options,
        }
    }

    /// Ingest's side: hands fresh deliveries over, or says they were queued in the store.
    pub fn handoff(&self) -> Handoff {
        Handoff(self.door.clone())
    }

    /// Notified after deliveries were queued in the store (e.g. a manual retry): the dispatcher
    /// claims at once instead of waiting for its next look at the store.
    pub fn deliveries_queued(&self) -> Arc<Notify> {
        self.door.queued.clone()
    }
}

/// Ingest's way to hand a delivery it commits straight to the dispatcher instead of leaving it
/// pending for a claim to find: `reserve` room (a lane of each destination and a global slot,
/// waiting for one up to a deadline), commit the deliveries under the lease of what was
/// reserved, then `Reserved::start` their first attempts. A fresh event's first attempt then
/// costs no claim transaction, and waits for no claim loop. Room that is not found leaves the
/// delivery to the store's queue.
#[derive(Clone)]
pub struct Handoff(Arc<Door>);

/// Room the dispatcher reserved for some of an event's deliveries, and the lease to commit them
/// under; given back when dropped unstarted (e.g. the event was a duplicate).
pub struct Reserved {
    door: Arc<Door>,
    lease: NewLease,
    rooms: Vec<(Arc<Destination>, Reservation)>,
}

impl Handoff {
    /// Hands nothing over: every delivery is committed pending, for whichever dispatcher claims
    /// it (ingest in a process that runs none, e.g. a benchmark).
    pub fn nowhere() -> Handoff {
        let (door, _) = Door::new(String::new(), Duration::ZERO, Lanes::new(1, 1));
        Handoff(door)
    }

    /// Room for deliveries to each of `destinations` the dispatcher can take by `deadline`, in
    /// their order; `None` when there is none (or no dispatcher takes hand-offs).
    pub async fn reserve(
        &self,
        tenant_id: &str,
        destinations: Vec<Arc<Destination>>,
        deadline: tokio::time::Instant,
    ) -> Option<Reserved> {
        let door = &self.0;
        let mut rooms = Vec::with_capacity(destinations.len());
        for destination in destinations {
            if !door.started.load(Ordering::SeqCst) || door.stop.is_cancelled() {
                break;
            }
            let room = door.lanes.reserve(tenant_id, &destination.id, deadline);
            let room = tokio::select! {
                room = room => room,
                _ = door.stop.cancelled() => None,
            };
            if let Some(room) = room {
                rooms.push((destination, room));
            }
        }
        if rooms.is_empty() {
            return None;
        }
        let lease = NewLease {
            owner: door.owner.clone(),
            expires_at: later(Utc::now(), door.lease),
            destination_ids: rooms.iter().map(|(d, _)| d.id.clone()).collect(),
        };
        Some(Reserved {
            door: door.clone(),
            lease,
            rooms,
        })
    }

    /// Tells the dispatcher that deliveries were committed pending: it claims them at once.
    pub fn queued(&self) {
        self.0.queued.notify_one();
    }
}

impl Reserved {
    /// The lease to commit the reserved deliveries under: the dispatcher's, from now.
    pub fn lease(&self) -> &NewLease {
        &self.lease
    }

    /// Starts the first attempts of the reserved deliveries, committed with ids `delivery_ids`
    /// (in the order of `lease().destination_ids`).
    pub fn start(self, event: Event, delivery_ids: Vec<i64>) {
        let Reserved { door, lease, rooms } = self;
        let now = Utc::now();
        for ((destination, room), delivery_id) in rooms.into_iter().zip(delivery_ids) {
            let destination = Destination::clone(&destination);
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
                event: event.clone(),
                destination,
            };
            metrics::counter!("jetpost_deliveries_handed_off_total").increment(1);
            // Refused only once the dispatcher has stopped: the lease then runs out and the
            // delivery is claimed again, by any replica.
            let _ = door.handed.send(Handed { claimed, room });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::config::Config;

    fn destination(id: &str) -> Arc<Destination> {
        Arc::new(Destination {
            tenant_id: "acme".into(),
            id: id.into(),
            kind: "webhook".into(),
            topics: vec!["*".into()],
            filter: None,
            config: BTreeMap::new(),
            credentials: Default::default(),
            delivery_metadata: None,
            metadata: None,
            disabled_at: None,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        })
    }

    fn options() -> DispatcherOptions {
        DispatcherOptions::from_config(&Config {
            delivery_max_concurrency: 4,
            delivery_max_concurrency_per_destination: 4,
            ..Config::default()
        })
    }

    fn soon() -> tokio::time::Instant {
        tokio::time::Instant::now() + Duration::from_millis(20)
    }

    #[tokio::test]
    async fn nothing_is_handed_off_before_a_dispatcher_opens_the_inbox() {
        let inbox = Inbox::new(options());
        let handoff = inbox.handoff();
        let reserved = handoff
            .reserve("acme", vec![destination("d1")], soon())
            .await;
        assert!(reserved.is_none());

        inbox.door.open();
        let reserved = handoff
            .reserve("acme", vec![destination("d1"), destination("d2")], soon())
            .await
            .expect("room once open");
        assert_eq!(reserved.lease().destination_ids, ["d1", "d2"]);
        assert_eq!(reserved.lease().owner, inbox.options.owner);

        // And none once the dispatcher stops.
        inbox.door.stop.cancel();
        let after = handoff
            .reserve("acme", vec![destination("d3")], soon())
            .await;
        assert!(after.is_none());
    }

    #[tokio::test]
    async fn started_deliveries_reach_the_dispatcher_in_lease_order() {
        let mut inbox = Inbox::new(options());
        inbox.door.open();
        let reserved = inbox
            .handoff()
            .reserve("acme", vec![destination("d1"), destination("d2")], soon())
            .await
            .unwrap();
        let event = Event {
            tenant_id: "acme".into(),
            id: "e1".into(),
            destination_id: None,
            topic: "t".into(),
            time: Utc::now(),
            metadata: None,
            data: "{}".into(),
            eligible_for_retry: true,
            destination_ids: vec!["d1".into(), "d2".into()],
            created_at: Utc::now(),
        };
        reserved.start(event, vec![7, 8]);
        let first = inbox.handed.try_recv().unwrap().claimed;
        let second = inbox.handed.try_recv().unwrap().claimed;
        assert_eq!(
            (first.delivery.id, first.destination.id.as_str()),
            (7, "d1")
        );
        assert_eq!(
            (second.delivery.id, second.destination.id.as_str()),
            (8, "d2")
        );
        assert_eq!(first.lease.owner, inbox.options.owner);
        assert_eq!(first.delivery.status, DeliveryStatus::Delivering);
    }

    #[tokio::test]
    async fn handing_off_nowhere_reserves_nothing() {
        let reserved = Handoff::nowhere()
            .reserve("acme", vec![destination("d1")], soon())
            .await;
        assert!(reserved.is_none());
    }
}
