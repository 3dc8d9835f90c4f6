//! Webhook signatures and signing secrets: Outpost's default `v0=<hex>` scheme, Standard
//! Webhooks' `v1,<base64>` scheme, which secrets sign during a rotation, and generating a
//! secret for a destination created without one. Pure: no I/O besides the random generator.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

use crate::config::{Secret, WebhookMode};

type HmacSha256 = Hmac<Sha256>;

/// Prefix of Standard Webhooks secrets (and of Outpost's generated default-mode secrets).
pub const SECRET_PREFIX: &str = "whsec_";

/// Random bytes in a generated secret (both modes, as Outpost: 256 bits).
const GENERATED_SECRET_BYTES: usize = 32;

/// A webhook destination's signing credentials (Outpost's `credentials` object).
/// Debug hides the secrets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebhookCredentials {
    /// Current secret; empty means "no signature header" (Outpost always generates one).
    pub secret: Secret,
    /// The secret before the last rotation; it keeps signing until `previous_secret_invalid_at`.
    pub previous_secret: Option<Secret>,
    pub previous_secret_invalid_at: Option<DateTime<Utc>>,
}

impl WebhookCredentials {
    /// Credentials with only a current secret.
    pub fn new(secret: impl Into<Secret>) -> Self {
        WebhookCredentials {
            secret: secret.into(),
            previous_secret: None,
            previous_secret_invalid_at: None,
        }
    }

    /// The secrets that sign a request sent at `now`, newest first: the current one, then the
    /// previous one while `now < previous_secret_invalid_at`. A previous secret without an
    /// expiry does not sign: Outpost always stores one (24 h after rotation by default), so a
    /// missing expiry means a broken record, and signing with it forever would be the worse
    /// failure.
    pub fn signing_secrets(&self, now: DateTime<Utc>) -> Vec<&str> {
        let mut secrets = Vec::with_capacity(2);
        if !self.secret.is_empty() {
            secrets.push(self.secret.expose());
        }
        if let (Some(previous), Some(invalid_at)) =
            (&self.previous_secret, self.previous_secret_invalid_at)
            && !previous.is_empty()
            && now < invalid_at
        {
            secrets.push(previous.expose());
        }
        secrets
    }
}

/// A secret that cannot be used in Standard Webhooks mode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("a Standard Webhooks secret must start with \"whsec_\" followed by base64")]
    MissingPrefix,
    #[error("a Standard Webhooks secret has nothing after \"whsec_\"; generate a new secret")]
    Empty,
    #[error("the part of a Standard Webhooks secret after \"whsec_\" is not valid base64")]
    NotBase64,
}

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC takes keys of any length; new_from_slice cannot fail for it.
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// Outpost default mode: `hex(HMAC-SHA256(secret, body))`, the secret's bytes used as they
/// are (a `whsec_…` secret is NOT decoded in this mode).
pub fn sign_default(secret: &str, body: &[u8]) -> String {
    hex::encode(hmac_sha256(secret.as_bytes(), &[body]))
}

/// Outpost default mode header value: `v0=<sig>[,<sig>…]`, one signature per secret in
/// `secrets` (newest first). `None` when there is no secret to sign with.
pub fn default_signature_header(secrets: &[&str], body: &[u8]) -> Option<String> {
    if secrets.is_empty() {
        return None;
    }
    let signatures: Vec<String> = secrets.iter().map(|s| sign_default(s, body)).collect();
    Some(format!("v0={}", signatures.join(",")))
}

/// The HMAC key of a Standard Webhooks secret: the base64-decoded part after `whsec_`.
pub fn parse_standard_secret(secret: &str) -> Result<Vec<u8>, SecretError> {
    let encoded = secret
        .strip_prefix(SECRET_PREFIX)
        .ok_or(SecretError::MissingPrefix)?;
    if encoded.is_empty() {
        return Err(SecretError::Empty);
    }
    BASE64.decode(encoded).map_err(|_| SecretError::NotBase64)
}

/// Standard Webhooks: `base64(HMAC-SHA256(key, "<msg_id>.<timestamp>.<body>"))`.
pub fn sign_standard(key: &[u8], msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    let timestamp = timestamp.to_string();
    BASE64.encode(hmac_sha256(
        key,
        &[msg_id.as_bytes(), b".", timestamp.as_bytes(), b".", body],
    ))
}

