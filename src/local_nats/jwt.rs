//! Hand-encoded NATS JWTs (operator, account, user) and `.creds` files, so a local nats-server can
//! run in operator mode without `nsc`. The `nats-jwt` crate cannot express JetStream limits,
//! exports or imports; the claim layout here follows nats-io/jwt v2 (see NATS-NOTES.md).

use std::collections::BTreeMap;
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use data_encoding::BASE32_NOPAD;
use nkeys::KeyPair;
use serde::Serialize;
use sha2::{Digest as _, Sha512_256};

/// The only header nats-server accepts for nkey-signed JWTs.
const HEADER: &str = r#"{"typ":"JWT","alg":"ed25519-nkey"}"#;

/// Name of the system account every [`Operator`] creates.
pub const SYSTEM_ACCOUNT: &str = "SYS";

/// Errors while signing claims or writing a user's seed. Keys made by this module always carry a
/// seed, so these only occur for key pairs built from a public key alone.
#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    #[error("signing the {kind} JWT {name:?} failed: {source} (the issuer key pair needs a seed)")]
    Sign {
        kind: &'static str,
        name: String,
        source: nkeys::error::Error,
    },
    #[error("user {name:?} has no seed to write into a .creds file: {source}")]
    Seed {
        name: String,
        source: nkeys::error::Error,
    },
    #[error("encoding the {kind} JWT claims {name:?} as JSON failed: {source}")]
    Json {
        kind: &'static str,
        name: String,
        source: serde_json::Error,
    },
}

/// JetStream limits of an account. An account has JetStream iff `mem_storage` or `disk_storage`
/// is non-zero; the server reserves both against its own `max_memory_store`/`max_file_store`, so
/// keep them small when many accounts share one server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JetStreamLimits {
    /// Bytes of memory storage; -1 = unlimited.
    pub mem_storage: i64,
    /// Bytes of file storage; -1 = unlimited.
    pub disk_storage: i64,
    /// Streams in the account; -1 = unlimited.
    pub streams: i64,
    /// Consumers per stream; -1 = unlimited (the server's own `default_max_consumers` still applies).
    pub consumer: i64,
}

impl Default for JetStreamLimits {
    /// 32 MiB memory, 1 GiB disk, unlimited streams and consumers.
    fn default() -> Self {
        Self {
            mem_storage: 32 * 1024 * 1024,
            disk_storage: 1024 * 1024 * 1024,
            streams: -1,
            consumer: -1,
        }
    }
}

/// Whether an export/import carries a message stream or a request/reply service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ExportKind {
    Stream,
    Service,
}

/// How many replies a service export may send per request (nats-io/jwt `response_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum ServiceResponse {
    Singleton,
    Stream,
    Chunked,
}

/// Something an account offers to other accounts, e.g. service `$JS.API.CONSUMER.>` or stream
/// `deliver.acme.>` (aggregate mode, NATS-NOTES.md).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Export {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub subject: String,
    #[serde(rename = "type")]
    pub kind: ExportKind,
    /// Only for services; the server defaults to `Singleton`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_type: Option<ServiceResponse>,
}

impl Export {
    /// A public service export of `subject`.
    pub fn service(subject: impl Into<String>) -> Self {
        Self {
            name: None,
            subject: subject.into(),
            kind: ExportKind::Service,
            response_type: None,
        }
    }

    /// A public stream export of `subject`.
    pub fn stream(subject: impl Into<String>) -> Self {
        Self {
            name: None,
            subject: subject.into(),
            kind: ExportKind::Stream,
            response_type: None,
        }
    }

    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    pub fn with_response_type(mut self, response_type: ServiceResponse) -> Self {
        self.response_type = Some(response_type);
        self
    }
}

/// Something an account takes from another account's export. `subject` is the exporter's subject;
/// `local_subject` renames it inside the importing account (e.g. service `$JS.API.CONSUMER.>` of
/// tenant acme seen as `JS.acme.API.CONSUMER.>`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Import {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub subject: String,
    /// Public key of the exporting account.
    pub account: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_subject: Option<String>,
    #[serde(rename = "type")]
    pub kind: ExportKind,
}

impl Import {
    /// Import of service `subject` exported by the account with public key `account`.
    pub fn service(account: impl Into<String>, subject: impl Into<String>) -> Self {
        Self {
            name: None,
            subject: subject.into(),
            account: account.into(),
            local_subject: None,
            kind: ExportKind::Service,
        }
    }

