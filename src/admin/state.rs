//! What the admin listener reads or asks, each through its owner's channel: it
//! holds handles, never the state itself, so serving a request takes no lock
//! another room waits on.

use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::call::TrackerQuery;
use crate::deliver::Endpoints;
use crate::deliver::history::History;
use crate::metrics::Metrics;
use crate::outbox::Outbox;
use crate::vocab::Redacted;

/// Everything the admin API reads or asks, each through its owner's channel.
pub struct AdminState {
    /// The registry `/metrics` renders; also the outbox's readiness gauge.
    pub metrics: Metrics,
    /// Dead letters are read straight from the store (reads never conflict).
    pub outbox: Arc<Outbox>,
    /// Questions for the tracker task (active calls).
    pub tracker: mpsc::Sender<TrackerQuery>,
    /// The recent-history index and live event stream.
    pub history: History,
    /// One permit per event-stream client allowed at once.
    pub stream_slots: Arc<tokio::sync::Semaphore>,
    /// The endpoint dispatchers in force.
    pub endpoints: watch::Receiver<Endpoints>,
    /// The bearer token `/v1` wants; replaced on reload.
    pub token: watch::Receiver<Option<Redacted>>,
    /// Set once shutdown begins: `/readyz` fails so load balancers move away.
    pub stopping: CancellationToken,
}
