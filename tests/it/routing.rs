//! The routing cache follows the store's change feed: a tenant or destination written through
//! the store (not the API) is routed by the next event, on SQLite and on Postgres, and on
//! Postgres a write made by another replica reaches this one's cache.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use jetpost::event::Event;
use jetpost::routing::{RoutingCache, follow_replicas};
use jetpost::store::{Credentials, NewDestination, Store};
use tokio_util::sync::CancellationToken;

use crate::support::db::TestDb;

const AES: &str = "routing-test-aes";

fn destination(tenant: &str, id: &str) -> NewDestination {
    NewDestination {
        tenant_id: tenant.into(),
        id: id.into(),
        kind: "webhook".into(),
        topics: vec!["*".into()],
        filter: None,
        config: BTreeMap::from([("url".into(), "http://127.0.0.1:9/hook".into())]),
        credentials: Credentials::default(),
        delivery_metadata: None,
        metadata: None,
    }
}

/// The ids of the destinations an event of `tenant` goes to.
async fn routed(cache: &RoutingCache, tenant: &str) -> Vec<String> {
    let raw = serde_json::json!({"tenant_id": tenant, "topic": "t", "data": {}}).to_string();
    let event = Event::parse(raw.as_bytes()).unwrap();
    let destinations = cache.route(&event).await.unwrap();
    destinations.iter().map(|d| d.id.clone()).collect()
}

/// Every write through `store` shows in the very next lookup: no invalidation by hand.
async fn writes_through_the_store_are_routed_at_once(store: Store) {
    let tenant = format!("t-{}", uuid::Uuid::new_v4().simple());
    let cache = RoutingCache::new(store.clone());
    store.upsert_tenant(&tenant, None).await.unwrap();
    assert!(routed(&cache, &tenant).await.is_empty());

    store
        .create_destination(&destination(&tenant, "d1"))
        .await
        .unwrap();
    assert_eq!(routed(&cache, &tenant).await, ["d1"]);
    // A clone of the handle announces to the same feed.
    let clone = store.clone();
    clone
        .create_destination(&destination(&tenant, "d2"))
        .await
        .unwrap();
    assert_eq!(routed(&cache, &tenant).await, ["d1", "d2"]);
    store.disable_destination(&tenant, "d1").await.unwrap();
    assert_eq!(routed(&cache, &tenant).await, ["d2"]);
    store.enable_destination(&tenant, "d1").await.unwrap();
    assert_eq!(routed(&cache, &tenant).await, ["d1", "d2"]);
    let mut narrowed = destination(&tenant, "d2");
    narrowed.topics = vec!["other".into()];
    store.update_destination(&narrowed).await.unwrap();
    assert_eq!(routed(&cache, &tenant).await, ["d1"]);
    store.delete_destination(&tenant, "d1").await.unwrap();
    assert!(routed(&cache, &tenant).await.is_empty());

    // A deleted tenant takes its destinations along.
    store
        .update_destination(&destination(&tenant, "d2"))
        .await
        .unwrap();
    assert_eq!(routed(&cache, &tenant).await, ["d2"]);
    store.delete_tenant(&tenant).await.unwrap();
    assert!(routed(&cache, &tenant).await.is_empty());
}

#[tokio::test]
async fn sqlite_writes_through_the_store_are_routed_at_once() {
    let db = TestDb::sqlite().await;
    writes_through_the_store_are_routed_at_once(db.store(Some(AES)).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_writes_through_the_store_are_routed_at_once() {
    let db = TestDb::postgres().await;
    writes_through_the_store_are_routed_at_once(db.store(Some(AES)).await).await;
}

/// A burst of one tenant's events on a cold cache reads its routes once: the others wait for
/// that load instead of each queueing a read of their own on the store's pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_on_a_cold_cache_loads_a_tenants_routes_once() {
    let db = TestDb::sqlite().await;
    let store = db.store(Some(AES)).await;
    let tenant = format!("t-{}", uuid::Uuid::new_v4().simple());
    store.upsert_tenant(&tenant, None).await.unwrap();
    store
        .create_destination(&destination(&tenant, "d1"))
        .await
        .unwrap();
    let cache = Arc::new(RoutingCache::new(store.clone()));
    let burst: Vec<_> = (0..200)
        .map(|_| {
            let (cache, tenant) = (cache.clone(), tenant.clone());
            tokio::spawn(async move { routed(&cache, &tenant).await })
        })
        .collect();
    for routed in burst {
        assert_eq!(routed.await.unwrap(), ["d1"]);
    }
    assert_eq!(cache.loads(), 1);
    // A write makes the next lookup load again, once.
    store.disable_destination(&tenant, "d1").await.unwrap();
    assert!(routed(&cache, &tenant).await.is_empty());
    assert_eq!(cache.loads(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_replicas_writes_reach_the_routing_cache() {
    let db = TestDb::postgres().await;
    let here = db.store(Some(AES)).await;
    // Its own pool and its own change feed: a replica as far as this process can tell.
    let replica = Store::connect(db.url(), Some(AES)).await.unwrap();
    let tenant = format!("t-{}", uuid::Uuid::new_v4().simple());
    here.upsert_tenant(&tenant, None).await.unwrap();
    here.create_destination(&destination(&tenant, "d1"))
        .await
        .unwrap();

    let cache = Arc::new(RoutingCache::new(here.clone()));
    let stop = CancellationToken::new();
    let follower = tokio::spawn(follow_replicas(cache.clone(), stop.clone()));
    assert_eq!(routed(&cache, &tenant).await, ["d1"]);

    // Written elsewhere: only the NOTIFY can tell this cache, which holds ["d1"] meanwhile.
    replica
        .create_destination(&destination(&tenant, "d2"))
        .await
        .unwrap();
    replica.disable_destination(&tenant, "d1").await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let now = routed(&cache, &tenant).await;
        if now == ["d2"] {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the other replica's writes never reached the cache: it still routes to {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    stop.cancel();
    follower.await.unwrap();
    replica.close().await;
    here.close().await;
}
