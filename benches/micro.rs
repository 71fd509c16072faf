//! Micro-benchmarks of the hot path, each next to a baseline measured in the same
//! run (this machine is shared and noisy: read the ratios, not the absolutes).
//! Run: `cargo bench --bench micro`.
//!
//! - parse: siphook's `sip::parse` (normalize, rsip, typed view) of a 600-byte
//!   INVITE with SDP, a 200 OK, a BYE and the INVITE in compact form; baseline:
//!   rsip's own parse of the same INVITE (what siphook adds is the ratio).
//! - frame: cutting a TCP byte stream of 10 messages by Content-Length.
//! - tracker: one whole answered call (7 messages) through a fresh call table.
//! - sign: one Standard Webhooks signature of a real event; baseline: SHA-256 of
//!   the same bytes.
//! - outbox: append + commit (fsync) of 1 and of 100 events.

use std::hint::black_box;
use std::net::SocketAddr;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use siphook::call::{Tracker, TrackerConfig};
use siphook::config::Config;
use siphook::deliver::sign::signature_header;
use siphook::sip::{self, Framer, ParseOptions};
use siphook::vocab::Secret;
use siphook::vocab::{Meta, Timestamp, Transport};

const SDP: &str = "v=0\r\no=- 20518 0 IN IP4 203.0.113.1\r\ns=-\r\nc=IN IP4 203.0.113.1\r\nt=0 0\r\nm=audio 54400 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=sendrecv\r\n";

fn invite(call_id: &str) -> String {
    format!(
        "INVITE sip:+15551234567@198.51.100.20:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds\r\nMax-Forwards: 70\r\nFrom: \"Alice\" <sip:+15557654321@192.0.2.10>;tag=1928301774\r\nTo: <sip:+15551234567@198.51.100.20>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@192.0.2.10:5060>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{SDP}",
        SDP.len()
    )
}

fn compact_invite(call_id: &str) -> String {
    format!(
        "INVITE sip:+15551234567@198.51.100.20:5060 SIP/2.0\r\nv: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds\r\nMax-Forwards: 70\r\nf: \"Alice\" <sip:+15557654321@192.0.2.10>;tag=1928301774\r\nt: <sip:+15551234567@198.51.100.20>\r\ni: {call_id}\r\nCSeq: 1 INVITE\r\nm: <sip:alice@192.0.2.10:5060>\r\nc: application/sdp\r\nl: {}\r\n\r\n{SDP}",
        SDP.len()
    )
}

fn response(call_id: &str, status: &str, cseq: &str, to_tag: &str) -> String {
    format!(
        "SIP/2.0 {status}\r\nVia: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds\r\nFrom: \"Alice\" <sip:+15557654321@192.0.2.10>;tag=1928301774\r\nTo: <sip:+15551234567@198.51.100.20>;tag={to_tag}\r\nCall-ID: {call_id}\r\nCSeq: {cseq}\r\nContact: <sip:bob@198.51.100.20:5060>\r\nContent-Length: 0\r\n\r\n"
    )
}

fn request(method: &str, call_id: &str, cseq: u32) -> String {
    format!(
        "{method} sip:bob@198.51.100.20:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK{method}{cseq}\r\nMax-Forwards: 70\r\nFrom: \"Alice\" <sip:+15557654321@192.0.2.10>;tag=1928301774\r\nTo: <sip:+15551234567@198.51.100.20>;tag=b1\r\nCall-ID: {call_id}\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n"
    )
}

fn call_flow(call_id: &str) -> Vec<String> {
    vec![
        invite(call_id),
        response(call_id, "100 Trying", "1 INVITE", "b1"),
        response(call_id, "180 Ringing", "1 INVITE", "b1"),
        response(call_id, "200 OK", "1 INVITE", "b1"),
        request("ACK", call_id, 1),
        request("BYE", call_id, 2),
        response(call_id, "200 OK", "2 BYE", "b1"),
    ]
}

fn parse(c: &mut Criterion) {
    let opts = ParseOptions::default();
    let inv = invite("a84b4c76e66710@pc33.example.com");
    assert!((550..=700).contains(&inv.len()), "{} bytes", inv.len());
    let ok = response("a84b4c76e66710", "200 OK", "1 INVITE", "b1");
    let bye = request("BYE", "a84b4c76e66710", 2);
    let compact = compact_invite("a84b4c76e66710@pc33.example.com");
    let mut g = c.benchmark_group("parse");
    g.bench_function("baseline: rsip alone, INVITE", |b| {
        b.iter(|| rsip::SipMessage::try_from(black_box(inv.as_bytes())).is_ok())
    });
    for (name, m) in [
        ("INVITE with SDP", &inv),
        ("200 OK", &ok),
        ("BYE", &bye),
        ("compact INVITE", &compact),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| sip::parse(black_box(m.as_bytes()), &opts).is_ok())
        });
    }
    g.finish();

    let stream: Vec<u8> = (0..10)
        .flat_map(|i| invite(&format!("f{i}")).into_bytes())
        .collect();
    c.bench_function("frame/10 INVITEs from one TCP buffer", |b| {
        b.iter(|| {
            let mut f = Framer::new(65536);
            f.extend(black_box(&stream));
            let mut n = 0;
            while let Ok(Some(_)) = f.next_message() {
                n += 1;
            }
            assert_eq!(n, 10);
        })
    });
}

