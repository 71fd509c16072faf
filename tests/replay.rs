//! Capture replay: real captures made with SIPp and tcpdump on loopback (in
//! tests/data), and synthetic ones for every link type, fragmentation and
//! tunnelling the replay claims to read, each asserting the exact events.

mod common;

use std::borrow::Cow;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::CallSpec;
use common::wire::{replay_file, write_pcap};
use etherparse::{IpNumber, Ipv4Header, PacketBuilder};
use pcap_file::DataLink;
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionBlock;
use serde_json::Value;
use siphook::config::Config;
use siphook::replay::{ReplayOptions, replay};
use siphook::sip::hep::HepBuilder;

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// (Call-ID, type) of each event, in order.
fn flow(events: &[Value]) -> Vec<(String, String)> {
    events
        .iter()
        .map(|e| {
            (
                e["call"]["sip_call_id"].as_str().unwrap().to_owned(),
                e["type"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

const ANSWERED: [&str; 4] = [
    "call.initiated",
    "call.ringing",
    "call.answered",
    "call.completed",
];

fn assert_answered_calls(events: &[Value], calls: usize) {
    let mut per_call: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for (c, t) in flow(events) {
        per_call.entry(c).or_default().push(t);
    }
    assert_eq!(per_call.len(), calls, "{per_call:?}");
    for (c, types) in per_call {
        assert_eq!(types, ANSWERED, "{c}");
    }
}

/// talk_ms of every completed call equals answered_at → ended_at in capture time.
fn assert_talk_from_capture(events: &[Value]) {
    for e in events.iter().filter(|e| e["type"] == "call.completed") {
        let talk = common::ms(&e["call"]["ended_at"]) - common::ms(&e["call"]["answered_at"]);
        assert_eq!(e["data"]["talk_ms"], talk);
    }
}

#[test]
fn a_sipp_capture_over_udp_replays_to_the_same_calls_with_capture_durations() {
    let (events, summary) = replay_file(&data("sipp-udp-3-calls.pcap"), false);
    assert_answered_calls(&events, 3);
    assert_talk_from_capture(&events);
    // SIPp held each call for 300 ms (-d 300): the capture says so, not the replay.
    for e in events.iter().filter(|e| e["type"] == "call.completed") {
        let talk = e["data"]["talk_ms"].as_i64().unwrap();
        assert!((300..400).contains(&talk), "talk_ms {talk}");
        assert_eq!(e["data"]["disposition"], "answered");
        assert_eq!(e["call"]["signaling"]["transport"], "udp");
        assert_eq!(e["call"]["signaling"]["destination"], "127.0.0.1:15070");
    }
    assert_eq!(
        (summary.packets, summary.sip_messages, summary.calls),
        (18, 18, 3)
    );
    assert!(summary.open_calls.is_empty());
    assert!(summary.parse_errors.is_empty());
}

#[test]
fn a_sipp_capture_over_tcp_is_reassembled_per_flow() {
    let (events, summary) = replay_file(&data("sipp-tcp-2-calls.pcap"), false);
    assert_answered_calls(&events, 2);
    assert_talk_from_capture(&events);
    assert!(
        events
            .iter()
            .all(|e| e["call"]["signaling"]["transport"] == "tcp")
    );
    // Handshakes and bare ACK segments carry no SIP; every message is whole once.
    assert_eq!(summary.sip_messages, 12);
    assert_eq!(summary.tcp_framing_errors, 0);
}

// ---- synthetic captures ------------------------------------------------------

const UAC: [u8; 4] = [192, 0, 2, 10];
const UAS: [u8; 4] = [198, 51, 100, 20];
const T0_US: u64 = 1_795_330_800_000_000;

/// The seven messages of an answered call, 100 ms apart: the call is answered at
/// +300 ms and hung up at +500 ms, so talk_ms must be exactly 200.
fn call_messages(id: &str) -> Vec<(u64, Vec<u8>)> {
    CallSpec::new(id)
        .answered_flow()
        .into_iter()
        .enumerate()
        .map(|(i, m)| (T0_US + i as u64 * 100_000, m.into_bytes()))
        .collect()
}

fn udp_ipv4(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ipv4(UAC, UAS, 64)
        .udp(5062, 5060)
        .write(&mut out, payload)
        .unwrap();
    out
}

fn ether(ether_type: u16, l3: &[u8]) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];
    f.extend_from_slice(&ether_type.to_be_bytes());
    f.extend_from_slice(l3);
    f
}

fn assert_one_exact_call(path: &Path, id: &str) -> Vec<Value> {
    let (events, summary) = replay_file(path, false);
    assert_eq!(
        flow(&events),
        ANSWERED.map(|t| (id.to_owned(), t.to_owned())),
        "{summary}"
    );
    let done = &events[3];
    assert_eq!(done["data"]["talk_ms"], 200);
    assert_eq!(done["timestamp"], "2026-11-22T07:00:00.500Z");
    assert_eq!(events[0]["timestamp"], "2026-11-22T07:00:00.000Z");
    events
}

#[test]
fn every_link_type_gives_the_same_call() {
    let dir = tempfile::tempdir().unwrap();
    type Wrap = fn(&[u8]) -> Vec<u8>;
    let cases: [(&str, DataLink, Wrap); 6] = [
        ("ethernet", DataLink::ETHERNET, |ip| ether(0x0800, ip)),
        ("vlan", DataLink::ETHERNET, |ip| {
            let mut tagged = vec![0x00, 100]; // VLAN 100
            tagged.extend_from_slice(&0x0800u16.to_be_bytes());
            tagged.extend_from_slice(ip);
            ether(0x8100, &tagged)
        }),
        ("sll", DataLink::LINUX_SLL, |ip| {
            let mut f = vec![0, 0, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0];
            f.extend_from_slice(&0x0800u16.to_be_bytes());
            f.extend_from_slice(ip);
            f
        }),
        ("sll2", DataLink::LINUX_SLL2, |ip| {
            let mut f = 0x0800u16.to_be_bytes().to_vec();
            f.extend_from_slice(&[0, 0, 0, 0, 0, 2, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0]);
            f.extend_from_slice(ip);
            f
        }),
        ("raw", DataLink::RAW, |ip| ip.to_vec()),
        ("null", DataLink::NULL, |ip| {
            let mut f = 2u32.to_le_bytes().to_vec(); // AF_INET, host order
            f.extend_from_slice(ip);
            f
        }),
    ];
    for (name, link, wrap) in cases {
        let id = format!("link-{name}");
        let frames: Vec<(u64, Vec<u8>)> = call_messages(&id)
            .into_iter()
            .map(|(t, m)| (t, wrap(&udp_ipv4(&m))))
            .collect();
        let path = dir.path().join(format!("{name}.pcap"));
        write_pcap(&path, link, &frames);
        let events = assert_one_exact_call(&path, &id);
        assert_eq!(events[0]["call"]["signaling"]["source"], "192.0.2.10:5062");
        assert_eq!(
            events[0]["call"]["signaling"]["destination"],
            "198.51.100.20:5060"
        );
    }
}

#[test]
fn ipv6_in_pcapng_with_microsecond_and_nanosecond_interfaces() {
    let dir = tempfile::tempdir().unwrap();
    for (resolution, scale) in [(None, 1u64), (Some(9u8), 1000u64)] {
        let id = format!("ng-{}", resolution.unwrap_or(6));
        let path = dir.path().join(format!("{id}.pcapng"));
        let mut w = PcapNgWriter::new(std::fs::File::create(&path).unwrap()).unwrap();
        let options = resolution
            .map(|r| vec![pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption::IfTsResol(r)])
            .unwrap_or_default();
        w.write_pcapng_block(InterfaceDescriptionBlock {
            linktype: DataLink::RAW,
            snaplen: 65535,
            options,
        })
        .unwrap();
        let src: [u8; 16] = "2001:db8::10"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets();
        let dst: [u8; 16] = "2001:db8::20"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets();
        for (us, m) in call_messages(&id) {
            let mut ip = Vec::new();
            PacketBuilder::ipv6(src, dst, 64)
                .udp(5062, 5060)
                .write(&mut ip, &m)
                .unwrap();
            // pcap-file writes the raw timestamp units as given.
            w.write_pcapng_block(EnhancedPacketBlock {
                interface_id: 0,
                timestamp: Duration::from_nanos(us * scale),
                original_len: ip.len() as u32,
                data: Cow::Owned(ip),
                options: vec![],
            })
            .unwrap();
        }
        drop(w);
        let events = assert_one_exact_call(&path, &id);
        assert_eq!(
            events[0]["call"]["signaling"]["source"],
            "[2001:db8::10]:5062"
        );
    }
}

/// Splits an IPv4 packet's payload into fragments of `size` bytes (a multiple of 8).
fn fragments(payload: &[u8], protocol: IpNumber, id: u16, size: usize) -> Vec<Vec<u8>> {
    let chunks: Vec<&[u8]> = payload.chunks(size).collect();
    chunks
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut h = Ipv4Header::new(c.len() as u16, 64, protocol, UAC, UAS).unwrap();
            h.identification = id;
            h.more_fragments = i + 1 < chunks.len();
            h.fragment_offset = etherparse::IpFragOffset::try_new((i * size / 8) as u16).unwrap();
            h.header_checksum = h.calc_header_checksum();
            let mut out = Vec::new();
            h.write(&mut out).unwrap();
            out.extend_from_slice(c);
            out
        })
        .collect()
}

#[test]
fn fragmented_invites_and_ip_in_ip_tunnels_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let id = "frag-1";
    let sdp = format!("v=0\r\n{}", "a=x-padding:0123456789abcdef\r\n".repeat(120));
    let spec = CallSpec::new(id);
    let mut msgs = call_messages(id);
    msgs[0].1 = spec
        .request(
            "INVITE",
            1,
            "INVITE",
            None,
            "inv1",
            &["Content-Type: application/sdp"],
            &sdp,
        )
        .into_bytes();
    assert!(msgs[0].1.len() > 3000);
    let mut frames = Vec::new();
    for (i, (us, m)) in msgs.iter().enumerate() {
        let ip = udp_ipv4(m);
        if i == 0 {
            // The INVITE in three fragments, the last one first.
            let mut parts = fragments(&ip[20..], IpNumber::UDP, 77, 1480);
            assert_eq!(parts.len(), 3);
            parts.reverse();
            for p in parts {
                frames.push((*us, ether(0x0800, &p)));
            }
        } else if i == 5 {
            // The BYE through an IP-in-IP tunnel.
            let mut outer = Vec::new();
            Ipv4Header::new(
                ip.len() as u16,
                64,
                IpNumber::IPV4,
                [10, 9, 9, 1],
                [10, 9, 9, 2],
            )
            .unwrap()
            .write(&mut outer)
            .unwrap();
            outer.extend_from_slice(&ip);
            frames.push((*us, ether(0x0800, &outer)));
        } else {
            frames.push((*us, ether(0x0800, &ip)));
        }
    }
    let path = dir.path().join("frag.pcap");
    write_pcap(&path, DataLink::ETHERNET, &frames);
    assert_one_exact_call(&path, id);
    let (_, summary) = replay_file(&path, false);
    // The fragments waited and were joined: nothing was skipped.
    assert!(summary.skipped.is_empty(), "{summary}");
}

