//! The null relay, the baseline: receives what the generator sends, exactly as
//! siphook would (same socket setup), and POSTs each message's raw bytes to the
//! receiver with a hyper client. No parsing, no state, no outbox: what is left of the
//! latency is the sockets, the scheduler, HTTP and the receiver itself.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{BenchError, Transport};

/// Posts in flight at once: siphook's `max_in_flight` in the spawned config.
pub(crate) const MAX_IN_FLIGHT: usize = 256;
/// Deadline of one post.
const POST_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest message on a TCP stream, as siphook's default `max_message_bytes`.
const MAX_MESSAGE: usize = 64 * 1024;
/// Kernel receive buffer, as siphook's default `udp_receive_buffer`.
const UDP_BUFFER: usize = 4 * 1024 * 1024;
/// TCP connections served at once.
const MAX_CONNECTIONS: usize = 64;

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// A running null relay.
pub(crate) struct Relay {
    /// Where the generator sends.
    pub(crate) addr: SocketAddr,
    /// Posts that failed (connect error, timeout, non-2xx).
    pub(crate) errors: Arc<AtomicU64>,
    stop: CancellationToken,
    thread: std::thread::JoinHandle<()>,
}

struct Poster {
    client: HttpClient,
    url: hyper::Uri,
    permits: Arc<Semaphore>,
    errors: Arc<AtomicU64>,
}

