//! Replicas sharing accounts: `jetpost serve` processes on one Postgres store and one accounts
//! directory, each account consumed by every replica (`shared`) or by one of them at a time
//! (`exclusive`: leases in the store, rendezvous hashing over the live replicas). Measures what
//! exclusive ownership saves the nats-server (connections, memory, CPU), how soon a killed
//! replica's accounts are consumed by the survivors and a joining replica gets its share, and
//! end-to-end throughput on one replica and on three.
//!
//! Balance is judged as the integration tests judge it: the server's `/connz` shows exactly one
//! connection named `jetpost:<account>` per account (every replica's, with `shared`), the live
//! replicas are the running ones, each holds the leases rendezvous hashing gives it, and each
//! account is `consuming` on its owner and `standby` on the others.

use std::collections::{BTreeSet, HashMap};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use async_nats::jetstream;
use serde::Deserialize;

use super::accounts::install_account;
use super::db::{BenchDb, StoreChoice};
use super::flow::FlowResult;
use super::procstat::{self, CpuWindow};
use super::publish::{self, split};
use super::receiver::FastReceiver;
use super::rig::{self, BenchEnv, ChildService};
use super::tally::{Latencies, Tally};
use crate::config::Ownership;
use crate::local_nats::LocalNatsServer;
use crate::source::nats::ownership::owner_of;

/// Replicas of the cost and failover runs.
pub const REPLICAS: usize = 3;
/// How long the accounts may take to be divided after they are written or the replicas start.
const CONNECT_PATIENCE: Duration = Duration::from_secs(300);
/// How long a failover or a join may take before the run counts it as missed and stops.
const SETTLE_PATIENCE: Duration = Duration::from_secs(120);
/// How often balance is polled: the resolution of the failover and join times.
const POLL: Duration = Duration::from_millis(250);
/// One request to the nats-server's monitoring or a replica's API.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What one cost run saw: `replicas` processes sharing `accounts` idle accounts.
#[derive(Debug, Clone)]
pub struct Cost {
    pub ownership: Ownership,
    pub accounts: usize,
    pub replicas: usize,
    /// Connections the nats-server counted once all were made, beyond those before.
    pub connections: u64,
    /// From writing the account directories until every account had its connections (and,
    /// exclusive, was consuming on its owner).
    pub connecting: Option<Duration>,
    pub server_rss: Option<u64>,
    pub server_idle_cpu_percent: Option<f64>,
    /// The replicas' resident memory at the end of the idle window, summed.
    pub jetpost_rss: Option<u64>,
    /// The replicas' CPU over the idle window, summed, in % of one core.
    pub jetpost_idle_cpu_percent: Option<f64>,
}

/// `REPLICAS` replicas start on an empty accounts directory (with exclusive ownership, until
/// each counts the others live); `accounts` idle accounts are written into it at once, and
/// once all are connected the nats-server and the replicas idle for `idle_window`.
pub async fn cost(
    env: &BenchEnv,
    postgres: &StoreChoice,
    accounts: usize,
    ownership: Ownership,
    idle_window: Duration,
    jetpost: &Path,
    say: &(dyn Fn(String) + Sync),
) -> anyhow::Result<Cost> {
    let names = (0..accounts).map(|i| format!("idle-{i:05}")).collect();
    let mut fleet = Fleet::prepare(env, postgres, names, ownership, jetpost, None).await?;
    let base_connections = fleet.server_connections().await?;
    for _ in 0..REPLICAS {
        fleet.start_replica().await?;
    }
    fleet.wait_live(CONNECT_PATIENCE).await?;

    say(format!(
        "replicas: {ownership}, writing {accounts} account directories for {REPLICAS} replicas"
    ));
    let started = Instant::now();
    fleet.write_accounts().await?;
    let connecting = match fleet.wait_balanced(started, CONNECT_PATIENCE).await {
        Ok(took) => Some(took),
        Err(why) => {
            say(format!("replicas: not all connected in time: {why}"));
            None
        }
    };
    let connections = fleet
        .server_connections()
        .await?
        .saturating_sub(base_connections);

    let server_pid = fleet.nats.pid().await;
    let pids = fleet.pids();
    say(format!(
        "replicas: {ownership}, {connections} connections; idle window of {} s starts",
        idle_window.as_secs()
    ));
    let server_cpu = CpuWindow::start(server_pid);
    let jetpost_cpu: Vec<CpuWindow> = pids
        .iter()
        .map(|pid| CpuWindow::start(Some(*pid)))
        .collect();
    tokio::time::sleep(idle_window).await;
    let jetpost_idle_cpu_percent = jetpost_cpu.iter().map(CpuWindow::percent).sum();
    let jetpost_rss = pids.iter().map(|pid| procstat::rss_bytes(Some(*pid))).sum();
    Ok(Cost {
        ownership,
        accounts,
        replicas: REPLICAS,
        connections,
        connecting,
        server_rss: procstat::rss_bytes(server_pid),
        server_idle_cpu_percent: server_cpu.percent(),
        jetpost_rss,
        jetpost_idle_cpu_percent,
    })
}

