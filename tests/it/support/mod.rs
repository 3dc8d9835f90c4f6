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

/// Test logs: set `JETPOST_TEST_LOG=debug` (or any tracing filter) to see the service's logs.
pub fn init_logs() {
    if let Ok(filter) = std::env::var("JETPOST_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    }
}
