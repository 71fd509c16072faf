//! Per-endpoint PII redaction (`redact = [...]` on an `[[endpoints]]` entry).
//!
//! The outbox keeps every event complete; what an endpoint may see is decided here,
//! at render time and before signing, so the signature covers exactly the body the
//! receiver gets and one stored event can go out differently to two endpoints.
//! A hashed value is a keyed HMAC-SHA256, never a plain digest: the space of phone
//! numbers is small enough to enumerate, so an unkeyed hash would be reversible.

use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha2::Sha256;

use crate::config::redact::{Field, Mode, Redaction};

/// What the user part of a URI becomes when dropped.
pub const DROPPED_USER: &str = "redacted";

/// Redacts an event (or a `webhook.test`, which has nothing to redact) in place.
/// Fields absent from `event` are left absent: only present values change.
pub fn apply(redaction: &Redaction, event: &mut Value) {
    let has = |f: Field| redaction.fields.contains(&f);
    let (ani, dnis, names) = (has(Field::Ani), has(Field::Dnis), has(Field::DisplayName));
    let mode = &redaction.mode;
    if let Some(call) = event.get_mut("call") {
        for (party, on) in [("from", ani), ("to", dnis)] {
            if let Some(p) = call.get_mut(party) {
                if on {
                    scalar(mode, p.get_mut("user"));
                    uri(mode, p.get_mut("uri"));
                }
                if names {
                    scalar(mode, p.get_mut("display_name"));
                }
            }
        }
        if ani {
            scalar(mode, call.get_mut("ani"));
        }
        if dnis {
            scalar(mode, call.get_mut("dnis"));
        }
    }
    let Some(data) = event.get_mut("data") else {
        return;
    };
    if dnis {
        // call.initiated: where the INVITE was sent; call.transferred: where the
        // call went, a called party too.
        uri(mode, data.get_mut("request_uri"));
        uri(mode, data.get_mut("target"));
    }
    // Referred-By is the transferor, one of the two parties: hidden when either is.
    if ani || dnis {
        uri(mode, data.get_mut("referred_by"));
    }
    if let Some(claims) = data.get_mut("stir_shaken") {
        if ani {
            scalar(mode, claims.get_mut("orig_tn"));
        }
        if dnis {
            scalar(mode, claims.get_mut("dest_tn"));
        }
    }
}

/// A nullable string: `null` when dropped, its keyed hash when hashed.
fn scalar(mode: &Mode, v: Option<&mut Value>) {
    let Some(v) = v else { return };
    let Value::String(s) = v else { return };
    *v = match mode {
        Mode::Drop => Value::Null,
        Mode::Hash(key) => Value::String(hmac_hex(key, s)),
    };
}

/// A URI string: only its user part changes, so it stays a non-empty URI and
/// the host (equipment, not a person) still tells where the call went.
fn uri(mode: &Mode, v: Option<&mut Value>) {
    let Some(Value::String(s)) = v else { return };
    let Some((range, user)) = user_part(s) else {
        return;
    };
    let token = match mode {
        Mode::Drop => DROPPED_USER.to_owned(),
        Mode::Hash(key) => hmac_hex(key, user),
    };
    s.replace_range(range, &token);
}

