//! The `hookdeck` destination type (Outpost's): events go to a Hookdeck managed source. The
//! tenant pastes the source's token (base64 of `<source id>:<secret>`). At API write the token
//! is verified with Hookdeck's API, whose answer names the source (kept as the hidden config
//! `source_name` and `source_id`). Each event is POSTed to `<events_url>/<source id>` with the
//! data as the body, `X-Hookdeck-Signature: v0=<base64 HMAC-SHA256 of the body, keyed with the
//! token>`, and the metadata as `x-outpost-<key>` headers.

use std::sync::Arc;
use std::time::Instant;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use chrono::Utc;
use futures::future::BoxFuture;
use hmac::{Hmac, Mac};
use reqwest::Url;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde_json::json;
use sha2::Sha256;

use super::metadata::message_metadata;
use super::webhook::WebhookProvider;
use super::{CredentialsWrite, DestinationType, Fields, Outcome, Publisher};
use crate::config::HookdeckConfig;
use crate::store::{Destination, Event};

pub const TYPE: &str = "hookdeck";

/// The prefix of the metadata headers (Outpost's, whatever the webhook prefix is).
const METADATA_PREFIX: &str = "x-outpost-";
/// The version path of Hookdeck's API that verifies managed-source tokens.
const VERIFY_PATH: &str = "2025-01-01/sources";
/// Config keys jetpost writes itself from Hookdeck's answer; the form shows none.
const HIDDEN_CONFIG: [&str; 2] = ["source_name", "source_id"];

/// The hookdeck type: the hosts it reaches and the HTTP client webhooks use (so its hosts
/// pass the same SSRF guard).
pub struct HookdeckType {
    http: WebhookProvider,
    api_url: Url,
    events_url: Url,
}

impl HookdeckType {
    /// The type reaching Hookdeck at `config`'s hosts through `http`.
    pub fn new(config: &HookdeckConfig, http: WebhookProvider) -> HookdeckType {
        HookdeckType {
            http,
            // The config check at start refuses URLs that do not parse.
            api_url: base_url(&config.api_url),
            events_url: base_url(&config.events_url),
        }
    }

    /// Asks Hookdeck about `token`: the source's name, or why it was not accepted.
    async fn verify(&self, token: &Token) -> Result<String, String> {
        let url = self
            .api_url
            .join(&format!("{VERIFY_PATH}/{}/managed/verify", token.source_id))
            .map_err(|e| format!("credentials.token: cannot build the verification URL: {e}"))?;
        let response = self
            .http
            .client()
            .get(url.clone())
            .header("x-hookdeck-source-token", &token.text)
            .send()
            .await
            .map_err(|e| {
                format!(
                    "credentials.token could not be verified: Hookdeck's API at {} did not \
                     answer ({e}); try again",
                    self.api_url
                )
            })?;
        let status = response.status();
        let body = response.bytes().await.unwrap_or_default();
        if !status.is_success() {
            return Err(format!(
                "credentials.token was not accepted by Hookdeck (status {}): check that it \
                 is the source token Hookdeck showed",
                status.as_u16()
            ));
        }
        let source: serde_json::Value = serde_json::from_slice(&body).map_err(|_| {
            "credentials.token could not be verified: Hookdeck's answer is not JSON".to_owned()
        })?;
        Ok(source["name"].as_str().unwrap_or_default().to_owned())
    }
}

/// `url` with a trailing `/`, so that joining a relative path keeps its path.
fn base_url(url: &str) -> Url {
    let text = if url.ends_with('/') {
        url.to_owned()
    } else {
        format!("{url}/")
    };
    Url::parse(&text).unwrap_or_else(|_| Url::parse("https://invalid.invalid/").expect("a URL"))
}

/// A parsed source token.
struct Token {
    /// The token as given: it signs, and it authenticates the verification.
    text: String,
    source_id: String,
}

impl Token {
    fn parse(text: &str) -> Result<Token, String> {
        const FORMAT: &str = "credentials.token is not a Hookdeck source token (base64 of \
                              <source id>:<secret>); paste the token Hookdeck showed";
        let decoded = BASE64.decode(text.trim()).map_err(|_| FORMAT.to_owned())?;
        let decoded = String::from_utf8(decoded).map_err(|_| FORMAT.to_owned())?;
        let (source_id, _) = decoded.split_once(':').ok_or_else(|| FORMAT.to_owned())?;
        let usable = !source_id.is_empty()
            && source_id.len() <= 255
            && source_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !usable {
            return Err(FORMAT.to_owned());
        }
        Ok(Token {
            text: text.trim().to_owned(),
            source_id: source_id.to_owned(),
        })
    }
}

