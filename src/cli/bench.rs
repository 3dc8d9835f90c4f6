//! `jetpost bench`: parses the options, runs `crate::bench::run` and prints the table.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};

use super::Failure;
use crate::bench::{BenchOptions, Scenario, Sizes, StoreChoice};
use crate::local_nats::BinaryLookup;

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// A ~1-minute smoke run with small counts instead of the full benchmark.
    #[arg(long)]
    quick: bool,
    /// Run only these scenarios (repeatable): limits, store, throughput, latency, fairness,
    /// slow-endpoint, accounts, destinations, publish, retention, replicas. Default: all.
    #[arg(long = "scenario", value_name = "NAME")]
    scenarios: Vec<Scenario>,
    /// The store jetpost runs on in the end-to-end scenarios.
    #[arg(long, value_enum, default_value_t = StoreArg::Sqlite)]
    store: StoreArg,
    /// Postgres admin URL: the benchmark creates a fresh schema in it (and drops it after).
    /// Also used by the store scenario's Postgres run.
    #[arg(
        long,
        value_name = "URL",
        default_value = "postgres://postgres@127.0.0.1:5432/test"
    )]
    postgres_url: String,
    /// Idle account counts of the accounts scenario, comma separated (default: 1000,10000;
    /// 200 with --quick).
    #[arg(long, value_name = "N,…", value_delimiter = ',')]
    accounts: Vec<usize>,
    /// Skip the store scenario's Postgres run (when no Postgres is at hand); the replicas
    /// scenario, which needs Postgres, then reports an error.
    #[arg(long)]
    no_postgres: bool,
    /// Also write the report as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Also write the latency chart (SVG) to this file.
    #[arg(long, value_name = "FILE")]
    svg: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum StoreArg {
    Sqlite,
    Postgres,
}

pub async fn run(args: BenchArgs) -> Result<ExitCode, Failure> {
    if args.store == StoreArg::Postgres && args.no_postgres {
        return Err(Failure::Usage(
            "--store postgres and --no-postgres contradict each other".into(),
        ));
    }
    crate::telemetry::init_logging(
        &std::env::var("JETPOST_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
        crate::config::LogFormat::Text,
    );
    let mut sizes = if args.quick {
        Sizes::quick()
    } else {
        Sizes::full()
    };
    if !args.accounts.is_empty() {
        sizes.idle_accounts = args.accounts;
    }
    let options = BenchOptions {
        sizes,
        mode: if args.quick { "quick" } else { "full" }.into(),
        scenarios: args.scenarios,
        store: match args.store {
            StoreArg::Sqlite => StoreChoice::Sqlite,
            StoreArg::Postgres => StoreChoice::Postgres(args.postgres_url.clone()),
        },
        postgres_url: (!args.no_postgres).then_some(args.postgres_url),
        nats: BinaryLookup::from_env(None),
        jetpost_exe: std::env::current_exe().ok(),
        json: args.json,
        svg: args.svg,
        progress: true,
    };
    // Ctrl-C drops the run, and with it every nats-server child and temporary store.
    let report = tokio::select! {
        report = crate::bench::run(options) => report?,
        _ = tokio::signal::ctrl_c() => {
            return Err(Failure::Runtime(anyhow::anyhow!("interrupted; nothing reported")));
        }
    };
    println!(
        "\njetpost bench ({} run, {} store) on {}, {:.0} s\n",
        report.mode,
        report.store,
        report.machine.summary(),
        report.duration_seconds
    );
    print!("{}", report.markdown());
    let (met, missed) = report.verdicts();
    println!("\ntargets met: {met}, missed: {missed}");
    Ok(ExitCode::SUCCESS)
}
