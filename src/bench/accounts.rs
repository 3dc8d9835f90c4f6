//! Accounts at scale: thousands of idle tenant accounts handed to jetpost (`jetpost serve` as a
//! child process, so its memory and CPU are its own) through its accounts directory, one
//! sub-directory each. Measures jetpost's memory per connected account, its CPU while they
//! idle, and how soon an account added to the directory has its first event consumed
//! (committed to the store, which precedes the ack).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream;

use super::db::BenchDb;
use super::procstat::{self, CpuWindow};
use super::publish::{SUBJECT, event_body};
use super::receiver::FastReceiver;
use super::rig::{self, BenchEnv, CONSUMER, ChildService, STREAM};
use super::tally::{Latencies, Tally, event_id};

/// How long to wait for all idle accounts to connect.
const CONNECT_PATIENCE: Duration = Duration::from_secs(900);
/// How long one added account may take to consume its first event before it counts as missed.
const ADD_PATIENCE: Duration = Duration::from_secs(30);

/// What the accounts-at-scale scenario saw for one account count.
#[derive(Debug, Clone)]
pub struct Scale {
    pub accounts: usize,
    /// Starting nats-server with the accounts and creating their streams and consumers.
    pub provisioning: Duration,
    /// From writing the directories until the server counted every connection.
    pub connecting: Option<Duration>,
    /// jetpost's resident memory growth per connected account, in bytes.
    pub rss_per_account: Option<f64>,
    /// jetpost's CPU while the accounts idle, in % of one core.
    pub idle_cpu_percent: Option<f64>,
    pub server_rss: Option<u64>,
    pub server_idle_cpu_percent: Option<f64>,
    /// Directory written → first event committed, for each added account.
    pub add_to_consume: Latencies,
    pub adds: usize,
    pub adds_missed: usize,
}

