//! `jetpost dev`: a local sandbox in one command. A nats-server in operator/JWT mode with two demo
//! tenant accounts (streams, durable consumers, `.creds`), an accounts directory, a SQLite store,
//! a demo webhook receiver that prints what it receives and checks signatures, the service itself,
//! demo tenants and destinations created through the API (plus a RabbitMQ destination whose
//! messages are printed, when RabbitMQ answers on 127.0.0.1:5672), a few sample events, and each
//! tenant's portal link.
//! Ctrl-C stops it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use futures::StreamExt as _;
use tokio_util::sync::CancellationToken;

use crate::app::{self, Migrations};
use crate::bench::destinations::bound_queue;
use crate::config::{Config, DatabaseUrl, Secret};
use crate::destination::webhook::signature::sign_default;
use crate::local_nats::{AccountSpec, BinaryLookup, LocalNatsServer, ServerOptions};
use crate::source::nats::topology::{self, Declaration};

const TENANTS: [&str; 2] = ["acme", "globex"];
const API_KEY: &str = "jetpost-dev-key";
const DEV_DIR: &str = ".jetpost-dev";

pub async fn run() -> anyhow::Result<()> {
    let root = PathBuf::from(DEV_DIR);
    let nats_dir = root.join("nats");
    let accounts_dir = root.join("accounts");
    // Keys and JetStream state of an earlier run would clash with the new operator.
    for dir in [&nats_dir, &accounts_dir] {
        if dir.exists() {
            std::fs::remove_dir_all(dir).with_context(|| format!("clearing {}", dir.display()))?;
        }
    }
    std::fs::create_dir_all(&accounts_dir)?;
    let _ = std::fs::remove_file(root.join("jetpost.db"));

    let binary = BinaryLookup::from_env(None).find().await?;
    let mut options = ServerOptions::new(binary);
    options.dir = Some(nats_dir.clone());
    let nats = LocalNatsServer::start_operator(options, TENANTS.map(AccountSpec::new)).await?;
    for tenant in TENANTS {
        let js = async_nats::jetstream::new(nats.connect_as(tenant).await?);
        topology::declare(&js, &demo_declaration())
            .await
            .map_err(anyhow::Error::msg)?;
        let dir = accounts_dir.join(tenant);
        std::fs::create_dir_all(&dir)?;
        std::fs::copy(nats.creds_path(tenant)?, dir.join("user.creds"))?;
        std::fs::write(
            dir.join("meta.yaml"),
            format!("tenant_id: {tenant}\nstream: EVENTS\nconsumer: jetpost\n"),
        )?;
    }

    let stop = CancellationToken::new();
    let receiver = start_receiver(stop.clone()).await?;
    let listener = bind_api().await?;
    let api = listener.local_addr()?;
    let config = dev_config(&root, &nats.url(), &accounts_dir, api.port())?;
    let service = tokio::spawn(app::run(config, listener, Migrations::Apply, stop.clone()));

    let client = http_client();
    let base = format!("http://{api}/api/v1");
    wait_healthy(&client, &format!("http://{api}/healthz")).await?;
    for tenant in TENANTS {
        create_demo_tenant(&client, &base, tenant, &receiver).await?;
    }
    let rabbitmq = demo_rabbitmq(&client, &base, TENANTS[0]).await;
    for tenant in TENANTS {
        let js = async_nats::jetstream::new(nats.connect_as(tenant).await?);
        for (i, topic) in ["order.created", "order.paid"].iter().enumerate() {
            let body = format!(
                r#"{{"topic":"{topic}","data":{{"order":"ord_{i}","tenant":"{tenant}","amount":{}}}}}"#,
                1000 + i
            );
            js.publish("events.demo", body.into()).await?.await?;
        }
    }

    let mut portals = Vec::new();
    for tenant in TENANTS {
        portals.push((tenant, portal_link(&client, &base, tenant).await?));
    }
    print_summary(&nats, &api, &receiver, &root)?;
    println!("Tenant portals (links valid for 24 hours):");
    for (tenant, link) in &portals {
        println!("  {tenant:<13} {link}");
    }
    println!();
    match &rabbitmq {
        Ok(_) => println!(
            "  rabbitmq      {RABBITMQ}: {} also delivers to exchange {RABBITMQ_DEMO} (printed \
             below as [rabbitmq])\n",
            TENANTS[0]
        ),
        Err(err) => println!("  rabbitmq      not used: {err:#}\n"),
    }
    tokio::select! {
        _ = tokio::signal::ctrl_c() => println!("\nstopping…"),
        result = service => {
            result.context("the service task failed")??;
            bail!("the service stopped unexpectedly");
        }
    }
    stop.cancel();
    // Let the service drain before the NATS server goes away with `nats`'s drop.
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(nats);
    Ok(())
}

