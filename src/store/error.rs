//! Store errors: what went wrong, and through `kind()` what the caller should do about it
//! (retry later, answer 404/409/422, or give up). Messages never carry secrets.

use sqlx::error::DatabaseError;

/// What a caller does with a [`StoreError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The database is unreachable, busy or locked, or the pool is exhausted: retry later
    /// (ingest naks the message, delivery keeps the lease running out).
    Transient,
    /// The tenant, destination, event or attempt does not exist (or was deleted).
    NotFound,
    /// The write collides with existing state (id already taken, delivery in flight).
    Conflict,
    /// The request itself is wrong (bad cursor, disabled destination): retrying won't help.
    Invalid,
    /// Anything else retrying won't fix: configuration, schema, unreadable data, SQL errors.
    Permanent,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database_url {url:?} is not usable: {reason}")]
    BadUrl { url: String, reason: String },

    #[error("the store is unavailable ({op}): {source}; retry later")]
    Unavailable {
        op: &'static str,
        #[source]
        source: BoxError,
    },

    #[error("database error ({op}): {source}")]
    Database {
        op: &'static str,
        #[source]
        source: BoxError,
    },

    #[error("{what} {id:?} not found")]
    NotFound { what: &'static str, id: String },

    #[error("{0}")]
    Conflict(String),

    #[error("{0}")]
    Invalid(String),

    #[error(
        "destination credentials are encrypted at rest and need aes_encryption_secret: \
         set AES_ENCRYPTION_SECRET (the same value on every replica)"
    )]
    SecretMissing,

    #[error(
        "cannot decrypt the credentials of destination {destination_id:?} (tenant {tenant_id:?}): \
         aes_encryption_secret is not the one they were written with; restore the previous \
         AES_ENCRYPTION_SECRET"
    )]
    Undecryptable {
        tenant_id: String,
        destination_id: String,
    },

    #[error(
        "the database schema is not up to date: migration(s) {pending:?} pending; run \
         `jetpost migrate` (or start `jetpost serve` without --no-migrate)"
    )]
    NotMigrated { pending: Vec<i64> },

    #[error(
        "the database schema has migration {version}, which this jetpost does not know: a newer \
         jetpost migrated it; upgrade jetpost"
    )]
    SchemaTooNew { version: i64 },

    #[error(
        "migration {version} failed part-way in an earlier run; repair the database by hand \
         (see docs/storage.md) before running `jetpost migrate` again"
    )]
    DirtySchema { version: i64 },

    #[error("applying database migrations failed: {0}")]
    Migrate(#[source] sqlx::migrate::MigrateError),

    #[error("stored {what} is unreadable: {detail}")]
    Corrupt { what: &'static str, detail: String },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The database's own error beneath a `StoreError` (sqlx's, or rusqlite's on SQLite's
/// hot-path writer).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl StoreError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            StoreError::Unavailable { .. } => ErrorKind::Transient,
            StoreError::Migrate(e) => match e {
                sqlx::migrate::MigrateError::Execute(e)
                | sqlx::migrate::MigrateError::ExecuteMigration(e, _)
                    if is_transient(e) =>
                {
                    ErrorKind::Transient
                }
                _ => ErrorKind::Permanent,
            },
            StoreError::NotFound { .. } => ErrorKind::NotFound,
            StoreError::Conflict(_) => ErrorKind::Conflict,
            StoreError::Invalid(_) => ErrorKind::Invalid,
            StoreError::BadUrl { .. }
            | StoreError::Database { .. }
            | StoreError::SecretMissing
            | StoreError::Undecryptable { .. }
            | StoreError::NotMigrated { .. }
            | StoreError::SchemaTooNew { .. }
            | StoreError::DirtySchema { .. }
            | StoreError::Corrupt { .. } => ErrorKind::Permanent,
        }
    }

    pub fn is_transient(&self) -> bool {
        self.kind() == ErrorKind::Transient
    }

    pub(crate) fn not_found(what: &'static str, id: impl Into<String>) -> Self {
        StoreError::NotFound {
            what,
            id: id.into(),
        }
    }

    pub(crate) fn corrupt(what: &'static str, detail: impl ToString) -> Self {
        StoreError::Corrupt {
            what,
            detail: detail.to_string(),
        }
    }
}

/// Wraps a driver error, sorting it into "retry later" or not. `op` names what was being done.
pub(crate) fn db_error(op: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| {
        if is_transient(&source) {
            StoreError::Unavailable {
                op,
                source: source.into(),
            }
        } else {
            StoreError::Database {
                op,
                source: source.into(),
            }
        }
    }
}

