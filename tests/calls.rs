//! Call scenarios over real UDP sockets against siphook started in-process.

mod common;

use std::time::Duration;

use common::{CallSpec, Harness, ms, test_config, types};
use serde_json::{Value, json};

const SDP: &str = "v=0\r\no=- 1 1 IN IP4 10.0.0.2\r\ns=-\r\nc=IN IP4 10.0.0.2\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";

fn assert_call_basics(events: &[Value], call: &CallSpec) {
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["sequence"], json!(i + 1), "sequence without gaps");
        assert_eq!(e["version"], 1);
        assert_eq!(e["call"]["sip_call_id"], call.call_id.as_str());
        assert_eq!(e["call"]["id"], events[0]["call"]["id"], "one call id");
    }
    let ids: std::collections::HashSet<&str> =
        events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), events.len(), "event ids are distinct");
}

#[tokio::test]
async fn answered_call_has_exact_durations() {
    let mut h = Harness::start().await;
    let call = CallSpec::new("answered-1");
    let flow = call.answered_flow();
    // Real gaps between ringing, answer and hang-up, so each duration is measurable
    // (the sleeps shape the call; nothing waits on them for synchronisation).
    h.send_all(&flow[..3]).await;
    tokio::time::sleep(Duration::from_millis(40)).await;
    h.send_all(&flow[3..5]).await;
    tokio::time::sleep(Duration::from_millis(60)).await;
    h.send_all(&flow[5..]).await;
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
    assert_call_basics(&ev, &call);

    let init = &ev[0];
    assert_eq!(init["data"]["request_uri"], "sip:+15551234567@10.0.0.2");
    assert_eq!(init["data"]["user_agent"], "siphook-test");
    assert_eq!(init["data"]["stir_shaken"], Value::Null);
    assert_eq!(init["call"]["from"]["user"], "+15557654321");
    assert_eq!(init["call"]["from"]["display_name"], "Alice");
    assert_eq!(init["call"]["from"]["tag"], "ft-answered-1");
    assert_eq!(init["call"]["ani"], "+15557654321");
    assert_eq!(init["call"]["dnis"], "+15551234567");
    assert_eq!(init["call"]["to"]["tag"], Value::Null);
    assert_eq!(init["call"]["signaling"]["transport"], "udp");
    assert_eq!(
        init["call"]["signaling"]["source"],
        h.udp.local_addr().unwrap().to_string()
    );
    assert_eq!(
        init["call"]["signaling"]["destination"],
        h.udp_target.to_string()
    );
    assert_eq!(
        ev[1]["data"],
        json!({"sip_status": 180, "early_media": false})
    );

    let done = &ev[3];
    let c = &done["call"];
    let (started, ringing, answered, ended) = (
        ms(&c["started_at"]),
        ms(&c["ringing_at"]),
        ms(&c["answered_at"]),
        ms(&c["ended_at"]),
    );
    // Each event is stamped with the receive time of the message that caused it.
    assert_eq!(ms(&ev[0]["timestamp"]), started);
    assert_eq!(ms(&ev[1]["timestamp"]), ringing);
    assert_eq!(ms(&ev[2]["timestamp"]), answered);
    assert_eq!(ms(&done["timestamp"]), ended);
    assert_eq!(ev[2]["data"]["ring_ms"], json!(answered - started));
    assert!(
        answered - ringing >= 40 && ended - answered >= 60,
        "ring {} talk {}",
        answered - ringing,
        ended - answered
    );
    assert_eq!(c["to"]["tag"], "callee");
    assert_eq!(
        done["data"],
        json!({
            "disposition": "answered", "sip_status": 200, "reason": null, "q850_cause": null,
            "ended_by": "caller", "ring_ms": answered - started, "talk_ms": ended - answered,
            "duration_ms": ended - started,
        })
    );
    assert!(h.barrier().await.is_empty());
}

