//! Replay agrees with tshark's SIP dissector (issue 16 §7): for captures written
//! here through every encapsulation replay reads, each call's answer (initiated,
//! ringing, answered, and the disposition by the mapping of docs/events.md) is
//! the same from replay's events as from the SIP messages tshark decodes.
//!
//! tshark (Debian package `tshark`) is installed by CI (`.ci/run`); elsewhere a
//! missing tshark is a loud skip, and a failure when `CI` or
//! `SIPHOOK_REQUIRE_TOOLS` is set.

mod common;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv6Addr};
use std::path::Path;
use std::process::{Command, Stdio};

use common::CallSpec;
use common::wire::{self, TcpConn};
use pcap_file::DataLink;
use serde_json::Value;
use siphook::config::Config;
use siphook::replay::{ReplayOptions, replay};

const T0_US: u64 = 1_795_330_800_000_000;

fn tools_required() -> bool {
    let set =
        |name: &str| std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "0" && v != "false");
    set("CI") || set("SIPHOOK_REQUIRE_TOOLS")
}

fn tshark_available() -> bool {
    let runs = Command::new("tshark")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if runs {
        return true;
    }
    assert!(
        !tools_required(),
        "tshark is not installed, and CI or SIPHOOK_REQUIRE_TOOLS requires it (apt-get install tshark)"
    );
    eprintln!(
        "SKIPPED: tshark not installed (apt-get install tshark); set SIPHOOK_REQUIRE_TOOLS=1 to make this a failure"
    );
    false
}

/// What one call came to.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Answer {
    initiated: bool,
    ringing: bool,
    answered: bool,
    disposition: Option<String>,
}

/// docs/events.md's disposition of an unanswered call by its final response.
fn disposition(status: u16, cancelled: bool) -> &'static str {
    match status {
        _ if cancelled => "cancelled",
        486 | 600 => "busy",
        408 | 480 => "no_answer",
        487 => "cancelled",
        403 | 603 => "rejected",
        _ => "failed",
    }
}

