//! The webhook provider: builds one signed HTTP request for an event in Outpost's default
//! format or Standard Webhooks format, sends it once and reports exactly what happened. Also
//! the pure checks the webhook type runs on a destination's URL and headers.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, LOCATION, RETRY_AFTER};
use reqwest::{StatusCode, Url};

use super::attempt::{AttemptResult, body_over_cap_placeholder, classify};
use super::signature::{
    WebhookCredentials, default_signature_header, parse_standard_secret, standard_signature_header,
};
use super::ssrf::{BlockedAddress, GuardedResolver, blocked_reason};
use crate::config::{WebhookConfig, WebhookMode};
use crate::destination::AttemptCode;
use crate::event::{MAX_METADATA_BYTES, MAX_METADATA_ENTRIES};

/// Header prefix of Standard Webhooks mode. `header_prefix` applies to default mode only; in
/// standard mode every header uses this prefix, which is also what Outpost does by default.
pub const STANDARD_HEADER_PREFIX: &str = "webhook-";

/// Headers that `custom_headers` and metadata may not set: Outpost's reserved set plus the
/// hop-by-hop headers that would corrupt the request framing.
const RESERVED_HEADERS: &[&str] = &[
    "content-type",
    "content-length",
    "host",
    "connection",
    "user-agent",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "keep-alive",
    "proxy-connection",
    "expect",
];

/// One event to one webhook destination: everything needed to build the request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebhookRequest {
    pub event_id: String,
    pub topic: String,
    /// The event's `data`, byte for byte; sent and signed exactly as given.
    pub body: Bytes,
    /// The destination's `config.url`.
    pub url: String,
    /// The destination's `config.custom_headers`: lowest priority, after Outpost.
    pub custom_headers: BTreeMap<String, String>,
    pub credentials: WebhookCredentials,
    /// The destination's `delivery_metadata`, sent as `<prefix><key>`.
    pub delivery_metadata: BTreeMap<String, String>,
    /// The event's `metadata`, sent as `<prefix><key>`; overrides `delivery_metadata`.
    pub event_metadata: BTreeMap<String, String>,
}

/// Sends webhook attempts. One HTTP client (connection pool, HTTP/2 when the endpoint offers
/// it over ALPN, no redirects, no proxy) shared by every destination. Cheap to clone.
#[derive(Debug, Clone)]
pub struct WebhookProvider {
    client: reqwest::Client,
    /// The server's webhook settings (`destinations.webhook`).
    settings: Arc<WebhookConfig>,
    mode: WebhookMode,
    /// The prefix in effect: `header_prefix` in default mode, `webhook-` in standard mode.
    prefix: String,
    max_response_body_bytes: usize,
    block_private_ips: bool,
    timeout: Duration,
}