#[tokio::test]
async fn busy() {
    let mut h = Harness::start().await;
    let call = CallSpec::new("busy-1");
    h.send_all(&[
        call.invite(1),
        call.resp(100, 1, "INVITE", None),
        call.resp(486, 1, "INVITE", Some("b")),
        call.ack(1, "b"),
    ])
    .await;
    let ev = h.events(2).await;
    assert_eq!(types(&ev), ["call.initiated", "call.completed"]);
    assert_call_basics(&ev, &call);
    let d = &ev[1]["data"];
    assert_eq!(
        (
            d["disposition"].as_str(),
            d["sip_status"].as_u64(),
            d["ended_by"].as_str()
        ),
        (Some("busy"), Some(486), Some("callee"))
    );
    assert_eq!(d["talk_ms"], 0);
    assert_eq!(d["ring_ms"], d["duration_ms"]);
    assert!(h.barrier().await.is_empty(), "the ACK to 486 emits nothing");
}

#[tokio::test]
async fn caller_cancel() {
    let mut h = Harness::start().await;
    let call = CallSpec::new("cancel-1");
    h.send_all(&[
        call.invite(1),
        call.resp(180, 1, "INVITE", Some("b")),
        call.cancel(1),
        call.resp(200, 1, "CANCEL", Some("b")),
        call.resp(487, 1, "INVITE", Some("b")),
        call.ack(1, "b"),
    ])
    .await;
    let ev = h.events(3).await;
    assert_eq!(
        types(&ev),
        ["call.initiated", "call.ringing", "call.completed"]
    );
    let d = &ev[2]["data"];
    assert_eq!(
        (
            d["disposition"].as_str(),
            d["sip_status"].as_u64(),
            d["ended_by"].as_str()
        ),
        (Some("cancelled"), Some(487), Some("caller"))
    );
    assert_eq!(ev[2]["call"]["answered_at"], Value::Null);
    assert!(h.barrier().await.is_empty());
}

#[tokio::test]
async fn ok_after_cancel_wins() {
    let mut h = Harness::start().await;
    let call = CallSpec::new("cancel-race");
    h.send_all(&[
        call.invite(1),
        call.resp(180, 1, "INVITE", Some("b")),
        call.cancel(1),
        call.resp(200, 1, "INVITE", Some("b")),
        call.resp(200, 1, "CANCEL", Some("b")),
        call.ack(1, "b"),
        call.bye(2, "b"),
        call.resp(200, 2, "BYE", Some("b")),
    ])
    .await;
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
    assert_eq!(ev[3]["data"]["disposition"], "answered");
}

#[tokio::test]
async fn proxy_challenge_then_authenticated_retry_is_one_call() {
    let mut h = Harness::start().await;
    let call = CallSpec::new("auth-1");
    h.send_all(&[
        call.invite(1),
        call.resp(407, 1, "INVITE", Some("proxy")),
        call.ack(1, "proxy"),
        call.invite_with(2, &["Proxy-Authorization: Digest username=\"alice\", realm=\"x\", nonce=\"n\", uri=\"sip:b@h\", response=\"r\""]),
        call.resp(100, 2, "INVITE", None),
        call.resp(180, 2, "INVITE", Some("b")),
        call.resp(200, 2, "INVITE", Some("b")),
        call.ack(2, "b"),
        call.bye(3, "b"),
        call.resp(200, 3, "BYE", Some("b")),
    ])
    .await;
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
    assert_call_basics(&ev, &call);
    // started_at stays the first INVITE's receive time.
    assert_eq!(ev[3]["call"]["started_at"], ev[0]["timestamp"]);
    assert_eq!(ev[3]["data"]["disposition"], "answered");
    assert!(h.barrier().await.is_empty());
}

#[tokio::test]
async fn challenge_without_retry_fails_after_the_window() {
    let mut config = test_config();
    config.sip.challenge_window = Duration::from_millis(300);
    let mut h = Harness::with_config(config).await;
    let call = CallSpec::new("auth-2");
    h.send_all(&[
        call.invite(1),
        call.resp(401, 1, "INVITE", Some("registrar")),
        call.ack(1, "registrar"),
    ])
    .await;
    let ev = h.events(2).await;
    assert_eq!(types(&ev), ["call.initiated", "call.completed"]);
    let d = &ev[1]["data"];
    assert_eq!(
        (
            d["disposition"].as_str(),
            d["sip_status"].as_u64(),
            d["reason"].as_str()
        ),
        (Some("failed"), Some(401), Some("no_retry_after_challenge"))
    );
    // The call ended when the challenge came, not when siphook stopped waiting.
    let c = &ev[1]["call"];
    assert_eq!(ev[1]["timestamp"], c["ended_at"]);
    assert!(ms(&c["ended_at"]) - ms(&c["started_at"]) < 300);
}

