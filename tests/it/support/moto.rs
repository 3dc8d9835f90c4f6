//! A moto standalone server (SQS, S3, Kinesis and IAM in one process) for the AWS destination
//! tests, one per test: it starts in about a second and each test gets its own state. Found
//! at `MOTO_SERVER_BIN` or `.tools/bin/moto_server` (scripts/install-tools.sh installs it);
//! killed on drop. Also builds SDK clients that read back what jetpost delivered.

use std::process::Stdio;
use std::time::Duration;

use aws_sdk_sqs::config::{BehaviorVersion, Credentials, Region, SharedHttpClient};
use tokio::process::{Child, Command};

/// The access key moto accepts while it does not enforce IAM (any key works then).
pub const KEY: &str = "AKIDJETPOSTTEST";
pub const SECRET: &str = "jetpost-test-secret";
pub const REGION: &str = "us-east-1";
/// moto's account id, in queue URLs.
pub const ACCOUNT: &str = "123456789012";

pub struct Moto {
    child: Child,
    port: u16,
}

/// An IAM user's access key created in a moto that enforces IAM.
#[derive(Debug, Clone)]
pub struct AccessKey {
    pub key: String,
    pub secret: String,
}

impl Moto {
    /// A moto server that accepts any credentials.
    pub async fn start() -> Moto {
        Moto::start_with(&[]).await
    }

    /// A moto server with extra environment, e.g. `INITIAL_NO_AUTH_ACTION_COUNT` to enforce IAM
    /// after that many unauthenticated calls.
    pub async fn start_with(env: &[(&str, &str)]) -> Moto {
        let binary = binary();
        let port = free_port();
        let child = Command::new(&binary)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .envs(env.iter().copied())
            // No proxy, no real AWS configuration of the machine.
            .env_remove("AWS_PROFILE")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("could not start {binary}: {e}; run scripts/install-tools.sh")
            });
        let mut moto = Moto { child, port };
        moto.wait_ready().await;
        moto
    }

    async fn wait_ready(&mut self) {
        let client = crate::support::http_client();
        let url = format!("{}/moto-api/", self.endpoint());
        for _ in 0..600 {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("moto_server exited at start ({status}); run it by hand to see why");
            }
            if client
                .get(&url)
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("moto_server did not answer at {url} within 30 s");
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Creates an IAM user with an access key and an inline policy allowing `actions` on
    /// everything: three IAM calls, made before moto enforces IAM (start it with
    /// `INITIAL_NO_AUTH_ACTION_COUNT` covering them).
    pub async fn iam_user(&self, name: &str, actions: &[&str]) -> AccessKey {
        let policy = serde_json::json!({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}],
        })
        .to_string();
        self.iam(&[("Action", "CreateUser"), ("UserName", name)])
            .await;
        let created = self
            .iam(&[("Action", "CreateAccessKey"), ("UserName", name)])
            .await;
        self.iam(&[
            ("Action", "PutUserPolicy"),
            ("UserName", name),
            ("PolicyName", "jetpost-test"),
            ("PolicyDocument", &policy),
        ])
        .await;
        AccessKey {
            key: element(&created, "AccessKeyId"),
            secret: element(&created, "SecretAccessKey"),
        }
    }

    /// One IAM query call. moto picks the service from the credential scope of the
    /// `Authorization` header and does not check the signature of its first calls.
    async fn iam(&self, params: &[(&str, &str)]) -> String {
        let mut form: Vec<(&str, &str)> = params.to_vec();
        form.push(("Version", "2010-05-08"));
        let body = form
            .iter()
            .map(|(k, v)| format!("{k}={}", urlencode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let response = crate::support::http_client()
            .post(format!("{}/", self.endpoint()))
            .header(
                "authorization",
                format!(
                    "AWS4-HMAC-SHA256 Credential={KEY}/20260101/{REGION}/iam/aws4_request, \
                     SignedHeaders=host, Signature=0"
                ),
            )
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        assert!(status.is_success(), "IAM {params:?}: {status} {text}");
        text
    }

    pub fn sqs(&self) -> aws_sdk_sqs::Client {
        self.sqs_as(&AccessKey::test())
    }

    pub fn s3(&self) -> aws_sdk_s3::Client {
        self.s3_as(&AccessKey::test())
    }

    pub fn kinesis(&self) -> aws_sdk_kinesis::Client {
        self.kinesis_as(&AccessKey::test())
    }

    pub fn sqs_as(&self, key: &AccessKey) -> aws_sdk_sqs::Client {
        let config = aws_sdk_sqs::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .credentials_provider(key.credentials())
            .endpoint_url(self.endpoint())
            .http_client(http())
            .build();
        aws_sdk_sqs::Client::from_conf(config)
    }

    pub fn s3_as(&self, key: &AccessKey) -> aws_sdk_s3::Client {
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .credentials_provider(key.credentials())
            .endpoint_url(self.endpoint())
            .force_path_style(true)
            .http_client(http())
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }

    pub fn kinesis_as(&self, key: &AccessKey) -> aws_sdk_kinesis::Client {
        let config = aws_sdk_kinesis::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .credentials_provider(key.credentials())
            .endpoint_url(self.endpoint())
            .http_client(http())
            .build();
        aws_sdk_kinesis::Client::from_conf(config)
    }
}

impl AccessKey {
    /// `KEY`/`SECRET`, accepted while moto does not enforce IAM.
    pub fn test() -> AccessKey {
        AccessKey {
            key: KEY.into(),
            secret: SECRET.into(),
        }
    }

    fn credentials(&self) -> Credentials {
        Credentials::new(&self.key, &self.secret, None, None, "jetpost-tests")
    }
}

fn http() -> SharedHttpClient {
    let _ = rustls::crypto::ring::default_provider().install_default();
    aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https()
}

/// `MOTO_SERVER_BIN`, else the project's `.tools/bin/moto_server`; a missing binary fails the
/// test saying how to install it.
fn binary() -> String {
    let path = std::env::var("MOTO_SERVER_BIN")
        .unwrap_or_else(|_| format!("{}/.tools/bin/moto_server", env!("CARGO_MANIFEST_DIR")));
    assert!(
        std::path::Path::new(&path).exists(),
        "moto_server not found at {path}: the AWS destination tests need it; run \
         scripts/install-tools.sh (or set MOTO_SERVER_BIN)"
    );
    path
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn urlencode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The text of the first `<name>` element.
fn element(xml: &str, name: &str) -> String {
    let open = format!("<{name}>");
    let start = xml
        .find(&open)
        .unwrap_or_else(|| panic!("no <{name}> in {xml}"))
        + open.len();
    let end = start + xml[start..].find('<').unwrap();
    xml[start..end].to_owned()
}
