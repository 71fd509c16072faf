//! Small parsers for the header values the tracker reads: name-addr (From, To,
//! P-Asserted-Identity, Referred-By, Refer-To), Replaces (RFC 3891) and Reason
//! (RFC 3326). They are lenient: a field they cannot read becomes `None`.

use serde::{Deserialize, Serialize};

/// A party as it appears in From/To/P-Asserted-Identity.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NameAddr {
    /// The URI without angle brackets and without header parameters.
    pub uri: String,
    /// User part of a sip/sips URI, or the number of a tel URI.
    pub user: Option<String>,
    /// Display name, unquoted; `None` when absent or empty.
    pub display_name: Option<String>,
    /// The `tag` header parameter, which identifies a dialog's side.
    pub tag: Option<String>,
}

impl NameAddr {
    /// Parses the first entry of a name-addr / addr-spec header value.
    pub fn parse(value: &str) -> Option<NameAddr> {
        let (display_name, uri, params) = split_name_addr(value)?;
        let uri = uri.trim();
        if uri.is_empty() {
            return None;
        }
        let tag = param(params, "tag").map(str::to_owned);
        Some(NameAddr {
            user: uri_user(uri).map(str::to_owned),
            uri: uri.to_owned(),
            display_name,
            tag,
        })
    }
}

/// Splits `"Name" <uri>;params` into its three parts. Header parameters of an
/// addr-spec without brackets start at the first `;` (RFC 3261 §20.10).
fn split_name_addr(value: &str) -> Option<(Option<String>, &str, &str)> {
    let value = value.trim();
    let (display, rest) = if let Some(quoted) = value.strip_prefix('"') {
        let (name, after) = read_quoted(quoted)?;
        (Some(name), after.trim_start())
    } else if let Some(lt) = value.find('<') {
        let name = value[..lt].trim();
        ((!name.is_empty()).then(|| name.to_owned()), &value[lt..])
    } else {
        (None, value)
    };
    let display = display.filter(|d| !d.is_empty());
    if let Some(inner) = rest.strip_prefix('<') {
        let gt = inner.find('>')?;
        Some((display, &inner[..gt], &inner[gt + 1..]))
    } else {
        // An addr-spec ends at the first comma too (a second entry follows).
        let end = rest.find(',').unwrap_or(rest.len());
        let rest = &rest[..end];
        match rest.find(';') {
            Some(semi) => Some((display, &rest[..semi], &rest[semi..])),
            None => Some((display, rest, "")),
        }
    }
}

/// Reads a quoted-string body (after the opening quote); returns the unescaped
/// text and what follows the closing quote.
fn read_quoted(s: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => {
                let (_, next) = chars.next()?;
                out.push(next);
            }
            '"' => return Some((out.trim().to_owned(), &s[i + 1..])),
            _ => out.push(c),
        }
    }
    None
}

/// The value of `;name=value` in a parameter list (case-insensitive name).
pub fn param<'a>(params: &'a str, name: &str) -> Option<&'a str> {
    params.split(';').find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().trim_matches('"'))
    })
}

/// User part of a URI: `sip:+1555@h` → `+1555`, `tel:+1555;npdi` → `+1555`.
pub fn uri_user(uri: &str) -> Option<&str> {
    let (scheme, rest) = uri.split_once(':')?;
    let user = if scheme.eq_ignore_ascii_case("tel") {
        rest.split([';', '?']).next()?
    } else if scheme.eq_ignore_ascii_case("sip") || scheme.eq_ignore_ascii_case("sips") {
        let (userinfo, _) = rest.split_once('@')?;
        // user may carry telephone-subscriber params (`+1555;npdi`) or a password.
        userinfo.split([';', ':']).next()?
    } else {
        return None;
    };
    (!user.is_empty()).then_some(user)
}

/// The Replaces header (RFC 3891), also found URL-escaped inside a Refer-To URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replaces {
    /// Call-ID of the dialog to replace.
    pub call_id: String,
    /// Tag of the side that receives the replacing INVITE.
    pub to_tag: String,
    /// Tag of the other side.
    pub from_tag: String,
}

impl Replaces {
    /// Parses `callid;to-tag=a;from-tag=b[;early-only]`.
    pub fn parse(value: &str) -> Option<Replaces> {
        let value = value.trim();
        let (call_id, params) = value.split_once(';')?;
        Some(Replaces {
            call_id: call_id.trim().to_owned(),
            to_tag: param(params, "to-tag")?.to_owned(),
            from_tag: param(params, "from-tag")?.to_owned(),
        })
    }
}

/// A Refer-To value split into its target and embedded Replaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferTo {
    /// The transfer target URI without its `?headers` part.
    pub target: String,
    /// Present for attended transfers (RFC 3891 §6.1).
    pub replaces: Option<Replaces>,
}

