//! Validation of the merged configuration: every rule runs and every problem is reported,
//! each naming the YAML key and the env var that set it, and saying what to do.

use std::collections::HashMap;
use std::str::FromStr;

use tracing::level_filters::LevelFilter;

use super::{AccountConfig, AggregateConfig, Config, ConfigError, DatabaseBackend, Ownership};

/// The placeholder in `publishmq.nats.aggregate.tenant_subject`.
pub(super) const TENANT_TOKEN: &str = "{tenant_id}";

/// Longest retry delay accepted (one year): larger ones are surely a mistake, and they would
/// overflow timestamp arithmetic further down.
pub(super) const MAX_RETRY_DELAY_SECONDS: u64 = 365 * 24 * 3600;

/// Longest retention accepted (100 years): anything longer is "forever", which is 0.
pub(super) const MAX_RETENTION_DAYS: u64 = 36_500;

pub(super) fn problems(c: &Config) -> Vec<ConfigError> {
    let mut p = Problems::default();
    api(c, &mut p);
    encryption(c, &mut p);
    database(c, &mut p);
    limits(c, &mut p);
    retries(c, &mut p);
    topics("topics", Some("TOPICS"), &c.topics, &mut p);
    operator_events(c, &mut p);
    webhook(c, &mut p);
    hookdeck(c, &mut p);
    logging(c, &mut p);
    nats(c, &mut p);
    p.0
}

#[derive(Default)]
struct Problems(Vec<ConfigError>);

impl Problems {
    fn push(
        &mut self,
        key: impl Into<String>,
        env: Option<&'static str>,
        message: impl Into<String>,
    ) {
        self.0.push(ConfigError::invalid(key, env, message));
    }

    /// `value` must lie in `range`.
    fn within(
        &mut self,
        key: &'static str,
        env: &'static str,
        value: u64,
        range: std::ops::RangeInclusive<u64>,
    ) {
        if !range.contains(&value) {
            self.push(
                key,
                Some(env),
                format!(
                    "{value} is out of range; it must be {} to {}",
                    range.start(),
                    range.end()
                ),
            );
        }
    }

    /// `value` must be at least `min`.
    fn at_least(&mut self, key: &'static str, env: &'static str, value: u64, min: u64) {
        if value < min {
            self.push(
                key,
                Some(env),
                format!("{value} is too small; it must be at least {min}"),
            );
        }
    }
}

fn api(c: &Config, p: &mut Problems) {
    if c.api_key.is_empty() && !c.api_auth_disabled {
        p.push(
            "api_key",
            Some("API_KEY"),
            "empty; set an admin API key or api_auth_disabled: true (API_AUTH_DISABLED) for local use",
        );
    }
    // A client deadline past an hour protects nothing, and far-future deadlines overflow.
    p.within(
        "api_header_read_timeout_seconds",
        "API_HEADER_READ_TIMEOUT_SECONDS",
        c.api_header_read_timeout_seconds,
        1..=3600,
    );
    p.within(
        "api_body_read_timeout_seconds",
        "API_BODY_READ_TIMEOUT_SECONDS",
        c.api_body_read_timeout_seconds,
        1..=3600,
    );
    p.at_least(
        "api_max_connections",
        "API_MAX_CONNECTIONS",
        c.api_max_connections as u64,
        1,
    );
    if let Some(url) = &c.portal.proxy_url {
        let usable =
            reqwest::Url::parse(url).is_ok_and(|u| is_http_url(&u) && u.fragment().is_none());
        if !usable {
            p.push(
                "portal.proxy_url",
                Some("PORTAL_PROXY_URL"),
                format!(
                    "{url:?} is not an absolute http:// or https:// URL without a #fragment; \
                     set the URL the portal is served at, e.g. https://webhooks.example.com"
                ),
            );
        }
    }
    for origin in &c.portal.frame_ancestors {
        if !is_origin(origin) {
            p.push(
                "portal.frame_ancestors",
                Some("PORTAL_FRAME_ANCESTORS"),
                format!(
                    "{origin:?} is not an origin; list the sites that may frame the portal as \
                     scheme://host[:port], e.g. https://app.example.com"
                ),
            );
        }
    }
}

