//! The HTTP API end to end: the whole service started in-process through `app::run` on a free
//! loopback port (SQLite in a temporary folder, or a Postgres schema of its own), called with
//! reqwest as an SDK would.

mod auth;
mod destinations;
mod edges;
mod errors;
mod events;
mod filters;
mod flow;
mod ids;
mod metrics;
mod nats;
pub mod stored_data;
mod tenants;

use std::time::Duration;

use jetpost::app::{Migrations, run};
use jetpost::config::{Config, DatabaseUrl, Secret};
use jetpost::store::Store;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::support::db::TestDb;

pub const API_KEY: &str = "test-admin-key";
pub const JWT_SECRET: &str = "test-jwt-secret";
pub const AES: &str = "test-aes-secret";
/// A webhook URL for tests that publish but don't look at deliveries: a closed loopback port,
/// so the dispatcher's attempts fail fast without leaving the machine.
pub const NOWHERE: &str = "http://127.0.0.1:1/hook";

/// Runs each listed test against SQLite and Postgres: `<module>::sqlite::<case>` and
/// `<module>::postgres::<case>`.
#[macro_export]
macro_rules! on_both_backends {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case($crate::support::db::TestDb::sqlite().await).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case($crate::support::db::TestDb::postgres().await).await;
                }
            )*
        }
    };
}

/// Credentials for one call.
#[derive(Debug, Clone)]
pub enum Auth {
    None,
    Admin,
    Bearer(String),
}

impl Auth {
    /// `req` with these credentials.
    fn apply(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self {
            Auth::None => req,
            Auth::Admin => req.bearer_auth(API_KEY),
            Auth::Bearer(token) => req.bearer_auth(token),
        }
    }
}

/// A running jetpost; stopped when dropped.
pub struct Service {
    base: String,
    client: reqwest::Client,
    stop: CancellationToken,
    task: Option<JoinHandle<anyhow::Result<()>>>,
    db: TestDb,
}

impl Service {
    /// jetpost on a fresh SQLite file with the test keys.
    pub async fn start() -> Service {
        Service::start_with(TestDb::sqlite().await, |_| {}).await
    }

    pub async fn start_on(db: TestDb) -> Service {
        Service::start_with(db, |_| {}).await
    }