/// The RabbitMQ `jetpost dev` offers a destination on, when one answers there.
const RABBITMQ: &str = "127.0.0.1:5672";
/// The demo's exchange and queue (deleted by RabbitMQ when the demo stops).
const RABBITMQ_DEMO: &str = "jetpost-dev";

/// When RabbitMQ answers at `RABBITMQ` (guest/guest), a `rabbitmq` destination for `tenant`
/// to a demo exchange, and a consumer that prints what arrives; the connection stays open
/// while it runs.
async fn demo_rabbitmq(
    client: &reqwest::Client,
    base: &str,
    tenant: &str,
) -> anyhow::Result<lapin::Connection> {
    let reachable = tokio::time::timeout(
        Duration::from_secs(1),
        tokio::net::TcpStream::connect(RABBITMQ),
    )
    .await;
    if !matches!(reachable, Ok(Ok(_))) {
        bail!("nothing answers at {RABBITMQ}");
    }
    let (connection, mut deliveries) = bound_queue(RABBITMQ, RABBITMQ_DEMO).await?;
    let destination = serde_json::json!({
        "id": format!("{tenant}-rabbitmq"),
        "type": "rabbitmq",
        "topics": "*",
        "config": {"server_url": RABBITMQ, "exchange": RABBITMQ_DEMO},
        "credentials": {"username": "guest", "password": "guest"},
    });
    as_admin(
        client
            .post(format!("{base}/tenants/{tenant}/destinations"))
            .json(&destination),
        &format!("creating {tenant}'s rabbitmq destination"),
    )
    .await?;
    tokio::spawn(async move {
        while let Some(Ok(delivery)) = deliveries.next().await {
            let id = delivery.properties.message_id().clone().unwrap_or_default();
            println!(
                "[rabbitmq] {RABBITMQ_DEMO} ← {} {} body {}",
                delivery.routing_key,
                id,
                String::from_utf8_lossy(&delivery.data)
            );
        }
    });
    Ok(connection)
}

fn demo_declaration() -> Declaration {
    Declaration {
        stream: "EVENTS".into(),
        subjects: vec!["events.>".into()],
        consumer: "jetpost".into(),
        max_deliver: None,
        ack_wait: Duration::from_secs(30),
        max_ack_pending: 4096,
    }
}

fn dev_config(
    root: &Path,
    nats_url: &str,
    accounts_dir: &Path,
    port: u16,
) -> anyhow::Result<Config> {
    let mut config = Config {
        api_port: port,
        api_key: Secret::from(API_KEY),
        api_jwt_secret: Secret::from("jetpost-dev-jwt-secret"),
        aes_encryption_secret: Secret::from("jetpost-dev-aes-secret"),
        database_url: DatabaseUrl::new(format!("sqlite://{}/jetpost.db", root.display())),
        retry_schedule: vec![1, 2, 5],
        ..Config::default()
    };
    // The demo receiver is on loopback, which the SSRF guard would refuse.
    config.destinations.webhook.block_private_ips = false;
    config.publishmq.nats.servers = vec![nats_url.to_owned()];
    config.publishmq.nats.accounts_dir = Some(accounts_dir.to_owned());
    config
        .validate()
        .map_err(|errors| anyhow::anyhow!("dev config: {errors}"))?;
    crate::telemetry::init_logging("warn,jetpost=info", config.log_format);
    Ok(config)
}

/// Port 3333 like `serve`, or any free port when it is taken.
async fn bind_api() -> anyhow::Result<tokio::net::TcpListener> {
    match tokio::net::TcpListener::bind("127.0.0.1:3333").await {
        Ok(listener) => Ok(listener),
        Err(_) => Ok(tokio::net::TcpListener::bind("127.0.0.1:0").await?),
    }
}

fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