/// Every webhook destination has a signing secret, stored encrypted: without the key the
/// service could not create one.
fn encryption(c: &Config, p: &mut Problems) {
    if c.aes_encryption_secret.is_empty() {
        p.push(
            "aes_encryption_secret",
            Some("AES_ENCRYPTION_SECRET"),
            "empty; set a long random secret: it encrypts destination credentials (every \
             webhook's signing secret) at rest. Keep it, and give every replica the same one: \
             stored credentials cannot be read without it",
        );
    }
}

/// An absolute `http://` or `https://` URL with a host.
/// An origin as a Content-Security-Policy source: `http(s)://host[:port]`, nothing more (a
/// path, query, user or fragment would not mean what it says there).
fn is_origin(value: &str) -> bool {
    reqwest::Url::parse(value).is_ok_and(|u| {
        is_http_url(&u)
            && u.path() == "/"
            && !value.ends_with('/')
            && u.query().is_none()
            && u.fragment().is_none()
            && u.username().is_empty()
            && u.password().is_none()
    })
}

fn is_http_url(url: &reqwest::Url) -> bool {
    matches!(url.scheme(), "http" | "https") && url.host().is_some()
}

fn database(c: &Config, p: &mut Problems) {
    let url = &c.database_url;
    let problem = match url.backend() {
        Some(DatabaseBackend::Sqlite) if url.sqlite_path().is_none_or(str::is_empty) => {
            Some("has no file path; use sqlite://PATH, e.g. sqlite://./data/jetpost.db".to_owned())
        }
        Some(DatabaseBackend::Sqlite) => None,
        Some(DatabaseBackend::Postgres) => reqwest::Url::parse(url.expose()).err().map(|err| {
            format!("is not a valid URL ({err}); use postgres://USER:PASSWORD@HOST:PORT/DB")
        }),
        None => Some(
            "is not supported; use sqlite://PATH (e.g. sqlite://./data/jetpost.db) or \
             postgres://USER:PASSWORD@HOST:PORT/DB"
                .to_owned(),
        ),
    };
    if let Some(problem) = problem {
        p.push(
            "database_url",
            Some("DATABASE_URL"),
            format!("{:?} {problem}", url.redacted()),
        );
    }
}

fn limits(c: &Config, p: &mut Problems) {
    p.at_least(
        "max_destinations_per_tenant",
        "MAX_DESTINATIONS_PER_TENANT",
        c.max_destinations_per_tenant.into(),
        1,
    );
    p.at_least(
        "delivery_timeout_seconds",
        "DELIVERY_TIMEOUT_SECONDS",
        c.delivery_timeout_seconds,
        1,
    );
    p.at_least(
        "delivery_max_concurrency",
        "DELIVERY_MAX_CONCURRENCY",
        c.delivery_max_concurrency as u64,
        1,
    );
    p.at_least(
        "delivery_max_concurrency_per_destination",
        "DELIVERY_MAX_CONCURRENCY_PER_DESTINATION",
        c.delivery_max_concurrency_per_destination as u64,
        1,
    );
    p.at_least(
        "publish_max_concurrency",
        "PUBLISH_MAX_CONCURRENCY",
        c.publish_max_concurrency as u64,
        1,
    );
    p.at_least(
        "max_request_body_bytes",
        "MAX_REQUEST_BODY_BYTES",
        c.max_request_body_bytes as u64,
        1,
    );
    p.within(
        "log_retention_ttl_days",
        "LOG_RETENTION_TTL_DAYS",
        c.log_retention_ttl_days.into(),
        0..=MAX_RETENTION_DAYS,
    );
}