/// What the failover run saw.
#[derive(Debug, Clone)]
pub struct Failover {
    pub accounts: usize,
    /// Kills asked for; fewer were made when one did not settle (see `unsettled`).
    pub kills: usize,
    /// SIGKILL → every account consuming on its owner among the survivors, per kill.
    pub failovers: Latencies,
    /// Replacement started → the accounts divided among three again, per join.
    pub joins: Vec<Duration>,
    /// Why the run stopped before its last kill, if it did.
    pub unsettled: Option<String>,
    /// Accounts a poll ever saw with more than one jetpost connection at once (polls are
    /// 250 ms apart, so a shorter overlap can be missed).
    pub doubled: usize,
}

/// `REPLICAS` exclusive replicas share `accounts` accounts; `kills` times one of them is
/// killed (SIGKILL, so its leases are not handed over but run out) and, once the survivors
/// consume its accounts, a replacement is started and given its share.
pub async fn failover(
    env: &BenchEnv,
    postgres: &StoreChoice,
    accounts: usize,
    kills: usize,
    jetpost: &Path,
    say: &(dyn Fn(String) + Sync),
) -> anyhow::Result<Failover> {
    let names = (0..accounts).map(|i| format!("fo-{i:05}")).collect();
    let mut fleet =
        Fleet::prepare(env, postgres, names, Ownership::Exclusive, jetpost, None).await?;
    fleet.write_accounts().await?;
    fleet.start_balanced(REPLICAS).await?;

    let (mut failovers, mut joins, mut unsettled) = (Vec::new(), Vec::new(), None);
    for kill in 0..kills {
        let victim = kill % REPLICAS;
        let killed = Instant::now();
        fleet.kill(victim).await?;
        match fleet.wait_balanced(killed, SETTLE_PATIENCE).await {
            Ok(took) => failovers.push(took.as_nanos() as u64),
            Err(why) => {
                unsettled = Some(format!(
                    "kill {} of {kills} did not settle: {why}",
                    kill + 1
                ));
                break;
            }
        }
        let joining = Instant::now();
        fleet.start_replica().await?;
        match fleet.wait_balanced(joining, SETTLE_PATIENCE).await {
            Ok(took) => joins.push(took),
            Err(why) => {
                unsettled = Some(format!(
                    "join {} of {kills} did not settle: {why}",
                    kill + 1
                ));
                break;
            }
        }
        say(format!(
            "replicas: kill {} of {kills}: failover {:.1} s, join {:.1} s",
            kill + 1,
            *failovers.last().unwrap_or(&0) as f64 / 1e9,
            joins.last().map_or(0.0, Duration::as_secs_f64)
        ));
    }
    Ok(Failover {
        accounts,
        kills,
        failovers: Latencies::from_nanos(failovers),
        joins,
        unsettled,
        doubled: fleet.doubled.lock().expect("doubled lock").len(),
    })
}

/// `tenants` accounts, each with a webhook to the receiver, divided among `replicas` exclusive
/// replicas; once balanced they publish `events` in total as fast as acks allow.
pub async fn throughput(
    env: &BenchEnv,
    postgres: &StoreChoice,
    tenants: usize,
    events: u64,
    replicas: usize,
    jetpost: &Path,
) -> anyhow::Result<FlowResult> {
    let names: Vec<String> = (0..tenants)
        .map(|i| format!("rt{replicas}-{i:03}"))
        .collect();
    let tally = Arc::new(Tally::new(events as usize));
    let receiver = FastReceiver::start(tally.clone(), Duration::ZERO).await?;
    let mut fleet = Fleet::prepare(
        env,
        postgres,
        names.clone(),
        Ownership::Exclusive,
        jetpost,
        Some(&receiver),
    )
    .await?;
    fleet.write_accounts().await?;
    fleet.start_balanced(replicas).await?;

    let parts: Vec<(String, Range<u64>)> =
        names.into_iter().zip(split(0, events, tenants)).collect();
    burst(&fleet.nats, &tally, parts).await?;
    let waited_from = Instant::now();
    let patience = Duration::from_secs(60 + events / 500);
    let delivered = tally.wait_for(0..events, events, patience).await;
    Ok(FlowResult {
        expected: events,
        delivered,
        duplicates: tally.duplicates(),
        throughput: tally.throughput(0..events),
        latencies: tally.latencies(0..events),
        waited: waited_from.elapsed(),
        cpu: None,
    })
}

