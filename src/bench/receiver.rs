//! The benchmark's webhook receiver: an HTTP server on a free loopback port that answers every
//! POST with 200 at once (or, under `/slow/`, after a fixed delay) and only stamps the arrival
//! of the event named by the `x-outpost-event-id` header in the scenario's [`Tally`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::tally::Tally;

/// The header jetpost's default webhook format names the event in.
pub const EVENT_ID_HEADER: &str = "x-outpost-event-id";
/// Paths under this prefix answer after the slow delay.
pub const SLOW_PREFIX: &str = "/slow/";

#[derive(Clone)]
struct Shared {
    tally: Arc<Tally>,
    slow_delay: Duration,
}

/// A running receiver; stops when dropped.
pub struct FastReceiver {
    addr: SocketAddr,
    stop: CancellationToken,
}

impl FastReceiver {
    /// Starts a receiver recording into `tally`; `/slow/…` answers after `slow_delay`.
    pub async fn start(tally: Arc<Tally>, slow_delay: Duration) -> anyhow::Result<FastReceiver> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        let app = axum::Router::new()
            .fallback(receive)
            .with_state(Shared { tally, slow_delay });
        let stopped = stop.clone();
        tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(stopped.cancelled_owned())
                .await;
            if let Err(err) = served {
                tracing::warn!("benchmark receiver stopped: {err}");
            }
        });
        Ok(FastReceiver { addr, stop })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL of a destination that answers at once.
    pub fn fast_url(&self, name: &str) -> String {
        format!("http://{}/fast/{name}", self.addr)
    }

    /// The URL of a destination that answers after the slow delay.
    pub fn slow_url(&self, name: &str) -> String {
        format!("http://{}{SLOW_PREFIX}{name}", self.addr)
    }
}

impl Drop for FastReceiver {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

// The body is taken (and dropped) so the connection stays reusable for the next request.
async fn receive(
    State(shared): State<Shared>,
    uri: Uri,
    headers: HeaderMap,
    _body: Bytes,
) -> StatusCode {
    if uri.path().starts_with(SLOW_PREFIX) {
        tokio::time::sleep(shared.slow_delay).await;
    }
    match headers.get(EVENT_ID_HEADER).and_then(|v| v.to_str().ok()) {
        Some(id) => shared.tally.arrived(id),
        None => shared.tally.arrived(""),
    }
    StatusCode::OK
}
