//! One scenario's world: a nats-server in operator mode with a JetStream account per tenant
//! (stream `EVENTS` on `events.>`, durable pull consumer `jetpost`), a fresh store seeded with
//! each tenant's webhook destination, the fast receiver, and jetpost itself run in-process with
//! `app::run` on a config built here. Everything is stopped and removed when the rig is.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use async_nats::jetstream;
use futures::StreamExt as _;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::db::{BenchDb, StoreChoice};
use super::receiver::FastReceiver;
use super::tally::Tally;
use crate::app::{self, Migrations};
use crate::config::{AccountConfig, Config, DatabaseUrl, Ownership, Secret};
use crate::local_nats::{AccountSpec, LocalNatsServer, NatsServerBinary, ServerOptions};
use crate::source::nats::topology::{self, Declaration};
use crate::store::{Credentials, NewDestination, Store};

pub const STREAM: &str = "EVENTS";
pub const CONSUMER: &str = "jetpost";
const API_KEY: &str = "jetpost-bench-key";
const AES_SECRET: &str = "jetpost-bench-aes-secret";
/// Concurrent stream + consumer creations while provisioning many accounts.
const PROVISION_CONCURRENCY: usize = 32;

/// What every scenario shares: the nats-server executable, the store to run on, and the
/// jetpost executable for scenarios that run it as a child process.
#[derive(Debug, Clone)]
pub struct BenchEnv {
    pub nats_binary: NatsServerBinary,
    pub store: StoreChoice,
    /// The jetpost executable the accounts scenario runs as `jetpost serve`.
    pub jetpost_exe: Option<PathBuf>,
}

/// A tenant of a rig: its account, stream and webhook destination.
#[derive(Debug, Clone)]
pub struct TenantPlan {
    pub name: String,
    /// Its destination answers after the receiver's slow delay.
    pub slow: bool,
}

impl TenantPlan {
    pub fn fast(name: impl Into<String>) -> TenantPlan {
        TenantPlan {
            name: name.into(),
            slow: false,
        }
    }

    /// `count` fast tenants named `<prefix>-000`, `<prefix>-001`, …
    pub fn many(prefix: &str, count: usize) -> Vec<TenantPlan> {
        (0..count)
            .map(|i| TenantPlan::fast(format!("{prefix}-{i:03}")))
            .collect()
    }
}

/// How to build a rig.
#[derive(Debug, Clone)]
pub struct RigOptions {
    pub tenants: Vec<TenantPlan>,
    /// Events the scenario's tally can hold (sequence numbers `0..tally_len`).
    pub tally_len: usize,
    pub slow_delay: Duration,
    /// Every tenant's destination; `None`: a signed webhook to the receiver.
    pub destination: Option<SeededDestination>,
    /// Finished events stored three days ago, spread over the tenants (their webhooks'
    /// deliveries and attempts too): the old log a retention purge deletes.
    pub old_events: u64,
    /// jetpost's `log_retention_ttl_days` (0: keep everything).
    pub retention_ttl_days: u32,
}

impl RigOptions {
    /// `tenants`, each with a fast webhook to the receiver, and room for `events` events.
    pub fn webhooks(tenants: Vec<TenantPlan>, events: u64) -> RigOptions {
        RigOptions {
            tenants,
            tally_len: events as usize,
            slow_delay: Duration::ZERO,
            destination: None,
            old_events: 0,
            retention_ttl_days: 0,
        }
    }
}

/// A destination of another type than the receiver's webhook, seeded for every tenant.
#[derive(Debug, Clone)]
pub struct SeededDestination {
    pub kind: String,
    pub config: BTreeMap<String, String>,
    pub credentials: BTreeMap<String, String>,
}

/// A running scenario world; call [`Rig::stop`] at the end.
pub struct Rig {
    pub tally: Arc<Tally>,
    pub receiver: FastReceiver,
    pub nats: LocalNatsServer,
    pub db: BenchDb,
    pub tenants: Vec<TenantPlan>,
    retention_ttl_days: u32,
    service: Option<Service>,
}

struct Service {
    stop: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
    api: SocketAddr,
}