#[tokio::test]
async fn no_answer_by_status_and_by_timeout() {
    let mut config = test_config();
    config.sip.invite_timeout = Duration::from_millis(300);
    let mut h = Harness::with_config(config).await;
    let rejected = CallSpec::new("noanswer-480");
    h.send_all(&[
        rejected.invite(1),
        rejected.resp(180, 1, "INVITE", Some("b")),
        rejected.resp(480, 1, "INVITE", Some("b")),
    ])
    .await;
    let ev = h.events(3).await;
    assert_eq!(
        types(&ev),
        ["call.initiated", "call.ringing", "call.completed"]
    );
    assert_eq!(ev[2]["data"]["disposition"], "no_answer");
    assert_eq!(ev[2]["data"]["sip_status"], 480);
    assert_eq!(ev[2]["data"]["ended_by"], "callee");

    let silent = CallSpec::new("noanswer-timeout");
    h.send_all(&[silent.invite(1), silent.resp(180, 1, "INVITE", Some("b"))])
        .await;
    let ev = h.events(3).await;
    assert_eq!(
        types(&ev),
        ["call.initiated", "call.ringing", "call.completed"]
    );
    let d = &ev[2]["data"];
    assert_eq!(
        (
            d["disposition"].as_str(),
            d["sip_status"].as_u64(),
            d["ended_by"].as_str(),
            d["reason"].as_str()
        ),
        (
            Some("no_answer"),
            None,
            Some("timeout"),
            Some("invite_timeout")
        )
    );
    assert_eq!(
        d["duration_ms"], 300,
        "ends exactly invite_timeout after the INVITE"
    );
}

#[tokio::test]
async fn forked_invite_two_early_dialogs_one_answer() {
    let mut h = Harness::start().await;
    let call = CallSpec::new("fork-1");
    h.send_all(&[
        call.invite(1),
        call.resp(180, 1, "INVITE", Some("forkA")),
        call.response(
            183,
            "Session Progress",
            1,
            "INVITE",
            Some("forkB"),
            &["Content-Type: application/sdp"],
            SDP,
        ),
        call.resp(200, 1, "INVITE", Some("forkB")),
        call.ack(1, "forkB"),
        // A late 2xx from the other fork is acknowledged and hung up by the caller;
        // that BYE ends the stray dialog, not the call.
        call.resp(200, 1, "INVITE", Some("forkA")),
        call.ack(1, "forkA"),
        call.bye(2, "forkA"),
    ])
    .await;
    let ev = h.events(3).await;
    assert_eq!(
        types(&ev),
        ["call.initiated", "call.ringing", "call.answered"]
    );
    assert_eq!(
        ev[1]["data"],
        json!({"sip_status": 180, "early_media": false})
    );
    assert_eq!(ev[2]["call"]["to"]["tag"], "forkB");
    assert!(
        h.barrier().await.is_empty(),
        "the second fork's 2xx and its BYE emit nothing"
    );
    h.send(&call.bye(3, "forkB")).await;
    h.send(&call.resp(200, 3, "BYE", Some("forkB"))).await;
    let done = h.next_event().await;
    assert_eq!(done["type"], "call.completed");
    assert_eq!(done["sequence"], 4);
    assert_eq!(done["data"]["disposition"], "answered");
}

#[tokio::test]
async fn early_media_ringing() {
    let mut h = Harness::start().await;
    let call = CallSpec::new("early-1");
    h.send_all(&[
        call.invite(1),
        call.response(
            183,
            "Session Progress",
            1,
            "INVITE",
            Some("b"),
            &["Content-Type: application/sdp"],
            SDP,
        ),
        call.resp(180, 1, "INVITE", Some("b")),
    ])
    .await;
    let ev = h.events(2).await;
    assert_eq!(
        ev[1]["data"],
        json!({"sip_status": 183, "early_media": true})
    );
    assert!(h.barrier().await.is_empty(), "ringing is emitted once");
}

fn answered_prefix(call: &CallSpec, tag: &str) -> Vec<String> {
    vec![
        call.invite(1),
        call.resp(180, 1, "INVITE", Some(tag)),
        call.resp(200, 1, "INVITE", Some(tag)),
        call.ack(1, tag),
    ]
}

