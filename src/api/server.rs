//! Serving the API on a TCP listener so that slow or idle clients cannot hold it: a deadline for
//! each request head (which also ends idle keep-alive connections), a deadline for each request
//! body, and a bound on open connections. On shutdown it stops accepting and lets open requests
//! finish.

use std::future::Future;
use std::io;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderValue, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Sleep;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;
use tracing::{debug, error};

use super::ApiError;
use crate::config::Config;

/// What one client may take from the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeLimits {
    /// From the moment the server waits for a request head (a new connection, or the end of
    /// the previous response on a kept-alive one) until the head is complete; then the
    /// connection is closed without an answer.
    pub header_read_timeout: Duration,
    /// From the moment the head arrived until the body is complete; then the request is
    /// answered 408 and the connection closed.
    pub body_read_timeout: Duration,
    /// Connections served at once. Further connections are not accepted until one closes: they
    /// wait in the kernel's listen backlog.
    pub max_connections: usize,
}

impl ServeLimits {
    pub fn from_config(config: &Config) -> ServeLimits {
        ServeLimits {
            header_read_timeout: Duration::from_secs(config.api_header_read_timeout_seconds),
            body_read_timeout: Duration::from_secs(config.api_body_read_timeout_seconds),
            max_connections: config.api_max_connections,
        }
    }
}

/// Serves `router` on `listener` until `shutdown` is cancelled, then stops accepting, asks every
/// connection to close after its current request, and returns when all have closed.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServeLimits,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(
        limits.max_connections.clamp(1, Semaphore::MAX_PERMITS),
    ));
    let connections = TaskTracker::new();
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    loop {
        // The slot is taken before accepting, so a full server leaves new clients in the backlog
        // instead of accepting sockets it cannot serve.
        let slot = tokio::select! {
            _ = shutdown.cancelled() => break,
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    on_accept_error(err).await;
                    continue;
                }
            },
        };
        let service = RequestService {
            router: router.clone(),
            body_read_timeout: limits.body_read_timeout,
        };
        let connection = http.serve_connection(TokioIo::new(stream), service);
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let _slot = slot;
            let mut connection = pin!(connection);
            let ended = tokio::select! {
                ended = connection.as_mut() => ended,
                _ = shutdown.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(err) = ended {
                // A client that went away or timed out: its business, not an operator's.
                debug!("API connection ended: {err}");
            }
        });
    }
    // Closing the listener makes the kernel refuse new connections at once.
    drop(listener);
    connections.close();
    connections.wait().await;
}

/// Accept fails for the client's reasons (it reset the connection before we took it) or for
/// ours (out of file descriptors): the latter is waited out rather than spun on.
async fn on_accept_error(err: io::Error) {
    if matches!(
        err.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    error!("cannot accept API connections: {err}; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// One connection's requests, handed to the router with the body read under its deadline.
#[derive(Clone)]
struct RequestService {
    router: Router,
    body_read_timeout: Duration,
}

impl hyper::service::Service<Request<Incoming>> for RequestService {
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Self::Error>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let router = self.router.clone();
        let timeout = self.body_read_timeout;
        Box::pin(async move {
            let late = Arc::new(AtomicBool::new(false));
            let request = request.map(|body| {
                axum::body::Body::new(DeadlineBody {
                    inner: body,
                    deadline: Box::pin(tokio::time::sleep(timeout)),
                    late: late.clone(),
                })
            });
            let response = router.oneshot(request).await?;
            if late.load(Ordering::Relaxed) {
                return Ok(body_too_slow(timeout));
            }
            Ok(response)
        })
    }
}

/// Whatever the handler made of the failed read, the client gets a 408 and the connection is
/// closed: the rest of its body may still be on the way.
fn body_too_slow(timeout: Duration) -> Response {
    let mut response = ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        format!(
            "the request body did not arrive within {} s (api_body_read_timeout_seconds); \
             send the whole body at once",
            timeout.as_secs()
        ),
    )
    .into_response();
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// A request body that fails once its deadline passes, and records that it did.
struct DeadlineBody {
    inner: Incoming,
    deadline: Pin<Box<Sleep>>,
    late: Arc<AtomicBool>,
}

/// The error a late body ends with.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
struct BodyTooSlow;

impl HttpBody for DeadlineBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            self.late.store(true, Ordering::Relaxed);
            return Poll::Ready(Some(Err(BodyTooSlow.into())));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
