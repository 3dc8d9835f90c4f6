//! What one webhook attempt reports: success, the attempt `code` (an HTTP status or a named
//! network failure), the captured response and a `Retry-After` hint, and how that becomes the
//! attempt's outcome and `response_data`. Also the classification of a failed request's error
//! chain into those codes.

use std::error::Error as StdError;
use std::io;
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};
use serde_json::json;

use super::ssrf::{BlockedAddress, DnsFailure};
use crate::destination::{AttemptCode, Outcome};

/// Everything one attempt tells: what happened, when, and what the endpoint said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptResult {
    /// The endpoint answered with a status below 400 (a 3xx is not followed and counts).
    pub success: bool,
    pub code: AttemptCode,
    /// The response body (lossy UTF-8), or Outpost's placeholder when it exceeded
    /// `max_response_body_bytes`. Empty when no response arrived.
    pub response_body: String,
    /// A few response headers worth keeping for the attempt log: `content-type`, `location`
    /// (a 3xx's target) and `retry-after`, lowercase names, in that order when present.
    pub response_headers: Vec<(String, String)>,
    /// The endpoint's `Retry-After` on a 429 or 503 (delta-seconds or HTTP-date, from now).
    pub retry_after: Option<Duration>,
    /// What went wrong, for people, when no status arrived or the body could not be read.
    pub error: Option<String>,
    /// When the request was built (its `timestamp` headers carry this time).
    pub sent_at: DateTime<Utc>,
    /// From sending until the response body was read (or the failure).
    pub duration: Duration,
}

impl AttemptResult {
    /// The HTTP status, if the endpoint answered.
    pub fn status(&self) -> Option<u16> {
        self.code.status()
    }

    /// The outcome the dispatcher records, with Outpost's `response_data`.
    pub fn into_outcome(self) -> Outcome {
        Outcome {
            response_data: response_data(&self),
            success: self.success,
            code: self.code,
            retry_after: self.retry_after,
            error: self.error,
            sent_at: self.sent_at,
            duration: self.duration,
        }
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

/// Outpost's placeholder for a response body over `max_response_body_bytes`: the body is
/// replaced whole rather than cut, so nobody reads a partial document as the real one.
pub fn body_over_cap_placeholder(max_bytes: usize) -> String {
    format!("Response body exceeded {max_bytes} bytes and was not stored")
}

/// Classifies a failed request by walking its error chain; the message for people is the
/// most specific error found.
pub(crate) fn classify(error: &reqwest::Error) -> (AttemptCode, String) {
    let chain = error_chain(error);
    for err in &chain {
        if let Some(blocked) = err.downcast_ref::<BlockedAddress>() {
            return (AttemptCode::BlockedAddress, blocked.to_string());
        }
    }
    let message = describe(error, &chain);
    if error.is_timeout() {
        return (AttemptCode::Timeout, message);
    }
    for err in &chain {
        if let Some(dns) = err.downcast_ref::<DnsFailure>() {
            return (AttemptCode::DnsError, format!("{error}: {dns}"));
        }
        if err.is::<rustls::Error>() {
            return (AttemptCode::TlsError, message);
        }
        if let Some(io) = err.downcast_ref::<io::Error>() {
            match io.kind() {
                io::ErrorKind::ConnectionRefused => {
                    return (AttemptCode::ConnectionRefused, message);
                }
                io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::BrokenPipe
                | io::ErrorKind::UnexpectedEof => {
                    return (AttemptCode::ConnectionReset, message);
                }
                io::ErrorKind::TimedOut => return (AttemptCode::Timeout, message),
                _ => {}
            }
        }
        if let Some(hyper) = err.downcast_ref::<hyper::Error>() {
            // The peer closed the connection (FIN or RST) before a complete response.
            if hyper.is_incomplete_message() || hyper.is_canceled() {
                return (AttemptCode::ConnectionReset, message);
            }
            if hyper.is_timeout() {
                return (AttemptCode::Timeout, message);
            }
        }
    }
    if error.is_dns() {
        return (AttemptCode::DnsError, message);
    }
    (AttemptCode::NetworkError, message)
}

/// The error and its sources. `io::Error::source()` skips the error an `io::Error` wraps
/// (rustls puts its errors there), so the wrapped one is listed too.
fn error_chain<'a>(error: &'a (dyn StdError + 'static)) -> Vec<&'a (dyn StdError + 'static)> {
    let mut chain = Vec::new();
    let mut next = Some(error);
    while let Some(err) = next {
        chain.push(err);
        next = match err.downcast_ref::<io::Error>().and_then(|io| io.get_ref()) {
            Some(inner) => Some(inner as &(dyn StdError + 'static)),
            None => err.source(),
        };
    }
    chain
}

/// "error sending request for url (…): <innermost cause>": reqwest's and hyper's outer
/// messages are generic, the innermost one says what happened.
fn describe(error: &reqwest::Error, chain: &[&(dyn StdError + 'static)]) -> String {
    let outer = error.to_string();
    match chain.last().map(|e| e.to_string()) {
        Some(innermost) if !innermost.is_empty() && innermost != outer => {
            format!("{outer}: {innermost}")
        }
        _ => outer,
    }
}

/// `Retry-After` as a delay from `now`: delta-seconds, or an HTTP-date (IMF-fixdate, RFC 850
/// or asctime). A date in the past is a zero delay; anything unparseable is `None`.
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = DateTime::parse_from_rfc2822(value)
        .map(|t| t.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            ["%A, %d-%b-%y %H:%M:%S GMT", "%a %b %e %H:%M:%S %Y"]
                .iter()
                .find_map(|format| NaiveDateTime::parse_from_str(value, format).ok())
                .map(|naive| naive.and_utc())
        })?;
    Some((at - now).to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn retry_after_accepts_seconds_and_all_http_date_forms() {
        let now = Utc.with_ymd_and_hms(1994, 11, 6, 8, 49, 0).unwrap();
        let in_37s = Some(Duration::from_secs(37));
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now),
            in_37s
        );
        assert_eq!(
            parse_retry_after("Sunday, 06-Nov-94 08:49:37 GMT", now),
            in_37s
        );
        assert_eq!(parse_retry_after("Sun Nov  6 08:49:37 1994", now), in_37s);
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }

    #[test]
    fn placeholder_is_outposts_text() {
        assert_eq!(
            body_over_cap_placeholder(16),
            "Response body exceeded 16 bytes and was not stored"
        );
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
