//! The checker every section validates with: it collects problems with their key
//! paths instead of stopping at the first, and reads the value kinds the file uses
//! (addresses, durations, sizes, counts, secrets kept in files).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::Deserialize;

use super::Problem;

/// A duration as the file writes it ("32s"). A type of its own only so that a
/// value of the wrong type (a bare `32`) is told a duration string is wanted,
/// not just "expected a string".
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(super) struct DurationText(pub(super) String);

impl<'de> Deserialize<'de> for DurationText {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = DurationText;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a duration string with a unit, such as \"32s\" or \"250ms\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<DurationText, E> {
                Ok(DurationText(v.to_owned()))
            }
        }
        d.deserialize_str(Visitor)
    }
}

/// Collects problems while turning raw strings into typed values.
pub(super) struct Checker<'a> {
    pub(super) problems: &'a mut Vec<Problem>,
}

impl Checker<'_> {
    pub(super) fn problem(&mut self, path: impl Into<String>, message: String) {
        self.problems.push(Problem {
            path: path.into(),
            message,
        });
    }

    /// A list of IP addresses (no ports).
    pub(super) fn ips(&mut self, path: &str, raw: Option<Vec<String>>) -> Vec<IpAddr> {
        raw.unwrap_or_default()
            .iter()
            .enumerate()
            .filter_map(|(i, ip)| match ip.trim().parse() {
                Ok(ip) => Some(ip),
                Err(_) => {
                    self.problem(
                        format!("{path}[{i}]"),
                        format!("invalid IP address \"{ip}\""),
                    );
                    None
                }
            })
            .collect()
    }

    pub(super) fn addrs(
        &mut self,
        path: &str,
        raw: Option<Vec<String>>,
        default: Vec<SocketAddr>,
    ) -> Vec<SocketAddr> {
        let Some(raw) = raw else { return default };
        let mut out = Vec::with_capacity(raw.len());
        for (i, s) in raw.iter().enumerate() {
            match s.parse::<SocketAddr>() {
                Ok(a) if out.contains(&a) => {
                    self.problem(format!("{path}[{i}]"), format!("duplicate address \"{s}\""))
                }
                Ok(a) => out.push(a),
                Err(_) => self.problem(
                    format!("{path}[{i}]"),
                    format!("invalid socket address \"{s}\""),
                ),
            }
        }
        out
    }

    pub(super) fn duration(
        &mut self,
        path: &str,
        raw: Option<DurationText>,
        default: Duration,
        min: Duration,
    ) -> Duration {
        let Some(DurationText(s)) = raw else {
            return default;
        };
        match humantime::parse_duration(s.trim()) {
            Ok(d) if d < min => {
                self.problem(
                    path,
                    format!(
                        "\"{s}\" is shorter than the minimum {}",
                        humantime::format_duration(min)
                    ),
                );
                default
            }
            Ok(d) => d,
            Err(_) => {
                self.problem(
                    path,
                    format!(
                        "invalid duration \"{s}\" (use e.g. \"250ms\", \"32s\", \"3m\", \"4h\")"
                    ),
                );
                default
            }
        }
    }

    pub(super) fn size(
        &mut self,
        path: &str,
        raw: Option<String>,
        default: usize,
        range: (usize, usize),
    ) -> usize {
        let Some(s) = raw else { return default };
        match parse_size(&s) {
            Some(n) if n >= range.0 && n <= range.1 => n,
            Some(_) => {
                self.problem(
                    path,
                    format!("\"{s}\" is outside {} to {} bytes", range.0, range.1),
                );
                default
            }
            None => {
                self.problem(
                    path,
                    format!("invalid size \"{s}\" (use e.g. \"64KiB\", \"4MiB\")"),
                );
                default
            }
        }
    }

    pub(super) fn count(
        &mut self,
        path: &str,
        raw: Option<i64>,
        default: usize,
        range: (usize, usize),
    ) -> usize {
        let Some(n) = raw else { return default };
        match usize::try_from(n) {
            Ok(n) if n >= range.0 && n <= range.1 => n,
            _ => {
                self.problem(path, format!("{n} is outside {} to {}", range.0, range.1));
                default
            }
        }
    }
}

/// Reads a secret from a file (systemd credentials); trailing newline trimmed.
pub(super) fn read_secret_file(c: &mut Checker<'_>, path: &str, key: &str) -> Option<String> {
    match std::fs::read_to_string(path) {
        Ok(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Ok(_) => {
            c.problem(key, format!("file \"{path}\" is empty"));
            None
        }
        Err(e) => {
            c.problem(key, format!("cannot read \"{path}\": {e}"));
            None
        }
    }
}

/// Parses `"64KiB"`, `"4 MiB"`, `"1GB"` or a plain byte count.
pub fn parse_size(s: &str) -> Option<usize> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => return None,
    };
    usize::try_from(n.checked_mul(mult)?).ok()
}
