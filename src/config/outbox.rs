//! `[outbox]`: where events are stored before any delivery attempt.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::Checker;

/// `[outbox]`: the sled store every event is committed to before delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxConfig {
    /// Directory of the sled database (relative paths: to the working directory).
    pub path: PathBuf,
    /// Longest an event waits to be grouped into a commit.
    pub commit_interval: Duration,
    /// Past this on-disk size new events are refused (counted, logged, unready).
    pub max_bytes: u64,
    /// Past this on-disk size the store is copied into a fresh one when most of
    /// it is garbage: sled alone does not give the space of deleted events back.
    pub compact_above: u64,
    /// How often a running service checks whether compaction pays (the check
    /// reads the live data, up to a quarter of the file).
    pub compact_check_interval: Duration,
    /// Whether a commit fsyncs. Always true from a config file: only `siphook bench
    /// --no-fsync` turns it off, to measure what durability costs.
    pub fsync: bool,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig {
            path: PathBuf::from("data/outbox"),
            commit_interval: Duration::from_millis(1),
            max_bytes: 1 << 30,
            compact_above: default_compact_above(1 << 30),
            compact_check_interval: Duration::from_secs(60),
            fsync: true,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct RawOutbox {
    path: Option<String>,
    commit_interval: Option<String>,
    max_bytes: Option<String>,
    compact_above: Option<String>,
    compact_check_interval: Option<String>,
}

/// 64 MiB, or half of a smaller `max_bytes`: compaction must start well before
/// the store is refused for size.
fn default_compact_above(max_bytes: u64) -> u64 {
    (64 << 20).min(max_bytes / 2)
}

impl RawOutbox {
    pub(super) fn validate(self, c: &mut Checker<'_>) -> OutboxConfig {
        let d = OutboxConfig::default();
        let path = match self.path {
            Some(p) if p.trim().is_empty() => {
                c.problem("outbox.path", "must not be empty".into());
                d.path
            }
            Some(p) => PathBuf::from(p),
            None => d.path,
        };
        let max_bytes = c.size(
            "outbox.max_bytes",
            self.max_bytes,
            d.max_bytes as usize,
            (1 << 20, usize::MAX),
        ) as u64;
        let compact_default = default_compact_above(max_bytes);
        let mut compact_above = c.size(
            "outbox.compact_above",
            self.compact_above.clone(),
            compact_default as usize,
            (64 << 10, usize::MAX),
        ) as u64;
        if self.compact_above.is_some() && compact_above >= max_bytes {
            c.problem(
                "outbox.compact_above",
                format!("must be below outbox.max_bytes ({max_bytes} bytes)"),
            );
            compact_above = compact_default;
        }
        OutboxConfig {
            path,
            commit_interval: c.duration(
                "outbox.commit_interval",
                self.commit_interval,
                d.commit_interval,
                Duration::ZERO,
            ),
            max_bytes,
            compact_above,
            compact_check_interval: c.duration(
                "outbox.compact_check_interval",
                self.compact_check_interval,
                d.compact_check_interval,
                Duration::from_millis(100),
            ),
            fsync: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, ConfigError};

    fn outbox(text: &str) -> Result<(u64, u64), Vec<String>> {
        match Config::parse(&format!("[outbox]\n{text}")) {
            Ok(c) => Ok((c.outbox.max_bytes, c.outbox.compact_above)),
            Err(ConfigError::Invalid(p)) => Err(p.iter().map(ToString::to_string).collect()),
            Err(e) => Err(vec![e.to_string()]),
        }
    }

    #[test]
    fn compaction_starts_well_below_max_bytes() {
        assert_eq!(outbox(""), Ok((1 << 30, 64 << 20)));
        // A small store compacts at half its limit, not at 64 MiB it never reaches.
        assert_eq!(outbox("max_bytes = \"16MiB\""), Ok((16 << 20, 8 << 20)));
        assert_eq!(
            outbox("max_bytes = \"16MiB\"\ncompact_above = \"4MiB\""),
            Ok((16 << 20, 4 << 20))
        );
        assert_eq!(
            outbox("max_bytes = \"16MiB\"\ncompact_above = \"16MiB\""),
            Err(vec![
                "outbox.compact_above: must be below outbox.max_bytes (16777216 bytes)".into()
            ])
        );
        assert_eq!(
            outbox("compact_above = \"1KiB\""),
            Err(vec![
                "outbox.compact_above: \"1KiB\" is outside 65536 to 18446744073709551615 bytes"
                    .into()
            ])
        );
    }
}