    /// jetpost on `db`, with `tweak` applied to the test configuration.
    pub async fn start_with(db: TestDb, tweak: impl FnOnce(&mut Config)) -> Service {
        crate::support::init_logs();
        let mut config = Config {
            api_key: Secret::new(API_KEY),
            api_jwt_secret: Secret::new(JWT_SECRET),
            aes_encryption_secret: Secret::new(AES),
            database_url: DatabaseUrl::new(db.url()),
            ..Config::default()
        };
        // The receivers tests deliver to are on loopback.
        config.destinations.webhook.block_private_ips = false;
        tweak(&mut config);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(config, listener, Migrations::Apply, stop.clone()));
        let service = Service {
            base,
            client: crate::support::http_client(),
            stop,
            task: Some(task),
            db,
        };
        service.wait_ready().await;
        service
    }

    async fn wait_ready(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let ready = self
                .client
                .get(self.url("/healthz"))
                .timeout(Duration::from_secs(5))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return;
            }
            if let Some(task) = &self.task
                && task.is_finished()
            {
                panic!("jetpost stopped before it was ready (see JETPOST_TEST_LOG=info)");
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "jetpost did not become ready within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A second handle on the service's database (as another replica would have).
    pub async fn store(&self) -> Store {
        Store::connect(self.db.url(), Some(AES)).await.unwrap()
    }

    /// Sends a request; the body is JSON when given. Returns the status and the JSON body
    /// (`Value::Null` when the body is empty).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        auth: &Auth,
        body: Option<&Value>,
    ) -> (StatusCode, Value) {
        let method_name = method.to_string();
        let mut req = self
            .client
            .request(method, self.url(path))
            .timeout(Duration::from_secs(60));
        req = auth.apply(req);
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let bytes = resp.bytes().await.unwrap();
        let json = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                panic!(
                    "{path}: body is not JSON ({e}): {}",
                    String::from_utf8_lossy(&bytes)
                )
            })
        };
        if !json.is_null() {
            crate::support::contract::check(&method_name, path, status.as_u16(), &json);
        }
        (status, json)
    }

    /// Sends raw bytes with a JSON content type.
    pub async fn call_raw(
        &self,
        method: Method,
        path: &str,
        auth: &Auth,
        body: Vec<u8>,
    ) -> (StatusCode, Value) {
        let method_name = method.to_string();
        let req = self
            .client
            .request(method, self.url(path))
            .header("content-type", "application/json")
            .body(body);
        let resp = auth.apply(req).send().await.unwrap();
        let status = resp.status();
        let bytes = resp.bytes().await.unwrap();
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if !json.is_null() {
            crate::support::contract::check(&method_name, path, status.as_u16(), &json);
        }
        (status, json)
    }

    pub async fn get(&self, path: &str, auth: &Auth) -> (StatusCode, Value) {
        self.call(Method::GET, path, auth, None).await
    }

    /// A GET whose body is returned as sent, for answers `serde_json::Value` cannot read
    /// (stored data with numbers beyond f64). The caller checks the contract.
    pub async fn get_bytes(&self, path: &str, auth: &Auth) -> (StatusCode, Vec<u8>) {
        let req = self
            .client
            .get(self.url(path))
            .timeout(Duration::from_secs(60));
        let resp = auth.apply(req).send().await.unwrap();
        let status = resp.status();
        (status, resp.bytes().await.unwrap().to_vec())
    }

    /// An admin call that must answer `expected`; returns the body.
    pub async fn admin(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        expected: StatusCode,
    ) -> Value {
        let (status, json) = self.call(method, path, &Auth::Admin, body).await;
        assert_eq!(status, expected, "{path}: {json}");
        json
    }

    /// Creates (or updates) a tenant as the admin.
    pub async fn tenant(&self, id: &str) -> Value {
        let (status, json) = self
            .call(
                Method::PUT,
                &format!("/api/v1/tenants/{id}"),
                &Auth::Admin,
                None,
            )
            .await;
        assert!(status.is_success(), "PUT tenant {id}: {status} {json}");
        json
    }

    /// A tenant JWT issued by the service.
    pub async fn token(&self, tenant: &str) -> Auth {
        let json = self
            .admin(
                Method::GET,
                &format!("/api/v1/tenants/{tenant}/token"),
                None,
                StatusCode::OK,
            )
            .await;
        Auth::Bearer(json["token"].as_str().unwrap().to_owned())
    }

    /// Creates a webhook destination as the admin; returns it.
    pub async fn webhook(&self, tenant: &str, body: Value) -> Value {
        self.admin(
            Method::POST,
            &format!("/api/v1/tenants/{tenant}/destinations"),
            Some(&body),
            StatusCode::CREATED,
        )
        .await
    }

    /// Publishes as the admin; returns the publish response.
    pub async fn publish(&self, event: Value) -> Value {
        self.admin(
            Method::POST,
            "/api/v1/publish",
            Some(&event),
            StatusCode::ACCEPTED,
        )
        .await
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            // Let the service close its pools before the database goes away.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    let _ = tokio::time::timeout(Duration::from_secs(10), async {
                        while !task.is_finished() {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    })
                    .await;
                });
            })
            .join();
        }
    }
}

/// The `data` messages of a 422.
pub fn messages(body: &Value) -> Vec<String> {
    body["data"]
        .as_array()
        .unwrap_or_else(|| panic!("no data array in {body}"))
        .iter()
        .map(|m| m.as_str().unwrap().to_owned())
        .collect()
}

/// Asserts Outpost's error shape: `{status, message}` with the HTTP status repeated.
pub fn assert_error(status: StatusCode, body: &Value, expected: StatusCode) {
    assert_eq!(status, expected, "{body}");
    assert_eq!(body["status"], expected.as_u16(), "{body}");
    assert!(body["message"].is_string(), "{body}");
}