fn retries(c: &Config, p: &mut Problems) {
    if !c.retry_schedule.is_empty() {
        for (i, &delay) in c.retry_schedule.iter().enumerate() {
            if delay == 0 || delay > MAX_RETRY_DELAY_SECONDS {
                p.push(
                    format!("retry_schedule[{i}]"),
                    Some("RETRY_SCHEDULE"),
                    format!("{delay} is out of range; each delay must be 1 to {MAX_RETRY_DELAY_SECONDS} seconds"),
                );
            }
        }
        return;
    }
    if c.retry_max_limit == 0 {
        return;
    }
    if c.retry_interval_seconds == 0 {
        p.push(
            "retry_interval_seconds",
            Some("RETRY_INTERVAL_SECONDS"),
            "0 would retry immediately in a loop; set at least 1 (or retry_max_limit: 0 for no retries)",
        );
        return;
    }
    let last = c
        .retry_max_limit
        .checked_sub(1)
        .and_then(|exp| 2u64.checked_pow(exp))
        .and_then(|factor| factor.checked_mul(c.retry_interval_seconds));
    if last.is_none_or(|last| last > MAX_RETRY_DELAY_SECONDS) {
        p.push(
            "retry_max_limit",
            Some("RETRY_MAX_LIMIT"),
            format!(
                "{} retries at interval {}s (retry_interval_seconds) would wait more than a year \
                 before the last one; lower it or list the delays in retry_schedule (RETRY_SCHEDULE)",
                c.retry_max_limit, c.retry_interval_seconds
            ),
        );
    }
}

fn topics(key: &str, env: Option<&'static str>, topics: &[String], p: &mut Problems) {
    for (i, topic) in topics.iter().enumerate() {
        if topic.trim().is_empty() {
            p.push(
                format!("{key}[{i}]"),
                env,
                "empty topic; remove it or name a topic",
            );
        }
    }
}

fn operator_events(c: &Config, p: &mut Problems) {
    let events = &c.operator_events;
    topics(
        "operator_events.topics",
        Some("OPERATOR_EVENTS_TOPICS"),
        &events.topics,
        p,
    );
    match &events.http.url {
        Some(url) => {
            let scheme_ok = reqwest::Url::parse(url).is_ok_and(|u| is_http_url(&u));
            if !scheme_ok {
                p.push(
                    "operator_events.http.url",
                    Some("OPERATOR_EVENTS_HTTP_URL"),
                    format!("{url:?} is not an http:// or https:// URL"),
                );
            }
        }
        None if !events.topics.is_empty() => p.push(
            "operator_events.topics",
            Some("OPERATOR_EVENTS_TOPICS"),
            "set but there is nowhere to send operator events; set operator_events.http.url \
             (OPERATOR_EVENTS_HTTP_URL) or remove the topics",
        ),
        None => {}
    }
}

fn hookdeck(c: &Config, p: &mut Problems) {
    let hookdeck = &c.destinations.hookdeck;
    for (key, env, url) in [
        (
            "destinations.hookdeck.api_url",
            "DESTINATIONS_HOOKDECK_API_URL",
            &hookdeck.api_url,
        ),
        (
            "destinations.hookdeck.events_url",
            "DESTINATIONS_HOOKDECK_EVENTS_URL",
            &hookdeck.events_url,
        ),
    ] {
        let usable = reqwest::Url::parse(url)
            .is_ok_and(|u| is_http_url(&u) && u.query().is_none() && u.fragment().is_none());
        if !usable {
            p.push(
                key,
                Some(env),
                format!("{url:?} is not an absolute http:// or https:// URL without a query"),
            );
        }
    }
}

fn webhook(c: &Config, p: &mut Problems) {
    let prefix = &c.destinations.webhook.header_prefix;
    if prefix.is_empty() {
        p.push(
            "destinations.webhook.header_prefix",
            Some("DESTINATIONS_WEBHOOK_HEADER_PREFIX"),
            "empty; set a header name prefix such as x-outpost-",
        );
    } else if !prefix.bytes().all(is_header_name_byte) {
        p.push(
            "destinations.webhook.header_prefix",
            Some("DESTINATIONS_WEBHOOK_HEADER_PREFIX"),
            format!("{prefix:?} has characters not allowed in an HTTP header name"),
        );
    }
}

/// RFC 9110 `tchar`.
fn is_header_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn logging(c: &Config, p: &mut Problems) {
    if let Err(message) = check_log_level(&c.log_level) {
        p.push("log_level", Some("LOG_LEVEL"), message);
    }
}

