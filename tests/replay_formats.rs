//! Capture replay through every link type and encapsulation it claims to read:
//! cooked and loopback link layers over TCP, VLAN and QinQ stacks, PPPoE, GRE
//! (plain, keyed, ERSPAN II and III, bridged Ethernet), GTP-U, SCTP, IPv4 and
//! IPv6 fragments. Each capture is written byte by byte by tests/common/wire.rs,
//! and each test asserts the exact events of the call inside it.

mod common;

use std::net::{IpAddr, Ipv6Addr};
use std::path::Path;

use common::CallSpec;
use common::wire::{self, TcpConn};
use pcap_file::DataLink;
use serde_json::Value;
use siphook::replay::Summary;

const T0_US: u64 = 1_795_330_800_000_000;

const ANSWERED: [&str; 4] = [
    "call.initiated",
    "call.ringing",
    "call.answered",
    "call.completed",
];

fn uac() -> IpAddr {
    IpAddr::from([192, 0, 2, 10])
}
fn uas() -> IpAddr {
    IpAddr::from([198, 51, 100, 20])
}
fn uac6() -> Ipv6Addr {
    "2001:db8::10".parse().unwrap()
}
fn uas6() -> Ipv6Addr {
    "2001:db8::20".parse().unwrap()
}

/// The seven messages of an answered call, 100 ms apart, each with whether the
/// caller sent it: answered at +300 ms, hung up at +500 ms.
fn call(id: &str) -> Vec<(u64, bool, Vec<u8>)> {
    let from_caller = [true, false, false, false, true, true, false];
    CallSpec::new(id)
        .answered_flow()
        .into_iter()
        .zip(from_caller)
        .enumerate()
        .map(|(i, (m, a))| (T0_US + i as u64 * 100_000, a, m.into_bytes()))
        .collect()
}

/// The call's UDP packets between `a` and `b` (IPv4 or IPv6), caller port 5062.
fn udp_call(id: &str, a: IpAddr, b: IpAddr) -> Vec<(u64, Vec<u8>)> {
    call(id)
        .into_iter()
        .map(|(t, from_a, m)| {
            let p = if from_a {
                wire::ip_udp(a, b, 5062, 5060, &m)
            } else {
                wire::ip_udp(b, a, 5060, 5062, &m)
            };
            (t, p)
        })
        .collect()
}

/// The call over one TCP connection, handshake first.
fn tcp_call(id: &str, a: IpAddr, b: IpAddr) -> Vec<(u64, Vec<u8>)> {
    let mut conn = TcpConn::new((a, 40123), (b, 5060));
    let mut out: Vec<(u64, Vec<u8>)> = conn
        .handshake()
        .into_iter()
        .map(|p| (T0_US - 1000, p))
        .collect();
    for (t, from_a, m) in call(id) {
        out.push((t, conn.send(from_a, &m)));
    }
    out
}

/// Asserts the capture holds exactly the one answered call `id`, on capture time.
fn assert_one_call(path: &Path, id: &str, what: &str) -> (Vec<Value>, Summary) {
    let (events, summary) = wire::replay_file(path, false);
    let got: Vec<(&str, &str)> = events
        .iter()
        .map(|e| {
            (
                e["call"]["sip_call_id"].as_str().unwrap_or("?"),
                e["type"].as_str().unwrap_or("?"),
            )
        })
        .collect();
    assert_eq!(got, ANSWERED.map(|t| (id, t)), "{what}:\n{summary}");
    assert_eq!(events[3]["data"]["talk_ms"], 200, "{what}");
    assert_eq!(events[3]["data"]["disposition"], "answered", "{what}");
    assert_eq!(events[0]["timestamp"], "2026-11-22T07:00:00.000Z", "{what}");
    assert!(summary.parse_errors.is_empty(), "{what}:\n{summary}");
    (events, summary)
}

type Wrap = fn(&[u8]) -> (DataLink, Vec<u8>);

