//! The `jetpost` binary as an operator uses it: exit codes, what it prints, and what it changes
//! on a real nats-server and a real store.

use std::process::Output;

use async_nats::jetstream;

use crate::support::nats::connect_as;

async fn jetpost(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_jetpost"));
    command.args(args).env_clear().envs(env.iter().copied());
    command.output().await.unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn filter_check_prints_match_or_no_match_with_exit_codes() {
    let filter = r#"{"data":{"amount":{"$gte":100}},"topic":{"$startsWith":"order."}}"#;
    let yes = jetpost(
        &[
            "filter",
            "check",
            "--filter",
            filter,
            "--event",
            r#"{"topic":"order.paid","data":{"amount":120}}"#,
        ],
        &[],
    )
    .await;
    assert_eq!((yes.status.code(), stdout(&yes).trim()), (Some(0), "match"));
    let no = jetpost(
        &[
            "filter",
            "check",
            "--filter",
            filter,
            "--event",
            r#"{"topic":"order.paid","data":{"amount":99}}"#,
        ],
        &[],
    )
    .await;
    assert_eq!(
        (no.status.code(), stdout(&no).trim()),
        (Some(1), "no match")
    );
    let bad = jetpost(
        &[
            "filter",
            "check",
            "--filter",
            r#"{"data":{"x":{"$near":1}}}"#,
            "--event",
            r#"{"data":{}}"#,
        ],
        &[],
    )
    .await;
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("$near"), "{}", stderr(&bad));
}

#[tokio::test]
async fn invalid_configuration_lists_every_problem_and_exits_2() {
    let out = jetpost(
        &["serve"],
        &[
            ("API_PORT", "70000"),
            ("PUBLISH_NATS_SERVERS", "nats://127.0.0.1:4"),
            ("DELIVERY_MAX_CONCURRENCY", "0"),
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    for needle in ["API_PORT", "API_KEY", "PUBLISH_NATS_SERVERS"] {
        assert!(err.contains(needle), "{needle} missing from: {err}");
    }
}

#[tokio::test]
async fn serve_refuses_to_start_without_the_encryption_secret() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/jetpost.db", dir.path().display());
    let out = jetpost(
        &["serve"],
        &[
            ("API_KEY", "k"),
            ("API_PORT", "0"),
            ("DATABASE_URL", url.as_str()),
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("aes_encryption_secret (AES_ENCRYPTION_SECRET): empty")
            && err.contains("encrypts destination credentials"),
        "{err}"
    );
    assert!(
        !dir.path().join("jetpost.db").exists(),
        "refused before touching the store"
    );
}

#[tokio::test]
async fn serve_listens_on_api_host_only() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/jetpost.db", dir.path().display());
    // 127.0.0.2 is loopback too, but a socket bound to it does not answer on 127.0.0.1.
    let serve = crate::support::serve::Serve::start(&[
        ("API_KEY", "k"),
        ("API_HOST", "127.0.0.2"),
        ("DATABASE_URL", url.as_str()),
    ])
    .await;
    let elsewhere = tokio::net::TcpStream::connect(("127.0.0.1", serve.port)).await;
    assert!(elsewhere.is_err(), "answered on 127.0.0.1 too");
}

#[tokio::test]
async fn serve_no_migrate_refuses_a_fresh_store_until_migrate_ran() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/jetpost.db", dir.path().display());
    let env = [
        ("API_KEY", "k"),
        ("AES_ENCRYPTION_SECRET", "aes"),
        ("API_PORT", "0"),
        ("DATABASE_URL", url.as_str()),
    ];
    let refused = jetpost(&["serve", "--no-migrate"], &env).await;
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stderr(&refused).contains("jetpost migrate"),
        "{}",
        stderr(&refused)
    );
    let migrated = jetpost(&["migrate"], &env).await;
    assert_eq!(migrated.status.code(), Some(0), "{}", stderr(&migrated));
    assert!(stdout(&migrated).contains("up to date"));
    let again = jetpost(&["migrate"], &env).await;
    assert!(
        stdout(&again).contains("(0 applied now)"),
        "{}",
        stdout(&again)
    );
}