/// A plain level name must be a real level (a bare word would otherwise parse as a target
/// filter and silently log nothing); anything with directives must parse as a tracing filter.
fn check_log_level(level: &str) -> Result<(), String> {
    let level = level.trim();
    let levels = "trace, debug, info, warn, error or off";
    if level.is_empty() {
        return Err(format!("empty; use one of {levels}"));
    }
    if !level.contains(['=', ',', '[']) {
        return LevelFilter::from_str(level)
            .map(|_| ())
            .map_err(|_| format!("{level:?} is not a log level; use one of {levels}, or a filter like info,jetpost=debug"));
    }
    tracing_subscriber::EnvFilter::try_new(level)
        .map(|_| ())
        .map_err(|err| format!("{level:?} is not a valid log filter: {err}"))
}

fn nats(c: &Config, p: &mut Problems) {
    let nats = &c.publishmq.nats;
    for (i, server) in nats.servers.iter().enumerate() {
        if let Err(message) = check_server_url(server) {
            p.push(
                format!("publishmq.nats.servers[{i}]"),
                Some("PUBLISH_NATS_SERVERS"),
                message,
            );
        }
    }
    if !nats.servers.is_empty() && !nats.has_account_source() {
        p.push(
            "publishmq.nats.servers",
            Some("PUBLISH_NATS_SERVERS"),
            "set but no account is configured; add publishmq.nats.accounts, accounts_dir \
             (PUBLISH_NATS_ACCOUNTS_DIR) or aggregate (PUBLISH_NATS_AGGREGATE_*), or remove the servers",
        );
    }
    if nats.servers.is_empty() && nats.has_account_source() {
        let mut sources = Vec::new();
        if !nats.accounts.is_empty() {
            sources.push("publishmq.nats.accounts");
        }
        if nats.accounts_dir.is_some() {
            sources.push("publishmq.nats.accounts_dir");
        }
        if nats.aggregate.is_some() {
            sources.push("publishmq.nats.aggregate");
        }
        p.push(
            "publishmq.nats.servers",
            Some("PUBLISH_NATS_SERVERS"),
            format!(
                "empty, but {} is configured; set the NATS server URLs",
                sources.join(" and ")
            ),
        );
    }
    if nats.ownership == Some(Ownership::Exclusive)
        && c.database_url.backend() == Some(DatabaseBackend::Sqlite)
    {
        p.push(
            "publishmq.nats.ownership",
            Some("PUBLISH_NATS_OWNERSHIP"),
            "exclusive needs a Postgres store (DATABASE_URL=postgres://…) shared by the replicas; \
             with SQLite one process consumes every account: leave it unset or set shared",
        );
    }
    // accounts_dir's existence is the source's business at run time: the directory may be
    // provisioned after start-up.
    static_accounts(&nats.accounts, p);
    if let Some(aggregate) = &nats.aggregate {
        aggregate_mode(aggregate, p);
    }
}

fn check_server_url(server: &str) -> Result<(), String> {
    let server = server.trim();
    if server.is_empty() {
        return Err("empty server URL".to_owned());
    }
    if let Some((scheme, _)) = server.split_once("://")
        && !matches!(scheme, "nats" | "tls" | "ws" | "wss")
    {
        return Err(format!(
            "{server:?} has scheme {scheme:?}; use nats://, tls://, ws:// or wss://"
        ));
    }
    Ok(())
}

fn static_accounts(accounts: &[AccountConfig], p: &mut Problems) {
    let mut first_by_name: HashMap<&str, usize> = HashMap::new();
    for (i, account) in accounts.iter().enumerate() {
        let key = format!("publishmq.nats.accounts[{i}]");
        let label = if account.name.is_empty() {
            String::new()
        } else {
            format!("account {:?}: ", account.name)
        };
        let required = [
            ("name", &account.name),
            ("stream", &account.stream),
            ("consumer", &account.consumer),
            ("tenant_id", &account.tenant_id),
        ];
        for (field, value) in required {
            if value.trim().is_empty() {
                p.push(
                    format!("{key}.{field}"),
                    None,
                    format!("{label}empty; every static account needs name, stream, consumer and tenant_id"),
                );
            }
        }
        for (field, value) in [("stream", &account.stream), ("consumer", &account.consumer)] {
            if let Err(message) = check_nats_name(value) {
                p.push(format!("{key}.{field}"), None, format!("{label}{message}"));
            }
        }
        if account.name.is_empty() {
            continue;
        }
        if let Some(&first) = first_by_name.get(account.name.as_str()) {
            p.push(
                format!("{key}.name"),
                None,
                format!(
                    "{:?} is also the name of publishmq.nats.accounts[{first}]; account names must be unique",
                    account.name
                ),
            );
        } else {
            first_by_name.insert(&account.name, i);
        }
    }
}

