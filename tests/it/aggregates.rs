//! Conformance of the store's aggregate queries (`/metrics/events`, `/metrics/attempts`) and
//! of `set_destination_times`, on SQLite and Postgres alike.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicI64;
use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use jetpost::store::{
    AggregateQuery, AttemptAggregateFilter, AttemptAggregateQuery, AttemptDimension, AttemptGroup,
    AttemptStatus, BucketUnit, ClaimRequest, Credentials, DeliveryOutcome, DestinationTimes,
    EventAggregateFilter, EventAggregateQuery, EventDimension, EventGroup, Granularity, NewAttempt,
    NewDestination, NewEvent, Store,
};

use crate::support::db::TestDb;

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(crate::support::db::TestDb::sqlite().await).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(crate::support::db::TestDb::postgres().await).await;
                }
            )*
        }
    };
}

conformance!(
    events_are_counted_per_bucket_and_dimension,
    attempts_are_counted_per_bucket_and_dimension,
    destination_times_are_set_as_given,
);

static CLOCK: AtomicI64 = AtomicI64::new(0);

fn base() -> DateTime<Utc> {
    "2026-03-02T10:00:00Z".parse().unwrap()
}

fn minutes(n: i64) -> DateTime<Utc> {
    base() + TimeDelta::minutes(n)
}

fn webhook(tenant_id: &str, id: &str) -> NewDestination {
    NewDestination {
        tenant_id: tenant_id.into(),
        id: id.into(),
        kind: "webhook".into(),
        topics: vec!["*".into()],
        filter: None,
        config: BTreeMap::from([("url".into(), "https://example.test/".into())]),
        credentials: Credentials(BTreeMap::from([("secret".into(), "whsec_x".into())])),
        delivery_metadata: None,
        metadata: None,
    }
}

fn event(tenant_id: &str, id: &str, topic: &str, at: DateTime<Utc>, to: &[&str]) -> NewEvent {
    NewEvent {
        tenant_id: tenant_id.into(),
        id: id.into(),
        destination_id: None,
        topic: topic.into(),
        time: at,
        metadata: None,
        data: "{}".into(),
        eligible_for_retry: true,
        destination_ids: to.iter().map(|d| d.to_string()).collect(),
        lease: None,
    }
}

/// Tenants t1 (d1, d2) and t2 (d3); events e1..e4, e4 after the queried range.
async fn seeded(db: &TestDb) -> Store {
    let store = db.store(Some("aes")).await;
    for (tenant, destinations) in [("t1", &["d1", "d2"][..]), ("t2", &["d3"][..])] {
        store.upsert_tenant(tenant, None).await.unwrap();
        for d in destinations {
            store.create_destination(&webhook(tenant, d)).await.unwrap();
        }
    }
    store
        .insert_events(&[
            event("t1", "e1", "a", minutes(5), &["d1", "d2"]),
            event("t1", "e2", "b", minutes(65), &["d1"]),
            event("t2", "e3", "a", minutes(70), &["d3"]),
            event("t1", "e4", "a", minutes(180), &["d1"]),
        ])
        .await
        .unwrap();
    store
}

fn erange(dimensions: Vec<EventDimension>) -> EventAggregateQuery {
    range(dimensions)
}

fn arange(dimensions: Vec<AttemptDimension>) -> AttemptAggregateQuery {
    range(dimensions)
}

fn range<D, F: Default>(dimensions: Vec<D>) -> AggregateQuery<D, F> {
    AggregateQuery {
        start: base(),
        end: minutes(120),
        granularity: None,
        dimensions,
        filter: F::default(),
        row_limit: 1000,
    }
}

fn hourly() -> Option<Granularity> {
    Some(Granularity {
        value: 1,
        unit: BucketUnit::Hour,
    })
}

