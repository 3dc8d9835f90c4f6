//! Configuration: one typed tree merged from built-in defaults < YAML file < environment
//! variables (Outpost's names), then validated once as a whole. Only start-up code loads it;
//! nothing here reads the process environment (callers pass the env map in).

mod env;
mod error;
mod retry;
mod secret;
mod validate;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

pub use error::{ConfigError, ConfigErrors};
pub use retry::RetrySchedule;
pub use secret::{DatabaseBackend, DatabaseUrl, Secret};

/// File read when neither `--config` nor `$CONFIG` names one (if it exists).
pub const DEFAULT_CONFIG_FILE: &str = "jetpost.yaml";
/// Env var naming the config file (Outpost's name).
pub const CONFIG_ENV: &str = "CONFIG";
pub const DEFAULT_DATABASE_URL: &str = "sqlite://./data/jetpost.db";

/// The whole configuration. YAML keys are the field names (nested structs are nested maps);
/// `docs/configuration.md` lists every key with its env var and default.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// HTTP port for the API, `/healthz` and `/metrics`; 0 picks a free port.
    pub api_port: u16,
    /// The address the API listens on: `0.0.0.0` (every IPv4 interface), `::`, `127.0.0.1`, …
    pub api_host: IpAddr,
    /// How long a client may take to send a request head (also how long an idle keep-alive
    /// connection is kept); then the connection is closed.
    pub api_header_read_timeout_seconds: u64,
    /// How long a client may take to send a request body once its head arrived; then it is
    /// answered 408 and the connection closed.
    pub api_body_read_timeout_seconds: u64,
    /// Open API connections at most; further clients wait in the listen backlog.
    pub api_max_connections: usize,
    /// Bearer token `/metrics` asks for; empty leaves `/metrics` open.
    pub metrics_token: Secret,
    /// Admin bearer token. Empty is refused unless `api_auth_disabled`.
    pub api_key: Secret,
    pub api_auth_disabled: bool,
    /// HS256 secret for tenant JWTs; empty means tenant JWTs are not accepted.
    pub api_jwt_secret: Secret,
    /// Encrypts destination credentials at rest; required.
    pub aes_encryption_secret: Secret,
    /// `postgres` is Outpost's YAML key for its Postgres URL.
    #[serde(alias = "postgres")]
    pub database_url: DatabaseUrl,
    /// Allowed topics; empty means any topic.
    pub topics: Vec<String>,
    pub topics_allow_wildcards: bool,
    pub max_destinations_per_tenant: u32,
    pub delivery_timeout_seconds: u64,
    pub delivery_max_concurrency: usize,
    pub delivery_max_concurrency_per_destination: usize,
    pub publish_max_concurrency: usize,
    pub retry_interval_seconds: u64,
    pub retry_max_limit: u32,
    /// Delays in seconds; when non-empty it overrides `retry_interval_seconds` and
    /// `retry_max_limit`. Use `RetrySchedule::from_config` rather than reading these three.
    pub retry_schedule: Vec<u64>,
    pub alert: AlertConfig,
    pub operator_events: OperatorEventsConfig,
    pub destinations: DestinationsConfig,
    pub portal: PortalConfig,
    /// A level (`info`) or a tracing filter (`info,jetpost=debug`).
    pub log_level: String,
    pub log_format: LogFormat,
    pub publishmq: PublishMqConfig,
    /// How long a graceful shutdown waits for in-flight work; 0 = don't wait.
    pub shutdown_timeout_seconds: u64,
    /// Largest HTTP request body the API accepts.
    pub max_request_body_bytes: usize,
    /// Events stored longer ago than this many days are deleted, with their deliveries and
    /// attempts, once every delivery of theirs is finished; 0 keeps everything (Outpost's
    /// default).
    pub log_retention_ttl_days: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            api_port: 3333,
            api_host: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            api_header_read_timeout_seconds: 10,
            api_body_read_timeout_seconds: 30,
            api_max_connections: 1024,
            metrics_token: Secret::default(),
            api_key: Secret::default(),
            api_auth_disabled: false,
            api_jwt_secret: Secret::default(),
            aes_encryption_secret: Secret::default(),
            database_url: DatabaseUrl::default(),
            topics: Vec::new(),
            topics_allow_wildcards: false,
            max_destinations_per_tenant: 20,
            delivery_timeout_seconds: 5,
            delivery_max_concurrency: 256,
            delivery_max_concurrency_per_destination: 16,
            publish_max_concurrency: 256,
            retry_interval_seconds: 30,
            retry_max_limit: 10,
            retry_schedule: Vec::new(),
            alert: AlertConfig::default(),
            operator_events: OperatorEventsConfig::default(),
            destinations: DestinationsConfig::default(),
            portal: PortalConfig::default(),
            log_level: "info".to_owned(),
            log_format: LogFormat::Text,
            publishmq: PublishMqConfig::default(),
            shutdown_timeout_seconds: 30,
            max_request_body_bytes: 1024 * 1024,
            log_retention_ttl_days: 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertConfig {
    /// Consecutive failed deliveries before a destination alert; 0 disables the alert.
    pub consecutive_failure_count: u32,
    /// Disable the destination when `consecutive_failure_count` is reached.
    pub auto_disable_destination: bool,
}