impl DestinationType for HookdeckType {
    fn name(&self) -> &'static str {
        TYPE
    }

    fn metadata(&self) -> serde_json::Value {
        json!({
            "type": TYPE,
            "label": "Hookdeck",
            "description": "Send events to Hookdeck Event Gateway.",
            "icon": HOOKDECK_ICON,
            "instructions": INSTRUCTIONS,
            "setup_link": {
                "href": "https://dashboard.hookdeck.com/connect",
                "cta": "Generate Hookdeck Token"
            },
            "config_fields": [],
            "credential_fields": [{
                "key": "token",
                "type": "text",
                "label": "Hookdeck Token",
                "description": "The Hookdeck authentication token",
                "required": true,
                "sensitive": true
            }]
        })
    }

    fn validate_config(&self, config: &Fields) -> Vec<String> {
        config
            .keys()
            .filter(|key| !HIDDEN_CONFIG.contains(&key.as_str()))
            .map(|key| format!("config.{key} is not a hookdeck setting (it has none to set)"))
            .collect()
    }

    fn validate_credentials(&self, credentials: &Fields) -> Vec<String> {
        let mut problems: Vec<String> = credentials
            .keys()
            .filter(|key| *key != "token")
            .map(|key| format!("credentials.{key} is not a hookdeck credential (only token)"))
            .collect();
        match credentials.get("token").filter(|t| !t.trim().is_empty()) {
            None => problems.push("credentials.token is required".to_owned()),
            Some(token) => problems.extend(Token::parse(token).err()),
        }
        problems
    }

    fn prepare_credentials(&self, write: CredentialsWrite<'_>) -> Result<Fields, Vec<String>> {
        Ok(write.merged.clone())
    }

    fn resolve_config<'a>(
        &'a self,
        mut config: Fields,
        credentials: &'a Fields,
        original: Option<&'a Fields>,
    ) -> BoxFuture<'a, Result<Fields, Vec<String>>> {
        Box::pin(async move {
            let text = credentials.get("token").cloned().unwrap_or_default();
            // Verified when created and when the token changes, as Outpost does.
            if original.is_some_and(|o| o.get("token") == Some(&text)) {
                return Ok(config);
            }
            let token = Token::parse(&text).map_err(|e| vec![e])?;
            let name = self.verify(&token).await.map_err(|e| vec![e])?;
            config.insert("source_name".to_owned(), name);
            config.insert("source_id".to_owned(), token.source_id);
            Ok(config)
        })
    }

    fn target(&self, config: &Fields) -> String {
        match (config.get("source_name"), config.get("source_id")) {
            (Some(name), _) if !name.is_empty() => name.clone(),
            (_, Some(id)) => format!("Hookdeck source ID: {id}"),
            _ => "Hookdeck".to_owned(),
        }
    }

    fn open(&self, destination: &Destination) -> Result<Arc<dyn Publisher>, String> {
        let text = destination
            .credentials
            .0
            .get("token")
            .map(String::as_str)
            .unwrap_or_default();
        let token = Token::parse(text)?;
        let url = self
            .events_url
            .join(&token.source_id)
            .map_err(|e| format!("cannot build the Hookdeck source URL: {e}"))?;
        Ok(Arc::new(OpenedHookdeck {
            http: self.http.clone(),
            url,
            token: token.text,
            delivery_metadata: destination.delivery_metadata.clone().unwrap_or_default(),
        }))
    }
}

/// A hookdeck destination opened for delivery.
struct OpenedHookdeck {
    http: WebhookProvider,
    url: Url,
    token: String,
    delivery_metadata: Fields,
}

impl OpenedHookdeck {
    fn headers(&self, event: &Event, body: &[u8], sent_at: chrono::DateTime<Utc>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (key, value) in message_metadata(event, &self.delivery_metadata, sent_at) {
            let name = HeaderName::from_bytes(format!("{METADATA_PREFIX}{key}").as_bytes());
            match (name, HeaderValue::from_str(&value)) {
                (Ok(name), Ok(value)) => {
                    headers.insert(name, value);
                }
                _ => tracing::warn!(key = %key, "metadata skipped: not valid as a header"),
            }
        }
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let signature = format!("v0={}", BASE64.encode(sign(&self.token, body)));
        // Base64 and "v0=" are valid header bytes.
        if let Ok(value) = HeaderValue::from_str(&signature) {
            headers.insert("x-hookdeck-signature", value);
        }
        headers
    }
}

