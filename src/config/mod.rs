//! Loads and validates `siphook.toml`.
//!
//! The file is read into a raw, all-strings shape first and then checked field by
//! field, so an operator sees every problem at once, each with its key path, instead
//! of fixing one typo per restart.

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

mod checker;
mod delivery;
mod hep;
mod outbox;
mod problems;
pub mod redact;
mod service;
mod target;
mod warnings;

pub use checker::parse_size;
use checker::{Checker, DurationText};
use problems::{MAX_TYPE_ERRORS, display_path, format_path, remove_at, without_value};

pub use delivery::{Auth, Encoding, EndpointConfig, Format, glob_match};
pub use hep::HepConfig;
pub use outbox::OutboxConfig;
pub use redact::Redaction;
pub use service::{AdminConfig, LogConfig, ServiceConfig};
pub use target::{DEFAULT_SUBJECT, DEFAULT_TOPIC, KafkaTarget, NatsAuth, NatsTarget, Target};

/// The validated configuration the process runs on.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// SIP listeners, limits and call timers.
    pub sip: SipConfig,
    /// HEPv3 listeners (capture agents); none by default.
    pub hep: HepConfig,
    /// The durable event store.
    pub outbox: OutboxConfig,
    /// Where events are delivered; none means events are only stored and printed.
    pub endpoints: Vec<EndpointConfig>,
    /// Metrics, health and the operator API.
    pub admin: AdminConfig,
    /// Log filter.
    pub log: LogConfig,
    /// Process lifecycle.
    pub service: ServiceConfig,
}

/// `[sip]`: where SIP arrives and how calls are tracked.
#[derive(Debug, Clone, PartialEq)]
pub struct SipConfig {
    /// UDP listen addresses (zero or more).
    pub udp: Vec<SocketAddr>,
    /// TCP listen addresses (zero or more).
    pub tcp: Vec<SocketAddr>,
    /// Largest message accepted on any transport.
    pub max_message_bytes: usize,
    /// SO_RCVBUF asked of the kernel for UDP sockets; bursts beyond it are lost by the kernel.
    pub udp_receive_buffer: usize,
    /// A TCP connection that brings no message for this long is closed (CRLF
    /// keep-alives alone do not hold it), and so is one whose message takes
    /// longer than this to arrive whole (a byte-at-a-time peer).
    pub tcp_idle_timeout: Duration,
    /// Connections held at once on each TCP listener (SIP and HEP); a newcomer
    /// past it takes the idlest connection of the source that holds the most,
    /// or is refused.
    pub max_tcp_connections: usize,
    /// Connections one source (an IPv4 address, an IPv6 /64) may hold on each TCP
    /// listener; `siptrace_from` proxies and `hep.agents` are not limited.
    pub max_connections_per_source: usize,
    /// No final response by then: the call completes as `no_answer`.
    pub invite_timeout: Duration,
    /// Answered, no BYE by then: the call completes.
    pub max_call_duration: Duration,
    /// After a 401/407 (or 3xx, 422, 491) how long to wait for the caller's retry.
    pub challenge_window: Duration,
    /// Upper bound of the call table.
    pub max_active_calls: usize,
    /// How long a response, CANCEL, ACK or BYE of an unknown dialog waits for its
    /// INVITE, for mirrors whose copies overtake each other; zero: not at all.
    pub reorder_window: Duration,
    /// Headers whose first present value becomes `call.correlation_id`.
    pub correlation_headers: Vec<String>,
    /// Parsed messages waiting for the tracker; past it messages are shed and counted.
    pub queue_capacity: usize,
    /// Senders whose X-Siptrace-Fromip/Toip/Time headers (Kamailio siptrace with
    /// xheaders_write) are believed; from anyone else they are a caller's claim.
    pub siptrace_from: Vec<std::net::IpAddr>,
}

/// Longest `sip.reorder_window` accepted.
const MAX_REORDER_WINDOW: Duration = Duration::from_secs(5);