#[test]
fn hep_inside_udp_gives_the_captured_addresses_and_times() {
    let dir = tempfile::tempdir().unwrap();
    let id = "hep-cap-1";
    let uac: SocketAddr = "203.0.113.5:5062".parse().unwrap();
    let uas: SocketAddr = "203.0.113.9:5060".parse().unwrap();
    let frames: Vec<(u64, Vec<u8>)> = call_messages(id)
        .into_iter()
        .map(|(us, m)| {
            // The HEP packet says when the SIP was seen; it reaches the collector
            // (and the capture) 40 ms later.
            let at = siphook::vocab::Timestamp((us / 1000) as i64);
            let hep = HepBuilder::new().sip(17, uac, uas, at, &m).build();
            let mut ip = Vec::new();
            PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
                .udp(40000, 9060)
                .write(&mut ip, &hep)
                .unwrap();
            (us + 40_000, ether(0x0800, &ip))
        })
        .collect();
    let path = dir.path().join("hep.pcap");
    write_pcap(&path, DataLink::ETHERNET, &frames);
    let events = assert_one_exact_call(&path, id);
    assert_eq!(events[0]["call"]["signaling"]["source"], uac.to_string());
    assert_eq!(
        events[0]["call"]["signaling"]["destination"],
        uas.to_string()
    );
    let (_, summary) = replay_file(&path, false);
    assert_eq!((summary.hep_packets, summary.hep_dropped), (7, 0));
}