#[tokio::test]
async fn accounts_check_prints_a_table_and_fails_on_a_broken_account() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("acme");
    std::fs::create_dir_all(&good).unwrap();
    std::fs::write(
        good.join("meta.yaml"),
        "tenant_id: acme\nstream: EVENTS\nconsumer: jetpost\n",
    )
    .unwrap();
    let root = dir.path().to_str().unwrap();
    let ok = jetpost(&["accounts", "check", root], &[]).await;
    assert_eq!(ok.status.code(), Some(0), "{}", stderr(&ok));
    assert!(stdout(&ok).contains("acme") && stdout(&ok).contains("all valid"));

    let broken = dir.path().join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(broken.join("meta.yaml"), "stream: EVENTS\n").unwrap();
    let bad = jetpost(&["accounts", "check", root], &[]).await;
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        stdout(&bad).contains("broken") && stdout(&bad).contains("`tenant_id` is required"),
        "{}",
        stdout(&bad)
    );
}

#[tokio::test]
async fn nats_declare_publish_and_aggregate_helpers_work_on_a_real_server() {
    let server = crate::support::aggregate::aggregate_server(&["acme"], "central").await;
    let url = server.url();
    let acme_creds = server.creds_path("acme").unwrap();
    let acme_creds = acme_creds.to_str().unwrap();
    let declare = [
        "nats",
        "declare",
        "--server",
        &url,
        "--creds",
        acme_creds,
        "--stream",
        "EVENTS",
        "--subjects",
        "events.>",
        "--consumer",
        "jetpost",
        "--max-deliver",
        "20",
    ];
    let out = jetpost(&declare, &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("created work-queue stream \"EVENTS\""));
    let again = jetpost(&declare, &[]).await;
    assert!(
        stdout(&again).contains("exists"),
        "declare is idempotent: {}",
        stdout(&again)
    );

    let js = jetstream::new(connect_as(&server, "acme").await);
    let consumer = js
        .get_stream("EVENTS")
        .await
        .unwrap()
        .consumer_info("jetpost")
        .await
        .unwrap();
    assert_eq!(consumer.config.max_deliver, 20);
    assert_eq!(
        consumer.config.ack_policy,
        jetstream::consumer::AckPolicy::Explicit
    );
    assert!(consumer.config.deliver_subject.is_none(), "a pull consumer");

    let publish = [
        "nats",
        "publish",
        "--server",
        &url,
        "--creds",
        acme_creds,
        "--subject",
        "events.x",
        "--count",
        "25",
        "--data",
        r#"{"data":{}}"#,
    ];
    let out = jetpost(&publish, &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("published 25 message(s)"),
        "{}",
        stdout(&out)
    );
    assert_eq!(
        js.get_stream("EVENTS")
            .await
            .unwrap()
            .info()
            .await
            .unwrap()
            .state
            .messages,
        25
    );

    let central_creds = server.creds_path("central").unwrap();
    let add = [
        "nats",
        "aggregate",
        "add-tenant",
        "--server",
        &url,
        "--creds",
        central_creds.to_str().unwrap(),
        "--stream",
        "AGG",
        "--tenant",
        "acme",
    ];
    let out = jetpost(&add, &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let central = jetstream::new(connect_as(&server, "central").await);
    crate::support::nats::wait_until(
        "the tenant's backlog sourced into the aggregate stream",
        || async {
            central
                .get_stream("AGG")
                .await
                .unwrap()
                .info()
                .await
                .unwrap()
                .state
                .messages
                == 25
        },
    )
    .await;
    let mut agg = central.get_stream("AGG").await.unwrap();
    let first = agg.get_raw_message(1).await.unwrap();
    assert_eq!(first.subject.as_str(), "tenant.acme.events.x");
    let remove = [
        "nats",
        "aggregate",
        "remove-tenant",
        "--server",
        &url,
        "--creds",
        central_creds.to_str().unwrap(),
        "--stream",
        "AGG",
        "--tenant",
        "acme",
    ];
    let out = jetpost(&remove, &[]).await;
    assert!(
        stdout(&out).contains("removed tenant \"acme\""),
        "{}",
        stdout(&out)
    );
    let _ = agg.info().await.unwrap();
}