impl Default for AlertConfig {
    fn default() -> Self {
        AlertConfig {
            consecutive_failure_count: 100,
            auto_disable_destination: false,
        }
    }
}

/// Outpost operator events, sent over HTTP. Off unless `topics` is set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawOperatorEvents")]
pub struct OperatorEventsConfig {
    /// Operator event topics to send (`*` = all); empty = off.
    pub topics: Vec<String>,
    pub http: OperatorEventsHttpConfig,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OperatorEventsHttpConfig {
    /// Where operator events are POSTed (http or https).
    pub url: Option<String>,
    /// HMAC-SHA256 secret for signing operator event payloads.
    pub signing_secret: Secret,
}

/// Operator events as written in YAML: Outpost's nested `http: {url, signing_secret}` or the
/// flat `http_url` / `http_signing_secret` spelling, but not both.
#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct RawOperatorEvents {
    topics: Vec<String>,
    http: Option<OperatorEventsHttpConfig>,
    http_url: Option<String>,
    http_signing_secret: Option<Secret>,
}

impl TryFrom<RawOperatorEvents> for OperatorEventsConfig {
    type Error = String;

    fn try_from(raw: RawOperatorEvents) -> Result<Self, String> {
        let flat = raw.http_url.is_some() || raw.http_signing_secret.is_some();
        let http = match raw.http {
            Some(_) if flat => {
                return Err(
                    "operator_events: use either http.url / http.signing_secret or \
                            http_url / http_signing_secret, not both"
                        .to_owned(),
                );
            }
            Some(http) => http,
            None => OperatorEventsHttpConfig {
                url: raw.http_url,
                signing_secret: raw.http_signing_secret.unwrap_or_default(),
            },
        };
        Ok(OperatorEventsConfig {
            topics: raw.topics,
            http,
        })
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DestinationsConfig {
    pub webhook: WebhookConfig,
    pub hookdeck: HookdeckConfig,
}

/// Where the `hookdeck` type reaches Hookdeck: its API (token verification at destination
/// write) and its event ingestion host (where events are published). Hookdeck's own hosts by
/// default; set them to reach a Hookdeck-compatible endpoint (a local one in tests).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HookdeckConfig {
    pub api_url: String,
    pub events_url: String,
}

impl Default for HookdeckConfig {
    fn default() -> Self {
        HookdeckConfig {
            api_url: "https://api.hookdeck.com".to_owned(),
            events_url: "https://hkdk.events".to_owned(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookConfig {
    pub mode: WebhookMode,
    /// Prefix of jetpost's headers in default mode (`x-outpost-event-id`, …).
    pub header_prefix: String,
    /// Response bodies stored on attempts are cut to this size; 0 = no cap.
    pub max_response_body_bytes: usize,
    /// Refuse to deliver to loopback, private, link-local and other non-public addresses (on
    /// by default: tenants choose the URLs).
    pub block_private_ips: bool,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            mode: WebhookMode::Default,
            header_prefix: "x-outpost-".to_owned(),
            max_response_body_bytes: 131_072,
            block_private_ips: true,
        }
    }
}

/// The tenant portal's settings: where it is served (Outpost's key) and who may frame it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PortalConfig {
    /// The absolute http(s) URL the tenant portal is served at; portal links
    /// (`GET /tenants/{id}/portal`) point there. Unset: at this server, from the request's
    /// `Host`.
    pub proxy_url: Option<String>,
    /// Origins (`https://app.example.com`) whose pages may show the portal in a frame, besides
    /// the portal's own origin. Empty: no other site may frame it.
    pub frame_ancestors: Vec<String>,
}

/// Webhook wire format: Outpost's own (`default`) or Standard Webhooks (`standard`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookMode {
    #[default]
    Default,
    Standard,
}

impl FromStr for WebhookMode {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        match s.to_ascii_lowercase().as_str() {
            "default" => Ok(WebhookMode::Default),
            "standard" => Ok(WebhookMode::Standard),
            _ => Err(()),
        }
    }
}

