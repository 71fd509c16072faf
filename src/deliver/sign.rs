//! Standard Webhooks v1 signatures: `webhook-signature: v1,<base64 HMAC-SHA256>` over
//! `"{id}.{timestamp}.{body}"`, one per secret so receivers can rotate secrets
//! without a flag day.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// A webhook signing key. Its `Debug` never shows the key: secrets stay out of
/// logs and errors.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl PartialEq for Secret {
    fn eq(&self, other: &Secret) -> bool {
        self.0 == other.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(redacted)")
    }
}

/// Why a configured secret is unusable. Never contains the secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// Not of the form `whsec_<base64>`.
    #[error("secret must start with \"whsec_\"")]
    Prefix,
    /// The part after `whsec_` is not base64.
    #[error("secret is not valid base64 after \"whsec_\"")]
    Base64,
    /// The spec asks for 24 to 64 random bytes.
    #[error("secret must decode to 24..=64 bytes, got {0}")]
    Length(usize),
}

impl Secret {
    /// Parses a `whsec_…` secret; the key is the base64-decoded remainder.
    pub fn parse(text: &str) -> Result<Secret, SecretError> {
        let b64 = text
            .trim()
            .strip_prefix("whsec_")
            .ok_or(SecretError::Prefix)?;
        let key = STANDARD.decode(b64).map_err(|_| SecretError::Base64)?;
        if !(24..=64).contains(&key.len()) {
            return Err(SecretError::Length(key.len()));
        }
        Ok(Secret(key))
    }

    fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        // HMAC accepts keys of any length, so construction cannot fail.
        let mut mac = match Hmac::<Sha256>::new_from_slice(&self.0) {
            Ok(m) => m,
            Err(_) => unreachable!("HMAC takes keys of any length"),
        };
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

/// The `webhook-signature` header value: one `v1,` signature per secret,
/// space-separated.
pub fn signature_header(secrets: &[Secret], id: &str, timestamp: i64, body: &[u8]) -> String {
    secrets
        .iter()
        .map(|s| s.sign(id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test vector published with the Standard Webhooks reference libraries.
    #[test]
    fn spec_test_vector() {
        let secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let sig = signature_header(
            &[secret],
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn rotation_signs_with_every_secret_and_debug_hides_keys() {
        let a = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let b = Secret::parse("whsec_QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQQ==").unwrap();
        let sig = signature_header(&[a.clone(), b], "id", 1, b"{}");
        let parts: Vec<&str> = sig.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert!(parts.iter().all(|p| p.starts_with("v1,")));
        assert_ne!(parts[0], parts[1]);
        assert_eq!(format!("{a:?}"), "Secret(redacted)");
        assert_eq!(
            Secret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap_err(),
            SecretError::Prefix
        );
        assert_eq!(Secret::parse("whsec_!!").unwrap_err(), SecretError::Base64);
        assert_eq!(
            Secret::parse("whsec_AAAA").unwrap_err(),
            SecretError::Length(3)
        );
    }
}
