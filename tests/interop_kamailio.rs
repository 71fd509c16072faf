//! Interop with a real proxy and its real mirror: Kamailio 5.6, as a stateful
//! record-routing proxy (tests/kamailio/proxy.cfg), carries calls between SIPp
//! callers and callees (tests/sipp/proxy_*.xml) and mirrors every request and
//! reply it receives or sends to siphook with its siptrace module: once as plain
//! SIP copies carrying `X-Siptrace-Fromip/Toip/Time` (`duplicate_uri` with
//! `xheaders_write`), once as HEPv3 (`hep_mode_on`).
//!
//! For each call siphook must emit exactly the documented events, each once
//! although the mirror shows every message twice (as received and as forwarded,
//! and a third time for a second fork), numbered 1..n, with the outcome of
//! docs/events.md, and name the caller and the proxy as the initial INVITE's
//! source and destination: the original packet's addresses, not the mirror's.
//! SIPp must finish each call without error: the call itself worked.
//!
//! CI installs kamailio and sipp (.ci/run). A missing tool fails the test when
//! `CI` or `SIPHOOK_REQUIRE_TOOLS` is set; elsewhere it is a loud skip.

mod common;

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{DEADLINE, Harness, free_port, ms, test_config, types};
use serde_json::{Value, json};
use tokio::net::UdpSocket;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// The caller's number: the From user of every `proxy_uac_*.xml`.
const CALLER: &str = "+15557654321";
/// The called number: SIPp's `-s`, the Request-URI and To user.
const CALLED: &str = "+15551234567";
/// SIPp gives up on a call after this long (its `-timeout`, seconds).
const SIPP_TIMEOUT_S: &str = "15";

fn tools_required() -> bool {
    let set =
        |name: &str| std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "0" && v != "false");
    set("CI") || set("SIPHOOK_REQUIRE_TOOLS")
}

/// Whether `program -v` runs.
fn runs(program: &str) -> bool {
    Command::new(program)
        .arg("-v")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Kamailio's binary: on PATH, or in an sbin directory (which a non-root user's
/// PATH on Debian lacks).
fn kamailio_bin() -> Option<&'static str> {
    static BIN: OnceLock<Option<&'static str>> = OnceLock::new();
    *BIN.get_or_init(|| {
        ["kamailio", "/usr/sbin/kamailio", "/usr/local/sbin/kamailio"]
            .into_iter()
            .find(|b| runs(b))
    })
}

/// Whether kamailio and sipp are installed; if not, fails the test when tools are
/// required and says loudly that it was skipped otherwise.
fn tools_available() -> bool {
    let mut missing = Vec::new();
    if kamailio_bin().is_none() {
        missing.push("kamailio");
    }
    if !runs("sipp") {
        missing.push("sipp");
    }
    if missing.is_empty() {
        return true;
    }
    assert!(
        !tools_required(),
        "{missing:?} not installed, and CI or SIPHOOK_REQUIRE_TOOLS requires them \
         (apt-get install kamailio sip-tester)"
    );
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED: {missing:?} not installed (apt-get install kamailio sip-tester); \
         set SIPHOOK_REQUIRE_TOOLS=1 to make this a failure"
    );
    false
}

/// How Kamailio's siptrace hands its copies to siphook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mirror {
    /// Plain SIP to siphook's SIP UDP listener, with X-Siptrace-* headers.
    Duplicate,
    /// HEPv3 to siphook's HEP UDP listener.
    Hep,
}

impl Mirror {
    /// The `transport` label siphook counts these copies under.
    fn label(self) -> &'static str {
        match self {
            Mirror::Duplicate => "udp",
            Mirror::Hep => "hep",
        }
    }
}

/// What `call.completed` must say.
struct Outcome {
    disposition: &'static str,
    sip_status: Option<u16>,
    ended_by: &'static str,
    reason: Option<&'static str>,
    q850_cause: Option<u16>,
}

