//! The routing cache: which of a tenant's enabled destinations an event goes to. Loaded from
//! the store on demand per tenant and dropped on every tenant or destination write, so the hot
//! path reads memory only. This process's writes are taken from the store's local feed before
//! each lookup (a write is seen by the next event); other replicas' arrive through `feed`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use tracing::warn;

use crate::event::{Document, Event, Filter, topics_match};
use crate::store::{Destination, LocalFeed, RoutingChange, Store, StoreError};

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

/// The routes of the tenants seen lately, on one store.
pub struct RoutingCache {
    store: Store,
    tenants: RwLock<HashMap<String, Arc<Vec<Route>>>>,
    /// Bumped by every invalidation: a load that started before one is not cached.
    epoch: AtomicU64,
    /// This process's writes to the store, with the feed's generation last taken up to.
    local: Mutex<LocalFeed>,
    taken: AtomicU64,
    /// One gate per tenant: a tenant's routes are loaded by one caller at a time, and the
    /// callers queued behind it take what it cached (a burst of a tenant's events at start
    /// would otherwise load the same routes once per event, queueing on the store's pool).
    loading: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    loads: AtomicU64,
}

impl RoutingCache {
    /// An empty cache on `store`, following the writes made through it (and its clones).
    pub fn new(store: Store) -> RoutingCache {
        let local = store.local_changes();
        RoutingCache {
            taken: AtomicU64::new(store.local_generation()),
            local: Mutex::new(local),
            store,
            tenants: RwLock::default(),
            epoch: AtomicU64::new(0),
            loading: Mutex::default(),
            loads: AtomicU64::new(0),
        }
    }

    /// How many times routes were read from the store.
    pub fn loads(&self) -> u64 {
        self.loads.load(Ordering::Relaxed)
    }

    /// The store routes are loaded from.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The destinations `event` goes to: `destination_id` alone if the event names one (when it
    /// is enabled and matches), else every enabled destination whose topics and filter match.
    pub async fn route(&self, event: &Event) -> Result<Vec<Arc<Destination>>, StoreError> {
        let routes = self.routes(&event.tenant_id).await?;
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

    async fn routes(&self, tenant_id: &str) -> Result<Arc<Vec<Route>>, StoreError> {
        self.take_local_changes();
        if let Some(routes) = self.cached(tenant_id) {
            return Ok(routes);
        }
        let gate = self
            .loading
            .lock()
            .expect("routing gates lock")
            .entry(tenant_id.to_owned())
            .or_default()
            .clone();
        let routes = {
            let _loading = gate.lock().await;
            match self.cached(tenant_id) {
                Some(routes) => Ok(routes),
                None => self.load(tenant_id).await,
            }
        };
        // The last caller through the gate takes it away, so gates don't outlive a burst.
        let mut gates = self.loading.lock().expect("routing gates lock");
        if Arc::strong_count(&gate) == 2 {
            gates.remove(tenant_id);
        }
        routes
    }

    /// Reads the tenant's routes from the store and caches them, unless an invalidation came
    /// meanwhile.
    async fn load(&self, tenant_id: &str) -> Result<Arc<Vec<Route>>, StoreError> {
        let epoch = self.epoch.load(Ordering::SeqCst);
        self.loads.fetch_add(1, Ordering::Relaxed);
        let destinations = self.store.list_enabled_destinations(tenant_id).await?;
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

    fn cached(&self, tenant_id: &str) -> Option<Arc<Vec<Route>>> {
        self.tenants
            .read()
            .expect("routing lock")
            .get(tenant_id)
            .cloned()
    }

    /// Applies the writes this process made since the last look (one atomic load when none).
    fn take_local_changes(&self) {
        // Read before taking: a change announced meanwhile moves the generation again, so
        // the next look takes it.
        let generation = self.store.local_generation();
        if generation == self.taken.load(Ordering::SeqCst) {
            return;
        }
        let mut local = self.local.lock().expect("routing feed lock");
        while let Some(change) = local.take() {
            self.apply(change);
        }
        self.taken.store(generation, Ordering::SeqCst);
    }

    /// Forgets what `change` made stale.
    pub fn apply(&self, change: RoutingChange) {
        match change {
            RoutingChange::Tenant(tenant_id) => self.invalidate(&tenant_id),
            RoutingChange::Resync => self.invalidate_all(),
        }
    }

    /// Forgets a tenant's routes (after a write to the tenant or one of its destinations).
    pub fn invalidate(&self, tenant_id: &str) {
        let mut tenants = self.tenants.write().expect("routing lock");
        self.epoch.fetch_add(1, Ordering::SeqCst);
        tenants.remove(tenant_id);
    }

    /// Forgets every tenant's routes (e.g. after the change feed reconnected or lagged and may
    /// have missed changes).
    pub fn invalidate_all(&self) {
        let mut tenants = self.tenants.write().expect("routing lock");
        self.epoch.fetch_add(1, Ordering::SeqCst);
        tenants.clear();
    }
}
