//! Cross-replica invalidation for the routing cache: on Postgres every tenant or destination
//! write also sends `NOTIFY jetpost_routing, '<tenant_id>'` in its transaction, and
//! `RoutingChanges` listens for them. SQLite has a single process, which invalidates locally.

use sqlx::postgres::{PgListener, PgPool};

use super::error::{Result, db_error};

/// The Postgres channel routing changes are announced on.
pub(crate) const CHANNEL: &str = "jetpost_routing";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoutingChange {
    /// This tenant's destinations (or the tenant itself) changed: reload it.
    Tenant(String),
    /// The listening connection was lost and re-established: changes may have been missed,
    /// reload everything.
    Resync,
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
    use crate::store::sql::Dialect;

    #[test]
    fn postgres_notifies_on_the_channel_listened_to() {
        let notify = <sqlx::Postgres as Dialect>::NOTIFY_ROUTING.unwrap();
        assert!(
            notify.contains(&format!("'{}'", super::CHANNEL)),
            "{notify}"
        );
    }
}