#[tokio::test]
async fn blind_transfer() {
    let mut h = Harness::start().await;
    let call = CallSpec::new("blind-1");
    h.send_all(&answered_prefix(&call, "bob")).await;
    // Bob transfers Alice to Carol: REFER from the callee, NOTIFYs from the caller.
    h.send_all(&[
        call.callee_request(
            "REFER",
            1,
            "bob",
            &[
                "Refer-To: <sip:carol@10.0.0.3>",
                "Referred-By: <sip:bob@10.0.0.2>",
            ],
            "",
        ),
        call.callee_response(202, 1, "REFER", "bob", &[]),
        call.request(
            "NOTIFY",
            2,
            "NOTIFY",
            Some("bob"),
            "n1",
            &[
                "Event: refer;id=1",
                "Subscription-State: active",
                "Content-Type: message/sipfrag;version=2.0",
            ],
            "SIP/2.0 100 Trying\r\n",
        ),
        call.request(
            "NOTIFY",
            3,
            "NOTIFY",
            Some("bob"),
            "n2",
            &[
                "Event: refer;id=1",
                "Subscription-State: terminated",
                "Content-Type: message/sipfrag;version=2.0",
            ],
            "SIP/2.0 200 OK\r\n",
        ),
        call.callee_request("BYE", 2, "bob", &[], ""),
        call.callee_response(200, 2, "BYE", "bob", &[]),
    ])
    .await;
    let ev = h.events(5).await;
    assert_eq!(
        types(&ev),
        [
            "call.initiated",
            "call.ringing",
            "call.answered",
            "call.transferred",
            "call.completed"
        ]
    );
    assert_call_basics(&ev, &call);
    assert_eq!(
        ev[3]["data"],
        json!({"kind": "blind", "target": "sip:carol@10.0.0.3", "referred_by": "sip:bob@10.0.0.2", "replaced_call_id": null, "replaced_sip_call_id": null})
    );
    assert_eq!(ev[4]["data"]["ended_by"], "callee");
}

#[tokio::test]
async fn refer_without_subscription_is_done_at_202() {
    let mut h = Harness::start().await;
    let call = CallSpec::new("blind-norefersub");
    h.send_all(&answered_prefix(&call, "bob")).await;
    h.send_all(&[
        call.request(
            "REFER",
            2,
            "REFER",
            Some("bob"),
            "r1",
            &["Refer-To: sip:carol@10.0.0.3", "Refer-Sub: false"],
            "",
        ),
        call.response(
            202,
            "Accepted",
            2,
            "REFER",
            Some("bob"),
            &["Refer-Sub: false"],
            "",
        ),
    ])
    .await;
    let ev = h.events(4).await;
    assert_eq!(ev[3]["type"], "call.transferred");
    assert_eq!(ev[3]["data"]["kind"], "blind");
    assert_eq!(ev[3]["data"]["target"], "sip:carol@10.0.0.3");
}

