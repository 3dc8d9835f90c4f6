//! Other replicas' writes, for the routing cache: on Postgres every tenant or destination write
//! is announced with NOTIFY, and this follows the announcements for as long as the service
//! runs, reconnecting after a broken connection. SQLite has one process: nothing to follow.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use super::RoutingCache;

/// How long to wait before listening again after the store refused.
const RELISTEN_AFTER: Duration = Duration::from_secs(2);

/// Applies other replicas' writes to `cache` until `stop`. Whatever may have been missed
/// while not listening (at start, after a reconnect) drops every tenant's routes.
pub async fn follow_replicas(cache: Arc<RoutingCache>, stop: CancellationToken) {
    loop {
        let mut changes = match cache.store().routing_changes().await {
            Ok(Some(changes)) => changes,
            Ok(None) => return,
            Err(err) => {
                warn!("cannot follow other replicas' routing changes: {err}; retrying");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(RELISTEN_AFTER) => continue,
                }
            }
        };
        cache.invalidate_all();
        loop {
            let change = tokio::select! {
                _ = stop.cancelled() => return,
                change = changes.next() => change,
            };
            match change {
                Ok(change) => cache.apply(change),
                Err(err) => {
                    error!("routing change feed failed: {err}; reconnecting");
                    break;
                }
            }
        }
    }
}