async fn wait_healthy(client: &reqwest::Client, url: &str) -> anyhow::Result<()> {
    for _ in 0..100 {
        if client
            .get(url)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("the service did not become healthy at {url}")
}

fn demo_secret(tenant: &str) -> String {
    format!("whsec_dev_{tenant}")
}

async fn create_demo_tenant(
    client: &reqwest::Client,
    base: &str,
    tenant: &str,
    receiver: &SocketAddr,
) -> anyhow::Result<()> {
    as_admin(
        client.put(format!("{base}/tenants/{tenant}")),
        &format!("creating tenant {tenant}"),
    )
    .await?;
    let destination = serde_json::json!({
        "id": format!("{tenant}-webhook"),
        "type": "webhook",
        "topics": "*",
        "config": {"url": format!("http://{receiver}/{tenant}")},
        "credentials": {"secret": demo_secret(tenant)},
    });
    as_admin(
        client
            .post(format!("{base}/tenants/{tenant}/destinations"))
            .json(&destination),
        &format!("creating {tenant}'s destination"),
    )
    .await?;
    Ok(())
}

/// Sends `request` with the dev API key; a refusal is an error naming `what` was being done.
async fn as_admin(
    request: reqwest::RequestBuilder,
    what: &str,
) -> anyhow::Result<reqwest::Response> {
    let response = request.bearer_auth(API_KEY).send().await?;
    if !response.status().is_success() {
        bail!(
            "{what}: {} {}",
            response.status(),
            response.text().await.unwrap_or_default()
        );
    }
    Ok(response)
}

/// The tenant's portal link, as a platform would ask for it to send a customer there.
async fn portal_link(client: &reqwest::Client, base: &str, tenant: &str) -> anyhow::Result<String> {
    let response = as_admin(
        client.get(format!("{base}/tenants/{tenant}/portal")),
        &format!("asking for {tenant}'s portal link"),
    )
    .await?;
    let body: serde_json::Value = response.json().await?;
    body["redirect_url"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("{tenant}'s portal link: no redirect_url in {body}"))
}

/// The demo webhook receiver: prints each delivery and whether its signature verifies.
async fn start_receiver(stop: CancellationToken) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new().route("/{tenant}", axum::routing::post(receive));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
    });
    Ok(addr)
}

async fn receive(
    axum::extract::Path(tenant): axum::extract::Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_owned()
    };
    let expected = sign_default(&demo_secret(&tenant), &body);
    let signature = header("x-outpost-signature");
    let verified = signature
        .split(',')
        .any(|s| s.trim_start_matches("v0=") == expected.trim_start_matches("v0="));
    println!(
        "[receiver] {tenant} ← {} {} signature {} body {}",
        header("x-outpost-topic"),
        header("x-outpost-event-id"),
        if verified { "ok" } else { "INVALID" },
        String::from_utf8_lossy(&body)
    );
    StatusCode::OK
}

fn print_summary(
    nats: &LocalNatsServer,
    api: &SocketAddr,
    receiver: &SocketAddr,
    root: &Path,
) -> anyhow::Result<()> {
    let creds = nats.creds_path("acme")?;
    println!();
    println!("jetpost dev is running (Ctrl-C stops everything)");
    println!(
        "  NATS          {} (operator/JWT mode, accounts: {})",
        nats.url(),
        TENANTS.join(", ")
    );
    println!("  accounts dir  {}", root.join("accounts").display());
    println!("  store         sqlite://{}/jetpost.db", root.display());
    println!("  API           http://{api}/api/v1   (Authorization: Bearer {API_KEY})");
    println!("  metrics       http://{api}/metrics");
    println!("  receiver      http://{receiver}/<tenant> (prints every delivery below)");
    println!();
    println!("Publish an event as tenant acme:");
    println!(
        "  jetpost nats publish --server {} --creds {} --subject events.demo \\\n    --data '{{\"topic\":\"order.paid\",\"data\":{{\"order\":\"ord_42\",\"amount\":4200}}}}'",
        nats.url(),
        creds.display()
    );
    println!("or through the API:");
    println!(
        "  curl -s -H 'Authorization: Bearer {API_KEY}' -H 'Content-Type: application/json' \\\n    -d '{{\"tenant_id\":\"acme\",\"topic\":\"order.paid\",\"data\":{{\"order\":\"ord_43\"}}}}' http://{api}/api/v1/publish"
    );
    println!("Look around:");
    println!("  curl -s -H 'Authorization: Bearer {API_KEY}' http://{api}/api/v1/nats/accounts");
    println!(
        "  curl -s -H 'Authorization: Bearer {API_KEY}' 'http://{api}/api/v1/events?tenant_id=acme'"
    );
    println!();
    Ok(())
}