/// `db_error` for rusqlite (SQLite's hot-path writer), transient on the same codes.
pub(crate) fn sqlite_error(op: &'static str) -> impl Fn(rusqlite::Error) -> StoreError {
    move |e| DbFailure::from_sqlite(&e).to_error(op)
}

/// A database failure kept to answer several callers with (the pieces of work that shared a
/// failed transaction on SQLite's hot-path writer).
#[derive(Debug, Clone)]
pub(crate) struct DbFailure {
    transient: bool,
    message: String,
}

impl DbFailure {
    pub fn from_sqlite(e: &rusqlite::Error) -> DbFailure {
        let transient = match e {
            rusqlite::Error::SqliteFailure(failure, _) => {
                is_transient_sqlite_code(i64::from(failure.extended_code))
            }
            _ => false,
        };
        DbFailure {
            transient,
            message: e.to_string(),
        }
    }

    /// A write that panicked (a bug); retrying may pass.
    pub fn panicked() -> DbFailure {
        DbFailure {
            transient: true,
            message: "the SQLite writer thread panicked during the transaction (a bug: see \
                      the log); nothing of it was written"
                .to_string(),
        }
    }

    pub fn to_error(&self, op: &'static str) -> StoreError {
        let source = self.message.clone().into();
        if self.transient {
            StoreError::Unavailable { op, source }
        } else {
            StoreError::Database { op, source }
        }
    }
}

/// Whether rusqlite's error is a unique or primary-key violation.
pub(crate) fn is_sqlite_unique_violation(e: &rusqlite::Error) -> bool {
    const PRIMARYKEY: i32 = 1555;
    const UNIQUE: i32 = 2067;
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.extended_code == PRIMARYKEY || f.extended_code == UNIQUE)
}

pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// Errors a later retry can succeed on: lost or refused connections, an exhausted pool,
/// SQLite busy/locked, Postgres serialization failures, deadlocks, admin shutdowns, failovers.
pub(crate) fn is_transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::BeginFailed => true,
        sqlx::Error::Database(db) => is_transient_code(db.as_ref()),
        _ => false,
    }
}

fn is_transient_code(db: &dyn DatabaseError) -> bool {
    let Some(code) = db.code() else {
        return false;
    };
    if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
        return is_transient_sqlite_code(code.parse::<i64>().unwrap_or(-1));
    }
    // Postgres SQLSTATE: connection exceptions (08), serialization failure and deadlock (40),
    // insufficient resources (53), lock not available, statement timeout and administrator
    // shutdowns (55P03, 57014, 57P0x), system errors (58), read-only after a failover (25006).
    code.starts_with("08")
        || code.starts_with("40")
        || code.starts_with("53")
        || code.starts_with("57P")
        || code.starts_with("58")
        || code == "55P03"
        || code == "57014"
        || code == "25006"
}

/// SQLite's busy, locked, I/O error and disk full, from an extended result code (the primary
/// code is the low byte).
fn is_transient_sqlite_code(extended: i64) -> bool {
    const BUSY: i64 = 5;
    const LOCKED: i64 = 6;
    const IOERR: i64 = 10;
    const FULL: i64 = 13;
    matches!(extended & 0xff, BUSY | LOCKED | IOERR | FULL)
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`, for messages.
pub(crate) fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_string();
    };
    match rest[..at].find(':') {
        Some(colon) => format!(
            "{}{}:***{}",
            &url[..scheme_end],
            &rest[..colon],
            &rest[at..]
        ),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_password_only() {
        assert_eq!(
            redact_url("postgres://jet:s3cr@t@db:5432/x?sslmode=require"),
            "postgres://jet:***@db:5432/x?sslmode=require"
        );
        assert_eq!(
            redact_url("postgres://postgres@127.0.0.1/test"),
            "postgres://postgres@127.0.0.1/test"
        );
        assert_eq!(
            redact_url("sqlite://./data/jetpost.db"),
            "sqlite://./data/jetpost.db"
        );
    }

    #[test]
    fn pool_timeouts_are_transient_and_decode_errors_are_not() {
        assert!(is_transient(&sqlx::Error::PoolTimedOut));
        assert!(!is_transient(&sqlx::Error::RowNotFound));
        let e = db_error("test")(sqlx::Error::PoolTimedOut);
        assert_eq!(e.kind(), ErrorKind::Transient);
        assert!(e.to_string().contains("retry later"));
    }
}