impl Rig {
    /// Starts NATS with the tenants' accounts and topology and seeds a fresh store; jetpost
    /// itself starts with [`Rig::start_service`] (so a backlog can be published before).
    pub async fn prepare(env: &BenchEnv, options: RigOptions) -> anyhow::Result<Rig> {
        let tally = Arc::new(Tally::new(options.tally_len));
        let receiver = FastReceiver::start(tally.clone(), options.slow_delay).await?;
        let names: Vec<String> = options.tenants.iter().map(|t| t.name.clone()).collect();
        let nats = start_nats(env, &names, false).await?;
        provision(&nats, &names).await?;
        let db = BenchDb::create(&env.store).await?;
        let store = open_store(db.url()).await?;
        for tenant in &options.tenants {
            if let Some(destination) = &options.destination {
                seed(&store, &tenant.name, destination).await?;
                continue;
            }
            let url = if tenant.slow {
                receiver.slow_url(&tenant.name)
            } else {
                receiver.fast_url(&tenant.name)
            };
            seed_webhook(&store, &tenant.name, &url).await?;
        }
        store.close().await;
        if options.old_events > 0 && options.destination.is_none() {
            let each = options
                .old_events
                .div_ceil(options.tenants.len().max(1) as u64);
            let stored_at = chrono::Utc::now() - chrono::TimeDelta::days(3);
            for tenant in &options.tenants {
                let webhook = format!("{}-webhook", tenant.name);
                super::db::seed_old_events(db.url(), &tenant.name, &webhook, each, stored_at)
                    .await?;
            }
        }
        Ok(Rig {
            tally,
            receiver,
            nats,
            db,
            tenants: options.tenants,
            retention_ttl_days: options.retention_ttl_days,
            service: None,
        })
    }

    /// A JetStream context in `tenant`'s account.
    pub async fn jetstream(&self, tenant: &str) -> anyhow::Result<jetstream::Context> {
        Ok(jetstream::new(self.nats.connect_as(tenant).await?))
    }