/// The provider's HTTP client could not be built (no TLS roots, …).
#[derive(Debug, thiserror::Error)]
#[error("could not build the webhook HTTP client: {0}")]
pub struct ProviderError(#[source] reqwest::Error);

impl WebhookProvider {
    /// `timeout` bounds a whole attempt (connect, send, response head and body);
    /// `version` goes into `User-Agent: jetpost/<version>`.
    pub fn new(
        config: &WebhookConfig,
        timeout: Duration,
        version: &str,
    ) -> Result<Self, ProviderError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .user_agent(format!("jetpost/{version}"))
            .redirect(reqwest::redirect::Policy::none())
            // Proxies from the environment would resolve the target themselves, out of the
            // SSRF guard's sight, and nothing else in jetpost reads the environment late.
            .no_proxy()
            .dns_resolver(GuardedResolver {
                block_private_ips: config.block_private_ips,
            })
            .timeout(timeout)
            .tcp_nodelay(true)
            .build()
            .map_err(ProviderError)?;
        let prefix = prefix_in_effect(config.mode, &config.header_prefix);
        Ok(WebhookProvider {
            client,
            settings: Arc::new(config.clone()),
            mode: config.mode,
            prefix,
            max_response_body_bytes: config.max_response_body_bytes,
            block_private_ips: config.block_private_ips,
            timeout,
        })
    }

    pub fn mode(&self) -> WebhookMode {
        self.mode
    }

    /// The webhook settings it was built with.
    pub fn settings(&self) -> &WebhookConfig {
        &self.settings
    }

    /// The bound of one attempt (the delivery timeout).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sends `request` once and reports the outcome. Never fails: every problem becomes an
    /// attempt code (`invalid_request` when the request cannot even be built).
    pub async fn send(&self, request: &WebhookRequest) -> AttemptResult {
        let sent_at = Utc::now();
        let started = Instant::now();
        let fail = |code: AttemptCode, message: String| AttemptResult {
            success: false,
            code,
            response_body: String::new(),
            response_headers: Vec::new(),
            retry_after: None,
            error: Some(message),
            sent_at,
            duration: started.elapsed(),
        };

        let url = match self.target(&request.url) {
            Ok(url) => url,
            Err(Refused::Invalid(message)) => return fail(AttemptCode::InvalidRequest, message),
            Err(Refused::Blocked(blocked)) => {
                return fail(AttemptCode::BlockedAddress, blocked.to_string());
            }
        };
        let headers = match self.headers(request, sent_at) {
            Ok(headers) => headers,
            Err(message) => return fail(AttemptCode::InvalidRequest, message),
        };

        self.post(url, headers, request.body.clone(), sent_at, started)
            .await
    }

    /// POSTs `body` with exactly `headers` to `url` and reports what happened: the status,
    /// the kept headers and the body up to the cap, or the classified failure. `sent_at` and
    /// `started` are when the attempt began.
    pub(crate) async fn post(
        &self,
        url: Url,
        headers: HeaderMap,
        body: Bytes,
        sent_at: DateTime<Utc>,
        started: Instant,
    ) -> AttemptResult {
        let response = self
            .client
            .post(url)
            .headers(headers)
            .body(body)
            .send()
            .await;
        let mut response = match response {
            Ok(response) => response,
            Err(error) => {
                let (code, message) = classify(&error);
                let message = match code {
                    AttemptCode::Timeout => {
                        format!("no response within {:?}: {message}", self.timeout)
                    }
                    _ => message,
                };
                return AttemptResult {
                    success: false,
                    code,
                    response_body: String::new(),
                    response_headers: Vec::new(),
                    retry_after: None,
                    error: Some(message),
                    sent_at,
                    duration: started.elapsed(),
                };
            }
        };

        let status = response.status();
        let response_headers = kept_headers(response.headers());
        let retry_after = retry_after(status, response.headers());
        let (response_body, error) = self.read_body(&mut response).await;
        AttemptResult {
            success: status.as_u16() < 400,
            code: AttemptCode::Status(status.as_u16()),
            response_body,
            response_headers,
            retry_after,
            error,
            sent_at,
            duration: started.elapsed(),
        }
    }

    /// The HTTP client, for requests that are not attempts (a type checking its credentials
    /// with its service at API write).
    pub(crate) fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// The URL to post to, refused when malformed or (with the guard on) a literal
    /// non-public IP. Host names are checked by the resolver at connect time.
    fn target(&self, url: &str) -> Result<Url, Refused> {
        let parsed = parse_webhook_url(url).map_err(|e| Refused::Invalid(e.to_string()))?;
        if self.block_private_ips
            && let Some(blocked) = literal_blocked(&parsed)
        {
            return Err(Refused::Blocked(blocked));
        }
        Ok(parsed)
    }

    /// Every header of the request, in priority order (a later insert replaces an earlier
    /// one): custom headers < system headers < delivery metadata < event metadata <
    /// signature. Names that would forge the signature or break the request are never taken
    /// from custom headers or metadata.
    fn headers(
        &self,
        request: &WebhookRequest,
        sent_at: DateTime<Utc>,
    ) -> Result<HeaderMap, String> {
        let p = &self.prefix;
        let names = SystemHeaders::named(self.mode, p);
        // Standard Webhooks verifiers check id, timestamp and signature together: none of
        // the three may come from anywhere but here.
        let protected: Vec<&str> = match self.mode {
            WebhookMode::Default => vec![&names.signature],
            WebhookMode::Standard => vec![&names.id, &names.timestamp, &names.signature],
        };
        let mut headers = Headers {
            map: HeaderMap::new(),
            protected,
        };

        for (name, value) in &request.custom_headers {
            headers.set_untrusted(name, value, "custom header");
        }
        headers
            .map
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));

        let timestamp = match self.mode {
            WebhookMode::Default => sent_at.to_rfc3339_opts(SecondsFormat::Secs, true),
            WebhookMode::Standard => sent_at.timestamp().to_string(),
        };
        headers.set_system(&names.id, &request.event_id)?;
        headers.set_system(&names.timestamp, &timestamp)?;
        headers.set_system(&names.topic, &request.topic)?;

        // Metadata keys event-id and timestamp would stand beside the Standard Webhooks id and
        // timestamp with other values; Outpost skips them in that mode, so do we.
        let skip_in_standard = |key: &str| {
            self.mode == WebhookMode::Standard && matches!(key, "event-id" | "timestamp")
        };
        for (key, value) in request
            .delivery_metadata
            .iter()
            .chain(&request.event_metadata)
        {
            if !skip_in_standard(key) {
                headers.set_untrusted(&format!("{p}{key}"), value, "metadata");
            }
        }
        if self.mode == WebhookMode::Standard {
            // Outpost's standard mode also sends event metadata without the prefix.
            for (key, value) in &request.event_metadata {
                headers.set_untrusted(key, value, "metadata");
            }
        }

        let secrets = request.credentials.signing_secrets(sent_at);
        let signature = match self.mode {
            WebhookMode::Default => default_signature_header(&secrets, &request.body),
            WebhookMode::Standard => {
                let keys = secrets
                    .iter()
                    .enumerate()
                    .map(|(i, secret)| {
                        parse_standard_secret(secret).map_err(|e| {
                            let field = if i == 0 { "secret" } else { "previous_secret" };
                            format!("destination credentials.{field}: {e}")
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                standard_signature_header(
                    &keys,
                    &request.event_id,
                    sent_at.timestamp(),
                    &request.body,
                )
            }
        };
        if let Some(signature) = signature {
            headers.set_system(&names.signature, &signature)?;
        }
        Ok(headers.map)
    }

    /// Reads the body up to the cap; over the cap it stops reading and stores Outpost's
    /// placeholder (the connection is then not reused, which beats downloading a huge body
    /// only to drop it).
    async fn read_body(&self, response: &mut reqwest::Response) -> (String, Option<String>) {
        let cap = self.max_response_body_bytes;
        let mut body = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    body.extend_from_slice(&chunk);
                    if cap > 0 && body.len() > cap {
                        return (body_over_cap_placeholder(cap), None);
                    }
                }
                Ok(None) => return (String::from_utf8_lossy(&body).into_owned(), None),
                Err(error) => {
                    let (code, message) = classify(&error);
                    let note = format!("response body not fully read ({code}): {message}");
                    return (String::from_utf8_lossy(&body).into_owned(), Some(note));
                }
            }
        }
    }
}