/// Publishes each range into its tenant's stream as fast as acks allow, all tenants at once.
async fn burst(
    nats: &LocalNatsServer,
    tally: &Arc<Tally>,
    parts: Vec<(String, Range<u64>)>,
) -> anyhow::Result<()> {
    let mut contexts = Vec::with_capacity(parts.len());
    for (tenant, seqs) in parts {
        contexts.push((jetstream::new(nats.connect_as(&tenant).await?), seqs));
    }
    let tasks: Vec<_> = contexts
        .into_iter()
        .map(|(js, seqs)| {
            let tally = tally.clone();
            tokio::spawn(async move { publish::burst(&js, &tally, seqs).await })
        })
        .collect();
    for task in tasks {
        task.await.context("a publisher panicked")??;
    }
    Ok(())
}

/// One run's world: a nats-server with the accounts (streams and consumers created), a fresh
/// Postgres schema, the accounts directory and the replicas. Dropping it kills the replicas
/// (declared first, so they go before the store and the server) and removes everything else.
struct Fleet {
    replicas: Vec<Replica>,
    nats: LocalNatsServer,
    db: BenchDb,
    root: tempfile::TempDir,
    accounts: Vec<String>,
    ownership: Ownership,
    jetpost: PathBuf,
    http: reqwest::Client,
    monitoring: String,
    /// Accounts a census saw with more than one connection under exclusive ownership.
    doubled: std::sync::Mutex<BTreeSet<String>>,
}

/// A running replica and its id in the store's leases (exclusive ownership only).
struct Replica {
    service: ChildService,
    id: Option<String>,
}

impl Fleet {
    /// Starts the server with `accounts`, creates their topology and a migrated schema (with a
    /// webhook per account to `receiver`, when given); no replica runs yet.
    async fn prepare(
        env: &BenchEnv,
        postgres: &StoreChoice,
        accounts: Vec<String>,
        ownership: Ownership,
        jetpost: &Path,
        receiver: Option<&FastReceiver>,
    ) -> anyhow::Result<Fleet> {
        if !matches!(postgres, StoreChoice::Postgres(_)) {
            bail!("replicas share their accounts through a Postgres store");
        }
        let nats = rig::start_nats(env, &accounts, true).await?;
        rig::provision(&nats, &accounts).await?;
        let db = BenchDb::create(postgres).await?;
        // Migrated here, so that the replicas starting one after another do not race to it.
        let store = rig::open_store(db.url()).await?;
        if let Some(receiver) = receiver {
            for name in &accounts {
                rig::seed_webhook(&store, name, &receiver.fast_url(name)).await?;
            }
        }
        store.close().await;
        let root = tempfile::Builder::new()
            .prefix("jetpost-bench-replicas-")
            .tempdir()?;
        std::fs::create_dir_all(root.path().join("accounts"))?;
        std::fs::create_dir_all(root.path().join("staging"))?;
        let monitoring = nats
            .monitoring_url()
            .context("the nats-server was started without monitoring")?;
        Ok(Fleet {
            replicas: Vec::new(),
            nats,
            db,
            root,
            accounts,
            ownership,
            jetpost: jetpost.to_owned(),
            http: super::http_client()?,
            monitoring,
            doubled: Default::default(),
        })
    }

    fn accounts_dir(&self) -> PathBuf {
        self.root.path().join("accounts")
    }

    fn pids(&self) -> Vec<u32> {
        self.replicas.iter().map(|r| r.service.pid()).collect()
    }

