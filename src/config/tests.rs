//! Loading and validation tests: precedence, env parsing, every validation rule, file handling
//! and the docs staying in step with the code.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::*;

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// Minimal valid base: auth disabled so tests only see the problem they provoke.
const BASE: &str = "api_auth_disabled: true\n";

/// The encryption secret every test config gets unless it names `AES_ENCRYPTION_SECRET` itself
/// (as `""`, which counts as unset, to leave it out).
const TEST_AES: &str = "test-aes";

fn load(yaml: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigErrors> {
    let mut vars = env(vars);
    vars.entry("AES_ENCRYPTION_SECRET".to_owned())
        .or_insert_with(|| TEST_AES.to_owned());
    Config::from_yaml_str_and_env(Some(yaml), &vars)
}

fn ok(yaml: &str, vars: &[(&str, &str)]) -> Config {
    match load(yaml, vars) {
        Ok(config) => config,
        Err(errors) => panic!("expected a valid config, got:\n{errors}"),
    }
}

fn errors_of(yaml: &str, vars: &[(&str, &str)]) -> Vec<String> {
    match load(yaml, vars) {
        Ok(config) => panic!("expected errors, got a valid config: {config:#?}"),
        Err(errors) => errors.0.iter().map(ToString::to_string).collect(),
    }
}

/// Asserts that exactly one error starts with `prefix` and contains `fragment`.
fn assert_error(yaml: &str, vars: &[(&str, &str)], prefix: &str, fragment: &str) {
    let errors = errors_of(yaml, vars);
    let matching: Vec<_> = errors
        .iter()
        .filter(|e| e.starts_with(prefix) && e.contains(fragment))
        .collect();
    assert_eq!(
        matching.len(),
        1,
        "expected one error starting with {prefix:?} containing {fragment:?}, got {errors:#?}"
    );
}

const NATS_ACCOUNT: &str = "
publishmq:
  nats:
    servers: [nats://127.0.0.1:4222]
    accounts:
      - {name: acme, stream: EVENTS, consumer: jetpost, tenant_id: t_acme}
";

// ---- precedence ---------------------------------------------------------------------------

#[test]
fn defaults_match_the_spec_table() {
    let c = ok("", &[("API_KEY", "k")]);
    assert_eq!(c.api_port, 3333);
    assert_eq!(c.database_url.expose(), "sqlite://./data/jetpost.db");
    assert!(c.topics.is_empty());
    assert!(!c.topics_allow_wildcards);
    assert_eq!(c.max_destinations_per_tenant, 20);
    assert_eq!(c.delivery_timeout_seconds, 5);
    assert_eq!(c.delivery_max_concurrency, 256);
    assert_eq!(c.delivery_max_concurrency_per_destination, 16);
    assert_eq!(c.publish_max_concurrency, 256);
    assert_eq!(c.retry_interval_seconds, 30);
    assert_eq!(c.retry_max_limit, 10);
    assert!(c.retry_schedule.is_empty());
    assert_eq!(c.alert.consecutive_failure_count, 100);
    assert!(!c.alert.auto_disable_destination);
    assert!(c.operator_events.topics.is_empty());
    assert_eq!(c.operator_events.http.url, None);
    assert_eq!(c.destinations.webhook.mode, WebhookMode::Default);
    assert_eq!(c.destinations.webhook.header_prefix, "x-outpost-");
    assert_eq!(c.destinations.webhook.max_response_body_bytes, 131_072);
    assert!(c.destinations.webhook.block_private_ips);
    assert_eq!(c.log_level, "info");
    assert_eq!(c.log_format, LogFormat::Text);
    assert!(c.publishmq.nats.servers.is_empty());
    assert!(!c.publishmq.nats.has_account_source());
    assert_eq!(c.shutdown_timeout_seconds, 30);
    assert_eq!(c.max_request_body_bytes, 1024 * 1024);
    assert_eq!(c.api_host, IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    assert_eq!(c.api_header_read_timeout_seconds, 10);
    assert_eq!(c.api_body_read_timeout_seconds, 30);
    assert_eq!(c.api_max_connections, 1024);
    assert!(c.metrics_token.is_empty());
    assert_eq!(c.portal.proxy_url, None);
    assert_eq!(
        c,
        Config {
            api_key: Secret::from("k"),
            aes_encryption_secret: Secret::from(TEST_AES),
            ..Config::default()
        }
    );
}

#[test]
fn yaml_overrides_defaults_and_env_overrides_yaml() {
    let yaml = "
api_key: from-yaml
api_port: 4000
delivery_timeout_seconds: 9
log_level: debug
alert:
  consecutive_failure_count: 7
destinations:
  webhook:
    mode: standard
    header_prefix: x-yaml-
";
    // YAML over defaults.
    let c = ok(yaml, &[]);
    assert_eq!(c.api_key.expose(), "from-yaml");
    assert_eq!(c.api_port, 4000);
    assert_eq!(c.delivery_timeout_seconds, 9);
    assert_eq!(c.log_level, "debug");
    assert_eq!(c.alert.consecutive_failure_count, 7);
    assert!(
        !c.alert.auto_disable_destination,
        "unset nested key keeps its default"
    );
    assert_eq!(c.destinations.webhook.mode, WebhookMode::Standard);
    assert_eq!(c.destinations.webhook.header_prefix, "x-yaml-");
    assert_eq!(c.destinations.webhook.max_response_body_bytes, 131_072);

    // Env over YAML, key by key; keys without env keep the YAML value.
    let c = ok(
        yaml,
        &[
            ("API_KEY", "from-env"),
            ("API_PORT", "5000"),
            ("ALERT_CONSECUTIVE_FAILURE_COUNT", "3"),
            ("ALERT_AUTO_DISABLE_DESTINATION", "TRUE"),
            ("DESTINATIONS_WEBHOOK_MODE", "default"),
            ("DESTINATIONS_WEBHOOK_HEADER_PREFIX", "x-env-"),
        ],
    );
    assert_eq!(c.api_key.expose(), "from-env");
    assert_eq!(c.api_port, 5000);
    assert_eq!(c.delivery_timeout_seconds, 9);
    assert_eq!(c.log_level, "debug");
    assert_eq!(c.alert.consecutive_failure_count, 3);
    assert!(c.alert.auto_disable_destination);
    assert_eq!(c.destinations.webhook.mode, WebhookMode::Default);
    assert_eq!(c.destinations.webhook.header_prefix, "x-env-");
}

#[test]
fn every_scalar_env_var_is_applied() {
    let c = ok(
        "",
        &[
            ("API_KEY", "k"),
            ("API_JWT_SECRET", "jwt"),
            ("AES_ENCRYPTION_SECRET", "aes"),
            ("DATABASE_URL", "postgres://u:p@localhost/test"),
            ("TOPICS_ALLOW_WILDCARDS", "1"),
            ("MAX_DESTINATIONS_PER_TENANT", "3"),
            ("DELIVERY_TIMEOUT_SECONDS", "11"),
            ("DELIVERY_MAX_CONCURRENCY", "12"),
            ("DELIVERY_MAX_CONCURRENCY_PER_DESTINATION", "2"),
            ("PUBLISH_MAX_CONCURRENCY", "13"),
            ("RETRY_INTERVAL_SECONDS", "7"),
            ("RETRY_MAX_LIMIT", "4"),
            ("OPERATOR_EVENTS_TOPICS", "*"),
            ("OPERATOR_EVENTS_HTTP_URL", "https://ops.example.com/hook"),
            ("OPERATOR_EVENTS_HTTP_SIGNING_SECRET", "ops-secret"),
            ("DESTINATIONS_WEBHOOK_MAX_RESPONSE_BODY_BYTES", "0"),
            ("DESTINATIONS_WEBHOOK_BLOCK_PRIVATE_IPS", "false"),
            ("API_HOST", "::1"),
            ("API_HEADER_READ_TIMEOUT_SECONDS", "4"),
            ("API_BODY_READ_TIMEOUT_SECONDS", "6"),
            ("API_MAX_CONNECTIONS", "50"),
            ("METRICS_TOKEN", "scrape"),
            ("PORTAL_PROXY_URL", "https://hooks.example.com/portal"),
            ("LOG_LEVEL", "warn"),
            ("LOG_FORMAT", "JSON"),
            ("SHUTDOWN_TIMEOUT_SECONDS", "0"),
            ("MAX_REQUEST_BODY_BYTES", "2048"),
        ],
    );
    assert_eq!(c.api_jwt_secret.expose(), "jwt");
    assert_eq!(c.aes_encryption_secret.expose(), "aes");
    assert_eq!(c.database_url.backend(), Some(DatabaseBackend::Postgres));
    assert!(c.topics_allow_wildcards);
    assert_eq!(c.max_destinations_per_tenant, 3);
    assert_eq!(c.delivery_timeout(), std::time::Duration::from_secs(11));
    assert_eq!(c.delivery_max_concurrency, 12);
    assert_eq!(c.delivery_max_concurrency_per_destination, 2);
    assert_eq!(c.publish_max_concurrency, 13);
    assert_eq!(c.retry_interval_seconds, 7);
    assert_eq!(c.retry_max_limit, 4);
    assert_eq!(c.operator_events.topics, ["*"]);
    assert_eq!(
        c.operator_events.http.url.as_deref(),
        Some("https://ops.example.com/hook")
    );
    assert_eq!(c.operator_events.http.signing_secret.expose(), "ops-secret");
    assert_eq!(c.destinations.webhook.max_response_body_bytes, 0);
    assert!(!c.destinations.webhook.block_private_ips);
    assert_eq!(c.api_address().to_string(), "[::1]:3333");
    assert_eq!(c.api_header_read_timeout_seconds, 4);
    assert_eq!(c.api_body_read_timeout_seconds, 6);
    assert_eq!(c.api_max_connections, 50);
    assert_eq!(c.metrics_token.expose(), "scrape");
    assert_eq!(
        c.portal.proxy_url.as_deref(),
        Some("https://hooks.example.com/portal")
    );
    assert_eq!(c.log_level, "warn");
    assert_eq!(c.log_format, LogFormat::Json);
    assert_eq!(c.shutdown_timeout(), std::time::Duration::ZERO);
    assert_eq!(c.max_request_body_bytes, 2048);
}

#[test]
fn nats_env_vars_override_and_extend_yaml() {
    let yaml = "
publishmq:
  nats:
    servers: [nats://yaml:4222]
    accounts_dir: /yaml/accounts
    aggregate:
      stream: AGG
      consumer: from-yaml
      tenant_subject: tenant.{tenant_id}.>
";
    let c = ok(
        &format!("{BASE}{yaml}"),
        &[
            ("PUBLISH_NATS_SERVERS", "nats://a:4222, nats://b:4222"),
            ("PUBLISH_NATS_ACCOUNTS_DIR", "/env/accounts"),
            ("PUBLISH_NATS_AGGREGATE_CONSUMER", "from-env"),
            ("PUBLISH_NATS_AGGREGATE_CREDENTIALS_FILE", "/env/agg.creds"),
        ],
    );
    let nats = &c.publishmq.nats;
    assert_eq!(nats.servers, ["nats://a:4222", "nats://b:4222"]);
    assert_eq!(
        nats.accounts_dir.as_deref(),
        Some(Path::new("/env/accounts"))
    );
    let aggregate = nats.aggregate.as_ref().unwrap();
    assert_eq!(aggregate.stream, "AGG");
    assert_eq!(aggregate.consumer, "from-env");
    assert_eq!(
        aggregate.credentials_file.as_deref(),
        Some(Path::new("/env/agg.creds"))
    );
    assert_eq!(aggregate.tenant_subject, "tenant.{tenant_id}.>");
    assert_eq!(aggregate.tenant_token_index(), Some(1));
    assert_eq!(aggregate.subject_filter(), "tenant.*.>");
}

#[test]
fn aggregate_mode_can_come_from_env_alone() {
    let c = ok(
        BASE,
        &[
            ("PUBLISH_NATS_SERVERS", "nats://127.0.0.1:4222"),
            ("PUBLISH_NATS_AGGREGATE_STREAM", "AGG"),
            ("PUBLISH_NATS_AGGREGATE_CONSUMER", "jetpost"),
            (
                "PUBLISH_NATS_AGGREGATE_TENANT_SUBJECT",
                "events.{tenant_id}",
            ),
        ],
    );
    let aggregate = c.publishmq.nats.aggregate.unwrap();
    assert_eq!(aggregate.credentials_file, None);
    assert_eq!(aggregate.tenant_token_index(), Some(1));
}

#[test]
fn empty_env_var_counts_as_unset() {
    let c = ok(
        "api_key: yaml\napi_port: 4000\n",
        &[("API_KEY", ""), ("API_PORT", "")],
    );
    assert_eq!(c.api_key.expose(), "yaml");
    assert_eq!(c.api_port, 4000);
}

#[test]
fn database_url_wins_over_postgres_url_alias() {
    let alias = ok(BASE, &[("POSTGRES_URL", "postgres://alias/db")]);
    assert_eq!(alias.database_url.expose(), "postgres://alias/db");
    let both = ok(
        BASE,
        &[
            ("POSTGRES_URL", "postgres://alias/db"),
            ("DATABASE_URL", "sqlite://x.db"),
        ],
    );
    assert_eq!(both.database_url.expose(), "sqlite://x.db");
    // Outpost's YAML key `postgres` is accepted too.
    let yaml_alias = ok(&format!("{BASE}postgres: postgresql://h/db\n"), &[]);
    assert_eq!(yaml_alias.database_url.expose(), "postgresql://h/db");
}

#[test]
fn retry_max_limit_accepts_outposts_env_name() {
    assert_eq!(ok(BASE, &[("MAX_RETRY_LIMIT", "3")]).retry_max_limit, 3);
    let both = ok(BASE, &[("MAX_RETRY_LIMIT", "3"), ("RETRY_MAX_LIMIT", "5")]);
    assert_eq!(both.retry_max_limit, 5);
}

#[test]
fn operator_events_accepts_outposts_nested_and_the_flat_http_keys() {
    let nested = ok(
        &format!(
            "{BASE}operator_events:\n  topics: ['*']\n  http:\n    url: http://ops/x\n    signing_secret: s\n"
        ),
        &[],
    );
    let flat = ok(
        &format!(
            "{BASE}operator_events:\n  topics: ['*']\n  http_url: http://ops/x\n  http_signing_secret: s\n"
        ),
        &[],
    );
    assert_eq!(nested.operator_events, flat.operator_events);
    assert_eq!(nested.operator_events.http.signing_secret.expose(), "s");
    let both = errors_of(
        &format!("{BASE}operator_events:\n  http:\n    url: http://a/\n  http_url: http://b/\n"),
        &[],
    );
    assert!(both[0].contains("not both"), "{both:?}");
}

// ---- list parsing -------------------------------------------------------------------------

#[test]
fn topics_list_is_trimmed_and_drops_empty_items() {
    let c = ok(BASE, &[("TOPICS", " user.created , ,order.paid,, ")]);
    assert_eq!(c.topics, ["user.created", "order.paid"]);
}

#[test]
fn retry_schedule_list_parses_seconds() {
    let c = ok(BASE, &[("RETRY_SCHEDULE", "5, 60 ,600,,3600")]);
    assert_eq!(c.retry_schedule, [5, 60, 600, 3600]);
    assert_eq!(RetrySchedule::from_config(&c).max_retries(), 4);
}

#[test]
fn retry_schedule_with_a_non_number_names_var_and_value() {
    assert_error(
        BASE,
        &[("RETRY_SCHEDULE", "5,soon,60")],
        "retry_schedule (RETRY_SCHEDULE)",
        "\"5,soon,60\"",
    );
    assert_error(
        BASE,
        &[("RETRY_SCHEDULE", "5,-1")],
        "retry_schedule (RETRY_SCHEDULE)",
        "\"5,-1\"",
    );
}

#[test]
fn nats_servers_list_is_trimmed_and_drops_empty_items() {
    let c = ok(
        &format!("{BASE}publishmq: {{nats: {{accounts_dir: /a}}}}\n"),
        &[("PUBLISH_NATS_SERVERS", ",nats://a:4222 ,, tls://b:4222,")],
    );
    assert_eq!(c.publishmq.nats.servers, ["nats://a:4222", "tls://b:4222"]);
}

// ---- env parsing errors -------------------------------------------------------------------

#[test]
fn unparsable_env_values_name_the_variable_and_the_value() {
    let errors = errors_of(
        BASE,
        &[
            ("API_PORT", "70000"),
            ("API_AUTH_DISABLED", "yes"),
            ("DELIVERY_TIMEOUT_SECONDS", "5s"),
            ("DESTINATIONS_WEBHOOK_MODE", "fancy"),
            ("LOG_FORMAT", "xml"),
        ],
    );
    assert_eq!(
        errors,
        [
            "api_port (API_PORT): \"70000\" is not a port number (0-65535)",
            "api_auth_disabled (API_AUTH_DISABLED): \"yes\" is not a boolean (true, false, 1 or 0)",
            "delivery_timeout_seconds (DELIVERY_TIMEOUT_SECONDS): \"5s\" is not a whole number",
            "destinations.webhook.mode (DESTINATIONS_WEBHOOK_MODE): \"fancy\" is not default or standard",
            "log_format (LOG_FORMAT): \"xml\" is not text or json",
        ]
    );
}

#[test]
fn bools_accept_true_false_1_0_in_any_case() {
    for (value, expected) in [
        ("true", true),
        ("TRUE", true),
        ("1", true),
        ("False", false),
        ("0", false),
    ] {
        let c = ok(BASE, &[("TOPICS_ALLOW_WILDCARDS", value)]);
        assert_eq!(c.topics_allow_wildcards, expected, "{value}");
    }
}

// ---- YAML errors --------------------------------------------------------------------------

#[test]
fn unknown_yaml_key_is_an_error_naming_the_key() {
    let errors = errors_of("api_prot: 3000\n", &[]);
    assert_eq!(errors.len(), 1);
    assert!(errors[0].contains("unknown field `api_prot`"), "{errors:?}");
    assert!(errors[0].ends_with("at line 1 column 1"), "{errors:?}");

    let errors = errors_of("destinations:\n  webhook:\n    header_prefx: x-\n", &[]);
    assert!(errors[0].contains("destinations.webhook"), "{errors:?}");
    assert!(
        errors[0].contains("unknown field `header_prefx`"),
        "{errors:?}"
    );
}

#[test]
fn unknown_key_in_a_static_account_is_an_error() {
    let errors = errors_of(
        "publishmq:\n  nats:\n    accounts:\n      - {name: a, stream: S, consumer: C, tenant: t}\n",
        &[],
    );
    assert!(errors[0].contains("unknown field `tenant`"), "{errors:?}");
}

#[test]
fn yaml_syntax_and_type_errors_carry_the_position() {
    let errors = errors_of("api_port: [\n", &[]);
    assert!(errors[0].starts_with("<yaml>: "), "{errors:?}");
    assert!(errors[0].contains("line"), "{errors:?}");

    let errors = errors_of(
        "api_port: 3000\ndestinations:\n  webhook:\n    mode: fancy\n",
        &[],
    );
    assert!(
        errors[0].contains("destinations.webhook.mode"),
        "{errors:?}"
    );
    assert!(errors[0].contains("fancy"), "{errors:?}");
    assert!(errors[0].contains("line 4"), "{errors:?}");
}

#[test]
fn empty_and_comment_only_yaml_mean_defaults() {
    assert_eq!(ok("", &[("API_KEY", "k")]).api_port, 3333);
    assert_eq!(ok("# nothing here\n", &[("API_KEY", "k")]).api_port, 3333);
}

// ---- validation rules ---------------------------------------------------------------------

#[test]
fn api_key_is_required_unless_auth_is_disabled() {
    assert_error(
        "",
        &[],
        "api_key (API_KEY): empty; set an admin API key or api_auth_disabled: true (API_AUTH_DISABLED)",
        "",
    );
    assert_error("api_key: '  '\n", &[], "api_key (API_KEY)", "empty");
    ok("", &[("API_AUTH_DISABLED", "true")]);
    ok("api_key: k\n", &[]);
}

#[test]
fn the_encryption_secret_is_required() {
    for unset in ["", "  "] {
        assert_error(
            "",
            &[("API_KEY", "k"), ("AES_ENCRYPTION_SECRET", unset)],
            "aes_encryption_secret (AES_ENCRYPTION_SECRET): empty;",
            "encrypts destination credentials",
        );
    }
    assert_error(
        "aes_encryption_secret: ' '\n",
        &[("API_KEY", "k"), ("AES_ENCRYPTION_SECRET", "")],
        "aes_encryption_secret (AES_ENCRYPTION_SECRET)",
        "every replica the same one",
    );
    ok("aes_encryption_secret: s\n", &[("API_KEY", "k")]);
}

#[test]
fn api_host_is_an_ip_address() {
    assert_eq!(
        ok("api_host: 127.0.0.1\n", &[("API_KEY", "k")])
            .api_address()
            .to_string(),
        "127.0.0.1:3333"
    );
    assert_error(
        "",
        &[("API_KEY", "k"), ("API_HOST", "localhost")],
        "api_host (API_HOST): \"localhost\" is not an IP address",
        "",
    );
    let errors = errors_of("api_host: example.com\n", &[("API_KEY", "k")]);
    assert!(errors[0].contains("api_host"), "{errors:?}");
}

#[test]
fn api_connection_limits_must_be_in_range() {
    for (var, key) in [
        (
            "API_HEADER_READ_TIMEOUT_SECONDS",
            "api_header_read_timeout_seconds",
        ),
        (
            "API_BODY_READ_TIMEOUT_SECONDS",
            "api_body_read_timeout_seconds",
        ),
    ] {
        for bad in ["0", "3601"] {
            assert_error(
                BASE,
                &[(var, bad)],
                &format!("{key} ({var})"),
                "it must be 1 to 3600",
            );
        }
    }
    assert_error(
        BASE,
        &[("API_MAX_CONNECTIONS", "0")],
        "api_max_connections (API_MAX_CONNECTIONS)",
        "at least 1",
    );
}

#[test]
fn portal_proxy_url_must_be_an_absolute_http_url() {
    for good in [
        "https://hooks.example.com",
        "http://localhost:8080/portal",
        "https://example.com/hooks?brand=acme",
    ] {
        let c = ok(BASE, &[("PORTAL_PROXY_URL", good)]);
        assert_eq!(c.portal.proxy_url.as_deref(), Some(good));
    }
    for bad in [
        "hooks.example.com",
        "/portal",
        "ftp://hooks.example.com",
        "https://",
        "https://hooks.example.com/#top",
    ] {
        assert_error(
            BASE,
            &[("PORTAL_PROXY_URL", bad)],
            "portal.proxy_url (PORTAL_PROXY_URL)",
            "the URL the portal is served at",
        );
    }
    let c = ok(
        &format!("{BASE}portal:\n  proxy_url: https://hooks.example.com\n"),
        &[],
    );
    assert_eq!(
        c.portal.proxy_url.as_deref(),
        Some("https://hooks.example.com")
    );
    assert_eq!(
        ok(&format!("{BASE}portal:\n  proxy_url: ''\n"), &[])
            .portal
            .proxy_url,
        None
    );
    let c = ok(
        BASE,
        &[(
            "PORTAL_FRAME_ANCESTORS",
            "https://app.example.com, http://localhost:3000",
        )],
    );
    assert_eq!(
        c.portal.frame_ancestors,
        ["https://app.example.com", "http://localhost:3000"]
    );
    for bad in [
        "app.example.com",
        "https://app.example.com/",
        "https://app.example.com/embed",
        "https://app.example.com?x=1",
        "https://user@app.example.com",
        "*",
        "'self'; script-src *",
    ] {
        assert_error(
            BASE,
            &[("PORTAL_FRAME_ANCESTORS", bad)],
            "portal.frame_ancestors (PORTAL_FRAME_ANCESTORS)",
            "is not an origin",
        );
    }
    let errors = errors_of(&format!("{BASE}portal:\n  brand_color: red\n"), &[]);
    assert!(errors[0].contains("brand_color"), "{errors:?}");
}

#[test]
fn api_port_zero_means_pick_a_free_port() {
    assert_eq!(ok(BASE, &[("API_PORT", "0")]).api_port, 0);
}

#[test]
fn database_url_must_be_sqlite_or_postgres() {
    for good in [
        "sqlite://./data/jetpost.db",
        "sqlite:/tmp/x.db",
        "sqlite::memory:",
        "postgres://u:p@localhost:5432/test",
        "postgresql://localhost/test?sslmode=disable",
    ] {
        ok(BASE, &[("DATABASE_URL", good)]);
    }
    assert_error(
        BASE,
        &[("DATABASE_URL", "mysql://u:pw@h/db")],
        "database_url (DATABASE_URL)",
        "not supported",
    );
    assert_error(
        BASE,
        &[("DATABASE_URL", "sqlite://")],
        "database_url (DATABASE_URL)",
        "no file path",
    );
    assert_error(
        BASE,
        &[("DATABASE_URL", "postgres://h:notaport/db")],
        "database_url (DATABASE_URL)",
        "not a valid URL",
    );
}

#[test]
fn database_url_errors_do_not_print_the_password() {
    let errors = errors_of(BASE, &[("DATABASE_URL", "mysql://app:hunter2@db/x")]);
    assert!(errors[0].contains("mysql://app:***@db/x"), "{errors:?}");
    assert!(!errors[0].contains("hunter2"), "{errors:?}");
}

#[test]
fn concurrency_and_limits_must_be_at_least_one() {
    for (var, key) in [
        ("DELIVERY_MAX_CONCURRENCY", "delivery_max_concurrency"),
        (
            "DELIVERY_MAX_CONCURRENCY_PER_DESTINATION",
            "delivery_max_concurrency_per_destination",
        ),
        ("PUBLISH_MAX_CONCURRENCY", "publish_max_concurrency"),
        ("DELIVERY_TIMEOUT_SECONDS", "delivery_timeout_seconds"),
        ("MAX_DESTINATIONS_PER_TENANT", "max_destinations_per_tenant"),
        ("MAX_REQUEST_BODY_BYTES", "max_request_body_bytes"),
    ] {
        assert_error(BASE, &[(var, "0")], &format!("{key} ({var})"), "at least 1");
    }
}

#[test]
fn retry_schedule_entries_must_be_positive_and_at_most_a_year() {
    assert_error(
        &format!("{BASE}retry_schedule: [5, 0, 60]\n"),
        &[],
        "retry_schedule[1] (RETRY_SCHEDULE)",
        "out of range",
    );
    assert_error(
        BASE,
        &[("RETRY_SCHEDULE", "5,99999999999")],
        "retry_schedule[1] (RETRY_SCHEDULE)",
        "out of range",
    );
    // A negative delay in YAML is a type error.
    let errors = errors_of(&format!("{BASE}retry_schedule: [-5]\n"), &[]);
    assert!(errors[0].contains("retry_schedule"), "{errors:?}");
}

#[test]
fn log_retention_ttl_days_parses_and_refuses_negative_or_absurd_values() {
    let c = ok(BASE, &[]);
    assert_eq!(c.log_retention_ttl_days, 0);
    assert_eq!(c.log_retention_ttl(), None, "0 keeps events forever");
    let c = ok(&format!("{BASE}log_retention_ttl_days: 30\n"), &[]);
    assert_eq!(c.log_retention_ttl(), Some(chrono::TimeDelta::days(30)));
    let c = ok(
        &format!("{BASE}log_retention_ttl_days: 30\n"),
        &[("LOG_RETENTION_TTL_DAYS", "7")],
    );
    assert_eq!(
        c.log_retention_ttl_days, 7,
        "the env var wins over the file"
    );

    assert_error(
        BASE,
        &[("LOG_RETENTION_TTL_DAYS", "-1")],
        "log_retention_ttl_days (LOG_RETENTION_TTL_DAYS)",
        "whole number of days",
    );
    assert_error(
        BASE,
        &[("LOG_RETENTION_TTL_DAYS", "36501")],
        "log_retention_ttl_days (LOG_RETENTION_TTL_DAYS)",
        "out of range",
    );
    // A negative value in YAML is a type error naming the key.
    let errors = errors_of(&format!("{BASE}log_retention_ttl_days: -1\n"), &[]);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("log_retention_ttl_days"), "{errors:?}");
    assert!(errors[0].contains("-1"), "{errors:?}");
}

#[test]
fn exponential_retries_must_stay_within_a_year() {
    ok(BASE, &[("RETRY_MAX_LIMIT", "21")]);
    assert_error(
        BASE,
        &[("RETRY_MAX_LIMIT", "22")],
        "retry_max_limit (RETRY_MAX_LIMIT)",
        "more than a year",
    );
    assert_error(
        BASE,
        &[("RETRY_MAX_LIMIT", "4000000000")],
        "retry_max_limit (RETRY_MAX_LIMIT)",
        "more than a year",
    );
    assert_error(
        BASE,
        &[("RETRY_INTERVAL_SECONDS", "0")],
        "retry_interval_seconds (RETRY_INTERVAL_SECONDS)",
        "at least 1",
    );
    // Neither matters when retries are off or a schedule overrides them.
    ok(
        BASE,
        &[("RETRY_INTERVAL_SECONDS", "0"), ("RETRY_MAX_LIMIT", "0")],
    );
    ok(
        BASE,
        &[("RETRY_MAX_LIMIT", "99"), ("RETRY_SCHEDULE", "1,2")],
    );
}

#[test]
fn topics_entries_must_not_be_empty() {
    assert_error(
        &format!("{BASE}topics: [a, '', ' ']\n"),
        &[],
        "topics[1] (TOPICS)",
        "empty topic",
    );
    assert_error(
        &format!("{BASE}topics: [a, '', ' ']\n"),
        &[],
        "topics[2] (TOPICS)",
        "empty topic",
    );
}

#[test]
fn operator_events_need_an_http_url() {
    assert_error(
        BASE,
        &[
            ("OPERATOR_EVENTS_TOPICS", "*"),
            ("OPERATOR_EVENTS_HTTP_URL", "ftp://ops/x"),
        ],
        "operator_events.http.url (OPERATOR_EVENTS_HTTP_URL)",
        "not an http:// or https:// URL",
    );
    assert_error(
        BASE,
        &[("OPERATOR_EVENTS_HTTP_URL", "not a url")],
        "operator_events.http.url (OPERATOR_EVENTS_HTTP_URL)",
        "not an http",
    );
    assert_error(
        BASE,
        &[("OPERATOR_EVENTS_TOPICS", "*")],
        "operator_events.topics (OPERATOR_EVENTS_TOPICS)",
        "nowhere to send",
    );
    assert_error(
        &format!("{BASE}operator_events:\n  topics: ['']\n  http: {{url: 'http://ops/'}}\n"),
        &[],
        "operator_events.topics[0] (OPERATOR_EVENTS_TOPICS)",
        "empty topic",
    );
    ok(
        BASE,
        &[("OPERATOR_EVENTS_HTTP_URL", "http://localhost:9000/ops")],
    );
}

#[test]
fn webhook_header_prefix_must_be_a_header_name() {
    assert_error(
        &format!("{BASE}destinations: {{webhook: {{header_prefix: ''}}}}\n"),
        &[],
        "destinations.webhook.header_prefix (DESTINATIONS_WEBHOOK_HEADER_PREFIX)",
        "empty",
    );
    assert_error(
        BASE,
        &[("DESTINATIONS_WEBHOOK_HEADER_PREFIX", "x outpost:")],
        "destinations.webhook.header_prefix (DESTINATIONS_WEBHOOK_HEADER_PREFIX)",
        "not allowed in an HTTP header name",
    );
}

#[test]
fn webhook_mode_must_be_default_or_standard_in_yaml_too() {
    let errors = errors_of(
        &format!("{BASE}destinations: {{webhook: {{mode: legacy}}}}\n"),
        &[],
    );
    assert!(
        errors[0].contains("destinations.webhook.mode"),
        "{errors:?}"
    );
    assert!(errors[0].contains("`default` or `standard`"), "{errors:?}");
}

#[test]
fn log_level_must_be_a_level_or_a_filter() {
    for good in [
        "info",
        "DEBUG",
        "off",
        "info,jetpost=debug",
        "jetpost=trace",
    ] {
        ok(BASE, &[("LOG_LEVEL", good)]);
    }
    assert_error(
        BASE,
        &[("LOG_LEVEL", "verbose")],
        "log_level (LOG_LEVEL)",
        "not a log level",
    );
    assert_error(
        BASE,
        &[("LOG_LEVEL", "info,jetpost=loud")],
        "log_level (LOG_LEVEL)",
        "not a valid log filter",
    );
    assert_error(
        &format!("{BASE}log_level: ''\n"),
        &[],
        "log_level (LOG_LEVEL)",
        "empty",
    );
}

#[test]
fn log_format_must_be_text_or_json_in_yaml_too() {
    let errors = errors_of(&format!("{BASE}log_format: xml\n"), &[]);
    assert!(errors[0].contains("log_format"), "{errors:?}");
    assert_eq!(
        ok(&format!("{BASE}log_format: json\n"), &[]).log_format,
        LogFormat::Json
    );
}

// ---- NATS ---------------------------------------------------------------------------------

#[test]
fn a_valid_static_account_loads() {
    let c = ok(&format!("{BASE}{NATS_ACCOUNT}"), &[]);
    let account = &c.publishmq.nats.accounts[0];
    assert_eq!(account.name, "acme");
    assert_eq!(account.stream, "EVENTS");
    assert_eq!(account.consumer, "jetpost");
    assert_eq!(account.tenant_id, "t_acme");
    assert_eq!(account.credentials_file, None);
}

#[test]
fn nats_servers_without_an_account_source_is_an_error() {
    assert_error(
        BASE,
        &[("PUBLISH_NATS_SERVERS", "nats://127.0.0.1:4222")],
        "publishmq.nats.servers (PUBLISH_NATS_SERVERS)",
        "no account is configured",
    );
}

#[test]
fn an_account_source_without_servers_is_an_error() {
    assert_error(
        BASE,
        &[("PUBLISH_NATS_ACCOUNTS_DIR", "/accounts")],
        "publishmq.nats.servers (PUBLISH_NATS_SERVERS)",
        "empty, but publishmq.nats.accounts_dir is configured",
    );
    let yaml =
        format!("{BASE}{NATS_ACCOUNT}").replace("servers: [nats://127.0.0.1:4222]", "servers: []");
    assert_error(
        &yaml,
        &[],
        "publishmq.nats.servers",
        "publishmq.nats.accounts is configured",
    );
}

#[test]
fn nats_server_urls_need_a_nats_scheme() {
    assert_error(
        &format!("{BASE}{NATS_ACCOUNT}"),
        &[("PUBLISH_NATS_SERVERS", "nats://a:4222,http://b:4222")],
        "publishmq.nats.servers[1] (PUBLISH_NATS_SERVERS)",
        "\"http\"",
    );
    ok(
        &format!("{BASE}{NATS_ACCOUNT}"),
        &[("PUBLISH_NATS_SERVERS", "localhost:4222,wss://c:443")],
    );
}

#[test]
fn static_accounts_need_name_stream_consumer_and_tenant() {
    let yaml = format!(
        "{BASE}publishmq:\n  nats:\n    servers: [nats://x:4222]\n    accounts:\n      - {{credentials_file: a.creds}}\n"
    );
    let errors = errors_of(&yaml, &[]);
    for field in ["name", "stream", "consumer", "tenant_id"] {
        let prefix = format!("publishmq.nats.accounts[0].{field}: empty");
        assert!(
            errors.iter().any(|e| e.starts_with(&prefix)),
            "{prefix} missing in {errors:#?}"
        );
    }
    assert_eq!(errors.len(), 4, "{errors:#?}");
}

#[test]
fn static_account_stream_and_consumer_must_be_nats_names() {
    let yaml = format!("{BASE}{NATS_ACCOUNT}").replace("stream: EVENTS", "stream: my.events");
    assert_error(
        &yaml,
        &[],
        "publishmq.nats.accounts[0].stream: account \"acme\": \"my.events\" is not a valid NATS",
        "stream/consumer name",
    );
}

#[test]
fn duplicate_static_account_names_name_both_positions() {
    let yaml = format!(
        "{NATS_ACCOUNT}      - {{name: other, stream: S, consumer: C, tenant_id: t2}}\n      - {{name: acme, stream: S, consumer: C, tenant_id: t3}}\n"
    );
    assert_error(
        &format!("{BASE}{yaml}"),
        &[],
        "publishmq.nats.accounts[2].name: \"acme\" is also the name of publishmq.nats.accounts[0]",
        "unique",
    );
}

#[test]
fn aggregate_needs_stream_consumer_and_tenant_subject_together() {
    let servers = ("PUBLISH_NATS_SERVERS", "nats://x:4222");
    let errors = errors_of(
        BASE,
        &[
            servers,
            ("PUBLISH_NATS_AGGREGATE_CREDENTIALS_FILE", "/agg.creds"),
        ],
    );
    assert_eq!(errors.len(), 3, "{errors:#?}");
    assert!(
        errors[0]
            .starts_with("publishmq.nats.aggregate.stream (PUBLISH_NATS_AGGREGATE_STREAM): empty")
    );
    assert!(
        errors[1].starts_with(
            "publishmq.nats.aggregate.consumer (PUBLISH_NATS_AGGREGATE_CONSUMER): empty"
        )
    );
    assert!(errors[2].starts_with(
        "publishmq.nats.aggregate.tenant_subject (PUBLISH_NATS_AGGREGATE_TENANT_SUBJECT): empty"
    ));
}

#[test]
fn aggregate_tenant_subject_needs_tenant_id_as_one_whole_token() {
    let base = [
        ("PUBLISH_NATS_SERVERS", "nats://x:4222"),
        ("PUBLISH_NATS_AGGREGATE_STREAM", "AGG"),
        ("PUBLISH_NATS_AGGREGATE_CONSUMER", "jetpost"),
    ];
    let key = "publishmq.nats.aggregate.tenant_subject (PUBLISH_NATS_AGGREGATE_TENANT_SUBJECT)";
    for (subject, fragment) in [
        ("tenant.>", "does not contain {tenant_id}"),
        ("tenant.x{tenant_id}.>", "one whole dot-separated token"),
        ("tenant.{tenant_id}-x.>", "one whole dot-separated token"),
        ("{tenant_id}.{tenant_id}", "more than once"),
        ("tenant..{tenant_id}", "empty token"),
        ("tenant.>.{tenant_id}", "'>' may only be the last token"),
        ("tenant.{tenant_id}.a*", "must be whole tokens"),
    ] {
        let mut vars = base.to_vec();
        vars.push(("PUBLISH_NATS_AGGREGATE_TENANT_SUBJECT", subject));
        assert_error(BASE, &vars, key, fragment);
    }
    for (subject, index) in [
        ("{tenant_id}", 0),
        ("a.*.{tenant_id}.>", 2),
        ("tenant.{tenant_id}.events.*", 1),
    ] {
        let mut vars = base.to_vec();
        vars.push(("PUBLISH_NATS_AGGREGATE_TENANT_SUBJECT", subject));
        let c = ok(BASE, &vars);
        assert_eq!(
            c.publishmq.nats.aggregate.unwrap().tenant_token_index(),
            Some(index),
            "{subject}"
        );
    }
}

// ---- everything together ------------------------------------------------------------------

#[test]
fn all_problems_are_reported_together_one_per_line() {
    let yaml = "
api_port: 3000
delivery_max_concurrency: 0
destinations:
  webhook:
    header_prefix: ''
publishmq:
  nats:
    accounts_dir: /accounts
";
    let err = load(
        yaml,
        &[
            ("DELIVERY_TIMEOUT_SECONDS", "soon"),
            ("DATABASE_URL", "mysql://h/db"),
        ],
    )
    .unwrap_err();
    let text = err.to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 6, "{text}");
    assert!(
        lines[0].starts_with("delivery_timeout_seconds (DELIVERY_TIMEOUT_SECONDS): \"soon\""),
        "{text}"
    );
    assert!(lines[1].starts_with("api_key (API_KEY)"), "{text}");
    assert!(
        lines[2].starts_with("database_url (DATABASE_URL)"),
        "{text}"
    );
    assert!(
        lines[3].starts_with("delivery_max_concurrency (DELIVERY_MAX_CONCURRENCY)"),
        "{text}"
    );
    assert!(
        lines[4].starts_with("destinations.webhook.header_prefix"),
        "{text}"
    );
    assert!(
        lines[5].starts_with("publishmq.nats.servers (PUBLISH_NATS_SERVERS)"),
        "{text}"
    );
    assert_eq!(err.errors().len(), 6);
}

#[test]
fn validate_checks_a_config_built_in_code() {
    assert!(Config::default().validate().is_err());
    let config = Config {
        api_auth_disabled: true,
        api_port: 0,
        aes_encryption_secret: Secret::from("aes"),
        ..Config::default()
    };
    assert_eq!(config.validate(), Ok(()));
}

// ---- secrets ------------------------------------------------------------------------------

#[test]
fn debug_output_hides_every_secret() {
    let c = ok(
        "",
        &[
            ("API_KEY", "secret-api-key"),
            ("API_JWT_SECRET", "secret-jwt"),
            ("AES_ENCRYPTION_SECRET", "secret-aes"),
            ("OPERATOR_EVENTS_HTTP_SIGNING_SECRET", "secret-signing"),
            (
                "DATABASE_URL",
                "postgres://app:secret-db-password@db/jetpost",
            ),
        ],
    );
    let debug = format!("{c:?} {c:#?}");
    for secret in [
        "secret-api-key",
        "secret-jwt",
        "secret-aes",
        "secret-signing",
        "secret-db-password",
    ] {
        assert!(!debug.contains(secret), "{secret} leaked in Debug: {debug}");
    }
    assert!(debug.contains("postgres://app:***@db/jetpost"), "{debug}");
    assert_eq!(c.api_key.expose(), "secret-api-key");
}

// ---- files --------------------------------------------------------------------------------

#[test]
fn load_reads_an_explicit_file_then_applies_env() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("custom.yaml");
    std::fs::write(
        &path,
        "api_key: file\napi_port: 4100\naes_encryption_secret: aes\n",
    )
    .unwrap();
    let c = Config::load(Some(&path), &env(&[("API_PORT", "4200")])).unwrap();
    assert_eq!(c.api_key.expose(), "file");
    assert_eq!(c.api_port, 4200);
}

#[test]
fn load_uses_the_config_env_var_when_no_file_is_given() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("from-env.yaml");
    std::fs::write(
        &path,
        "api_key: via-config-env\naes_encryption_secret: aes\n",
    )
    .unwrap();
    let vars = env(&[("CONFIG", path.to_str().unwrap())]);
    assert_eq!(
        Config::load(None, &vars).unwrap().api_key.expose(),
        "via-config-env"
    );
    // --config wins over $CONFIG.
    let other = dir.path().join("flag.yaml");
    std::fs::write(&other, "api_key: via-flag\naes_encryption_secret: aes\n").unwrap();
    assert_eq!(
        Config::load(Some(&other), &vars).unwrap().api_key.expose(),
        "via-flag"
    );
}