fn write(dir: &Path, name: &str, wrap: Wrap, packets: &[(u64, Vec<u8>)]) -> std::path::PathBuf {
    let mut link = DataLink::ETHERNET;
    let frames: Vec<(u64, Vec<u8>)> = packets
        .iter()
        .map(|(t, p)| {
            let (l, f) = wrap(p);
            link = l;
            (*t, f)
        })
        .collect();
    let path = dir.join(format!("{name}.pcap"));
    wire::write_pcap(&path, link, &frames);
    path
}

/// `tcpdump -i any` writes SLL with the interface's hardware type: loopback
/// (772), a tunnel's none (0xfffe), an LTE modem's raw IP (519). Each must read
/// the same as Ethernet, over TCP as over UDP.
#[test]
fn cooked_and_loopback_link_types_carry_tcp_and_udp() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, Wrap); 9] = [
        ("sll-loopback", |ip| {
            (
                DataLink::LINUX_SLL,
                wire::sll(772, wire::ip_ether_type(ip), ip),
            )
        }),
        ("sll-ether", |ip| {
            (
                DataLink::LINUX_SLL,
                wire::sll(1, wire::ip_ether_type(ip), ip),
            )
        }),
        ("sll-none", |ip| {
            (
                DataLink::LINUX_SLL,
                wire::sll(0xfffe, wire::ip_ether_type(ip), ip),
            )
        }),
        ("sll-rawip", |ip| {
            (
                DataLink::LINUX_SLL,
                wire::sll(519, wire::ip_ether_type(ip), ip),
            )
        }),
        ("sll-ppp", |ip| {
            (
                DataLink::LINUX_SLL,
                wire::sll(512, wire::ip_ether_type(ip), ip),
            )
        }),
        ("sll2-loopback", |ip| {
            (
                DataLink::LINUX_SLL2,
                wire::sll2(772, wire::ip_ether_type(ip), ip),
            )
        }),
        ("null-inet", |ip| {
            let af = if wire::ip_ether_type(ip) == 0x86dd {
                30
            } else {
                2
            };
            (DataLink::NULL, wire::null(af, ip))
        }),
        ("loop-openbsd", |ip| {
            let af: u32 = if wire::ip_ether_type(ip) == 0x86dd {
                24
            } else {
                2
            };
            let mut f = af.to_be_bytes().to_vec();
            f.extend_from_slice(ip);
            (DataLink::LOOP, f)
        }),
        ("ethernet", |ip| {
            (DataLink::ETHERNET, wire::ether(wire::ip_ether_type(ip), ip))
        }),
    ];
    for (name, wrap) in cases {
        for (proto, v6) in [("tcp", false), ("udp", false), ("tcp", true), ("udp", true)] {
            let id = format!("{name}-{proto}-{}", if v6 { 6 } else { 4 });
            let (a, b) = if v6 {
                (IpAddr::V6(uac6()), IpAddr::V6(uas6()))
            } else {
                (uac(), uas())
            };
            let packets = if proto == "tcp" {
                tcp_call(&id, a, b)
            } else {
                udp_call(&id, a, b)
            };
            let path = write(dir.path(), &id, wrap, &packets);
            let (events, summary) = assert_one_call(&path, &id, &id);
            assert_eq!(events[0]["call"]["signaling"]["transport"], proto, "{id}");
            assert!(summary.skipped.is_empty(), "{id}:\n{summary}");
        }
    }
}

fn outer_v4(proto: u8, payload: &[u8]) -> Vec<u8> {
    wire::ip(
        IpAddr::from([10, 9, 9, 1]),
        IpAddr::from([10, 9, 9, 2]),
        proto,
        payload,
    )
}

fn eth_ip(ip: &[u8]) -> Vec<u8> {
    wire::ether(wire::ip_ether_type(ip), ip)
}