/// Standard Webhooks header value: `v1,<sig>[ v1,<sig>…]`, one per key (newest first).
/// `None` when there is no key.
pub fn standard_signature_header(
    keys: &[Vec<u8>],
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> Option<String> {
    if keys.is_empty() {
        return None;
    }
    let signatures: Vec<String> = keys
        .iter()
        .map(|key| format!("v1,{}", sign_standard(key, msg_id, timestamp, body)))
        .collect();
    Some(signatures.join(" "))
}

/// A new signing secret for a destination created without one, in Outpost's format for the
/// mode: default mode `whsec_<64 hex chars>` (used as-is as the HMAC key), standard mode
/// `whsec_<base64 of 32 random bytes>`.
pub fn generate_secret(mode: WebhookMode) -> Secret {
    let mut bytes = [0u8; GENERATED_SECRET_BYTES];
    rand::rng().fill_bytes(&mut bytes);
    let encoded = match mode {
        WebhookMode::Default => hex::encode(bytes),
        WebhookMode::Standard => BASE64.encode(bytes),
    };
    Secret::new(format!("{SECRET_PREFIX}{encoded}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    // Vectors computed independently with Python's hmac/hashlib/base64; the Standard Webhooks
    // one is the example published with the specification.
    const BODY: &[u8] = br#"{"hello":"world"}"#;
    const CURRENT_SIG: &str = "07ea4d7892d3dc4bae220d9930afa38c458a997b2f716a0a6159e17798be1d28";
    const PREVIOUS_SIG: &str = "4b9e2eae245a1336ed30f51ee5761ec024bb2e7052b7a335573af0e38ec44f3f";
    const STD_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const STD_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const STD_TS: i64 = 1_614_265_330;
    const STD_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const STD_SIG: &str = "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn at(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(secs, 0).unwrap()
    }

    fn rotated(invalid_at: i64) -> WebhookCredentials {
        WebhookCredentials {
            secret: Secret::new("whsec_test"),
            previous_secret: Some(Secret::new("old-secret")),
            previous_secret_invalid_at: Some(at(invalid_at)),
        }
    }

    #[test]
    fn default_signature_is_hex_hmac_of_the_body_keyed_with_the_secret_as_is() {
        assert_eq!(sign_default("whsec_test", BODY), CURRENT_SIG);
        assert_eq!(
            default_signature_header(&["whsec_test"], BODY).unwrap(),
            format!("v0={CURRENT_SIG}")
        );
    }

    #[test]
    fn default_header_lists_the_previous_signature_after_a_comma_while_it_is_valid() {
        let creds = rotated(1_000);
        let secrets = creds.signing_secrets(at(999));
        assert_eq!(secrets, ["whsec_test", "old-secret"]);
        assert_eq!(
            default_signature_header(&secrets, BODY).unwrap(),
            format!("v0={CURRENT_SIG},{PREVIOUS_SIG}")
        );
    }

    #[test]
    fn previous_secret_stops_signing_at_its_invalid_at() {
        let creds = rotated(1_000);
        assert_eq!(creds.signing_secrets(at(1_000)), ["whsec_test"]);
        assert_eq!(creds.signing_secrets(at(5_000)), ["whsec_test"]);
    }

    #[test]
    fn previous_secret_without_expiry_does_not_sign() {
        let creds = WebhookCredentials {
            previous_secret_invalid_at: None,
            ..rotated(0)
        };
        assert_eq!(creds.signing_secrets(at(0)), ["whsec_test"]);
    }

    #[test]
    fn no_secret_means_no_signature_header() {
        let creds = WebhookCredentials::default();
        assert!(creds.signing_secrets(at(0)).is_empty());
        assert_eq!(default_signature_header(&[], BODY), None);
        assert_eq!(standard_signature_header(&[], "id", 0, BODY), None);
    }

    #[test]
    fn standard_signature_matches_the_specification_example() {
        let key = parse_standard_secret(STD_SECRET).unwrap();
        assert_eq!(sign_standard(&key, STD_ID, STD_TS, STD_BODY), STD_SIG);
        assert_eq!(
            standard_signature_header(&[key], STD_ID, STD_TS, STD_BODY).unwrap(),
            format!("v1,{STD_SIG}")
        );
    }

    #[test]
    fn standard_header_is_space_separated_during_rotation() {
        let current = parse_standard_secret(STD_SECRET).unwrap();
        let previous = parse_standard_secret("whsec_c2Vjb25k").unwrap();
        assert_eq!(previous, b"second");
        assert_eq!(
            standard_signature_header(&[current, previous], STD_ID, STD_TS, STD_BODY).unwrap(),
            format!("v1,{STD_SIG} v1,WWQQXy0Z7arKJ9d3BF9mEO8o7FPlQSx373J1Xt8Puqw=")
        );
    }

    #[test]
    fn standard_secrets_need_the_prefix_and_base64() {
        assert_eq!(
            parse_standard_secret("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
            Err(SecretError::MissingPrefix)
        );
        assert_eq!(parse_standard_secret("whsec_"), Err(SecretError::Empty));
        assert_eq!(
            parse_standard_secret("whsec_not base64!"),
            Err(SecretError::NotBase64)
        );
    }

    #[test]
    fn generated_secrets_follow_outposts_formats_and_differ() {
        let default = generate_secret(WebhookMode::Default);
        let hex_part = default.expose().strip_prefix("whsec_").unwrap();
        assert_eq!(hex_part.len(), 64);
        assert!(hex_part.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(default, generate_secret(WebhookMode::Default));

        let standard = generate_secret(WebhookMode::Standard);
        assert_eq!(parse_standard_secret(standard.expose()).unwrap().len(), 32);
        assert_ne!(standard, generate_secret(WebhookMode::Standard));
    }

    #[test]
    fn debug_output_hides_secrets() {
        let shown = format!("{:?}", rotated(0));
        assert!(!shown.contains("whsec_test"), "{shown}");
        assert!(!shown.contains("old-secret"), "{shown}");
    }
}
