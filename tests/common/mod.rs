//! Shared test harness: starts siphook in-process on loopback port 0, speaks SIP to
//! it over real sockets, and collects events, validating each against the
//! published JSON Schema.

#![allow(dead_code)]

pub mod admin;
pub mod nats;
pub mod process;
pub mod receiver;
pub mod stage;
pub mod timeline;
pub mod wire;

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;
use siphook::config::Config;
use siphook::metrics::Metrics;
use siphook::pipeline::Gateway;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UdpSocket};

/// Longest any single wait in a test may take before it fails.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// A whole answered call's events, in order.
pub const FOUR: [&str; 4] = [
    "call.initiated",
    "call.ringing",
    "call.answered",
    "call.completed",
];

fn schema() -> &'static jsonschema::Validator {
    static SCHEMA: OnceLock<jsonschema::Validator> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/docs/events.schema.json"
        ))
        .expect("docs/events.schema.json is readable");
        let json: Value = serde_json::from_str(&text).expect("schema is JSON");
        jsonschema::validator_for(&json).expect("schema compiles")
    })
}

/// Every way an event's JSON violates `docs/events.schema.json`.
pub fn schema_errors(event: &Value) -> Vec<String> {
    schema()
        .iter_errors(event)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

/// Asserts an event's JSON matches `docs/events.schema.json`.
pub fn assert_valid(event: &Value) {
    let errors: Vec<String> = schema()
        .iter_errors(event)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "event violates schema: {errors:?}\n{event:#}"
    );
}

/// Config for tests: loopback port 0 on both transports, short timers.
pub fn test_config() -> Config {
    let mut c = Config::default();
    c.sip.udp = vec!["127.0.0.1:0".parse().unwrap()];
    c.sip.tcp = vec!["127.0.0.1:0".parse().unwrap()];
    c.admin.listen = Some("127.0.0.1:0".parse().unwrap());
    c
}

/// A running siphook plus a client socket aimed at it.
pub struct Harness {
    pub gw: Gateway,
    pub udp: UdpSocket,
    pub udp_target: SocketAddr,
    pub tcp_target: SocketAddr,
    marker: u32,
}

impl Harness {
    pub async fn start() -> Harness {
        Harness::with_config(test_config()).await
    }

    pub async fn with_config(config: Config) -> Harness {
        let gw = Gateway::start(&config, Metrics::new())
            .await
            .expect("gateway starts");
        let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let udp_target = gw.udp_addrs[0];
        let tcp_target = gw.tcp_addrs.first().copied().unwrap_or(udp_target);
        Harness {
            gw,
            udp,
            udp_target,
            tcp_target,
            marker: 0,
        }
    }

    pub async fn send(&self, msg: &str) {
        self.udp
            .send_to(msg.as_bytes(), self.udp_target)
            .await
            .unwrap();
    }

    pub async fn send_all(&self, msgs: &[String]) {
        for m in msgs {
            self.send(m).await;
        }
    }

    pub async fn tcp(&self) -> TcpStream {
        TcpStream::connect(self.tcp_target).await.unwrap()
    }

    /// A whole answered call written on `stream` comes out as its four events,
    /// with TCP as its transport: proof that a TCP peer is still served.
    pub async fn call_on(&mut self, stream: &mut TcpStream, id: &str) {
        use tokio::io::AsyncWriteExt;
        let call = CallSpec::new(id);
        stream
            .write_all(call.answered_flow().concat().as_bytes())
            .await
            .unwrap();
        let ev = self.expect_answered_calls(1).await;
        assert_eq!(ev[0]["call"]["signaling"]["transport"], "tcp");
        assert_eq!(ev[0]["call"]["sip_call_id"], id);
    }

    /// `siphook_tcp_connections_closed_total{reason}`: why TCP connections ended.
    pub fn tcp_closed(&self, reason: &str) -> f64 {
        self.metric(
            "siphook_tcp_connections_closed_total",
            &[("reason", reason)],
        )
    }

