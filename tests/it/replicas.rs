//! Replicas sharing one Postgres store divide the NATS accounts (exclusive ownership): real
//! `jetpost serve` processes, an operator-mode nats-server whose `/connz` shows every
//! connection jetpost opens (named `jetpost:<account>`), and a receiver. Each account is
//! consumed by one replica; a killed replica's accounts move within the lease; a joining one
//! gets its share; SIGTERM hands over; a replica cut from the store stops pulling before
//! another can take its accounts.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream;
use jetpost::source::nats::ownership::share_of;
use serde_json::Value;
use tempfile::TempDir;
use tokio::time::Instant;

use crate::support::db::TestDb;
use crate::support::http_client;
use crate::support::nats::{
    AccountSpec, LocalNatsServer, PATIENCE, connection_names, options, wait_until,
};
use crate::support::pipeline::{install_account, provision, webhook};
use crate::support::proxy::Proxy;
use crate::support::receiver::Receiver;
use crate::support::serve::Serve;

/// The bound the issue sets on a dead replica's accounts moving (its leases run 6 s).
const FAILOVER_BOUND: Duration = Duration::from_secs(10);

/// A nats-server with `accounts` accounts, their directory, a Postgres schema with a webhook
/// per tenant, and the environment every replica gets.
struct Rig {
    db: TestDb,
    server: LocalNatsServer,
    receiver: Receiver,
    publishers: Vec<jetstream::Context>,
    names: Vec<String>,
    accounts_dir: TempDir,
    env: Vec<(String, String)>,
}

impl Rig {
    async fn new(accounts: usize) -> Rig {
        let names: Vec<String> = (0..accounts).map(|i| format!("t{i}")).collect();
        let mut options = options().await;
        options.monitoring = true;
        let server = LocalNatsServer::start_operator(
            options,
            names.iter().map(|name| AccountSpec::new(name.as_str())),
        )
        .await
        .unwrap_or_else(|error| panic!("{error}"));
        let db = TestDb::postgres().await;
        let store = db.store(None).await;
        let receiver = Receiver::start().await;
        let accounts_dir = tempfile::tempdir().unwrap();
        let mut publishers = Vec::new();
        for name in &names {
            webhook(
                &store,
                name,
                "hook",
                &["*"],
                &receiver.url(&format!("/{name}")),
            )
            .await;
            publishers.push(provision(&server, name).await);
            install_account(accounts_dir.path(), &server, name);
        }
        store.close().await;
        let env = vec![
            ("API_KEY".to_owned(), "test".to_owned()),
            ("DATABASE_URL".to_owned(), db.url().to_owned()),
            ("PUBLISH_NATS_SERVERS".to_owned(), server.url()),
            (
                "PUBLISH_NATS_ACCOUNTS_DIR".to_owned(),
                accounts_dir.path().to_str().unwrap().to_owned(),
            ),
            ("SHUTDOWN_TIMEOUT_SECONDS".to_owned(), "10".to_owned()),
        ];
        Rig {
            db,
            server,
            receiver,
            publishers,
            names,
            accounts_dir,
            env,
        }
    }