#[test]
fn a_missing_named_file_is_an_error_naming_the_path() {
    let missing = PathBuf::from("/nonexistent/jetpost-test.yaml");
    let err = Config::load(Some(&missing), &env(&[("API_KEY", "k")])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "config file /nonexistent/jetpost-test.yaml: not found"
    );
    let err = Config::load(None, &env(&[("CONFIG", "/nonexistent/via-env.yaml")])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "config file /nonexistent/via-env.yaml: not found"
    );
}

#[test]
fn yaml_errors_in_a_file_name_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, "api_key: k\nalert:\n  consecutive_failure_cont: 3\n").unwrap();
    let err = Config::load(Some(&path), &HashMap::new())
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(&format!(
            "{}: alert: unknown field `consecutive_failure_cont`",
            path.display()
        )),
        "{err}"
    );
    assert!(err.contains("line 3"), "{err}");
}

#[test]
fn the_default_file_is_used_only_when_it_exists() {
    let dir = tempfile::tempdir().unwrap();
    let none = HashMap::new();
    assert_eq!(Config::file_path_in(None, &none, dir.path()), None);
    std::fs::write(dir.path().join(DEFAULT_CONFIG_FILE), "").unwrap();
    assert_eq!(
        Config::file_path_in(None, &none, dir.path()),
        Some(dir.path().join("jetpost.yaml"))
    );
    let vars = env(&[("CONFIG", "/etc/jetpost.yaml")]);
    assert_eq!(
        Config::file_path_in(None, &vars, dir.path()),
        Some(PathBuf::from("/etc/jetpost.yaml"))
    );
    // An empty $CONFIG counts as unset.
    let vars = env(&[("CONFIG", "")]);
    assert_eq!(
        Config::file_path_in(None, &vars, dir.path()),
        Some(dir.path().join("jetpost.yaml"))
    );
}

