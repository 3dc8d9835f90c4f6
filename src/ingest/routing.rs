//! The routing cache: which of a tenant's enabled destinations an event goes to. Loaded from
//! the store on demand per tenant and dropped on every tenant or destination write (across
//! replicas through the store's change notifications), so the hot path reads memory only.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use tracing::warn;

use crate::event::{Document, Event, Filter, topics_match};
use crate::store::{Destination, Store, StoreError};

/// One enabled destination as routing sees it (kept whole, credentials opened, so a delivery
/// handed straight to the dispatcher needs no read of it).
#[derive(Debug, Clone)]
pub struct Route {
    pub destination: Arc<Destination>,
    /// `None` when the destination has no filter.
    pub filter: Option<Filter>,
}

impl Route {
    fn accepts(&self, event: &Event, filter_input: &Document) -> bool {
        topics_match(&self.destination.topics, event.topic.as_deref())
            && self.filter.as_ref().is_none_or(|f| f.matches(filter_input))
    }
}

#[derive(Default)]
pub struct RoutingCache {
    tenants: RwLock<HashMap<String, Arc<Vec<Route>>>>,
    /// Bumped by every invalidation: a load that started before one is not cached.
    epoch: AtomicU64,
}

impl RoutingCache {
    /// The destinations `event` goes to: `destination_id` alone if the event names one (when it
    /// is enabled and matches), else every enabled destination whose topics and filter match.
    pub async fn route(
        &self,
        store: &Store,
        event: &Event,
    ) -> Result<Vec<Arc<Destination>>, StoreError> {
        let routes = self.routes(store, &event.tenant_id).await?;
        let input = event.filter_input();
        Ok(routes
            .iter()
            .filter(|r| {
                event
                    .destination_id
                    .as_ref()
                    .is_none_or(|id| *id == r.destination.id)
            })
            .filter(|r| r.accepts(event, &input))
            .map(|r| r.destination.clone())
            .collect())
    }

    async fn routes(&self, store: &Store, tenant_id: &str) -> Result<Arc<Vec<Route>>, StoreError> {
        if let Some(routes) = self.tenants.read().expect("routing lock").get(tenant_id) {
            return Ok(routes.clone());
        }
        let epoch = self.epoch.load(Ordering::SeqCst);
        let destinations = store.list_enabled_destinations(tenant_id).await?;
        let routes: Vec<Route> = destinations
            .into_iter()
            .filter_map(|d| {
                let filter = match d.filter.as_ref().map(Filter::from_json) {
                    None => None,
                    Some(Ok(filter)) if filter.is_empty() => None,
                    Some(Ok(filter)) => Some(filter),
                    Some(Err(err)) => {
                        // The API validates filters; a stored invalid one matches nothing.
                        warn!(destination_id = %d.id, "stored filter is invalid, destination skipped: {err}");
                        return None;
                    }
                };
                Some(Route {
                    destination: Arc::new(d),
                    filter,
                })
            })
            .collect();
        let routes = Arc::new(routes);
        let mut tenants = self.tenants.write().expect("routing lock");
        if self.epoch.load(Ordering::SeqCst) == epoch {
            tenants.insert(tenant_id.to_owned(), routes.clone());
        }
        Ok(routes)
    }

    /// Forgets a tenant's routes (after a write to the tenant or one of its destinations).
    pub fn invalidate(&self, tenant_id: &str) {
        let mut tenants = self.tenants.write().expect("routing lock");
        self.epoch.fetch_add(1, Ordering::SeqCst);
        tenants.remove(tenant_id);
    }

    /// Forgets every tenant's routes (e.g. after the change feed reconnected and may have
    /// missed notifications).
    pub fn invalidate_all(&self) {
        let mut tenants = self.tenants.write().expect("routing lock");
        self.epoch.fetch_add(1, Ordering::SeqCst);
        tenants.clear();
    }
}
