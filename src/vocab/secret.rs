//! Secrets: the webhook signing key, tokens and passwords, and how a presented one
//! is compared. None of them ever shows in a log, an error or a metric, so their
//! `Debug` says only that they are there.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};

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

    /// The key bytes, for the one room that signs with them.
    pub(crate) fn key(&self) -> &[u8] {
        &self.0
    }
}

/// A string that must never reach a log line: tokens and passwords.
#[derive(Clone, PartialEq, Eq)]
pub struct Redacted(pub String);

impl std::fmt::Debug for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Compares a presented secret with the configured one in constant time: both are
/// hashed first, so neither the length nor the first differing byte shows in the
/// time taken.
pub fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    let (a, b) = (Sha256::digest(given), Sha256::digest(expected));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whsec_secrets_are_checked_and_debug_hides_keys() {
        let a = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
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