/// One call: the SIPp scenarios of each side and what siphook must report.
struct Scenario {
    /// Caller scenario (tests/sipp/), and extra SIPp arguments for it.
    uac: &'static str,
    uac_args: &'static [&'static str],
    /// Callee scenarios: one, or two for a parallel fork (the first answers).
    uas: &'static [&'static str],
    /// Extra SIPp arguments for the first callee.
    uas_args: &'static [&'static str],
    /// `sip.invite_timeout`, when the test needs it short.
    invite_timeout: Option<Duration>,
    /// The proxy's ringing timeout (tm `fr_inv_timer`), when the test needs it short.
    proxy_ring_timeout_ms: Option<u32>,
    events: &'static [&'static str],
    outcome: Outcome,
}

const NORMAL_CLEARING: Option<&str> = Some("Normal call clearing");

const ANSWERED: Scenario = Scenario {
    uac: "proxy_uac_answered.xml",
    uac_args: &[],
    uas: &["proxy_uas_answer.xml"],
    uas_args: &[],
    invite_timeout: None,
    proxy_ring_timeout_ms: None,
    events: &[
        "call.initiated",
        "call.ringing",
        "call.answered",
        "call.completed",
    ],
    outcome: Outcome {
        disposition: "answered",
        sip_status: Some(200),
        ended_by: "caller",
        reason: NORMAL_CLEARING,
        q850_cause: Some(16),
    },
};

const BUSY: Scenario = Scenario {
    uac: "proxy_uac_busy.xml",
    uac_args: &[],
    uas: &["proxy_uas_busy.xml"],
    uas_args: &[],
    invite_timeout: None,
    proxy_ring_timeout_ms: None,
    events: &["call.initiated", "call.completed"],
    outcome: Outcome {
        disposition: "busy",
        sip_status: Some(486),
        ended_by: "callee",
        reason: None,
        q850_cause: None,
    },
};

const CANCELLED: Scenario = Scenario {
    uac: "proxy_uac_cancel.xml",
    // Rings for 200 ms before the caller gives up.
    uac_args: &["-d", "200"],
    uas: &["proxy_uas_ring.xml"],
    uas_args: &[],
    invite_timeout: None,
    proxy_ring_timeout_ms: None,
    events: &["call.initiated", "call.ringing", "call.completed"],
    outcome: Outcome {
        disposition: "cancelled",
        sip_status: Some(487),
        ended_by: "caller",
        reason: None,
        q850_cause: None,
    },
};

const NO_ANSWER: Scenario = Scenario {
    uac: "proxy_uac_cancel.xml",
    // The caller gives up 2 s after the ringing, a second after siphook's
    // invite_timeout has ended the call: the CANCEL and 487 come too late to count.
    uac_args: &["-d", "2000"],
    uas: &["proxy_uas_ring.xml"],
    uas_args: &[],
    invite_timeout: Some(Duration::from_secs(1)),
    proxy_ring_timeout_ms: None,
    events: &["call.initiated", "call.ringing", "call.completed"],
    outcome: Outcome {
        disposition: "no_answer",
        sip_status: None,
        ended_by: "timeout",
        reason: Some("invite_timeout"),
        q850_cause: None,
    },
};

const PROXY_TIMEOUT: Scenario = Scenario {
    uac: "proxy_uac_proxy_timeout.xml",
    uac_args: &[],
    uas: &["proxy_uas_ring.xml"],
    uas_args: &[],
    invite_timeout: None,
    // Kamailio gives up on the ringing callee after a second: it answers the caller
    // 408 (with a To tag of its own) first, then CANCELs the callee, which answers
    // 487. The caller got 408 and never cancelled: with both legs in the mirror,
    // the 408 sent to the caller decides, and the proxy's CANCEL is not the
    // caller's (docs/events.md, "Both legs of a proxy").
    proxy_ring_timeout_ms: Some(1000),
    events: &["call.initiated", "call.ringing", "call.completed"],
    outcome: Outcome {
        disposition: "no_answer",
        sip_status: Some(408),
        ended_by: "callee",
        reason: None,
        q850_cause: None,
    },
};

