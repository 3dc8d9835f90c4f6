//! API-write rules the AWS types share: the `key`/`secret`/`session` credentials, the region
//! and endpoint URLs (refused when they point at non-public addresses while
//! `block_private_ips` is on), and the `/destination-types` field descriptions.

use std::net::IpAddr;

use reqwest::Url;
use serde_json::{Value, json};

use crate::destination::Fields;
use crate::destination::webhook::{BlockedAddress, blocked_reason};
use crate::store::Destination;

/// The credential keys an AWS destination keeps; anything else sent is dropped.
pub const CREDENTIAL_KEYS: [&str; 3] = ["key", "secret", "session"];

/// A destination's AWS credentials, as stored. Never printed.
pub struct StoredCredentials {
    pub key: String,
    pub secret: String,
    pub session: Option<String>,
}

impl StoredCredentials {
    /// The credentials of `destination`; an error names the missing field.
    pub fn of(destination: &Destination) -> Result<StoredCredentials, String> {
        let stored = &destination.credentials.0;
        let value = |key: &str| get(stored, key).trim().to_owned();
        let (key, secret) = (value("key"), value("secret"));
        for (name, value) in [("key", &key), ("secret", &secret)] {
            if value.is_empty() {
                return Err(format!(
                    "destination credentials.{name} is missing; set the AWS access key with PATCH"
                ));
            }
        }
        let session = Some(value("session")).filter(|s| !s.is_empty());
        Ok(StoredCredentials {
            key,
            secret,
            session,
        })
    }
}

/// `map[key]`, or "" when absent.
pub fn get<'a>(map: &'a Fields, key: &str) -> &'a str {
    map.get(key).map(String::as_str).unwrap_or("")
}

/// `key` and `secret` are required; `session` is optional.
pub fn validate_credentials(credentials: &Fields) -> Vec<String> {
    ["key", "secret"]
        .into_iter()
        .filter(|key| get(credentials, key).trim().is_empty())
        .map(|key| format!("credentials.{key} is required"))
        .collect()
}

/// The credentials to store: the known keys that have a value. (Tenants set their own AWS
/// keys, as in Outpost; nothing is generated.)
pub fn kept_credentials(merged: &Fields) -> Fields {
    CREDENTIAL_KEYS
        .iter()
        .filter(|key| !get(merged, key).is_empty())
        .map(|key| (key.to_string(), get(merged, key).to_owned()))
        .collect()
}

/// Outpost's region pattern `^[a-z]{2}-[a-z]+-[0-9]+$` (`us-east-1`).
pub fn is_region(region: &str) -> bool {
    let mut parts = region.splitn(3, '-');
    let (Some(area), Some(place), Some(number)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    area.len() == 2
        && area.bytes().all(|b| b.is_ascii_lowercase())
        && !place.is_empty()
        && place.bytes().all(|b| b.is_ascii_lowercase())
        && !number.is_empty()
        && number.bytes().all(|b| b.is_ascii_digit())
}

/// Problems with a required `config.region`.
pub fn validate_region(config: &Fields, problems: &mut Vec<String>) {
    match get(config, "region") {
        "" => problems.push("config.region is required".to_owned()),
        region if !is_region(region) => problems.push(format!(
            "config.region must be an AWS region such as us-east-1, not {region:?}"
        )),
        _ => {}
    }
}

/// Checks `config.<field>`, a URL jetpost will send to: an absolute http(s) URL with a host
/// and no whitespace (Outpost's `^https?://[^\s]+$`). With `block_private_ips`, a literal
/// non-public IP or `localhost` is refused here; names are checked again at connect time,
/// since what they resolve to can change.
pub fn validate_url(field: &str, value: &str, block_private_ips: bool) -> Result<Url, String> {
    if value.chars().any(char::is_whitespace) {
        return Err(format!("config.{field} must not contain whitespace"));
    }
    let url = Url::parse(value).map_err(|e| {
        format!("config.{field} is not a valid URL ({e}); use http(s)://host[:port]")
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "config.{field} must use http or https, not {:?}",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("config.{field} has no host"));
    }
    if block_private_ips && let Some(blocked) = blocked_literal(&url) {
        return Err(format!("config.{field}: {blocked}"));
    }
    Ok(url)
}

/// The URL's host is an IP literal or `localhost` that the SSRF guard refuses. (Connections
/// to IP literals never reach the resolver, so this is their only check.)
pub fn blocked_literal(url: &Url) -> Option<BlockedAddress> {
    let host = url.host_str()?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return blocked_reason(ip).map(|reason| BlockedAddress {
            host: host.to_owned(),
            ip,
            reason,
        });
    }
    let name = bare.trim_end_matches('.').to_ascii_lowercase();
    (name == "localhost" || name.ends_with(".localhost")).then(|| BlockedAddress {
        host: name,
        ip: IpAddr::from([127, 0, 0, 1]),
        reason: "a loopback address",
    })
}

