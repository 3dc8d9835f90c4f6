//! What every AWS SDK client of a destination is built with, and what its failures mean:
//! static credentials from the destination and an explicit region (the SDK never looks for
//! ambient credentials: no environment, profile or instance-metadata lookups), the delivery
//! timeout, no SDK retries (jetpost's schedule retries), and an HTTPS client of its own whose
//! resolver refuses non-public addresses while `block_private_ips` is on. Failures become
//! attempt codes here, from the service's error code or the transport error's chain.

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::net::IpAddr;
use std::sync::Mutex;

use aws_sdk_sqs::config::retry::RetryConfig;
use aws_sdk_sqs::config::timeout::TimeoutConfig;
use aws_sdk_sqs::config::{Credentials, Region, SharedHttpClient};
use aws_sdk_sqs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use aws_smithy_runtime_api::client::dns::{DnsFuture, ResolveDns, ResolveDnsError};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use chrono::{DateTime, Utc};

use super::AwsSettings;
use super::fields::StoredCredentials;
use crate::destination::gauge::Counted;
use crate::destination::webhook::{BlockedAddress, blocked_reason};
use crate::destination::{AttemptCode, Outcome};

/// The parts of an SDK client's configuration that jetpost sets, whatever the service. Each
/// client built from them gets its own HTTPS client (connection pool), dropped with it.
pub struct ClientParts {
    settings: AwsSettings,
    pub credentials: Credentials,
    pub region: Region,
    /// `config.endpoint` (or the SQS queue URL's origin), else the service's AWS endpoint.
    pub endpoint: Option<String>,
}

impl ClientParts {
    pub fn new(
        settings: AwsSettings,
        credentials: &StoredCredentials,
        region: &str,
        endpoint: Option<String>,
    ) -> ClientParts {
        ClientParts {
            settings,
            credentials: Credentials::new(
                &credentials.key,
                &credentials.secret,
                credentials.session.clone(),
                None,
                "jetpost-destination",
            ),
            region: Region::new(region.to_owned()),
            endpoint,
        }
    }

    /// A new HTTPS client: rustls on ring, through the guarded resolver.
    pub fn http(&self) -> SharedHttpClient {
        let _ = rustls::crypto::ring::default_provider().install_default();
        aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
            .build_with_resolver(GuardedDns {
                block_private_ips: self.settings.block_private_ips,
            })
    }

    /// The delivery timeout, for connecting and for the whole call.
    pub fn timeouts(&self) -> TimeoutConfig {
        TimeoutConfig::builder()
            .connect_timeout(self.settings.timeout)
            .operation_timeout(self.settings.timeout)
            .build()
    }

    /// No SDK retries: a failed attempt is recorded and jetpost's schedule retries it.
    pub fn retries(&self) -> RetryConfig {
        RetryConfig::disabled()
    }
}

/// An SDK client built on first use and kept until the registry closes its destination.
/// Counted in the `jetpost_destination_clients{type}` gauge while it is kept.
pub struct LazyClient<C> {
    kind: &'static str,
    build: Box<dyn Fn() -> C + Send + Sync>,
    slot: Mutex<Option<(C, Counted)>>,
}

impl<C: Clone> LazyClient<C> {
    pub fn new(kind: &'static str, build: impl Fn() -> C + Send + Sync + 'static) -> Self {
        LazyClient {
            kind,
            build: Box::new(build),
            slot: Mutex::new(None),
        }
    }

    /// The client, built now if this is the first use (or the first since `close`).
    pub fn get(&self) -> C {
        let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        let (client, _) = slot.get_or_insert_with(|| ((self.build)(), Counted::new(self.kind)));
        client.clone()
    }

    /// Drops the client (its connection pool goes with the last attempt still using it).
    pub fn close(&self) {
        let taken = self.slot.lock().unwrap_or_else(|e| e.into_inner()).take();
        drop(taken);
    }
}

