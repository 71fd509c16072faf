//! Time as every room counts it: integer milliseconds on the wall clock, so
//! durations are exact and a replay on a capture's clock is deterministic.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Milliseconds since the Unix epoch, serialized as RFC 3339 UTC with milliseconds.
/// Integer milliseconds keep durations exact and replays deterministic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// The wall clock now; what live ingest stamps on each message.
    pub fn now() -> Timestamp {
        Timestamp::from(SystemTime::now())
    }

    /// Milliseconds since the epoch.
    pub fn millis(self) -> i64 {
        self.0
    }

    /// This instant plus a duration (saturating).
    pub fn plus(self, d: Duration) -> Timestamp {
        Timestamp(
            self.0
                .saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
        )
    }

    /// Milliseconds from `earlier` to `self`, never negative (mirrors can reorder).
    pub fn since(self, earlier: Timestamp) -> u64 {
        u64::try_from(self.0.saturating_sub(earlier.0)).unwrap_or(0)
    }
}

impl From<SystemTime> for Timestamp {
    fn from(t: SystemTime) -> Self {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Timestamp(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
            Err(_) => Timestamp(0),
        }
    }
}

/// 9999-12-31T23:59:59.999Z, the last instant RFC 3339 can write.
const MAX_RFC3339_MS: i64 = 253_402_300_799_999;

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Clamped: a corrupt capture time must not make an event unprintable
        // (humantime refuses years past 9999, and serde_json would panic on it).
        let ms = u64::try_from(self.0.clamp(0, MAX_RFC3339_MS)).unwrap_or(0);
        let t = UNIX_EPOCH + Duration::from_millis(ms);
        write!(f, "{}", humantime::format_rfc3339_millis(t))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_rfc3339(&s)
            .map(Timestamp::from)
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_format() {
        assert_eq!(
            Timestamp(1_795_330_803_512).to_string(),
            "2026-11-22T07:00:03.512Z"
        );
        assert_eq!(Timestamp(0).to_string(), "1970-01-01T00:00:00.000Z");
        assert_eq!(Timestamp(5).since(Timestamp(9)), 0);
        assert_eq!(Timestamp(i64::MAX).to_string(), "9999-12-31T23:59:59.999Z");
        assert_eq!(Timestamp(-5).to_string(), "1970-01-01T00:00:00.000Z");
    }
}