/// Each call's answer from the SIP messages tshark decodes (one per frame in
/// these captures), in capture order.
fn tshark_answers(path: &Path) -> BTreeMap<String, Answer> {
    let out = Command::new("tshark")
        .arg("-r")
        .arg(path)
        // tshark's defaults: each segment after a gap is dissected as it comes
        // (out-of-order reassembly, off, would wait for the lost bytes forever
        // and lose the rest of that side, as replay used to).
        .args(["-Y", "sip"])
        .args(["-T", "fields", "-E", "separator=/t"])
        .args(["-e", "sip.Call-ID", "-e", "sip.Status-Code"])
        .args(["-e", "sip.Method", "-e", "sip.CSeq.method"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut calls: BTreeMap<String, Answer> = BTreeMap::new();
    let mut cancelled: BTreeMap<String, bool> = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let f: Vec<&str> = line.split('\t').collect();
        let [id, status, method, cseq] = f[..] else {
            panic!("unexpected tshark line {line:?}");
        };
        let a = calls.entry(id.to_owned()).or_default();
        if method == "INVITE" {
            a.initiated = true;
        }
        if method == "CANCEL" {
            cancelled.insert(id.to_owned(), true);
        }
        let Ok(status) = status.parse::<u16>() else {
            continue;
        };
        if cseq != "INVITE" || a.disposition.is_some() {
            continue;
        }
        match status {
            180..=189 => a.ringing = true,
            200..=299 => {
                a.answered = true;
                a.disposition = Some("answered".into());
            }
            300.. => {
                let c = cancelled.get(id).copied().unwrap_or(false);
                a.disposition = Some(disposition(status, c).into());
            }
            _ => {}
        }
    }
    calls
}

/// Each call's answer from replay's events.
fn replay_answers(path: &Path) -> BTreeMap<String, Answer> {
    let mut calls: BTreeMap<String, Answer> = BTreeMap::new();
    let summary = replay(
        path,
        &ReplayOptions::from_config(&Config::default(), true),
        |e| {
            let v: Value = serde_json::from_slice(&e.to_json()).unwrap();
            let id = v["call"]["sip_call_id"].as_str().unwrap_or("?").to_owned();
            let a = calls.entry(id).or_default();
            match v["type"].as_str() {
                Some("call.initiated") => a.initiated = true,
                Some("call.ringing") => a.ringing = true,
                Some("call.answered") => a.answered = true,
                Some("call.completed") => {
                    a.disposition = v["data"]["disposition"].as_str().map(str::to_owned)
                }
                _ => {}
            }
        },
    )
    .unwrap();
    assert!(summary.parse_errors.is_empty(), "{summary}");
    calls
}

/// Four calls with four outcomes: answered, busy, rejected, cancelled; each
/// message with whether the caller sent it.
fn calls(prefix: &str) -> Vec<(bool, Vec<u8>)> {
    let mut out = Vec::new();
    let answered = CallSpec::new(&format!("{prefix}-answered"));
    for (m, a) in answered
        .answered_flow()
        .into_iter()
        .zip([true, false, false, false, true, true, false])
    {
        out.push((a, m));
    }
    let busy = CallSpec::new(&format!("{prefix}-busy"));
    out.push((true, busy.invite(1)));
    out.push((false, busy.resp(180, 1, "INVITE", Some("b"))));
    out.push((false, busy.resp(486, 1, "INVITE", Some("b"))));
    out.push((true, busy.ack(1, "b")));
    let rejected = CallSpec::new(&format!("{prefix}-rejected"));
    out.push((true, rejected.invite(1)));
    out.push((false, rejected.resp(603, 1, "INVITE", Some("r"))));
    out.push((true, rejected.ack(1, "r")));
    let cancelled = CallSpec::new(&format!("{prefix}-cancelled"));
    out.push((true, cancelled.invite(1)));
    out.push((false, cancelled.resp(180, 1, "INVITE", Some("c"))));
    out.push((true, cancelled.cancel(1)));
    out.push((false, cancelled.resp(200, 1, "CANCEL", Some("c"))));
    out.push((false, cancelled.resp(487, 1, "INVITE", Some("c"))));
    out.push((true, cancelled.ack(1, "c")));
    out.into_iter().map(|(a, m)| (a, m.into_bytes())).collect()
}

type Wrap = fn(&[u8]) -> (DataLink, Vec<u8>);

fn eth_ip(ip: &[u8]) -> Vec<u8> {
    wire::ether(wire::ip_ether_type(ip), ip)
}

fn outer(proto: u8, payload: &[u8]) -> Vec<u8> {
    let (a, b) = (IpAddr::from([10, 9, 9, 1]), IpAddr::from([10, 9, 9, 2]));
    wire::ip(a, b, proto, payload)
}

const WRAPS: [(&str, Wrap); 10] = [
    ("ethernet", |ip| (DataLink::ETHERNET, eth_ip(ip))),
    ("sll-loopback", |ip| {
        (
            DataLink::LINUX_SLL,
            wire::sll(772, wire::ip_ether_type(ip), ip),
        )
    }),
    ("null", |ip| (DataLink::NULL, wire::null(2, ip))),
    ("qinq", |ip| {
        let (t, inner) = wire::vlan(0x8100, 200, wire::ip_ether_type(ip), ip);
        let (t, outer) = wire::vlan(0x88a8, 10, t, &inner);
        (DataLink::ETHERNET, wire::ether(t, &outer))
    }),
    ("vlan-pppoe-gre", |ip| {
        let gre = outer(47, &wire::gre(wire::ip_ether_type(ip), None, None, ip));
        let (t, tagged) = wire::vlan(0x8100, 300, 0x8864, &wire::pppoe(&gre));
        (DataLink::ETHERNET, wire::ether(t, &tagged))
    }),
    ("erspan-ii", |ip| {
        let g = wire::gre(0x88be, None, Some(1), &wire::erspan2(5, &eth_ip(ip)));
        (DataLink::ETHERNET, eth_ip(&outer(47, &g)))
    }),
    ("erspan-iii", |ip| {
        let g = wire::gre(0x22eb, None, Some(1), &wire::erspan3(5, true, &eth_ip(ip)));
        (DataLink::ETHERNET, eth_ip(&outer(47, &g)))
    }),
    ("gtpu", |ip| {
        let g = wire::gtpu(0x42, None, ip);
        let (a, b) = (IpAddr::from([172, 16, 0, 1]), IpAddr::from([172, 16, 0, 2]));
        (
            DataLink::ETHERNET,
            eth_ip(&wire::ip_udp(a, b, 2152, 2152, &g)),
        )
    }),
    ("vxlan", |ip| {
        let mut v = vec![0x08, 0, 0, 0, 0, 0, 100, 0];
        v.extend_from_slice(&eth_ip(ip));
        let (a, b) = (IpAddr::from([172, 16, 0, 1]), IpAddr::from([172, 16, 0, 2]));
        (
            DataLink::ETHERNET,
            eth_ip(&wire::ip_udp(a, b, 40000, 4789, &v)),
        )
    }),
    ("raw", |ip| (DataLink::RAW, ip.to_vec())),
];

/// The four calls as IP packets, one message each: over UDP, over one TCP
/// connection (whose segment `lost`, if any, the capture missed), over SCTP,
/// or over UDP/IPv6 with every message in 256-byte fragments.
fn packets(prefix: &str, transport: &str, lost: Option<usize>) -> Vec<(u64, Vec<u8>)> {
    let (a, b) = (
        IpAddr::from([192, 0, 2, 10]),
        IpAddr::from([198, 51, 100, 20]),
    );
    let (a6, b6): (Ipv6Addr, Ipv6Addr) = (
        "2001:db8::10".parse().unwrap(),
        "2001:db8::20".parse().unwrap(),
    );
    let mut conn = TcpConn::new((a, 40123), (b, 5060));
    let mut out: Vec<(u64, Vec<u8>)> = Vec::new();
    if transport == "tcp" {
        out.extend(conn.handshake().into_iter().map(|p| (T0_US, p)));
    }
    for (i, (from_a, m)) in calls(prefix).into_iter().enumerate() {
        let t = T0_US + 1000 + i as u64 * 50_000;
        let (s, d) = if from_a { (a, b) } else { (b, a) };
        let (sp, dp) = if from_a { (5062, 5060) } else { (5060, 5062) };
        match transport {
            "tcp" => {
                let p = conn.send(from_a, &m);
                if lost != Some(i) {
                    out.push((t, p));
                }
            }
            "sctp" => out.push((
                t,
                wire::ip(s, d, 132, &wire::sctp(5060, 5060, i as u32, &[&m])),
            )),
            "udp6-frag" => {
                let (s6, d6) = if from_a { (a6, b6) } else { (b6, a6) };
                let u = wire::udp(IpAddr::V6(s6), IpAddr::V6(d6), sp, dp, &m);
                for f in wire::ipv6_fragments(s6, d6, 17, i as u32 + 1, 256, &u) {
                    out.push((t, f));
                }
            }
            _ => out.push((t, wire::ip_udp(s, d, sp, dp, &m))),
        }
    }
    out
}

#[test]
fn replay_answers_every_call_as_tshark_does_through_every_encapsulation() {
    if !tshark_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut cases: Vec<(String, Wrap, &str, Option<usize>)> = Vec::new();
    for (name, wrap) in WRAPS {
        for transport in ["udp", "tcp"] {
            cases.push((format!("{name}-{transport}"), wrap, transport, None));
        }
    }
    cases.push(("sctp".into(), WRAPS[0].1, "sctp", None));
    cases.push(("ipv6-fragments".into(), WRAPS[0].1, "udp6-frag", None));
    cases.push(("gtpu-ipv6-fragments".into(), WRAPS[7].1, "udp6-frag", None));
    // The capture lost the busy call's 180 and the answered call's 100.
    cases.push(("tcp-lost-100".into(), WRAPS[1].1, "tcp", Some(1)));
    cases.push(("tcp-lost-180".into(), WRAPS[0].1, "tcp", Some(8)));
    for (name, wrap, transport, lost) in cases {
        let frames: Vec<(u64, Vec<u8>)> = packets(&name, transport, lost)
            .into_iter()
            .map(|(t, p)| (t, wrap(&p).1))
            .collect();
        let link = wrap(&[0x45]).0;
        let path = dir.path().join(format!("{name}.pcap"));
        wire::write_pcap(&path, link, &frames);
        let tshark = tshark_answers(&path);
        assert_eq!(tshark.len(), 4, "{name}: tshark decoded {tshark:?}");
        assert_eq!(replay_answers(&path), tshark, "{name}");
    }
}
