//! HEPv3 ingest over real loopback sockets: what a capture agent (Kamailio
//! siptrace, heplify, …) sends becomes the same events as plain SIP, with the
//! captured packet's addresses, protocol and time.

mod common;

use std::net::SocketAddr;

use common::{CallSpec, Harness, metric_value, test_config};
use siphook::sip::hep::HepBuilder;
use siphook::vocab::Timestamp;
use tokio::io::AsyncWriteExt;

const CALLER: &str = "192.0.2.10:5062";
const CALLEE: &str = "198.51.100.20:5060";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Wraps one SIP message as a capture agent would, caller → callee.
fn hep(msg: &str, at: i64, proto: u8) -> Vec<u8> {
    HepBuilder::new()
        .sip(
            proto,
            addr(CALLER),
            addr(CALLEE),
            Timestamp(at),
            msg.as_bytes(),
        )
        .build()
}

async fn harness(auth_key: Option<&str>) -> Harness {
    let mut c = test_config();
    c.hep.udp = vec![addr("127.0.0.1:0")];
    c.hep.tcp = vec![addr("127.0.0.1:0")];
    c.hep.auth_key = auth_key.map(|k| siphook::vocab::Redacted(k.into()));
    Harness::with_config(c).await
}

#[tokio::test]
async fn hep_over_udp_gives_the_captured_addresses_time_and_correlation_id() {
    let mut h = harness(None).await;
    let target = h.gw.hep_udp_addrs[0];
    let call = CallSpec::new("hep-udp-1");
    // Capture times 500 ms apart, starting 5 s ago: the events carry them, not
    // the moment siphook read the socket.
    let t0 = Timestamp::now().millis() - 5000;
    for (i, m) in call.answered_flow().iter().enumerate() {
        let mut packet = HepBuilder::new().sip(
            17,
            addr(CALLER),
            addr(CALLEE),
            Timestamp(t0 + i as i64 * 500),
            m.as_bytes(),
        );
        if i == 0 {
            packet = packet.chunk(0, 17, b"hep-corr-77");
        }
        h.udp.send_to(&packet.build(), target).await.unwrap();
    }
    let events = h.expect_answered_calls(1).await;
    let first = &events[0];
    assert_eq!(first["call"]["signaling"]["source"], CALLER);
    assert_eq!(first["call"]["signaling"]["destination"], CALLEE);
    assert_eq!(first["call"]["signaling"]["transport"], "udp");
    assert_eq!(first["call"]["correlation_id"], "hep-corr-77");
    assert_eq!(first["timestamp"], Timestamp(t0).to_string());
    let done = &events[3];
    // Answered by the 200 (4th message), ended by the BYE (6th): exact capture times.
    assert_eq!(
        done["call"]["answered_at"],
        Timestamp(t0 + 1500).to_string()
    );
    assert_eq!(done["call"]["ended_at"], Timestamp(t0 + 2500).to_string());
    assert_eq!(done["data"]["talk_ms"], 1000);
    assert_eq!(h.metric("siphook_capture_clock_skew_total", &[]), 0.0);
    assert_eq!(
        h.metric("siphook_sip_messages_total", &[("transport", "hep")]),
        7.0
    );
}

#[tokio::test]
async fn a_capture_clock_far_off_is_replaced_by_the_receive_time_and_counted() {
    let mut h = harness(None).await;
    let target = h.gw.hep_udp_addrs[0];
    let call = CallSpec::new("hep-skew-1");
    let an_hour_ago = Timestamp::now().millis() - 3_600_000;
    let before = Timestamp::now().millis();
    h.udp
        .send_to(&hep(&call.invite(1), an_hour_ago, 17), target)
        .await
        .unwrap();
    let e = h.next_event().await;
    let at = common::ms(&e["timestamp"]);
    assert!(
        at >= before && at <= Timestamp::now().millis(),
        "receive time, not the skewed capture time"
    );
    assert_eq!(
        h.metric("siphook_capture_clock_skew_total", &[("source", "hep")]),
        1.0
    );
    // Its invite timer runs from the receive time: the call is still active.
    assert!(h.barrier().await.is_empty());
}

