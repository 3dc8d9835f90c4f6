//! The store's change feed, for the routing cache: every tenant or destination write is
//! announced in this process before the write method returns (`LocalChanges`, a broadcast every
//! clone of a `Store` shares), and on Postgres also to every replica: the write's transaction
//! sends `NOTIFY jetpost_routing, '<tenant_id>'` and `RoutingChanges` listens for them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sqlx::postgres::{PgListener, PgPool};
use tokio::sync::broadcast;

use super::error::{Result, db_error};

/// The Postgres channel routing changes are announced on.
pub(crate) const CHANNEL: &str = "jetpost_routing";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoutingChange {
    /// This tenant's destinations (or the tenant itself) changed: reload it.
    Tenant(String),
    /// Changes may have been missed (the listening connection was re-established, or a local
    /// subscriber lagged): reload everything.
    Resync,
}

/// Changes announced in this process but not yet taken, per subscriber, before it counts as
/// lagging (and then reloads everything).
const LOCAL_BACKLOG: usize = 1024;

/// This process's announcements of its own tenant and destination writes.
#[derive(Clone)]
pub(crate) struct LocalChanges {
    sender: broadcast::Sender<String>,
    /// Bumped after each announcement, so a subscriber can tell in one load whether there is
    /// anything to take.
    generation: Arc<AtomicU64>,
}

impl LocalChanges {
    pub fn new() -> LocalChanges {
        LocalChanges {
            sender: broadcast::channel(LOCAL_BACKLOG).0,
            generation: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Announces a write to `tenant_id` (or one of its destinations).
    pub fn announce(&self, tenant_id: &str) {
        // Sent before the generation moves: whoever sees the new generation finds the change.
        let _ = self.sender.send(tenant_id.to_owned());
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    pub fn subscribe(&self) -> LocalFeed {
        LocalFeed {
            receiver: self.sender.subscribe(),
        }
    }

    /// A number that moves after every announcement: while it stays put there is nothing new
    /// to take.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }
}

/// A subscription to this process's own tenant and destination writes. Taken without waiting
/// (`take`), so a reader sees every write that returned before it looked; `Store::
/// local_generation` says whether there is anything to take.
pub struct LocalFeed {
    receiver: broadcast::Receiver<String>,
}

impl std::fmt::Debug for LocalFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LocalFeed")
    }
}

impl LocalFeed {
    /// The next change already announced, if any; `Resync` when this subscriber fell so far
    /// behind that changes were dropped.
    pub fn take(&mut self) -> Option<RoutingChange> {
        match self.receiver.try_recv() {
            Ok(tenant) => Some(RoutingChange::Tenant(tenant)),
            Err(broadcast::error::TryRecvError::Lagged(_)) => Some(RoutingChange::Resync),
            Err(broadcast::error::TryRecvError::Empty | broadcast::error::TryRecvError::Closed) => {
                None
            }
        }
    }
}

/// A listener on the routing channel (its own Postgres connection).
pub struct RoutingChanges {
    listener: PgListener,
}

impl std::fmt::Debug for RoutingChanges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RoutingChanges")
    }
}

impl RoutingChanges {
    pub(crate) async fn listen(pool: &PgPool) -> Result<RoutingChanges> {
        let op = "listen for routing changes";
        let mut listener = PgListener::connect_with(pool).await.map_err(db_error(op))?;
        listener.listen(CHANNEL).await.map_err(db_error(op))?;
        Ok(RoutingChanges { listener })
    }

    /// Waits for the next change. After an error (usually transient: Postgres unreachable),
    /// back off and call again; the call after a reconnect reports `Resync`.
    pub async fn next(&mut self) -> Result<RoutingChange> {
        let notification = self
            .listener
            .try_recv()
            .await
            .map_err(db_error("listen for routing changes"))?;
        Ok(match notification {
            Some(n) => RoutingChange::Tenant(n.payload().to_string()),
            None => RoutingChange::Resync,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{LocalChanges, RoutingChange};
    use crate::store::sql::Dialect;

    #[test]
    fn local_changes_reach_every_subscriber_once() {
        let changes = LocalChanges::new();
        let mut a = changes.subscribe();
        let before = changes.generation();
        changes.announce("t1");
        let mut b = changes.subscribe();
        changes.announce("t2");
        assert_eq!(changes.generation(), before + 2);
        assert_eq!(a.take(), Some(RoutingChange::Tenant("t1".into())));
        assert_eq!(a.take(), Some(RoutingChange::Tenant("t2".into())));
        assert_eq!(a.take(), None);
        // Subscribed after the first: sees only what came later.
        assert_eq!(b.take(), Some(RoutingChange::Tenant("t2".into())));
        assert_eq!(b.take(), None);
    }

    #[test]
    fn a_lagging_subscriber_is_told_to_resync() {
        let changes = LocalChanges::new();
        let mut slow = changes.subscribe();
        for n in 0..super::LOCAL_BACKLOG + 1 {
            changes.announce(&format!("t{n}"));
        }
        assert_eq!(slow.take(), Some(RoutingChange::Resync));
    }

    #[test]
    fn postgres_notifies_on_the_channel_listened_to() {
        let notify = <sqlx::Postgres as Dialect>::NOTIFY_ROUTING.unwrap();
        assert!(
            notify.contains(&format!("'{}'", super::CHANNEL)),
            "{notify}"
        );
    }
}