const FORKED: Scenario = Scenario {
    uac: "proxy_uac_answered.xml",
    uac_args: &[],
    uas: &["proxy_uas_answer.xml", "proxy_uas_fork_loser.xml"],
    uas_args: &[],
    invite_timeout: None,
    proxy_ring_timeout_ms: None,
    events: &[
        "call.initiated",
        "call.ringing",
        "call.answered",
        "call.completed",
    ],
    outcome: Outcome {
        disposition: "answered",
        sip_status: Some(200),
        ended_by: "caller",
        reason: NORMAL_CLEARING,
        q850_cause: Some(16),
    },
};

const FORKED_ONE_BUSY: Scenario = Scenario {
    uac: "proxy_uac_answered.xml",
    uac_args: &[],
    // The second phone is busy and says so at once; the first rings 300 ms later
    // and answers. The proxy keeps the 486 to itself: the caller sees 180 and 200,
    // and the branch's 486, sent to the proxy only, does not end the call.
    uas: &["proxy_uas_answer.xml", "proxy_uas_busy.xml"],
    uas_args: &["-d", "300"],
    invite_timeout: None,
    proxy_ring_timeout_ms: None,
    events: &[
        "call.initiated",
        "call.ringing",
        "call.answered",
        "call.completed",
    ],
    outcome: Outcome {
        disposition: "answered",
        sip_status: Some(200),
        ended_by: "caller",
        reason: NORMAL_CLEARING,
        q850_cause: Some(16),
    },
};

const TRANSFERRED: Scenario = Scenario {
    uac: "proxy_uac_transferee.xml",
    uac_args: &[],
    uas: &["proxy_uas_transferor.xml"],
    uas_args: &[],
    invite_timeout: None,
    proxy_ring_timeout_ms: None,
    events: &[
        "call.initiated",
        "call.ringing",
        "call.answered",
        "call.transferred",
        "call.completed",
    ],
    outcome: Outcome {
        disposition: "answered",
        sip_status: Some(200),
        ended_by: "callee",
        reason: NORMAL_CLEARING,
        q850_cause: Some(16),
    },
};

/// Whether something listens on UDP `port` on this host (Linux /proc/net/udp).
fn udp_bound(port: u16) -> bool {
    let hex = format!(":{port:04X}");
    std::fs::read_to_string("/proc/net/udp")
        .map(|t| {
            t.lines()
                .skip(1)
                .filter_map(|l| l.split_whitespace().nth(1))
                .any(|local| local.ends_with(&hex))
        })
        .unwrap_or(false)
}

/// The last `max` characters of a file, for failure reports.
fn tail(path: &Path, max: usize) -> String {
    let text = String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned();
    let mut start = text.len().saturating_sub(max);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text[start..].to_string()
}

/// A running Kamailio in its own process group, stopped (the whole group) on drop.
struct Kamailio {
    child: std::process::Child,
}