/// `config.endpoint`, when given.
pub fn validate_endpoint(config: &Fields, block_private_ips: bool, problems: &mut Vec<String>) {
    let endpoint = get(config, "endpoint");
    if !endpoint.is_empty()
        && let Err(problem) = validate_url("endpoint", endpoint, block_private_ips)
    {
        problems.push(problem);
    }
}

/// `config.<field>`, when given, must be `true` or `false`.
pub fn validate_bool(config: &Fields, field: &str, problems: &mut Vec<String>) {
    if !matches!(get(config, field), "" | "true" | "false") {
        problems.push(format!("config.{field} must be \"true\" or \"false\""));
    }
}

/// The `/destination-types` description of the AWS credentials (Outpost's keys and labels);
/// `session` only where Outpost lists it.
pub fn credential_fields(session_description: Option<&str>) -> Vec<Value> {
    let mut fields = vec![
        json!({
            "key": "key",
            "type": "text",
            "label": "Access Key ID",
            "description": "AWS Access Key ID",
            "required": true,
            "sensitive": true
        }),
        json!({
            "key": "secret",
            "type": "text",
            "label": "Secret Access Key",
            "description": "AWS Secret Access Key",
            "required": true,
            "sensitive": true
        }),
    ];
    if let Some(description) = session_description {
        fields.push(json!({
            "key": "session",
            "type": "text",
            "label": "Session Token",
            "description": description,
            "required": false,
            "sensitive": true
        }));
    }
    fields
}

/// The optional `config.endpoint` field, for types whose Outpost metadata lacks it.
pub fn endpoint_field(service: &str) -> Value {
    json!({
        "key": "endpoint",
        "type": "text",
        "label": "Endpoint",
        "description": format!(
            "Custom endpoint URL for AWS {service} (optional, for testing, S3-compatible \
             services or VPC endpoints)"
        ),
        "required": false,
        "pattern": "^https?:\\/\\/[^\\s]+$"
    })
}

/// A small square glyph in the service's color, with its initial.
pub fn icon(color: &str, letter: char) -> String {
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"16\" height=\"16\" viewBox=\"0 0 16 \
         16\"><rect width=\"16\" height=\"16\" rx=\"4\" fill=\"{color}\"/><text x=\"8\" y=\"12\" \
         font-family=\"sans-serif\" font-size=\"10\" text-anchor=\"middle\" \
         fill=\"white\">{letter}</text></svg>"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> Fields {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn regions_follow_outposts_pattern() {
        for good in ["us-east-1", "eu-west-3", "ap-southeast-2"] {
            assert!(is_region(good), "{good}");
        }
        for bad in [
            "",
            "us-east",
            "US-EAST-1",
            "useast-1",
            "us--1",
            "us-east-x",
            "u-east-1",
        ] {
            assert!(!is_region(bad), "{bad}");
        }
    }

    #[test]
    fn credentials_need_key_and_secret_and_keep_only_known_keys() {
        assert_eq!(
            validate_credentials(&map(&[("session", "s")])),
            [
                "credentials.key is required",
                "credentials.secret is required"
            ]
        );
        assert!(validate_credentials(&map(&[("key", "k"), ("secret", "s")])).is_empty());
        assert_eq!(
            kept_credentials(&map(&[
                ("key", "k"),
                ("secret", "s"),
                ("other", "x"),
                ("session", "")
            ])),
            map(&[("key", "k"), ("secret", "s")])
        );
    }

    #[test]
    fn urls_name_their_field_and_private_hosts_are_refused_when_blocking() {
        assert!(validate_url("endpoint", "http://127.0.0.1:4566", false).is_ok());
        let blocked = validate_url("endpoint", "http://127.0.0.1:4566", true).unwrap_err();
        assert!(
            blocked.starts_with("config.endpoint: 127.0.0.1 is"),
            "{blocked}"
        );
        let local = validate_url("queue_url", "http://localhost/1/q", true).unwrap_err();
        assert!(local.starts_with("config.queue_url: "), "{local}");
        assert!(validate_url("endpoint", "https://sqs.us-east-1.amazonaws.com", true).is_ok());
        assert_eq!(
            validate_url("endpoint", "ftp://x", false).unwrap_err(),
            "config.endpoint must use http or https, not \"ftp\""
        );
        assert!(
            validate_url("endpoint", "not a url", false)
                .unwrap_err()
                .starts_with("config.endpoint must not contain whitespace")
        );
    }
}
