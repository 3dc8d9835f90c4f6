//! The environment layer: Outpost's env var names applied over the YAML/default values.
//! An empty variable counts as unset (as in Outpost), so `API_KEY=` in a compose file does
//! not erase the YAML value; every unparsable value is collected, not just the first.

use std::collections::HashMap;
use std::path::PathBuf;
use std::str::FromStr;

use super::{AggregateConfig, Config, ConfigError, DatabaseUrl, Secret};

/// Applies `env` to `config` and returns the values that did not parse.
pub(super) fn apply(config: &mut Config, env: &HashMap<String, String>) -> Vec<ConfigError> {
    let mut r = Reader::new(env);
    overlay(&mut r, config);
    r.errors
}

/// Every variable `apply` reads, in reading order.
pub(super) fn names() -> Vec<&'static str> {
    let env = HashMap::new();
    let mut r = Reader::new(&env);
    overlay(&mut r, &mut Config::default());
    r.read
}

fn overlay(r: &mut Reader<'_>, c: &mut Config) {
    const PORT: &str = "a port number (0-65535)";
    const COUNT: &str = "a whole number";

    r.parse("API_PORT", "api_port", PORT, &mut c.api_port);
    r.parse(
        "API_HOST",
        "api_host",
        "an IP address (0.0.0.0, ::, 127.0.0.1, …)",
        &mut c.api_host,
    );
    r.parse(
        "API_HEADER_READ_TIMEOUT_SECONDS",
        "api_header_read_timeout_seconds",
        COUNT,
        &mut c.api_header_read_timeout_seconds,
    );
    r.parse(
        "API_BODY_READ_TIMEOUT_SECONDS",
        "api_body_read_timeout_seconds",
        COUNT,
        &mut c.api_body_read_timeout_seconds,
    );
    r.parse(
        "API_MAX_CONNECTIONS",
        "api_max_connections",
        COUNT,
        &mut c.api_max_connections,
    );
    r.secret("METRICS_TOKEN", &mut c.metrics_token);
    r.secret("API_KEY", &mut c.api_key);
    r.bool(
        "API_AUTH_DISABLED",
        "api_auth_disabled",
        &mut c.api_auth_disabled,
    );
    r.secret("API_JWT_SECRET", &mut c.api_jwt_secret);
    r.secret("AES_ENCRYPTION_SECRET", &mut c.aes_encryption_secret);
    // DATABASE_URL wins over Outpost's POSTGRES_URL when both are set.
    let mut database_url = None;
    r.string("POSTGRES_URL", &mut database_url);
    r.string("DATABASE_URL", &mut database_url);
    if let Some(url) = database_url {
        c.database_url = DatabaseUrl::new(url);
    }

    r.list("TOPICS", &mut c.topics);
    r.bool(
        "TOPICS_ALLOW_WILDCARDS",
        "topics_allow_wildcards",
        &mut c.topics_allow_wildcards,
    );
    r.parse(
        "MAX_DESTINATIONS_PER_TENANT",
        "max_destinations_per_tenant",
        COUNT,
        &mut c.max_destinations_per_tenant,
    );

    r.parse(
        "DELIVERY_TIMEOUT_SECONDS",
        "delivery_timeout_seconds",
        COUNT,
        &mut c.delivery_timeout_seconds,
    );
    r.parse(
        "DELIVERY_MAX_CONCURRENCY",
        "delivery_max_concurrency",
        COUNT,
        &mut c.delivery_max_concurrency,
    );
    r.parse(
        "DELIVERY_MAX_CONCURRENCY_PER_DESTINATION",
        "delivery_max_concurrency_per_destination",
        COUNT,
        &mut c.delivery_max_concurrency_per_destination,
    );
    r.parse(
        "PUBLISH_MAX_CONCURRENCY",
        "publish_max_concurrency",
        COUNT,
        &mut c.publish_max_concurrency,
    );

    r.parse(
        "RETRY_INTERVAL_SECONDS",
        "retry_interval_seconds",
        COUNT,
        &mut c.retry_interval_seconds,
    );
    // MAX_RETRY_LIMIT is the name Outpost actually reads; RETRY_MAX_LIMIT (the documented name) wins.
    r.parse(
        "MAX_RETRY_LIMIT",
        "retry_max_limit",
        COUNT,
        &mut c.retry_max_limit,
    );
    r.parse(
        "RETRY_MAX_LIMIT",
        "retry_max_limit",
        COUNT,
        &mut c.retry_max_limit,
    );
    r.parsed_list(
        "RETRY_SCHEDULE",
        "retry_schedule",
        "a comma list of whole seconds",
        &mut c.retry_schedule,
    );

    r.parse(
        "ALERT_CONSECUTIVE_FAILURE_COUNT",
        "alert.consecutive_failure_count",
        COUNT,
        &mut c.alert.consecutive_failure_count,
    );
    r.bool(
        "ALERT_AUTO_DISABLE_DESTINATION",
        "alert.auto_disable_destination",
        &mut c.alert.auto_disable_destination,
    );

    r.list("OPERATOR_EVENTS_TOPICS", &mut c.operator_events.topics);
    r.string("OPERATOR_EVENTS_HTTP_URL", &mut c.operator_events.http.url);
    r.secret(
        "OPERATOR_EVENTS_HTTP_SIGNING_SECRET",
        &mut c.operator_events.http.signing_secret,
    );

    let webhook = &mut c.destinations.webhook;
    r.parse(
        "DESTINATIONS_WEBHOOK_MODE",
        "destinations.webhook.mode",
        "default or standard",
        &mut webhook.mode,
    );
    let mut prefix = None;
    r.string("DESTINATIONS_WEBHOOK_HEADER_PREFIX", &mut prefix);
    if let Some(prefix) = prefix {
        webhook.header_prefix = prefix;
    }
    r.parse(
        "DESTINATIONS_WEBHOOK_MAX_RESPONSE_BODY_BYTES",
        "destinations.webhook.max_response_body_bytes",
        COUNT,
        &mut webhook.max_response_body_bytes,
    );
    r.bool(
        "DESTINATIONS_WEBHOOK_BLOCK_PRIVATE_IPS",
        "destinations.webhook.block_private_ips",
        &mut webhook.block_private_ips,
    );

    let hookdeck = &mut c.destinations.hookdeck;
    let (mut api_url, mut events_url) = (None, None);
    r.string("DESTINATIONS_HOOKDECK_API_URL", &mut api_url);
    r.string("DESTINATIONS_HOOKDECK_EVENTS_URL", &mut events_url);
    if let Some(url) = api_url {
        hookdeck.api_url = url;
    }
    if let Some(url) = events_url {
        hookdeck.events_url = url;
    }

    r.string("PORTAL_PROXY_URL", &mut c.portal.proxy_url);
    r.list("PORTAL_FRAME_ANCESTORS", &mut c.portal.frame_ancestors);

    let mut log_level = None;
    r.string("LOG_LEVEL", &mut log_level);
    if let Some(level) = log_level {
        c.log_level = level;
    }
    r.parse(
        "LOG_FORMAT",
        "log_format",
        "text or json",
        &mut c.log_format,
    );

    let nats = &mut c.publishmq.nats;
    r.list("PUBLISH_NATS_SERVERS", &mut nats.servers);
    r.path("PUBLISH_NATS_ACCOUNTS_DIR", &mut nats.accounts_dir);
    if let Some(value) = r.get("PUBLISH_NATS_OWNERSHIP") {
        match value.trim().parse() {
            Ok(ownership) => nats.ownership = Some(ownership),
            Err(()) => r.fail(
                "PUBLISH_NATS_OWNERSHIP",
                "publishmq.nats.ownership",
                value,
                "shared or exclusive",
            ),
        }
    }
    let (mut stream, mut consumer, mut credentials_file, mut tenant_subject) =
        (None, None, None, None);
    r.string("PUBLISH_NATS_AGGREGATE_STREAM", &mut stream);
    r.string("PUBLISH_NATS_AGGREGATE_CONSUMER", &mut consumer);
    r.path(
        "PUBLISH_NATS_AGGREGATE_CREDENTIALS_FILE",
        &mut credentials_file,
    );
    r.string("PUBLISH_NATS_AGGREGATE_TENANT_SUBJECT", &mut tenant_subject);
    // Any aggregate variable turns aggregate mode on; validation then asks for the rest.
    if stream.is_some()
        || consumer.is_some()
        || credentials_file.is_some()
        || tenant_subject.is_some()
    {
        let aggregate = nats.aggregate.get_or_insert_with(AggregateConfig::default);
        if let Some(stream) = stream {
            aggregate.stream = stream;
        }
        if let Some(consumer) = consumer {
            aggregate.consumer = consumer;
        }
        if credentials_file.is_some() {
            aggregate.credentials_file = credentials_file;
        }
        if let Some(tenant_subject) = tenant_subject {
            aggregate.tenant_subject = tenant_subject;
        }
    }

    r.parse(
        "SHUTDOWN_TIMEOUT_SECONDS",
        "shutdown_timeout_seconds",
        COUNT,
        &mut c.shutdown_timeout_seconds,
    );
    r.parse(
        "MAX_REQUEST_BODY_BYTES",
        "max_request_body_bytes",
        COUNT,
        &mut c.max_request_body_bytes,
    );
    r.parse(
        "LOG_RETENTION_TTL_DAYS",
        "log_retention_ttl_days",
        "a whole number of days (0 = keep forever)",
        &mut c.log_retention_ttl_days,
    );
}

