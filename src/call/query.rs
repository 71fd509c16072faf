//! The tracker's question protocol. The tracker task owns the call table, so
//! others (the admin API, the watchdog) never lock it: they send a question on a
//! channel and the task answers between two messages.

use tokio::sync::oneshot;

use super::event::CallInfo;
use super::tracker::Tracker;

/// A question for the tracker task, answered between two messages so the call
/// table needs no lock.
#[derive(Debug)]
pub enum TrackerQuery {
    /// A page of active calls in id order after `after`.
    Calls {
        /// Cursor: the last id of the previous page.
        after: Option<String>,
        /// Page size.
        limit: usize,
        /// Where the page goes.
        reply: oneshot::Sender<CallsPage>,
    },
    /// Answered at once: proves to the watchdog that the tracker loop turns.
    Ping(oneshot::Sender<()>),
}

/// One page of active calls.
#[derive(Debug, Clone)]
pub struct CallsPage {
    /// Active calls in the table.
    pub total: usize,
    /// This page, ordered by `id`.
    pub calls: Vec<CallInfo>,
}

impl Tracker {
    /// Answers `q` from the table as it stands; a gone asker is not an error.
    pub fn answer(&self, q: TrackerQuery) {
        match q {
            TrackerQuery::Calls {
                after,
                limit,
                reply,
            } => {
                let _ = reply.send(CallsPage {
                    total: self.active_calls(),
                    calls: self.calls_page(after.as_deref(), limit),
                });
            }
            TrackerQuery::Ping(reply) => {
                let _ = reply.send(());
            }
        }
    }
}