    /// Writes every account's directory, each staged and moved into place in one rename so a
    /// replica never sees one half-written.
    async fn write_accounts(&self) -> anyhow::Result<()> {
        let sources: Vec<(String, PathBuf)> = self
            .accounts
            .iter()
            .map(|n| Ok((n.clone(), self.nats.creds_path(n)?)))
            .collect::<anyhow::Result<_>>()?;
        let (staging, accounts_dir) = (self.root.path().join("staging"), self.accounts_dir());
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            for (name, creds) in sources {
                install_account(&staging, &accounts_dir, &name, &creds)?;
            }
            Ok(())
        })
        .await?
    }

    /// Starts one more replica and, with exclusive ownership, waits until it has its lease
    /// (so its id is known).
    async fn start_replica(&mut self) -> anyhow::Result<()> {
        let service = ChildService::start_with(
            &self.jetpost,
            &self.nats.url(),
            self.db.url(),
            self.accounts_dir(),
            Some(self.ownership),
        )
        .await?;
        let id = match self.ownership {
            Ownership::Shared => None,
            Ownership::Exclusive => Some(self.replica_id(&service).await?),
        };
        self.replicas.push(Replica { service, id });
        Ok(())
    }

    /// Starts `replicas` replicas on the written accounts and waits until they are balanced.
    async fn start_balanced(&mut self, replicas: usize) -> anyhow::Result<()> {
        let started = Instant::now();
        for _ in 0..replicas {
            self.start_replica().await?;
        }
        self.wait_balanced(started, CONNECT_PATIENCE)
            .await
            .map_err(|why| anyhow::anyhow!("the accounts never balanced over {replicas}: {why}"))?;
        Ok(())
    }

    /// The id `service` heartbeats under, once it shows in its own replicas view.
    async fn replica_id(&self, service: &ChildService) -> anyhow::Result<String> {
        let deadline = Instant::now() + CONNECT_PATIENCE;
        loop {
            if let Ok(rows) = self.replica_rows(service).await
                && let Some(me) = rows.into_iter().find(|r| r.this)
            {
                return Ok(me.id);
            }
            if Instant::now() > deadline {
                bail!(
                    "a replica (pid {}) never showed its own lease",
                    service.pid()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// SIGKILLs the replica at `index` (of those running).
    async fn kill(&mut self, index: usize) -> anyhow::Result<()> {
        let victim = self.replicas.remove(index % self.replicas.len());
        victim.service.kill().await
    }

    /// With exclusive ownership, waits until the running replicas are exactly the live ones;
    /// at once with shared.
    async fn wait_live(&self, within: Duration) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            let why = match self.ownership {
                Ownership::Shared => return Ok(()),
                Ownership::Exclusive => match self.live_once().await {
                    Ok(_) => return Ok(()),
                    Err(why) => why,
                },
            };
            if started.elapsed() > within {
                bail!("the replicas never counted each other live: {why}");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Polls until the accounts are divided among the running replicas (see the module doc);
    /// the time since `since`, or the last reason it was not yet after `within`.
    async fn wait_balanced(&self, since: Instant, within: Duration) -> Result<Duration, String> {
        loop {
            let why = match self.balanced_once().await {
                Ok(()) => return Ok(since.elapsed()),
                Err(why) => why,
            };
            if since.elapsed() > within {
                return Err(format!("after {} s: {why}", within.as_secs()));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Whether the accounts are divided now; why not otherwise. The cheap checks go first.
    async fn balanced_once(&self) -> Result<(), String> {
        let per_account = match self.ownership {
            Ownership::Shared => self.replicas.len(),
            Ownership::Exclusive => 1,
        };
        let census = self.census().await.map_err(|e| format!("{e:#}"))?;
        if self.ownership == Ownership::Exclusive {
            let mut doubled = self.doubled.lock().expect("doubled lock");
            doubled.extend(
                census
                    .iter()
                    .filter(|(_, n)| **n > 1)
                    .map(|(a, _)| a.clone()),
            );
        }
        let named: usize = census.values().sum();
        let wrong = self
            .accounts
            .iter()
            .filter(|a| census.get(*a).copied().unwrap_or(0) != per_account)
            .count();
        if wrong > 0 || named != per_account * self.accounts.len() {
            return Err(format!(
                "{named} jetpost connections; {wrong} accounts without exactly {per_account}"
            ));
        }
        if self.ownership == Ownership::Shared {
            return Ok(());
        }
        let (rows, live) = self.live_once().await?;
        self.holding_shares(&rows, &live)?;
        for replica in &self.replicas {
            let id = replica.id.as_deref().unwrap_or_default();
            self.consuming_on_owner(replica, id, &live).await?;
        }
        Ok(())
    }

    /// The replicas view (asked from the first replica: it is the store's) and the live ids in
    /// it, if those are exactly the running replicas.
    async fn live_once(&self) -> Result<(Vec<ReplicaRow>, Vec<String>), String> {
        let first = self.replicas.first().ok_or("no replica runs")?;
        let rows = self
            .replica_rows(&first.service)
            .await
            .map_err(|e| format!("{e:#}"))?;
        let live: Vec<String> = rows
            .iter()
            .filter(|r| r.live)
            .map(|r| r.id.clone())
            .collect();
        let running: BTreeSet<&str> = self
            .replicas
            .iter()
            .filter_map(|r| r.id.as_deref())
            .collect();
        let live_set: BTreeSet<&str> = live.iter().map(String::as_str).collect();
        if live_set != running {
            return Err(format!("live replicas {live_set:?}, running {running:?}"));
        }
        Ok((rows, live))
    }

    /// Whether each live replica holds exactly as many leases as its rendezvous share.
    fn holding_shares(&self, rows: &[ReplicaRow], live: &[String]) -> Result<(), String> {
        let mut shares: HashMap<&str, u64> = HashMap::new();
        for account in &self.accounts {
            if let Some(owner) = owner_of(account, live) {
                *shares.entry(owner).or_default() += 1;
            }
        }
        for row in rows.iter().filter(|r| r.live) {
            let share = shares.get(row.id.as_str()).copied().unwrap_or(0);
            if row.accounts_owned != share {
                return Err(format!(
                    "{} holds {} leases, its share is {share}",
                    row.id, row.accounts_owned
                ));
            }
        }
        Ok(())
    }

    /// Whether, on `replica` (id `me`), every account is consuming if its rendezvous owner
    /// among `live` is `me`, and standby with that owner otherwise.
    async fn consuming_on_owner(
        &self,
        replica: &Replica,
        me: &str,
        live: &[String],
    ) -> Result<(), String> {
        let rows: Vec<AccountRow> = self
            .api_get(&replica.service, "/api/v1/nats/accounts")
            .await
            .map_err(|e| format!("{e:#}"))?;
        if rows.len() != self.accounts.len() {
            return Err(format!("{me} lists {} accounts", rows.len()));
        }
        for row in rows {
            let owner = owner_of(&row.name, live).unwrap_or_default();
            let expected = if owner == me { "consuming" } else { "standby" };
            if row.state != expected || row.owner.as_deref() != Some(owner) {
                return Err(format!(
                    "{} is {} on {me}, owner {:?}; rendezvous owner {owner}",
                    row.name, row.state, row.owner
                ));
            }
        }
        Ok(())
    }

    /// The connections the nats-server counts (`/varz`).
    async fn server_connections(&self) -> anyhow::Result<u64> {
        let varz: serde_json::Value = self.monitor_get("/varz").await?;
        varz["connections"]
            .as_u64()
            .context("/varz has no connections count")
    }

    /// Connections named `jetpost:<account>`, counted per account (`/connz`).
    async fn census(&self) -> anyhow::Result<HashMap<String, usize>> {
        let connz: Connz = self.monitor_get("/connz?limit=1000000").await?;
        let mut counts = HashMap::new();
        for name in connz.connections.into_iter().filter_map(|c| c.name) {
            if let Some(account) = name.strip_prefix("jetpost:") {
                *counts.entry(account.to_owned()).or_default() += 1;
            }
        }
        Ok(counts)
    }

    async fn monitor_get<T: serde::de::DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.get_json(self.http.get(format!("{}{path}", self.monitoring)))
            .await
    }

    /// Sends `request` (with the request timeout) and reads its JSON answer.
    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> anyhow::Result<T> {
        let request = request.timeout(REQUEST_TIMEOUT).build()?;
        let url = request.url().to_string();
        self.http
            .execute(request)
            .await
            .and_then(reqwest::Response::error_for_status)
            .with_context(|| format!("GET {url}"))?
            .json()
            .await
            .with_context(|| format!("reading {url}"))
    }

    async fn replica_rows(&self, service: &ChildService) -> anyhow::Result<Vec<ReplicaRow>> {
        self.api_get(service, "/api/v1/nats/replicas").await
    }

    async fn api_get<T: serde::de::DeserializeOwned>(
        &self,
        service: &ChildService,
        path: &str,
    ) -> anyhow::Result<T> {
        let (api, key) = service.api();
        self.get_json(self.http.get(format!("{api}{path}")).bearer_auth(key))
            .await
    }
}

/// The part of `/connz` the census reads.
#[derive(Deserialize)]
struct Connz {
    #[serde(default)]
    connections: Vec<Connection>,
}

#[derive(Deserialize)]
struct Connection {
    name: Option<String>,
}

/// The part of a `GET /api/v1/nats/replicas` row the checks read.
#[derive(Deserialize)]
struct ReplicaRow {
    id: String,
    this: bool,
    live: bool,
    accounts_owned: u64,
}

/// The part of a `GET /api/v1/nats/accounts` row the checks read.
#[derive(Deserialize)]
struct AccountRow {
    name: String,
    state: String,
    owner: Option<String>,
}
