//! `jetpost bench`: measures jetpost against this machine's limits. Starts everything itself
//! (nats-server in operator mode, jetpost in-process on a fresh store, a fast webhook
//! receiver), runs the chosen scenarios and reports each metric beside its limit and target.

pub mod accounts;
pub mod bridge;
pub mod chart;
pub mod db;
pub mod destinations;
pub mod flow;
pub mod limits;
pub mod procstat;
pub mod publish;
pub mod receiver;
pub mod replicas;
pub mod report;
pub mod rig;
pub mod scenarios;
pub mod store_ingest;
pub mod tally;
pub mod tansu;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;

pub use db::StoreChoice;
pub use report::{LatencySeries, Machine, Report, Row};
pub use scenarios::Scenario;

use crate::local_nats::BinaryLookup;

/// How many events, accounts and seconds each scenario uses.
#[derive(Debug, Clone)]
pub struct Sizes {
    /// Messages for the JetStream limit and requests for the HTTP limit.
    pub limit_messages: u64,
    /// Events per end-to-end throughput run.
    pub throughput_events: u64,
    /// Tenant counts of the throughput runs.
    pub tenant_counts: Vec<usize>,
    /// Tenants publishing in the latency run.
    pub latency_tenants: usize,
    pub latency_duration: Duration,
    /// Tenant A's backlog in the fairness run.
    pub fairness_backlog: u64,
    /// Tenant B's rate in the fairness run.
    pub fairness_rate: f64,
    pub fairness_duration: Duration,
    /// Fast tenants and their events in the slow-endpoint run.
    pub isolation_tenants: usize,
    pub isolation_events: u64,
    pub slow_delay: Duration,
    /// Idle account counts of the accounts-at-scale runs.
    pub idle_accounts: Vec<usize>,
    /// Accounts added one at a time after the idle ones.
    pub added_accounts: usize,
    pub idle_window: Duration,
    /// Events and concurrent callers of the store ingest runs.
    pub store_events: u64,
    pub store_tasks: usize,
    /// Events of each run of the destinations scenario (one tenant, one destination).
    pub destination_events: u64,
    /// Events of each run of the HTTP publish scenario.
    pub publish_events: u64,
    /// Old finished events the retention scenario purges.
    pub retention_old_events: u64,
    /// Idle accounts three replicas share in the replicas scenario's cost runs.
    pub replica_accounts: usize,
    /// Accounts of the replicas scenario's failover run, and how many replicas it kills.
    pub failover_accounts: usize,
    pub failover_kills: usize,
    /// Tenants and events of the replicas scenario's throughput runs (1 and 3 replicas).
    pub replica_tenants: usize,
    pub replica_events: u64,
}

impl Sizes {
    /// The full benchmark (tens of minutes on 2 cores).
    pub fn full() -> Sizes {
        Sizes {
            limit_messages: 200_000,
            throughput_events: 100_000,
            tenant_counts: vec![1, 10, 100],
            latency_tenants: 10,
            latency_duration: Duration::from_secs(30),
            fairness_backlog: 200_000,
            fairness_rate: 50.0,
            fairness_duration: Duration::from_secs(20),
            isolation_tenants: 10,
            isolation_events: 50_000,
            slow_delay: Duration::from_secs(2),
            idle_accounts: vec![1_000, 10_000],
            added_accounts: 50,
            idle_window: Duration::from_secs(30),
            store_events: 100_000,
            store_tasks: 512,
            destination_events: 20_000,
            publish_events: 50_000,
            retention_old_events: 1_000_000,
            replica_accounts: 1_000,
            failover_accounts: 1_000,
            failover_kills: 10,
            replica_tenants: 100,
            replica_events: 20_000,
        }
    }

    /// About a minute: the same scenarios with small counts.
    pub fn quick() -> Sizes {
        Sizes {
            limit_messages: 20_000,
            throughput_events: 10_000,
            tenant_counts: vec![1, 10, 100],
            latency_tenants: 10,
            latency_duration: Duration::from_secs(5),
            fairness_backlog: 20_000,
            fairness_rate: 50.0,
            fairness_duration: Duration::from_secs(5),
            isolation_tenants: 5,
            isolation_events: 5_000,
            slow_delay: Duration::from_secs(2),
            idle_accounts: vec![200],
            added_accounts: 10,
            idle_window: Duration::from_secs(5),
            store_events: 10_000,
            store_tasks: 256,
            destination_events: 5_000,
            publish_events: 5_000,
            retention_old_events: 100_000,
            replica_accounts: 50,
            failover_accounts: 30,
            failover_kills: 2,
            replica_tenants: 100,
            replica_events: 2_000,
        }
    }

