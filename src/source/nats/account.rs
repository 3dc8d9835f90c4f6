//! One NATS account jetpost consumes from: where it was defined, the tenant it proves, its stream
//! and durable consumer, and a fingerprint of everything that, when changed, needs a reconnect.

use std::fmt;
use std::path::PathBuf;

use sha2::{Digest, Sha256};

use crate::event::check_id;

/// Where an account was defined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// `publishmq.nats.accounts[]` in the config file: never removed at runtime.
    Static,
    /// A directory of the watched `accounts_dir`.
    Dir,
    /// The aggregate stream (`publishmq.nats.aggregate`).
    Aggregate,
}

/// How the tenant of a message is proven.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenantRule {
    /// Every message of the account belongs to this tenant.
    Account(String),
    /// The tenant is a token of the message subject (aggregate mode).
    Subject(SubjectPattern),
}

/// A `tenant_subject` such as `tenant.{tenant_id}.>`: literal tokens, `*`, a trailing `>`, and
/// exactly one `{tenant_id}` token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectPattern {
    pattern: String,
    tokens: Vec<String>,
    position: usize,
}

impl SubjectPattern {
    pub const PLACEHOLDER: &'static str = "{tenant_id}";

    pub fn parse(pattern: &str) -> Result<SubjectPattern, String> {
        let tokens: Vec<String> = pattern.split('.').map(str::to_owned).collect();
        let positions: Vec<usize> = (0..tokens.len())
            .filter(|&i| tokens[i] == Self::PLACEHOLDER)
            .collect();
        if positions.len() != 1 {
            return Err(format!(
                "tenant_subject \"{pattern}\" must contain {} exactly once as a whole token, e.g. \"tenant.{{tenant_id}}.>\"",
                Self::PLACEHOLDER
            ));
        }
        if let Some(i) = tokens.iter().position(|t| t == ">")
            && i + 1 != tokens.len()
        {
            return Err(format!(
                "tenant_subject \"{pattern}\": `>` must be the last token"
            ));
        }
        if tokens.iter().any(String::is_empty) {
            return Err(format!("tenant_subject \"{pattern}\" has an empty token"));
        }
        Ok(SubjectPattern {
            pattern: pattern.to_owned(),
            tokens,
            position: positions[0],
        })
    }

    /// The tenant a subject carries, or why the subject does not fit the pattern or its tenant
    /// token is not a valid tenant id.
    pub fn tenant_of<'s>(&self, subject: &'s str) -> Result<&'s str, String> {
        let tenant = self.tenant_token(subject)?;
        check_id(tenant).map_err(|err| {
            format!("subject {subject:?}: the tenant token is not a valid tenant id: it {err}")
        })?;
        Ok(tenant)
    }

    fn tenant_token<'s>(&self, subject: &'s str) -> Result<&'s str, String> {
        let parts: Vec<&str> = subject.split('.').collect();
        let mismatch = || {
            format!(
                "subject \"{subject}\" does not match tenant_subject \"{}\"",
                self.pattern
            )
        };
        let mut tenant = None;
        for (i, token) in self.tokens.iter().enumerate() {
            match token.as_str() {
                ">" => {
                    if parts.len() <= i {
                        return Err(mismatch());
                    }
                    return tenant.ok_or_else(mismatch);
                }
                _ if i >= parts.len() => return Err(mismatch()),
                "*" => {}
                t if t == Self::PLACEHOLDER => {
                    if parts[i].is_empty() {
                        return Err(mismatch());
                    }
                    tenant = Some(parts[i]);
                }
                literal => {
                    if parts[i] != literal {
                        return Err(mismatch());
                    }
                }
            }
        }
        if parts.len() != self.tokens.len() {
            return Err(mismatch());
        }
        tenant.ok_or_else(mismatch)
    }

    /// The subject filter that selects every message of `tenant` (placeholder filled, `*` kept).
    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    pub fn position(&self) -> usize {
        self.position
    }
}

/// Everything jetpost needs to consume one account.
#[derive(Clone, PartialEq, Eq)]
pub struct AccountSpec {
    /// Unique name: the key in logs, metrics and `/api/v1/nats/accounts`.
    pub name: String,
    pub origin: Origin,
    pub tenant: TenantRule,
    pub stream: String,
    pub consumer: String,
    /// The `.creds` file to connect with; none for no-auth, or credentials in the server URL.
    pub credentials_file: Option<PathBuf>,
    /// Where the account was defined, for error messages (`publishmq.nats.accounts[2]`,
    /// `/etc/jetpost/accounts/acme/meta.yaml`).
    pub defined_at: String,
    /// SHA-256 over the fields above and the creds file's bytes: a change means reconnect.
    pub fingerprint: [u8; 32],
}