/// The resolver of AWS clients: the system resolver, without non-public addresses when
/// `block_private_ips` is on. Checking the addresses the connection will use is what makes
/// DNS rebinding useless. (IP literals never reach a resolver; they are checked when the
/// destination is opened.)
#[derive(Debug, Clone)]
struct GuardedDns {
    block_private_ips: bool,
}

impl ResolveDns for GuardedDns {
    fn resolve_dns<'a>(&'a self, name: &'a str) -> DnsFuture<'a> {
        DnsFuture::new(async move {
            let resolved: Vec<IpAddr> = tokio::net::lookup_host((name, 0))
                .await
                .map_err(|source| {
                    ResolveDnsError::new(Unresolved {
                        host: name.to_owned(),
                        source,
                    })
                })?
                .map(|addr| addr.ip())
                .collect();
            if !self.block_private_ips {
                return Ok(resolved);
            }
            let (public, refused): (Vec<IpAddr>, Vec<IpAddr>) = resolved
                .into_iter()
                .partition(|ip| blocked_reason(*ip).is_none());
            match refused.first() {
                Some(ip) if public.is_empty() => Err(ResolveDnsError::new(BlockedAddress {
                    host: name.to_owned(),
                    ip: *ip,
                    reason: blocked_reason(*ip).unwrap_or("not public"),
                })),
                _ => Ok(public),
            }
        })
    }
}

/// A host name that did not resolve.
#[derive(Debug)]
struct Unresolved {
    host: String,
    source: io::Error,
}

impl fmt::Display for Unresolved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "could not resolve {}: {}", self.host, self.source)
    }
}

impl StdError for Unresolved {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&self.source)
    }
}

/// The outcome of a failed call to `service` (`SQS SendMessage`).
pub fn failure<E>(
    service: &str,
    error: SdkError<E, HttpResponse>,
    sent_at: DateTime<Utc>,
) -> Outcome
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
{
    let (code, message) = match &error {
        SdkError::ServiceError(context) => {
            let status = context.raw().status().as_u16();
            // Services that answer a JSON-protocol call with an XML error (S3-compatible
            // stores, emulators) leave the SDK without a code; read it from the body then.
            let body = context.raw().body().bytes().unwrap_or_default();
            let name = context
                .err()
                .code()
                .map(str::to_owned)
                .or_else(|| xml_element(body, "Code"))
                .unwrap_or_default();
            let said = context
                .err()
                .message()
                .map(str::to_owned)
                .or_else(|| xml_element(body, "Message"))
                .unwrap_or_default();
            let name = name.as_str();
            let code = service_code(name, status);
            (
                code,
                format!("{service}: {name} (HTTP {status}): {said}{}", advice(code)),
            )
        }
        SdkError::TimeoutError(_) => (
            AttemptCode::Timeout,
            format!("{service}: no answer within the delivery timeout"),
        ),
        SdkError::ConstructionFailure(_) => (
            AttemptCode::InvalidRequest,
            format!(
                "{service}: the request could not be built: {}",
                DisplayErrorContext(&error)
            ),
        ),
        SdkError::DispatchFailure(failure) if failure.is_timeout() => (
            AttemptCode::Timeout,
            format!("{service}: {}", DisplayErrorContext(&error)),
        ),
        SdkError::DispatchFailure(_) => (
            transport_code(&error),
            format!("{service}: {}", DisplayErrorContext(&error)),
        ),
        _ => (
            AttemptCode::ServiceError,
            format!("{service}: {}", DisplayErrorContext(&error)),
        ),
    };
    Outcome::failed(code, message, sent_at)
}

/// The text of the first `<name>` element of an XML error body.
fn xml_element(body: &[u8], name: &str) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let open = format!("<{name}>");
    let start = text.find(&open)? + open.len();
    let end = start + text[start..].find(&format!("</{name}>"))?;
    Some(text[start..end].trim().to_owned()).filter(|s| !s.is_empty())
}

/// What to do about a refused call, for people reading the attempt.
fn advice(code: AttemptCode) -> &'static str {
    match code {
        AttemptCode::AuthFailed => {
            "; check the destination's credentials.key and credentials.secret"
        }
        AttemptCode::AccessDenied => {
            "; allow these credentials to write to the destination's queue, bucket or stream"
        }
        AttemptCode::NotFound => {
            "; create it, or point the destination's config at one that exists"
        }
        _ => "",
    }
}

