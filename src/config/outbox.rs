//! `[outbox]`: where events are stored before any delivery attempt.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::Checker;
use super::checker::DurationText;

/// `[outbox]`: the segment log every event is committed to before delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxConfig {
    /// Directory of the store (relative paths: to the working directory).
    pub path: PathBuf,
    /// Longest an event waits to be grouped into a commit.
    pub commit_interval: Duration,
    /// Past this on-disk size new events are refused (counted, logged, unready).
    pub max_bytes: u64,
    /// Keys of the sled engine's compaction that this file still sets: accepted,
    /// so an upgrade does not refuse the old file, and warned about.
    pub obsolete: Vec<&'static str>,
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
            obsolete: Vec::new(),
            fsync: true,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct RawOutbox {
    path: Option<String>,
    commit_interval: Option<DurationText>,
    max_bytes: Option<String>,
    compact_above: Option<String>,
    compact_check_interval: Option<String>,
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
        let obsolete = [
            ("outbox.compact_above", self.compact_above.is_some()),
            (
                "outbox.compact_check_interval",
                self.compact_check_interval.is_some(),
            ),
        ]
        .into_iter()
        .filter_map(|(k, set)| set.then_some(k))
        .collect();
        OutboxConfig {
            path,
            commit_interval: c.duration(
                "outbox.commit_interval",
                self.commit_interval,
                d.commit_interval,
                Duration::ZERO,
            ),
            max_bytes,
            obsolete,
            fsync: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    #[test]
    fn the_sled_compaction_keys_still_load_and_are_warned_about() {
        let c =
            Config::parse("[outbox]\ncompact_above = \"64MiB\"\ncompact_check_interval = \"60s\"")
                .unwrap();
        assert_eq!(
            c.outbox.obsolete,
            ["outbox.compact_above", "outbox.compact_check_interval"]
        );
        let warned = c.warnings(std::path::Path::new("/nonexistent/siphook.toml"));
        assert!(
            warned
                .iter()
                .any(|w| w.contains("outbox.compact_above") && w.contains("no longer used")),
            "{warned:?}"
        );
        assert!(Config::parse("").unwrap().outbox.obsolete.is_empty());
    }
}