enum Refused {
    Invalid(String),
    Blocked(BlockedAddress),
}

/// The prefix of jetpost's headers in `mode`: the configured `header_prefix` (lowercase) in
/// default mode, `webhook-` in standard mode.
fn prefix_in_effect(mode: WebhookMode, header_prefix: &str) -> String {
    match mode {
        WebhookMode::Default => header_prefix.trim().to_ascii_lowercase(),
        WebhookMode::Standard => STANDARD_HEADER_PREFIX.to_owned(),
    }
}

/// The headers jetpost sets on every request (lowercase names): the one owner of their names,
/// for building requests and for refusing custom headers that would collide with them.
struct SystemHeaders {
    id: String,
    timestamp: String,
    topic: String,
    signature: String,
}

impl SystemHeaders {
    /// The names in `mode` with `prefix` the prefix in effect.
    fn named(mode: WebhookMode, prefix: &str) -> SystemHeaders {
        let id = match mode {
            WebhookMode::Default => "event-id",
            WebhookMode::Standard => "id",
        };
        SystemHeaders {
            id: format!("{prefix}{id}"),
            timestamp: format!("{prefix}timestamp"),
            topic: format!("{prefix}topic"),
            signature: format!("{prefix}signature"),
        }
    }

    fn into_names(self) -> [String; 4] {
        [self.id, self.timestamp, self.topic, self.signature]
    }
}

/// Every header name jetpost sets itself in either mode with the configured `header_prefix`
/// (`x-outpost-event-id`, …, `webhook-id`, `webhook-timestamp`, `webhook-topic`,
/// `webhook-signature`), lowercase: a custom header with one of these names would be replaced
/// or would forge a signature, so it is refused. Both modes count because the mode is a
/// server setting that may change under stored destinations.
fn names_jetpost_sets(header_prefix: &str) -> Vec<String> {
    [WebhookMode::Default, WebhookMode::Standard]
        .into_iter()
        .flat_map(|mode| {
            SystemHeaders::named(mode, &prefix_in_effect(mode, header_prefix)).into_names()
        })
        .collect()
}

