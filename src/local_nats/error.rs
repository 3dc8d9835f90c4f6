//! What can go wrong with a local nats-server; every message says what to do, and start-up
//! failures carry the tail of the server's log.

use std::path::PathBuf;
use std::time::Duration;

use super::jwt::JwtError;

#[derive(Debug, thiserror::Error)]
pub enum LocalNatsError {
    #[error(
        "nats-server not found: run scripts/install-tools.sh (installs nats-server 2.15.1 into \
         .tools/) or set NATS_SERVER_BIN"
    )]
    BinaryNotFound,
    #[error(
        "nats-server at {path} cannot be run: {reason}; point NATS_SERVER_BIN at a nats-server \
         executable or run scripts/install-tools.sh"
    )]
    BinaryUnusable { path: PathBuf, reason: String },
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "local nats-server directory {path} is not empty: give a missing or empty directory (it \
         will hold one server's config, JetStream store and creds)"
    )]
    DirNotEmpty { path: PathBuf },
    #[error("nats-server exited while starting ({status}); log tail:\n{log_tail}")]
    Exited { status: String, log_tail: String },
    #[error("nats-server was not ready within {timeout:?}: {reason}; log tail:\n{log_tail}")]
    NotReady {
        timeout: Duration,
        reason: String,
        log_tail: String,
    },
    #[error(
        "JetStream did not answer for account {account:?} within {timeout:?}: {reason}; log \
         tail:\n{log_tail}"
    )]
    JetStreamNotReady {
        account: String,
        timeout: Duration,
        reason: String,
        log_tail: String,
    },
    #[error("nats-server is already running (pid {pid}); stop() or kill() it before start()")]
    AlreadyRunning { pid: u32 },
    #[error("nats-server is not running; start() it first")]
    NotRunning,
    #[error("sending {signal} to nats-server pid {pid} failed: {reason}")]
    Signal {
        signal: &'static str,
        pid: u32,
        reason: String,
    },
    #[error(
        "this local nats-server runs without accounts (plain mode): accounts, users and creds \
         need operator mode (LocalNatsServer::start_operator)"
    )]
    PlainMode,
    #[error("account {0:?} does not exist on this local nats-server; add it with add_account")]
    UnknownAccount(String),
    #[error("account {0:?} already exists on this local nats-server; use update_account")]
    DuplicateAccount(String),
    #[error(
        "account name {0:?} is invalid: use 1 to 64 ASCII letters, digits, '-' or '_' (it names \
         files), and not SYS (the system account)"
    )]
    InvalidAccountName(String),
    #[error(transparent)]
    Jwt(#[from] JwtError),
    #[error("connecting to {url} as account {account:?} failed: {source}")]
    Connect {
        url: String,
        account: String,
        source: async_nats::ConnectError,
    },
    #[error("pushing the JWT of account {account:?} to $SYS.REQ.CLAIMS.UPDATE failed: {reason}")]
    ClaimsUpdate { account: String, reason: String },
}
