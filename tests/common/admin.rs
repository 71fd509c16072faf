//! A plain HTTP/1.1 client for siphook's admin listener, and a reader for the
//! Prometheus text format, so tests assert on what an SRE's tools would see.

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use siphook::config::Config;
use siphook::pipeline::{Bound, EventOutput, ServeOptions, Signal, serve};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

use super::DEADLINE;

/// One admin response.
#[derive(Debug)]
pub struct AdminReply {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl AdminReply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

/// Sends one request to the admin listener at `addr`; `token` becomes a bearer
/// `Authorization` header; `body`, when given, is sent as JSON.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<serde_json::Value>,
) -> AdminReply {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let body = match body {
        Some(b) => {
            req = req.header("content-type", "application/json");
            Bytes::from(serde_json::to_vec(&b).unwrap())
        }
        None => Bytes::new(),
    };
    let resp = tokio::time::timeout(DEADLINE, client.request(req.body(Full::new(body)).unwrap()))
        .await
        .expect("admin answers within the deadline")
        .expect("admin request");
    let (parts, mut body) = resp.into_parts();
    let streaming = parts
        .headers
        .get("content-type")
        .is_some_and(|c| c.as_bytes().starts_with(b"text/event-stream"));
    let body = if streaming {
        // A stream never ends: its first frame (the opening comment) is the body.
        let frame = tokio::time::timeout(DEADLINE, body.frame())
            .await
            .expect("the stream's first frame within the deadline");
        frame
            .and_then(|f| f.ok())
            .and_then(|f| f.into_data().ok())
            .unwrap_or_default()
    } else {
        body.collect().await.expect("admin body").to_bytes()
    };
    AdminReply {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    }
}

/// GET with the token.
pub async fn get(addr: SocketAddr, path: &str, token: &str) -> AdminReply {
    request(addr, "GET", path, Some(token), None).await
}

/// POST with the token and a JSON body.
pub async fn post(
    addr: SocketAddr,
    path: &str,
    token: &str,
    body: serde_json::Value,
) -> AdminReply {
    request(addr, "POST", path, Some(token), Some(body)).await
}

/// One sample of the Prometheus text format.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// Parses the Prometheus text exposition format (what `/metrics` serves).
pub fn parse_metrics(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("sample line has a value");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series.to_owned(), Vec::new()),
            Some((name, rest)) => {
                let rest = rest.strip_suffix('}').expect("labels end with }");
                let mut labels = Vec::new();
                for pair in split_labels(rest) {
                    let (k, v) = pair.split_once('=').expect("label has =");
                    labels.push((k.to_owned(), v.trim_matches('"').replace("\\\"", "\"")));
                }
                (name.to_owned(), labels)
            }
        };
        out.push(Sample {
            name,
            labels,
            value,
        });
    }
    out
}

