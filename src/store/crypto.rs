//! Destination credentials at rest: AES-256-GCM with a key derived from `aes_encryption_secret`
//! (SHA-256 of it), a random 96-bit nonce per value, and the destination's identity as
//! associated data so a sealed value copied onto another destination does not open.

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, Key, KeyInit, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};

/// Prefix of every sealed value, so the format can change later without guessing.
const FORMAT: &str = "v1:";
const NONCE_LEN: usize = 12;

pub(crate) struct CredentialCipher {
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for CredentialCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CredentialCipher(<key>)")
    }
}

impl CredentialCipher {
    pub fn new(secret: &str) -> Self {
        let key = Sha256::digest(secret.as_bytes());
        CredentialCipher {
            cipher: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&key)),
        }
    }

    /// `v1:` + base64(nonce ‖ ciphertext ‖ tag).
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Option<String> {
        let nonce: [u8; NONCE_LEN] = rand::random();
        let sealed = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .ok()?;
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Some(format!("{FORMAT}{}", STANDARD.encode(out)))
    }

    /// `None` when the value was sealed under another key, for another destination, or is
    /// not a sealed value at all.
    pub fn open(&self, aad: &[u8], sealed: &str) -> Option<Vec<u8>> {
        let raw = STANDARD.decode(sealed.strip_prefix(FORMAT)?).ok()?;
        if raw.len() < NONCE_LEN {
            return None;
        }
        let (nonce, ciphertext) = raw.split_at(NONCE_LEN);
        self.cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad,
                },
            )
            .ok()
    }
}

/// Associated data binding a sealed value to one destination.
pub(crate) fn destination_aad(tenant_id: &str, destination_id: &str) -> Vec<u8> {
    format!("jetpost/destination/{tenant_id}\0{destination_id}").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_and_opens() {
        let c = CredentialCipher::new("s3cret");
        let aad = destination_aad("t", "d");
        let sealed = c.seal(&aad, b"{\"secret\":\"whsec_x\"}").unwrap();
        assert!(sealed.starts_with("v1:"));
        assert!(!sealed.contains("whsec_x"));
        assert_eq!(c.open(&aad, &sealed).unwrap(), b"{\"secret\":\"whsec_x\"}");
        // A fresh nonce every time.
        assert_ne!(sealed, c.seal(&aad, b"{\"secret\":\"whsec_x\"}").unwrap());
    }

    #[test]
    fn wrong_key_or_other_destination_does_not_open() {
        let c = CredentialCipher::new("s3cret");
        let sealed = c.seal(&destination_aad("t", "d"), b"x").unwrap();
        assert!(
            CredentialCipher::new("other")
                .open(&destination_aad("t", "d"), &sealed)
                .is_none()
        );
        assert!(c.open(&destination_aad("t", "e"), &sealed).is_none());
        assert!(c.open(&destination_aad("t", "d"), "v1:AAAA").is_none());
        assert!(c.open(&destination_aad("t", "d"), "plain").is_none());
    }
}