/// The request's headers while they are assembled.
struct Headers<'a> {
    map: HeaderMap,
    /// Names only jetpost sets (lowercase).
    protected: Vec<&'a str>,
}

impl Headers<'_> {
    /// A header jetpost itself sets: an invalid value is an error for the whole request.
    fn set_system(&mut self, name: &str, value: &str) -> Result<(), String> {
        let header = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("{name:?} is not a valid header name; check header_prefix"))?;
        let value = HeaderValue::from_str(value)
            .map_err(|_| format!("the value of header {name} is not a valid header value"))?;
        self.map.insert(header, value);
        Ok(())
    }

    /// A header from the destination or the event: skipped (and logged) when reserved,
    /// protected or not valid in HTTP, so one bad metadata entry cannot block delivery.
    fn set_untrusted(&mut self, name: &str, value: &str, what: &str) {
        let Ok(header) = HeaderName::from_bytes(name.trim().as_bytes()) else {
            tracing::warn!(header = name, "{what} skipped: not a valid header name");
            return;
        };
        let lower = header.as_str();
        if RESERVED_HEADERS.contains(&lower) || self.protected.contains(&lower) {
            tracing::warn!(
                header = lower,
                "{what} skipped: only jetpost sets this header"
            );
            return;
        }
        let Ok(value) = HeaderValue::from_str(value) else {
            tracing::warn!(
                header = lower,
                "{what} skipped: value not valid in a header"
            );
            return;
        };
        self.map.insert(header, value);
    }
}

fn kept_headers(headers: &HeaderMap) -> Vec<(String, String)> {
    [CONTENT_TYPE, LOCATION, RETRY_AFTER]
        .into_iter()
        .filter_map(|name| {
            let value = headers.get(&name)?;
            Some((
                name.as_str().to_owned(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            ))
        })
        .collect()
}

fn retry_after(status: StatusCode, headers: &HeaderMap) -> Option<Duration> {
    if status != StatusCode::TOO_MANY_REQUESTS && status != StatusCode::SERVICE_UNAVAILABLE {
        return None;
    }
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?;
    super::attempt::parse_retry_after(value, Utc::now())
}

/// A webhook URL the API must refuse on create and update.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("config.url is not a valid URL ({0}); use an absolute http:// or https:// URL")]
    Malformed(String),
    #[error("config.url must use http or https, not {0:?}")]
    Scheme(String),
    #[error("config.url has no host")]
    NoHost,
    #[error("config.url must not contain whitespace")]
    Whitespace,
    #[error("config.url: {0}")]
    Blocked(BlockedAddress),
}

/// Checks a webhook destination's URL as the API does on create and update: an absolute
/// `http`/`https` URL with a host and no whitespace (Outpost's pattern `^https?://[^\s]+$`);
/// user info in the URL is allowed, as in Outpost (sent as basic auth). With
/// `block_private_ips`, a literal non-public IP or `localhost` is refused here; other names
/// are checked when each attempt connects, because what they resolve to can change.
pub fn validate_webhook_url(url: &str, block_private_ips: bool) -> Result<(), UrlError> {
    let parsed = parse_webhook_url(url)?;
    if block_private_ips {
        if let Some(blocked) = literal_blocked(&parsed) {
            return Err(UrlError::Blocked(blocked));
        }
        let host = parsed.host_str().unwrap_or_default();
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        if host == "localhost" || host.ends_with(".localhost") {
            return Err(UrlError::Blocked(BlockedAddress {
                host,
                ip: IpAddr::from([127, 0, 0, 1]),
                reason: "a loopback address",
            }));
        }
    }
    Ok(())
}

fn parse_webhook_url(url: &str) -> Result<Url, UrlError> {
    if url.chars().any(char::is_whitespace) {
        return Err(UrlError::Whitespace);
    }
    let parsed = Url::parse(url).map_err(|e| UrlError::Malformed(e.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(UrlError::Scheme(parsed.scheme().to_owned()));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(UrlError::NoHost);
    }
    Ok(parsed)
}

/// The URL's host is an IP literal that the guard refuses. (The resolver never sees IP
/// literals, so this is their only check.)
fn literal_blocked(url: &Url) -> Option<BlockedAddress> {
    let host = url.host_str()?;
    let ip: IpAddr = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()?;
    let reason = blocked_reason(ip)?;
    Some(BlockedAddress {
        host: host.to_owned(),
        ip,
        reason,
    })
}

/// A problem with one entry of a destination's `config.custom_headers`, in Outpost's terms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct CustomHeaderError {
    /// `config.custom_headers.<name>`.
    pub field: String,
    /// Outpost's validation type: `pattern`, `forbidden` or `required`; `size` for the whole map.
    pub kind: &'static str,
    pub message: String,
}

