//! One hostile or broken peer cannot starve the others, over real loopback
//! sockets: TCP slots are capped per source and handed from the largest source to
//! a newcomer, trusted proxies always get one, keep-alives alone do not hold a
//! connection, and a keyed HEP listener closes connections that never prove the
//! key. Each test shows a legitimate peer's call still coming out as events.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{CallSpec, Harness, closed_by_peer, test_config, types};
use siphook::config::Config;
use siphook::sip::hep::HepBuilder;
use siphook::vocab::Timestamp;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// A connection to `target` from the loopback address `from` (127.0.0.0/8 is
/// all loopback on Linux, so each address is a source of its own).
async fn connect_from(from: &str, target: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(format!("{from}:0").parse().unwrap())
        .expect("bind a loopback source address");
    socket.connect(target).await.unwrap()
}

/// Whether the peer has closed `stream`, without waiting longer than `within`.
async fn is_closed(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(within, stream.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

/// One SIP message as a capture agent wraps it over TCP, with `key` if given.
fn hep_packet(msg: &str, key: Option<&[u8]>) -> Vec<u8> {
    let b = HepBuilder::new().sip(
        6,
        "192.0.2.10:5062".parse().unwrap(),
        "198.51.100.20:5060".parse().unwrap(),
        Timestamp::now(),
        msg.as_bytes(),
    );
    match key {
        Some(k) => b.chunk(0, 14, k),
        None => b,
    }
    .build()
}

fn config(max: usize, per_source: usize) -> Config {
    let mut c = test_config();
    c.sip.max_tcp_connections = max;
    c.sip.max_connections_per_source = per_source;
    c
}

#[tokio::test]
async fn one_source_holds_at_most_its_share_of_the_slots() {
    let mut h = Harness::with_config(config(8, 4)).await;
    let target = h.tcp_target;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(connect_from("127.0.0.2", target).await);
    }
    h.wait_metric("siphook_tcp_connections", &[], 4.0).await;
    let mut fifth = connect_from("127.0.0.2", target).await;
    closed_by_peer(&mut fifth).await;
    assert_eq!(h.tcp_closed("refused_per_source"), 1.0);
    // Another source still gets in, and its call is followed.
    let mut other = connect_from("127.0.0.3", target).await;
    h.call_on(&mut other, "fair-other-source").await;
    assert_eq!(h.metric("siphook_tcp_connections", &[]), 5.0);
}

#[tokio::test]
async fn a_full_listener_hands_the_largest_sources_idlest_slot_to_a_newcomer() {
    let mut h = Harness::with_config(config(6, 4)).await;
    let target = h.tcp_target;
    let mut big = Vec::new();
    for _ in 0..4 {
        big.push(connect_from("127.0.0.2", target).await);
    }
    let mut small = Vec::new();
    for _ in 0..2 {
        small.push(connect_from("127.0.0.3", target).await);
    }
    h.wait_metric("siphook_tcp_connections", &[], 6.0).await;
    // The first of the large source's connections brings a message: it is no
    // longer among the idlest.
    let busy = CallSpec::new("fair-busy");
    big[0].write_all(busy.invite(1).as_bytes()).await.unwrap();
    assert_eq!(types(&h.events(1).await), ["call.initiated"]);

    let mut newcomer = connect_from("127.0.0.4", target).await;
    h.call_on(&mut newcomer, "fair-newcomer").await;
    h.wait_metric(
        "siphook_tcp_connections_closed_total",
        &[("reason", "evicted")],
        1.0,
    )
    .await;
    assert_eq!(h.tcp_closed("evicted"), 1.0);
    assert_eq!(h.tcp_closed("refused_max_connections"), 0.0);
    let mut gone = 0;
    for s in big.iter_mut().skip(1) {
        if is_closed(s, Duration::from_millis(200)).await {
            gone += 1;
        }
    }
    assert_eq!(gone, 1, "exactly one idle connection of the largest source");
    for s in &mut small {
        assert!(!is_closed(s, Duration::from_millis(50)).await);
    }
    // The busy connection kept its slot.
    h.call_on(&mut big[0], "fair-busy-again").await;
}

#[tokio::test]
async fn a_trusted_proxy_always_gets_a_slot_past_its_share() {
    let mut c = config(4, 2);
    c.sip.siptrace_from = vec!["127.0.0.5".parse().unwrap()];
    let mut h = Harness::with_config(c).await;
    let target = h.tcp_target;
    let mut others = Vec::new();
    for from in ["127.0.0.2", "127.0.0.2", "127.0.0.3", "127.0.0.3"] {
        others.push(connect_from(from, target).await);
    }
    h.wait_metric("siphook_tcp_connections", &[], 4.0).await;
    let mut proxy = Vec::new();
    for _ in 0..3 {
        proxy.push(connect_from("127.0.0.5", target).await);
    }
    for (i, p) in proxy.iter_mut().enumerate() {
        h.call_on(p, &format!("fair-proxy-{i}")).await;
    }
    assert_eq!(h.tcp_closed("evicted"), 3.0);
    assert_eq!(h.tcp_closed("refused_per_source"), 0.0);
    // Only untrusted connections give up slots: with four proxy connections the
    // listener is all the proxy's, and a fifth is refused, not evicting one.
    proxy.push(connect_from("127.0.0.5", target).await);
    h.call_on(&mut proxy[3], "fair-proxy-3").await;
    let mut fifth = connect_from("127.0.0.5", target).await;
    closed_by_peer(&mut fifth).await;
    assert_eq!(h.tcp_closed("refused_max_connections"), 1.0);
}

#[tokio::test]
async fn keep_alives_alone_do_not_hold_a_connection_open() {
    let mut c = test_config();
    c.sip.tcp_idle_timeout = Duration::from_secs(1);
    let mut h = Harness::with_config(c).await;
    let mut pinger = h.tcp().await;
    let mut talker = h.tcp().await;
    // Every 100 ms: a CRLF keep-alive on one, a whole message on the other.
    let start = tokio::time::Instant::now();
    let mut n = 0u32;
    let mut pinger_open = true;
    while start.elapsed() < Duration::from_secs(3) && n < 100 {
        n += 1;
        if pinger_open {
            pinger_open = pinger.write_all(b"\r\n\r\n").await.is_ok()
                && !is_closed(&mut pinger, Duration::from_millis(1)).await;
        }
        let options = CallSpec::new(&format!("fair-options-{n}")).request(
            "OPTIONS",
            1,
            "OPTIONS",
            None,
            "o",
            &[],
            "",
        );
        talker.write_all(options.as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if pinger_open {
        closed_by_peer(&mut pinger).await;
    }
    assert_eq!(h.tcp_closed("idle_timeout"), 1.0);
    // Three times the idle timeout of messages kept the other connection.
    h.call_on(&mut talker, "fair-talker").await;
}

/// Each write finishes one unparseable frame and starts the next, so a message
/// is always under way: still no SIP message, so still closed within twice the
/// idle timeout.
#[tokio::test]
async fn unparseable_frames_back_to_back_do_not_hold_a_connection() {
    let mut c = test_config();
    c.sip.tcp_idle_timeout = Duration::from_millis(500);
    let mut h = Harness::with_config(c).await;
    let mut s = h.tcp().await;
    s.write_all(b"X").await.unwrap();
    let start = tokio::time::Instant::now();
    let mut open = true;
    for _ in 0..40 {
        open = s.write_all(b"\r\nl: 0\r\n\r\nX").await.is_ok()
            && !is_closed(&mut s, Duration::from_millis(100)).await;
        if !open {
            break;
        }
    }
    assert!(!open, "the connection was held for {:?}", start.elapsed());
    assert!(
        h.metric(
            "siphook_sip_parse_errors_total",
            &[("transport", "tcp"), ("reason", "malformed")]
        ) >= 1.0
    );
    let mut fresh = h.tcp().await;
    h.call_on(&mut fresh, "fair-after-frames").await;
}

#[tokio::test]
async fn a_keyed_hep_listener_closes_connections_that_never_prove_the_key() {
    let mut c = test_config();
    c.hep.tcp = vec!["127.0.0.1:0".parse().unwrap()];
    c.hep.auth_key = Some(siphook::vocab::Redacted("capture-s3cret".into()));
    c.hep.auth_timeout = Duration::from_millis(500);
    let mut h = Harness::with_config(c).await;
    let target = h.gw.hep_tcp_addrs[0];
    let mut squatter = TcpStream::connect(target).await.unwrap();
    let mut agent = TcpStream::connect(target).await.unwrap();
    // A bare HEP header every 100 ms: it frames, but carries no key.
    let mut squatter_open = true;
    for _ in 0..30 {
        if !squatter_open {
            break;
        }
        squatter_open = squatter.write_all(b"HEP3\x00\x06").await.is_ok()
            && !is_closed(&mut squatter, Duration::from_millis(100)).await;
    }
    if squatter_open {
        closed_by_peer(&mut squatter).await;
    }
    // The idle agent beside it proved nothing either.
    h.wait_metric(
        "siphook_tcp_connections_closed_total",
        &[("reason", "auth_timeout")],
        2.0,
    )
    .await;
    let dropped = |reason: &str| {
        h.metric(
            "siphook_hep_packets_dropped_total",
            &[("transport", "tcp"), ("reason", reason)],
        )
    };
    assert!(dropped("auth_failed") >= 2.0);
    assert_eq!(dropped("hep_no_payload"), 0.0);
    closed_by_peer(&mut agent).await;

    // An agent that sends keyed packets is served.
    let mut agent = TcpStream::connect(target).await.unwrap();
    let call = CallSpec::new("fair-keyed-agent");
    for msg in call.answered_flow() {
        let packet = hep_packet(&msg, Some(b"capture-s3cret"));
        agent.write_all(&packet).await.unwrap();
    }
    let ev = h.expect_answered_calls(1).await;
    assert_eq!(ev[0]["call"]["sip_call_id"], "fair-keyed-agent");
    assert_eq!(h.tcp_closed("auth_timeout"), 2.0);
}

#[tokio::test]
async fn a_listed_hep_agent_is_not_held_to_the_per_source_share() {
    let mut c = config(4, 1);
    c.hep.tcp = vec!["127.0.0.1:0".parse().unwrap()];
    c.hep.agents = vec!["127.0.0.5".parse().unwrap()];
    let mut h = Harness::with_config(c).await;
    let target = h.gw.hep_tcp_addrs[0];
    let mut agent = Vec::new();
    for _ in 0..3 {
        agent.push(connect_from("127.0.0.5", target).await);
    }
    let mut other = connect_from("127.0.0.2", target).await;
    let mut second = connect_from("127.0.0.2", target).await;
    closed_by_peer(&mut second).await;
    assert_eq!(
        h.tcp_closed("refused_per_source"),
        1.0,
        "only the unlisted source"
    );
    h.wait_metric("siphook_tcp_connections", &[], 4.0).await;
    // The agent's connections all carry calls.
    let call = CallSpec::new("fair-hep-agent");
    for msg in call.answered_flow() {
        agent[2].write_all(&hep_packet(&msg, None)).await.unwrap();
    }
    let ev = h.expect_answered_calls(1).await;
    assert_eq!(ev[0]["call"]["sip_call_id"], "fair-hep-agent");
    assert!(!is_closed(&mut other, Duration::from_millis(50)).await);
}