async fn events_are_counted_per_bucket_and_dimension(db: TestDb) {
    let store = seeded(&db).await;

    let all = store.aggregate_events(&erange(vec![])).await.unwrap();
    assert_eq!(all.groups.len(), 1);
    assert_eq!(all.groups[0].count, 3);
    assert!(!all.truncated);

    let mut q = erange(vec![]);
    q.granularity = hourly();
    let by_hour = store.aggregate_events(&q).await.unwrap();
    let g = hourly().unwrap();
    let counts: Vec<(DateTime<Utc>, u64)> = by_hour
        .groups
        .iter()
        .map(|x| (g.bucket_start(x.bucket.unwrap()).unwrap(), x.count))
        .collect();
    assert_eq!(counts, vec![(base(), 1), (minutes(60), 2)]);

    let by_tenant = store
        .aggregate_events(&erange(vec![EventDimension::TenantId]))
        .await
        .unwrap();
    assert_eq!(
        pairs(&by_tenant.groups, |x: &EventGroup| x.tenant_id.clone()),
        vec![("t1".into(), 2), ("t2".into(), 1)]
    );

    // Grouped by destination, an event counts once per destination it was routed to.
    let by_destination = store
        .aggregate_events(&erange(vec![EventDimension::DestinationId]))
        .await
        .unwrap();
    assert_eq!(
        pairs(&by_destination.groups, |x: &EventGroup| x
            .destination_id
            .clone()),
        vec![("d1".into(), 2), ("d2".into(), 1), ("d3".into(), 1)]
    );

    let mut q = erange(vec![]);
    q.filter = EventAggregateFilter {
        destination_ids: vec!["d2".into()],
        ..Default::default()
    };
    assert_eq!(store.aggregate_events(&q).await.unwrap().groups[0].count, 1);

    let mut q = erange(vec![EventDimension::TenantId, EventDimension::Topic]);
    q.filter.topics = vec!["a".into()];
    let by_tenant_topic = store.aggregate_events(&q).await.unwrap();
    let rows: Vec<_> = by_tenant_topic
        .groups
        .iter()
        .map(|x| {
            (
                x.tenant_id.clone().unwrap(),
                x.topic.clone().unwrap(),
                x.count,
            )
        })
        .collect();
    assert_eq!(
        rows,
        vec![("t1".into(), "a".into(), 1), ("t2".into(), "a".into(), 1)]
    );

    let mut q = erange(vec![EventDimension::TenantId]);
    q.row_limit = 1;
    let limited = store.aggregate_events(&q).await.unwrap();
    assert_eq!(limited.groups.len(), 1);
    assert!(limited.truncated);

    // Nothing in range: no groups rather than a zero row.
    let mut q = erange(vec![]);
    q.start = minutes(300);
    q.end = minutes(400);
    assert!(store.aggregate_events(&q).await.unwrap().groups.is_empty());

    let mut q = erange(vec![]);
    q.end = q.start;
    assert!(store.aggregate_events(&q).await.is_err());
}

fn pairs<G>(groups: &[G], key: impl Fn(&G) -> Option<String>) -> Vec<(String, u64)>
where
    G: HasCount,
{
    groups
        .iter()
        .map(|g| (key(g).unwrap_or_default(), g.count()))
        .collect()
}

trait HasCount {
    fn count(&self) -> u64;
}

impl HasCount for EventGroup {
    fn count(&self) -> u64 {
        self.count
    }
}

impl HasCount for AttemptGroup {
    fn count(&self) -> u64 {
        self.count
    }
}

/// Completes the delivery of `event` to `destination` with one attempt at `at`. Claims with a
/// 1 ms lease at a later clock each call, so what it claims but leaves is due again next call.
#[allow(clippy::too_many_arguments)]
async fn attempt(
    store: &Store,
    event: &str,
    destination: &str,
    id: &str,
    status: AttemptStatus,
    code: &str,
    at: DateTime<Utc>,
    outcome: DeliveryOutcome,
) {
    let claimed = store
        .claim_due(&ClaimRequest {
            owner: "w",
            now: Utc::now() + TimeDelta::days(1) + TimeDelta::hours(CLOCK.fetch_add(1, SeqCst)),
            limit: 100,
            per_destination: 100,
            lease: Duration::from_millis(1),
        })
        .await
        .unwrap();
    let mut done = false;
    for c in &claimed {
        let mine = c.event.id == event && c.destination.id == destination;
        let (attempt, outcome) = if mine {
            done = true;
            (
                NewAttempt {
                    id: id.into(),
                    status,
                    code: code.into(),
                    response_data: None,
                    time: at,
                },
                outcome,
            )
        } else {
            continue;
        };
        assert!(
            store
                .complete_attempt(&c.lease, &attempt, outcome)
                .await
                .unwrap()
        );
    }
    assert!(done, "{event} → {destination} was not due");
}

