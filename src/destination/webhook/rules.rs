//! The webhook type's rules for API writes: its `config` rules (`url`, the `custom_headers`
//! JSON), its `credentials` rules (who may set a secret, rotation with `rotate_secret`, a
//! generated secret when none is given) and its `/destination-types` description. Mirrors
//! Outpost's webhook provider.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use serde_json::{Value, json};

use super::provider::{validate_custom_headers, validate_webhook_url};
use super::signature::generate_secret;
use crate::config::{WebhookConfig, WebhookMode};
use crate::destination::{Writer, obfuscate};

/// The type name.
pub const TYPE: &str = "webhook";

/// The credential keys a webhook keeps; anything else sent is dropped.
const SECRET: &str = "secret";
const PREVIOUS_SECRET: &str = "previous_secret";
const PREVIOUS_SECRET_INVALID_AT: &str = "previous_secret_invalid_at";
const KEYS: [&str; 3] = [SECRET, PREVIOUS_SECRET, PREVIOUS_SECRET_INVALID_AT];

/// How long the previous secret keeps signing after a rotation, unless told otherwise.
const ROTATION_OVERLAP: TimeDelta = TimeDelta::hours(24);

type Map = BTreeMap<String, String>;

fn get<'a>(map: &'a Map, key: &str) -> &'a str {
    map.get(key).map(String::as_str).unwrap_or("")
}

/// Problems with `config` under the server's webhook settings (`block_private_ips`,
/// `header_prefix`), each naming its field.
pub fn validate_config(config: &Map, settings: &WebhookConfig) -> Vec<String> {
    let mut problems = Vec::new();
    match get(config, "url") {
        "" => problems.push("config.url is required".to_owned()),
        url => {
            if let Err(err) = validate_webhook_url(url, settings.block_private_ips) {
                problems.push(err.to_string());
            }
        }
    }
    let headers = get(config, "custom_headers");
    if !headers.is_empty() {
        match serde_json::from_str::<BTreeMap<String, String>>(headers) {
            Ok(headers) => {
                if let Err(errors) = validate_custom_headers(&headers, &settings.header_prefix) {
                    problems.extend(errors.iter().map(ToString::to_string));
                }
            }
            Err(_) => problems.push(
                "config.custom_headers must be a JSON object of header names to string values"
                    .to_owned(),
            ),
        }
    }
    problems
}

/// Outpost's consistency rules for stored credentials: a secret whenever any is set, and a
/// previous secret only together with the time it stops signing.
pub fn validate_credentials(credentials: &Map) -> Vec<String> {
    let secret = get(credentials, SECRET);
    let previous = get(credentials, PREVIOUS_SECRET);
    let invalid_at = get(credentials, PREVIOUS_SECRET_INVALID_AT);
    if secret.is_empty() && previous.is_empty() && invalid_at.is_empty() {
        return Vec::new();
    }
    let mut problems = Vec::new();
    if secret.is_empty() {
        problems.push("credentials.secret is required".to_owned());
    }
    if !invalid_at.is_empty() && DateTime::parse_from_rfc3339(invalid_at).is_err() {
        problems.push(
            "credentials.previous_secret_invalid_at must be an RFC 3339 date-time".to_owned(),
        );
    }
    if !previous.is_empty() && invalid_at.is_empty() {
        problems.push(
            "credentials.previous_secret_invalid_at is required with credentials.previous_secret"
                .to_owned(),
        );
    }
    if previous.is_empty() && !invalid_at.is_empty() {
        problems.push(
            "credentials.previous_secret is required with credentials.previous_secret_invalid_at"
                .to_owned(),
        );
    }
    problems
}

