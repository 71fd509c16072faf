//! SIP over TCP: framing by Content-Length, and bad peers that must not hurt
//! anyone else.

mod common;

use std::time::Duration;

use common::{CallSpec, Harness, closed_by_peer, test_config, types};
use tokio::io::AsyncWriteExt;

/// Waits until siphook closes the connection (read returns EOF or reset).
async fn a_valid_call_still_works(h: &mut Harness, id: &str) {
    let mut s = h.tcp().await;
    h.call_on(&mut s, id).await;
}

#[tokio::test]
async fn whole_call_in_one_write_with_keepalives() {
    let mut h = Harness::start().await;
    let call = CallSpec::new("tcp-one-write");
    let mut bytes = String::from("\r\n\r\n");
    for m in call.answered_flow() {
        bytes.push_str(&m);
        bytes.push_str("\r\n"); // RFC 5626 CRLF keep-alive between messages
    }
    let mut s = h.tcp().await;
    s.write_all(bytes.as_bytes()).await.unwrap();
    let ev = h.events(4).await;
    assert_eq!(
        types(&ev),
        [
            "call.initiated",
            "call.ringing",
            "call.answered",
            "call.completed"
        ]
    );
    assert!(h.barrier_tcp(&mut s).await.is_empty());
    assert_eq!(
        h.metric("siphook_sip_messages_total", &[("transport", "tcp")]),
        8.0
    );
}

#[tokio::test]
async fn one_message_byte_by_byte() {
    let mut h = Harness::start().await;
    let call = CallSpec::new("tcp-bytewise");
    let mut s = h.tcp().await;
    s.set_nodelay(true).unwrap();
    for b in call
        .invite_with(1, &["Content-Type: application/sdp"])
        .as_bytes()
    {
        s.write_all(&[*b]).await.unwrap();
    }
    let e = h.next_event().await;
    assert_eq!(e["type"], "call.initiated");
    assert_eq!(e["call"]["sip_call_id"], "tcp-bytewise");
}

#[tokio::test]
async fn oversized_message_closes_only_that_connection() {
    let mut config = test_config();
    config.sip.max_message_bytes = 4096;
    let mut h = Harness::with_config(config).await;
    let mut bystander = h.tcp().await;
    let mut bad = h.tcp().await;
    let call = CallSpec::new("tcp-big");
    let big = call.request("INVITE", 1, "INVITE", None, "big", &[], &"x".repeat(5000));
    bad.write_all(big.as_bytes()).await.unwrap();
    closed_by_peer(&mut bad).await;
    assert_eq!(
        h.metric(
            "siphook_tcp_connections_closed_total",
            &[("reason", "too_large")]
        ),
        1.0
    );
    assert_eq!(
        h.metric(
            "siphook_sip_parse_errors_total",
            &[("transport", "tcp"), ("reason", "too_large")]
        ),
        1.0
    );
    // A header block that never ends is bounded by the same limit.
    let mut endless = h.tcp().await;
    let _ = endless
        .write_all(format!("INVITE sip:a@b SIP/2.0\r\nX-Pad: {}\r\n", "y".repeat(8000)).as_bytes())
        .await;
    closed_by_peer(&mut endless).await;
    // The other connection is unaffected.
    assert!(h.barrier_tcp(&mut bystander).await.is_empty());
    a_valid_call_still_works(&mut h, "tcp-after-big").await;
}

#[tokio::test]
async fn garbage_and_missing_content_length_close_the_connection() {
    let mut h = Harness::start().await;
    let mut s = h.tcp().await;
    s.write_all(b"\x16\x03\x01\x02\x00 this is not SIP\r\n\r\n")
        .await
        .unwrap();
    closed_by_peer(&mut s).await;
    assert_eq!(
        h.metric(
            "siphook_tcp_connections_closed_total",
            &[("reason", "missing_content_length")]
        ),
        1.0
    );
    a_valid_call_still_works(&mut h, "tcp-after-garbage-1").await;

    let mut s = h.tcp().await;
    s.write_all(b"BYE sip:a@b SIP/2.0\r\nCall-ID: x\r\nContent-Length: twelve\r\n\r\n")
        .await
        .unwrap();
    closed_by_peer(&mut s).await;
    assert_eq!(
        h.metric(
            "siphook_tcp_connections_closed_total",
            &[("reason", "bad_content_length")]
        ),
        1.0
    );
    a_valid_call_still_works(&mut h, "tcp-after-garbage-2").await;

    // Framed but unparseable: counted, and the connection stays usable.
    let mut s = h.tcp().await;
    s.write_all(b"NOT A SIP LINE\r\nContent-Length: 0\r\n\r\n")
        .await
        .unwrap();
    assert!(h.barrier_tcp(&mut s).await.is_empty());
    assert_eq!(
        h.metric(
            "siphook_sip_parse_errors_total",
            &[("transport", "tcp"), ("reason", "malformed")]
        ),
        1.0
    );
    a_valid_call_still_works(&mut h, "tcp-after-garbage").await;
}