    /// Starts jetpost with one static account per tenant and waits until it is healthy.
    pub async fn start_service(&mut self) -> anyhow::Result<()> {
        let accounts = self
            .tenants
            .iter()
            .map(|t| {
                Ok(AccountConfig {
                    name: t.name.clone(),
                    credentials_file: Some(self.nats.creds_path(&t.name)?),
                    stream: STREAM.into(),
                    consumer: CONSUMER.into(),
                    tenant_id: t.name.clone(),
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut config = service_config(&self.nats.url(), self.db.url(), accounts, None)?;
        config.log_retention_ttl_days = self.retention_ttl_days;
        self.service = Some(Service::start(config).await?);
        Ok(())
    }

    /// `http://<address>` of the running jetpost's API, and its API key.
    pub fn api(&self) -> anyhow::Result<(String, &'static str)> {
        let service = self
            .service
            .as_ref()
            .context("jetpost is not running; call start_service first")?;
        Ok((format!("http://{}", service.api), API_KEY))
    }

    /// Stops jetpost (graceful), the receiver and NATS.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(service) = self.service.take() {
            service.stop().await?;
        }
        Ok(())
    }
}

impl Service {
    async fn start(config: Config) -> anyhow::Result<Service> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let api = listener.local_addr()?;
        let stop = CancellationToken::new();
        let task = tokio::spawn(app::run(config, listener, Migrations::Apply, stop.clone()));
        let service = Service { stop, task, api };
        service.wait_healthy().await?;
        Ok(service)
    }

    async fn wait_healthy(&self) -> anyhow::Result<()> {
        let client = super::http_client()?;
        let url = format!("http://{}/healthz", self.api);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while tokio::time::Instant::now() < deadline {
            if self.task.is_finished() {
                bail!("jetpost stopped during start-up (see its log lines above)");
            }
            let healthy = client
                .get(&url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if healthy {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("jetpost did not become healthy at {url} within 60 s")
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.stop.cancel();
        match tokio::time::timeout(Duration::from_secs(60), self.task).await {
            Ok(joined) => joined.context("the jetpost task panicked")?,
            Err(_) => bail!("jetpost did not stop within 60 s of the shutdown signal"),
        }
    }
}

/// `jetpost serve` as a child process watching an accounts directory (the accounts-at-scale
/// and replicas scenarios), so that its memory and CPU are its own, not mixed with the
/// harness's. Killed (SIGKILL) when dropped.
pub struct ChildService {
    child: tokio::process::Child,
    pid: u32,
    port: u16,
    _config_dir: tempfile::TempDir,
}

impl ChildService {
    /// Starts `exe serve` on a config file written here and waits until it is healthy.
    pub async fn start(
        exe: &std::path::Path,
        nats_url: &str,
        db_url: &str,
        accounts_dir: PathBuf,
    ) -> anyhow::Result<ChildService> {
        ChildService::start_with(exe, nats_url, db_url, accounts_dir, None).await
    }

    /// `start`, with `PUBLISH_NATS_OWNERSHIP` set to `ownership` when given (replicas sharing
    /// one Postgres store; unset: jetpost's default for the store).
    pub async fn start_with(
        exe: &std::path::Path,
        nats_url: &str,
        db_url: &str,
        accounts_dir: PathBuf,
        ownership: Option<Ownership>,
    ) -> anyhow::Result<ChildService> {
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0")?;
            probe.local_addr()?.port()
        };
        let config = service_config(nats_url, db_url, Vec::new(), Some(accounts_dir.clone()))?;
        // JSON is YAML: the config file is written with serde_json's quoting.
        let file = serde_json::json!({
            "api_port": port,
            "api_key": config.api_key.expose(),
            "aes_encryption_secret": config.aes_encryption_secret.expose(),
            "database_url": db_url,
            "log_level": config.log_level,
            "shutdown_timeout_seconds": config.shutdown_timeout_seconds,
            "publishmq": {"nats": {"servers": [nats_url], "accounts_dir": accounts_dir}},
            "destinations": {"webhook": {
                "block_private_ips": config.destinations.webhook.block_private_ips,
            }},
        });
        let config_dir = tempfile::Builder::new()
            .prefix("jetpost-bench-serve-")
            .tempdir()?;
        let path = config_dir.path().join("jetpost.yaml");
        std::fs::write(&path, serde_json::to_string_pretty(&file)?)?;
        let mut command = tokio::process::Command::new(exe);
        command
            .arg("serve")
            .arg("--config")
            .arg(&path)
            // Outpost's env names would override the file.
            .env_clear();
        if let Some(ownership) = ownership {
            command.env("PUBLISH_NATS_OWNERSHIP", ownership.to_string());
        }
        let child = command
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {} serve", exe.display()))?;
        let pid = child.id().context("the jetpost child exited at once")?;
        let mut service = ChildService {
            child,
            pid,
            port,
            _config_dir: config_dir,
        };
        let url = format!("http://127.0.0.1:{port}/healthz");
        let client = super::http_client()?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = service.child.try_wait()? {
                bail!("jetpost serve exited during start-up ({status})");
            }
            // 503 while the store or dispatcher is not ready; any answer means it listens.
            if client
                .get(&url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return Ok(service);
            }
            if tokio::time::Instant::now() > deadline {
                bail!("jetpost serve did not become healthy at {url} within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// `http://<address>` of its API, and its API key.
    pub fn api(&self) -> (String, &'static str) {
        (format!("http://127.0.0.1:{}", self.port), API_KEY)
    }

    /// SIGKILL: no hand-over, no drain, as when a replica's machine dies.
    pub async fn kill(mut self) -> anyhow::Result<()> {
        self.child
            .kill()
            .await
            .with_context(|| format!("killing jetpost serve (pid {})", self.pid))
    }

    /// SIGTERM (graceful drain), then SIGKILL if it is still there after 30 s.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let _ = tokio::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .status()
            .await;
        match tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await {
            Ok(status) => {
                status?;
            }
            Err(_) => self.child.kill().await?,
        }
        Ok(())
    }
}

/// jetpost's configuration for a benchmark: defaults except the store, NATS sources, secrets,
/// warnings-only logs, a short shutdown, and webhooks to private addresses allowed (the
/// bench's receiver is on loopback).
fn service_config(
    nats_url: &str,
    db_url: &str,
    accounts: Vec<AccountConfig>,
    accounts_dir: Option<PathBuf>,
) -> anyhow::Result<Config> {
    let mut config = Config {
        api_port: 0,
        api_key: Secret::from(API_KEY),
        aes_encryption_secret: Secret::from(AES_SECRET),
        database_url: DatabaseUrl::new(db_url),
        log_level: "warn".into(),
        shutdown_timeout_seconds: 5,
        ..Config::default()
    };
    config.destinations.webhook.block_private_ips = false;
    config.publishmq.nats.servers = vec![nats_url.to_owned()];
    config.publishmq.nats.accounts = accounts;
    config.publishmq.nats.accounts_dir = accounts_dir;
    config
        .validate()
        .map_err(|errors| anyhow::anyhow!("benchmark config: {errors}"))?;
    Ok(config)
}

/// A nats-server in operator mode with a JetStream account per name (preloaded, so even
/// thousands start in one go).
pub async fn start_nats(
    env: &BenchEnv,
    accounts: &[String],
    monitoring: bool,
) -> anyhow::Result<LocalNatsServer> {
    let mut options = ServerOptions::new(env.nats_binary.clone());
    options.monitoring = monitoring;
    options.ready_timeout = Duration::from_secs(300);
    let server =
        LocalNatsServer::start_operator(options, accounts.iter().map(AccountSpec::new)).await?;
    Ok(server)
}

/// Creates every account's stream and durable pull consumer, as `jetpost nats declare` does.
pub async fn provision(nats: &LocalNatsServer, accounts: &[String]) -> anyhow::Result<()> {
    let declaration = Declaration {
        stream: STREAM.into(),
        subjects: vec!["events.>".into()],
        consumer: CONSUMER.into(),
        max_deliver: None,
        ack_wait: Duration::from_secs(30),
        max_ack_pending: 4096,
    };
    let declaration = &declaration;
    let results: Vec<anyhow::Result<()>> = futures::stream::iter(accounts)
        .map(|account| async move {
            let client = nats.connect_as(account).await?;
            let js = jetstream::new(client.clone());
            topology::declare(&js, declaration)
                .await
                .map_err(|err| anyhow::anyhow!("account {account}: {err}"))?;
            drop(js);
            let _ = client.drain().await;
            Ok(())
        })
        .buffer_unordered(PROVISION_CONCURRENCY)
        .collect()
        .await;
    results.into_iter().collect()
}

/// A migrated store handle on `url`.
pub async fn open_store(url: &str) -> anyhow::Result<Store> {
    let store = Store::connect(url, Some(AES_SECRET))
        .await
        .with_context(|| {
            format!(
                "opening the benchmark store {}",
                DatabaseUrl::new(url).redacted()
            )
        })?;
    store
        .migrate()
        .await
        .context("migrating the benchmark store")?;
    Ok(store)
}

/// Creates `tenant` with `destination` for every topic.
async fn seed(store: &Store, tenant: &str, destination: &SeededDestination) -> anyhow::Result<()> {
    store.upsert_tenant(tenant, None).await?;
    store
        .create_destination(&NewDestination {
            tenant_id: tenant.into(),
            id: format!("{tenant}-{}", destination.kind),
            kind: destination.kind.clone(),
            topics: vec!["*".into()],
            filter: None,
            config: destination.config.clone(),
            credentials: Credentials(destination.credentials.clone()),
            delivery_metadata: None,
            metadata: None,
        })
        .await
        .with_context(|| format!("creating {tenant}'s {} destination", destination.kind))?;
    Ok(())
}

/// Creates `tenant` with one signed webhook destination to `url` for every topic.
pub async fn seed_webhook(store: &Store, tenant: &str, url: &str) -> anyhow::Result<()> {
    store.upsert_tenant(tenant, None).await?;
    store
        .create_destination(&NewDestination {
            tenant_id: tenant.into(),
            id: format!("{tenant}-webhook"),
            kind: "webhook".into(),
            topics: vec!["*".into()],
            filter: None,
            config: [("url".to_string(), url.to_string())].into(),
            credentials: Credentials(
                [("secret".to_string(), format!("whsec_bench_{tenant}"))].into(),
            ),
            delivery_metadata: None,
            metadata: None,
        })
        .await
        .with_context(|| format!("creating {tenant}'s webhook destination"))?;
    Ok(())
}
