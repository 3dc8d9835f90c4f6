//! Values that must never reach logs: `Secret` (API keys, signing and encryption secrets) and
//! `DatabaseUrl` (whose password is masked). Their Debug output hides the secret part, so
//! `Config` can derive Debug and still be logged safely.

use std::fmt;

use serde::Deserialize;

/// A secret string. Debug prints `"***"` (or `""` when empty, so "not set" stays visible);
/// there is no Display, so reading it takes an explicit `expose()`.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for the one place that needs it (signing, comparing, encrypting).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Empty or whitespace only: treated as "not set".
    pub fn is_empty(&self) -> bool {
        self.0.trim().is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("\"\"")
        } else {
            f.write_str("\"***\"")
        }
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Secret(value.to_owned())
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(value)
    }
}

/// Which store a `DatabaseUrl` selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatabaseBackend {
    Sqlite,
    Postgres,
}

/// `sqlite://PATH`, `sqlite:PATH`, `postgres://…` or `postgresql://…`. Debug and Display mask
/// the password (in the user-info part and in a `password=` query parameter).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    pub fn new(url: impl Into<String>) -> Self {
        DatabaseUrl(url.into())
    }

    /// The full URL including the password, for connecting.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The backend the scheme selects; `None` for an unsupported scheme (validation rejects
    /// those, so a validated config always has one).
    pub fn backend(&self) -> Option<DatabaseBackend> {
        if self.sqlite_path().is_some() {
            Some(DatabaseBackend::Sqlite)
        } else if self.0.starts_with("postgres://") || self.0.starts_with("postgresql://") {
            Some(DatabaseBackend::Postgres)
        } else {
            None
        }
    }

    /// The file path of a `sqlite://PATH` / `sqlite:PATH` URL (query string removed), or None
    /// for other schemes. May be empty when the URL has no path (validation rejects that).
    pub fn sqlite_path(&self) -> Option<&str> {
        let rest = self
            .0
            .strip_prefix("sqlite://")
            .or_else(|| self.0.strip_prefix("sqlite:"))?;
        Some(rest.split('?').next().unwrap_or(rest))
    }

    /// The URL with its password replaced by `***`.
    pub fn redacted(&self) -> String {
        redact_url(&self.0)
    }
}

impl Default for DatabaseUrl {
    fn default() -> Self {
        DatabaseUrl::new(super::DEFAULT_DATABASE_URL)
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// Masks `user:PASSWORD@` and `password=VALUE` query parameters. Works on the raw string so
/// that even an unparsable URL (the case validation reports) is masked.
fn redact_url(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let mut out = String::with_capacity(url.len());
    match base.split_once("://") {
        Some((scheme, rest)) => {
            out.push_str(scheme);
            out.push_str("://");
            let authority_end = rest.find('/').unwrap_or(rest.len());
            let (authority, path) = rest.split_at(authority_end);
            // The password ends at the last '@' of the authority (passwords may contain '@').
            match authority.rsplit_once('@') {
                Some((userinfo, host)) => {
                    match userinfo.split_once(':') {
                        Some((user, _password)) => {
                            out.push_str(user);
                            out.push_str(":***");
                        }
                        None => out.push_str(userinfo),
                    }
                    out.push('@');
                    out.push_str(host);
                }
                None => out.push_str(authority),
            }
            out.push_str(path);
        }
        None => out.push_str(base),
    }
    if let Some(query) = query {
        out.push('?');
        let params: Vec<String> = query
            .split('&')
            .map(|param| match param.split_once('=') {
                Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
                _ => param.to_owned(),
            })
            .collect();
        out.push_str(&params.join("&"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_debug_hides_value_but_shows_emptiness() {
        assert_eq!(format!("{:?}", Secret::from("hunter2")), "\"***\"");
        assert_eq!(format!("{:?}", Secret::default()), "\"\"");
        assert_eq!(Secret::from("hunter2").expose(), "hunter2");
        assert!(Secret::from("  ").is_empty());
    }

    #[test]
    fn database_url_masks_password() {
        let url =
            DatabaseUrl::new("postgres://app:s3cr@t@db.internal:5432/jetpost?sslmode=require");
        assert_eq!(
            url.redacted(),
            "postgres://app:***@db.internal:5432/jetpost?sslmode=require"
        );
        assert!(!format!("{url:?}").contains("s3cr"));
        assert!(!format!("{url}").contains("s3cr"));
        assert_eq!(
            DatabaseUrl::new("postgresql://db/x?user=a&password=pw&sslmode=disable").redacted(),
            "postgresql://db/x?user=a&password=***&sslmode=disable"
        );
        assert_eq!(
            DatabaseUrl::new("postgres://app@db/x").redacted(),
            "postgres://app@db/x"
        );
        assert_eq!(
            DatabaseUrl::new("sqlite://./data/jetpost.db").redacted(),
            "sqlite://./data/jetpost.db"
        );
    }

    #[test]
    fn database_url_backend_and_sqlite_path() {
        let sqlite = DatabaseUrl::new("sqlite://./data/x.db?mode=rwc");
        assert_eq!(sqlite.backend(), Some(DatabaseBackend::Sqlite));
        assert_eq!(sqlite.sqlite_path(), Some("./data/x.db"));
        assert_eq!(
            DatabaseUrl::new("sqlite:/tmp/x.db").sqlite_path(),
            Some("/tmp/x.db")
        );
        assert_eq!(
            DatabaseUrl::new("postgresql://h/db").backend(),
            Some(DatabaseBackend::Postgres)
        );
        assert_eq!(DatabaseUrl::new("mysql://h/db").backend(), None);
    }
}