#[tokio::test]
async fn a_configured_correlation_header_wins_over_the_hep_chunk() {
    let mut h = harness(None).await;
    let target = h.gw.hep_udp_addrs[0];
    let call = CallSpec::new("hep-corr-2");
    let packet = HepBuilder::new()
        .sip(
            17,
            addr(CALLER),
            addr(CALLEE),
            Timestamp::now(),
            call.invite_with(1, &["X-CID: from-header"]).as_bytes(),
        )
        .chunk(0, 17, b"from-hep")
        .build();
    h.udp.send_to(&packet, target).await.unwrap();
    let e = h.next_event().await;
    assert_eq!(e["call"]["correlation_id"], "from-header");
}

#[tokio::test]
async fn hep_over_tcp_is_framed_by_length_across_any_segmentation() {
    let mut h = harness(None).await;
    let mut stream = tokio::net::TcpStream::connect(h.gw.hep_tcp_addrs[0])
        .await
        .unwrap();
    stream.set_nodelay(true).unwrap();
    let call = CallSpec::new("hep-tcp-1");
    let now = Timestamp::now().millis();
    let bytes: Vec<u8> = call
        .answered_flow()
        .iter()
        .flat_map(|m| hep(m, now, 6))
        .collect();
    // Odd-sized writes split packets and headers anywhere.
    for piece in bytes.chunks(37) {
        stream.write_all(piece).await.unwrap();
        stream.flush().await.unwrap();
    }
    let events = h.expect_answered_calls(1).await;
    assert_eq!(
        events[0]["call"]["signaling"]["transport"], "tcp",
        "the captured packet's protocol"
    );
    assert_eq!(events[0]["call"]["signaling"]["source"], CALLER);
}

#[tokio::test]
async fn bad_hep_is_counted_and_a_bad_tcp_stream_closes_only_its_connection() {
    let mut h = harness(None).await;
    let target = h.gw.hep_udp_addrs[0];
    let good = hep(
        &CallSpec::new("hep-bad-1").invite(1),
        Timestamp::now().millis(),
        17,
    );
    // Truncated, wrong magic, length mismatch, RTCP instead of SIP.
    h.udp
        .send_to(&good[..good.len() - 3], target)
        .await
        .unwrap();
    h.udp.send_to(b"HEP2\x00\x06", target).await.unwrap();
    let mut longer = good.clone();
    longer.extend_from_slice(b"xx");
    h.udp.send_to(&longer, target).await.unwrap();
    let rtcp = HepBuilder::new()
        .chunk(0, 11, &[5])
        .chunk(0, 15, b"\x80\xc8")
        .build();
    h.udp.send_to(&rtcp, target).await.unwrap();
    h.wait_metric(
        "siphook_hep_packets_dropped_total",
        &[("transport", "udp")],
        4.0,
    )
    .await;
    assert_eq!(
        h.metric(
            "siphook_hep_packets_dropped_total",
            &[("reason", "hep_bad_length")]
        ),
        2.0
    );
    assert_eq!(
        h.metric(
            "siphook_hep_packets_dropped_total",
            &[("reason", "hep_bad_magic")]
        ),
        1.0
    );
    assert_eq!(
        h.metric(
            "siphook_hep_packets_dropped_total",
            &[("reason", "not_sip")]
        ),
        1.0
    );

    // Plain SIP on the HEP TCP port: the connection is closed and counted.
    let mut wrong = tokio::net::TcpStream::connect(h.gw.hep_tcp_addrs[0])
        .await
        .unwrap();
    wrong
        .write_all(CallSpec::new("hep-bad-2").invite(1).as_bytes())
        .await
        .unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(
        common::DEADLINE,
        tokio::io::AsyncReadExt::read(&mut wrong, &mut buf),
    )
    .await
    .expect("siphook closes the connection")
    .unwrap_or(0);
    assert_eq!(n, 0, "closed without an answer");
    h.wait_metric(
        "siphook_tcp_connections_closed_total",
        &[("reason", "hep_bad_magic")],
        1.0,
    )
    .await;
    // Nothing of the above became an event; a good packet still does.
    h.udp.send_to(&good, target).await.unwrap();
    let e = h.next_event().await;
    assert_eq!(e["call"]["sip_call_id"], "hep-bad-1");
}