impl Kamailio {
    fn start(
        dir: &Path,
        port: u16,
        uas: &[u16],
        trace_to: SocketAddr,
        mirror: Mirror,
        ring_timeout_ms: Option<u32>,
    ) -> Kamailio {
        let log = std::fs::File::create(dir.join("kamailio.log")).unwrap();
        let mut cmd = Command::new(kamailio_bin().expect("kamailio is installed"));
        cmd.args(["-DD", "-E", "-m", "64", "-M", "8"])
            .arg("-f")
            .arg(Path::new(ROOT).join("tests/kamailio/proxy.cfg"))
            .arg("-Y")
            .arg(dir)
            .arg("-P")
            .arg(dir.join("kamailio.pid"))
            .arg("-w")
            .arg(dir)
            .args(["-A", &format!("LISTEN=udp:127.0.0.1:{port}")])
            .args(["-A", &format!("UAS1=\"127.0.0.1:{}\"", uas[0])])
            .args(["-A", &format!("TRACE_URI=\"sip:{trace_to}\"")]);
        if mirror == Mirror::Hep {
            cmd.args(["-A", "WITH_HEP"]);
        }
        if let Some(ms) = ring_timeout_ms {
            cmd.args(["-A", &format!("FR_INV_TIMER={ms}")]);
        }
        if let Some(second) = uas.get(1) {
            cmd.args(["-A", "WITH_FORK"])
                .args(["-A", &format!("UAS2=\"127.0.0.1:{second}\"")]);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("kamailio starts");
        Kamailio { child }
    }

    /// Waits until the proxy answers an OPTIONS ping (its readiness probe, which
    /// it neither traces nor forwards).
    async fn wait_ready(&mut self, sock: &UdpSocket, proxy: SocketAddr) {
        let ping = format!(
            "OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-ping\r\nFrom: <sip:probe@127.0.0.1>;tag=probe\r\nTo: <sip:127.0.0.1:{port}>\r\nCall-ID: siphook-probe\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
            port = proxy.port(),
            me = sock.local_addr().unwrap(),
        );
        let start = Instant::now();
        let mut buf = vec![0u8; 4096];
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("kamailio exited at start: {status}");
            }
            assert!(
                start.elapsed() < DEADLINE,
                "kamailio never answered OPTIONS"
            );
            sock.send_to(ping.as_bytes(), proxy).await.unwrap();
            if let Ok(Ok((n, _))) =
                tokio::time::timeout(Duration::from_millis(100), sock.recv_from(&mut buf)).await
                && buf[..n].starts_with(b"SIP/2.0 200")
            {
                return;
            }
        }
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let signal = |sig: &str| {
            let _ = Command::new("kill")
                .args([sig, "--", &group])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        };
        signal("-TERM");
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(3) {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // Whatever of the group is left (a child that outlived the main process).
        signal("-KILL");
        let _ = self.child.wait();
    }
}

/// One SIPp instance on 127.0.0.1:`port`, logging its errors and messages into
/// `dir` as `name.*`. Killed on drop.
fn sipp(dir: &Path, name: &str, scenario: &str, port: u16, extra: &[String]) -> SippProc {
    let stderr = std::fs::File::create(dir.join(format!("{name}.stderr"))).unwrap();
    let child = tokio::process::Command::new("sipp")
        .arg("-sf")
        .arg(Path::new(ROOT).join("tests/sipp").join(scenario))
        .args(["-i", "127.0.0.1", "-p", &port.to_string()])
        .args([
            "-m",
            "1",
            "-nostdin",
            "-timeout",
            SIPP_TIMEOUT_S,
            "-timeout_error",
        ])
        .args(["-trace_err", "-error_file"])
        .arg(dir.join(format!("{name}.errors")))
        .args(["-trace_msg", "-message_file"])
        .arg(dir.join(format!("{name}.messages")))
        .args(extra)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .kill_on_drop(true)
        .spawn()
        .expect("sipp starts");
    SippProc {
        name: name.to_string(),
        pid: child.id().unwrap(),
        port,
        child,
    }
}

struct SippProc {
    name: String,
    pid: u32,
    port: u16,
    child: tokio::process::Child,
}

impl SippProc {
    /// Waits until this SIPp listens on its port.
    async fn wait_bound(&mut self) {
        let start = Instant::now();
        while !udp_bound(self.port) {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("sipp {} exited at start: {status}", self.name);
            }
            assert!(start.elapsed() < DEADLINE, "sipp {} never bound", self.name);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits for SIPp to finish its call and asserts it succeeded.
    async fn finish(&mut self) {
        let status = tokio::time::timeout(DEADLINE, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("sipp {} finishes", self.name))
            .unwrap();
        assert!(status.success(), "sipp {} failed: {status}", self.name);
    }

    /// The dialog tag SIPp writes for itself: `[pid]SIPpTag0x[call_number]`.
    fn tag(&self, side: u8) -> String {
        format!("{}SIPpTag0{side}1", self.pid)
    }
}

/// What one played call left behind.
struct Played {
    events: Vec<Value>,
    uas_ports: Vec<u16>,
}

/// On a failing test, the files SIPp and Kamailio left, printed before the
/// temporary directory goes.
struct Diagnostics(tempfile::TempDir);

impl Drop for Diagnostics {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.0.path())
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        files.sort();
        for f in files {
            if f.extension().is_some_and(|e| e != "pid") {
                eprintln!("===== {} =====\n{}", f.display(), tail(&f, 6000));
            }
        }
    }
}