/// `idle` accounts connect through the accounts directory and idle for `idle_window`; then
/// `adds` more are added one at a time, each with an event already waiting in its stream.
pub async fn scale(
    env: &BenchEnv,
    idle: usize,
    adds: usize,
    idle_window: Duration,
    jetpost: &Path,
    say: &(dyn Fn(String) + Sync),
) -> anyhow::Result<Scale> {
    let idle_names: Vec<String> = (0..idle).map(|i| format!("idle-{i:05}")).collect();
    let add_names: Vec<String> = (0..adds).map(|i| format!("add-{i:03}")).collect();
    let all: Vec<String> = idle_names.iter().chain(&add_names).cloned().collect();

    let started = Instant::now();
    let nats = rig::start_nats(env, &all, true).await?;
    rig::provision(&nats, &all).await?;
    let provisioning = started.elapsed();

    // Added accounts get a destination (so their event is stored) and one waiting event.
    let db = BenchDb::create(&env.store).await?;
    let store = rig::open_store(db.url()).await?;
    let tally = std::sync::Arc::new(Tally::new(adds));
    let receiver = FastReceiver::start(tally, Duration::ZERO).await?;
    for (i, name) in add_names.iter().enumerate() {
        rig::seed_webhook(&store, name, &receiver.fast_url(name)).await?;
        let js = jetstream::new(nats.connect_as(name).await?);
        js.publish(SUBJECT, event_body(i as u64))
            .await?
            .await
            .with_context(|| format!("publishing the waiting event of {name}"))?;
    }

    let root = tempfile::Builder::new()
        .prefix("jetpost-bench-accounts-")
        .tempdir()?;
    let accounts_dir = root.path().join("accounts");
    let staging = root.path().join("staging");
    std::fs::create_dir_all(&accounts_dir)?;
    std::fs::create_dir_all(&staging)?;
    let service = ChildService::start(jetpost, &nats.url(), db.url(), accounts_dir.clone()).await?;
    let pid = Some(service.pid());
    let monitor = Monitor::new(&nats)?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let base_connections = monitor.connections().await?;
    let rss_before = procstat::rss_bytes(pid);

    // Idle accounts: written all at once, as a deployment would.
    say(format!("accounts: writing {idle} account directories"));
    let connect_started = Instant::now();
    {
        let sources: Vec<(String, PathBuf)> = idle_names
            .iter()
            .map(|n| Ok((n.clone(), nats.creds_path(n)?)))
            .collect::<anyhow::Result<_>>()?;
        let (staging, accounts_dir) = (staging.clone(), accounts_dir.clone());
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            for (name, creds) in sources {
                install_account(&staging, &accounts_dir, &name, &creds)?;
            }
            Ok(())
        })
        .await??;
    }
    let connecting = monitor
        .wait_connections(base_connections + idle as u64, CONNECT_PATIENCE)
        .await?
        .then(|| connect_started.elapsed());
    let rss_after = settled_rss(pid).await;
    let rss_per_account = match (rss_before, rss_after) {
        (Some(before), Some(after)) if idle > 0 => {
            Some(after.saturating_sub(before) as f64 / idle as f64)
        }
        _ => None,
    };

    let server_pid = nats.pid().await;
    say(format!(
        "accounts: {idle} connected; idle window of {} s starts (jetpost pid {})",
        idle_window.as_secs(),
        service.pid()
    ));
    let ours = CpuWindow::start(pid);
    let theirs = CpuWindow::start(server_pid);
    tokio::time::sleep(idle_window).await;
    let idle_cpu_percent = ours.percent();
    let server_idle_cpu_percent = theirs.percent();
    let server_rss = procstat::rss_bytes(server_pid);
    say(format!(
        "accounts: idle window over; adding {adds} accounts one at a time"
    ));

    // Added accounts, one at a time.
    let mut samples = Vec::with_capacity(adds);
    let mut adds_missed = 0;
    for (i, name) in add_names.iter().enumerate() {
        let creds = nats.creds_path(name)?;
        stage_account(&staging, name, &creds)?;
        let added = Instant::now();
        std::fs::rename(staging.join(name), accounts_dir.join(name))
            .with_context(|| format!("moving {name} into the accounts directory"))?;
        let id = event_id(i as u64);
        let consumed = loop {
            if store.get_event(name, &id).await?.is_some() {
                break true;
            }
            if added.elapsed() > ADD_PATIENCE {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        if consumed {
            samples.push(added.elapsed().as_nanos() as u64);
        } else {
            adds_missed += 1;
        }
    }

    service.stop().await?;
    store.close().await;
    Ok(Scale {
        accounts: idle,
        provisioning,
        connecting,
        rss_per_account,
        idle_cpu_percent,
        server_rss,
        server_idle_cpu_percent,
        add_to_consume: Latencies::from_nanos(samples),
        adds,
        adds_missed,
    })
}

/// Writes an account directory (meta.yaml + user.creds) in `staging`.
fn stage_account(staging: &Path, name: &str, creds: &Path) -> anyhow::Result<()> {
    let dir = staging.join(name);
    std::fs::create_dir_all(&dir)?;
    std::fs::copy(creds, dir.join("user.creds"))
        .with_context(|| format!("copying {}", creds.display()))?;
    std::fs::write(
        dir.join("meta.yaml"),
        format!("tenant_id: {name}\nstream: {STREAM}\nconsumer: {CONSUMER}\n"),
    )?;
    Ok(())
}

/// Stages an account directory and moves it into place in one rename, so jetpost never sees
/// it half-written.
pub(super) fn install_account(
    staging: &Path,
    accounts_dir: &Path,
    name: &str,
    creds: &Path,
) -> anyhow::Result<()> {
    stage_account(staging, name, creds)?;
    std::fs::rename(staging.join(name), accounts_dir.join(name))
        .with_context(|| format!("moving {name} into the accounts directory"))?;
    Ok(())
}

/// The RSS of `pid` once it stops growing (a 1 % band over 3 s), or after 60 s.
async fn settled_rss(pid: Option<u32>) -> Option<u64> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut window: Vec<u64> = Vec::new();
    loop {
        let rss = procstat::rss_bytes(pid)?;
        window.push(rss);
        if window.len() > 3 {
            window.remove(0);
        }
        let (min, max) = (*window.iter().min()?, *window.iter().max()?);
        if window.len() == 3 && (max - min) as f64 <= 0.01 * max as f64 {
            return Some(rss);
        }
        if Instant::now() > deadline {
            return Some(rss);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The nats-server's monitoring endpoint.
struct Monitor {
    client: reqwest::Client,
    varz: String,
}

impl Monitor {
    fn new(nats: &crate::local_nats::LocalNatsServer) -> anyhow::Result<Monitor> {
        let base = nats
            .monitoring_url()
            .context("the nats-server was started without monitoring")?;
        Ok(Monitor {
            client: super::http_client()?,
            varz: format!("{base}/varz"),
        })
    }

    async fn connections(&self) -> anyhow::Result<u64> {
        let varz: serde_json::Value = self
            .client
            .get(&self.varz)
            .send()
            .await?
            .json()
            .await
            .context("reading /varz")?;
        varz["connections"]
            .as_u64()
            .context("/varz has no connections count")
    }

    /// Waits until the server counts `wanted` connections; false after `within`.
    async fn wait_connections(&self, wanted: u64, within: Duration) -> anyhow::Result<bool> {
        let deadline = Instant::now() + within;
        loop {
            if self.connections().await? >= wanted {
                return Ok(true);
            }
            if Instant::now() > deadline {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}