/// The credentials to store, as Outpost's webhook provider prepares them.
///
/// `merged` is the requested credentials (a create's, or the original merged with a patch),
/// `sent` what this request itself sent, `original` the stored ones on update. `rotate_secret` (truthy) moves the current secret to
/// `previous_secret`, generates a new one and keeps the old one signing for 24 hours (or until
/// the `previous_secret_invalid_at` sent along). Otherwise only the admin may set secrets; a
/// tenant's credentials stay as they were. A new destination without a secret gets one.
pub fn prepare_credentials(
    merged: &Map,
    sent: &Map,
    original: Option<&Map>,
    writer: Writer,
    mode: WebhookMode,
    now: DateTime<Utc>,
) -> Result<Map, Vec<String>> {
    let mut prepared = Map::new();
    if is_truthy(get(merged, "rotate_secret")) {
        let Some(original) = original else {
            return Err(vec![
                "credentials.rotate_secret is invalid on create: there is no secret to rotate yet"
                    .to_owned(),
            ]);
        };
        let current = get(original, SECRET);
        if current.is_empty() {
            return Err(vec![
                "credentials.secret is required to rotate: the destination has none".to_owned(),
            ]);
        }
        prepared.insert(PREVIOUS_SECRET.to_owned(), current.to_owned());
        prepared.insert(SECRET.to_owned(), generate_secret(mode).expose().to_owned());
        let invalid_at = match get(sent, PREVIOUS_SECRET_INVALID_AT) {
            "" => rfc3339(now + ROTATION_OVERLAP),
            value => value.to_owned(),
        };
        prepared.insert(PREVIOUS_SECRET_INVALID_AT.to_owned(), invalid_at);
        return Ok(prepared);
    }
    match writer {
        Writer::Admin => {
            for key in KEYS {
                let value = get(merged, key);
                if !value.is_empty() {
                    prepared.insert(key.to_owned(), value.to_owned());
                }
            }
        }
        Writer::Tenant => {
            let empty = Map::new();
            let before = original.unwrap_or(&empty);
            let forbidden: Vec<String> = KEYS
                .iter()
                .filter(|key| {
                    let value = get(merged, key);
                    !value.is_empty() && value != get(before, key)
                })
                .map(|key| {
                    format!(
                        "credentials.{key} is forbidden: only the admin may set secrets (a \
                         tenant may rotate with credentials.rotate_secret)"
                    )
                })
                .collect();
            if !forbidden.is_empty() {
                return Err(forbidden);
            }
            for key in KEYS {
                let value = get(before, key);
                if !value.is_empty() {
                    prepared.insert(key.to_owned(), value.to_owned());
                }
            }
        }
    }
    if original.is_none() && KEYS.iter().all(|k| get(&prepared, k).is_empty()) {
        prepared.insert(SECRET.to_owned(), generate_secret(mode).expose().to_owned());
    }
    if !get(&prepared, PREVIOUS_SECRET).is_empty()
        && get(&prepared, PREVIOUS_SECRET_INVALID_AT).is_empty()
    {
        prepared.insert(
            PREVIOUS_SECRET_INVALID_AT.to_owned(),
            rfc3339(now + ROTATION_OVERLAP),
        );
    }
    Ok(prepared)
}

/// Credentials as responses show them: the webhook secrets in clear (as Outpost: the tenant
/// needs them to verify signatures), a previous secret only while it still signs, and any
/// other key masked.
pub fn displayed_credentials(credentials: &Map, now: DateTime<Utc>) -> Map {
    let expired = DateTime::parse_from_rfc3339(get(credentials, PREVIOUS_SECRET_INVALID_AT))
        .is_ok_and(|t| t.with_timezone(&Utc) < now);
    credentials
        .iter()
        .filter(|(k, _)| {
            !(expired
                && (k.as_str() == PREVIOUS_SECRET || k.as_str() == PREVIOUS_SECRET_INVALID_AT))
        })
        .map(|(k, v)| {
            let shown = if KEYS.contains(&k.as_str()) {
                v.clone()
            } else {
                obfuscate(v)
            };
            (k.clone(), shown)
        })
        .collect()
}