    /// The next event, schema-checked, as JSON.
    pub async fn next_event(&mut self) -> Value {
        let event = tokio::time::timeout(DEADLINE, self.gw.events.recv())
            .await
            .expect("an event within the deadline")
            .expect("event stream open");
        let json: Value = serde_json::from_slice(&event.to_json()).unwrap();
        assert_valid(&json);
        json
    }

    /// The next `n` events.
    pub async fn events(&mut self, n: usize) -> Vec<Value> {
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(self.next_event().await);
        }
        v
    }

    /// Takes `calls` complete answered calls' worth of events (4 each) and asserts
    /// every call got exactly initiated, ringing, answered, completed, in order.
    /// Returns the events for further checks.
    pub async fn expect_answered_calls(&mut self, calls: usize) -> Vec<Value> {
        let mut per_call: std::collections::HashMap<String, Vec<String>> = Default::default();
        let mut all = Vec::with_capacity(calls * 4);
        for _ in 0..calls * 4 {
            let e = self.next_event().await;
            let call = e["call"]["sip_call_id"].as_str().unwrap().to_owned();
            per_call
                .entry(call)
                .or_default()
                .push(e["type"].as_str().unwrap().to_owned());
            all.push(e);
        }
        assert_eq!(
            per_call.len(),
            calls,
            "events of {} calls, wanted {calls}",
            per_call.len()
        );
        for (id, t) in &per_call {
            assert_eq!(
                t,
                &[
                    "call.initiated",
                    "call.ringing",
                    "call.answered",
                    "call.completed"
                ],
                "{id}"
            );
        }
        all
    }

    /// Sends a fresh INVITE on UDP and returns every event that arrived before its
    /// `call.initiated`. UDP messages from one socket are handled in order, so this
    /// proves what earlier messages did, and did not, emit.
    pub async fn barrier(&mut self) -> Vec<Value> {
        self.marker += 1;
        let call = CallSpec::new(&format!("barrier-{}", self.marker));
        self.send(&call.invite(1)).await;
        self.collect_until_marker(&call.call_id).await
    }

    /// Like [`Harness::barrier`] but the marker travels on `stream`.
    pub async fn barrier_tcp(&mut self, stream: &mut TcpStream) -> Vec<Value> {
        self.marker += 1;
        let call = CallSpec::new(&format!("barrier-tcp-{}", self.marker));
        stream.write_all(call.invite(1).as_bytes()).await.unwrap();
        self.collect_until_marker(&call.call_id).await
    }

    async fn collect_until_marker(&mut self, call_id: &str) -> Vec<Value> {
        let mut before = Vec::new();
        loop {
            let e = self.next_event().await;
            if e["call"]["sip_call_id"] == call_id {
                return before;
            }
            before.push(e);
        }
    }

    /// Value of a counter or gauge sample, summed over samples whose labels
    /// include every pair in `labels`.
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        metric_value(&self.gw.metrics, name, labels)
    }

    /// Polls a metric until it reaches `at_least` or the deadline passes.
    pub async fn wait_metric(&self, name: &str, labels: &[(&str, &str)], at_least: f64) {
        let start = tokio::time::Instant::now();
        loop {
            let v = self.metric(name, labels);
            if v >= at_least {
                return;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "{name}{labels:?} stayed at {v}, wanted {at_least}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

pub fn metric_value(metrics: &Metrics, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut total = 0.0;
    for family in metrics.registry.gather() {
        if family.name() != name {
            continue;
        }
        let is_counter = family.get_field_type() == prometheus::proto::MetricType::COUNTER;
        for m in family.get_metric() {
            let pairs: Vec<(&str, &str)> = m
                .get_label()
                .iter()
                .map(|l| (l.name(), l.value()))
                .collect();
            if labels.iter().all(|want| pairs.contains(want)) {
                total += if is_counter {
                    m.get_counter().get_value()
                } else {
                    m.get_gauge().get_value()
                };
            }
        }
    }
    total
}

/// The bearer token `binary_config` writes for the admin API.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789abcdef";

/// A free loopback port (bound and released; the race with another process is
/// accepted in tests).
pub fn free_port(udp: bool) -> u16 {
    if udp {
        std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    } else {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }
}

/// Writes a config for running the real binary: SIP on a free loopback UDP port,
/// the admin API on a free loopback TCP port with [`ADMIN_TOKEN`], the outbox in
/// `dir`, one endpoint `crm` posting to `url` with `extra` keys.
/// Returns the config path and the SIP address; [`admin_addr`] reads the admin one.
pub fn binary_config(
    dir: &std::path::Path,
    url: &str,
    extra: &str,
) -> (std::path::PathBuf, String) {
    let target = format!("127.0.0.1:{}", free_port(true));
    let admin = format!("127.0.0.1:{}", free_port(false));
    let token = dir.join("admin.token");
    std::fs::write(&token, format!("{ADMIN_TOKEN}\n")).unwrap();
    let config = dir.join("siphook.toml");
    let text = format!(
        "[sip]\nudp = [\"{target}\"]\ntcp = []\n[outbox]\npath = \"{}\"\n[admin]\nlisten = \"{admin}\"\ntoken_file = \"{}\"\n[[endpoints]]\nname = \"crm\"\nurl = \"{url}\"\nallow_http = true\nsecrets = [\"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"]\n{extra}\n",
        dir.join("outbox").display(),
        token.display(),
    );
    std::fs::write(&config, text).unwrap();
    (config, target)
}

/// The admin listener address a config file names.
pub fn admin_addr(config: &std::path::Path) -> std::net::SocketAddr {
    Config::load(config).unwrap().admin.listen.unwrap()
}

/// Event types of a list, in order.
pub fn types(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["type"].as_str().unwrap()).collect()
}

/// Milliseconds since the epoch of an RFC 3339 timestamp field.
pub fn ms(v: &Value) -> i64 {
    let s = v
        .as_str()
        .unwrap_or_else(|| panic!("timestamp expected, got {v}"));
    let t = humantime::parse_rfc3339(s).unwrap();
    t.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

/// One call's identifiers, and builders for the messages of its dialog.
#[derive(Clone)]
pub struct CallSpec {
    pub call_id: String,
    pub from_tag: String,
    pub from: String,
    pub to: String,
    pub ruri: String,
}

impl CallSpec {
    pub fn new(call_id: &str) -> CallSpec {
        CallSpec {
            call_id: call_id.to_string(),
            from_tag: format!("ft-{call_id}"),
            from: "\"Alice\" <sip:+15557654321@10.0.0.1>".into(),
            to: "<sip:+15551234567@10.0.0.2>".into(),
            ruri: "sip:+15551234567@10.0.0.2".into(),
        }
    }

    /// A request from the caller with a given branch and optional To tag.
    // Every part of a SIP request line and dialog varies across scenarios.
    #[allow(clippy::too_many_arguments)]
    pub fn request(
        &self,
        method: &str,
        cseq: u32,
        cseq_method: &str,
        to_tag: Option<&str>,
        branch: &str,
        extra: &[&str],
        body: &str,
    ) -> String {
        let to_tag = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
        let mut m = format!(
            "{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK{branch}\r\nMax-Forwards: 70\r\nFrom: {from};tag={ft}\r\nTo: {to}{to_tag}\r\nCall-ID: {cid}\r\nCSeq: {cseq} {cseq_method}\r\nContact: <sip:alice@10.0.0.1:5060>\r\nUser-Agent: siphook-test\r\n",
            ruri = self.ruri,
            from = self.from,
            ft = self.from_tag,
            to = self.to,
            cid = self.call_id,
        );
        for h in extra {
            m.push_str(h);
            m.push_str("\r\n");
        }
        m.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        m
    }

    /// A request from the callee (To and From swapped) inside the dialog.
    pub fn callee_request(
        &self,
        method: &str,
        cseq: u32,
        to_tag: &str,
        extra: &[&str],
        body: &str,
    ) -> String {
        let mut m = format!(
            "{method} sip:alice@10.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bKcallee{cseq}{method}\r\nFrom: {to};tag={to_tag}\r\nTo: {from};tag={ft}\r\nCall-ID: {cid}\r\nCSeq: {cseq} {method}\r\n",
            from = self.from,
            ft = self.from_tag,
            to = self.to,
            cid = self.call_id,
        );
        for h in extra {
            m.push_str(h);
            m.push_str("\r\n");
        }
        m.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        m
    }

    pub fn invite(&self, cseq: u32) -> String {
        self.request(
            "INVITE",
            cseq,
            "INVITE",
            None,
            &format!("inv{cseq}"),
            &[],
            "",
        )
    }

    pub fn invite_with(&self, cseq: u32, extra: &[&str]) -> String {
        self.request(
            "INVITE",
            cseq,
            "INVITE",
            None,
            &format!("inv{cseq}"),
            extra,
            "",
        )
    }

    pub fn ack(&self, cseq: u32, to_tag: &str) -> String {
        self.request(
            "ACK",
            cseq,
            "ACK",
            Some(to_tag),
            &format!("ack{cseq}"),
            &[],
            "",
        )
    }

    pub fn bye(&self, cseq: u32, to_tag: &str) -> String {
        self.request(
            "BYE",
            cseq,
            "BYE",
            Some(to_tag),
            &format!("bye{cseq}"),
            &[],
            "",
        )
    }

    pub fn cancel(&self, cseq: u32) -> String {
        self.request(
            "CANCEL",
            cseq,
            "CANCEL",
            None,
            &format!("inv{cseq}"),
            &[],
            "",
        )
    }

    /// A response to one of the caller's requests.
    #[allow(clippy::too_many_arguments)]
    pub fn response(
        &self,
        status: u16,
        reason: &str,
        cseq: u32,
        method: &str,
        to_tag: Option<&str>,
        extra: &[&str],
        body: &str,
    ) -> String {
        let to_tag = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
        let mut m = format!(
            "SIP/2.0 {status} {reason}\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKresp{cseq}\r\nFrom: {from};tag={ft}\r\nTo: {to}{to_tag}\r\nCall-ID: {cid}\r\nCSeq: {cseq} {method}\r\n",
            from = self.from,
            ft = self.from_tag,
            to = self.to,
            cid = self.call_id,
        );
        for h in extra {
            m.push_str(h);
            m.push_str("\r\n");
        }
        m.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        m
    }

    pub fn resp(&self, status: u16, cseq: u32, method: &str, to_tag: Option<&str>) -> String {
        self.response(status, "Reason", cseq, method, to_tag, &[], "")
    }

    /// A response to one of the callee's requests (From is the callee).
    pub fn callee_response(
        &self,
        status: u16,
        cseq: u32,
        method: &str,
        to_tag: &str,
        extra: &[&str],
    ) -> String {
        let mut m = format!(
            "SIP/2.0 {status} OK\r\nVia: SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bKcallee{cseq}{method}\r\nFrom: {to};tag={to_tag}\r\nTo: {from};tag={ft}\r\nCall-ID: {cid}\r\nCSeq: {cseq} {method}\r\n",
            from = self.from,
            ft = self.from_tag,
            to = self.to,
            cid = self.call_id,
        );
        for h in extra {
            m.push_str(h);
            m.push_str("\r\n");
        }
        m.push_str("Content-Length: 0\r\n\r\n");
        m
    }

    /// The whole of a basic answered call: INVITE, 100, 180, 200, ACK, BYE, 200.
    pub fn answered_flow(&self) -> Vec<String> {
        vec![
            self.invite(1),
            self.resp(100, 1, "INVITE", None),
            self.resp(180, 1, "INVITE", Some("callee")),
            self.resp(200, 1, "INVITE", Some("callee")),
            self.ack(1, "callee"),
            self.bye(2, "callee"),
            self.resp(200, 2, "BYE", Some("callee")),
        ]
    }
}

/// siphook in-process with delivery: SIP on loopback, the outbox in a fresh temp
/// dir, `endpoints` (TOML `[[endpoints]]` tables) delivering.
pub async fn start_delivery(
    endpoints: &str,
) -> (Harness, siphook::deliver::Delivery, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[sip]\nudp = [\"127.0.0.1:0\"]\ntcp = []\n[outbox]\npath = \"{}\"\n{endpoints}",
        dir.path().join("outbox").display()
    );
    let config = Config::parse(&text).unwrap();
    let mut h = Harness::with_config(config.clone()).await;
    let events = std::mem::replace(&mut h.gw.events, tokio::sync::mpsc::channel(1).1);
    let outbox = siphook::deliver::open_outbox(&config).unwrap();
    let delivery =
        siphook::deliver::Delivery::start(&config, outbox, events, None, h.gw.metrics.clone())
            .unwrap();
    (h, delivery, dir)
}

/// A histogram's observation count, and how many observations were at most `le`
/// (an upper bound the histogram has as a bucket).
pub fn histogram_at_most(metrics: &Metrics, name: &str, le: f64) -> (u64, u64) {
    for family in metrics.registry.gather() {
        if family.name() != name {
            continue;
        }
        let (mut count, mut within) = (0, 0);
        for m in family.get_metric() {
            let h = m.get_histogram();
            count += h.get_sample_count();
            within += h
                .get_bucket()
                .iter()
                .find(|b| b.upper_bound() == le)
                .unwrap_or_else(|| panic!("{name} has no bucket le={le}"))
                .cumulative_count();
        }
        return (count, within);
    }
    (0, 0)
}

/// HMAC-SHA256 written out from RFC 2104, independent of the `hmac` crate siphook uses.
pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&sha2::Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let pad = |b: u8| k.iter().map(|x| x ^ b).collect::<Vec<u8>>();
    let inner = sha2::Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(msg)
        .finalize();
    sha2::Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

/// The `call.initiated` event the real tracker makes of an INVITE with this
/// Call-ID: for tests that fill an outbox directly.
/// Opens the outbox at `path`, retrying while a previous handle's sled threads
/// still hold it (they let go a moment after the drop).
pub async fn reopen_outbox(path: &std::path::Path) -> siphook::outbox::Outbox {
    let started = std::time::Instant::now();
    loop {
        match siphook::outbox::Outbox::open(path, 1 << 30) {
            Ok(ob) => return ob,
            Err(e) => assert!(started.elapsed() < DEADLINE, "outbox stays locked: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn initiated_event(call_id: &str) -> siphook::call::Event {
    use siphook::call::{Tracker, TrackerConfig};
    use siphook::vocab::{Meta, Timestamp, Transport};
    let mut t = Tracker::new(TrackerConfig::from(&Config::default().sip));
    let msg = siphook::sip::parse(
        CallSpec::new(call_id).invite(1).as_bytes(),
        &siphook::sip::ParseOptions::default(),
    )
    .expect("a valid INVITE");
    let meta = Meta {
        transport: Transport::Udp,
        source: "10.0.0.1:5060".parse().expect("address"),
        destination: "10.0.0.2:5060".parse().expect("address"),
        received_at: Timestamp(1_795_330_800_000),
    };
    let mut out = Vec::new();
    t.on_message(&msg, &meta, &mut out).expect("tracked");
    out.remove(0)
}

/// siphook closes `stream` (a read sees the end, or a reset) within [`DEADLINE`].
pub async fn closed_by_peer(stream: &mut TcpStream) {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 64];
    let r = tokio::time::timeout(DEADLINE, stream.read(&mut buf))
        .await
        .expect("siphook closes the connection");
    assert!(matches!(r, Ok(0) | Err(_)), "expected close, read {r:?}");
}