/// The attempt code of an error the service answered with: its error code, else its status.
pub fn service_code(name: &str, status: u16) -> AttemptCode {
    match name {
        "InvalidClientTokenId"
        | "UnrecognizedClientException"
        | "SignatureDoesNotMatch"
        | "InvalidSignatureException"
        | "IncompleteSignature"
        | "IncompleteSignatureException"
        | "InvalidAccessKeyId"
        | "MissingAuthenticationToken"
        | "MissingAuthenticationTokenException"
        | "ExpiredToken"
        | "ExpiredTokenException"
        | "InvalidToken"
        | "InvalidSecurity"
        | "AuthFailure" => AttemptCode::AuthFailed,
        "AccessDenied"
        | "AccessDeniedException"
        | "AllAccessDisabled"
        | "KMSAccessDeniedException" => AttemptCode::AccessDenied,
        "AWS.SimpleQueueService.NonExistentQueue"
        | "QueueDoesNotExist"
        | "NonExistentQueue"
        | "NoSuchBucket"
        | "ResourceNotFoundException"
        | "NotFound" => AttemptCode::NotFound,
        "Throttling"
        | "ThrottlingException"
        | "ThrottledException"
        | "RequestThrottled"
        | "RequestThrottledException"
        | "RequestLimitExceeded"
        | "TooManyRequestsException"
        | "ProvisionedThroughputExceededException"
        | "LimitExceededException"
        | "KMSThrottlingException"
        | "SlowDown" => AttemptCode::Throttled,
        "InvalidMessageContents"
        | "InvalidParameterValue"
        | "InvalidParameterValueException"
        | "InvalidParameterCombination"
        | "InvalidAttributeValue"
        | "InvalidArgument"
        | "InvalidArgumentException"
        | "InvalidStorageClass"
        | "ValidationException"
        | "ValidationError"
        | "EntityTooLarge"
        | "MaxMessageSizeExceeded"
        | "MessageTooLong"
        | "BatchRequestTooLong"
        | "MissingParameter" => AttemptCode::Rejected,
        _ => match status {
            401 => AttemptCode::AuthFailed,
            403 => AttemptCode::AccessDenied,
            404 => AttemptCode::NotFound,
            413 => AttemptCode::Rejected,
            429 => AttemptCode::Throttled,
            _ => AttemptCode::ServiceError,
        },
    }
}