struct Reader<'a> {
    env: &'a HashMap<String, String>,
    errors: Vec<ConfigError>,
    read: Vec<&'static str>,
}

impl<'a> Reader<'a> {
    fn new(env: &'a HashMap<String, String>) -> Self {
        Reader {
            env,
            errors: Vec::new(),
            read: Vec::new(),
        }
    }

    /// The variable's value, or None when unset or empty.
    fn get(&mut self, var: &'static str) -> Option<&'a str> {
        self.read.push(var);
        self.env
            .get(var)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    fn fail(&mut self, var: &'static str, key: &'static str, value: &str, expected: &str) {
        self.errors.push(ConfigError::Env {
            key,
            env: var,
            value: value.to_owned(),
            expected: expected.to_owned(),
        });
    }

    fn string(&mut self, var: &'static str, target: &mut Option<String>) {
        if let Some(value) = self.get(var) {
            *target = Some(value.to_owned());
        }
    }

    fn secret(&mut self, var: &'static str, target: &mut Secret) {
        if let Some(value) = self.get(var) {
            *target = Secret::new(value);
        }
    }

    fn path(&mut self, var: &'static str, target: &mut Option<PathBuf>) {
        if let Some(value) = self.get(var) {
            *target = Some(PathBuf::from(value));
        }
    }

    fn parse<T: FromStr>(
        &mut self,
        var: &'static str,
        key: &'static str,
        expected: &str,
        target: &mut T,
    ) {
        if let Some(value) = self.get(var) {
            match value.trim().parse() {
                Ok(parsed) => *target = parsed,
                Err(_) => self.fail(var, key, value, expected),
            }
        }
    }

    fn bool(&mut self, var: &'static str, key: &'static str, target: &mut bool) {
        if let Some(value) = self.get(var) {
            match parse_bool(value) {
                Some(parsed) => *target = parsed,
                None => self.fail(var, key, value, "a boolean (true, false, 1 or 0)"),
            }
        }
    }

    /// A comma list: items trimmed, empty items dropped.
    fn list(&mut self, var: &'static str, target: &mut Vec<String>) {
        if let Some(value) = self.get(var) {
            *target = split_list(value).map(str::to_owned).collect();
        }
    }

    fn parsed_list<T: FromStr>(
        &mut self,
        var: &'static str,
        key: &'static str,
        expected: &str,
        target: &mut Vec<T>,
    ) {
        if let Some(value) = self.get(var) {
            match split_list(value)
                .map(str::parse)
                .collect::<Result<Vec<T>, _>>()
            {
                Ok(items) => *target = items,
                Err(_) => self.fail(var, key, value, expected),
            }
        }
    }
}

fn split_list(value: &str) -> impl Iterator<Item = &str> {
    value
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
}

fn parse_bool(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" => Some(true),
        "false" | "0" => Some(false),
        _ => None,
    }
}