#[test]
fn open_calls_are_listed_and_drain_completes_them_by_their_timers() {
    let dir = tempfile::tempdir().unwrap();
    let id = "open-1";
    // Answered, never hung up: the capture ends mid-call.
    let frames: Vec<(u64, Vec<u8>)> = call_messages(id)
        .into_iter()
        .take(5)
        .map(|(t, m)| (t, ether(0x0800, &udp_ipv4(&m))))
        .collect();
    let path = dir.path().join("open.pcap");
    write_pcap(&path, DataLink::ETHERNET, &frames);
    let (events, summary) = replay_file(&path, false);
    assert_eq!(events.len(), 3);
    assert_eq!(summary.open_calls, [id]);
    let (events, summary) = replay_file(&path, true);
    assert!(summary.open_calls.is_empty());
    let done = &events[3];
    assert_eq!(done["type"], "call.completed");
    assert_eq!(done["data"]["ended_by"], "timeout");
    // Ended at max_call_duration (4 h) after the answer, on capture time.
    assert_eq!(
        common::ms(&done["call"]["ended_at"]) - common::ms(&done["call"]["answered_at"]),
        4 * 3600 * 1000
    );
}

#[test]
fn damaged_and_foreign_files_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read(data("sipp-udp-3-calls.pcap")).unwrap();
    // Every truncation point of a real capture: events up to the damage, no panic.
    for cut in (24..good.len()).step_by(97) {
        let path = dir.path().join("cut.pcap");
        std::fs::write(&path, &good[..cut]).unwrap();
        let _ = replay(
            &path,
            &ReplayOptions::from_config(&Config::default(), true),
            |_| {},
        );
    }
    let path = dir.path().join("not.pcap");
    std::fs::write(&path, b"INVITE sip:x SIP/2.0\r\n\r\n").unwrap();
    let err = replay(
        &path,
        &ReplayOptions::from_config(&Config::default(), false),
        |_| {},
    );
    assert!(err.is_err());
    // Random bytes inside valid frames of every link type.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for link in [
        DataLink::ETHERNET,
        DataLink::LINUX_SLL,
        DataLink::LINUX_SLL2,
        DataLink::RAW,
        DataLink::NULL,
    ] {
        let frames: Vec<(u64, Vec<u8>)> = (0..200)
            .map(|i| {
                let len = (i * 7) % 300;
                let bytes = (0..len)
                    .map(|_| {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        seed as u8
                    })
                    .collect();
                (T0_US + i as u64, bytes)
            })
            .collect();
        let path = dir.path().join("noise.pcap");
        write_pcap(&path, link, &frames);
        let (events, summary) = replay_file(&path, true);
        assert!(events.is_empty());
        assert_eq!(summary.packets, 200);
    }
}