/// The attempt code of a request that got no answer, from its error chain.
fn transport_code(error: &(dyn StdError + 'static)) -> AttemptCode {
    let mut next = Some(error);
    while let Some(current) = next {
        if current.downcast_ref::<BlockedAddress>().is_some() {
            return AttemptCode::BlockedAddress;
        }
        if current.downcast_ref::<Unresolved>().is_some() {
            return AttemptCode::DnsError;
        }
        if current.downcast_ref::<rustls::Error>().is_some() {
            return AttemptCode::TlsError;
        }
        if let Some(io) = current.downcast_ref::<io::Error>() {
            if let Some(inner) = io.get_ref()
                && inner.downcast_ref::<rustls::Error>().is_some()
            {
                return AttemptCode::TlsError;
            }
            match io.kind() {
                io::ErrorKind::ConnectionRefused => return AttemptCode::ConnectionRefused,
                io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::BrokenPipe
                | io::ErrorKind::UnexpectedEof => return AttemptCode::ConnectionReset,
                io::ErrorKind::TimedOut => return AttemptCode::Timeout,
                _ => {}
            }
        }
        if let Some(hyper) = current.downcast_ref::<hyper::Error>()
            && (hyper.is_incomplete_message() || hyper.is_canceled())
        {
            return AttemptCode::ConnectionReset;
        }
        next = current.source();
    }
    AttemptCode::NetworkError
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_errors_map_to_attempt_codes() {
        for (name, status, code) in [
            ("InvalidClientTokenId", 403, AttemptCode::AuthFailed),
            ("SignatureDoesNotMatch", 403, AttemptCode::AuthFailed),
            ("UnrecognizedClientException", 400, AttemptCode::AuthFailed),
            ("InvalidAccessKeyId", 403, AttemptCode::AuthFailed),
            ("AccessDenied", 403, AttemptCode::AccessDenied),
            ("AccessDeniedException", 400, AttemptCode::AccessDenied),
            (
                "AWS.SimpleQueueService.NonExistentQueue",
                400,
                AttemptCode::NotFound,
            ),
            ("QueueDoesNotExist", 400, AttemptCode::NotFound),
            ("NoSuchBucket", 404, AttemptCode::NotFound),
            ("ResourceNotFoundException", 400, AttemptCode::NotFound),
            (
                "ProvisionedThroughputExceededException",
                400,
                AttemptCode::Throttled,
            ),
            ("SlowDown", 503, AttemptCode::Throttled),
            ("InvalidParameterValue", 400, AttemptCode::Rejected),
            ("ValidationException", 400, AttemptCode::Rejected),
            ("EntityTooLarge", 400, AttemptCode::Rejected),
            ("InternalError", 500, AttemptCode::ServiceError),
            ("", 403, AttemptCode::AccessDenied),
            ("", 404, AttemptCode::NotFound),
            ("", 429, AttemptCode::Throttled),
            ("SomethingNew", 400, AttemptCode::ServiceError),
        ] {
            assert_eq!(service_code(name, status), code, "{name} {status}");
        }
    }

    #[test]
    fn a_lazy_client_is_built_once_and_again_after_close() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};

        let built = Arc::new(AtomicUsize::new(0));
        let counter = built.clone();
        let lazy = LazyClient::new("test", move || counter.fetch_add(1, Ordering::SeqCst));
        assert_eq!(built.load(Ordering::SeqCst), 0, "nothing built at open");
        assert_eq!(lazy.get(), 0);
        assert_eq!(lazy.get(), 0, "reused");
        lazy.close();
        assert_eq!(lazy.get(), 1, "built again after close");
        assert_eq!(built.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn the_guarded_resolver_refuses_names_of_non_public_addresses() {
        let guarded = GuardedDns {
            block_private_ips: true,
        };
        let refused = guarded.resolve_dns("localhost").await.unwrap_err();
        assert_eq!(transport_code(&refused), AttemptCode::BlockedAddress);
        let open = GuardedDns {
            block_private_ips: false,
        };
        let resolved = open.resolve_dns("localhost").await.unwrap();
        assert!(resolved.iter().all(|ip| ip.is_loopback()), "{resolved:?}");
    }

    #[test]
    fn xml_error_bodies_give_their_code() {
        let body = b"<ErrorResponse><Errors><Error><Code>InvalidClientTokenId</Code>\
            <Message>The security token included in the request is invalid.</Message>\
            </Error></Errors></ErrorResponse>";
        assert_eq!(
            xml_element(body, "Code").as_deref(),
            Some("InvalidClientTokenId")
        );
        assert_eq!(
            xml_element(body, "Message").as_deref(),
            Some("The security token included in the request is invalid.")
        );
        assert_eq!(xml_element(b"{}", "Code"), None);
    }

    #[test]
    fn transport_errors_are_read_from_the_chain() {
        let refused = io::Error::new(io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(transport_code(&refused), AttemptCode::ConnectionRefused);
        let blocked = ResolveDnsError::new(BlockedAddress {
            host: "internal".into(),
            ip: IpAddr::from([10, 0, 0, 1]),
            reason: "a private address",
        });
        assert_eq!(transport_code(&blocked), AttemptCode::BlockedAddress);
        let unresolved = ResolveDnsError::new(Unresolved {
            host: "nowhere.invalid".into(),
            source: io::Error::other("no such host"),
        });
        assert_eq!(transport_code(&unresolved), AttemptCode::DnsError);
        assert_eq!(
            transport_code(&io::Error::other("odd")),
            AttemptCode::NetworkError
        );
    }
}