#[tokio::test]
async fn with_an_auth_key_only_matching_packets_are_taken() {
    let mut h = harness(Some("capture-s3cret")).await;
    let target = h.gw.hep_udp_addrs[0];
    let now = Timestamp::now();
    let packet = |id: &str, key: Option<&[u8]>| {
        let b = HepBuilder::new().sip(
            17,
            addr(CALLER),
            addr(CALLEE),
            now,
            CallSpec::new(id).invite(1).as_bytes(),
        );
        match key {
            Some(k) => b.chunk(0, 14, k),
            None => b,
        }
        .build()
    };
    h.udp
        .send_to(&packet("auth-none", None), target)
        .await
        .unwrap();
    h.udp
        .send_to(&packet("auth-wrong", Some(b"capture-s3cres")), target)
        .await
        .unwrap();
    h.udp
        .send_to(&packet("auth-ok", Some(b"capture-s3cret")), target)
        .await
        .unwrap();
    let e = h.next_event().await;
    assert_eq!(e["call"]["sip_call_id"], "auth-ok");
    assert_eq!(
        metric_value(
            &h.gw.metrics,
            "siphook_hep_packets_dropped_total",
            &[("reason", "auth_failed")]
        ),
        2.0
    );
    // The barrier proves the two refused INVITEs made no event either.
    assert!(h.barrier().await.is_empty());
}

/// Kamailio siptrace in plain (duplicate) mode with `xheaders_write`: the copy
/// comes from the proxy, the headers name the original packet.
#[tokio::test]
async fn siptrace_x_headers_on_a_plain_mirror_copy_name_the_original_packet() {
    let mut c = test_config();
    c.sip.siptrace_from = vec!["127.0.0.1".parse().unwrap()];
    c.hep.udp = vec![addr("127.0.0.1:0")];
    let mut h = Harness::with_config(c).await;
    let call = CallSpec::new("xtrace-1");
    let at = Timestamp::now().millis() - 2000;
    let trace = [
        "X-Siptrace-Fromip: tcp:192.0.2.10:5062".to_owned(),
        "X-Siptrace-Toip: udp:[2001:db8::20]:5060".to_owned(),
        format!("X-Siptrace-Time: {} {}", at / 1000, (at % 1000) * 1000),
        "X-Siptrace-Method: INVITE".to_owned(),
        "X-Siptrace-Dir: in".to_owned(),
    ];
    let extra: Vec<&str> = trace.iter().map(String::as_str).collect();
    h.send(&call.invite_with(1, &extra)).await;
    let e = h.next_event().await;
    assert_eq!(e["call"]["signaling"]["source"], "192.0.2.10:5062");
    assert_eq!(e["call"]["signaling"]["destination"], "[2001:db8::20]:5060");
    assert_eq!(e["call"]["signaling"]["transport"], "tcp");
    assert_eq!(e["timestamp"], Timestamp(at).to_string());
    // Without the headers, the socket's view stands.
    let plain = CallSpec::new("xtrace-2");
    h.send(&plain.invite(1)).await;
    let e = h.next_event().await;
    assert_eq!(
        e["call"]["signaling"]["destination"],
        h.udp_target.to_string()
    );
    // Inside HEP, the agent's chunks say where the packet was, not a header.
    let inside = CallSpec::new("xtrace-3");
    let packet = HepBuilder::new()
        .sip(
            17,
            addr(CALLER),
            addr(CALLEE),
            Timestamp::now(),
            inside.invite_with(1, &extra).as_bytes(),
        )
        .build();
    h.udp.send_to(&packet, h.gw.hep_udp_addrs[0]).await.unwrap();
    let e = h.next_event().await;
    assert_eq!(e["call"]["signaling"]["source"], CALLER);
    assert_eq!(e["call"]["signaling"]["destination"], CALLEE);
}