#[test]
fn the_cli_prints_json_lines_and_a_summary_on_stderr() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_siphook"))
        .arg("replay")
        .arg(data("sipp-udp-3-calls.pcap"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_answered_calls(&lines, 3);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("packets: 18"), "{stderr}");
    assert!(stderr.contains("calls still open: 0"), "{stderr}");
}

/// `--deliver` goes through the outbox and the configured endpoint, then exits
/// once every delivery is done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliver_sends_every_event_signed_through_the_outbox() {
    let mut rx = common::receiver::Receiver::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let (config, _) = common::binary_config(dir.path(), &rx.url(), "");
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_siphook"))
        .args(["replay", "--deliver", "--config"])
        .arg(&config)
        .arg(data("sipp-udp-3-calls.pcap"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let out = tokio::time::timeout(common::DEADLINE, child.wait_with_output())
        .await
        .expect("replay --deliver finishes")
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stdout.is_empty(),
        "events go to the endpoint, not stdout"
    );
    let mut got = Vec::new();
    while let Ok(req) = rx.requests.try_recv() {
        assert!(req.header("webhook-signature").starts_with("v1,"));
        got.push(req.json());
    }
    assert_answered_calls(&got, 3);
}

/// A real Kamailio 5.6 capture: siptrace sending HEPv3 for a proxied SIPp call
/// (tests/kamailio/proxy.cfg), each message traced as received and as forwarded.
#[test]
fn a_kamailio_hep_capture_gives_each_event_once_with_the_callers_addresses() {
    let (events, summary) = replay_file(&data("kamailio-hep-2-calls.pcap"), false);
    assert_answered_calls(&events, 2);
    assert_talk_from_capture(&events);
    for e in &events {
        assert_eq!(
            e["call"]["signaling"]["source"], "127.0.0.1:19080",
            "the UAC"
        );
        assert_eq!(
            e["call"]["signaling"]["destination"], "127.0.0.1:19050",
            "the proxy"
        );
    }
    assert_eq!((summary.hep_packets, summary.hep_dropped), (24, 0));
    assert_eq!(summary.sip_messages, 24);
}