async fn attempts_are_counted_per_bucket_and_dimension(db: TestDb) {
    let store = seeded(&db).await;
    let soon = Utc::now();
    attempt(
        &store,
        "e1",
        "d1",
        "a1",
        AttemptStatus::Success,
        "200",
        minutes(10),
        DeliveryOutcome::Success,
    )
    .await;
    attempt(
        &store,
        "e1",
        "d2",
        "a2",
        AttemptStatus::Failed,
        "500",
        minutes(10),
        DeliveryOutcome::RetryAt(soon),
    )
    .await;
    attempt(
        &store,
        "e1",
        "d2",
        "a3",
        AttemptStatus::Success,
        "200",
        minutes(20),
        DeliveryOutcome::Success,
    )
    .await;
    attempt(
        &store,
        "e2",
        "d1",
        "a4",
        AttemptStatus::Failed,
        "timeout",
        minutes(70),
        DeliveryOutcome::Failed,
    )
    .await;
    attempt(
        &store,
        "e3",
        "d3",
        "a5",
        AttemptStatus::Success,
        "200",
        minutes(71),
        DeliveryOutcome::Success,
    )
    .await;
    attempt(
        &store,
        "e4",
        "d1",
        "a6",
        AttemptStatus::Success,
        "200",
        minutes(190),
        DeliveryOutcome::Success,
    )
    .await;

    let all = store.aggregate_attempts(&arange(vec![])).await.unwrap();
    assert_eq!(all.groups.len(), 1);
    let g = &all.groups[0];
    assert_eq!(
        (
            g.count,
            g.successful,
            g.failed,
            g.first_attempts,
            g.retries,
            g.manual_retries
        ),
        (5, 3, 2, 4, 1, 0)
    );
    assert_eq!(g.attempt_number_sum, 6);

    let by_status = store
        .aggregate_attempts(&arange(vec![AttemptDimension::Status]))
        .await
        .unwrap();
    assert_eq!(
        pairs(&by_status.groups, |x: &AttemptGroup| x.status.clone()),
        vec![("failed".into(), 2), ("success".into(), 3)]
    );

    let by_type_topic = store
        .aggregate_attempts(&arange(vec![
            AttemptDimension::DestinationType,
            AttemptDimension::Topic,
        ]))
        .await
        .unwrap();
    let rows: Vec<_> = by_type_topic
        .groups
        .iter()
        .map(|x| {
            (
                x.destination_type.clone().unwrap(),
                x.topic.clone().unwrap(),
                x.count,
            )
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            ("webhook".into(), "a".into(), 4),
            ("webhook".into(), "b".into(), 1)
        ]
    );

    let by_manual_number = store
        .aggregate_attempts(&arange(vec![
            AttemptDimension::Manual,
            AttemptDimension::AttemptNumber,
        ]))
        .await
        .unwrap();
    let rows: Vec<_> = by_manual_number
        .groups
        .iter()
        .map(|x| (x.manual.unwrap(), x.attempt_number.unwrap(), x.count))
        .collect();
    assert_eq!(rows, vec![(false, 1, 4), (false, 2, 1)]);

    let mut q = arange(vec![]);
    q.filter = AttemptAggregateFilter {
        manual: Some(true),
        ..Default::default()
    };
    assert!(
        store
            .aggregate_attempts(&q)
            .await
            .unwrap()
            .groups
            .is_empty()
    );

    let mut q = arange(vec![]);
    q.filter.attempt_numbers = vec![2];
    q.filter.destination_kinds = vec!["webhook".into()];
    assert_eq!(
        store.aggregate_attempts(&q).await.unwrap().groups[0].count,
        1
    );

    let mut q = arange(vec![AttemptDimension::Code]);
    q.filter.tenant_ids = vec!["t1".into()];
    q.filter.topics = vec!["a".into()];
    let by_code = store.aggregate_attempts(&q).await.unwrap();
    assert_eq!(
        pairs(&by_code.groups, |x: &AttemptGroup| x.code.clone()),
        vec![("200".into(), 2), ("500".into(), 1)]
    );

    let mut q = arange(vec![AttemptDimension::DestinationId]);
    q.granularity = hourly();
    q.filter.statuses = vec!["success".into()];
    let hourly_by_destination = store.aggregate_attempts(&q).await.unwrap();
    let h = hourly().unwrap();
    let rows: Vec<_> = hourly_by_destination
        .groups
        .iter()
        .map(|x| {
            (
                x.destination_id.clone().unwrap(),
                h.bucket_start(x.bucket.unwrap()).unwrap(),
                x.count,
            )
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            ("d1".into(), base(), 1),
            ("d2".into(), base(), 1),
            ("d3".into(), minutes(60), 1)
        ]
    );

    let mut q = arange(vec![]);
    q.granularity = Some(Granularity {
        value: 1,
        unit: BucketUnit::Month,
    });
    let monthly = store.aggregate_attempts(&q).await.unwrap();
    let m = q.granularity.unwrap();
    assert_eq!(monthly.groups.len(), 1);
    assert_eq!(
        m.bucket_start(monthly.groups[0].bucket.unwrap()),
        Some("2026-03-01T00:00:00Z".parse().unwrap())
    );
}

async fn destination_times_are_set_as_given(db: TestDb) {
    let store = db.store(Some("aes")).await;
    store.upsert_tenant("t1", None).await.unwrap();
    store
        .create_destination(&webhook("t1", "d1"))
        .await
        .unwrap();
    let created: DateTime<Utc> = "2024-02-15T10:00:00Z".parse().unwrap();
    let updated: DateTime<Utc> = "2024-02-16T10:00:00Z".parse().unwrap();
    let d = store
        .set_destination_times(
            "t1",
            "d1",
            &DestinationTimes {
                created_at: Some(created),
                updated_at: Some(updated),
                disabled_at: Some(updated),
            },
        )
        .await
        .unwrap();
    assert_eq!((d.created_at, d.updated_at), (created, updated));
    // Still enabled: disabled_at moves only on a disabled destination.
    assert_eq!(d.disabled_at, None);
    assert_eq!(d.credentials.0["secret"], "whsec_x");

    store.disable_destination("t1", "d1").await.unwrap();
    let d = store
        .set_destination_times(
            "t1",
            "d1",
            &DestinationTimes {
                disabled_at: Some(updated),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(d.disabled_at, Some(updated));
    assert_eq!(d.created_at, created);
    let read = store.get_destination("t1", "d1").await.unwrap().unwrap();
    assert_eq!(read.disabled_at, Some(updated));

    let missing = store
        .set_destination_times("t1", "nope", &DestinationTimes::default())
        .await
        .unwrap_err();
    assert_eq!(missing.kind(), jetpost::store::ErrorKind::NotFound);
}