impl AccountSpec {
    /// Sets the fingerprint from the fields and `credentials`, the creds file's bytes if any.
    pub fn fingerprinted(mut self, credentials: Option<&[u8]>) -> AccountSpec {
        let mut hash = Sha256::new();
        let tenant = match &self.tenant {
            TenantRule::Account(t) => format!("account:{t}"),
            TenantRule::Subject(p) => format!("subject:{}", p.as_str()),
        };
        let path = self
            .credentials_file
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        for field in [&self.name, &tenant, &self.stream, &self.consumer, &path] {
            hash.update((field.len() as u64).to_be_bytes());
            hash.update(field.as_bytes());
        }
        hash.update(credentials.unwrap_or_default());
        self.fingerprint = hash.finalize().into();
        self
    }

    /// The tenant id for the status API: the account's, or the subject pattern in aggregate mode.
    pub fn tenant_label(&self) -> String {
        match &self.tenant {
            TenantRule::Account(t) => t.clone(),
            TenantRule::Subject(p) => p.as_str().to_owned(),
        }
    }
}

impl fmt::Debug for AccountSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccountSpec")
            .field("name", &self.name)
            .field("origin", &self.origin)
            .field("tenant", &self.tenant)
            .field("stream", &self.stream)
            .field("consumer", &self.consumer)
            .field("credentials_file", &self.credentials_file)
            .field("defined_at", &self.defined_at)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_pattern_extracts_the_tenant() {
        let p = SubjectPattern::parse("tenant.{tenant_id}.>").unwrap();
        assert_eq!(p.tenant_of("tenant.acme.events.order"), Ok("acme"));
        assert_eq!(p.tenant_of("tenant.acme.x"), Ok("acme"));
        assert!(
            p.tenant_of("tenant.acme").is_err(),
            "> needs at least one token"
        );
        assert!(p.tenant_of("other.acme.events").is_err());
        let p = SubjectPattern::parse("*.{tenant_id}").unwrap();
        assert_eq!(p.tenant_of("x.globex"), Ok("globex"));
        assert!(p.tenant_of("x.globex.more").is_err());
    }

    #[test]
    fn subject_tenant_must_be_a_valid_id() {
        let p = SubjectPattern::parse("tenant.{tenant_id}.>").unwrap();
        assert_eq!(p.tenant_of("tenant.user@example.x"), Ok("user@example"));
        for subject in ["tenant.a/b.x", "tenant.%0A.x", "tenant.caf\u{e9}.x"] {
            let err = p.tenant_of(subject).unwrap_err();
            assert!(
                err.contains("the tenant token is not a valid tenant id"),
                "{subject}: {err}"
            );
        }
    }

    #[test]
    fn subject_pattern_rules() {
        assert!(SubjectPattern::parse("tenant.>").is_err());
        assert!(SubjectPattern::parse("tenant.{tenant_id}.{tenant_id}").is_err());
        assert!(SubjectPattern::parse("tenant.x{tenant_id}.>").is_err());
        assert!(SubjectPattern::parse("tenant.>.{tenant_id}").is_err());
        assert!(SubjectPattern::parse("tenant..{tenant_id}").is_err());
    }

    #[test]
    fn fingerprint_changes_with_creds_bytes_and_fields() {
        let make = |tenant: &str, creds: &[u8]| {
            AccountSpec {
                name: "a".into(),
                origin: Origin::Dir,
                tenant: TenantRule::Account(tenant.into()),
                stream: "EVENTS".into(),
                consumer: "jetpost".into(),
                credentials_file: Some("/x/user.creds".into()),
                defined_at: "x".into(),
                fingerprint: [0; 32],
            }
            .fingerprinted(Some(creds))
            .fingerprint
        };
        assert_eq!(make("t1", b"creds"), make("t1", b"creds"));
        assert_ne!(make("t1", b"creds"), make("t2", b"creds"));
        assert_ne!(make("t1", b"creds"), make("t1", b"creds2"));
    }
}