    /// A replica with the rig's environment, its store URL replaced by `database_url`.
    async fn replica_via(&self, database_url: Option<&str>) -> Replica {
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| match (k.as_str(), database_url) {
                ("DATABASE_URL", Some(url)) => (k.as_str(), url),
                _ => (k.as_str(), v.as_str()),
            })
            .collect();
        let serve = Serve::start(&env).await;
        let id = wait_for(|| async {
            let replicas = get(&serve, "/api/v1/nats/replicas").await?;
            replicas
                .as_array()?
                .iter()
                .find(|r| r["this"] == true)
                .and_then(|r| r["id"].as_str().map(str::to_owned))
        })
        .await;
        Replica { serve, id }
    }

    async fn replica(&self) -> Replica {
        self.replica_via(None).await
    }

    /// How many connections jetpost holds to each account, by the server's `/connz`.
    async fn connections(&self) -> BTreeMap<String, usize> {
        connections(&self.server.monitoring_url().unwrap()).await
    }

    /// Waits until the accounts are divided among `replicas` as rendezvous hashing says: each
    /// has exactly one jetpost connection and is consuming on its owner only, the owner every
    /// replica shows. Returns how long that took.
    async fn wait_balanced(&self, replicas: &[&Replica]) -> Duration {
        let started = Instant::now();
        let expected = shares(&self.names, replicas);
        loop {
            let owners = self.owned_once(replicas).await;
            if owners.as_ref() == Ok(&expected) {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < PATIENCE,
                "accounts not divided as {expected:?}: {owners:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn owned_once(&self, replicas: &[&Replica]) -> Result<BTreeMap<String, String>, String> {
        let connections = self.connections().await;
        for name in &self.names {
            if connections.get(name) != Some(&1) {
                return Err(format!("connections {connections:?}"));
            }
        }
        let mut owners: BTreeMap<String, String> = BTreeMap::new();
        for replica in replicas {
            let accounts = get(&replica.serve, "/api/v1/nats/accounts")
                .await
                .ok_or("accounts view failed")?;
            for account in accounts.as_array().unwrap() {
                let name = account["name"].as_str().unwrap().to_owned();
                let owner = account["owner"].as_str().unwrap_or("").to_owned();
                let state = account["state"].as_str().unwrap();
                let consuming_here = state == "consuming";
                if consuming_here != (owner == replica.id) {
                    return Err(format!(
                        "{name} is {state} on {} owned by {owner:?}",
                        replica.id
                    ));
                }
                if !consuming_here && state != "standby" {
                    return Err(format!("{name} is {state} on {}", replica.id));
                }
                if let Some(seen) = owners.insert(name.clone(), owner.clone())
                    && seen != owner
                {
                    return Err(format!("{name}: owners {seen} and {owner} seen"));
                }
            }
        }
        if owners.len() != self.names.len() {
            return Err(format!("owners {owners:?}"));
        }
        Ok(owners)
    }

    /// Publishes `per_account` events (without ids: derived from the stream position) to
    /// every account in the background.
    fn publish(&self, per_account: usize) -> tokio::task::JoinHandle<()> {
        let publishers = self.publishers.clone();
        tokio::spawn(async move {
            for i in 0..per_account {
                let mut acks = Vec::new();
                for js in &publishers {
                    let body = format!(r#"{{"topic":"t","data":{{"i":{i}}}}}"#);
                    acks.push(js.publish("events.t", body.into()).await.unwrap());
                }
                for ack in acks {
                    ack.await.unwrap();
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    }

    /// Waits until every one of `total` events reached the receiver; returns how many arrived
    /// twice (an attempt in flight when a replica was killed is made again).
    async fn wait_delivered(&self, total: usize) -> usize {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let requests = self.receiver.requests();
            let ids: BTreeSet<String> = requests
                .iter()
                .map(|r| r.header("x-outpost-event-id").unwrap().to_owned())
                .collect();
            if ids.len() == total {
                assert_eq!(
                    self.db.raw_count("SELECT count(*) FROM events").await,
                    total as i64,
                    "one event per message: redeliveries keep their derived ids"
                );
                return requests.len() - ids.len();
            }
            assert!(
                Instant::now() < deadline,
                "{} of {total} events delivered",
                ids.len()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

struct Replica {
    serve: Serve,
    id: String,
}

async fn get(serve: &Serve, path: &str) -> Option<Value> {
    let response = http_client()
        .get(serve.url(path))
        .bearer_auth("test")
        .send()
        .await
        .ok()?;
    if !response.status().is_success() {
        return None;
    }
    response.json().await.ok()
}

/// How many connections jetpost holds to each account (it names them `jetpost:<account>`).
async fn connections(monitoring: &str) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for name in connection_names(monitoring).await {
        if let Some(account) = name.strip_prefix("jetpost:") {
            *counts.entry(account.to_owned()).or_insert(0) += 1;
        }
    }
    counts
}

/// Polls `probe` until it gives a value (within `PATIENCE`).
async fn wait_for<T, F, Fut>(mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "gave up waiting");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The accounts rendezvous hashing gives each of `replicas`.
fn shares(names: &[String], replicas: &[&Replica]) -> BTreeMap<String, String> {
    let ids: Vec<String> = replicas.iter().map(|r| r.id.clone()).collect();
    let mut owners = BTreeMap::new();
    for id in &ids {
        for account in share_of(id, names.iter().map(String::as_str), &ids) {
            owners.insert(account.to_owned(), id.clone());
        }
    }
    owners
}

#[tokio::test]
async fn three_replicas_consume_each_account_once_and_a_killed_ones_accounts_move() {
    const PER_ACCOUNT: usize = 60;
    // Enough accounts that the killed replica surely owns some (replica ids are random).
    let rig = Rig::new(24).await;
    let a = rig.replica().await;
    let b = rig.replica().await;
    let mut c = rig.replica().await;
    rig.wait_balanced(&[&a, &b, &c]).await;
    let owners = shares(&rig.names, &[&a, &b, &c]);
    assert!(owners.values().any(|o| *o == c.id), "{owners:?}");
    let replicas = get(&a.serve, "/api/v1/nats/replicas").await.unwrap();
    let live: Vec<&str> = replicas
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["live"] == true)
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(live.len(), 3, "{replicas}");
    for replica in replicas.as_array().unwrap() {
        let id = replica["id"].as_str().unwrap();
        let owned = owners.values().filter(|o| *o == id).count();
        assert_eq!(replica["accounts_owned"], owned, "{replicas}");
    }

    let publishing = rig.publish(PER_ACCOUNT);
    let total = PER_ACCOUNT * rig.names.len();
    wait_until("a third of the events delivered", || async {
        rig.receiver.requests().len() >= total / 3
    })
    .await;
    let status = c.serve.kill().await;
    assert!(!status.success(), "killed with SIGKILL");
    let killed = Instant::now();
    // The survivors take c's accounts once its leases run out.
    rig.wait_balanced(&[&a, &b]).await;
    let moved = killed.elapsed();
    assert!(
        moved <= FAILOVER_BOUND,
        "the killed replica's accounts moved after {moved:?}"
    );

    publishing.await.unwrap();
    let twice = rig.wait_delivered(total).await;
    // Only the killed replica's attempts in flight or not yet recorded at the kill can be made
    // again: at most its delivery_max_concurrency (256), and never more than one event's worth
    // each (the store holds one event per message, checked by wait_delivered).
    assert!(twice <= 256, "{twice} events delivered twice");
    assert_eq!(
        rig.connections().await.values().sum::<usize>(),
        rig.names.len()
    );
}

#[tokio::test]
async fn a_joining_replica_gets_its_share_and_sigterm_hands_over() {
    const PER_ACCOUNT: usize = 30;
    // Replica ids are random, so the joining replica's share is too: with 30 accounts it gets
    // none once in (3/2)^30 ≈ 190,000 runs (with 8, once in 26).
    let rig = Rig::new(30).await;
    let a = rig.replica().await;
    let b = rig.replica().await;
    rig.wait_balanced(&[&a, &b]).await;

    let mut c = rig.replica().await;
    let joined = rig.wait_balanced(&[&a, &b, &c]).await;
    assert!(joined <= Duration::from_secs(30), "{joined:?}");
    let owners = shares(&rig.names, &[&a, &b, &c]);
    let mine = owners.values().filter(|o| **o == c.id).count();
    assert!(mine > 0, "the joining replica got no account: {owners:?}");

    let publishing = rig.publish(PER_ACCOUNT);
    wait_until("the first event delivered", || async {
        !rig.receiver.requests().is_empty()
    })
    .await;
    let status = c.serve.terminate(Duration::from_secs(30)).await;
    assert!(status.success(), "SIGTERM exits cleanly: {status:?}");
    // Handed over, not left to run out: c holds no lease and is marked leaving.
    let held = rig
        .db
        .raw_texts("SELECT account FROM account_owners WHERE expires_at > now()")
        .await;
    let leases = rig
        .db
        .raw_texts("SELECT replica_id FROM account_owners WHERE expires_at > now()")
        .await;
    assert!(
        !leases.iter().flatten().any(|owner| *owner == c.id),
        "c still holds {held:?}"
    );
    let leaving = rig
        .db
        .raw_texts("SELECT id FROM replicas WHERE leaving")
        .await;
    assert_eq!(leaving, [Some(c.id.clone())]);
    rig.wait_balanced(&[&a, &b]).await;

    publishing.await.unwrap();
    let twice = rig.wait_delivered(PER_ACCOUNT * rig.names.len()).await;
    assert_eq!(
        twice, 0,
        "a handover settles its work: nothing is delivered twice"
    );

    // An account removed from the directory leaves every replica, owner or not.
    std::fs::remove_dir_all(rig.accounts_dir.path().join("t0")).unwrap();
    wait_for(|| async {
        for replica in [&a, &b] {
            let accounts = get(&replica.serve, "/api/v1/nats/accounts").await?;
            if accounts.as_array()?.iter().any(|acc| acc["name"] == "t0") {
                return None;
            }
        }
        (!rig.connections().await.contains_key("t0")).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_replica_cut_from_the_store_stops_pulling_before_another_takes_over() {
    const PER_ACCOUNT: usize = 20;
    // Enough accounts that the replica cut from the store surely owns some.
    let rig = Rig::new(20).await;
    let postgres: std::net::SocketAddr = "127.0.0.1:5432".parse().unwrap();
    let proxy = Proxy::start(postgres).await;
    let via_proxy = rig
        .db
        .url()
        .replace("127.0.0.1:5432", &format!("127.0.0.1:{}", proxy.port()));
    assert_ne!(
        via_proxy,
        rig.db.url(),
        "the store URL goes through the proxy"
    );
    let a = rig.replica_via(Some(&via_proxy)).await;
    let b = rig.replica().await;
    rig.wait_balanced(&[&a, &b]).await;
    let owners = shares(&rig.names, &[&a, &b]);
    assert!(owners.values().any(|o| *o == a.id), "{owners:?}");

    // Watch the server's connections throughout: never two for one account.
    let most: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let watching = {
        let monitoring = rig.server.monitoring_url().unwrap();
        let most = most.clone();
        tokio::spawn(async move {
            loop {
                for (account, count) in connections(&monitoring).await {
                    let mut most = most.lock().unwrap();
                    let seen = most.entry(account).or_default();
                    *seen = (*seen).max(count);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    proxy.cut();
    let cut = Instant::now();
    // b takes every account once a's leases have run out; a stopped pulling before that.
    wait_for(|| async {
        let connections = rig.connections().await;
        let b_owns = get(&b.serve, "/api/v1/nats/accounts").await?;
        let all_on_b = b_owns
            .as_array()?
            .iter()
            .all(|acc| acc["state"] == "consuming" && acc["owner"] == b.id.as_str());
        (all_on_b && rig.names.iter().all(|n| connections.get(n) == Some(&1))).then_some(())
    })
    .await;
    assert!(cut.elapsed() <= Duration::from_secs(20));

    proxy.restore();
    rig.wait_balanced(&[&a, &b]).await;
    watching.abort();
    let most = most.lock().unwrap().clone();
    assert!(
        most.values().all(|count| *count == 1),
        "an account had two connections at once: {most:?}"
    );

    let publishing = rig.publish(PER_ACCOUNT);
    publishing.await.unwrap();
    let twice = rig.wait_delivered(PER_ACCOUNT * rig.names.len()).await;
    assert_eq!(twice, 0);
}
