//! Replica and account leases in the Postgres store: the ground that account ownership across
//! replicas stands on (one owner per account at any time, by the database's clock).

use std::collections::HashSet;
use std::time::Duration;

use jetpost::store::Store;

use crate::support::db::TestDb;

const LONG: Duration = Duration::from_secs(30);
// Long enough that the steps a test takes before it runs out never outlast it on a busy machine.
const SHORT: Duration = Duration::from_secs(2);

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

async fn store(db: &TestDb) -> Store {
    db.store(None).await
}

#[tokio::test]
async fn heartbeats_list_the_live_replicas_without_the_leaving_or_the_silent() {
    let db = TestDb::postgres().await;
    let store = store(&db).await;
    assert_eq!(
        store.replica_heartbeat("r-b", LONG).await.unwrap().live,
        ["r-b"]
    );
    assert_eq!(
        store.replica_heartbeat("r-a", LONG).await.unwrap().live,
        ["r-a", "r-b"]
    );
    // r-c beats once with a short lease, then goes silent.
    store.replica_heartbeat("r-c", SHORT).await.unwrap();
    let beat = store.replica_heartbeat("r-a", LONG).await.unwrap();
    assert_eq!(beat.live, ["r-a", "r-b", "r-c"]);
    // The soonest of the others' leases to run out is r-c's: r-a beats again then.
    let first = beat.first_expiry.expect("other replicas are live");
    assert!(first > Duration::ZERO && first <= SHORT, "{first:?}");
    tokio::time::sleep(SHORT + Duration::from_millis(100)).await;
    assert_eq!(
        store.replica_heartbeat("r-a", LONG).await.unwrap().live,
        ["r-a", "r-b"]
    );

    // A leaving replica is no longer counted, by the others or by its own beats.
    store.replica_leaving("r-b").await.unwrap();
    assert_eq!(
        store.replica_heartbeat("r-a", LONG).await.unwrap().live,
        ["r-a"]
    );
    assert_eq!(
        store.replica_heartbeat("r-b", LONG).await.unwrap().live,
        ["r-a"]
    );

    let view = store.replica_leases().await.unwrap();
    let ids: Vec<&str> = view.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["r-a", "r-b", "r-c"], "seen in the last hour");
    assert!(view[0].live && !view[0].leaving);
    assert!(view[1].live && view[1].leaving);
    assert!(!view[2].live);
}

#[tokio::test]
async fn an_account_has_one_owner_until_it_is_released_or_its_lease_runs_out() {
    let db = TestDb::postgres().await;
    let store = store(&db).await;
    let all = names(&["x", "y", "z"]);
    assert_eq!(
        store
            .hold_accounts("r-a", &names(&["x", "y"]), LONG)
            .await
            .unwrap(),
        ["x", "y"]
    );
    // r-b asks for all three and gets only the free one.
    assert_eq!(store.hold_accounts("r-b", &all, LONG).await.unwrap(), ["z"]);

    // Released by r-a, y goes to the next replica that asks.
    assert_eq!(
        store.release_accounts("r-a", &names(&["y"])).await.unwrap(),
        1
    );
    assert_eq!(
        store.release_accounts("r-b", &names(&["x"])).await.unwrap(),
        0,
        "a replica releases only its own leases"
    );
    assert_eq!(
        store.hold_accounts("r-b", &all, LONG).await.unwrap(),
        ["y", "z"]
    );

    // r-a renews x with a short lease and then stops renewing: once it has run out, r-b takes
    // x, and r-a's late renewal gets nothing.
    assert_eq!(
        store
            .hold_accounts("r-a", &names(&["x"]), SHORT)
            .await
            .unwrap(),
        ["x"]
    );
    assert_eq!(
        store.hold_accounts("r-b", &all, LONG).await.unwrap(),
        ["y", "z"],
        "x's lease still runs"
    );
    tokio::time::sleep(SHORT + Duration::from_millis(100)).await;
    assert_eq!(
        store.hold_accounts("r-b", &all, LONG).await.unwrap(),
        ["x", "y", "z"]
    );
    assert!(
        store
            .hold_accounts("r-a", &names(&["x"]), LONG)
            .await
            .unwrap()
            .is_empty()
    );

    let leases = store.account_leases().await.unwrap();
    let owners: Vec<(&str, &str, bool)> = leases
        .iter()
        .map(|l| (l.account.as_str(), l.replica_id.as_str(), l.live))
        .collect();
    assert_eq!(
        owners,
        [("x", "r-b", true), ("y", "r-b", true), ("z", "r-b", true)]
    );
    let x = &leases[0];
    assert!(x.acquired_at < x.expires_at);
}

/// Three replicas asking for the same 200 accounts at once: each account ends up with exactly
/// one of them.
#[tokio::test]
async fn concurrent_holds_give_every_account_one_owner() {
    let db = TestDb::postgres().await;
    let store = store(&db).await;
    let all: Vec<String> = (0..200).map(|i| format!("acct-{i}")).collect();
    let holds = ["r-a", "r-b", "r-c"].map(|replica| {
        let store = store.clone();
        let all = all.clone();
        tokio::spawn(async move { store.hold_accounts(replica, &all, LONG).await.unwrap() })
    });
    let mut owned = HashSet::new();
    let mut total = 0;
    for hold in holds {
        let held = hold.await.unwrap();
        total += held.len();
        owned.extend(held);
    }
    assert_eq!(total, 200, "no account held twice");
    assert_eq!(owned.len(), 200, "every account held");
}

#[tokio::test]
async fn a_sqlite_store_refuses_ownership_and_says_why() {
    let db = TestDb::sqlite().await;
    let store = store(&db).await;
    let error = store.replica_heartbeat("r-a", LONG).await.unwrap_err();
    assert!(error.to_string().contains("Postgres"), "{error}");
}