/// Mirrors and access networks wrap SIP in layers: every stack here carries the
/// same call, over UDP and over TCP, and reads the same as bare Ethernet.
#[test]
fn tunnels_and_tag_stacks_carry_the_same_call() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, Wrap); 17] = [
        ("qinq", |ip| {
            let (t, inner) = wire::vlan(0x8100, 200, wire::ip_ether_type(ip), ip);
            let (t, outer) = wire::vlan(0x88a8, 10, t, &inner);
            (DataLink::ETHERNET, wire::ether(t, &outer))
        }),
        ("three-tags", |ip| {
            let (t, a) = wire::vlan(0x8100, 3, wire::ip_ether_type(ip), ip);
            let (t, b) = wire::vlan(0x8100, 2, t, &a);
            let (t, c) = wire::vlan(0x88a8, 1, t, &b);
            (DataLink::ETHERNET, wire::ether(t, &c))
        }),
        ("pppoe", |ip| {
            (DataLink::ETHERNET, wire::ether(0x8864, &wire::pppoe(ip)))
        }),
        ("vlan-pppoe-gre", |ip| {
            let gre = outer_v4(47, &wire::gre(wire::ip_ether_type(ip), None, None, ip));
            let (t, tagged) = wire::vlan(0x8100, 300, 0x8864, &wire::pppoe(&gre));
            (DataLink::ETHERNET, wire::ether(t, &tagged))
        }),
        ("gre-key-seq", |ip| {
            let g = wire::gre(wire::ip_ether_type(ip), Some(7), Some(1), ip);
            (DataLink::ETHERNET, eth_ip(&outer_v4(47, &g)))
        }),
        ("gre-over-ipv6", |ip| {
            let g = wire::gre(wire::ip_ether_type(ip), None, None, ip);
            let outer = wire::ip(IpAddr::V6(uac6()), IpAddr::V6(uas6()), 47, &g);
            (DataLink::ETHERNET, eth_ip(&outer))
        }),
        ("gre-bridged-ethernet", |ip| {
            let g = wire::gre(0x6558, None, None, &eth_ip(ip));
            (DataLink::ETHERNET, eth_ip(&outer_v4(47, &g)))
        }),
        ("erspan-ii", |ip| {
            let g = wire::gre(0x88be, None, Some(42), &wire::erspan2(5, &eth_ip(ip)));
            (DataLink::ETHERNET, eth_ip(&outer_v4(47, &g)))
        }),
        ("erspan-iii", |ip| {
            let g = wire::gre(
                0x22eb,
                None,
                Some(42),
                &wire::erspan3(5, false, &eth_ip(ip)),
            );
            (DataLink::ETHERNET, eth_ip(&outer_v4(47, &g)))
        }),
        ("erspan-iii-subheader", |ip| {
            let (t, tagged) = wire::vlan(0x8100, 9, wire::ip_ether_type(ip), ip);
            let mirrored = wire::ether(t, &tagged);
            let g = wire::gre(0x22eb, None, Some(42), &wire::erspan3(5, true, &mirrored));
            (DataLink::ETHERNET, eth_ip(&outer_v4(47, &g)))
        }),
        ("gtpu", |ip| {
            let a = IpAddr::from([172, 16, 0, 1]);
            let b = IpAddr::from([172, 16, 0, 2]);
            let g = wire::ip_udp(a, b, 2152, 2152, &wire::gtpu(0x1234, None, ip));
            (DataLink::ETHERNET, eth_ip(&g))
        }),
        ("gtpu-seq-in-vlan", |ip| {
            let a = IpAddr::from([172, 16, 0, 1]);
            let b = IpAddr::from([172, 16, 0, 2]);
            let g = wire::ip_udp(a, b, 2152, 2152, &wire::gtpu(0x1234, Some(9), ip));
            let (t, tagged) = wire::vlan(0x8100, 40, 0x0800, &g);
            (DataLink::ETHERNET, wire::ether(t, &tagged))
        }),
        ("mpls", |ip| {
            // Two labels, the second the bottom of the stack.
            let mut m = vec![0x00, 0x01, 0x00, 0x40, 0x00, 0x02, 0x01, 0x40];
            m.extend_from_slice(ip);
            (DataLink::ETHERNET, wire::ether(0x8847, &m))
        }),
        ("ppp-link", |ip| {
            let mut f = vec![0xff, 0x03];
            let proto: u16 = if wire::ip_ether_type(ip) == 0x86dd {
                0x57
            } else {
                0x21
            };
            f.extend_from_slice(&proto.to_be_bytes());
            f.extend_from_slice(ip);
            (DataLink::PPP, f)
        }),
        ("pptp-gre", |ip| {
            // Enhanced GRE (version 1): key (payload length, call id), sequence, ack.
            let mut g = vec![0x30, 0x81, 0x88, 0x0b];
            g.extend_from_slice(&((ip.len() + 2) as u16).to_be_bytes());
            g.extend_from_slice(&[0, 7, 0, 0, 0, 1, 0, 0, 0, 0]);
            g.extend_from_slice(&[0x00, 0x21]);
            g.extend_from_slice(ip);
            (DataLink::ETHERNET, eth_ip(&outer_v4(47, &g)))
        }),
        ("tso-zero-length", |ip| {
            // A sender's capture with segmentation offload: total length 0.
            let mut ip = ip.to_vec();
            ip[2] = 0;
            ip[3] = 0;
            (DataLink::ETHERNET, eth_ip(&ip))
        }),
        ("vxlan", |ip| {
            let mut v = vec![0x08, 0, 0, 0, 0, 0, 100, 0];
            v.extend_from_slice(&eth_ip(ip));
            let a = IpAddr::from([172, 16, 0, 1]);
            let b = IpAddr::from([172, 16, 0, 2]);
            (
                DataLink::ETHERNET,
                eth_ip(&wire::ip_udp(a, b, 40000, 4789, &v)),
            )
        }),
    ];
    for (name, wrap) in cases {
        for proto in ["udp", "tcp"] {
            let id = format!("{name}-{proto}");
            let packets = if proto == "tcp" {
                tcp_call(&id, uac(), uas())
            } else {
                udp_call(&id, uac(), uas())
            };
            let path = write(dir.path(), &id, wrap, &packets);
            let (events, summary) = assert_one_call(&path, &id, &id);
            // The inner addresses, not the tunnel's.
            let port = if proto == "tcp" { 40123 } else { 5062 };
            assert_eq!(
                events[0]["call"]["signaling"]["source"],
                format!("192.0.2.10:{port}"),
                "{id}"
            );
            assert_eq!(events[0]["call"]["signaling"]["transport"], proto, "{id}");
            assert!(summary.skipped.is_empty(), "{id}:\n{summary}");
        }
    }
}