impl Default for Config {
    fn default() -> Self {
        Config {
            sip: SipConfig {
                udp: vec![SocketAddr::from(([127, 0, 0, 1], 5060))],
                tcp: vec![SocketAddr::from(([127, 0, 0, 1], 5060))],
                max_message_bytes: 64 * 1024,
                udp_receive_buffer: 4 * 1024 * 1024,
                tcp_idle_timeout: Duration::from_secs(180),
                max_tcp_connections: 1024,
                max_connections_per_source: 64,
                invite_timeout: Duration::from_secs(180),
                max_call_duration: Duration::from_secs(4 * 3600),
                challenge_window: Duration::from_secs(32),
                max_active_calls: 200_000,
                reorder_window: Duration::from_millis(200),
                correlation_headers: vec!["Session-ID".into(), "X-CID".into()],
                queue_capacity: 65_536,
                siptrace_from: Vec::new(),
            },
            hep: HepConfig::default(),
            outbox: OutboxConfig::default(),
            endpoints: Vec::new(),
            admin: AdminConfig::default(),
            log: LogConfig::default(),
            service: ServiceConfig::default(),
        }
    }
}

/// One thing wrong with the file, with the key it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key path, e.g. `sip.udp[0]`; empty for file-level problems.
    pub path: String,
    /// What is wrong, quoting the offending value (never a secret).
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The path given.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file was read but is not a valid configuration.
    #[error("{}", display_problems(.0))]
    Invalid(Vec<Problem>),
}

fn display_problems(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(Problem::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::parse_named(&text, Some(path))
    }

    /// Validates configuration text; every problem found is reported.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse_named(text, None)
    }

    /// `file`, when known, names where a TOML syntax error is, so an editor can
    /// jump there (`FILE:LINE:COLUMN`).
    fn parse_named(text: &str, file: Option<&Path>) -> Result<Config, ConfigError> {
        Config::parse_unscrubbed(text, file).map_err(|e| match e {
            ConfigError::Invalid(mut problems) => {
                for p in &mut problems {
                    p.path = scrub_secrets(&p.path);
                    p.message = scrub_secrets(&p.message);
                }
                ConfigError::Invalid(problems)
            }
            other => other,
        })
    }

    fn parse_unscrubbed(text: &str, file: Option<&Path>) -> Result<Config, ConfigError> {
        let mut problems = Vec::new();
        let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            ConfigError::Invalid(vec![Problem {
                path: String::new(),
                message: syntax_error(text, file, &e),
            }])
        })?;
        // serde stops at the first value of the wrong type: report it, drop that
        // value (its default applies), and go again, so every such problem shows.
        let mut unknown = Vec::new();
        let mut raw = None;
        for _ in 0..MAX_TYPE_ERRORS {
            unknown.clear();
            let mut on_unknown = |path: serde_ignored::Path<'_>| unknown.push(format_path(&path));
            let ignored = serde_ignored::Deserializer::new(
                toml::Value::Table(table.clone()),
                &mut on_unknown,
            );
            let parsed: Result<RawConfig, _> = serde_path_to_error::deserialize(ignored);
            match parsed {
                Ok(r) => {
                    raw = Some(r);
                    break;
                }
                Err(e) => {
                    let path = e.path().clone();
                    problems.push(Problem {
                        path: display_path(&path),
                        message: without_value(e.into_inner().message()),
                    });
                    if !remove_at(&mut table, &path) {
                        break;
                    }
                }
            }
        }
        let Some(raw) = raw else {
            return Err(ConfigError::Invalid(problems));
        };
        unknown.sort();
        for key in unknown {
            problems.push(Problem {
                path: key,
                message: "unknown key".into(),
            });
        }
        let config = raw.validate(&mut problems);
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }
}

/// "invalid TOML at FILE:3:7: …": toml's message names no place, its span does.
/// The message is kept on one line, as every problem is.
fn syntax_error(text: &str, file: Option<&Path>, e: &toml::de::Error) -> String {
    let message = e.message().trim().replace('\n', "; ");
    let Some(start) = e.span().map(|s| s.start.min(text.len())) else {
        return format!("invalid TOML: {message}");
    };
    let before = text.get(..start).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    match file {
        Some(f) => format!("invalid TOML at {}:{line}:{column}: {message}", f.display()),
        None => format!("invalid TOML at line {line}, column {column}: {message}"),
    }
}