    /// Minimal counts that only prove the harness works (tests).
    pub fn tiny() -> Sizes {
        Sizes {
            limit_messages: 300,
            throughput_events: 200,
            tenant_counts: vec![2],
            latency_tenants: 2,
            latency_duration: Duration::from_secs(1),
            fairness_backlog: 200,
            fairness_rate: 20.0,
            fairness_duration: Duration::from_secs(1),
            isolation_tenants: 2,
            isolation_events: 100,
            slow_delay: Duration::from_millis(200),
            idle_accounts: vec![5],
            added_accounts: 2,
            idle_window: Duration::from_secs(1),
            store_events: 200,
            store_tasks: 16,
            destination_events: 100,
            publish_events: 200,
            retention_old_events: 1_000,
            replica_accounts: 6,
            failover_accounts: 6,
            failover_kills: 1,
            replica_tenants: 3,
            replica_events: 100,
        }
    }
}

/// What `jetpost bench` runs.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub sizes: Sizes,
    /// `quick` or `full` (or anything describing `sizes`), for the report.
    pub mode: String,
    /// Scenarios in the order given; empty means all.
    pub scenarios: Vec<Scenario>,
    /// The store jetpost runs on in the end-to-end scenarios.
    pub store: StoreChoice,
    /// Postgres admin URL for the store scenario's Postgres run (`None`: SQLite only).
    pub postgres_url: Option<String>,
    pub nats: BinaryLookup,
    /// The jetpost executable, run as `jetpost serve` by the accounts scenario (the CLI passes
    /// its own); `None` makes that scenario report an error.
    pub jetpost_exe: Option<PathBuf>,
    /// Write the report as JSON here.
    pub json: Option<PathBuf>,
    /// Write the latency chart here.
    pub svg: Option<PathBuf>,
    /// Print progress lines to stderr.
    pub progress: bool,
}

/// Runs the scenarios and returns the report; writes the JSON and SVG files if asked.
pub async fn run(options: BenchOptions) -> anyhow::Result<Report> {
    let nats_binary = options
        .nats
        .find()
        .await
        .context("jetpost bench starts its own nats-server")?;
    let env = rig::BenchEnv {
        nats_binary,
        store: options.store.clone(),
        jetpost_exe: options.jetpost_exe.clone(),
    };
    let started = Instant::now();
    let started_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let scenarios = if options.scenarios.is_empty() {
        Scenario::ALL.to_vec()
    } else {
        options.scenarios.clone()
    };
    // The replicas scenario always runs on Postgres (replicas cannot share SQLite), whatever
    // `--store` chose for the others.
    let store = if scenarios.iter().all(|s| *s == Scenario::Replicas) {
        "postgres".to_owned()
    } else {
        options.store.to_string()
    };
    let mut run = scenarios::Run::new(env.clone(), options.sizes.clone(), options.progress);
    for scenario in scenarios {
        run.scenario(scenario, options.postgres_url.as_deref())
            .await;
    }
    let (rows, latencies) = run.finish();
    let report = Report {
        machine: Machine::describe(&env.nats_binary.version),
        mode: options.mode.clone(),
        store,
        started_at,
        duration_seconds: started.elapsed().as_secs_f64(),
        rows,
        latencies,
    };
    if let Some(path) = &options.json {
        let json = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &options.svg {
        let title = format!(
            "jetpost publish → webhook latency ({} run, {} store)",
            report.mode, report.store
        );
        std::fs::write(path, chart::latency_svg(&title, &report.latencies))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(report)
}

/// An HTTP client like jetpost's webhook client (rustls with ring, keep-alive, no proxy).
pub fn http_client() -> anyhow::Result<reqwest::Client> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .build()
        .context("building the benchmark's HTTP client")
}