    /// Import of stream `subject` exported by the account with public key `account`.
    pub fn stream(account: impl Into<String>, subject: impl Into<String>) -> Self {
        Self {
            name: None,
            subject: subject.into(),
            account: account.into(),
            local_subject: None,
            kind: ExportKind::Stream,
        }
    }

    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    pub fn with_local_subject(mut self, local_subject: impl Into<String>) -> Self {
        self.local_subject = Some(local_subject.into());
        self
    }
}

/// What an account should look like; the key pair is made when it becomes an [`Account`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountSpec {
    pub name: String,
    /// `None`: no JetStream in this account.
    pub jetstream: Option<JetStreamLimits>,
    pub exports: Vec<Export>,
    pub imports: Vec<Import>,
}

impl AccountSpec {
    /// An account with JetStream at [`JetStreamLimits::default`] and no exports or imports.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            jetstream: Some(JetStreamLimits::default()),
            exports: Vec::new(),
            imports: Vec::new(),
        }
    }

    pub fn with_jetstream(mut self, limits: JetStreamLimits) -> Self {
        self.jetstream = Some(limits);
        self
    }

    pub fn without_jetstream(mut self) -> Self {
        self.jetstream = None;
        self
    }

    pub fn with_export(mut self, export: Export) -> Self {
        self.exports.push(export);
        self
    }

    pub fn with_import(mut self, import: Import) -> Self {
        self.imports.push(import);
        self
    }
}

/// A NATS account: its spec, its key pair and the users it has revoked.
#[derive(Clone)]
pub struct Account {
    spec: AccountSpec,
    keypair: KeyPair,
    revocations: BTreeMap<String, i64>,
}

impl fmt::Debug for Account {
    // The key pair's seed must never reach logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Account")
            .field("name", &self.spec.name)
            .field("public_key", &self.keypair.public_key())
            .field("jetstream", &self.spec.jetstream)
            .field("exports", &self.spec.exports.len())
            .field("imports", &self.spec.imports.len())
            .field("revocations", &self.revocations.len())
            .finish()
    }
}

impl Account {
    /// Makes a new account key pair for `spec`.
    pub fn new(spec: AccountSpec) -> Self {
        Self {
            spec,
            keypair: KeyPair::new_account(),
            revocations: BTreeMap::new(),
        }
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// The account's public nkey (`A…`), which the server and imports know it by.
    pub fn public_key(&self) -> String {
        self.keypair.public_key()
    }

    pub fn spec(&self) -> &AccountSpec {
        &self.spec
    }

    /// Replaces limits, exports and imports; keeps the key pair and revocations.
    pub fn set_spec(&mut self, spec: AccountSpec) {
        self.spec = spec;
    }

    /// Revoked user public keys and the unix time from which their JWTs are refused.
    pub fn revocations(&self) -> &BTreeMap<String, i64> {
        &self.revocations
    }

    /// Refuses every JWT of `user_public_key` issued at or before `at` (unix seconds). Takes
    /// effect when the re-signed account JWT reaches the server.
    pub fn revoke_user(&mut self, user_public_key: impl Into<String>, at: i64) {
        self.revocations.insert(user_public_key.into(), at);
    }

    /// A new user of this account, signed by the account key, allowed to publish and subscribe
    /// anything (`subs/data/payload: -1`; omitted means "nothing").
    pub fn issue_user(&self, name: impl Into<String>) -> Result<User, JwtError> {
        let name = name.into();
        let keypair = KeyPair::new_user();
        let claims = UserClaims {
            kind: "user",
            version: 2,
            publish: Permission {},
            subscribe: Permission {},
            subs: -1,
            data: -1,
            payload: -1,
        };
        let jwt = encode("user", &self.keypair, &keypair.public_key(), &name, &claims)?;
        Ok(User { name, keypair, jwt })
    }

    /// The account JWT, signed by `operator`, issued now.
    pub fn jwt(&self, operator: &Operator) -> Result<String, JwtError> {
        sign_account(&operator.keypair, self)
    }
}

fn sign_account(operator: &KeyPair, account: &Account) -> Result<String, JwtError> {
    // An omitted limit is 0 = nothing allowed, so every limit is spelled out.
    let (mem_storage, disk_storage, streams, consumer) = match account.spec.jetstream {
        Some(js) => (js.mem_storage, js.disk_storage, js.streams, js.consumer),
        None => (0, 0, 0, 0),
    };
    let claims = AccountClaims {
        kind: "account",
        version: 2,
        limits: AccountLimits {
            subs: -1,
            data: -1,
            payload: -1,
            imports: -1,
            exports: -1,
            wildcards: true,
            conn: -1,
            leaf: -1,
            mem_storage,
            disk_storage,
            streams,
            consumer,
        },
        default_permissions: DefaultPermissions {
            publish: Permission {},
            subscribe: Permission {},
        },
        exports: &account.spec.exports,
        imports: &account.spec.imports,
        revocations: &account.revocations,
    };
    encode(
        "account",
        operator,
        &account.public_key(),
        &account.spec.name,
        &claims,
    )
}

/// A user of an account: its key pair and JWT, ready to be written as a `.creds` file.
#[derive(Clone)]
pub struct User {
    name: String,
    keypair: KeyPair,
    jwt: String,
}

impl fmt::Debug for User {
    // The seed must never reach logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("name", &self.name)
            .field("public_key", &self.keypair.public_key())
            .finish()
    }
}