/// A BYE in IPv6 fragments, the last first (as in the capture), ends
/// its call; fragments that never complete are named in the summary, once
/// each, instead of every fragment that merely waited.
#[test]
fn ipv6_fragments_complete_their_datagram_and_lost_ones_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let id = "frag6-bye";
    let (a, b) = (IpAddr::V6(uac6()), IpAddr::V6(uas6()));
    let mut frames = Vec::new();
    for (i, (t, from_a, m)) in call(id).into_iter().enumerate() {
        let (s, d, sp, dp) = if from_a {
            (a, b, 5062, 5060)
        } else {
            (b, a, 5060, 5062)
        };
        if i == 5 {
            let u = wire::udp(s, d, sp, dp, &m);
            let mut parts = wire::ipv6_fragments(uac6(), uas6(), 17, 0xabcd, 128, &u);
            assert!(parts.len() > 2);
            parts.reverse();
            frames.extend(parts.into_iter().map(|p| (t, eth_ip(&p))));
        } else {
            frames.push((t, eth_ip(&wire::ip_udp(s, d, sp, dp, &m))));
        }
    }
    // Another datagram whose first fragment never reached the capture.
    let stray = wire::udp(a, b, 5062, 5060, &[b'x'; 400]);
    let lost = wire::ipv6_fragments(uac6(), uas6(), 17, 0x7777, 128, &stray);
    for p in &lost[1..] {
        frames.push((T0_US + 550_000, eth_ip(p)));
    }
    frames.sort_by_key(|f| f.0);
    let path = dir.path().join("frag6.pcap");
    wire::write_pcap(&path, DataLink::ETHERNET, &frames);
    let (_, summary) = assert_one_call(&path, id, "ipv6 fragments");
    assert!(summary.open_calls.is_empty(), "{summary}");
    assert_eq!(
        summary
            .skipped
            .iter()
            .map(|(k, v)| (*k, *v))
            .collect::<Vec<_>>(),
        [(siphook::replay::INCOMPLETE_FRAGMENTS, lost.len() as u64 - 1)],
        "{summary}"
    );
}

