//! `Receiver`: a real HTTP server on a free loopback port that records every webhook request
//! (headers, exact body bytes, arrival time) and answers as told: a status, a delay, or a dropped
//! connection. Built on hyper directly so that "drop" really closes the socket without a response.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::HeaderMap;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// How the receiver answers a request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// Answer with this status and an empty body.
    Status(u16),
    /// Answer with this status, extra headers and body.
    Full {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    },
    /// Wait, then answer with the status.
    Delay(Duration, u16),
    /// Close the connection without answering.
    Drop,
}

/// One request as it arrived.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: Instant,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

#[derive(Default)]
struct Shared {
    requests: Mutex<Vec<Recorded>>,
    /// Replies for the next requests, in order; when empty, `default` answers.
    script: Mutex<VecDeque<Reply>>,
    default: Mutex<Option<Reply>>,
    arrived: Notify,
    /// Requests being answered now, and the most at once, per path (query left out).
    concurrency: Mutex<std::collections::HashMap<String, (usize, usize)>>,
}

/// A recording HTTP receiver; stops when dropped.
pub struct Receiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: CancellationToken,
}

impl Receiver {
    /// Starts a receiver that answers 200 until told otherwise.
    pub async fn start() -> Receiver {
        Receiver::start_on(0).await
    }

    /// Starts a receiver on `port` of 127.0.0.1 (0 = any free port), e.g. to bring an endpoint
    /// back on the port it was down on.
    pub async fn start_on(port: u16) -> Receiver {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind receiver");
        let addr = listener.local_addr().expect("receiver address");
        let shared = Arc::new(Shared::default());
        let stop = CancellationToken::new();
        tokio::spawn(accept_loop(listener, shared.clone(), stop.clone()));
        Receiver { addr, shared, stop }
    }

    /// The URL of `path` on this receiver (`path` starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Answer every request not covered by `script` with `reply`.
    pub fn reply_with(&self, reply: Reply) {
        *self.shared.default.lock().unwrap() = Some(reply);
    }

    /// Answer the next requests with these replies, in order, then fall back to the default.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.shared.script.lock().unwrap().extend(replies);
    }

    /// Every request recorded so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// The most requests to `path` (without query) that were being answered at the same
    /// time; "*" for all paths together.
    pub fn max_concurrent(&self, path: &str) -> usize {
        let concurrency = self.shared.concurrency.lock().unwrap();
        concurrency.get(path).map_or(0, |(_, max)| *max)
    }

    /// Waits until at least `count` requests arrived (panics after `timeout`) and returns them all.
    pub async fn wait_for(&self, count: usize, timeout: Duration) -> Vec<Recorded> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.shared.arrived.notified();
            let requests = self.requests();
            if requests.len() >= count {
                return requests;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!(
                    "receiver: expected {count} requests within {timeout:?}, got {}",
                    self.requests().len()
                );
            }
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Returned by the service to make hyper close the connection without a response.
#[derive(Debug)]
struct DropConnection;

impl std::fmt::Display for DropConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped on purpose")
    }
}

impl std::error::Error for DropConnection {}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        let stream = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
        };
        let shared = shared.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| handle(request, shared.clone()));
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = connection => {}
            }
        });
    }
}

async fn handle(
    request: Request<Incoming>,
    shared: Arc<Shared>,
) -> Result<Response<Full<Bytes>>, DropConnection> {
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let recorded = Recorded {
        method: parts.method.to_string(),
        path: parts
            .uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        headers: parts.headers,
        body,
        at: Instant::now(),
    };
    let _answering = Answering::enter(&shared, recorded.path.split('?').next().unwrap_or(""));
    let reply = shared.script.lock().unwrap().pop_front();
    let reply = reply
        .or_else(|| shared.default.lock().unwrap().clone())
        .unwrap_or(Reply::Status(200));
    shared.requests.lock().unwrap().push(recorded);
    shared.arrived.notify_waiters();
    match reply {
        Reply::Status(status) => Ok(response(status, Vec::new(), String::new())),
        Reply::Full {
            status,
            headers,
            body,
        } => Ok(response(status, headers, body)),
        Reply::Delay(delay, status) => {
            tokio::time::sleep(delay).await;
            Ok(response(status, Vec::new(), String::new()))
        }
        Reply::Drop => Err(DropConnection),
    }
}

/// Counts a request as being answered (for its path and for "*") until dropped.
struct Answering {
    shared: Arc<Shared>,
    path: String,
}

impl Answering {
    fn enter(shared: &Arc<Shared>, path: &str) -> Answering {
        let mut concurrency = shared.concurrency.lock().unwrap();
        for key in [path, "*"] {
            let (active, max) = concurrency.entry(key.to_owned()).or_default();
            *active += 1;
            *max = (*max).max(*active);
        }
        Answering {
            shared: shared.clone(),
            path: path.to_owned(),
        }
    }
}

impl Drop for Answering {
    fn drop(&mut self) {
        let mut concurrency = self.shared.concurrency.lock().unwrap();
        for key in [self.path.as_str(), "*"] {
            if let Some((active, _)) = concurrency.get_mut(key) {
                *active -= 1;
            }
        }
    }
}

fn response(status: u16, headers: Vec<(String, String)>, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    for (name, value) in headers {
        if let (Ok(name), Ok(value)) = (
            hyper::header::HeaderName::try_from(name),
            hyper::header::HeaderValue::try_from(value),
        ) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}