/// HMAC-SHA256 of `body` keyed with the token's text.
fn sign(token: &str, body: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(token.as_bytes()).expect("HMAC takes any key");
    mac.update(body);
    mac.finalize().into_bytes().to_vec()
}

impl Publisher for OpenedHookdeck {
    fn publish<'a>(&'a self, event: &'a Event) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let sent_at = Utc::now();
            let started = Instant::now();
            let body = Bytes::from(event.data.clone());
            let headers = self.headers(event, &body, sent_at);
            self.http
                .post(self.url.clone(), headers, body, sent_at, started)
                .await
                .into_outcome()
        })
    }
}

const INSTRUCTIONS: &str = "# Hookdeck\n\n\
    The [Hookdeck Event Gateway](https://hookdeck.com) receives your events and delivers them \
    on with its own buffering, retries, filtering, transformations and logs.\n\n\
    ## How to configure Hookdeck as an event destination\n\n\
    1. Click **Generate Hookdeck Token** to open Hookdeck's **Create Managed Source** page.\n\
    2. Enter a name for the source and click **Allow**.\n\
    3. Copy the **Source Token** Hookdeck shows.\n\
    4. Paste it into the **Hookdeck Token** field here and create the destination: the token \
    is checked with Hookdeck right away.\n\
    5. Back in Hookdeck, click **Create Connection** to choose where Hookdeck sends the events.";

/// Hookdeck's mark: a link of two rounded bars on a blue tile.
const HOOKDECK_ICON: &str = "<svg width=\"16\" height=\"16\" viewBox=\"0 0 16 16\" fill=\"none\" \
    xmlns=\"http://www.w3.org/2000/svg\"><rect width=\"16\" height=\"16\" rx=\"4\" \
    fill=\"#0044CC\"/><path d=\"M6.5 9.5 9.5 6.5M7 5l1-1a2.1 2.1 0 0 1 3 3l-1 1M9 11l-1 1a2.1 \
    2.1 0 0 1-3-3l1-1\" stroke=\"white\" stroke-width=\"1.4\" stroke-linecap=\"round\"/></svg>";

#[cfg(test)]
mod tests {
    use super::*;

    fn token(raw: &str) -> String {
        BASE64.encode(raw)
    }

    #[test]
    fn tokens_name_their_source() {
        let parsed = Token::parse(&token("src_abc123:s3cret")).unwrap();
        assert_eq!(parsed.source_id, "src_abc123");
        for bad in [
            "not base64!".to_owned(),
            token("no-colon"),
            token(":secret"),
            token("src/../x:secret"),
        ] {
            let err = Token::parse(&bad).err().unwrap();
            assert!(err.starts_with("credentials.token is not"), "{err}");
        }
    }

    #[test]
    fn the_signature_is_base64_hmac_of_the_body_keyed_with_the_token() {
        // HMAC-SHA256(key = "key", "The quick brown fox jumps over the lazy dog").
        let mac = sign("key", b"The quick brown fox jumps over the lazy dog");
        assert_eq!(
            hex::encode(mac),
            "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
        );
    }

    #[test]
    fn writes_are_checked_field_by_field() {
        let http =
            WebhookProvider::new(&Default::default(), std::time::Duration::from_secs(1), "t")
                .unwrap();
        let kind = HookdeckType::new(&HookdeckConfig::default(), http);
        let config = Fields::from([("url".to_owned(), "x".to_owned())]);
        assert_eq!(
            kind.validate_config(&config),
            ["config.url is not a hookdeck setting (it has none to set)"]
        );
        assert_eq!(
            kind.validate_credentials(&Fields::new()),
            ["credentials.token is required"]
        );
        let ok = Fields::from([("token".to_owned(), token("src_1:x"))]);
        assert!(kind.validate_credentials(&ok).is_empty());
        assert_eq!(
            kind.target(&Fields::from([(
                "source_id".to_owned(),
                "src_1".to_owned()
            )])),
            "Hookdeck source ID: src_1"
        );
    }
}