/// Stream and consumer names may not contain whitespace, `.`, `*`, `>` or path separators.
fn check_nats_name(name: &str) -> Result<(), String> {
    if name
        .chars()
        .any(|ch| ch.is_whitespace() || matches!(ch, '.' | '*' | '>' | '/' | '\\'))
    {
        Err(format!(
            "{name:?} is not a valid NATS stream/consumer name (no spaces, '.', '*', '>', '/' or '\\')"
        ))
    } else {
        Ok(())
    }
}

fn aggregate_mode(aggregate: &AggregateConfig, p: &mut Problems) {
    let fields = [
        ("stream", "PUBLISH_NATS_AGGREGATE_STREAM", &aggregate.stream),
        (
            "consumer",
            "PUBLISH_NATS_AGGREGATE_CONSUMER",
            &aggregate.consumer,
        ),
        (
            "tenant_subject",
            "PUBLISH_NATS_AGGREGATE_TENANT_SUBJECT",
            &aggregate.tenant_subject,
        ),
    ];
    for (field, env, value) in fields {
        if value.trim().is_empty() {
            p.push(
                format!("publishmq.nats.aggregate.{field}"),
                Some(env),
                "empty; aggregate mode needs stream, consumer and tenant_subject together",
            );
        }
    }
    for (field, env, value) in &fields[..2] {
        if let Err(message) = check_nats_name(value) {
            p.push(
                format!("publishmq.nats.aggregate.{field}"),
                Some(*env),
                message,
            );
        }
    }
    if !aggregate.tenant_subject.trim().is_empty()
        && let Err(message) = tenant_token_index(&aggregate.tenant_subject)
    {
        p.push(
            "publishmq.nats.aggregate.tenant_subject",
            Some("PUBLISH_NATS_AGGREGATE_TENANT_SUBJECT"),
            message,
        );
    }
}

/// Position of `{tenant_id}` among the dot-separated tokens of `subject`, which must hold it
/// exactly once as a whole token and otherwise be a valid NATS subject filter.
pub(super) fn tenant_token_index(subject: &str) -> Result<usize, String> {
    let example = "e.g. \"tenant.{tenant_id}.>\"";
    let tokens: Vec<&str> = subject.split('.').collect();
    let mut found = None;
    for (i, token) in tokens.iter().enumerate() {
        if token.is_empty() || token.chars().any(char::is_whitespace) {
            return Err(format!(
                "{subject:?} has an empty token or whitespace; {example}"
            ));
        }
        if *token == ">" && i + 1 != tokens.len() {
            return Err(format!(
                "{subject:?}: '>' may only be the last token; {example}"
            ));
        }
        if token.len() > 1 && token.contains(['*', '>']) && !token.contains(TENANT_TOKEN) {
            return Err(format!(
                "{subject:?}: '*' and '>' must be whole tokens; {example}"
            ));
        }
        if *token == TENANT_TOKEN {
            if found.is_some() {
                return Err(format!(
                    "{subject:?} contains {TENANT_TOKEN} more than once; {example}"
                ));
            }
            found = Some(i);
        } else if token.contains(TENANT_TOKEN) || token.contains(['{', '}']) {
            return Err(format!(
                "{subject:?} must contain {TENANT_TOKEN} as one whole dot-separated token; {example}"
            ));
        }
    }
    found.ok_or_else(|| format!("{subject:?} does not contain {TENANT_TOKEN}; {example}"))
}
