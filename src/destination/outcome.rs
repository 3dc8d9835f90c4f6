//! What one delivery attempt reports, whatever the destination type: the attempt `code` (an
//! HTTP status or a named failure, Outpost's strings), the outcome's class (delivered, worth
//! retrying, or permanent until the destination changes) and the `response_data` to record.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;

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
    /// A destination without HTTP statuses (a broker, a queue, a bucket) took the event.
    Ok,
    /// The service refused the destination's credentials (wrong user or password, unknown
    /// or invalid key). Permanent until the destination's credentials change.
    AuthFailed,
    /// The credentials are valid but may not publish where the config points. Permanent
    /// until the destination changes.
    AccessDenied,
    /// What the config names (exchange, queue, stream, bucket, subject's stream) does not
    /// exist. Retried: it may be created before the retries run out.
    NotFound,
    /// The service asked to slow down (throughput or rate exceeded). Retried.
    Throttled,
    /// The service refused this message (too large, invalid for it). Permanent for this
    /// event: sending the same bytes again gets the same answer.
    Rejected,
    /// Any other failure the service reported (a channel closed, an internal error). Retried.
    ServiceError,
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
            AttemptCode::BlockedAddress
                | AttemptCode::InvalidRequest
                | AttemptCode::AuthFailed
                | AttemptCode::AccessDenied
                | AttemptCode::Rejected
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
            AttemptCode::Ok => "OK",
            AttemptCode::AuthFailed => "auth_failed",
            AttemptCode::AccessDenied => "access_denied",
            AttemptCode::NotFound => "not_found",
            AttemptCode::Throttled => "throttled",
            AttemptCode::Rejected => "rejected",
            AttemptCode::ServiceError => "service_error",
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
            AttemptCode::Ok,
            AttemptCode::AuthFailed,
            AttemptCode::AccessDenied,
            AttemptCode::NotFound,
            AttemptCode::Throttled,
            AttemptCode::Rejected,
            AttemptCode::ServiceError,
        ]
        .into_iter()
        .find(|code| code.name() == Some(s))
        .ok_or_else(|| UnknownAttemptCode(s.to_owned()))
    }
}

/// One attempt's outcome as the type reports it: the code, whether it delivered, a readable
/// message when it did not, and what the attempt record keeps (`response_data`).
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// Delivered (for webhooks: a status below 400).
    pub success: bool,
    pub code: AttemptCode,
    /// The destination asked to wait this long before the next attempt (webhooks: the
    /// `Retry-After` of a 429 or 503).
    pub retry_after: Option<Duration>,
    /// What went wrong, for people.
    pub error: Option<String>,
    /// The attempt's `response_data`: the type's response (webhooks: Outpost's
    /// `{"status", "body", "headers"}`) or `{"error": "…"}`.
    pub response_data: serde_json::Value,
    /// When the attempt started.
    pub sent_at: DateTime<Utc>,
    /// How long it took.
    pub duration: Duration,
}

/// How an outcome counts for the retry policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutcomeClass {
    Delivered,
    /// Another attempt may succeed (a status, a timeout, a refused connection, …).
    Retryable,
    /// No attempt can succeed until the destination is changed.
    Permanent,
}

impl Outcome {
    /// Not sent at all: `code` (a permanent one, usually) with `message` as the error.
    pub fn not_sent(code: AttemptCode, message: String) -> Outcome {
        Outcome {
            success: false,
            code,
            retry_after: None,
            response_data: json!({ "error": message }),
            error: Some(message),
            sent_at: Utc::now(),
            duration: Duration::ZERO,
        }
    }

    /// Taken by a service without HTTP statuses: code `OK`, with what the service answered
    /// (a message id, a sequence) as `response_data`.
    pub fn accepted(response_data: serde_json::Value, sent_at: DateTime<Utc>) -> Outcome {
        Outcome {
            success: true,
            code: AttemptCode::Ok,
            retry_after: None,
            error: None,
            response_data,
            sent_at,
            duration: elapsed_since(sent_at),
        }
    }

    /// Sent (or tried) and failed with `code`; `message` says what the service answered.
    pub fn failed(code: AttemptCode, message: String, sent_at: DateTime<Utc>) -> Outcome {
        Outcome {
            success: false,
            code,
            retry_after: None,
            response_data: json!({ "error": message }),
            error: Some(message),
            sent_at,
            duration: elapsed_since(sent_at),
        }
    }

    pub fn class(&self) -> OutcomeClass {
        if self.success {
            OutcomeClass::Delivered
        } else if self.code.is_permanent() {
            OutcomeClass::Permanent
        } else {
            OutcomeClass::Retryable
        }
    }
}

fn elapsed_since(start: DateTime<Utc>) -> Duration {
    (Utc::now() - start).to_std().unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;

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
            (AttemptCode::Ok, "OK"),
            (AttemptCode::AuthFailed, "auth_failed"),
            (AttemptCode::AccessDenied, "access_denied"),
            (AttemptCode::NotFound, "not_found"),
            (AttemptCode::Throttled, "throttled"),
            (AttemptCode::Rejected, "rejected"),
            (AttemptCode::ServiceError, "service_error"),
        ];
        for (code, text) in codes {
            assert_eq!(code.to_string(), text);
            assert_eq!(text.parse::<AttemptCode>(), Ok(code));
        }
        assert!("600".parse::<AttemptCode>().is_err());
        assert!("teapot".parse::<AttemptCode>().is_err());
    }

    #[test]
    fn only_failures_a_retry_cannot_fix_are_permanent() {
        assert!(AttemptCode::BlockedAddress.is_permanent());
        assert!(AttemptCode::InvalidRequest.is_permanent());
        assert!(AttemptCode::AuthFailed.is_permanent());
        assert!(AttemptCode::Rejected.is_permanent());
        assert!(!AttemptCode::NotFound.is_permanent());
        assert!(!AttemptCode::Throttled.is_permanent());
        assert!(!AttemptCode::ServiceError.is_permanent());
        assert!(!AttemptCode::Status(400).is_permanent());
        assert!(!AttemptCode::DnsError.is_permanent());
    }

    #[test]
    fn outcomes_are_classed_by_success_and_code() {
        let refused = Outcome::not_sent(AttemptCode::InvalidRequest, "no url".into());
        assert_eq!(refused.class(), OutcomeClass::Permanent);
        assert_eq!(refused.response_data, json!({"error": "no url"}));
        let timeout = Outcome {
            code: AttemptCode::Timeout,
            ..refused.clone()
        };
        assert_eq!(timeout.class(), OutcomeClass::Retryable);
        let delivered = Outcome {
            success: true,
            code: AttemptCode::Status(204),
            ..refused
        };
        assert_eq!(delivered.class(), OutcomeClass::Delivered);
    }
}
