//! Listeners: SIP over UDP and TCP. Each parses what it receives and hands typed
//! messages to the tracker through a bounded queue it never waits on, so a slow
//! tracker or a flood sheds load (counted) instead of stalling the sockets.

pub mod tcp;
pub mod udp;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::admin::{Metrics, RateLog};
use crate::call::{Meta, Timestamp, Transport};
use crate::sip::{self, ParseOptions, SipMessage, StartLine};

/// A parsed message and where it came from: what flows from ingest to the tracker.
#[derive(Debug)]
pub struct Inbound {
    /// The message view.
    pub msg: SipMessage,
    /// Transport, addresses and receive time.
    pub meta: Meta,
}

/// What every listener shares: the queue to the tracker, parse settings, metrics.
#[derive(Clone)]
pub struct IngestContext {
    /// Queue to the tracker.
    pub tx: mpsc::Sender<Inbound>,
    /// Correlation headers and size limit.
    pub parse: Arc<ParseOptions>,
    /// Counters.
    pub metrics: Metrics,
    /// Limits one parse-error log line per second across listeners.
    log_limit: Arc<Mutex<RateLog>>,
}

impl IngestContext {
    /// A context feeding `tx`.
    pub fn new(tx: mpsc::Sender<Inbound>, parse: ParseOptions, metrics: Metrics) -> IngestContext {
        IngestContext {
            tx,
            parse: Arc::new(parse),
            metrics,
            log_limit: Arc::new(Mutex::new(RateLog::new(Duration::from_secs(1)))),
        }
    }

    /// Parses one message and queues it; counts every outcome. Never blocks.
    pub fn handle(
        &self,
        raw: &[u8],
        transport: Transport,
        source: SocketAddr,
        destination: SocketAddr,
    ) {
        let t = transport.as_str();
        let received_at = Timestamp::now();
        let msg = match sip::parse(raw, &self.parse) {
            Ok(m) => m,
            Err(e) => {
                self.metrics
                    .sip_parse_errors
                    .with_label_values(&[t, e.reason()])
                    .inc();
                self.log_parse_error(e.reason(), raw, source);
                return;
            }
        };
        let kind = match msg.start {
            StartLine::Request { .. } => "request",
            StartLine::Response { .. } => "response",
        };
        self.metrics
            .sip_messages
            .with_label_values(&[t, kind, msg.method().as_str()])
            .inc();
        let meta = Meta {
            transport,
            source,
            destination,
            received_at,
        };
        if let Err(e) = self.tx.try_send(Inbound { msg, meta }) {
            let reason = match e {
                mpsc::error::TrySendError::Full(_) => "queue_full",
                mpsc::error::TrySendError::Closed(_) => "shutting_down",
            };
            self.metrics
                .sip_dropped
                .with_label_values(&[t, reason])
                .inc();
        }
    }

    /// Whether a hot-path warning may be logged now (one a second across every
    /// listener), with the count suppressed since the last: a flood of bad input
    /// must not turn into a flood of log lines.
    pub fn allow_log(&self) -> Option<u64> {
        self.log_limit.lock().ok().and_then(|mut l| l.allow())
    }

    /// Logs a parse failure by Call-ID at most: the raw bytes carry phone numbers.
    fn log_parse_error(&self, reason: &str, raw: &[u8], source: SocketAddr) {
        if let Some(suppressed) = self.allow_log() {
            let call_id = sip::sniff_call_id(raw);
            tracing::warn!(
                reason,
                %source,
                call_id = call_id.as_deref().unwrap_or("-"),
                suppressed,
                "unparseable SIP message dropped"
            );
        }
    }
}