impl Poster {
    /// Posts `body` on its own task once a slot is free.
    async fn post(&self, body: Bytes, tasks: &mut JoinSet<()>) {
        let Ok(permit) = self.permits.clone().acquire_owned().await else {
            return;
        };
        let (client, url, errors) = (self.client.clone(), self.url.clone(), self.errors.clone());
        while tasks.try_join_next().is_some() {}
        tasks.spawn(async move {
            let _permit = permit;
            let ok = match hyper::Request::post(url)
                .header(hyper::header::CONTENT_TYPE, "application/sip")
                .body(Full::new(body))
            {
                Ok(req) => matches!(
                    tokio::time::timeout(POST_TIMEOUT, async {
                        let resp = client.request(req).await.ok()?;
                        let ok = resp.status().is_success();
                        resp.into_body().collect().await.ok()?;
                        Some(ok)
                    })
                    .await,
                    Ok(Some(true))
                ),
                Err(_) => false,
            };
            if !ok {
                errors.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
}

impl Relay {
    /// Listens on loopback for `transport` (HEP arrives over UDP) and posts to `url`.
    /// Like the spawned siphook, the relay runs on its own runtime and threads, so
    /// both pay the same hand-offs to and from the generator and the receiver.
    pub(crate) async fn start(transport: Transport, url: hyper::Uri) -> Result<Relay, BenchError> {
        let errors = Arc::new(AtomicU64::new(0));
        let stop = CancellationToken::new();
        let (bound_tx, bound_rx) = tokio::sync::oneshot::channel();
        let (errs, token) = (errors.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("null-relay".into())
            .spawn(move || {
                // Named for the CPU report (bench/cpu.rs).
                let runtime = match tokio::runtime::Builder::new_multi_thread()
                    .enable_all()
                    .thread_name("relay-rt")
                    .build()
                {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = bound_tx.send(Err(BenchError::Runtime(e)));
                        return;
                    }
                };
                runtime.block_on(serve(transport, url, errs, token, bound_tx));
            })
            .map_err(BenchError::Runtime)?;
        let bound = tokio::time::timeout(Duration::from_secs(10), bound_rx).await;
        let addr = match bound {
            Ok(Ok(Ok(addr))) => addr,
            Ok(Ok(Err(e))) => return Err(e),
            _ => {
                stop.cancel();
                return Err(BenchError::Timeout {
                    what: "the null relay to start",
                });
            }
        };
        Ok(Relay {
            addr,
            errors,
            stop,
            thread,
        })
    }

    /// Stops receiving; posts in flight are abandoned.
    pub(crate) async fn stop(self) {
        self.stop.cancel();
        let thread = self.thread;
        let _ = tokio::time::timeout(
            Duration::from_secs(10),
            tokio::task::spawn_blocking(move || thread.join()),
        )
        .await;
    }
}

/// Binds, says where, and relays until `stop`.
async fn serve(
    transport: Transport,
    url: hyper::Uri,
    errors: Arc<AtomicU64>,
    stop: CancellationToken,
    bound: tokio::sync::oneshot::Sender<Result<SocketAddr, BenchError>>,
) {
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let bind_err = |source| BenchError::Bind {
        what: "null relay",
        addr: any,
        source,
    };
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(MAX_IN_FLIGHT)
        .build(http);
    let poster = Poster {
        client,
        url,
        permits: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        errors,
    };
    match transport {
        Transport::Udp | Transport::Hep => {
            let socket = match crate::ingest::udp::bind(any, UDP_BUFFER)
                .and_then(|s| s.local_addr().map(|a| (s, a)))
            {
                Ok((socket, addr)) => {
                    let _ = bound.send(Ok(addr));
                    socket
                }
                Err(e) => {
                    let _ = bound.send(Err(bind_err(e)));
                    return;
                }
            };
            udp_loop(socket, poster, stop).await;
        }
        Transport::Tcp => {
            let listener = match TcpListener::bind(any).await {
                Ok(l) => l,
                Err(e) => {
                    let _ = bound.send(Err(bind_err(e)));
                    return;
                }
            };
            match listener.local_addr() {
                Ok(addr) => {
                    let _ = bound.send(Ok(addr));
                }
                Err(e) => {
                    let _ = bound.send(Err(bind_err(e)));
                    return;
                }
            }
            tcp_accept(listener, Arc::new(poster), stop).await;
        }
    }
}

/// Relays datagrams until `stop` (which the run always fires, within its deadline).
async fn udp_loop(socket: tokio::net::UdpSocket, poster: Poster, stop: CancellationToken) {
    let mut buf = vec![0u8; 65_535];
    let mut tasks = JoinSet::new();
    loop {
        let received = tokio::select! {
            _ = stop.cancelled() => break,
            r = socket.recv_from(&mut buf) => r,
        };
        match received {
            Ok((n, _)) => {
                let body = Bytes::copy_from_slice(&buf[..n]);
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = poster.post(body, &mut tasks) => {}
                }
            }
            // ICMP errors surface on UDP sockets; nothing to do but go on.
            Err(_) => tokio::time::sleep(Duration::from_millis(1)).await,
        }
    }
    tasks.shutdown().await;
}

async fn tcp_accept(listener: TcpListener, poster: Arc<Poster>, stop: CancellationToken) {
    let mut conns = JoinSet::new();
    loop {
        while conns.try_join_next().is_some() {}
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, _)) if conns.len() < MAX_CONNECTIONS => {
                conns.spawn(tcp_conn(stream, poster.clone(), stop.clone()));
            }
            Ok(_) => {}
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    conns.shutdown().await;
}

/// Cuts a stream into messages by Content-Length (all the framing SIP over TCP
/// needs from the generator) and relays each, until EOF, an oversized message, or
/// `stop`.
async fn tcp_conn(mut stream: TcpStream, poster: Arc<Poster>, stop: CancellationToken) {
    let _ = stream.set_nodelay(true);
    let mut buf = BytesMut::with_capacity(MAX_MESSAGE);
    let mut tasks = JoinSet::new();
    loop {
        while let Some(len) = frame_len(&buf) {
            let msg = buf.split_to(len).freeze();
            poster.post(msg, &mut tasks).await;
        }
        if buf.len() > MAX_MESSAGE {
            break;
        }
        // Keep-alive CRLFs between messages.
        while buf.starts_with(b"\r\n") {
            buf.advance(2);
        }
        let read = tokio::select! {
            _ = stop.cancelled() => break,
            r = stream.read_buf(&mut buf) => r,
        };
        match read {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    // Let what was read go out before the connection's tasks are dropped.
    let _ = tokio::time::timeout(POST_TIMEOUT, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
}

/// Length of the whole message at the start of `buf`, once it is all there.
fn frame_len(buf: &[u8]) -> Option<usize> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&buf[..end]).ok()?;
    let body = super::flow::header(head.split_once("\r\n")?.1, "Content-Length")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    let total = end.checked_add(body)?;
    (buf.len() >= total).then_some(total)
}

#[cfg(test)]
mod tests {
    use super::frame_len;

    #[test]
    fn frames_by_content_length() {
        let one = b"BYE sip:x SIP/2.0\r\nCall-ID: a\r\nContent-Length: 2\r\n\r\nhi";
        assert_eq!(frame_len(one), Some(one.len()));
        assert_eq!(frame_len(&one[..one.len() - 1]), None);
        let none = b"ACK sip:x SIP/2.0\r\nCall-ID: a\r\n\r\nNEXT";
        assert_eq!(frame_len(none), Some(none.len() - 4));
    }
}
