//! Rate-limited logging: under a flood of bad input, one line per interval with a
//! count of what was suppressed, instead of a log line per packet.

use std::time::{Duration, Instant};

/// Allows one log line per interval and counts the rest.
#[derive(Debug)]
pub struct RateLog {
    interval: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLog {
    /// At most one line per `interval`.
    pub fn new(interval: Duration) -> RateLog {
        RateLog {
            interval,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(suppressed since the last line)` when a line may be logged now.
    pub fn allow(&mut self) -> Option<u64> {
        let now = Instant::now();
        match self.last {
            Some(t) if now.duration_since(t) < self.interval => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}