fn split_labels(s: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let (mut cur, mut quoted, mut escaped) = (String::new(), false, false);
    for c in s.chars() {
        match c {
            _ if escaped => {
                cur.push(c);
                escaped = false;
                continue;
            }
            '\\' => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                parts.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    if !cur.is_empty() {
        parts.push(cur);
    }
    parts
}

/// Sum of the samples named `name` whose labels include every pair of `labels`.
pub fn sum(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .map(|s| s.value)
        .sum()
}

/// Whether any sample is named `name`.
pub fn has(samples: &[Sample], name: &str) -> bool {
    samples.iter().any(|s| s.name == name)
}

/// Polls `/metrics` until `name{labels}` reaches `at_least`, returning the last
/// scrape; fails at the deadline.
pub async fn wait_metric(
    addr: SocketAddr,
    name: &str,
    labels: &[(&str, &str)],
    at_least: f64,
) -> Vec<Sample> {
    let start = tokio::time::Instant::now();
    loop {
        let samples = parse_metrics(&request(addr, "GET", "/metrics", None, None).await.text());
        let v = sum(&samples, name, labels);
        if v >= at_least {
            return samples;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "{name}{labels:?} stayed at {v}, wanted {at_least}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// `/v1/endpoints`' entry for endpoint `name` (with [`super::ADMIN_TOKEN`]).
pub async fn endpoint(addr: SocketAddr, name: &str) -> serde_json::Value {
    let reply = get(addr, "/v1/endpoints", super::ADMIN_TOKEN).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()["items"]
        .as_array()
        .and_then(|a| a.iter().find(|e| e["name"] == name).cloned())
        .unwrap_or_else(|| panic!("{name} is listed"))
}

/// The admin token [`start`] writes to its file.
pub const TOKEN: &str = "admin-test-token-please-keep-out";

/// A siphook started in-process through `serve`, the binary's own path.
pub struct Running {
    pub bound: Bound,
    pub signals: mpsc::Sender<Signal>,
    pub task: tokio::task::JoinHandle<Result<(), siphook::pipeline::ServeError>>,
    pub sip: UdpSocket,
    /// The configuration it was started with, to reload it (changed or not).
    pub text: String,
    _dir: tempfile::TempDir,
}

impl Running {
    pub fn admin(&self) -> std::net::SocketAddr {
        self.bound.admin.expect("admin listener")
    }

    pub async fn send(&self, msgs: &[String]) {
        for m in msgs {
            self.sip
                .send_to(m.as_bytes(), self.bound.udp[0])
                .await
                .unwrap();
        }
    }

    /// One answered call (both sides, as a mirror sends it) per name.
    pub async fn send_calls(&self, names: &[&str]) {
        for n in names {
            self.send(&super::CallSpec::new(n).answered_flow()).await;
        }
    }

    /// `/v1/endpoints`' entry for endpoint `name` (with [`TOKEN`]).
    pub async fn endpoint(&self, name: &str) -> serde_json::Value {
        let reply = get(self.admin(), "/v1/endpoints", TOKEN).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        reply.json()["items"]
            .as_array()
            .and_then(|a| a.iter().find(|e| e["name"] == name).cloned())
            .unwrap_or_else(|| panic!("{name} is listed"))
    }

    /// Polls endpoint `name` until it is in `state` with `pending` events.
    pub async fn wait_endpoint(&self, name: &str, state: &str, pending: u64) -> serde_json::Value {
        let started = tokio::time::Instant::now();
        loop {
            let ep = self.endpoint(name).await;
            if ep["state"] == state && ep["pending"] == pending {
                return ep;
            }
            assert!(
                started.elapsed() < DEADLINE,
                "wanted {state} with {pending} pending: {ep:#}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    pub async fn stop(self) {
        self.signals.send(Signal::Stop).await.unwrap();
        tokio::time::timeout(DEADLINE, self.task)
            .await
            .expect("serve stops")
            .unwrap()
            .expect("clean stop");
    }
}

/// Starts siphook with `extra` TOML appended (endpoints, limits); the admin token
/// is written to a file unless `token` is false.
pub async fn start(extra: &str, token: bool) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let token_line = if token {
        let path = dir.path().join("admin.token");
        std::fs::write(&path, format!("{TOKEN}\n")).unwrap();
        format!("token_file = \"{}\"\n", path.display())
    } else {
        String::new()
    };
    let text = format!(
        "[sip]\nudp = [\"127.0.0.1:0\"]\ntcp = []\n[admin]\nlisten = \"127.0.0.1:0\"\n{token_line}[service]\nshutdown_grace = \"1s\"\n[outbox]\npath = \"{}\"\n{extra}",
        dir.path().join("outbox").display()
    );
    let config = Config::parse(&text).unwrap();
    let (ready, bound) = oneshot::channel();
    let (signals, signals_rx) = mpsc::channel(4);
    let opts = ServeOptions {
        output: EventOutput::Quiet,
        log: None,
        ready: Some(ready),
    };
    let task = tokio::spawn(serve(config, opts, signals_rx));
    let bound = tokio::time::timeout(DEADLINE, bound)
        .await
        .expect("ready in time")
        .expect("serve started");
    Running {
        bound,
        signals,
        task,
        sip: UdpSocket::bind("127.0.0.1:0").await.unwrap(),
        text,
        _dir: dir,
    }
}

/// One Server-Sent Events message, or a comment line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseMessage {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
    /// Comment lines (`: …`) of this block, without the colon.
    pub comments: Vec<String>,
}

/// A client of `/v1/events/stream`, reading whole SSE blocks.
pub struct Sse {
    body: hyper::body::Incoming,
    buf: Vec<u8>,
    pub status: u16,
}

impl Sse {
    /// Opens the stream with the token, `query` (e.g. `?types=call.*`) and an
    /// optional `Last-Event-ID`.
    pub async fn open(addr: SocketAddr, query: &str, last_event_id: Option<&str>) -> Sse {
        let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let mut req = hyper::Request::builder()
            .uri(format!("http://{addr}/v1/events/stream{query}"))
            .header("authorization", format!("Bearer {TOKEN}"));
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id);
        }
        let resp =
            tokio::time::timeout(DEADLINE, client.request(req.body(Full::default()).unwrap()))
                .await
                .expect("stream answers within the deadline")
                .expect("stream request");
        let status = resp.status().as_u16();
        Sse {
            body: resp.into_body(),
            buf: Vec::new(),
            status,
        }
    }

    /// The next block (an event, or comments only); `None` once the stream ends.
    pub async fn next(&mut self) -> Option<SseMessage> {
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = self.buf.drain(..end + 2).collect();
                let text = String::from_utf8(block).expect("UTF-8 stream");
                let mut m = SseMessage::default();
                let mut data = Vec::new();
                for line in text.lines() {
                    if let Some(c) = line.strip_prefix(':') {
                        m.comments.push(c.trim().to_owned());
                    } else if let Some((k, v)) = line.split_once(": ") {
                        match k {
                            "id" => m.id = Some(v.to_owned()),
                            "event" => m.event = Some(v.to_owned()),
                            "data" => data.push(v.to_owned()),
                            _ => {}
                        }
                    }
                }
                m.data = data.join("\n");
                return Some(m);
            }
            let frame = tokio::time::timeout(DEADLINE, self.body.frame())
                .await
                .expect("a stream frame within the deadline")?;
            match frame.ok()?.into_data() {
                Ok(d) => self.buf.extend_from_slice(&d),
                Err(_) => return None,
            }
        }
    }

    /// The next block that is an event (comments skipped).
    pub async fn next_event(&mut self) -> SseMessage {
        loop {
            let m = self.next().await.expect("the stream goes on");
            if m.event.is_some() {
                return m;
            }
        }
    }
}