#[tokio::test]
async fn idle_connections_close_and_the_connection_cap_refuses() {
    let mut config = test_config();
    config.sip.tcp_idle_timeout = Duration::from_millis(200);
    config.sip.max_tcp_connections = 2;
    let mut h = Harness::with_config(config).await;
    let mut a = h.tcp().await;
    let mut b = h.tcp().await;
    h.wait_metric("siphook_tcp_connections", &[], 2.0).await;
    let mut refused = h.tcp().await;
    closed_by_peer(&mut refused).await;
    assert_eq!(
        h.metric(
            "siphook_tcp_connections_closed_total",
            &[("reason", "refused_max_connections")]
        ),
        1.0
    );
    closed_by_peer(&mut a).await;
    closed_by_peer(&mut b).await;
    assert_eq!(
        h.metric(
            "siphook_tcp_connections_closed_total",
            &[("reason", "idle_timeout")]
        ),
        2.0
    );
    a_valid_call_still_works(&mut h, "tcp-after-idle").await;
}

/// Slowloris: a peer that sends a byte at a time is never idle, yet a message
/// that takes longer than `tcp_idle_timeout` to arrive closes its connection.
#[tokio::test]
async fn a_message_dribbled_a_byte_at_a_time_closes_the_connection() {
    let mut config = test_config();
    config.sip.tcp_idle_timeout = Duration::from_millis(300);
    let mut h = Harness::with_config(config).await;
    let mut s = h.tcp().await;
    let msg = CallSpec::new("slowloris").invite(1);
    let mut closed = false;
    // The pacing is the attack itself: one byte every 50 ms, bounded.
    for b in msg.as_bytes().iter().take(100) {
        if s.write_all(&[*b]).await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        if h.metric(
            "siphook_tcp_connections_closed_total",
            &[("reason", "slow_message")],
        ) >= 1.0
        {
            closed = true;
            break;
        }
    }
    assert!(closed, "the dribbling connection was not closed");
    closed_by_peer(&mut s).await;
    assert_eq!(
        h.metric(
            "siphook_tcp_connections_closed_total",
            &[("reason", "idle_timeout")]
        ),
        0.0,
        "never idle, closed for being slow"
    );
    a_valid_call_still_works(&mut h, "tcp-after-slowloris").await;
}

/// The framer reads Content-Length on the parser's unfolded view: a folded line
/// that only looks like `Content-Length: 250` (a continuation of Subject) neither
/// swallows the call behind it nor is taken for a second, disagreeing length.
#[tokio::test]
async fn a_folded_content_length_is_read_as_the_parser_reads_it() {
    let mut h = Harness::start().await;
    let options = |real_length: &str| {
        format!(
            "OPTIONS sip:probe@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1;branch=z9hG4bK-f1\r\n\
             From: <sip:a@127.0.0.1>;tag=f\r\nTo: <sip:b@127.0.0.1>\r\nCall-ID: folded-1\r\n\
             CSeq: 1 OPTIONS\r\nSubject: hello\r\n Content-Length: 250\r\n{real_length}\r\n"
        )
    };
    // With its real Content-Length, the message ends where the parser says, and
    // the call written behind it on the same connection is followed.
    let mut s = h.tcp().await;
    let call = CallSpec::new("tcp-behind-a-folded-line");
    let mut stream = options("Content-Length: 0\r\n");
    stream.push_str(&call.answered_flow().concat());
    s.write_all(stream.as_bytes()).await.unwrap();
    let ev = h.expect_answered_calls(1).await;
    assert_eq!(ev[0]["call"]["sip_call_id"], "tcp-behind-a-folded-line");

    // Without one, the message has no length at all to either reader: the
    // connection closes rather than taking the INVITE behind it as a body.
    let mut s = h.tcp().await;
    let smuggled = CallSpec::new("tcp-smuggled-invite");
    let mut stream = options("");
    stream.push_str(&smuggled.invite(1));
    s.write_all(stream.as_bytes()).await.unwrap();
    closed_by_peer(&mut s).await;
    assert_eq!(h.tcp_closed("missing_content_length"), 1.0);
    assert!(
        h.barrier().await.is_empty(),
        "nothing came of the smuggled INVITE"
    );
    a_valid_call_still_works(&mut h, "tcp-after-a-folded-line").await;
}