/// Cuts what follows `whsec_` from a problem's text: a signing secret typed under
/// the wrong key (or as a key) would otherwise be quoted back into a log.
fn scrub_secrets(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("whsec_") {
        let (before, after) = rest.split_at(i + "whsec_".len());
        out.push_str(before);
        let end = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || "+/=_-".contains(c)))
            .unwrap_or(after.len());
        if end > 0 {
            out.push('…');
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawConfig {
    sip: RawSip,
    hep: hep::RawHep,
    outbox: outbox::RawOutbox,
    endpoints: Vec<delivery::RawEndpoint>,
    admin: service::RawAdmin,
    log: service::RawLog,
    service: service::RawService,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawSip {
    udp: Option<Vec<String>>,
    tcp: Option<Vec<String>>,
    max_message_bytes: Option<String>,
    udp_receive_buffer: Option<String>,
    tcp_idle_timeout: Option<DurationText>,
    max_tcp_connections: Option<i64>,
    max_connections_per_source: Option<i64>,
    invite_timeout: Option<DurationText>,
    max_call_duration: Option<DurationText>,
    challenge_window: Option<DurationText>,
    max_active_calls: Option<i64>,
    reorder_window: Option<DurationText>,
    correlation_headers: Option<Vec<String>>,
    queue_capacity: Option<i64>,
    siptrace_from: Option<Vec<String>>,
}

impl RawConfig {
    fn validate(self, problems: &mut Vec<Problem>) -> Config {
        let d = Config::default().sip;
        let mut c = Checker { problems };
        let s = self.sip;
        let ms = Duration::from_millis;
        let sip = SipConfig {
            udp: c.addrs("sip.udp", s.udp, d.udp),
            tcp: c.addrs("sip.tcp", s.tcp, d.tcp),
            max_message_bytes: c.size(
                "sip.max_message_bytes",
                s.max_message_bytes,
                d.max_message_bytes,
                (1024, 16 << 20),
            ),
            udp_receive_buffer: c.size(
                "sip.udp_receive_buffer",
                s.udp_receive_buffer,
                d.udp_receive_buffer,
                (64 << 10, 1 << 30),
            ),
            tcp_idle_timeout: c.duration(
                "sip.tcp_idle_timeout",
                s.tcp_idle_timeout,
                d.tcp_idle_timeout,
                ms(10),
            ),
            max_tcp_connections: c.count(
                "sip.max_tcp_connections",
                s.max_tcp_connections,
                d.max_tcp_connections,
                (1, 1 << 20),
            ),
            max_connections_per_source: c.count(
                "sip.max_connections_per_source",
                s.max_connections_per_source,
                d.max_connections_per_source,
                (1, 1 << 20),
            ),
            invite_timeout: c.duration(
                "sip.invite_timeout",
                s.invite_timeout,
                d.invite_timeout,
                ms(10),
            ),
            max_call_duration: c.duration(
                "sip.max_call_duration",
                s.max_call_duration,
                d.max_call_duration,
                ms(10),
            ),
            challenge_window: c.duration(
                "sip.challenge_window",
                s.challenge_window,
                d.challenge_window,
                ms(10),
            ),
            max_active_calls: c.count(
                "sip.max_active_calls",
                s.max_active_calls,
                d.max_active_calls,
                (1, 100_000_000),
            ),
            reorder_window: c.duration(
                "sip.reorder_window",
                s.reorder_window,
                d.reorder_window,
                Duration::ZERO,
            ),
            correlation_headers: s.correlation_headers.unwrap_or(d.correlation_headers),
            siptrace_from: c.ips("sip.siptrace_from", s.siptrace_from),
            queue_capacity: c.count(
                "sip.queue_capacity",
                s.queue_capacity,
                d.queue_capacity,
                (16, 1 << 24),
            ),
        };
        // Reordered copies are milliseconds apart; a longer window only fills
        // the held bound with orphans and sheds the early copies it is for.
        if sip.reorder_window > MAX_REORDER_WINDOW {
            c.problem(
                "sip.reorder_window",
                format!(
                    "at most {} (mirrored copies overtake each other by milliseconds)",
                    humantime::format_duration(MAX_REORDER_WINDOW)
                ),
            );
        }
        for (i, h) in sip.correlation_headers.iter().enumerate() {
            if h.is_empty()
                || !h
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.!%*+`'~".contains(&b))
            {
                c.problem(
                    format!("sip.correlation_headers[{i}]"),
                    format!("invalid header name \"{h}\""),
                );
            }
        }
        let outbox = self.outbox.validate(&mut c);
        let endpoints = delivery::validate_endpoints(self.endpoints, &mut c);
        Config {
            hep: self.hep.validate(&mut c, &sip),
            sip,
            outbox,
            endpoints,
            admin: self.admin.validate(&mut c),
            log: self.log.validate(&mut c),
            service: self.service.validate(&mut c),
        }
    }
}

/// Every problem `text` has, as the operator reads them (tests of each section).
#[cfg(test)]
pub(crate) fn problems(text: &str) -> Vec<String> {
    match Config::parse(text) {
        Ok(_) => vec![],
        Err(ConfigError::Invalid(p)) => p.iter().map(ToString::to_string).collect(),
        Err(e) => vec![e.to_string()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_under_the_wrong_key_is_not_quoted_back() {
        assert_eq!(
            problems("[sip]\nudp = [\"whsec_c2VjcmV0LXZhbHVl\"]\nwhsec_a2V5 = 1\n"),
            [
                "sip.whsec_…: unknown key",
                "sip.udp[0]: invalid socket address \"whsec_…\""
            ]
        );
        assert_eq!(
            scrub_secrets("after \"whsec_\"; whsec_ab+/= x"),
            "after \"whsec_\"; whsec_… x"
        );
    }

    #[test]
    fn empty_file_is_the_default() {
        assert_eq!(Config::parse("").unwrap(), Config::default());
    }

    #[test]
    fn reports_every_problem_with_its_path() {
        let got = problems(
            r#"
            [sip]
            udp = ["127.0.0.1:99999", "[::1]:5060"]
            max_message_bytes = "64 parsecs"
            invite_timeout = "soon"
            max_active_calls = 0
            colour = "blue"
            [other]
            x = 1
            "#,
        );
        assert_eq!(
            got,
            vec![
                "other: unknown key",
                "sip.colour: unknown key",
                "sip.udp[0]: invalid socket address \"127.0.0.1:99999\"",
                "sip.max_message_bytes: invalid size \"64 parsecs\" (use e.g. \"64KiB\", \"4MiB\")",
                "sip.invite_timeout: invalid duration \"soon\" (use e.g. \"250ms\", \"32s\", \"3m\", \"4h\")",
                "sip.max_active_calls: 0 is outside 1 to 100000000",
            ]
        );
    }

    #[test]
    fn type_errors_name_the_key() {
        let got = problems("[sip]\nmax_tcp_connections = \"many\"\nudp = [\"x\", 5]\ncolour = 1\n");
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(
            got.iter()
                .any(|p| p == "sip.max_tcp_connections: wrong type: expected i64"),
            "{got:?}"
        );
        assert!(
            got.iter()
                .any(|p| p == "sip.udp[1]: wrong type: expected a string"),
            "{got:?}"
        );
        // A secret given in the wrong shape is not echoed back.
        let secret = problems(
            "[[endpoints]]\nname = \"a\"\nurl = \"https://h/\"\nsecrets = \"whsec_c2VjcmV0LXRoYXQtbXVzdC1ub3QtbGVhaw==\"\n",
        );
        assert!(!secret.concat().contains("c2VjcmV0"), "{secret:?}");
        assert!(
            got.iter().any(|p| p == "sip.colour: unknown key"),
            "{got:?}"
        );
        let got = problems("[sip]\nchallenge_window = 32\n");
        assert_eq!(
            got,
            [
                "sip.challenge_window: wrong type: expected a duration string with a unit, such as \"32s\" or \"250ms\""
            ]
        );
        let got = problems("[sip\n");
        assert!(
            got[0].starts_with("invalid TOML at line 1, column"),
            "{got:?}"
        );
    }

    #[test]
    fn a_syntax_error_names_the_file_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("siphook.toml");
        std::fs::write(
            &path,
            "[sip]\nudp = [\"127.0.0.1:5060\"]\ntcp = [\"x\" \"y\"]\n",
        )
        .unwrap();
        let got = Config::load(&path).unwrap_err().to_string();
        let at = format!("invalid TOML at {}:3:", path.display());
        assert!(got.starts_with(&at), "{got}");
        assert!(!got.contains('\n'), "{got}");
        // A multi-byte character before the error counts as one column.
        let got = problems("[sip]\nudp = \"é\" x\n");
        assert!(
            got[0].starts_with("invalid TOML at line 2, column 11"),
            "{got:?}"
        );
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("64KiB"), Some(65536));
        assert_eq!(parse_size("1 GiB"), Some(1 << 30));
        assert_eq!(parse_size("100"), Some(100));
        assert_eq!(parse_size("99999999999999999999KiB"), None);
        let c = Config::parse("[sip]\ninvite_timeout = \"250ms\"\nmax_call_duration = \"4h\"\n")
            .unwrap();
        assert_eq!(c.sip.invite_timeout, Duration::from_millis(250));
        assert_eq!(c.sip.max_call_duration, Duration::from_secs(4 * 3600));
    }
}
