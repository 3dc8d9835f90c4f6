//! A `jetpost serve` child process: the real binary, configured through environment variables,
//! stopped with SIGTERM or SIGKILL like an orchestrator would. Killed on drop.

use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::process::{Child, Command};

pub struct Serve {
    child: Child,
    /// `API_HOST` when given, else `127.0.0.1` (`serve` listens on every interface).
    pub host: String,
    pub port: u16,
    /// Everything the process wrote to stderr (its logs) so far.
    logs: Arc<Mutex<String>>,
}

impl Serve {
    /// Starts `jetpost serve` with only `env` (plus, unless given, a free `API_PORT`,
    /// `LOG_LEVEL=warn`, an `AES_ENCRYPTION_SECRET`, and `DESTINATIONS_WEBHOOK_BLOCK_PRIVATE_IPS`
    /// off since test receivers are on loopback) and waits until `/healthz` answers.
    pub async fn start(env: &[(&str, &str)]) -> Serve {
        let port = free_port();
        let mut command = Command::new(env!("CARGO_BIN_EXE_jetpost"));
        command
            .arg("serve")
            .env_clear()
            .env("API_PORT", port.to_string())
            .env("LOG_LEVEL", "warn")
            .env("AES_ENCRYPTION_SECRET", "test-serve-aes-secret")
            .env("DESTINATIONS_WEBHOOK_BLOCK_PRIVATE_IPS", "false")
            .envs(env.iter().copied())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().expect("start jetpost serve");
        let (logs, _) = super::collect_output(child.stderr.take().expect("piped stderr"));
        let host = env
            .iter()
            .find(|(name, _)| *name == "API_HOST")
            .map_or("127.0.0.1", |(_, host)| *host)
            .to_owned();
        let serve = Serve {
            child,
            host,
            port,
            logs,
        };
        serve.wait_healthy().await;
        serve
    }

    /// The process id, e.g. to read its memory from `/proc/<pid>/status`.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("jetpost serve is running")
    }

    /// The process's logs so far.
    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }

    /// `http://<host>:<port>` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}:{}{path}", self.host, self.port)
    }

    pub async fn wait_healthy(&self) {
        let client = crate::support::http_client();
        let url = self.url("/healthz");
        for _ in 0..300 {
            if client
                .get(&url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "jetpost serve did not become healthy at {url}; logs:\n{}",
            self.logs()
        );
    }

    /// SIGTERM, then waits for the exit (at most `within`).
    pub async fn terminate(&mut self, within: Duration) -> ExitStatus {
        let pid = self.child.id().expect("running").to_string();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -TERM {pid}");
        tokio::time::timeout(within, self.child.wait())
            .await
            .unwrap_or_else(|_| {
                panic!("jetpost serve did not exit within {within:?} after SIGTERM")
            })
            .unwrap()
    }

    /// SIGKILL: no chance to clean up.
    pub async fn kill(&mut self) -> ExitStatus {
        self.child.start_kill().unwrap();
        self.child.wait().await.unwrap()
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