/// What the review of the first version found: a corrupt timestamp far in the
/// future, a capture cut by its snap length, and a frame a day ahead of the rest.
#[test]
fn corrupt_times_and_snap_lengths_do_not_end_or_poison_the_replay() {
    let dir = tempfile::tempdir().unwrap();
    // pcapng: the first packet's timestamp is garbage (past year 9999).
    let path = dir.path().join("future.pcapng");
    let mut w = PcapNgWriter::new(std::fs::File::create(&path).unwrap()).unwrap();
    w.write_pcapng_block(InterfaceDescriptionBlock {
        linktype: DataLink::RAW,
        snaplen: 65535,
        options: vec![],
    })
    .unwrap();
    for (i, (_, m)) in call_messages("future-1").into_iter().enumerate() {
        let ip = udp_ipv4(&m);
        let units = if i == 0 { u64::MAX } else { T0_US + i as u64 };
        w.write_pcapng_block(EnhancedPacketBlock {
            interface_id: 0,
            timestamp: Duration::from_nanos(units),
            original_len: ip.len() as u32,
            data: Cow::Owned(ip),
            options: vec![],
        })
        .unwrap();
    }
    drop(w);
    let (events, _) = replay_file(&path, false);
    assert!(!events.is_empty(), "no panic, events printed");

    // pcap: a packet cut by the snap length, then a whole call.
    let path = dir.path().join("snap.pcap");
    let file = std::fs::File::create(&path).unwrap();
    let header = PcapHeader {
        datalink: DataLink::ETHERNET,
        snaplen: 2000,
        ..Default::default()
    };
    let mut w = PcapWriter::with_header(file, header).unwrap();
    let jumbo = ether(0x0800, &udp_ipv4(&[b'x'; 100]));
    w.write_packet(&PcapPacket::new(
        Duration::from_micros(T0_US - 1),
        9000,
        &jumbo,
    ))
    .unwrap();
    for (us, m) in call_messages("snap-1") {
        let f = ether(0x0800, &udp_ipv4(&m));
        w.write_packet(&PcapPacket::new(
            Duration::from_micros(us),
            f.len() as u32,
            &f,
        ))
        .unwrap();
    }
    drop(w);
    assert_one_exact_call(&path, "snap-1");

    // A frame two days ahead (a corrupt clock) between the 200 and the BYE.
    let mut frames: Vec<(u64, Vec<u8>)> = call_messages("jump-1")
        .into_iter()
        .map(|(t, m)| (t, ether(0x0800, &udp_ipv4(&m))))
        .collect();
    frames.insert(
        4,
        (
            T0_US + 2 * 86_400_000_000,
            ether(0x0800, &udp_ipv4(b"noise")),
        ),
    );
    let path = dir.path().join("jump.pcap");
    write_pcap(&path, DataLink::ETHERNET, &frames);
    let (events, summary) = replay_file(&path, false);
    assert_eq!(summary.bad_times, 1);
    let done = events
        .iter()
        .find(|e| e["type"] == "call.completed")
        .unwrap();
    assert_eq!(
        done["data"]["disposition"], "answered",
        "ended by its BYE, not a timer"
    );
    assert_eq!(done["data"]["talk_ms"], 200);
}

