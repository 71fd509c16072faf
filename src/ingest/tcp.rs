//! SIP over TCP: frames each connection's stream by Content-Length. A bad frame
//! closes only that connection, since the next message's start is unknown.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::IngestContext;
use crate::call::Transport;
use crate::sip::Framer;

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
            let reason = connection(stream, peer, &ctx, limits, shutdown).await;
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
    ctx: &IngestContext,
    limits: TcpLimits,
    shutdown: CancellationToken,
) -> &'static str {
    let local = match stream.local_addr() {
        Ok(a) => a,
        Err(_) => return "io_error",
    };
    let bytes = ctx.metrics.sip_received_bytes.with_label_values(&["tcp"]);
    let mut framer = Framer::new(limits.max_message_bytes);
    loop {
        framer.buffer_mut().reserve(8192);
        let read = tokio::select! {
            _ = shutdown.cancelled() => return "shutdown",
            r = tokio::time::timeout(limits.idle_timeout, stream.read_buf(framer.buffer_mut())) => r,
        };
        match read {
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
            match framer.next_message() {
                Ok(Some(msg)) => ctx.handle(&msg, Transport::Tcp, peer, local),
                Ok(None) => break,
                Err(e) => {
                    ctx.metrics
                        .sip_parse_errors
                        .with_label_values(&["tcp", e.reason()])
                        .inc();
                    if let Some(suppressed) = ctx.allow_log() {
                        tracing::warn!(%peer, reason = e.reason(), suppressed, "closing SIP TCP connection: {e}");
                    }
                    return e.reason();
                }
            }
        }
    }
}