/// TCP segments in IPv4 fragments (a VPN's small MTU) are joined before the
/// stream is.
#[test]
fn fragmented_tcp_segments_are_joined_before_the_stream() {
    let dir = tempfile::tempdir().unwrap();
    let id = "frag4-tcp";
    let packets: Vec<(u64, Vec<u8>)> = tcp_call(id, uac(), uas())
        .into_iter()
        .flat_map(|(t, ip)| {
            let (src, dst) = (
                [ip[12], ip[13], ip[14], ip[15]],
                [ip[16], ip[17], ip[18], ip[19]],
            );
            let body = &ip[20..];
            let n = body.len().div_ceil(200);
            (0..n)
                .map(|i| {
                    let end = ((i + 1) * 200).min(body.len());
                    let frag =
                        wire::ipv4_frag(src, dst, 6, 99, i * 200, i + 1 < n, &body[i * 200..end]);
                    (t, frag)
                })
                .collect::<Vec<_>>()
        })
        .collect();
    let path = write(dir.path(), id, |ip| (DataLink::RAW, ip.to_vec()), &packets);
    let (_, summary) = assert_one_call(&path, id, id);
    assert!(summary.skipped.is_empty(), "{summary}");
}

/// SIP over SCTP (RFC 4168): several messages bundled in one packet, each its
/// own DATA chunk.
#[test]
fn sip_over_sctp_is_read_chunk_by_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let id = "sctp-call";
    let msgs = call(id);
    let mut frames = Vec::new();
    for (i, (t, from_a, m)) in msgs.iter().enumerate() {
        // 100 Trying and 180 Ringing bundled into one packet.
        if i == 2 {
            continue;
        }
        let (s, d) = if *from_a {
            (uac(), uas())
        } else {
            (uas(), uac())
        };
        let chunks: Vec<&[u8]> = if i == 1 { vec![m, &msgs[2].2] } else { vec![m] };
        let sctp = wire::sctp(5060, 5060, i as u32 * 10, &chunks);
        frames.push((*t, eth_ip(&wire::ip(s, d, 132, &sctp))));
    }
    let path = dir.path().join("sctp.pcap");
    wire::write_pcap(&path, DataLink::ETHERNET, &frames);
    let (events, summary) = wire::replay_file(&path, false);
    let types: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(types, ANSWERED, "{summary}");
    assert_eq!(summary.sip_messages, 7);
    assert_eq!(events[0]["call"]["signaling"]["source"], "192.0.2.10:5060");
}

/// GTP-U echo and end-marker messages carry no user data: skipped and named,
/// while the G-PDUs around them are read.
#[test]
fn gtpu_signalling_is_named_in_the_summary() {
    let dir = tempfile::tempdir().unwrap();
    let id = "gtp-echo";
    let a = IpAddr::from([172, 16, 0, 1]);
    let b = IpAddr::from([172, 16, 0, 2]);
    let mut frames: Vec<(u64, Vec<u8>)> = udp_call(id, uac(), uas())
        .into_iter()
        .map(|(t, ip)| {
            (
                t,
                eth_ip(&wire::ip_udp(a, b, 2152, 2152, &wire::gtpu(1, None, &ip))),
            )
        })
        .collect();
    let echo = [0x32, 0x01, 0, 4, 0, 0, 0, 0, 0, 1, 0, 0];
    frames.push((T0_US + 1, eth_ip(&wire::ip_udp(a, b, 2152, 2152, &echo))));
    frames.sort_by_key(|f| f.0);
    let path = dir.path().join("gtp.pcap");
    wire::write_pcap(&path, DataLink::ETHERNET, &frames);
    let (_, summary) = assert_one_call(&path, id, id);
    assert_eq!(
        summary
            .skipped
            .iter()
            .map(|(k, v)| (*k, *v))
            .collect::<Vec<_>>(),
        [("GTP-U without user data (echo, end marker, error)", 1)],
        "{summary}"
    );
}
