//! A webhook destination as the dispatcher opens it: the stored `config` and `credentials`
//! maps (Outpost keeps them as strings, `custom_headers` a JSON object in a string) parsed once
//! into the target of every request to it.

use std::collections::BTreeMap;

use bytes::Bytes;
use chrono::DateTime;
use tracing::warn;

use super::provider::WebhookRequest;
use super::signature::WebhookCredentials;
use crate::config::Secret;
use crate::store::{Destination, Event};

/// Where and how a webhook destination's requests go, parsed from its stored row.
#[derive(Debug, Clone)]
pub struct WebhookTarget {
    url: String,
    custom_headers: BTreeMap<String, String>,
    credentials: WebhookCredentials,
    delivery_metadata: BTreeMap<String, String>,
}

impl WebhookTarget {
    /// Parses `destination`; an error names the field that makes a request impossible (its
    /// attempts then fail as `invalid_request` until the destination is fixed).
    pub fn parse(destination: &Destination) -> Result<WebhookTarget, String> {
        let url = destination
            .config
            .get("url")
            .filter(|u| !u.trim().is_empty())
            .ok_or("destination config.url is missing; set the webhook URL")?;
        let custom_headers = match destination.config.get("custom_headers") {
            Some(text) if !text.trim().is_empty() => {
                serde_json::from_str::<BTreeMap<String, String>>(text).map_err(|e| {
                    format!(
                        "destination config.custom_headers is not a JSON object of strings \
                         ({e}); fix it with PATCH"
                    )
                })?
            }
            _ => BTreeMap::new(),
        };
        Ok(WebhookTarget {
            url: url.clone(),
            custom_headers,
            credentials: credentials(destination),
            delivery_metadata: destination.delivery_metadata.clone().unwrap_or_default(),
        })
    }

    /// The request for `event`.
    pub fn request(&self, event: &Event) -> WebhookRequest {
        WebhookRequest {
            event_id: event.id.clone(),
            topic: event.topic.clone(),
            body: Bytes::from(event.data.clone()),
            url: self.url.clone(),
            custom_headers: self.custom_headers.clone(),
            credentials: self.credentials.clone(),
            delivery_metadata: self.delivery_metadata.clone(),
            event_metadata: event.metadata.clone().unwrap_or_default(),
        }
    }
}

/// `secret`, `previous_secret` and `previous_secret_invalid_at` (RFC 3339). An unreadable
/// expiry stops the previous secret from signing rather than failing the delivery: the
/// current secret still signs, which is what a receiver that completed the rotation expects.
fn credentials(destination: &Destination) -> WebhookCredentials {
    let stored = &destination.credentials.0;
    let secret = stored.get("secret").cloned().unwrap_or_default();
    let previous = stored
        .get("previous_secret")
        .filter(|s| !s.is_empty())
        .cloned();
    let invalid_at = stored
        .get("previous_secret_invalid_at")
        .filter(|s| !s.is_empty())
        .and_then(|text| match DateTime::parse_from_rfc3339(text) {
            Ok(at) => Some(at.to_utc()),
            Err(_) => {
                warn!(
                    tenant = %destination.tenant_id,
                    destination_id = %destination.id,
                    "credentials.previous_secret_invalid_at is not an RFC 3339 time; the \
                     previous secret does not sign"
                );
                None
            }
        });
    WebhookCredentials {
        secret: Secret::new(secret),
        previous_secret: previous.map(Secret::new),
        previous_secret_invalid_at: invalid_at,
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::store::Credentials;

    fn destination(config: &[(&str, &str)], credentials: &[(&str, &str)]) -> Destination {
        let map = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        Destination {
            tenant_id: "t".into(),
            id: "d".into(),
            kind: "webhook".into(),
            topics: vec!["*".into()],
            filter: None,
            config: map(config),
            credentials: Credentials(map(credentials)),
            delivery_metadata: Some(map(&[("app", "x")])),
            metadata: None,
            disabled_at: None,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    fn event() -> Event {
        Event {
            tenant_id: "t".into(),
            id: "e1".into(),
            destination_id: None,
            topic: "order.paid".into(),
            time: Utc::now(),
            metadata: Some(BTreeMap::from([("k".into(), "v".into())])),
            data: r#"{"a":1}"#.into(),
            eligible_for_retry: true,
            destination_ids: vec!["d".into()],
            created_at: Utc::now(),
        }
    }

    #[test]
    fn request_takes_url_headers_secrets_and_metadata() {
        let d = destination(
            &[
                ("url", "https://example.com/h"),
                ("custom_headers", r#"{"X-Api-Key":"k"}"#),
            ],
            &[
                ("secret", "s1"),
                ("previous_secret", "s0"),
                ("previous_secret_invalid_at", "2099-01-01T00:00:00Z"),
            ],
        );
        let r = WebhookTarget::parse(&d).unwrap().request(&event());
        assert_eq!(r.url, "https://example.com/h");
        assert_eq!(r.body, Bytes::from_static(br#"{"a":1}"#));
        assert_eq!(r.custom_headers["X-Api-Key"], "k");
        assert_eq!(r.credentials.secret.expose(), "s1");
        assert_eq!(r.credentials.signing_secrets(Utc::now()), vec!["s1", "s0"]);
        assert_eq!(r.delivery_metadata["app"], "x");
        assert_eq!(r.event_metadata["k"], "v");
    }

    #[test]
    fn unusable_destinations_say_which_field() {
        let no_url = destination(&[], &[]);
        assert!(
            WebhookTarget::parse(&no_url)
                .unwrap_err()
                .contains("config.url")
        );
        let bad_headers = destination(
            &[("url", "https://example.com"), ("custom_headers", "[1]")],
            &[],
        );
        assert!(
            WebhookTarget::parse(&bad_headers)
                .unwrap_err()
                .contains("config.custom_headers")
        );
    }

    #[test]
    fn unreadable_rotation_expiry_keeps_only_the_current_secret() {
        let d = destination(
            &[("url", "https://example.com")],
            &[
                ("secret", "s1"),
                ("previous_secret", "s0"),
                ("previous_secret_invalid_at", "tomorrow"),
            ],
        );
        let r = WebhookTarget::parse(&d).unwrap().request(&event());
        assert_eq!(r.credentials.signing_secrets(Utc::now()), vec!["s1"]);
    }
}