/// One line per event: sequence, type, data; for failure messages.
fn summary(events: &[Value]) -> String {
    events
        .iter()
        .map(|e| format!("\n  {} {} {}", e["sequence"], e["type"], e["data"]))
        .collect()
}

/// Sends a marker INVITE through the proxy (which traces it and drops it) and
/// returns every event siphook emitted before the marker's `call.initiated`.
/// Kamailio has one UDP worker, which handles the marker after every message the
/// SIPp instances sent it, and sends all its copies from one socket, in order; so
/// this is every event the call under test produced.
async fn through_barrier(h: &mut Harness, sock: &UdpSocket, proxy: SocketAddr) -> Vec<Value> {
    let call_id = format!("siphook-barrier-{}", proxy.port());
    let marker = format!(
        "INVITE sip:siphook-barrier@{proxy} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-barrier\r\nFrom: <sip:barrier@127.0.0.1>;tag=barrier\r\nTo: <sip:siphook-barrier@{proxy}>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        me = sock.local_addr().unwrap(),
    );
    let mut before = Vec::new();
    let start = Instant::now();
    sock.send_to(marker.as_bytes(), proxy).await.unwrap();
    loop {
        assert!(start.elapsed() < DEADLINE, "the barrier never came through");
        match tokio::time::timeout(Duration::from_millis(500), h.next_event()).await {
            Ok(e) if e["call"]["sip_call_id"] == call_id.as_str() => {
                assert_eq!(e["type"], "call.initiated");
                return before;
            }
            Ok(e) => before.push(e),
            // A lost datagram: the copy of a resent marker is a retransmission.
            Err(_) => {
                sock.send_to(marker.as_bytes(), proxy).await.unwrap();
            }
        }
    }
}