impl ReferTo {
    /// Parses `<sip:c@h?Replaces=id%3Bto-tag%3Da%3Bfrom-tag%3Db>`.
    pub fn parse(value: &str) -> Option<ReferTo> {
        let (_, uri, _) = split_name_addr(value)?;
        let (target, headers) = match uri.split_once('?') {
            Some((t, h)) => (t, h),
            None => (uri, ""),
        };
        let replaces = headers.split('&').find_map(|h| {
            let (k, v) = h.split_once('=')?;
            if !k.eq_ignore_ascii_case("replaces") {
                return None;
            }
            Replaces::parse(&percent_decode(v))
        });
        Some(ReferTo {
            target: target.trim().to_owned(),
            replaces,
        })
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = s.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What the Reason header (RFC 3326) says about why a call ended.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Reason {
    /// ITU-T Q.850 cause value, from the `Q.850` entry.
    pub q850_cause: Option<u16>,
    /// `text` of the Q.850 entry, else of the SIP entry.
    pub text: Option<String>,
}

impl Reason {
    /// Folds every Reason value of a message into one (several may be present).
    pub fn merge(&mut self, value: &str) {
        for entry in split_outside_quotes(value, ',') {
            let (protocol, params) = entry.split_once(';').unwrap_or((entry, ""));
            let is_q850 = protocol.trim().eq_ignore_ascii_case("Q.850");
            let cause = param(params, "cause").and_then(|c| c.parse::<u16>().ok());
            let text = quoted_param(params, "text");
            if is_q850 {
                if self.q850_cause.is_none() {
                    self.q850_cause = cause;
                }
                if text.is_some() {
                    self.text = text;
                }
            } else if self.text.is_none() {
                self.text = text;
            }
        }
    }
}

/// A parameter value that may be a quoted string containing `;` or `,`.
fn quoted_param(params: &str, name: &str) -> Option<String> {
    let lower = params.to_ascii_lowercase();
    let key = format!("{name}=");
    let mut idx = 0;
    while let Some(pos) = lower[idx..].find(&key) {
        let at = idx + pos;
        let before_ok = lower[..at].trim_end().ends_with(';');
        let rest = params[at + key.len()..].trim_start();
        if before_ok {
            return match rest.strip_prefix('"') {
                Some(q) => read_quoted(q).map(|(t, _)| t),
                None => Some(rest.split(';').next().unwrap_or("").trim().to_owned()),
            }
            .filter(|t| !t.is_empty());
        }
        idx = at + key.len();
    }
    None
}

/// Splits on `sep` except inside double quotes.
pub fn split_outside_quotes(s: &str, sep: char) -> impl Iterator<Item = &str> {
    let mut parts = Vec::new();
    let mut in_quotes = false;
    let mut escaped = false;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_quotes => escaped = true,
            '"' => in_quotes = !in_quotes,
            c if c == sep && !in_quotes => {
                parts.push(s[start..i].trim());
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(s[start..].trim());
    parts.into_iter().filter(|p| !p.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_addr_forms() {
        let a = NameAddr::parse(
            r#""Alice \"A\" Smith" <sip:+15557654321@10.0.0.1;user=phone>;tag=abc"#,
        )
        .unwrap();
        assert_eq!(a.display_name.as_deref(), Some(r#"Alice "A" Smith"#));
        assert_eq!(a.uri, "sip:+15557654321@10.0.0.1;user=phone");
        assert_eq!(a.user.as_deref(), Some("+15557654321"));
        assert_eq!(a.tag.as_deref(), Some("abc"));

        let b = NameAddr::parse("sip:bob@h;tag=9").unwrap();
        assert_eq!((b.uri.as_str(), b.tag.as_deref()), ("sip:bob@h", Some("9")));
        assert_eq!(b.display_name, None);

        let c = NameAddr::parse("Bob <tel:+15551234567;npdi>").unwrap();
        assert_eq!(c.user.as_deref(), Some("+15551234567"));
        assert_eq!(c.display_name.as_deref(), Some("Bob"));
        assert_eq!(c.tag, None);

        assert_eq!(NameAddr::parse("<sip:h>").unwrap().user, None);
        assert_eq!(NameAddr::parse("\"unterminated <sip:a@h>"), None);
        assert_eq!(NameAddr::parse(""), None);
    }

    #[test]
    fn refer_to_with_replaces() {
        let r = ReferTo::parse(
            "<sip:carol@h?Replaces=abc%40host%3Bto-tag%3D7%3Bfrom-tag%3D8&Require=replaces>",
        )
        .unwrap();
        assert_eq!(r.target, "sip:carol@h");
        assert_eq!(
            r.replaces,
            Some(Replaces {
                call_id: "abc@host".into(),
                to_tag: "7".into(),
                from_tag: "8".into()
            })
        );
        assert_eq!(ReferTo::parse("sip:c@h").unwrap().replaces, None);
    }

    #[test]
    fn reason_prefers_q850() {
        let mut r = Reason::default();
        r.merge(r#"SIP;cause=200;text="Call completed; elsewhere", Q.850;cause=16;text="Normal call clearing""#);
        assert_eq!(r.q850_cause, Some(16));
        assert_eq!(r.text.as_deref(), Some("Normal call clearing"));
        let mut r = Reason::default();
        r.merge(r#"SIP;cause=200;text="Call completed; elsewhere""#);
        assert_eq!(r.q850_cause, None);
        assert_eq!(r.text.as_deref(), Some("Call completed; elsewhere"));
    }
}