/// `--deliver` does not leave the capture's open calls in the outbox, where the
/// next live start would resume them and time them out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliver_forgets_the_calls_a_capture_left_open() {
    let rx = common::receiver::Receiver::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let (config_path, _) = common::binary_config(dir.path(), &rx.url(), "");
    let config = Config::load(&config_path).unwrap();
    let frames: Vec<(u64, Vec<u8>)> = call_messages("left-open")
        .into_iter()
        .take(4)
        .map(|(t, m)| (t, ether(0x0800, &udp_ipv4(&m))))
        .collect();
    let path = dir.path().join("open.pcap");
    write_pcap(&path, DataLink::ETHERNET, &frames);
    let summary = siphook::replay::replay_and_deliver(
        std::slice::from_ref(&path),
        &config,
        ReplayOptions::from_config(&config, false),
        None,
        std::future::pending::<()>(),
    )
    .await
    .unwrap();
    assert_eq!(summary.open_calls, ["left-open"]);
    let outbox = siphook::deliver::open_outbox(&config).unwrap();
    assert!(outbox.active_calls().unwrap().is_empty());
}

/// A capture in a format replay does not read is named, with the conversion
/// that makes it readable, instead of a bare "wrong magic number".
#[test]
fn a_capture_in_another_format_is_named_with_its_conversion() {
    let dir = tempfile::tempdir().unwrap();
    for (head, format) in [
        (
            &b"GMBU\x00\x02\x00\x00"[..],
            "Microsoft Network Monitor 2.x",
        ),
        (&b"snoop\0\0\0\0\0\0\x02"[..], "Solaris snoop"),
        (
            &b"\x34\xcd\xb2\xa1\x02\x00"[..],
            "modified (Kuznetzov) pcap",
        ),
    ] {
        let path = dir.path().join("capture.cap");
        let mut bytes = head.to_vec();
        bytes.resize(64, 0);
        std::fs::write(&path, &bytes).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_siphook"))
            .arg("replay")
            .arg(&path)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("this is a {format} capture")),
            "{stderr}"
        );
        assert!(stderr.contains("editcap -F pcapng"), "{stderr}");
    }
    let opts = ReplayOptions::from_config(&Config::default(), false);
    let err = |bytes: &[u8]| {
        let path = dir.path().join("odd.cap");
        std::fs::write(&path, bytes).unwrap();
        replay(&path, &opts, |_| {}).unwrap_err().to_string()
    };
    let gz = err(b"\x1f\x8b\x08\x00\x00\x00\x00\x00");
    assert!(gz.contains("odd.cap: this is a compressed file"), "{gz}");
    assert!(gz.contains("<(zcat FILE)"), "{gz}");
    let empty = err(b"");
    assert!(
        empty.contains("odd.cap: ") && empty.contains("the file is empty"),
        "{empty}"
    );
    assert!(err(b"ab").contains("too short for a capture header"));
}

/// A capture read through a pipe (decompressed on the fly) replays like the file.
#[test]
fn a_capture_through_a_pipe_replays() {
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "{} replay <(cat {})",
            env!("CARGO_BIN_EXE_siphook"),
            data("sipp-udp-3-calls.pcap").display()
        ))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_answered_calls(&lines, 3);
}

/// Several files in the order given replay as one capture: a call split across
/// them comes out exactly as from the whole file.
#[test]
fn several_files_replay_as_one_capture() {
    let whole = std::fs::read(data("sipp-udp-3-calls.pcap")).unwrap();
    // Classic pcap: a 24-byte header, then records of a 16-byte header and
    // incl_len bytes; cut between record 9 and 10 (mid-call).
    let mut at = 24;
    let mut cut = 0;
    for record in 0..18 {
        if record == 9 {
            cut = at;
        }
        let incl = u32::from_le_bytes(whole[at + 8..at + 12].try_into().unwrap()) as usize;
        at += 16 + incl;
    }
    assert_eq!(at, whole.len(), "18 records");
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.pcap"), dir.path().join("b.pcap"));
    std::fs::write(&a, &whole[..cut]).unwrap();
    let mut second = whole[..24].to_vec();
    second.extend_from_slice(&whole[cut..]);
    std::fs::write(&b, &second).unwrap();
    let cli = |files: &[&std::path::Path]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_siphook"))
            .arg("replay")
            .args(files)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (split, summary) = cli(&[&a, &b]);
    let (one, _) = cli(&[&data("sipp-udp-3-calls.pcap")]);
    assert_eq!(split, one, "the same events, ids and times");
    let lines: Vec<Value> = split
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_answered_calls(&lines, 3);
    assert!(summary.contains("packets: 18"), "{summary}");
    // The first half alone leaves calls open: the split really is mid-call.
    let (half, _) = cli(&[&a]);
    assert!(half.lines().count() < lines.len());
}
