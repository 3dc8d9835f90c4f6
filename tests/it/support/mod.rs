//! Helpers shared by the integration tests: real servers started per test and stopped on drop.
#![allow(dead_code)]

pub mod aggregate;
pub mod browser;
pub mod contract;
pub mod db;
pub mod moto;
pub mod nats;
pub mod pipeline;
pub mod proxy;
pub mod receiver;
pub mod serve;
pub mod sink;
pub mod tansu;

/// An HTTP client for tests. reqwest is built without a bundled crypto provider; jetpost uses
/// rustls with ring, installed once per process.
pub fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().build().expect("http client")
}

/// Reads `pipe` (a child process's stderr, say) to its end in the background; returns the text
/// so far, growing as it arrives, and the reading task.
pub fn collect_output(
    mut pipe: impl tokio::io::AsyncRead + Unpin + Send + 'static,
) -> (
    std::sync::Arc<std::sync::Mutex<String>>,
    tokio::task::JoinHandle<()>,
) {
    use tokio::io::AsyncReadExt as _;
    let text = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let sink = text.clone();
    let reader = tokio::spawn(async move {
        let mut buf = [0u8; 8192];
        while let Ok(n) = pipe.read(&mut buf).await {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    (text, reader)
}

/// Test logs: set `JETPOST_TEST_LOG=debug` (or any tracing filter) to see the service's logs.
pub fn init_logs() {
    if let Ok(filter) = std::env::var("JETPOST_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    }
}