impl fmt::Display for WebhookMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WebhookMode::Default => "default",
            WebhookMode::Standard => "standard",
        })
    }
}

/// Log line format: human-readable text or JSON lines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl FromStr for LogFormat {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        match s.to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(()),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PublishMqConfig {
    pub nats: NatsConfig,
}

/// Where events come from. Account sources (static `accounts`, `accounts_dir`, `aggregate`)
/// are additive; each needs `servers`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatsConfig {
    /// NATS cluster URLs; empty = no NATS source (events only via the HTTP publish API).
    pub servers: Vec<String>,
    /// Watched accounts directory; see docs/publishing-from-nats.md.
    pub accounts_dir: Option<PathBuf>,
    /// Static accounts (YAML only).
    pub accounts: Vec<AccountConfig>,
    /// Aggregate mode: one stream whose subjects carry the tenant.
    pub aggregate: Option<AggregateConfig>,
    /// Whether replicas sharing a Postgres store each consume every account (`shared`) or one
    /// replica owns each account (`exclusive`); unset: exclusive on Postgres, shared on SQLite.
    pub ownership: Option<Ownership>,
}

impl NatsConfig {
    /// Whether any account source is configured.
    pub fn has_account_source(&self) -> bool {
        !self.accounts.is_empty() || self.accounts_dir.is_some() || self.aggregate.is_some()
    }

    /// The ownership in effect on `backend`: as configured, else exclusive on Postgres and
    /// shared on SQLite (one process).
    pub fn ownership_on(&self, backend: Option<DatabaseBackend>) -> Ownership {
        self.ownership.unwrap_or(match backend {
            Some(DatabaseBackend::Postgres) => Ownership::Exclusive,
            _ => Ownership::Shared,
        })
    }
}

/// How replicas sharing one store divide the NATS accounts (per-account mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ownership {
    /// Every replica connects to and consumes every account.
    Shared,
    /// Each account is consumed by one live replica at a time, through leases in the store.
    Exclusive,
}

impl FromStr for Ownership {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        match s.to_ascii_lowercase().as_str() {
            "shared" => Ok(Ownership::Shared),
            "exclusive" => Ok(Ownership::Exclusive),
            _ => Err(()),
        }
    }
}

impl fmt::Display for Ownership {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Ownership::Shared => "shared",
            Ownership::Exclusive => "exclusive",
        })
    }
}

/// One static account: a tenant's NATS account, its stream and durable pull consumer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AccountConfig {
    pub name: String,
    /// `.creds` file for the account's user; None = connect without credentials.
    pub credentials_file: Option<PathBuf>,
    pub stream: String,
    pub consumer: String,
    /// The tenant this account's events belong to (overrides the payload's `tenant_id`).
    pub tenant_id: String,
}

/// Aggregate mode: one stream whose subjects carry the tenant id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AggregateConfig {
    pub stream: String,
    pub consumer: String,
    pub credentials_file: Option<PathBuf>,
    /// Subject pattern with `{tenant_id}` as one whole token, e.g. `tenant.{tenant_id}.>`.
    pub tenant_subject: String,
}

impl AggregateConfig {
    /// Index of the `{tenant_id}` token among the subject's dot-separated tokens; None when
    /// `tenant_subject` is invalid (validation rejects that).
    pub fn tenant_token_index(&self) -> Option<usize> {
        validate::tenant_token_index(&self.tenant_subject).ok()
    }

    /// `tenant_subject` with `{tenant_id}` replaced by `*`: a NATS subject filter matching
    /// every tenant's messages.
    pub fn subject_filter(&self) -> String {
        self.tenant_subject
            .split('.')
            .map(|token| {
                if token == validate::TENANT_TOKEN {
                    "*"
                } else {
                    token
                }
            })
            .collect::<Vec<_>>()
            .join(".")
    }
}

impl Config {
    /// Loads the configuration: defaults, then the YAML file, then `env`, then validation.
    ///
    /// `file` is `--config`; when None, `$CONFIG` from `env` is used, else `./jetpost.yaml` if
    /// it exists, else no file. A named file that is missing is an error. All env and
    /// validation problems are returned together; a YAML file that cannot be parsed (syntax,
    /// unknown key, wrong type) is reported on its own with its position.
    pub fn load(
        file: Option<&Path>,
        env: &HashMap<String, String>,
    ) -> Result<Config, ConfigErrors> {
        let yaml = match Self::file_path(file, env) {
            Some(path) => {
                let text = std::fs::read_to_string(&path).map_err(|err| ConfigError::File {
                    message: if err.kind() == std::io::ErrorKind::NotFound {
                        "not found".to_owned()
                    } else {
                        err.to_string()
                    },
                    path: path.clone(),
                })?;
                Some((path.display().to_string(), text))
            }
            None => None,
        };
        Self::build(yaml.as_ref().map(|(o, t)| (o.as_str(), t.as_str())), env)
    }

