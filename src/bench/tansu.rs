//! A tansu broker (an Apache Kafka-compatible broker written in Rust, from crates.io, built by
//! scripts/install-tools.sh) with one SCRAM user, for the bench's kafka sink and the kafka
//! destination tests. tansu keeps its topics and users in a SQLite file of its own; it is
//! started once without authentication to create `USER` (SCRAM-SHA-256 and -512), then again,
//! on the same storage and port, requiring a login. (tansu offers no PLAIN.)

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use rskafka::client::{Client, ClientBuilder, Credentials, SaslConfig};
use tokio::process::{Child, Command};

/// The SCRAM user every broker started here knows, and its password.
pub const USER: &str = "jetpost";
pub const PASSWORD: &str = "kafka-secret-password";

/// A running broker; killed, and its storage removed, on drop.
pub struct TansuBroker {
    _child: Child,
    _storage: tempfile::TempDir,
    advertised: u16,
}

impl TansuBroker {
    /// A broker listening on 127.0.0.1:`port` that tells clients to connect to
    /// 127.0.0.1:`advertised` (the same port, or a proxy in front of it).
    pub async fn start(port: u16, advertised: u16) -> anyhow::Result<TansuBroker> {
        let binary = binary()?;
        let storage = tempfile::tempdir()?;
        let open = spawn(&binary, storage.path(), port, advertised, false)?;
        wait_listening(port).await?;
        for mechanism in ["scram256", "scram512"] {
            let status = Command::new(&binary)
                .args(["user", "create", "--broker"])
                .arg(format!("tcp://127.0.0.1:{port}"))
                .args([USER, PASSWORD, "--mechanism", mechanism])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .await?;
            ensure!(
                status.success(),
                "tansu user create ({mechanism}): {status}"
            );
        }
        drop(open);
        // The first broker is killed on drop; wait until its port is free again.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            ensure!(
                tokio::time::Instant::now() < deadline,
                "tansu did not stop within 10 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let child = spawn(&binary, storage.path(), port, advertised, true)?;
        wait_listening(port).await?;
        Ok(TansuBroker {
            _child: child,
            _storage: storage,
            advertised,
        })
    }

    /// `127.0.0.1:<advertised port>`: what a destination's `config.brokers` names.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.advertised)
    }

    /// A client logged in as `USER` with SCRAM-SHA-512.
    pub async fn client(&self) -> anyhow::Result<Client> {
        let credentials = Credentials::new(USER.into(), PASSWORD.into());
        let built = ClientBuilder::new(vec![self.address()])
            .sasl_config(SaslConfig::ScramSha512(credentials))
            .build();
        tokio::time::timeout(Duration::from_secs(30), built)
            .await
            .context("tansu did not answer within 30 s")?
            .context("logging in to tansu")
    }
}

/// tansu on `port` with its storage in `dir`, logins required or not.
fn spawn(
    binary: &Path,
    dir: &Path,
    port: u16,
    advertised: u16,
    authentication: bool,
) -> anyhow::Result<Child> {
    Command::new(binary)
        .args(["broker", "--listener-url"])
        .arg(format!("tcp://127.0.0.1:{port}"))
        .arg("--advertised-listener-url")
        .arg(format!("tcp://127.0.0.1:{advertised}"))
        // A relative path: tansu reads the URL's host and path as one path in its directory.
        .args(["--storage-engine", "sqlite://tansu.db", "--silent"])
        .args(authentication.then_some("--authentication"))
        .current_dir(dir)
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))
}

async fn wait_listening(port: u16) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "tansu did not listen on 127.0.0.1:{port} within 30 s; run it by hand to see why"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// `TANSU_BIN`, else `.tools/bin/tansu` (run from the project root, as cargo runs tests).
pub fn binary() -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("TANSU_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(".tools/bin/tansu"));
    if !path.exists() {
        bail!(
            "tansu not found at {}: run scripts/install-tools.sh from the project root, or set \
             TANSU_BIN",
            path.display()
        );
    }
    // Absolute: the broker runs in its storage directory.
    Ok(std::path::absolute(path)?)
}