#[tokio::test]
async fn attended_transfer_links_both_calls() {
    let mut h = Harness::start().await;
    // Alice talks to Bob (call 1) and to Carol (call 2), then joins them.
    let c1 = CallSpec::new("att-1");
    let mut c2 = CallSpec::new("att-2");
    c2.to = "<sip:carol@10.0.0.3>".into();
    h.send_all(&answered_prefix(&c1, "bob")).await;
    h.send_all(&answered_prefix(&c2, "carol")).await;
    let setup = h.events(6).await;
    let c2_id = setup[3]["call"]["id"].clone();
    assert_eq!(setup[3]["call"]["sip_call_id"], "att-2");

    let replaces = format!(
        "{}%3Bto-tag%3Dcarol%3Bfrom-tag%3D{}",
        c2.call_id, c2.from_tag
    );
    h.send_all(&[
        c1.request(
            "REFER",
            2,
            "REFER",
            Some("bob"),
            "r1",
            &[
                &format!("Refer-To: <sip:carol@10.0.0.3?Replaces={replaces}>"),
                "Referred-By: <sip:alice@10.0.0.1>",
            ],
            "",
        ),
        c1.response(202, "Accepted", 2, "REFER", Some("bob"), &[], ""),
    ])
    .await;
    // Bob calls Carol with Replaces (call 3); Carol answers and hangs up call 2.
    let mut c3 = CallSpec::new("att-3");
    c3.from = "<sip:bob@10.0.0.2>".into();
    c3.to = "<sip:carol@10.0.0.3>".into();
    h.send_all(&[
        c3.invite_with(
            1,
            &[
                &format!(
                    "Replaces: {};to-tag=carol;from-tag={}",
                    c2.call_id, c2.from_tag
                ),
                "Referred-By: <sip:alice@10.0.0.1>",
            ],
        ),
        c3.resp(200, 1, "INVITE", Some("carol3")),
        c3.ack(1, "carol3"),
        c2.callee_request("BYE", 1, "carol", &[], ""),
        c2.callee_response(200, 1, "BYE", "carol", &[]),
        c1.callee_request(
            "NOTIFY",
            1,
            "bob",
            &["Event: refer", "Content-Type: message/sipfrag"],
            "SIP/2.0 200 OK\r\n",
        ),
        c1.bye(3, "bob"),
        c1.resp(200, 3, "BYE", Some("bob")),
    ])
    .await;
    let ev = h.events(6).await;
    let summary: Vec<(String, String)> = ev
        .iter()
        .map(|e| {
            (
                e["call"]["sip_call_id"].as_str().unwrap().to_owned(),
                e["type"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let s = |a: &str, b: &str| (a.to_owned(), b.to_owned());
    assert_eq!(
        summary,
        [
            s("att-3", "call.initiated"),
            s("att-3", "call.answered"),
            s("att-3", "call.transferred"),
            s("att-2", "call.completed"),
            s("att-1", "call.transferred"),
            s("att-1", "call.completed"),
        ]
    );
    assert_eq!(
        ev[2]["data"],
        json!({"kind": "attended", "target": "sip:carol@10.0.0.3", "referred_by": "sip:alice@10.0.0.1", "replaced_call_id": c2_id, "replaced_sip_call_id": "att-2"})
    );
    assert_eq!(ev[3]["data"]["ended_by"], "callee");
    assert_eq!(
        ev[4]["data"],
        json!({"kind": "attended", "target": "sip:carol@10.0.0.3", "referred_by": "sip:alice@10.0.0.1", "replaced_call_id": c2_id, "replaced_sip_call_id": "att-2"})
    );
    assert_eq!(ev[4]["sequence"], 4);
}

#[tokio::test]
async fn every_message_retransmitted_emits_nothing_new() {
    let mut h = Harness::start().await;
    let call = CallSpec::new("retx-1");
    for m in call.answered_flow() {
        h.send(&m).await;
        h.send(&m).await;
    }
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
    assert!(h.barrier().await.is_empty());
    // Copies that arrive after the call ended are recognised, not orphans.
    assert_eq!(
        h.metric(
            "siphook_sip_messages_ignored_total",
            &[("reason", "unknown_dialog")]
        ),
        0.0
    );
}

/// What a proxy's mirror shows for a message it forwards: one more Via on top, and
/// a rewritten Request-URI.
fn forwarded(msg: &str) -> String {
    let mut lines: Vec<String> = msg.split("\r\n").map(str::to_owned).collect();
    if !lines[0].starts_with("SIP/2.0") {
        let parts: Vec<&str> = lines[0].split(' ').collect();
        lines[0] = format!("{} sip:+15551234567@192.0.2.50:5060 {}", parts[0], parts[2]);
        lines.insert(
            1,
            "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKproxy-forwarded".to_owned(),
        );
    } else {
        // A response forwarded upstream has lost the proxy's Via.
        lines.retain(|l| !l.contains("branch=z9hG4bKresp"));
        lines.insert(
            1,
            "Via: SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bKupstream".to_owned(),
        );
    }
    lines.join("\r\n")
}

#[tokio::test]
async fn proxy_mirror_copies_with_other_vias_emit_nothing_new() {
    let mut h = Harness::start().await;
    let call = CallSpec::new("mirror-1");
    for m in call.answered_flow() {
        h.send(&m).await;
        h.send(&forwarded(&m)).await;
    }
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
    assert_eq!(
        ev[0]["data"]["request_uri"], "sip:+15551234567@10.0.0.2",
        "the first copy describes the call"
    );
    assert!(h.barrier().await.is_empty());
    // Copies up to the BYE's are duplicates (the call waits for the BYE's 200);
    // the 200's copy arrives once the call is over.
    assert_eq!(
        h.metric(
            "siphook_sip_messages_ignored_total",
            &[("reason", "duplicate")]
        ),
        6.0
    );
    assert_eq!(
        h.metric(
            "siphook_sip_messages_ignored_total",
            &[("reason", "after_end")]
        ),
        1.0
    );
}

#[tokio::test]
async fn compact_headers_and_folded_lines() {
    let mut h = Harness::start().await;
    let invite = "INVITE sip:+15551234567@10.0.0.2 SIP/2.0\r\n\
v: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKc1\r\n\
f: \"Alice\"\r\n\x20<sip:+15557654321@10.0.0.1>;tag=cf\r\n\
t: <sip:+15551234567@10.0.0.2>\r\n\
i: compact-1\r\n\
CSeq: 1 INVITE\r\n\
m: <sip:alice@10.0.0.1>\r\n\
Subject: a folded\r\n\tsubject line\r\n\
X-CID: leg-42\r\n\
l: 0\r\n\r\n";
    let ringing = "SIP/2.0 180 Ringing\r\nv: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKc1\r\nf: <sip:+15557654321@10.0.0.1>;tag=cf\r\nt: <sip:+15551234567@10.0.0.2>;tag=cb\r\ni: compact-1\r\nCSeq: 1 INVITE\r\nl: 0\r\n\r\n";
    let ok = ringing.replace("180 Ringing", "200 OK");
    let bye = "BYE sip:bob@10.0.0.2 SIP/2.0\r\nv: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKc2\r\nf: <sip:+15557654321@10.0.0.1>;tag=cf\r\nt: <sip:+15551234567@10.0.0.2>;tag=cb\r\ni: compact-1\r\nCSeq: 2 BYE\r\nl: 0\r\n\r\n";
    let bye_ok = "SIP/2.0 200 OK\r\nv: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKc2\r\nf: <sip:+15557654321@10.0.0.1>;tag=cf\r\nt: <sip:+15551234567@10.0.0.2>;tag=cb\r\ni: compact-1\r\nCSeq: 2 BYE\r\nl: 0\r\n\r\n";
    for m in [invite, ringing, &ok, bye, bye_ok] {
        h.send(m).await;
    }
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
    let c = &ev[0]["call"];
    assert_eq!(
        c["from"],
        json!({"uri": "sip:+15557654321@10.0.0.1", "user": "+15557654321", "display_name": "Alice", "tag": "cf"})
    );
    assert_eq!(c["correlation_id"], "leg-42");
    assert_eq!(c["sip_call_id"], "compact-1");
}

#[tokio::test]
async fn reinvite_and_out_of_call_requests_start_nothing() {
    let mut h = Harness::start().await;
    let call = CallSpec::new("misc-1");
    let register = call
        .request("REGISTER", 1, "REGISTER", None, "reg", &[], "")
        .replace("Call-ID: misc-1", "Call-ID: reg-1");
    let options = call
        .request("OPTIONS", 1, "OPTIONS", None, "opt", &[], "")
        .replace("Call-ID: misc-1", "Call-ID: opt-1");
    let orphan_bye = call
        .bye(9, "nobody")
        .replace("Call-ID: misc-1", "Call-ID: orphan-1");
    let orphan_reinvite = call
        .request("INVITE", 5, "INVITE", Some("x"), "ri", &[], "")
        .replace("Call-ID: misc-1", "Call-ID: orphan-2");
    h.send_all(&[register, options, orphan_bye, orphan_reinvite])
        .await;
    h.send_all(&answered_prefix(&call, "b")).await;
    h.send(&call.request(
        "INVITE",
        2,
        "INVITE",
        Some("b"),
        "reinv",
        &["Session-Expires: 1800"],
        "",
    ))
    .await;
    h.send(&call.resp(200, 2, "INVITE", Some("b"))).await;
    h.send(&call.request("UPDATE", 3, "UPDATE", Some("b"), "upd", &[], ""))
        .await;
    let ev = h.barrier().await;
    assert_eq!(
        types(&ev),
        ["call.initiated", "call.ringing", "call.answered"]
    );
    assert_eq!(
        h.metric(
            "siphook_sip_messages_ignored_total",
            &[("reason", "not_a_call")]
        ),
        2.0
    );
    // The orphan BYE may be a copy that overtook its INVITE: it counts once its
    // reorder window has passed without one.
    h.wait_metric(
        "siphook_sip_messages_ignored_total",
        &[("reason", "unknown_dialog")],
        2.0,
    )
    .await;
    assert_eq!(
        h.metric(
            "siphook_sip_messages_ignored_total",
            &[("reason", "unknown_dialog")]
        ),
        2.0
    );
    assert_eq!(
        h.metric("siphook_sip_messages_held_total", &[("outcome", "expired")]),
        1.0
    );
}

#[tokio::test]
async fn max_call_duration_completes_the_call() {
    let mut config = test_config();
    config.sip.max_call_duration = Duration::from_millis(200);
    let mut h = Harness::with_config(config).await;
    let call = CallSpec::new("max-1");
    h.send_all(&answered_prefix(&call, "b")).await;
    let ev = h.events(4).await;
    let d = &ev[3]["data"];
    assert_eq!(
        (
            d["ended_by"].as_str(),
            d["reason"].as_str(),
            d["talk_ms"].as_u64()
        ),
        (Some("timeout"), Some("max_call_duration"), Some(200))
    );
}

#[tokio::test]
async fn full_call_table_drops_new_calls_and_counts_them() {
    let mut config = test_config();
    config.sip.max_active_calls = 2;
    let mut h = Harness::with_config(config).await;
    for i in 0..3 {
        h.send(&CallSpec::new(&format!("full-{i}")).invite(1)).await;
    }
    h.wait_metric(
        "siphook_calls_dropped_total",
        &[("reason", "table_full")],
        1.0,
    )
    .await;
    let ev = h.events(2).await;
    assert_eq!(ev[0]["call"]["sip_call_id"], "full-0");
    assert_eq!(ev[1]["call"]["sip_call_id"], "full-1");
    assert_eq!(h.metric("siphook_calls_active", &[]), 2.0);
    // Room frees up when a call completes.
    let c0 = CallSpec::new("full-0");
    h.send(&c0.resp(486, 1, "INVITE", Some("b"))).await;
    assert_eq!(h.next_event().await["type"], "call.completed");
    let next = CallSpec::new("full-3");
    h.send(&next.invite(1)).await;
    assert_eq!(h.next_event().await["call"]["sip_call_id"], "full-3");
}

#[tokio::test]
async fn garbage_datagrams_are_counted_and_the_listener_carries_on() {
    let mut h = Harness::start().await;
    for junk in [
        &b"\x00\x01\x02garbage"[..],
        b"INVITE sip:a@b SIP/2.0\r\nCall-ID: junk-1\r\n\r\n",
        b"",
        &[0xff; 2000][..],
    ] {
        h.udp.send_to(junk, h.udp_target).await.unwrap();
    }
    h.wait_metric(
        "siphook_sip_parse_errors_total",
        &[("transport", "udp")],
        3.0,
    )
    .await;
    let call = CallSpec::new("after-junk");
    h.send_all(&call.answered_flow()).await;
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
}

#[tokio::test]
async fn a_failed_fork_does_not_end_a_call_another_fork_answers() {
    let mut h = Harness::start().await;
    // Route advance / parallel fork: branch B fails while branch A rings, then A answers.
    let call = CallSpec::new("forkfail-1");
    h.send_all(&[
        call.invite(1),
        call.resp(180, 1, "INVITE", Some("A")),
        call.resp(180, 1, "INVITE", Some("B")),
        call.resp(503, 1, "INVITE", Some("B")),
        call.resp(200, 1, "INVITE", Some("A")),
        call.ack(1, "A"),
        call.bye(2, "A"),
        call.resp(200, 2, "BYE", Some("A")),
    ])
    .await;
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
    assert_eq!(ev[3]["data"]["disposition"], "answered");

    // CANCEL racing a fork's answer: the 487 of one branch, then the 200 of the other.
    let race = CallSpec::new("forkfail-2");
    h.send_all(&[
        race.invite(1),
        race.resp(180, 1, "INVITE", Some("A")),
        race.resp(180, 1, "INVITE", Some("B")),
        race.cancel(1),
        race.resp(487, 1, "INVITE", Some("A")),
        race.resp(200, 1, "INVITE", Some("B")),
    ])
    .await;
    let ev = h.events(3).await;
    assert_eq!(
        types(&ev),
        ["call.initiated", "call.ringing", "call.answered"]
    );

    // Every fork fails: the call ends at the last failure, at once.
    let all = CallSpec::new("forkfail-3");
    h.send_all(&[
        all.invite(1),
        all.resp(180, 1, "INVITE", Some("A")),
        all.resp(180, 1, "INVITE", Some("B")),
        all.resp(486, 1, "INVITE", Some("A")),
        all.resp(486, 1, "INVITE", Some("B")),
    ])
    .await;
    let ev = h.events(3).await;
    assert_eq!(
        types(&ev),
        ["call.initiated", "call.ringing", "call.completed"]
    );
    assert_eq!(ev[2]["data"]["disposition"], "busy");
}

#[tokio::test]
async fn a_fork_failure_with_the_other_fork_silent_ends_after_the_window() {
    let mut config = test_config();
    config.sip.challenge_window = Duration::from_millis(200);
    let mut h = Harness::with_config(config).await;
    let call = CallSpec::new("forkfail-4");
    h.send_all(&[
        call.invite(1),
        call.resp(183, 1, "INVITE", Some("A")),
        call.resp(180, 1, "INVITE", Some("B")),
        call.resp(603, 1, "INVITE", Some("B")),
    ])
    .await;
    let ev = h.events(3).await;
    assert_eq!(
        types(&ev),
        ["call.initiated", "call.ringing", "call.completed"]
    );
    let d = &ev[2]["data"];
    assert_eq!(
        (d["disposition"].as_str(), d["sip_status"].as_u64()),
        (Some("rejected"), Some(603))
    );
    // Ended when the failure came, not when siphook stopped waiting.
    assert!(ms(&ev[2]["call"]["ended_at"]) - ms(&ev[0]["call"]["started_at"]) < 200);
}

#[tokio::test]
async fn a_transferor_hanging_up_right_after_202_still_reports_the_transfer() {
    let mut h = Harness::start().await;
    let call = CallSpec::new("blind-bye");
    h.send_all(&answered_prefix(&call, "bob")).await;
    h.send_all(&[
        call.callee_request("REFER", 1, "bob", &["Refer-To: <sip:carol@10.0.0.3>"], ""),
        call.callee_response(202, 1, "REFER", "bob", &[]),
        call.callee_request("BYE", 2, "bob", &[], ""),
        call.callee_response(200, 2, "BYE", "bob", &[]),
        // The NOTIFY that arrives after the call ended changes nothing.
        call.request(
            "NOTIFY",
            2,
            "NOTIFY",
            Some("bob"),
            "n1",
            &["Event: refer;id=1", "Content-Type: message/sipfrag"],
            "SIP/2.0 200 OK\r\n",
        ),
    ])
    .await;
    let ev = h.events(5).await;
    assert_eq!(
        types(&ev),
        [
            "call.initiated",
            "call.ringing",
            "call.answered",
            "call.transferred",
            "call.completed"
        ]
    );
    assert_eq!(ev[3]["data"]["target"], "sip:carol@10.0.0.3");
    assert!(h.barrier().await.is_empty());
}

#[tokio::test]
async fn notify_is_matched_to_its_refer_by_id() {
    let mut h = Harness::start().await;
    let call = CallSpec::new("two-refers");
    h.send_all(&answered_prefix(&call, "bob")).await;
    h.send_all(&[
        call.request(
            "REFER",
            2,
            "REFER",
            Some("bob"),
            "r2",
            &["Refer-To: <sip:first@10.0.0.3>"],
            "",
        ),
        call.response(202, "Accepted", 2, "REFER", Some("bob"), &[], ""),
        call.request(
            "REFER",
            3,
            "REFER",
            Some("bob"),
            "r3",
            &["Refer-To: <sip:second@10.0.0.4>"],
            "",
        ),
        call.response(202, "Accepted", 3, "REFER", Some("bob"), &[], ""),
        call.callee_request(
            "NOTIFY",
            1,
            "bob",
            &["Event: refer;id=3", "Content-Type: message/sipfrag"],
            "SIP/2.0 200 OK\r\n",
        ),
    ])
    .await;
    let ev = h.events(4).await;
    assert_eq!(ev[3]["type"], "call.transferred");
    assert_eq!(ev[3]["data"]["target"], "sip:second@10.0.0.4");
}
