//! STIR/SHAKEN: reads the PASSporT claims out of an Identity header (RFC 8224,
//! RFC 8225, RFC 8588). Decoded only, never verified: verification needs the
//! certificate chain, and a passive tap reports what the network asserted.

use base64::Engine;
use serde::Serialize;

/// The SHAKEN claims operators route and report on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StirShaken {
    /// Attestation level: "A", "B" or "C".
    pub attest: Option<String>,
    /// Opaque origination identifier of the signing provider.
    pub origid: Option<String>,
    /// Calling number as signed.
    pub orig_tn: Option<String>,
    /// First called number as signed.
    pub dest_tn: Option<String>,
    /// Always false: siphook does not verify signatures.
    pub verified: bool,
}

/// Decodes the PASSporT payload of an Identity header value, `None` when the
/// value is not a compact-form JWT with a JSON payload.
pub fn decode_identity(value: &str) -> Option<StirShaken> {
    let token = value.split(';').next()?.trim().trim_matches(['<', '>']);
    let mut parts = token.split('.');
    let (_header, payload, _sig) = (parts.next()?, parts.next()?, parts.next()?);
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&json).ok()?;
    let s = |v: &serde_json::Value| v.as_str().map(str::to_owned);
    let tn = |v: &serde_json::Value| match v {
        serde_json::Value::Array(a) => a.first().and_then(|x| x.as_str()).map(str::to_owned),
        other => other.as_str().map(str::to_owned),
    };
    Some(StirShaken {
        attest: s(&claims["attest"]),
        origid: s(&claims["origid"]),
        orig_tn: tn(&claims["orig"]["tn"]),
        dest_tn: tn(&claims["dest"]["tn"]),
        verified: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_shaken_payload() {
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(
            br#"{"attest":"A","dest":{"tn":["15551234567"]},"iat":1,"orig":{"tn":"15557654321"},"origid":"de305d54"}"#,
        );
        let v = format!(
            "eyJhbGciOiJFUzI1NiJ9.{payload}.c2ln;info=<https://cert.example/c.pem>;alg=ES256;ppt=shaken"
        );
        let got = decode_identity(&v).unwrap();
        assert_eq!(got.attest.as_deref(), Some("A"));
        assert_eq!(got.orig_tn.as_deref(), Some("15557654321"));
        assert_eq!(got.dest_tn.as_deref(), Some("15551234567"));
        assert_eq!(got.origid.as_deref(), Some("de305d54"));
        assert!(!got.verified);
        assert_eq!(decode_identity("garbage"), None);
        assert_eq!(decode_identity("a.!!!.c"), None);
    }
}