impl User {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The user's public nkey (`U…`), which revocations name.
    pub fn public_key(&self) -> String {
        self.keypair.public_key()
    }

    pub fn jwt(&self) -> &str {
        &self.jwt
    }

    /// The `.creds` file text that `async_nats::ConnectOptions::credentials_file` and the `nats`
    /// CLI read. Holds the user's seed: a secret.
    pub fn creds(&self) -> Result<String, JwtError> {
        let seed = self.keypair.seed().map_err(|source| JwtError::Seed {
            name: self.name.clone(),
            source,
        })?;
        Ok(format!(
            "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
             -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n",
            jwt = self.jwt,
        ))
    }
}

/// The trust root: an operator key pair and its system account (no JetStream).
#[derive(Clone)]
pub struct Operator {
    name: String,
    keypair: KeyPair,
    system_account: Account,
}

impl fmt::Debug for Operator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Operator")
            .field("name", &self.name)
            .field("public_key", &self.keypair.public_key())
            .field("system_account", &self.system_account)
            .finish()
    }
}

impl Operator {
    /// A new operator with a new system account named [`SYSTEM_ACCOUNT`].
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            keypair: KeyPair::new_operator(),
            system_account: Account::new(AccountSpec::new(SYSTEM_ACCOUNT).without_jetstream()),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn public_key(&self) -> String {
        self.keypair.public_key()
    }

    pub fn system_account(&self) -> &Account {
        &self.system_account
    }

    /// The self-signed operator JWT naming the system account (the server's `operator:` file).
    pub fn jwt(&self) -> Result<String, JwtError> {
        let claims = OperatorClaims {
            kind: "operator",
            version: 2,
            system_account: self.system_account.public_key(),
        };
        encode(
            "operator",
            &self.keypair,
            &self.keypair.public_key(),
            &self.name,
            &claims,
        )
    }
}

#[derive(Serialize)]
struct Claims<'a, N> {
    #[serde(skip_serializing_if = "str::is_empty")]
    jti: &'a str,
    iat: i64,
    iss: &'a str,
    name: &'a str,
    sub: &'a str,
    nats: &'a N,
}

#[derive(Serialize)]
struct OperatorClaims {
    #[serde(rename = "type")]
    kind: &'static str,
    version: u8,
    system_account: String,
}

#[derive(Serialize)]
struct AccountClaims<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    version: u8,
    limits: AccountLimits,
    default_permissions: DefaultPermissions,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    exports: &'a [Export],
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    imports: &'a [Import],
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    revocations: &'a BTreeMap<String, i64>,
}

#[derive(Serialize)]
struct AccountLimits {
    subs: i64,
    data: i64,
    payload: i64,
    imports: i64,
    exports: i64,
    wildcards: bool,
    conn: i64,
    leaf: i64,
    mem_storage: i64,
    disk_storage: i64,
    streams: i64,
    consumer: i64,
}

#[derive(Serialize)]
struct DefaultPermissions {
    #[serde(rename = "pub")]
    publish: Permission,
    #[serde(rename = "sub")]
    subscribe: Permission,
}

/// An empty allow/deny list: no restriction.
#[derive(Serialize)]
struct Permission {}

