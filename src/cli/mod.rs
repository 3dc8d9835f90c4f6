//! The `jetpost` command line: argument definitions and dispatch to the library.
//! Exit codes: 0 success, 1 runtime error, 2 usage or configuration error.

mod bench;
mod dev;
mod filter_check;
mod nats;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::app::Migrations;
use crate::config::Config;
/// How a command ended, mapped to the process exit code.
#[derive(Debug)]
pub enum Failure {
    /// A runtime error (exit 1).
    Runtime(anyhow::Error),
    /// A usage or configuration error (exit 2).
    Usage(String),
}

impl From<anyhow::Error> for Failure {
    fn from(err: anyhow::Error) -> Self {
        Failure::Runtime(err)
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "jetpost",
    version,
    about = "Delivers events from multi-tenant NATS JetStream to webhooks (Outpost-compatible API)",
    long_about = "jetpost takes events from NATS JetStream, where each tenant usually has its own NATS \
account, commits them to its store (SQLite or PostgreSQL) and delivers them to the tenants' webhooks \
with signatures and durable retries. Its /api/v1 follows Hookdeck Outpost's API."
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the service: NATS sources, ingest, delivery, retention and the HTTP API.
    ///
    /// Configured by the YAML file and environment variables listed in docs/configuration.md;
    /// for example LOG_RETENTION_TTL_DAYS (log_retention_ttl_days) deletes events older than
    /// that many days once all their deliveries are finished (default 0 = keep forever).
    Serve(ServeArgs),
    /// One-command local sandbox: nats-server in operator mode, demo tenants, a demo receiver.
    Dev,
    /// Apply the store's migrations and exit.
    Migrate(ConfigArg),
    /// Operator helpers for NATS: declare streams and consumers, publish events, aggregate mode.
    #[command(subcommand)]
    Nats(NatsCommand),
    /// Accounts directory tools.
    #[command(subcommand)]
    Accounts(AccountsCommand),
    /// Destination filter tools.
    #[command(subcommand)]
    Filter(FilterCommand),
    /// Measure jetpost against this machine's limits (starts its own nats-server and receiver).
    Bench(bench::BenchArgs),
}

#[derive(Debug, Args)]
struct ConfigArg {
    /// YAML config file (default: $CONFIG, else ./jetpost.yaml if it exists). Environment
    /// variables override the file.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct ServeArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Refuse to start when the store has unapplied migrations instead of applying them.
    #[arg(long)]
    no_migrate: bool,
}

#[derive(Debug, Args)]
struct Connection {
    /// NATS server URL(s), comma separated (user:password@ or token@ in the URL also work).
    #[arg(long, value_name = "URL")]
    server: String,
    /// NATS credentials file (.creds) of the user to connect as.
    #[arg(long, value_name = "FILE")]
    creds: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum NatsCommand {
    /// Create (or check) a work-queue file stream and a durable pull consumer with explicit ack.
    Declare {
        #[command(flatten)]
        connection: Connection,
        /// Stream name.
        #[arg(long)]
        stream: String,
        /// Subjects of the stream, comma separated (e.g. `events.>`).
        #[arg(long, value_delimiter = ',', required = true)]
        subjects: Vec<String>,
        /// Durable pull consumer name.
        #[arg(long)]
        consumer: String,
        /// How often a message is delivered before the server gives up on it.
        #[arg(long, value_name = "N")]
        max_deliver: Option<i64>,
        /// How long the server waits for an ack before redelivering (humantime, e.g. `30s`).
        #[arg(long, value_name = "DURATION", default_value = "30s")]
        ack_wait: humantime::Duration,
    },
    /// Publish events to a subject and wait for JetStream's acks.
    Publish {
        #[command(flatten)]
        connection: Connection,
        /// Subject to publish to.
        #[arg(long)]
        subject: String,
        /// How many messages to publish.
        #[arg(long, default_value_t = 1)]
        count: u64,
        /// Messages per second at most (default: as fast as acks allow).
        #[arg(long, value_name = "PER_SEC")]
        rate: Option<u64>,
        /// The event JSON.
        #[arg(long, group = "body")]
        data: Option<String>,
        /// Read the event JSON from a file.
        #[arg(long, group = "body", value_name = "FILE")]
        file: Option<PathBuf>,
        /// Read the event JSON from standard input (write `-`).
        #[arg(group = "body", value_name = "-")]
        stdin: Option<String>,
    },
    /// Aggregate mode: add or remove a tenant account's stream as a source of the aggregate stream.
    #[command(subcommand)]
    Aggregate(AggregateCommand),
}

#[derive(Debug, Subcommand)]
enum AggregateCommand {
    /// Source a tenant's stream into the aggregate stream, prefixing subjects with the tenant.
    AddTenant(AggregateTenant),
    /// Stop sourcing a tenant's stream into the aggregate stream.
    RemoveTenant(AggregateTenant),
}

#[derive(Debug, Args)]
struct AggregateTenant {
    #[command(flatten)]
    connection: Connection,
    /// The aggregate stream, in the central account the connection belongs to (created with
    /// limits retention on the first add-tenant).
    #[arg(long)]
    stream: String,
    /// Tenant id: its messages land under `<subject-prefix>.<original subject>`.
    #[arg(long)]
    tenant: String,
    /// The tenant's stream in its own account.
    #[arg(long, default_value = "EVENTS")]
    source_stream: String,
    /// The tenant stream's subjects to source.
    #[arg(long, default_value = "events.>")]
    filter: String,
    /// Where the central account reaches the tenant's JetStream API (its import of the tenant's
    /// `$JS.API.>` export); `{tenant}` is replaced.
    #[arg(long, default_value = "JS.{tenant}.API")]
    api_prefix: String,
    /// The delivery prefix the central account imports from the tenant; `{tenant}` is replaced.
    #[arg(long, default_value = "deliver.{tenant}")]
    deliver_prefix: String,
    /// Prefix of the subjects in the aggregate stream; must put the tenant at the `{tenant_id}`
    /// token of the service's `tenant_subject`. `{tenant}` is replaced.
    #[arg(long, default_value = "tenant.{tenant}")]
    subject_prefix: String,
}

impl AggregateTenant {
    fn source(&self) -> crate::source::nats::topology::TenantSource {
        let fill = |template: &str| template.replace("{tenant}", &self.tenant);
        crate::source::nats::topology::TenantSource {
            tenant: self.tenant.clone(),
            stream: self.source_stream.clone(),
            filter: self.filter.clone(),
            api_prefix: fill(&self.api_prefix),
            deliver_prefix: fill(&self.deliver_prefix),
            subject_prefix: fill(&self.subject_prefix),
        }
    }
}

#[derive(Debug, Subcommand)]
enum AccountsCommand {
    /// Load an accounts directory exactly as `serve` would and print what it holds.
    Check {
        /// The accounts directory.
        dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum FilterCommand {
    /// Evaluate a destination filter against an event: prints `match` (exit 0) or `no match`
    /// (exit 1); exit 2 when the filter or the event is invalid.
    Check {
        /// The filter JSON, e.g. `{"data":{"amount":{"$gte":100}}}`.
        #[arg(long)]
        filter: String,
        /// The event JSON, e.g. `{"topic":"order.paid","data":{"amount":120}}`.
        #[arg(long)]
        event: String,
    },
}

/// Parses the command line and runs the command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(Failure::Usage(message)) => {
            eprintln!("jetpost: {message}");
            ExitCode::from(2)
        }
        Err(Failure::Runtime(err)) => {
            eprintln!("jetpost: {err:#}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode, Failure> {
    match cli.command {
        Command::Filter(FilterCommand::Check { filter, event }) => {
            filter_check::run(&filter, &event)
        }
        Command::Accounts(AccountsCommand::Check { dir }) => Ok(nats::check_accounts(&dir)?),
        Command::Nats(command) => block_on(run_nats(command)),
        Command::Serve(args) => {
            let config = load_config(&args.config)?;
            let migrations = if args.no_migrate {
                Migrations::Require
            } else {
                Migrations::Apply
            };
            block_on(serve(config, migrations))
        }
        Command::Migrate(args) => {
            let config = load_config(&args)?;
            block_on(migrate(config))
        }
        Command::Bench(args) => block_on(bench::run(args)),
        Command::Dev => block_on(async {
            dev::run()
                .await
                .map(|()| ExitCode::SUCCESS)
                .map_err(Failure::Runtime)
        }),
    }
}

async fn run_nats(command: NatsCommand) -> Result<ExitCode, Failure> {
    match command {
        NatsCommand::Declare {
            connection,
            stream,
            subjects,
            consumer,
            max_deliver,
            ack_wait,
        } => {
            let client = nats::connect(&connection.server, connection.creds.as_deref()).await?;
            let declaration = crate::source::nats::topology::Declaration {
                stream,
                subjects,
                consumer,
                max_deliver,
                ack_wait: ack_wait.into(),
                max_ack_pending: 4096,
            };
            Ok(nats::declare(client, declaration).await?)
        }
        NatsCommand::Publish {
            connection,
            subject,
            count,
            rate,
            data,
            file,
            stdin,
        } => {
            let body = match (data, file, stdin) {
                (Some(data), _, _) => nats::Body::Inline(data),
                (_, Some(file), _) => nats::Body::File(file),
                (_, _, Some(dash)) if dash == "-" => nats::Body::Stdin,
                _ => {
                    return Err(Failure::Usage(
                        "give the event with --data JSON, --file F or - (standard input)".into(),
                    ));
                }
            };
            let body = body.read()?;
            let client = nats::connect(&connection.server, connection.creds.as_deref()).await?;
            Ok(nats::publish(client, &subject, body, count, rate).await?)
        }
        NatsCommand::Aggregate(command) => {
            let (args, add) = match command {
                AggregateCommand::AddTenant(args) => (args, true),
                AggregateCommand::RemoveTenant(args) => (args, false),
            };
            let client =
                nats::connect(&args.connection.server, args.connection.creds.as_deref()).await?;
            Ok(nats::aggregate(client, &args.stream, args.source(), add).await?)
        }
    }
}

fn block_on<F: std::future::Future<Output = Result<ExitCode, Failure>>>(
    future: F,
) -> Result<ExitCode, Failure> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|err| {
            Failure::Runtime(anyhow::anyhow!("cannot start the async runtime: {err}"))
        })?;
    runtime.block_on(future)
}

/// The merged configuration (defaults < YAML < environment); every problem is a usage error.
fn load_config(args: &ConfigArg) -> Result<Config, Failure> {
    let env: HashMap<String, String> = std::env::vars().collect();
    let config = Config::load(args.config.as_deref(), &env)
        .map_err(|errors| Failure::Usage(format!("invalid configuration:\n{errors}")))?;
    crate::telemetry::init_logging(&config.log_level, config.log_format);
    Ok(config)
}

async fn serve(config: Config, migrations: Migrations) -> Result<ExitCode, Failure> {
    let address = config.api_address();
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|err| {
            Failure::Runtime(anyhow::anyhow!(
                "cannot listen on {address} (api_host / API_HOST, api_port / API_PORT): {err}"
            ))
        })?;
    let shutdown = tokio_util::sync::CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    crate::app::run(config, listener, migrations, shutdown).await?;
    Ok(ExitCode::SUCCESS)
}

async fn migrate(config: Config) -> Result<ExitCode, Failure> {
    let secret = Some(config.aes_encryption_secret.expose()).filter(|s| !s.is_empty());
    let store = crate::store::Store::connect(config.database_url.expose(), secret)
        .await
        .map_err(|err| {
            Failure::Runtime(anyhow::anyhow!(
                "cannot open the store at {}: {err}",
                config.database_url.redacted()
            ))
        })?;
    let pending = store
        .pending_migrations()
        .await
        .map_err(anyhow::Error::from)?;
    store.migrate().await.map_err(anyhow::Error::from)?;
    for migration in &pending {
        println!(
            "applied migration {} ({})",
            migration.version, migration.description
        );
    }
    println!(
        "store at {} is up to date ({} applied now)",
        config.database_url.redacted(),
        pending.len()
    );
    store.close().await;
    Ok(ExitCode::SUCCESS)
}

/// SIGTERM or SIGINT (Ctrl-C) starts a graceful shutdown.
async fn cancel_on_signal(shutdown: tokio_util::sync::CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    shutdown.cancel();
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("signal received: shutting down");
    shutdown.cancel();
}
