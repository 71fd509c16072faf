//! `redact`, `redact_mode` and `redact_key_file` of an `[[endpoints]]` entry: which
//! PII an endpoint must not see in clear, and whether it is dropped or replaced by
//! a keyed hash. Plain validated values; `deliver` applies them at render time.

use super::Checker;
use super::checker::read_secret_file;

/// What may be redacted. Each covers every place its value appears in an event
/// (see `deliver::redact::apply` and docs/events.md, "Redaction").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Field {
    /// The calling number and the caller's URI.
    Ani,
    /// The called number, the callee's and Request-URI, transfer targets.
    Dnis,
    /// Display names of both parties.
    DisplayName,
}

impl Field {
    /// Every name, in the order the config error lists them.
    pub const NAMES: [&'static str; 3] = ["ani", "dnis", "display_name"];

    /// The field a config name stands for.
    pub fn from_name(name: &str) -> Option<Field> {
        match name {
            "ani" => Some(Field::Ani),
            "dnis" => Some(Field::Dnis),
            "display_name" => Some(Field::DisplayName),
            _ => None,
        }
    }
}

/// What becomes of a redacted value.
#[derive(Clone, PartialEq, Eq)]
pub enum Mode {
    /// Nullable fields become `null`; the user part of a URI becomes `redacted`.
    Drop,
    /// Replaced by lowercase hex HMAC-SHA256(key, value): stable, so a receiver
    /// can still correlate calls by number without learning it.
    Hash(Vec<u8>),
}

impl std::fmt::Debug for Mode {
    // The key is a secret: it must not reach a log through a config dump.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Mode::Drop => f.write_str("Drop"),
            Mode::Hash(_) => f.write_str("Hash(<redacted key>)"),
        }
    }
}

/// Shortest HMAC key accepted (bytes): below this the key adds little to guessing.
pub const MIN_KEY_BYTES: usize = 16;

/// One endpoint's redaction: which fields, and drop or hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redaction {
    /// The fields to redact (deduplicated, sorted).
    pub fields: Vec<Field>,
    /// Drop or hash.
    pub mode: Mode,
}

/// `redact`, `redact_mode` and `redact_key_file` of endpoint `i`. A hash needs a
/// key from a file: a key written into the config would travel with every copy of it.
pub(super) fn validate_redact(
    c: &mut Checker<'_>,
    i: usize,
    names: Vec<String>,
    mode: Option<String>,
    key_file: Option<String>,
) -> Option<Redaction> {
    let mut fields = Vec::new();
    for (j, n) in names.iter().enumerate() {
        match Field::from_name(n) {
            Some(f) => fields.push(f),
            None => c.problem(
                format!("endpoints[{i}].redact[{j}]"),
                format!("unknown field \"{n}\" (valid: {})", Field::NAMES.join(", ")),
            ),
        }
    }
    fields.sort();
    fields.dedup();
    let key_file = key_file.filter(|f| !f.trim().is_empty());
    let at = |k: &str| format!("endpoints[{i}].{k}");
    if names.is_empty() {
        if mode.is_some() || key_file.is_some() {
            c.problem(
                at("redact"),
                "redact_mode and redact_key_file need a list of fields to redact".into(),
            );
        }
        return None;
    }
    let mode = match (mode.as_deref(), key_file) {
        (None | Some("drop"), None) => Mode::Drop,
        (None | Some("drop"), Some(_)) => {
            c.problem(
                at("redact_key_file"),
                "only used with redact_mode = \"hash\"".into(),
            );
            Mode::Drop
        }
        (Some("hash"), None) => {
            c.problem(
                at("redact_key_file"),
                "redact_mode = \"hash\" needs a key file (e.g. `openssl rand -hex 32`)".into(),
            );
            Mode::Drop
        }
        (Some("hash"), Some(f)) => {
            let key = read_secret_file(c, &f, &at("redact_key_file"));
            match key {
                Some(k) if k.len() >= MIN_KEY_BYTES => Mode::Hash(k.into_bytes()),
                Some(_) => {
                    c.problem(
                        at("redact_key_file"),
                        format!("the key in \"{f}\" is shorter than {MIN_KEY_BYTES} bytes"),
                    );
                    Mode::Drop
                }
                None => Mode::Drop,
            }
        }
        (Some(o), _) => {
            c.problem(
                at("redact_mode"),
                format!("\"{o}\" is not one of \"drop\", \"hash\""),
            );
            Mode::Drop
        }
    };
    (!fields.is_empty()).then_some(Redaction { fields, mode })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, ConfigError};

    #[test]
    fn redact_names_modes_and_keys_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let short = dir.path().join("short.key");
        std::fs::write(&short, "tooshort\n").unwrap();
        let good = dir.path().join("good.key");
        std::fs::write(&good, "0123456789abcdef0123\n").unwrap();
        let ep = |extra: &str| {
            format!(
                "[[endpoints]]\nname = \"crm\"\nurl = \"https://h/\"\nsecrets = [\"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"]\n{extra}\n"
            )
        };
        let problems = |extra: &str| match Config::parse(&ep(extra)) {
            Err(ConfigError::Invalid(p)) => p.iter().map(ToString::to_string).collect(),
            Ok(_) => Vec::<String>::new(),
            Err(e) => panic!("{e}"),
        };
        assert_eq!(
            problems("redact = [\"ani\", \"phone\"]"),
            ["endpoints[0].redact[1]: unknown field \"phone\" (valid: ani, dnis, display_name)"]
        );
        assert_eq!(
            problems("redact = [\"ani\"]\nredact_mode = \"hash\""),
            [
                "endpoints[0].redact_key_file: redact_mode = \"hash\" needs a key file (e.g. `openssl rand -hex 32`)"
            ]
        );
        let got = problems(&format!(
            "redact = [\"ani\"]\nredact_mode = \"hash\"\nredact_key_file = \"{}\"",
            short.display()
        ));
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got[0].ends_with("is shorter than 16 bytes"), "{got:?}");
        assert!(!got[0].contains("tooshort"), "the key was echoed");
        assert_eq!(
            problems("redact_mode = \"drop\""),
            [
                "endpoints[0].redact: redact_mode and redact_key_file need a list of fields to redact"
            ]
        );
        assert_eq!(
            problems("redact = [\"dnis\"]\nredact_mode = \"mask\""),
            ["endpoints[0].redact_mode: \"mask\" is not one of \"drop\", \"hash\""]
        );

        let c = Config::parse(&ep(&format!(
            "redact = [\"display_name\", \"ani\", \"ani\"]\nredact_mode = \"hash\"\nredact_key_file = \"{}\"",
            good.display()
        )))
        .unwrap();
        let r = c.endpoints[0].redact.as_ref().unwrap();
        assert_eq!(r.fields, [Field::Ani, Field::DisplayName]);
        assert_eq!(r.mode, Mode::Hash(b"0123456789abcdef0123".to_vec()));
        assert!(!format!("{:?}", c.endpoints[0]).contains("0123456789abcdef0123"));
        let c = Config::parse(&ep("redact = [\"dnis\"]")).unwrap();
        assert_eq!(c.endpoints[0].redact.as_ref().unwrap().mode, Mode::Drop);
        assert_eq!(Config::parse(&ep("")).unwrap().endpoints[0].redact, None);
    }
}