// ---- docs stay in step --------------------------------------------------------------------

const DOCS: &str = include_str!("../../docs/configuration.md");

#[test]
fn docs_mention_every_env_var() {
    let names = Config::env_var_names();
    assert_eq!(names.len(), 48, "{names:?}");
    for name in names {
        assert!(
            DOCS.contains(&format!("`{name}`")),
            "docs/configuration.md does not mention `{name}`"
        );
    }
}

#[test]
fn docs_example_file_is_a_valid_config() {
    let start = DOCS.find("```yaml\n").expect("docs have a ```yaml example") + "```yaml\n".len();
    let len = DOCS[start..].find("```").unwrap();
    let c = ok(&DOCS[start..start + len], &[]);
    assert!(c.publishmq.nats.has_account_source());
}

#[test]
fn nats_ownership_defaults_by_store_and_exclusive_needs_postgres() {
    let yaml = format!("{BASE}{NATS_ACCOUNT}");
    let sqlite = ok(&yaml, &[]);
    assert_eq!(sqlite.publishmq.nats.ownership, None);
    assert_eq!(
        sqlite
            .publishmq
            .nats
            .ownership_on(sqlite.database_url.backend()),
        Ownership::Shared
    );
    let postgres = ok(&yaml, &[("DATABASE_URL", "postgres://u@127.0.0.1/db")]);
    assert_eq!(
        postgres
            .publishmq
            .nats
            .ownership_on(postgres.database_url.backend()),
        Ownership::Exclusive
    );
    let shared = ok(
        &yaml,
        &[
            ("DATABASE_URL", "postgres://u@127.0.0.1/db"),
            ("PUBLISH_NATS_OWNERSHIP", "Shared"),
        ],
    );
    assert_eq!(shared.publishmq.nats.ownership, Some(Ownership::Shared));
    let in_yaml = ok(
        &yaml.replace("servers:", "ownership: exclusive\n    servers:"),
        &[("DATABASE_URL", "postgres://u@127.0.0.1/db")],
    );
    assert_eq!(in_yaml.publishmq.nats.ownership, Some(Ownership::Exclusive));
    assert_error(
        &yaml,
        &[("PUBLISH_NATS_OWNERSHIP", "exclusive")],
        "publishmq.nats.ownership (PUBLISH_NATS_OWNERSHIP)",
        "exclusive needs a Postgres store",
    );
    assert_error(
        &yaml,
        &[("PUBLISH_NATS_OWNERSHIP", "solo")],
        "publishmq.nats.ownership (PUBLISH_NATS_OWNERSHIP)",
        "shared or exclusive",
    );
}
