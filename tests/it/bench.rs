//! `jetpost bench` proves its harness: tiny scenarios through `bench::run` against a real
//! nats-server, store and receiver. Only that results come back is checked, never their speed.

use std::path::Path;

use jetpost::bench::{self, BenchOptions, Scenario, Sizes, StoreChoice};
use jetpost::local_nats::BinaryLookup;

fn options(scenarios: Vec<Scenario>, dir: &Path) -> BenchOptions {
    BenchOptions {
        sizes: Sizes::tiny(),
        mode: "tiny".into(),
        scenarios,
        store: StoreChoice::Sqlite,
        postgres_url: None,
        nats: BinaryLookup::from_env(Some(Path::new(env!("CARGO_MANIFEST_DIR")))),
        jetpost_exe: Some(env!("CARGO_BIN_EXE_jetpost").into()),
        json: Some(dir.join("bench.json")),
        svg: Some(dir.join("bench.svg")),
        progress: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tiny_run_measures_limits_store_ingest_and_throughput_and_writes_its_files() {
    let dir = tempfile::tempdir().unwrap();
    let scenarios = vec![Scenario::Limits, Scenario::Store, Scenario::Throughput];
    let report = bench::run(options(scenarios, dir.path())).await.unwrap();
    let failed: Vec<_> = report.rows.iter().filter(|r| r.value.is_none()).collect();
    assert!(failed.is_empty(), "rows without a value: {failed:#?}");
    let metrics: Vec<&str> = report.rows.iter().map(|r| r.scenario.as_str()).collect();
    assert_eq!(
        metrics,
        [
            "limits",
            "limits",
            "limits",
            "limits",
            "store",
            "throughput"
        ]
    );
    assert!(report.rows.iter().all(|r| r.value.unwrap() > 0.0));
    // The bridge delivered every event (a shortfall would be a note).
    assert!(
        report.rows[3].metric.starts_with("bridge"),
        "{:?}",
        report.rows[3]
    );
    assert!(report.rows[3].note.is_none(), "{:?}", report.rows[3]);
    // The store row is compared with the JetStream limit, the throughput row with the bridge of
    // the same tenant count, both measured in the same run.
    assert!(report.rows[4].percent_of_baseline.is_some());
    assert!(report.rows[5].percent_of_baseline.is_some());

    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("bench.json")).unwrap()).unwrap();
    assert_eq!(json["rows"].as_array().unwrap().len(), 6);
    assert!(json["machine"]["cpus"].as_u64().unwrap() >= 1);
    let svg = std::fs::read_to_string(dir.path().join("bench.svg")).unwrap();
    assert!(svg.starts_with("<svg"));
    assert!(
        report
            .markdown()
            .contains("| limits | JetStream pull + ack")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tiny_destinations_run_delivers_to_a_webhook_rabbitmq_sqs_and_kafka() {
    let dir = tempfile::tempdir().unwrap();
    let report = bench::run(options(vec![Scenario::Destinations], dir.path()))
        .await
        .unwrap();
    let metrics: Vec<&str> = report.rows.iter().map(|r| r.metric.as_str()).collect();
    assert_eq!(metrics.len(), 4, "{metrics:?}");
    for (row, kind) in report
        .rows
        .iter()
        .zip(["webhook", "rabbitmq", "aws_sqs", "kafka"])
    {
        assert!(row.metric.contains(kind), "{row:?}");
        assert!(
            row.value.is_some_and(|v| v > 0.0) && row.note.is_none(),
            "every event delivered to {kind}: {row:?}"
        );
    }
    // The broker rows are compared with the webhook run of the same report.
    assert!(report.rows[1].percent_of_baseline.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tiny_publish_run_delivers_what_the_http_api_took() {
    let dir = tempfile::tempdir().unwrap();
    let report = bench::run(options(vec![Scenario::Publish], dir.path()))
        .await
        .unwrap();
    assert_eq!(report.rows.len(), 2, "{:?}", report.rows);
    for row in &report.rows {
        assert_eq!(row.scenario, "publish");
        assert!(
            row.value.is_some_and(|v| v > 0.0) && row.note.is_none(),
            "every event published over HTTP delivered: {row:?}"
        );
    }
}

/// The retention scenario seeds an old log, runs the half load beside it kept and then while it
/// is purged, on both stores (the seeding is plain SQL per backend).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tiny_retention_run_purges_the_old_log_on_both_stores() {
    for store in [
        StoreChoice::Sqlite,
        StoreChoice::Postgres(crate::support::db::postgres_admin_url()),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut options = options(vec![Scenario::Retention], dir.path());
        options.store = store.clone();
        let report = bench::run(options).await.unwrap();
        // The throughput run whose half load it measures at comes first.
        let rows: Vec<_> = report
            .rows
            .iter()
            .filter(|r| r.scenario == "retention")
            .collect();
        let metrics: Vec<&str> = rows.iter().map(|r| r.metric.as_str()).collect();
        assert_eq!(
            metrics,
            [
                "publish → webhook p50 while the purge runs",
                "publish → webhook p99 while the purge runs"
            ],
            "{store}: {:#?}",
            report.rows
        );
        let p99 = rows[1];
        assert!(
            p99.value.is_some() && p99.percent_of_baseline.is_some(),
            "{store}: {p99:?}"
        );
        let note = p99.note.as_deref().unwrap_or_default();
        assert!(
            note.contains("old events purged") && !note.contains("; 0 of"),
            "{store}: the purge deleted some of the old log: {note}"
        );
    }
}

/// The replicas scenario runs `jetpost serve` replicas on Postgres: shared and exclusive
/// ownership, a kill and a join, and throughput on one and three replicas all give results.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tiny_replicas_run_measures_ownership_failover_and_throughput() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = options(vec![Scenario::Replicas], dir.path());
    options.postgres_url = Some(crate::support::db::postgres_admin_url());
    let report = bench::run(options).await.unwrap();
    let failed: Vec<_> = report
        .rows
        .iter()
        .filter(|r| r.value.is_none() || r.pass == Some(false))
        .collect();
    assert!(failed.is_empty(), "{failed:#?}");
    let value = |metric: &str| {
        report
            .rows
            .iter()
            .find(|r| r.metric.contains(metric))
            .and_then(|r| r.value)
            .unwrap_or_else(|| panic!("no row {metric:?}: {:#?}", report.rows))
    };
    let accounts = Sizes::tiny().replica_accounts as f64;
    assert_eq!(value("shared: nats-server connections"), 3.0 * accounts);
    assert_eq!(value("exclusive: nats-server connections"), accounts);
    assert_eq!(value("two jetpost connections at once"), 0.0);
}
