//! A real hyper webhook receiver on loopback: answers from a script, records every
//! request it gets.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
    pub at: Instant,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }
}

/// How to answer one request.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    /// Wait this long before answering (a slow or hanging receiver).
    pub delay: Duration,
}

impl Reply {
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            headers: vec![],
            delay: Duration::ZERO,
        }
    }
}

/// Decides each answer: a script first, then a fallback.
pub type Policy = Arc<dyn Fn(&Received) -> Reply + Send + Sync>;

pub struct Receiver {
    pub addr: SocketAddr,
    pub requests: mpsc::UnboundedReceiver<Received>,
    script: Arc<Mutex<VecDeque<Reply>>>,
}

impl Receiver {
    /// Answers scripted replies in order, then whatever `fallback` says.
    pub async fn start(fallback: Policy) -> Receiver {
        Receiver::start_with(fallback, None).await
    }

    /// Like [`Receiver::start`], speaking HTTPS with `tls`.
    pub async fn start_with(fallback: Policy, tls: Option<Arc<rustls::ServerConfig>>) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Receiver::serve(listener, fallback, tls)
    }

    /// Like [`Receiver::start`] on a given address: an endpoint that was down
    /// (nothing listening on its port) comes back.
    pub async fn start_on(addr: SocketAddr, fallback: Policy) -> Receiver {
        let listener = TcpListener::bind(addr).await.unwrap();
        Receiver::serve(listener, fallback, None)
    }

    fn serve(
        listener: TcpListener,
        fallback: Policy,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Receiver {
        let addr = listener.local_addr().unwrap();
        let (tx, requests) = mpsc::unbounded_channel();
        let script: Arc<Mutex<VecDeque<Reply>>> = Arc::default();
        let s = script.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (tx, s, fallback, tls) = (tx.clone(), s.clone(), fallback.clone(), tls.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let (tx, s, fallback) = (tx.clone(), s.clone(), fallback.clone());
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let got = Received {
                                headers: parts.headers,
                                body,
                                at: Instant::now(),
                            };
                            let reply = s
                                .lock()
                                .unwrap()
                                .pop_front()
                                .unwrap_or_else(|| fallback(&got));
                            let _ = tx.send(got);
                            tokio::time::sleep(reply.delay).await;
                            let mut resp = Response::builder().status(reply.status);
                            for (k, v) in &reply.headers {
                                resp = resp.header(*k, v);
                            }
                            Ok::<_, Infallible>(
                                resp.body(Full::new(Bytes::from_static(b"ok"))).unwrap(),
                            )
                        }
                    });
                    match tls {
                        Some(cfg) => {
                            let Ok(stream) =
                                tokio_rustls::TlsAcceptor::from(cfg).accept(stream).await
                            else {
                                return;
                            };
                            let _ = http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                        None => {
                            let _ = http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                    }
                });
            }
        });
        Receiver {
            addr,
            requests,
            script,
        }
    }

    pub async fn ok() -> Receiver {
        Receiver::start(Arc::new(|_| Reply::status(200))).await
    }

    /// Queues replies for the next requests.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.script.lock().unwrap().extend(replies);
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    pub async fn next(&mut self) -> Received {
        tokio::time::timeout(super::DEADLINE, self.requests.recv())
            .await
            .expect("a webhook within the deadline")
            .unwrap()
    }
}