/// Plays `s` through Kamailio mirroring by `mirror`, and checks everything every
/// scenario shares; returns the events for scenario-specific checks.
async fn play(s: &Scenario, mirror: Mirror) -> Option<Played> {
    if !tools_available() {
        return None;
    }
    let dir = Diagnostics(tempfile::tempdir().unwrap());
    let mut c = test_config();
    if let Some(t) = s.invite_timeout {
        c.sip.invite_timeout = t;
    }
    if mirror == Mirror::Hep {
        c.hep.udp = vec!["127.0.0.1:0".parse().unwrap()];
    }
    // Kamailio's X-Siptrace headers are believed from the proxy only.
    c.sip.siptrace_from = vec!["127.0.0.1".parse().unwrap()];
    let mut h = Harness::with_config(c).await;
    let trace_to = match mirror {
        Mirror::Duplicate => h.gw.udp_addrs[0],
        Mirror::Hep => h.gw.hep_udp_addrs[0],
    };

    let proxy_port = free_port(true);
    let proxy: SocketAddr = format!("127.0.0.1:{proxy_port}").parse().unwrap();
    let uas_ports: Vec<u16> = s.uas.iter().map(|_| free_port(true)).collect();
    let uac_port = free_port(true);

    let control = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut kamailio = Kamailio::start(
        dir.0.path(),
        proxy_port,
        &uas_ports,
        trace_to,
        mirror,
        s.proxy_ring_timeout_ms,
    );
    kamailio.wait_ready(&control, proxy).await;

    let mut callees = Vec::new();
    for (i, (scenario, port)) in s.uas.iter().zip(&uas_ports).enumerate() {
        let args: Vec<String> = if i == 0 {
            s.uas_args.iter().map(|a| a.to_string()).collect()
        } else {
            Vec::new()
        };
        let mut p = sipp(
            dir.0.path(),
            &format!("uas{}", i + 1),
            scenario,
            *port,
            &args,
        );
        p.wait_bound().await;
        callees.push(p);
    }
    let mut uac_args: Vec<String> = s.uac_args.iter().map(|a| a.to_string()).collect();
    uac_args.extend(["-s".into(), CALLED.into(), proxy.to_string()]);
    let mut caller = sipp(dir.0.path(), "uac", s.uac, uac_port, &uac_args);
    caller.finish().await;
    for p in &mut callees {
        p.finish().await;
    }

    let events = through_barrier(&mut h, &control, proxy).await;
    drop(kamailio);

    // The call, all of it, each event once, in order.
    assert_eq!(types(&events), s.events, "{}", summary(&events));
    let call_id = format!("1-{}@127.0.0.1", caller.pid);
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["sequence"], json!(i + 1), "sequence without gaps");
        assert_eq!(e["call"]["sip_call_id"], call_id.as_str());
        assert_eq!(e["call"]["id"], events[0]["call"]["id"], "one call id");
        assert_eq!(e["call"]["from"]["tag"], caller.tag(0).as_str());
        assert_eq!(e["call"]["from"]["user"], CALLER);
        assert_eq!(e["call"]["ani"], CALLER);
        assert_eq!(e["call"]["dnis"], CALLED);
        // Where the INVITE really went: caller to proxy, as Kamailio saw it.
        assert_eq!(
            e["call"]["signaling"],
            json!({
                "transport": "udp",
                "source": format!("127.0.0.1:{uac_port}"),
                "destination": format!("127.0.0.1:{proxy_port}"),
            }),
            "{} signaling",
            e["type"]
        );
    }
    let ids: std::collections::HashSet<&str> =
        events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), events.len(), "event ids are distinct");

    // The INVITE as the caller sent it (the first copy), not as forwarded.
    let initiated = &events[0];
    assert_eq!(
        initiated["data"]["request_uri"],
        format!("sip:{CALLED}@127.0.0.1:{proxy_port}")
    );
    assert_eq!(initiated["data"]["user_agent"], "SIPp proxy-interop UAC");

    // The dialog that answered is the first callee's, also in a fork.
    if let Some(answered) = events.iter().find(|e| e["type"] == "call.answered") {
        assert_eq!(answered["call"]["to"]["tag"], callees[0].tag(1).as_str());
        assert_eq!(answered["data"]["sip_status"], 200);
    }

    let done = events.last().unwrap();
    let o = &s.outcome;
    let got = summary(&events);
    assert_eq!(done["data"]["disposition"], o.disposition, "{got}");
    assert_eq!(done["data"]["sip_status"], json!(o.sip_status), "{got}");
    assert_eq!(done["data"]["ended_by"], o.ended_by, "{got}");
    assert_eq!(done["data"]["reason"], json!(o.reason), "{got}");
    assert_eq!(done["data"]["q850_cause"], json!(o.q850_cause), "{got}");
    assert_eq!(done["timestamp"], done["call"]["ended_at"]);

    // The mirror did show the INVITE once as received and once per branch as
    // forwarded (and the barrier once), every copy parsed, no clock trouble.
    let invites = h.metric(
        "siphook_sip_messages_total",
        &[
            ("transport", mirror.label()),
            ("kind", "request"),
            ("method", "INVITE"),
        ],
    );
    assert!(
        invites >= (2 + s.uas.len()) as f64,
        "{invites} INVITE copies from the mirror"
    );
    assert_eq!(h.metric("siphook_sip_parse_errors_total", &[]), 0.0);
    assert_eq!(h.metric("siphook_hep_packets_dropped_total", &[]), 0.0);
    assert_eq!(h.metric("siphook_capture_clock_skew_total", &[]), 0.0);

    Some(Played { events, uas_ports })
}

