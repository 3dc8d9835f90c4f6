//! SQLite faults: another process holding the write lock past the busy timeout, and a disk that
//! fills up. Messages are nak'ed (never lost, never terminated) and committed once it clears.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream;
use futures::future::BoxFuture;
use jetpost::ingest::Ingest;
use jetpost::source::nats::NatsSource;
use jetpost::source::{IngestSink, Outcome, SourceMessage};
use jetpost::store::{Store, StoreOptions};
use sqlx::Connection as _;

use crate::support::nats::{LocalNatsServer, operator_server, wait_until};
use crate::support::pipeline::{
    NOWHERE, account, ingest, provision, source_config, stream_messages, webhook,
};

/// The real ingest, with every outcome recorded.
struct Recorded {
    ingest: Ingest,
    outcomes: Mutex<Vec<Outcome>>,
}

impl IngestSink for Recorded {
    fn ingest(&self, message: SourceMessage) -> BoxFuture<'_, Outcome> {
        Box::pin(async move {
            let outcome = self.ingest.ingest(message).await;
            self.outcomes.lock().unwrap().push(outcome.clone());
            outcome
        })
    }
}

impl Recorded {
    fn count(&self, wanted: fn(&Outcome) -> bool) -> usize {
        self.outcomes
            .lock()
            .unwrap()
            .iter()
            .filter(|o| wanted(o))
            .count()
    }
}

async fn pipeline(
    server: &LocalNatsServer,
    store: &Store,
) -> (Arc<Recorded>, NatsSource, jetstream::Context) {
    webhook(store, "acme", "all", &["*"], NOWHERE).await;
    let js = provision(server, "acme").await;
    let sink = Arc::new(Recorded {
        ingest: ingest(store, 1),
        outcomes: Mutex::new(Vec::new()),
    });
    let source = NatsSource::start(
        source_config(server, vec![account(server, "acme", "acme")]),
        sink.clone(),
    );
    (sink, source, js)
}

async fn publish_n(js: &jetstream::Context, prefix: &str, n: usize, data: &str) {
    for i in 0..n {
        let body = format!(r#"{{"id":"{prefix}-{i}","data":{{"blob":"{data}"}}}}"#);
        js.publish("events.x", body.into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_locked_database_naks_and_commits_once_the_lock_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/jetpost.db", dir.path().display());
    let options = StoreOptions {
        busy_timeout: Duration::from_millis(500),
        ..Default::default()
    };
    let store = Store::connect_with(&url, None, &options).await.unwrap();
    store.migrate().await.unwrap();
    let server = operator_server(&["acme"]).await;
    let (sink, source, js) = pipeline(&server, &store).await;

    // Another process takes the write lock and keeps it well past the busy timeout.
    let mut locker = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut locker)
        .await
        .unwrap();
    publish_n(&js, "locked", 5, "x").await;
    wait_until("ingest reports the lock as a transient failure", || async {
        sink.count(|o| matches!(o, Outcome::Retry(_))) > 0
    })
    .await;
    assert_eq!(
        sink.count(|o| matches!(o, Outcome::Rejected(_))),
        0,
        "a locked store never rejects"
    );
    sqlx::query("ROLLBACK").execute(&mut locker).await.unwrap();
    drop(locker);

    wait_until("all five committed after the lock is released", || async {
        let mut all = true;
        for i in 0..5 {
            all &= store
                .get_event("acme", &format!("locked-{i}"))
                .await
                .is_ok_and(|e| e.is_some());
        }
        all
    })
    .await;
    wait_until("every message acked", || async {
        stream_messages(&js).await == 0
    })
    .await;
    source.stop().await;
}

/// A tmpfs of `size` mounted at `path` (the suite runs as root, as CI does); unmounted on drop.
struct SmallDisk {
    path: std::path::PathBuf,
}

impl SmallDisk {
    fn mount(path: &std::path::Path, size: &str) -> SmallDisk {
        std::fs::create_dir_all(path).unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .expect("mount must run: the fault suite needs root to mount a small tmpfs");
        assert!(
            status.success(),
            "mounting a tmpfs failed: the fault suite needs root"
        );
        SmallDisk {
            path: path.to_owned(),
        }
    }

    fn grow(&self, size: &str) {
        let status = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.path)
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}

#[tokio::test]
async fn a_full_disk_naks_and_commits_once_there_is_room() {
    crate::support::init_logs();
    let dir = tempfile::tempdir().unwrap();
    let disk = SmallDisk::mount(&dir.path().join("disk"), "1m");
    let url = format!("sqlite://{}/jetpost.db", disk.path.display());
    let store = Store::connect(&url, None).await.unwrap();
    store.migrate().await.unwrap();
    let server = operator_server(&["acme"]).await;
    let (sink, source, js) = pipeline(&server, &store).await;

    // 60 events of ~40 KB cannot fit in what is left of 1 MB.
    let blob = "y".repeat(40_000);
    publish_n(&js, "full", 60, &blob).await;
    wait_until(
        "ingest reports the full disk as a transient failure",
        || async { sink.count(|o| matches!(o, Outcome::Retry(_))) > 0 },
    )
    .await;
    assert_eq!(
        sink.count(|o| matches!(o, Outcome::Rejected(_))),
        0,
        "a full disk never rejects"
    );
    disk.grow("64m");
    wait_until("all sixty committed once there is room", || async {
        let mut all = true;
        for i in 0..60 {
            all &= store
                .get_event("acme", &format!("full-{i}"))
                .await
                .is_ok_and(|e| e.is_some());
        }
        all
    })
    .await;
    source.stop().await;
    store.close().await;
}