#[derive(Serialize)]
struct UserClaims {
    #[serde(rename = "type")]
    kind: &'static str,
    version: u8,
    #[serde(rename = "pub")]
    publish: Permission,
    #[serde(rename = "sub")]
    subscribe: Permission,
    subs: i64,
    data: i64,
    payload: i64,
}

/// Signs `nats` claims about `subject` with `issuer`: `b64(header).b64(claims).b64(sig)`.
fn encode<N: Serialize>(
    kind: &'static str,
    issuer: &KeyPair,
    subject: &str,
    name: &str,
    nats: &N,
) -> Result<String, JwtError> {
    let json_error = |source| JwtError::Json {
        kind,
        name: name.to_owned(),
        source,
    };
    let issuer_key = issuer.public_key();
    let mut claims = Claims {
        jti: "",
        iat: unix_now(),
        iss: &issuer_key,
        name,
        sub: subject,
        nats,
    };
    // The jti is the hash of the claims without it. It must differ whenever the content differs:
    // the full resolver skips an update whose jti equals the stored one.
    let unidentified = serde_json::to_vec(&claims).map_err(json_error)?;
    let jti = BASE32_NOPAD.encode(&Sha512_256::digest(&unidentified));
    claims.jti = &jti;
    let claims_json = serde_json::to_vec(&claims).map_err(json_error)?;

    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(HEADER),
        URL_SAFE_NO_PAD.encode(&claims_json)
    );
    let signature = issuer
        .sign(signing_input.as_bytes())
        .map_err(|source| JwtError::Sign {
            kind,
            name: name.to_owned(),
            source,
        })?;
    Ok(format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(signature)
    ))
}