async fn answered(mirror: Mirror) {
    let Some(p) = play(&ANSWERED, mirror).await else {
        return;
    };
    let done = &p.events[3];
    // The callee answers 300 ms after ringing; the caller talks 500 ms. Times are
    // Kamailio's capture times.
    assert!(done["data"]["ring_ms"].as_i64().unwrap() >= 290, "{done:#}");
    assert!(done["data"]["talk_ms"].as_i64().unwrap() >= 490, "{done:#}");
    assert_eq!(
        ms(&done["call"]["ringing_at"]),
        ms(&p.events[1]["timestamp"])
    );
}

async fn busy(mirror: Mirror) {
    play(&BUSY, mirror).await;
}

async fn cancelled(mirror: Mirror) {
    play(&CANCELLED, mirror).await;
}

async fn no_answer(mirror: Mirror) {
    let Some(p) = play(&NO_ANSWER, mirror).await else {
        return;
    };
    let done = &p.events[2];
    // Ended by the timer, exactly invite_timeout after the INVITE.
    assert_eq!(
        ms(&done["call"]["ended_at"]) - ms(&done["call"]["started_at"]),
        1000,
        "{done:#}"
    );
}

async fn proxy_timeout(mirror: Mirror) {
    play(&PROXY_TIMEOUT, mirror).await;
}

async fn forked(mirror: Mirror) {
    play(&FORKED, mirror).await;
}

async fn forked_one_busy(mirror: Mirror) {
    play(&FORKED_ONE_BUSY, mirror).await;
}

async fn transferred(mirror: Mirror) {
    let Some(p) = play(&TRANSFERRED, mirror).await else {
        return;
    };
    let callee = format!("127.0.0.1:{}", p.uas_ports[0]);
    assert_eq!(
        p.events[3]["data"],
        json!({
            "kind": "blind",
            "target": format!("sip:+15552220199@{callee}"),
            "referred_by": format!("sip:{CALLED}@{callee}"),
            "replaced_call_id": null,
            "replaced_sip_call_id": null,
        })
    );
}

#[tokio::test]
async fn answered_call_mirrored_with_xheaders() {
    answered(Mirror::Duplicate).await;
}

#[tokio::test]
async fn answered_call_mirrored_as_hep() {
    answered(Mirror::Hep).await;
}

#[tokio::test]
async fn busy_call_mirrored_with_xheaders() {
    busy(Mirror::Duplicate).await;
}

#[tokio::test]
async fn busy_call_mirrored_as_hep() {
    busy(Mirror::Hep).await;
}

#[tokio::test]
async fn cancelled_call_mirrored_with_xheaders() {
    cancelled(Mirror::Duplicate).await;
}

#[tokio::test]
async fn cancelled_call_mirrored_as_hep() {
    cancelled(Mirror::Hep).await;
}

#[tokio::test]
async fn unanswered_call_mirrored_with_xheaders() {
    no_answer(Mirror::Duplicate).await;
}

#[tokio::test]
async fn unanswered_call_mirrored_as_hep() {
    no_answer(Mirror::Hep).await;
}

#[tokio::test]
async fn call_timed_out_by_the_proxy_mirrored_with_xheaders() {
    proxy_timeout(Mirror::Duplicate).await;
}

#[tokio::test]
async fn call_timed_out_by_the_proxy_mirrored_as_hep() {
    proxy_timeout(Mirror::Hep).await;
}

#[tokio::test]
async fn forked_call_mirrored_with_xheaders() {
    forked(Mirror::Duplicate).await;
}

#[tokio::test]
async fn forked_call_mirrored_as_hep() {
    forked(Mirror::Hep).await;
}

#[tokio::test]
async fn forked_call_with_a_busy_branch_mirrored_with_xheaders() {
    forked_one_busy(Mirror::Duplicate).await;
}

#[tokio::test]
async fn forked_call_with_a_busy_branch_mirrored_as_hep() {
    forked_one_busy(Mirror::Hep).await;
}

#[tokio::test]
async fn transferred_call_mirrored_with_xheaders() {
    transferred(Mirror::Duplicate).await;
}

#[tokio::test]
async fn transferred_call_mirrored_as_hep() {
    transferred(Mirror::Hep).await;
}
