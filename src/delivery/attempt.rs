//! What one delivery attempt reports: success, the attempt `code` (an HTTP status or a named
//! network failure), the captured response and a `Retry-After` hint. Also the classification
//! of a failed request's error chain into those codes.

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};

use super::ssrf::{BlockedAddress, DnsFailure};

/// The attempt `code` stored and shown for an attempt (Outpost's `code`): the HTTP status, or
/// what went wrong before a status arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttemptCode {
    /// The endpoint answered with this status (`"200"`, `"503"`, …).
    Status(u16),
    /// No complete response within the delivery timeout (connect, send or response).
    Timeout,
    /// Nothing listens on the port (TCP RST on connect).
    ConnectionRefused,
    /// The host name did not resolve.
    DnsError,
    /// TLS handshake or certificate failure.
    TlsError,
    /// The endpoint closed or reset the connection before a complete response.
    ConnectionReset,
    /// Any other transport failure (unreachable network, protocol error, …).
    NetworkError,
    /// Refused by the SSRF guard (`block_private_ips`): the host is or resolves to a
    /// non-public address. Not sent.
    BlockedAddress,
    /// The request could not be built from the destination (bad URL, unusable secret). Not
    /// sent; retrying will not help until the destination is fixed.
    InvalidRequest,
}

impl AttemptCode {
    /// The HTTP status, if the endpoint answered.
    pub fn status(self) -> Option<u16> {
        match self {
            AttemptCode::Status(status) => Some(status),
            _ => None,
        }
    }

    /// Failures that no retry can fix without a change to the destination. (HTTP statuses
    /// are never permanent here; the retry policy decides about those.)
    pub fn is_permanent(self) -> bool {
        matches!(
            self,
            AttemptCode::BlockedAddress | AttemptCode::InvalidRequest
        )
    }

    fn name(self) -> Option<&'static str> {
        Some(match self {
            AttemptCode::Status(_) => return None,
            AttemptCode::Timeout => "timeout",
            AttemptCode::ConnectionRefused => "connection_refused",
            AttemptCode::DnsError => "dns_error",
            AttemptCode::TlsError => "tls_error",
            AttemptCode::ConnectionReset => "connection_reset",
            AttemptCode::NetworkError => "network_error",
            AttemptCode::BlockedAddress => "blocked_address",
            AttemptCode::InvalidRequest => "invalid_request",
        })
    }
}

impl fmt::Display for AttemptCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self, self.name()) {
            (AttemptCode::Status(status), _) => write!(f, "{status}"),
            (_, Some(name)) => f.write_str(name),
            (_, None) => unreachable!("every non-status code has a name"),
        }
    }
}

/// Not an attempt code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an attempt code (an HTTP status 100-599 or a failure name)")]
pub struct UnknownAttemptCode(pub String);

impl FromStr for AttemptCode {
    type Err = UnknownAttemptCode;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(status) = s.parse::<u16>()
            && (100..=599).contains(&status)
        {
            return Ok(AttemptCode::Status(status));
        }
        [
            AttemptCode::Timeout,
            AttemptCode::ConnectionRefused,
            AttemptCode::DnsError,
            AttemptCode::TlsError,
            AttemptCode::ConnectionReset,
            AttemptCode::NetworkError,
            AttemptCode::BlockedAddress,
            AttemptCode::InvalidRequest,
        ]
        .into_iter()
        .find(|code| code.name() == Some(s))
        .ok_or_else(|| UnknownAttemptCode(s.to_owned()))
    }
}

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
    fn codes_print_and_parse_as_outposts_strings() {
        let codes = [
            (AttemptCode::Status(200), "200"),
            (AttemptCode::Status(503), "503"),
            (AttemptCode::Timeout, "timeout"),
            (AttemptCode::ConnectionRefused, "connection_refused"),
            (AttemptCode::DnsError, "dns_error"),
            (AttemptCode::TlsError, "tls_error"),
            (AttemptCode::ConnectionReset, "connection_reset"),
            (AttemptCode::NetworkError, "network_error"),
            (AttemptCode::BlockedAddress, "blocked_address"),
            (AttemptCode::InvalidRequest, "invalid_request"),
        ];
        for (code, text) in codes {
            assert_eq!(code.to_string(), text);
            assert_eq!(text.parse::<AttemptCode>(), Ok(code));
        }
        assert!("600".parse::<AttemptCode>().is_err());
        assert!("teapot".parse::<AttemptCode>().is_err());
    }

    #[test]
    fn only_guard_and_request_failures_are_permanent() {
        assert!(AttemptCode::BlockedAddress.is_permanent());
        assert!(AttemptCode::InvalidRequest.is_permanent());
        assert!(!AttemptCode::Status(400).is_permanent());
        assert!(!AttemptCode::DnsError.is_permanent());
    }

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
}