    /// Like `load`, with the YAML given as text (no file system access). For tests and tools.
    pub fn from_yaml_str_and_env(
        yaml: Option<&str>,
        env: &HashMap<String, String>,
    ) -> Result<Config, ConfigErrors> {
        Self::build(yaml.map(|text| ("<yaml>", text)), env)
    }

    /// Which file `load` reads: `file`, else `$CONFIG`, else `./jetpost.yaml` if it exists.
    pub fn file_path(file: Option<&Path>, env: &HashMap<String, String>) -> Option<PathBuf> {
        Self::file_path_in(file, env, Path::new("."))
    }

    fn file_path_in(
        file: Option<&Path>,
        env: &HashMap<String, String>,
        cwd: &Path,
    ) -> Option<PathBuf> {
        if let Some(file) = file {
            return Some(file.to_path_buf());
        }
        if let Some(path) = env.get(CONFIG_ENV).filter(|p| !p.is_empty()) {
            return Some(PathBuf::from(path));
        }
        let default = cwd.join(DEFAULT_CONFIG_FILE);
        default.is_file().then_some(default)
    }

    fn build(
        yaml: Option<(&str, &str)>,
        env: &HashMap<String, String>,
    ) -> Result<Config, ConfigErrors> {
        let mut config = match yaml {
            Some((origin, text)) => parse_yaml(origin, text)?,
            None => Config::default(),
        };
        let mut errors = env::apply(&mut config, env);
        config.normalize();
        errors.extend(validate::problems(&config));
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(ConfigErrors(errors))
        }
    }

    /// Checks every rule and returns all problems together. `load` already does this; call it
    /// on a `Config` built in code.
    pub fn validate(&self) -> Result<(), ConfigErrors> {
        let errors = validate::problems(self);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors(errors))
        }
    }

    /// Names of every environment variable the configuration reads (besides `CONFIG`).
    pub fn env_var_names() -> Vec<&'static str> {
        env::names()
    }

    pub fn delivery_timeout(&self) -> Duration {
        Duration::from_secs(self.delivery_timeout_seconds)
    }

    /// How long events are kept (`log_retention_ttl_days`); `None` keeps them forever.
    pub fn log_retention_ttl(&self) -> Option<chrono::TimeDelta> {
        (self.log_retention_ttl_days > 0)
            .then(|| chrono::TimeDelta::days(i64::from(self.log_retention_ttl_days)))
    }

    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.shutdown_timeout_seconds)
    }

    /// Where `serve` listens: `api_host`:`api_port`.
    pub fn api_address(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::new(self.api_host, self.api_port)
    }

    /// Empty optional strings and paths mean "not set".
    fn normalize(&mut self) {
        fn clear_empty_path(path: &mut Option<PathBuf>) {
            if path.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
                *path = None;
            }
        }
        let nats = &mut self.publishmq.nats;
        clear_empty_path(&mut nats.accounts_dir);
        for account in &mut nats.accounts {
            clear_empty_path(&mut account.credentials_file);
        }
        if let Some(aggregate) = &mut nats.aggregate {
            clear_empty_path(&mut aggregate.credentials_file);
        }
        for url in [
            &mut self.operator_events.http.url,
            &mut self.portal.proxy_url,
        ] {
            if url.as_ref().is_some_and(|u| u.trim().is_empty()) {
                *url = None;
            }
        }
    }
}

fn parse_yaml(origin: &str, text: &str) -> Result<Config, ConfigError> {
    // An empty or comment-only file is a YAML null document: it means "all defaults".
    serde_yaml_ng::from_str::<Option<Config>>(text)
        .map(Option::unwrap_or_default)
        .map_err(|err| {
            let mut message = err.to_string();
            // The parser leaves out the position of an error at the very start of the file.
            if let Some(location) = err.location()
                && !message.contains(" at line ")
            {
                message.push_str(&format!(
                    " at line {} column {}",
                    location.line(),
                    location.column()
                ));
            }
            ConfigError::Yaml {
                origin: origin.to_owned(),
                message,
            }
        })
}
