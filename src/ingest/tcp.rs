//! SIP over TCP: frames each connection's stream by Content-Length; HEP over TCP:
//! by each packet's length field. A bad frame closes only that connection, since
//! the next message's start is unknown.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{IngestContext, Wire};
use crate::sip::Framer;
use crate::sip::hep::HepFramer;
use crate::sip::stream::{StreamError, StreamFramer, Unit};
use crate::vocab::Transport;

/// Limits applied to every connection.
#[derive(Debug, Clone, Copy)]
pub struct TcpLimits {
    /// Largest message; a larger one closes the connection.
    pub max_message_bytes: usize,
    /// Silence after which a connection is closed.
    pub idle_timeout: Duration,
    /// Connections past this are refused.
    pub max_connections: usize,
}

/// Binds a TCP listener.
pub async fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Accepts connections until `shutdown`, then closes them all.
pub async fn serve(
    listener: TcpListener,
    wire: Wire,
    ctx: IngestContext,
    limits: TcpLimits,
    shutdown: CancellationToken,
) {
    let open = Arc::new(AtomicUsize::new(0));
    let mut conns = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: back off briefly rather than spin.
                tracing::warn!(error = %e, "TCP accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if open.load(Ordering::Relaxed) >= limits.max_connections {
            ctx.metrics
                .tcp_closed
                .with_label_values(&["refused_max_connections"])
                .inc();
            if let Some(suppressed) = ctx.allow_log() {
                tracing::warn!(%peer, max = limits.max_connections, suppressed, "TCP connection refused: max_tcp_connections reached");
            }
            drop(stream);
            continue;
        }
        let guard = ConnGuard::new(open.clone(), ctx.metrics.tcp_connections.clone());
        let ctx = ctx.clone();
        let shutdown = shutdown.clone();
        conns.spawn(async move {
            let _guard = guard;
            let reason = connection(stream, peer, wire, &ctx, limits, shutdown).await;
            ctx.metrics.tcp_closed.with_label_values(&[reason]).inc();
        });
    }
    conns.shutdown().await;
}

/// Counts a connection for its lifetime.
struct ConnGuard {
    open: Arc<AtomicUsize>,
    gauge: prometheus::IntGauge,
}

impl ConnGuard {
    fn new(open: Arc<AtomicUsize>, gauge: prometheus::IntGauge) -> ConnGuard {
        open.fetch_add(1, Ordering::Relaxed);
        gauge.inc();
        ConnGuard { open, gauge }
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
        self.gauge.dec();
    }
}

/// Serves one connection; returns why it closed (a metrics label).
async fn connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    wire: Wire,
    ctx: &IngestContext,
    limits: TcpLimits,
    shutdown: CancellationToken,
) -> &'static str {
    let local = match stream.local_addr() {
        Ok(a) => a,
        Err(_) => return "io_error",
    };
    let (label, mut framer) = match wire {
        Wire::Sip => (
            "tcp",
            StreamFramer::Sip(Framer::new(limits.max_message_bytes)),
        ),
        Wire::Hep => ("hep", StreamFramer::Hep(HepFramer::new())),
    };
    let bytes = ctx.metrics.sip_received_bytes.with_label_values(&[label]);
    // When the unit now buffered began: it must be whole within the idle timeout
    // too, or a peer sending a byte at a time (slowloris) would hold the slot
    // for ever while never being idle.
    let mut partial_since: Option<tokio::time::Instant> = None;
    loop {
        framer.buffer_mut().reserve(8192);
        let deadline = match partial_since {
            Some(t) => t + limits.idle_timeout,
            None => tokio::time::Instant::now() + limits.idle_timeout,
        };
        let read = tokio::select! {
            _ = shutdown.cancelled() => return "shutdown",
            r = tokio::time::timeout_at(deadline, stream.read_buf(framer.buffer_mut())) => r,
        };
        match read {
            Err(_) if partial_since.is_some() => {
                if let Some(suppressed) = ctx.allow_log() {
                    tracing::warn!(%peer, suppressed, "closing {label} TCP connection: a message took longer than tcp_idle_timeout to arrive");
                }
                return "slow_message";
            }
            Err(_) => {
                tracing::debug!(%peer, "TCP connection idle, closing");
                return "idle_timeout";
            }
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "TCP read error");
                return "io_error";
            }
            Ok(Ok(0)) => return "peer_closed",
            Ok(Ok(n)) => bytes.inc_by(n as u64),
        }
        loop {
            match framer.next_unit() {
                Ok(Some(Unit::Sip(msg))) => ctx.handle(&msg, Transport::Tcp, peer, local),
                Ok(Some(Unit::Hep(packet))) => ctx.handle_hep(&packet, Transport::Tcp, peer, local),
                Ok(None) => {
                    partial_since = match (framer.buffered(), partial_since) {
                        (0, _) => None,
                        (_, Some(t)) => Some(t),
                        (_, None) => Some(tokio::time::Instant::now()),
                    };
                    break;
                }
                Err(StreamError { reason, message }) => {
                    match wire {
                        Wire::Sip => &ctx.metrics.sip_parse_errors,
                        Wire::Hep => &ctx.metrics.hep_dropped,
                    }
                    .with_label_values(&["tcp", reason])
                    .inc();
                    if let Some(suppressed) = ctx.allow_log() {
                        tracing::warn!(%peer, reason, suppressed, "closing {label} TCP connection: {message}");
                    }
                    return reason;
                }
            }
        }
    }
}
