//! The tracker's timers and bounds, and how its timer queue orders deadlines:
//! what the call table ([`super::tracker`]) and each call's dialog
//! ([`super::dialog`]) both read, so neither has to reach into the other.

use std::time::Duration;

use crate::config::SipConfig;
use crate::vocab::Timestamp;

/// Timers and bounds of the tracker, from `[sip]`.
#[derive(Debug, Clone)]
pub struct TrackerConfig {
    /// No final response by then: `no_answer`.
    pub invite_timeout: Duration,
    /// Answered and no BYE by then: completes.
    pub max_call_duration: Duration,
    /// Wait for a retry after a challenge, or for a final response after CANCEL.
    pub challenge_window: Duration,
    /// Most live calls held at once.
    pub max_active_calls: usize,
    /// How long a message of an unknown dialog waits for its INVITE (a mirror
    /// that reorders); zero: not at all.
    pub reorder_window: Duration,
}

impl From<&SipConfig> for TrackerConfig {
    fn from(c: &SipConfig) -> Self {
        TrackerConfig {
            invite_timeout: c.invite_timeout,
            max_call_duration: c.max_call_duration,
            challenge_window: c.challenge_window,
            max_active_calls: c.max_active_calls,
            reorder_window: c.reorder_window,
        }
    }
}

/// Orders timers by instant, then by creation (two calls due at the same
/// millisecond fire in the order they were armed).
pub(super) type TimerKey = (Timestamp, u64);
