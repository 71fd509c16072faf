//! `[admin]`, `[log]` and `[service]`: how the process is operated rather than what
//! it does with SIP.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use super::Checker;
use super::checker::{DurationText, read_secret_file};
use crate::vocab::Redacted;

/// Shortest admin token accepted: anything shorter can be guessed over HTTP.
const MIN_TOKEN_LEN: usize = 16;

/// `[admin]`: the HTTP listener for metrics, health and the operator API.
#[derive(Debug, Clone, PartialEq)]
pub struct AdminConfig {
    /// Where `/metrics`, `/healthz`, `/readyz` and `/v1` are served; `None` turns
    /// the listener off.
    pub listen: Option<SocketAddr>,
    /// Bearer token `/v1` requires; without one `/v1` answers 401 to everything.
    pub token: Option<Redacted>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 9960))),
            token: None,
        }
    }
}

/// `[log]`: what is logged; reloadable with SIGHUP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// A tracing filter: `"info"`, `"warn,siphook::deliver=debug"`. `RUST_LOG`, when
    /// set, wins at start so a one-off debugging run needs no config edit.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
        }
    }
}

/// `[service]`: the process lifecycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceConfig {
    /// On SIGTERM, how long deliveries already in flight may take to finish;
    /// whatever is not delivered by then stays pending for the next start.
    pub shutdown_grace: Duration,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct RawAdmin {
    listen: Option<String>,
    token_file: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct RawLog {
    level: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct RawService {
    shutdown_grace: Option<DurationText>,
}

impl RawAdmin {
    pub(super) fn validate(self, c: &mut Checker<'_>) -> AdminConfig {
        let d = AdminConfig::default();
        let listen = match self.listen.as_deref().map(str::trim) {
            None => d.listen,
            Some("") => None,
            Some(s) => match s.parse::<SocketAddr>() {
                Ok(a) => Some(a),
                Err(_) => {
                    c.problem(
                        "admin.listen",
                        format!("invalid socket address \"{s}\" (\"\" turns the listener off)"),
                    );
                    None
                }
            },
        };
        let token = match self.token_file.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(path) => read_secret_file(c, path, "admin.token_file").and_then(|t| {
                if t.len() < MIN_TOKEN_LEN {
                    c.problem(
                        "admin.token_file",
                        format!(
                            "the token in \"{path}\" is shorter than {MIN_TOKEN_LEN} characters"
                        ),
                    );
                    None
                } else {
                    Some(Redacted(t))
                }
            }),
        };
        AdminConfig { listen, token }
    }
}

impl RawLog {
    pub(super) fn validate(self, c: &mut Checker<'_>) -> LogConfig {
        let Some(level) = self.level else {
            return LogConfig::default();
        };
        if tracing_subscriber::EnvFilter::try_new(&level).is_err() || level.trim().is_empty() {
            c.problem(
                "log.level",
                format!(
                    "invalid filter \"{level}\" (e.g. \"info\", \"warn,siphook::deliver=debug\")"
                ),
            );
            return LogConfig::default();
        }
        LogConfig { level }
    }
}

impl RawService {
    pub(super) fn validate(self, c: &mut Checker<'_>) -> ServiceConfig {
        let d = ServiceConfig::default();
        ServiceConfig {
            shutdown_grace: c.duration(
                "service.shutdown_grace",
                self.shutdown_grace,
                d.shutdown_grace,
                Duration::ZERO,
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, problems};

    #[test]
    fn admin_log_and_service_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let short = dir.path().join("short");
        std::fs::write(&short, "abc\n").unwrap();
        let got = problems(&format!(
            "[admin]\nlisten = \"localhost\"\ntoken_file = \"{}\"\n[log]\nlevel = \"info,=[\"\n[service]\nshutdown_grace = \"soon\"\n",
            short.display()
        ));
        assert_eq!(
            got,
            vec![
                "admin.listen: invalid socket address \"localhost\" (\"\" turns the listener off)"
                    .to_owned(),
                format!(
                    "admin.token_file: the token in \"{}\" is shorter than 16 characters",
                    short.display()
                ),
                "log.level: invalid filter \"info,=[\" (e.g. \"info\", \"warn,siphook::deliver=debug\")".into(),
                "service.shutdown_grace: invalid duration \"soon\" (use e.g. \"250ms\", \"32s\", \"3m\", \"4h\")".into(),
            ]
        );
        // The token itself never shows, even when it is refused.
        assert!(!got.concat().contains("abc"));
    }

    #[test]
    fn admin_can_be_turned_off_and_the_token_is_read_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "0123456789abcdef0123\n").unwrap();
        let c = Config::parse(&format!(
            "[admin]\nlisten = \"\"\ntoken_file = \"{}\"\n",
            token.display()
        ))
        .unwrap();
        assert_eq!(c.admin.listen, None);
        assert_eq!(
            c.admin.token,
            Some(crate::vocab::Redacted("0123456789abcdef0123".into()))
        );
        assert_eq!(format!("{:?}", c.admin.token), "Some(<redacted>)");
        let d = Config::parse("").unwrap();
        assert_eq!(d.admin.listen, Some("127.0.0.1:9960".parse().unwrap()));
        assert_eq!(d.service.shutdown_grace, std::time::Duration::from_secs(10));
    }
}
