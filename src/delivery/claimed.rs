//! From a claimed delivery to the webhook request (the destination's stored `config` and
//! `credentials` maps, as Outpost keeps them: all strings, `custom_headers` a JSON object in a
//! string), and from the attempt's result back to the attempt's `response_data`.

use std::collections::BTreeMap;

use bytes::Bytes;
use chrono::DateTime;
use serde_json::json;
use tracing::warn;

use super::attempt::AttemptResult;
use super::signature::WebhookCredentials;
use super::webhook::WebhookRequest;
use crate::config::Secret;
use crate::store::{Destination, Event};

/// The webhook request for `event` to `destination`; an error names the destination field
/// that makes a request impossible (the attempt then fails as `invalid_request`).
pub fn webhook_request(event: &Event, destination: &Destination) -> Result<WebhookRequest, String> {
    if destination.kind != "webhook" {
        return Err(format!(
            "destination type {:?} is not supported; jetpost delivers to webhook destinations",
            destination.kind
        ));
    }
    let url = destination
        .config
        .get("url")
        .filter(|u| !u.trim().is_empty())
        .ok_or("destination config.url is missing; set the webhook URL")?;
    let custom_headers = match destination.config.get("custom_headers") {
        Some(text) if !text.trim().is_empty() => {
            serde_json::from_str::<BTreeMap<String, String>>(text).map_err(|e| {
                format!(
                    "destination config.custom_headers is not a JSON object of strings ({e}); \
                     fix it with PATCH"
                )
            })?
        }
        _ => BTreeMap::new(),
    };
    Ok(WebhookRequest {
        event_id: event.id.clone(),
        topic: event.topic.clone(),
        body: Bytes::from(event.data.clone()),
        url: url.clone(),
        custom_headers,
        credentials: credentials(destination),
        delivery_metadata: destination.delivery_metadata.clone().unwrap_or_default(),
        event_metadata: event.metadata.clone().unwrap_or_default(),
    })
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

/// The attempt's `response_data`: Outpost's `{"status": N, "body": "…"}` when the endpoint
/// answered (plus the kept `headers` and a reading `error` when there are any), or
/// `{"error": "…"}` saying what failed when no response came.
pub fn response_data(result: &AttemptResult) -> serde_json::Value {
    let mut data = serde_json::Map::new();
    if let Some(status) = result.status() {
        data.insert("status".into(), json!(status));
        data.insert("body".into(), json!(result.response_body));
        if !result.response_headers.is_empty() {
            let headers: serde_json::Map<String, serde_json::Value> = result
                .response_headers
                .iter()
                .map(|(name, value)| (name.clone(), json!(value)))
                .collect();
            data.insert("headers".into(), headers.into());
        }
    }
    if let Some(error) = &result.error {
        data.insert("error".into(), json!(error));
    }
    data.into()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chrono::Utc;

    use super::*;
    use crate::delivery::AttemptCode;
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
        let r = webhook_request(&event(), &d).unwrap();
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
            webhook_request(&event(), &no_url)
                .unwrap_err()
                .contains("config.url")
        );
        let bad_headers = destination(
            &[("url", "https://example.com"), ("custom_headers", "[1]")],
            &[],
        );
        assert!(
            webhook_request(&event(), &bad_headers)
                .unwrap_err()
                .contains("config.custom_headers")
        );
        let mut other = destination(&[("url", "https://example.com")], &[]);
        other.kind = "aws_sqs".into();
        assert!(
            webhook_request(&event(), &other)
                .unwrap_err()
                .contains("aws_sqs")
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
        let r = webhook_request(&event(), &d).unwrap();
        assert_eq!(r.credentials.signing_secrets(Utc::now()), vec!["s1"]);
    }

    #[test]
    fn response_data_is_outposts_shape() {
        let answered = AttemptResult {
            success: false,
            code: AttemptCode::Status(503),
            response_body: "busy".into(),
            response_headers: vec![("retry-after".into(), "5".into())],
            retry_after: Some(Duration::from_secs(5)),
            error: None,
            sent_at: Utc::now(),
            duration: Duration::from_millis(3),
        };
        assert_eq!(
            response_data(&answered),
            json!({"status": 503, "body": "busy", "headers": {"retry-after": "5"}})
        );
        let refused = AttemptResult {
            code: AttemptCode::ConnectionRefused,
            response_body: String::new(),
            response_headers: Vec::new(),
            retry_after: None,
            error: Some("connection refused".into()),
            ..answered
        };
        assert_eq!(
            response_data(&refused),
            json!({"error": "connection refused"})
        );
    }
}