/// Checks `config.custom_headers` as Outpost does (names `^[a-zA-Z0-9][a-zA-Z0-9_-]*$`, not
/// reserved, values not empty), plus: values must be valid in a header, and names must not be
/// hop-by-hop headers nor any header jetpost sets itself with `header_prefix`
/// ([`names_jetpost_sets`]), which would never be sent as given; and the whole map stays within
/// the bounds of header metadata (entries and bytes), which common servers would refuse past.
/// Every problem is returned, not just the first.
pub fn validate_custom_headers(
    headers: &BTreeMap<String, String>,
    header_prefix: &str,
) -> Result<(), Vec<CustomHeaderError>> {
    let jetpost_sets = names_jetpost_sets(header_prefix);
    let mut problems = Vec::new();
    let bytes: usize = headers.iter().map(|(k, v)| k.len() + v.len()).sum();
    if headers.len() > MAX_METADATA_ENTRIES || bytes > MAX_METADATA_BYTES {
        problems.push(CustomHeaderError {
            field: "config.custom_headers".to_owned(),
            kind: "size",
            message: format!(
                "has {} headers and {bytes} bytes of names and values; at most \
                 {MAX_METADATA_ENTRIES} headers and {MAX_METADATA_BYTES} bytes are allowed",
                headers.len()
            ),
        });
    }
    for (name, value) in headers {
        let lower = name.to_ascii_lowercase();
        let field = format!("config.custom_headers.{name}");
        let mut chars = name.chars();
        let valid_name = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        let problem = if !valid_name {
            Some((
                "pattern",
                "header names use letters, digits, '-' and '_', starting with a letter or digit",
            ))
        } else if RESERVED_HEADERS.contains(&lower.as_str()) || jetpost_sets.contains(&lower) {
            Some((
                "forbidden",
                "jetpost sets this header itself; choose another name",
            ))
        } else if value.is_empty() {
            Some(("required", "the value is empty"))
        } else if HeaderValue::from_str(value).is_err() {
            Some((
                "pattern",
                "the value has characters not allowed in a header",
            ))
        } else {
            None
        };
        if let Some((kind, message)) = problem {
            problems.push(CustomHeaderError {
                field,
                kind,
                message: message.to_owned(),
            });
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_must_be_absolute_http_with_a_host() {
        assert_eq!(
            validate_webhook_url("https://example.com/hook", true),
            Ok(())
        );
        assert_eq!(
            validate_webhook_url("http://user:pass@example.com:8080/h?x=1", true),
            Ok(())
        );
        assert_eq!(validate_webhook_url("http://127.0.0.1:9/", false), Ok(()));
        assert!(matches!(
            validate_webhook_url("ftp://example.com/", false),
            Err(UrlError::Scheme(s)) if s == "ftp"
        ));
        assert!(matches!(
            validate_webhook_url("example.com/hook", false),
            Err(UrlError::Malformed(_))
        ));
        assert_eq!(
            validate_webhook_url("https://exa mple.com/", false),
            Err(UrlError::Whitespace)
        );
        assert!(validate_webhook_url("http://", false).is_err());
    }

    #[test]
    fn literal_private_addresses_and_localhost_are_refused_when_blocking() {
        for url in [
            "http://127.0.0.1/",
            "http://[::1]:8080/",
            "http://10.0.0.5/",
            "http://169.254.169.254/latest/meta-data",
            "http://2130706433/",
            "http://0x7f.1/",
            "http://[::ffff:192.168.0.1]/",
            "http://localhost:3000/",
            "http://LOCALHOST./",
            "http://api.localhost/",
        ] {
            assert!(
                matches!(validate_webhook_url(url, true), Err(UrlError::Blocked(_))),
                "{url} should be blocked"
            );
            assert_eq!(validate_webhook_url(url, false), Ok(()), "{url}");
        }
    }

    #[test]
    fn blocked_url_error_says_what_and_why() {
        let error = validate_webhook_url("http://10.1.2.3/", true).unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains("10.1.2.3 is a private address"),
            "{message}"
        );
        assert!(message.contains("block_private_ips"), "{message}");
    }

    #[test]
    fn custom_headers_follow_outposts_rules() {
        let headers: BTreeMap<String, String> = [
            ("X-Api-Key", "k"),
            ("authorization", "Bearer t"),
            ("Content-Type", "text/plain"),
            ("bad header", "v"),
            ("_x", "v"),
            ("x-empty", ""),
            ("Transfer-Encoding", "chunked"),
            ("x-newline", "a\nb"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let problems = validate_custom_headers(&headers, "x-outpost-").unwrap_err();
        let found: Vec<(&str, &str)> = problems
            .iter()
            .map(|p| (p.field.as_str(), p.kind))
            .collect();
        assert_eq!(
            found,
            [
                ("config.custom_headers.Content-Type", "forbidden"),
                ("config.custom_headers.Transfer-Encoding", "forbidden"),
                ("config.custom_headers._x", "pattern"),
                ("config.custom_headers.bad header", "pattern"),
                ("config.custom_headers.x-empty", "required"),
                ("config.custom_headers.x-newline", "pattern"),
            ]
        );
        let good: BTreeMap<String, String> = [("X-Api-Key".to_owned(), "k".to_owned())].into();
        assert_eq!(validate_custom_headers(&good, "x-outpost-"), Ok(()));
    }

    #[test]
    fn custom_headers_may_not_take_a_name_jetpost_sets() {
        let refused = |prefix: &str, name: &str| {
            let headers: BTreeMap<String, String> = [(name.to_owned(), "v".to_owned())].into();
            match validate_custom_headers(&headers, prefix) {
                Ok(()) => false,
                Err(problems) => {
                    assert_eq!(problems[0].kind, "forbidden");
                    assert_eq!(problems[0].field, format!("config.custom_headers.{name}"));
                    true
                }
            }
        };
        for name in [
            "x-outpost-signature",
            "X-Outpost-Event-Id",
            "x-outpost-timestamp",
            "x-outpost-topic",
            "webhook-id",
            "Webhook-Signature",
            "webhook-timestamp",
            "webhook-topic",
        ] {
            assert!(refused("x-outpost-", name), "{name}");
        }
        assert!(refused("X-Acme-", "x-acme-signature"));
        assert!(!refused("x-acme-", "x-outpost-signature"));
        assert!(!refused("x-outpost-", "x-outpost-region"));
        assert!(!refused("x-outpost-", "webhook-version"));
    }

    #[test]
    fn custom_headers_are_bounded_as_a_whole() {
        let many: BTreeMap<String, String> = (0..=MAX_METADATA_ENTRIES)
            .map(|i| (format!("x-h{i}"), "v".to_owned()))
            .collect();
        let problems = validate_custom_headers(&many, "x-outpost-").unwrap_err();
        assert_eq!(
            (problems[0].field.as_str(), problems[0].kind),
            ("config.custom_headers", "size")
        );
        let big: BTreeMap<String, String> =
            [("x-big".to_owned(), "v".repeat(MAX_METADATA_BYTES))].into();
        assert!(validate_custom_headers(&big, "x-outpost-").is_err());
        let fine: BTreeMap<String, String> = [("x-fine".to_owned(), "v".repeat(1024))].into();
        assert_eq!(validate_custom_headers(&fine, "x-outpost-"), Ok(()));
    }

    /// What `validate_custom_headers` refuses is exactly what delivery would replace or drop:
    /// every header a request carries besides the custom ones is in the refused set.
    #[test]
    fn refused_names_cover_every_header_delivery_sets() {
        for mode in [WebhookMode::Default, WebhookMode::Standard] {
            let config = WebhookConfig {
                mode,
                header_prefix: "X-Acme-".to_owned(),
                ..WebhookConfig::default()
            };
            let provider = WebhookProvider::new(&config, Duration::from_secs(1), "t").unwrap();
            let request = WebhookRequest {
                event_id: "e1".into(),
                topic: "order.paid".into(),
                body: Bytes::from_static(b"{}"),
                url: "http://example.com/".into(),
                credentials: WebhookCredentials::new(super::super::signature::generate_secret(
                    mode,
                )),
                ..Default::default()
            };
            let headers = provider.headers(&request, Utc::now()).unwrap();
            let refused = names_jetpost_sets("X-Acme-");
            for name in headers.keys() {
                let name = name.as_str();
                assert!(
                    name == "content-type" || refused.iter().any(|r| r == name),
                    "{mode:?}: {name} is set by jetpost but not refused"
                );
            }
        }
    }
}