/// Unix seconds now, as JWT `iat` and revocation times use.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    /// Checks the signature against `issuer` and returns the header and claims.
    fn decode(jwt: &str, issuer: &str) -> (Value, Value) {
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3, "a JWT has three parts: {jwt}");
        let signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        KeyPair::from_public_key(issuer)
            .unwrap()
            .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &signature)
            .expect("signature by the issuer");
        let header = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        let claims = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        (header, claims)
    }

    #[test]
    fn operator_jwt_is_self_signed_and_names_the_system_account() {
        let operator = Operator::new("local");
        let (header, claims) = decode(&operator.jwt().unwrap(), &operator.public_key());
        assert_eq!(header, json!({"typ": "JWT", "alg": "ed25519-nkey"}));
        assert_eq!(claims["iss"], operator.public_key());
        assert_eq!(claims["sub"], operator.public_key());
        assert_eq!(claims["name"], "local");
        assert_eq!(
            claims["nats"],
            json!({"type": "operator", "version": 2,
                   "system_account": operator.system_account().public_key()})
        );
        assert!(operator.public_key().starts_with('O'));
    }

    #[test]
    fn jti_is_the_hash_of_the_claims_without_it() {
        let operator = Operator::new("local");
        let jwt = operator.jwt().unwrap();
        let claims_b64 = jwt.split('.').nth(1).unwrap();
        let claims = String::from_utf8(URL_SAFE_NO_PAD.decode(claims_b64).unwrap()).unwrap();
        let parsed: Value = serde_json::from_str(&claims).unwrap();
        let jti = parsed["jti"].as_str().unwrap();
        let unidentified = claims.replacen(&format!(r#""jti":"{jti}","#), "", 1);
        assert_ne!(unidentified, claims, "jti comes first in the claims");
        assert_eq!(
            jti,
            BASE32_NOPAD.encode(&Sha512_256::digest(unidentified.as_bytes()))
        );
        assert_eq!(jti.len(), 52, "base32 of 32 bytes without padding");
    }

    #[test]
    fn account_jwt_spells_out_every_limit() {
        let operator = Operator::new("local");
        let account = Account::new(AccountSpec::new("acme"));
        let (_, claims) = decode(&account.jwt(&operator).unwrap(), &operator.public_key());
        assert_eq!(claims["iss"], operator.public_key());
        assert_eq!(claims["sub"], account.public_key());
        assert_eq!(claims["name"], "acme");
        assert_eq!(
            claims["nats"],
            json!({
                "type": "account", "version": 2,
                "limits": {"subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
                           "wildcards": true, "conn": -1, "leaf": -1,
                           "mem_storage": 32 * 1024 * 1024, "disk_storage": 1024 * 1024 * 1024,
                           "streams": -1, "consumer": -1},
                "default_permissions": {"pub": {}, "sub": {}}
            })
        );
    }

    #[test]
    fn system_account_has_no_jetstream() {
        let operator = Operator::new("local");
        let system = operator.system_account();
        assert_eq!(system.name(), SYSTEM_ACCOUNT);
        let (_, claims) = decode(&system.jwt(&operator).unwrap(), &operator.public_key());
        assert_eq!(claims["nats"]["limits"]["mem_storage"], 0);
        assert_eq!(claims["nats"]["limits"]["disk_storage"], 0);
    }

    #[test]
    fn aggregate_mode_exports_and_imports_encode_as_nats_jwt_v2() {
        let operator = Operator::new("local");
        let tenant = Account::new(
            AccountSpec::new("acme")
                .with_export(Export::service("$JS.API.CONSUMER.>"))
                .with_export(Export::service("$JS.FC.>"))
                .with_export(Export::stream("deliver.acme.>")),
        );
        let central = Account::new(
            AccountSpec::new("central")
                .with_import(
                    Import::service(tenant.public_key(), "$JS.API.CONSUMER.>")
                        .with_local_subject("JS.acme.API.CONSUMER.>"),
                )
                .with_import(Import::service(tenant.public_key(), "$JS.FC.>"))
                .with_import(Import::stream(tenant.public_key(), "deliver.acme.>")),
        );
        let (_, claims) = decode(&tenant.jwt(&operator).unwrap(), &operator.public_key());
        assert_eq!(
            claims["nats"]["exports"],
            json!([
                {"subject": "$JS.API.CONSUMER.>", "type": "service"},
                {"subject": "$JS.FC.>", "type": "service"},
                {"subject": "deliver.acme.>", "type": "stream"},
            ])
        );
        let (_, claims) = decode(&central.jwt(&operator).unwrap(), &operator.public_key());
        let acme = tenant.public_key();
        assert_eq!(
            claims["nats"]["imports"],
            json!([
                {"subject": "$JS.API.CONSUMER.>", "account": acme,
                 "local_subject": "JS.acme.API.CONSUMER.>", "type": "service"},
                {"subject": "$JS.FC.>", "account": acme, "type": "service"},
                {"subject": "deliver.acme.>", "account": acme, "type": "stream"},
            ])
        );
    }

    #[test]
    fn revocations_are_listed_by_user_key() {
        let operator = Operator::new("local");
        let mut account = Account::new(AccountSpec::new("acme"));
        let user = account.issue_user("alice").unwrap();
        account.revoke_user(user.public_key(), 1_700_000_000);
        let (_, claims) = decode(&account.jwt(&operator).unwrap(), &operator.public_key());
        assert_eq!(
            claims["nats"]["revocations"],
            json!({ user.public_key(): 1_700_000_000 })
        );
    }

    #[test]
    fn user_jwt_allows_everything_and_creds_have_the_standard_layout() {
        let account = Account::new(AccountSpec::new("acme"));
        let user = account.issue_user("alice").unwrap();
        let (_, claims) = decode(user.jwt(), &account.public_key());
        assert_eq!(claims["iss"], account.public_key());
        assert_eq!(claims["sub"], user.public_key());
        assert_eq!(
            claims["nats"],
            json!({"type": "user", "version": 2, "pub": {}, "sub": {},
                   "subs": -1, "data": -1, "payload": -1})
        );

        let creds = user.creds().unwrap();
        let lines: Vec<&str> = creds.lines().collect();
        assert_eq!(lines[0], "-----BEGIN NATS USER JWT-----");
        assert_eq!(lines[1], user.jwt());
        assert_eq!(lines[2], "------END NATS USER JWT------");
        assert_eq!(lines[3], "");
        assert_eq!(lines[4], "-----BEGIN USER NKEY SEED-----");
        assert!(lines[5].starts_with("SU"), "user seed: {}", lines[5]);
        assert_eq!(
            KeyPair::from_seed(lines[5]).unwrap().public_key(),
            user.public_key()
        );
        assert_eq!(lines[6], "------END USER NKEY SEED------");
        assert_eq!(lines.len(), 7);
    }

    #[test]
    fn debug_output_holds_no_seed() {
        let account = Account::new(AccountSpec::new("acme"));
        let user = account.issue_user("alice").unwrap();
        let seed = user.creds().unwrap();
        let seed_line = seed.lines().nth(5).unwrap();
        assert!(!format!("{user:?} {account:?}").contains(seed_line));
    }
}