/// From a sender not in `[sip] siptrace_from`, the headers are a caller's claim.
#[tokio::test]
async fn siptrace_headers_from_an_untrusted_sender_are_ignored() {
    let mut h = harness(None).await;
    let call = CallSpec::new("xtrace-spoof");
    h.send(&call.invite_with(
        1,
        &[
            "X-Siptrace-Fromip: udp:6.6.6.6:666",
            "X-Siptrace-Toip: udp:7.7.7.7:777",
            "X-Siptrace-Time: 999999999 0",
        ],
    ))
    .await;
    let e = h.next_event().await;
    assert_eq!(
        e["call"]["signaling"]["source"],
        h.udp.local_addr().unwrap().to_string()
    );
    assert_eq!(
        e["call"]["signaling"]["destination"],
        h.udp_target.to_string()
    );
    assert_eq!(h.metric("siphook_capture_clock_skew_total", &[]), 0.0);
}

/// A proxy's mirror seen through HEP shows both legs: the caller's and each
/// branch's. A branch's failure towards the proxy does not end the call; what the
/// proxy sends the caller does; the proxy's own CANCEL of a branch is not the
/// caller's.
#[tokio::test]
async fn both_legs_of_a_forking_proxy() {
    let mut h = harness(None).await;
    let target = h.gw.hep_udp_addrs[0];
    let (c, p) = (addr("192.0.2.10:5062"), addr("192.0.2.1:5060"));
    let (u1, u2) = (addr("198.51.100.1:5060"), addr("198.51.100.2:5060"));
    let now = Timestamp::now().millis();
    // Each step as the capture agent on the proxy reports it.
    let play = async |h: &Harness, steps: Vec<(SocketAddr, SocketAddr, String)>| {
        for (src, dst, m) in steps {
            let packet = HepBuilder::new()
                .sip(17, src, dst, Timestamp(now), m.as_bytes())
                .build();
            h.udp.send_to(&packet, target).await.unwrap();
        }
    };
    // 1. One branch busy at once, the other answers.
    let call = CallSpec::new("two-legs-fork");
    play(
        &h,
        vec![
            (c, p, call.invite(1)),
            (p, u1, call.invite(1)),
            (p, u2, call.invite(1)),
            (u2, p, call.resp(486, 1, "INVITE", Some("b2"))),
            (u1, p, call.resp(180, 1, "INVITE", Some("b1"))),
            (p, c, call.resp(180, 1, "INVITE", Some("b1"))),
            (u1, p, call.resp(200, 1, "INVITE", Some("b1"))),
            (p, c, call.resp(200, 1, "INVITE", Some("b1"))),
            (c, p, call.ack(1, "b1")),
            (c, p, call.bye(2, "b1")),
            (p, u1, call.bye(2, "b1")),
            (u1, p, call.resp(200, 2, "BYE", Some("b1"))),
            (p, c, call.resp(200, 2, "BYE", Some("b1"))),
        ],
    )
    .await;
    let events = h.expect_answered_calls(1).await;
    assert_eq!(events[3]["data"]["disposition"], "answered");
    assert_eq!(events[3]["call"]["to"]["tag"], "b1");

    // 2. The proxy gives up ringing: 408 to the caller with its own tag, then it
    //    cancels the branch, which answers 487.
    let call = CallSpec::new("two-legs-timeout");
    play(
        &h,
        vec![
            (c, p, call.invite(1)),
            (p, u1, call.invite(1)),
            (u1, p, call.resp(180, 1, "INVITE", Some("b1"))),
            (p, c, call.resp(180, 1, "INVITE", Some("b1"))),
            (p, c, call.resp(408, 1, "INVITE", Some("proxy-tag"))),
            (p, u1, call.cancel(1)),
            (u1, p, call.resp(200, 1, "CANCEL", Some("b1"))),
            (u1, p, call.resp(487, 1, "INVITE", Some("b1"))),
        ],
    )
    .await;
    let events = h.events(3).await;
    assert_eq!(
        common::types(&events),
        ["call.initiated", "call.ringing", "call.completed"]
    );
    let done = &events[2]["data"];
    assert_eq!(
        (&done["disposition"], &done["sip_status"], &done["ended_by"]),
        (&"no_answer".into(), &408.into(), &"callee".into()),
        "the caller got a 408 and never cancelled"
    );
    let after = h.barrier().await;
    assert!(after.is_empty(), "nothing after the completion: {after:?}");

    // 3. Serial failover: the first gateway fails, the proxy tries another.
    let call = CallSpec::new("two-legs-failover");
    play(
        &h,
        vec![
            (c, p, call.invite(1)),
            (p, u1, call.invite(1)),
            (u1, p, call.resp(503, 1, "INVITE", Some("g1"))),
            (p, u2, call.invite(1)),
            (u2, p, call.resp(180, 1, "INVITE", Some("g2"))),
            (p, c, call.resp(180, 1, "INVITE", Some("g2"))),
            (u2, p, call.resp(200, 1, "INVITE", Some("g2"))),
            (p, c, call.resp(200, 1, "INVITE", Some("g2"))),
            (c, p, call.bye(2, "g2")),
            (p, c, call.resp(200, 2, "BYE", Some("g2"))),
        ],
    )
    .await;
    let events = h.expect_answered_calls(1).await;
    assert_eq!(events[3]["data"]["disposition"], "answered");

    // 4. A hairpin: the first branch goes back to the caller's own host, which
    //    refuses it; the second branch answers.
    let call = CallSpec::new("two-legs-hairpin");
    play(
        &h,
        vec![
            (c, p, call.invite(1)),
            (p, c, call.invite(1)),
            (c, p, call.resp(503, 1, "INVITE", Some("h1"))),
            (p, u2, call.invite(1)),
            (u2, p, call.resp(180, 1, "INVITE", Some("h2"))),
            (p, c, call.resp(180, 1, "INVITE", Some("h2"))),
            (u2, p, call.resp(200, 1, "INVITE", Some("h2"))),
            (p, c, call.resp(200, 1, "INVITE", Some("h2"))),
            (c, p, call.bye(2, "h2")),
            (p, c, call.resp(200, 2, "BYE", Some("h2"))),
        ],
    )
    .await;
    let events = h.expect_answered_calls(1).await;
    assert_eq!(events[3]["data"]["disposition"], "answered");

    // 5. The gateway challenges the proxy, which re-sends with its own CSeq; the
    //    gateway is busy and the proxy tells the caller (CSeq 1).
    let call = CallSpec::new("two-legs-reauth");
    play(
        &h,
        vec![
            (c, p, call.invite(1)),
            (p, u1, call.invite(1)),
            (u1, p, call.resp(407, 1, "INVITE", Some("a1"))),
            (p, u1, call.invite(2)),
            (u1, p, call.resp(486, 2, "INVITE", Some("a2"))),
            (p, c, call.resp(486, 1, "INVITE", Some("a2"))),
        ],
    )
    .await;
    let events = h.events(2).await;
    assert_eq!(common::types(&events), ["call.initiated", "call.completed"]);
    assert_eq!(events[1]["data"]["disposition"], "busy");
    assert_eq!(events[1]["data"]["sip_status"], 486);
}