fn is_truthy(value: &str) -> bool {
    matches!(
        value.to_ascii_lowercase().as_str(),
        "true" | "1" | "on" | "yes"
    )
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The `/destination-types` entry for webhooks.
pub fn schema(mode: WebhookMode) -> Value {
    let format = match mode {
        WebhookMode::Default => {
            "jetpost POSTs the event's data as the JSON body with x-outpost-event-id, \
             x-outpost-topic, x-outpost-timestamp and x-outpost-signature (v0=<hex HMAC-SHA256 \
             of the body>) headers"
        }
        WebhookMode::Standard => {
            "jetpost POSTs the event's data as the JSON body following Standard Webhooks: \
             webhook-id, webhook-timestamp and webhook-signature (v1,<base64 HMAC-SHA256>) headers"
        }
    };
    json!({
        "type": TYPE,
        "label": "Webhook",
        "description": "Send events as HTTP POST requests to a URL.",
        "icon": WEBHOOK_ICON,
        "instructions": format!(
            "# Webhook\n\nEnter the HTTPS URL of an endpoint that accepts POST requests. {format}. \
             Answer with a 2xx status to acknowledge; other answers are retried with backoff.\n\n\
             Verify every request with the destination's signing secret (shown in its \
             credentials) before trusting it."
        ),
        "config_fields": [
            {
                "key": "url",
                "type": "text",
                "label": "Webhook URL",
                "description": "The http(s) URL events are POSTed to.",
                "required": true,
                "pattern": "^https?:\\/\\/[^\\s]+$"
            },
            {
                "key": "custom_headers",
                "type": "key_value_map",
                "label": "Custom Headers",
                "description": "Extra HTTP headers sent with every request, as a JSON object of \
                                names to values. Names use letters, digits, '-' and '_'; \
                                jetpost's own headers cannot be overridden.",
                "required": false
            }
        ],
        "credential_fields": []
    })
}

/// A plain hook glyph.
const WEBHOOK_ICON: &str = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"16\" height=\"16\" \
    viewBox=\"0 0 16 16\" fill=\"none\" stroke=\"currentColor\" stroke-width=\"1.5\"><circle \
    cx=\"4.5\" cy=\"11.5\" r=\"2\"/><circle cx=\"11.5\" cy=\"11.5\" r=\"2\"/><circle cx=\"8\" \
    cy=\"4.5\" r=\"2\"/><path d=\"M8 6.5 5.5 10M6.5 11.5h3M8 6.5l2.5 3.5\"/></svg>";

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> Map {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn settings(block_private_ips: bool) -> WebhookConfig {
        WebhookConfig {
            block_private_ips,
            ..WebhookConfig::default()
        }
    }

    #[test]
    fn config_needs_a_url_and_valid_headers() {
        assert_eq!(
            validate_config(&Map::new(), &settings(false)),
            vec!["config.url is required"]
        );
        assert!(
            validate_config(&map(&[("url", "https://example.com/h")]), &settings(false)).is_empty()
        );
        let bad = validate_config(
            &map(&[
                ("url", "ftp://x"),
                ("custom_headers", r#"{"Content-Type":"x"}"#),
            ]),
            &settings(false),
        );
        assert_eq!(bad.len(), 2, "{bad:?}");
        assert!(bad[0].starts_with("config.url"));
        assert!(bad[1].starts_with("config.custom_headers.Content-Type"));
        let not_json = validate_config(
            &map(&[("url", "https://e.com"), ("custom_headers", "x")]),
            &settings(false),
        );
        assert!(not_json[0].starts_with("config.custom_headers must be"));
        let private = validate_config(&map(&[("url", "http://127.0.0.1/h")]), &settings(true));
        assert_eq!(private.len(), 1);
    }

    #[test]
    fn a_new_destination_gets_a_secret() {
        let creds = prepare_credentials(
            &Map::new(),
            &Map::new(),
            None,
            Writer::Tenant,
            WebhookMode::Default,
            Utc::now(),
        )
        .unwrap();
        assert!(creds["secret"].starts_with("whsec_"));
        assert_eq!(creds.len(), 1);
    }

    #[test]
    fn only_the_admin_sets_secrets() {
        let asked = map(&[("secret", "whsec_mine"), ("extra", "x")]);
        let admin = prepare_credentials(
            &asked,
            &asked,
            None,
            Writer::Admin,
            WebhookMode::Default,
            Utc::now(),
        )
        .unwrap();
        assert_eq!(admin, map(&[("secret", "whsec_mine")]));
        let tenant = prepare_credentials(
            &asked,
            &asked,
            None,
            Writer::Tenant,
            WebhookMode::Default,
            Utc::now(),
        )
        .unwrap_err();
        assert!(tenant[0].starts_with("credentials.secret is forbidden"));
        // A tenant re-sending the stored values changes nothing and is fine.
        let stored = map(&[("secret", "whsec_old")]);
        let same = prepare_credentials(
            &stored,
            &stored,
            Some(&stored),
            Writer::Tenant,
            WebhookMode::Default,
            Utc::now(),
        )
        .unwrap();
        assert_eq!(same, stored);
    }

    #[test]
    fn rotation_keeps_the_old_secret_for_a_day() {
        let now: DateTime<Utc> = "2024-01-01T00:00:00Z".parse().unwrap();
        let stored = map(&[("secret", "whsec_old")]);
        let mut asked = stored.clone();
        asked.insert("rotate_secret".into(), "true".into());
        let rotated = prepare_credentials(
            &asked,
            &asked,
            Some(&stored),
            Writer::Tenant,
            WebhookMode::Default,
            now,
        )
        .unwrap();
        assert_eq!(rotated["previous_secret"], "whsec_old");
        assert_ne!(rotated["secret"], "whsec_old");
        assert_eq!(
            rotated["previous_secret_invalid_at"],
            "2024-01-02T00:00:00Z"
        );
        assert!(
            prepare_credentials(
                &asked,
                &asked,
                None,
                Writer::Admin,
                WebhookMode::Default,
                now
            )
            .is_err()
        );
    }

    #[test]
    fn credential_consistency() {
        assert!(validate_credentials(&Map::new()).is_empty());
        assert_eq!(
            validate_credentials(&map(&[("previous_secret", "p")])).len(),
            2
        );
        assert!(
            validate_credentials(&map(&[
                ("secret", "s"),
                ("previous_secret", "p"),
                ("previous_secret_invalid_at", "2024-01-01T00:00:00Z")
            ]))
            .is_empty()
        );
    }

    #[test]
    fn display_hides_expired_previous_secrets_and_masks_unknown_keys() {
        let now: DateTime<Utc> = "2024-01-03T00:00:00Z".parse().unwrap();
        let creds = map(&[
            ("secret", "whsec_new"),
            ("previous_secret", "whsec_old"),
            ("previous_secret_invalid_at", "2024-01-02T00:00:00Z"),
            ("token", "abcdefghijkl"),
        ]);
        let shown = displayed_credentials(&creds, now);
        assert_eq!(
            shown,
            map(&[("secret", "whsec_new"), ("token", "abcd********")])
        );
        assert_eq!(obfuscate("short"), "*****");
    }
}