fn tracker(c: &mut Criterion) {
    let config = Config::default();
    let cfg = TrackerConfig::from(&config.sip);
    let opts = ParseOptions::default();
    let msgs: Vec<_> = call_flow("tracker-bench")
        .iter()
        .map(|m| sip::parse(m.as_bytes(), &opts).unwrap())
        .collect();
    let src: SocketAddr = "192.0.2.10:5060".parse().unwrap();
    let dst: SocketAddr = "198.51.100.20:5060".parse().unwrap();
    c.bench_function("tracker/one answered call, 7 messages", |b| {
        b.iter_batched(
            || Tracker::new(cfg.clone()),
            |mut t| {
                let mut out = Vec::with_capacity(8);
                for (i, m) in msgs.iter().enumerate() {
                    let meta = Meta {
                        transport: Transport::Udp,
                        source: src,
                        destination: dst,
                        received_at: Timestamp(1_795_330_800_000 + i as i64),
                    };
                    let _ = t.on_message(m, &meta, &mut out);
                }
                assert_eq!(out.len(), 4);
                out
            },
            BatchSize::SmallInput,
        )
    });
}

fn sign(c: &mut Criterion) {
    let secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
    let body = br#"{"id":"evt_0123456789abcdef","type":"call.answered","version":1,"timestamp":"2026-11-22T07:00:03.512Z","sequence":3,"call":{"id":"call_0123","sip_call_id":"a84b4c76e66710@pc33.example.com","from":{"display_name":"Alice","user":"+15557654321","uri":"sip:+15557654321@192.0.2.10","tag":"1928301774"},"to":{"user":"+15551234567","uri":"sip:+15551234567@198.51.100.20","tag":"b1"},"ani":"+15557654321","dnis":"+15551234567","started_at":"2026-11-22T07:00:00.000Z","answered_at":"2026-11-22T07:00:03.512Z","signaling":{"transport":"udp","source":"192.0.2.10:5060","destination":"198.51.100.20:5060"}},"data":{"sip_status":200,"ring_ms":3512}}"#;
    let mut g = c.benchmark_group("sign");
    g.bench_function("baseline: SHA-256 of the body", |b| {
        b.iter(|| {
            use sha2::Digest;
            sha2::Sha256::digest(black_box(&body[..]))
        })
    });
    g.bench_function("Standard Webhooks v1, one secret", |b| {
        b.iter(|| {
            signature_header(
                std::slice::from_ref(&secret),
                "evt_0123456789abcdef",
                1_795_330_803,
                black_box(&body[..]),
            )
        })
    });
    g.finish();
}

fn outbox(c: &mut Criterion) {
    use siphook::outbox::Outbox;
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let outbox = Outbox::open(&dir.path().join("outbox"), 1 << 40).unwrap();
    // Real events: the tracker's, for one call.
    let cfg = TrackerConfig::from(&Config::default().sip);
    let opts = ParseOptions::default();
    let mut t = Tracker::new(cfg);
    let mut events = Vec::new();
    let src: SocketAddr = "192.0.2.10:5060".parse().unwrap();
    for m in call_flow("outbox-bench") {
        let meta = Meta {
            transport: Transport::Udp,
            source: src,
            destination: src,
            received_at: Timestamp(1_795_330_800_000),
        };
        let _ = t.on_message(
            &sip::parse(m.as_bytes(), &opts).unwrap(),
            &meta,
            &mut events,
        );
    }
    let bodies: Vec<Vec<u8>> = events.iter().map(|e| e.to_json()).collect();
    let mut g = c.benchmark_group("outbox");
    g.sample_size(30);
    for batch in [1usize, 100] {
        g.bench_function(format!("append {batch} + commit (fsync)"), |b| {
            b.iter(|| {
                for i in 0..batch {
                    let k = i % events.len();
                    outbox.append(&events[k], &bodies[k], &["crm"], 0).unwrap();
                }
                rt.block_on(outbox.commit()).unwrap();
            })
        });
    }
    g.finish();
}

criterion_group!(benches, parse, tracker, sign, outbox);
criterion_main!(benches);