/// Lowercase hex of HMAC-SHA256(key, value): what a receiver computes to match a
/// number it already knows.
pub fn hmac_hex(key: &[u8], value: &str) -> String {
    // HMAC takes keys of any length, so construction cannot fail.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        unreachable!("HMAC takes keys of any length")
    };
    mac.update(value.as_bytes());
    let digest = mac.finalize().into_bytes();
    let mut out = String::with_capacity(64);
    for b in digest.iter() {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The byte range to replace in a URI, and the user it holds (what the event's
/// `user` field shows, so a hashed URI and a hashed `user` agree).
///
/// - `sip:`/`sips:`: all of the userinfo before `@` (user, its parameters and any
///   password); the value hashed is the user alone, as [`crate::sip::addr::uri_user`]
///   reads it.
/// - `tel:`: the number, up to its parameters.
/// - any other scheme (or none): everything after the scheme, since siphook cannot
///   tell which part names a person.
fn user_part(uri: &str) -> Option<(std::ops::Range<usize>, &str)> {
    let Some((scheme, rest)) = uri.split_once(':') else {
        return (!uri.is_empty()).then_some((0..uri.len(), uri));
    };
    let start = scheme.len() + 1;
    if scheme.eq_ignore_ascii_case("sip") || scheme.eq_ignore_ascii_case("sips") {
        let (userinfo, _) = rest.split_once('@')?;
        let user = crate::sip::addr::uri_user(uri)?;
        (!userinfo.is_empty()).then_some((start..start + userinfo.len(), user))
    } else if scheme.eq_ignore_ascii_case("tel") {
        let user = crate::sip::addr::uri_user(uri)?;
        Some((start..start + user.len(), user))
    } else {
        (!rest.is_empty()).then_some((start..uri.len(), rest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn hashing(fields: &[Field]) -> Redaction {
        Redaction {
            fields: fields.to_vec(),
            mode: Mode::Hash(b"0123456789abcdef".to_vec()),
        }
    }

    #[test]
    fn hmac_matches_rfc_4231_case_2() {
        // RFC 4231 test case 2: key "Jefe".
        assert_eq!(
            hmac_hex(b"Jefe", "what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn uri_user_parts() {
        let cases = [
            ("sip:+1555@h;user=phone", "sip:X@h;user=phone", "+1555"),
            ("sips:alice:pw@h", "sips:X@h", "alice"),
            ("sip:+1555;npdi@h", "sip:X@h", "+1555"),
            ("tel:+1555;npdi", "tel:X;npdi", "+1555"),
            ("urn:service:sos", "urn:X", "service:sos"),
            ("+1555", "X", "+1555"),
        ];
        for (uri, want, user) in cases {
            let (range, u) = user_part(uri).unwrap();
            assert_eq!(u, user, "{uri}");
            let mut s = uri.to_owned();
            s.replace_range(range, "X");
            assert_eq!(s, want, "{uri}");
        }
        // Nothing names a person: nothing to replace.
        assert_eq!(user_part("sip:10.0.0.1:5060"), None);
        assert_eq!(user_part("sip:@h"), None);
    }

    #[test]
    fn drop_covers_every_place_and_keeps_the_shape() {
        let mut e = json!({
            "call": {
                "from": {"uri": "sip:+1@a", "user": "+1", "display_name": "Alice", "tag": "t"},
                "to": {"uri": "tel:+2", "user": "+2", "display_name": null, "tag": null},
                "ani": "+1", "dnis": "+2", "sip_call_id": "c@h"
            },
            "data": {"request_uri": "sip:+2@b", "stir_shaken": {"orig_tn": "1", "dest_tn": "2", "attest": "A"}}
        });
        let drop_all = Redaction {
            fields: vec![Field::Ani, Field::Dnis, Field::DisplayName],
            mode: Mode::Drop,
        };
        apply(&drop_all, &mut e);
        assert_eq!(
            e,
            json!({
                "call": {
                    "from": {"uri": "sip:redacted@a", "user": null, "display_name": null, "tag": "t"},
                    "to": {"uri": "tel:redacted", "user": null, "display_name": null, "tag": null},
                    "ani": null, "dnis": null, "sip_call_id": "c@h"
                },
                "data": {"request_uri": "sip:redacted@b", "stir_shaken": {"orig_tn": null, "dest_tn": null, "attest": "A"}}
            })
        );
    }

    #[test]
    fn hashing_only_the_ani_leaves_the_callee_and_agrees_across_fields() {
        let mut e = json!({
            "call": {
                "from": {"uri": "sip:+1@a", "user": "+1", "display_name": "Alice"},
                "to": {"uri": "sip:+2@b", "user": "+2", "display_name": "Bob"},
                "ani": "+1", "dnis": "+2"
            },
            "data": {"kind": "blind", "target": "sip:+3@b", "referred_by": "sip:+2@b"}
        });
        apply(&hashing(&[Field::Ani]), &mut e);
        let h = hmac_hex(b"0123456789abcdef", "+1");
        assert_eq!(e["call"]["ani"], h.as_str());
        assert_eq!(e["call"]["from"]["user"], h.as_str());
        assert_eq!(e["call"]["from"]["uri"], format!("sip:{h}@a"));
        assert_eq!(e["call"]["from"]["display_name"], "Alice");
        assert_eq!(
            e["call"]["to"],
            json!({"uri": "sip:+2@b", "user": "+2", "display_name": "Bob"})
        );
        assert_eq!(e["call"]["dnis"], "+2");
        assert_eq!(e["data"]["target"], "sip:+3@b");
        let h2 = hmac_hex(b"0123456789abcdef", "+2");
        assert_eq!(e["data"]["referred_by"], format!("sip:{h2}@b"));
    }

    #[test]
    fn a_test_event_has_nothing_to_redact() {
        let original =
            json!({"id": "evt_test_1", "type": "webhook.test", "data": {"endpoint": "crm"}});
        let mut e = original.clone();
        apply(
            &hashing(&[Field::Ani, Field::Dnis, Field::DisplayName]),
            &mut e,
        );
        assert_eq!(e, original);
    }
}
