//! The tracker driven directly with chosen receive times: exact durations,
//! deterministic ids, and timers, without sockets or wall-clock waits.

mod common;

use std::time::Duration;

use common::{CallSpec, assert_valid, schema_errors};
use serde_json::{Value, json};
use siphook::call::{Event, Tracker, TrackerConfig};
use siphook::sip::{ParseOptions, parse};
use siphook::vocab::{Meta, Timestamp, Transport};

const T0: i64 = 1_795_330_800_000; // 2026-11-22T07:00:00.000Z

fn tracker() -> Tracker {
    Tracker::new(TrackerConfig {
        invite_timeout: Duration::from_secs(180),
        max_call_duration: Duration::from_secs(4 * 3600),
        challenge_window: Duration::from_secs(32),
        max_active_calls: 1000,
        reorder_window: std::time::Duration::from_millis(200),
    })
}

/// Feeds `(ms after T0, message)` pairs and returns the events as JSON.
fn feed(t: &mut Tracker, msgs: &[(i64, String)]) -> Vec<Value> {
    let opts = ParseOptions {
        correlation_headers: vec!["X-CID".into()],
        max_message_bytes: 65536,
    };
    let mut out: Vec<Event> = Vec::new();
    for (at, raw) in msgs {
        let msg = parse(raw.as_bytes(), &opts).expect("test message parses");
        let meta = Meta {
            transport: Transport::Udp,
            source: "10.0.0.1:5060".parse().unwrap(),
            destination: "10.0.0.2:5060".parse().unwrap(),
            received_at: Timestamp(T0 + at),
        };
        let _ = t.on_message(&msg, &meta, &mut out);
    }
    to_json(out)
}

fn to_json(events: Vec<Event>) -> Vec<Value> {
    events
        .iter()
        .map(|e| {
            let v: Value = serde_json::from_slice(&e.to_json()).unwrap();
            assert_valid(&v);
            v
        })
        .collect()
}

fn timeline(call: &CallSpec) -> Vec<(i64, String)> {
    vec![
        (0, call.invite(1)),
        (40, call.resp(100, 1, "INVITE", None)),
        (1_500, call.resp(180, 1, "INVITE", Some("b"))),
        (4_000, call.resp(200, 1, "INVITE", Some("b"))),
        (4_050, call.ack(1, "b")),
        (64_000, call.bye(2, "b")),
        (64_020, call.resp(200, 2, "BYE", Some("b"))),
    ]
}

#[test]
fn answered_call_durations_are_exact() {
    let mut t = tracker();
    let ev = feed(&mut t, &timeline(&CallSpec::new("exact-1")));
    assert_eq!(ev.len(), 4);
    let done = &ev[3];
    assert_eq!(done["timestamp"], "2026-11-22T07:01:04.000Z");
    assert_eq!(done["call"]["started_at"], "2026-11-22T07:00:00.000Z");
    assert_eq!(done["call"]["ringing_at"], "2026-11-22T07:00:01.500Z");
    assert_eq!(done["call"]["answered_at"], "2026-11-22T07:00:04.000Z");
    assert_eq!(done["call"]["ended_at"], "2026-11-22T07:01:04.000Z");
    assert_eq!(ev[2]["data"], json!({"sip_status": 200, "ring_ms": 4000}));
    assert_eq!(
        done["data"],
        json!({"disposition": "answered", "sip_status": 200, "reason": null, "q850_cause": null,
               "ended_by": "caller", "ring_ms": 4000, "talk_ms": 60000, "duration_ms": 64000})
    );
    assert_eq!(t.active_calls(), 0);
    // The 4-hour max_call_duration timer went with the call; only the tombstone's
    // purge (challenge_window after the BYE's 200 ended it) remains, then nothing.
    assert_eq!(t.next_deadline(), Some(Timestamp(T0 + 64_020 + 32_000)));
    let mut out = Vec::new();
    t.on_time(Timestamp(T0 + 96_020), &mut out);
    assert!(out.is_empty());
    assert_eq!(t.next_deadline(), None);
}

#[test]
fn the_same_traffic_twice_yields_the_same_events() {
    let call = CallSpec::new("det-1");
    let a = feed(&mut tracker(), &timeline(&call));
    let b = feed(&mut tracker(), &timeline(&call));
    assert_eq!(a, b);
    let other = feed(&mut tracker(), &timeline(&CallSpec::new("det-2")));
    assert_ne!(a[0]["id"], other[0]["id"]);
    assert_ne!(a[0]["call"]["id"], other[0]["call"]["id"]);
}

#[test]
fn timers_fire_on_the_callers_clock() {
    let mut t = tracker();
    let call = CallSpec::new("timer-1");
    let ev = feed(
        &mut t,
        &[
            (0, call.invite(1)),
            (500, call.resp(180, 1, "INVITE", Some("b"))),
        ],
    );
    assert_eq!(ev.len(), 2);
    assert_eq!(t.next_deadline(), Some(Timestamp(T0 + 180_000)));
    let mut out = Vec::new();
    t.on_time(Timestamp(T0 + 179_999), &mut out);
    assert!(out.is_empty(), "nothing before the deadline");
    t.on_time(Timestamp(T0 + 200_000), &mut out);
    let ev = to_json(out);
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0]["timestamp"], "2026-11-22T07:03:00.000Z");
    assert_eq!(ev[0]["data"]["duration_ms"], 180_000);
    assert_eq!(ev[0]["data"]["disposition"], "no_answer");
    assert_eq!(t.active_calls(), 0);
}

#[test]
fn reason_header_and_pai_and_stir_shaken_reach_the_events() {
    use base64::Engine;
    let mut t = tracker();
    let call = CallSpec::new("rich-1");
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(br#"{"attest":"B","dest":{"tn":["15551234567"]},"iat":1,"orig":{"tn":"15557654321"},"origid":"0f3e"}"#);
    let identity = format!(
        "Identity: eyJhbGciOiJFUzI1NiJ9.{payload}.c2ln;info=<https://cr.example/c.pem>;alg=ES256;ppt=shaken"
    );
    let ev = feed(
        &mut t,
        &[
            (
                0,
                call.invite_with(
                    1,
                    &[
                        "P-Asserted-Identity: \"Alice Corp\" <sip:+15550001111@10.0.0.1>",
                        &identity,
                        "X-CID: abc-123",
                    ],
                ),
            ),
            (100, call.resp(200, 1, "INVITE", Some("b"))),
            (
                2_100,
                call.request(
                    "BYE",
                    2,
                    "BYE",
                    Some("b"),
                    "bye2",
                    &["Reason: Q.850;cause=16;text=\"Normal call clearing\""],
                    "",
                ),
            ),
            (2_130, call.resp(200, 2, "BYE", Some("b"))),
        ],
    );
    assert_eq!(ev[0]["call"]["ani"], "+15550001111");
    assert_eq!(ev[0]["call"]["correlation_id"], "abc-123");
    assert_eq!(
        ev[0]["data"]["stir_shaken"],
        json!({"attest": "B", "origid": "0f3e", "orig_tn": "15557654321", "dest_tn": "15551234567", "verified": false})
    );
    assert_eq!(ev[2]["data"]["q850_cause"], 16);
    assert_eq!(ev[2]["data"]["reason"], "Normal call clearing");
    assert_eq!(ev[2]["data"]["talk_ms"], 2000);
}

#[test]
fn every_started_call_completes_exactly_once() {
    // A mix of endings, each call interleaved with the others, then every timer.
    let mut t = tracker();
    let mut msgs = Vec::new();
    let calls: Vec<CallSpec> = (0..40)
        .map(|i| CallSpec::new(&format!("mix-{i}")))
        .collect();
    for (i, c) in calls.iter().enumerate() {
        msgs.push((i as i64, c.invite(1)));
    }
    for (i, c) in calls.iter().enumerate() {
        let at = 1_000 + i as i64;
        match i % 5 {
            0 => msgs.push((at, c.resp(486, 1, "INVITE", Some("b")))),
            1 => msgs.push((at, c.cancel(1))),
            2 => {
                msgs.push((at, c.resp(200, 1, "INVITE", Some("b"))));
                msgs.push((at + 1, c.bye(2, "b")));
            }
            3 => msgs.push((at, c.resp(407, 1, "INVITE", Some("p")))),
            _ => msgs.push((at, c.resp(200, 1, "INVITE", Some("b")))),
        }
    }
    let mut ev = feed(&mut t, &msgs);
    let mut out = Vec::new();
    t.on_time(Timestamp(T0 + 5 * 3600 * 1000), &mut out);
    ev.extend(to_json(out));
    assert_eq!(t.active_calls(), 0);
    for c in &calls {
        let completed = ev
            .iter()
            .filter(|e| {
                e["call"]["sip_call_id"] == c.call_id.as_str() && e["type"] == "call.completed"
            })
            .count();
        assert_eq!(completed, 1, "{}", c.call_id);
    }
    let by = |d: &str| ev.iter().filter(|e| e["data"]["disposition"] == d).count();
    assert_eq!(
        (by("busy"), by("cancelled"), by("answered"), by("failed")),
        (8, 8, 16, 8)
    );
}

#[test]
fn the_schema_rejects_what_the_contract_forbids() {
    let ev = feed(&mut tracker(), &timeline(&CallSpec::new("schema-1")));
    let completed = ev[3].clone();
    let broken = |f: &dyn Fn(&mut Value)| {
        let mut v = completed.clone();
        f(&mut v);
        schema_errors(&v)
    };
    assert!(schema_errors(&completed).is_empty());
    assert!(
        !broken(&|v| v["call"]
            .as_object_mut()
            .unwrap()
            .remove("started_at")
            .map(drop)
            .unwrap_or(()))
        .is_empty()
    );
    assert!(
        !broken(&|v| v["type"] = json!("call.ringing")).is_empty(),
        "completed data under another type"
    );
    assert!(!broken(&|v| v["data"]["disposition"] = json!("hung_up")).is_empty());
    assert!(!broken(&|v| v["call"]["ended_at"] = Value::Null).is_empty());
    assert!(!broken(&|v| v["id"] = json!("evt_123")).is_empty());
    assert!(!broken(&|v| v["surprise"] = json!(1)).is_empty());
}

#[test]
fn a_restored_call_completes_with_the_right_sequence_and_durations() {
    let call = CallSpec::new("restore-1");
    let opts = ParseOptions {
        correlation_headers: vec![],
        max_message_bytes: 65536,
    };
    let mut before = tracker();
    let mut events = Vec::new();
    let meta = |at: i64| Meta {
        transport: Transport::Udp,
        source: "10.0.0.1:5060".parse().unwrap(),
        destination: "10.0.0.2:5060".parse().unwrap(),
        received_at: Timestamp(T0 + at),
    };
    for (at, m) in [
        (0, call.invite(1)),
        (1_000, call.resp(180, 1, "INVITE", Some("b"))),
        (3_000, call.resp(200, 1, "INVITE", Some("b"))),
    ] {
        let _ = before.on_message(&parse(m.as_bytes(), &opts).unwrap(), &meta(at), &mut events);
    }
    let snapshot = events.last().unwrap().snapshot();
    // A new process: only the snapshot survives.
    let mut after = tracker();
    after.restore(vec![snapshot], Timestamp(T0 + 30_000));
    assert_eq!(after.active_calls(), 1);
    let mut out = Vec::new();
    for (at, m) in [
        (63_000, call.bye(2, "b")),
        (63_030, call.resp(200, 2, "BYE", Some("b"))),
    ] {
        let _ = after.on_message(&parse(m.as_bytes(), &opts).unwrap(), &meta(at), &mut out);
    }
    let ev = to_json(out);
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0]["sequence"], 4);
    assert_eq!(
        ev[0]["id"],
        feed(
            &mut tracker(),
            &[
                (0, call.invite(1)),
                (1, call.resp(200, 1, "INVITE", Some("b"))),
                (2, call.bye(2, "b")),
                (3, call.resp(200, 2, "BYE", Some("b")))
            ]
        )[2]["id"],
        "same id as without the restart"
    );
    assert_eq!(ev[0]["call"]["answered_at"], "2026-11-22T07:00:03.000Z");
    assert_eq!(ev[0]["data"]["talk_ms"], 60_000);
    assert_eq!(ev[0]["data"]["ring_ms"], 3_000);
}

#[test]
fn a_restored_unanswered_call_times_out_at_its_original_deadline() {
    let call = CallSpec::new("restore-2");
    let mut before = tracker();
    let ev = feed(&mut before, &[(0, call.invite(1))]);
    assert_eq!(ev.len(), 1);
    let opts = ParseOptions {
        correlation_headers: vec![],
        max_message_bytes: 65536,
    };
    let mut raw = Vec::new();
    let meta = Meta {
        transport: Transport::Udp,
        source: "10.0.0.1:5060".parse().unwrap(),
        destination: "10.0.0.2:5060".parse().unwrap(),
        received_at: Timestamp(T0),
    };
    let _ = tracker().on_message(
        &parse(call.invite(1).as_bytes(), &opts).unwrap(),
        &meta,
        &mut raw,
    );
    let mut after = tracker();
    // siphook was down for ten minutes, longer than invite_timeout.
    after.restore(vec![raw[0].snapshot()], Timestamp(T0 + 600_000));
    let mut out = Vec::new();
    after.on_time(Timestamp(T0 + 600_000), &mut out);
    let ev = to_json(out);
    assert_eq!(ev[0]["type"], "call.completed");
    assert_eq!(ev[0]["sequence"], 2);
    assert_eq!(ev[0]["data"]["duration_ms"], 180_000);
    assert_eq!(ev[0]["data"]["reason"], "invite_timeout");
}

#[test]
fn session_expires_comes_from_the_2xx_and_has_a_floor() {
    // The 2xx negotiates 90 s: no refresh, so the session lapses 90 s after the answer.
    let call = CallSpec::new("se-1");
    let mut t = tracker();
    let ev = feed(
        &mut t,
        &[
            (
                0,
                call.invite_with(1, &["Session-Expires: 1800", "Supported: timer"]),
            ),
            (
                1_000,
                call.response(
                    200,
                    "OK",
                    1,
                    "INVITE",
                    Some("b"),
                    &["Session-Expires: 90;refresher=uac"],
                    "",
                ),
            ),
        ],
    );
    assert_eq!(ev.len(), 2);
    assert_eq!(t.next_deadline(), Some(Timestamp(T0 + 91_000)));
    // A refresh 2xx restarts the interval; a value under Min-SE's 90 s counts as 90.
    let more = feed(
        &mut t,
        &[
            (
                60_000,
                call.request(
                    "UPDATE",
                    2,
                    "UPDATE",
                    Some("b"),
                    "u2",
                    &["Session-Expires: 5"],
                    "",
                ),
            ),
            (
                60_010,
                call.response(
                    200,
                    "OK",
                    2,
                    "UPDATE",
                    Some("b"),
                    &["Session-Expires: 5"],
                    "",
                ),
            ),
        ],
    );
    assert!(more.is_empty());
    assert_eq!(t.next_deadline(), Some(Timestamp(T0 + 150_010)));
    let mut out = Vec::new();
    t.on_time(Timestamp(T0 + 150_010), &mut out);
    let ev = to_json(out);
    assert_eq!(ev[0]["data"]["reason"], "session_expired");
    assert_eq!(ev[0]["data"]["talk_ms"], 149_010);

    // Session-Expires only in the INVITE, not in the 2xx: no session timer at all.
    let call = CallSpec::new("se-2");
    let mut t = tracker();
    feed(
        &mut t,
        &[
            (0, call.invite_with(1, &["Session-Expires: 1800"])),
            (1_000, call.resp(200, 1, "INVITE", Some("b"))),
        ],
    );
    assert_eq!(
        t.next_deadline(),
        Some(Timestamp(T0 + 1_000 + 4 * 3600 * 1000))
    );
}

/// xorshift64*, seeded: a failure reproduces from the seed in the message.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[(self.next() % items.len() as u64) as usize]
    }
}

/// A random message of one call's dialog: any method or status, any fork, any CSeq.
fn random_message(rng: &mut Rng, call: &CallSpec) -> String {
    let tag = *rng.pick(&["A", "B", "C"]);
    let cseq = 1 + (rng.next() % 4) as u32;
    let refer_to = "Refer-To: <sip:carol@10.0.0.3?Replaces=other%3Bto-tag%3Dx%3Bfrom-tag%3Dy>";
    match rng.next() % 16 {
        0 => call.invite(cseq),
        1 => call.request(
            "INVITE",
            cseq,
            "INVITE",
            Some(tag),
            "re",
            &["Session-Expires: 90"],
            "",
        ),
        2 => call.cancel(1),
        3 => call.ack(cseq, tag),
        4 => call.bye(cseq, tag),
        5 => call.callee_request("BYE", cseq, tag, &["Reason: Q.850;cause=16"], ""),
        6 => call.request("REFER", cseq, "REFER", Some(tag), "rf", &[refer_to], ""),
        7 => call.callee_response(202, cseq, "REFER", tag, &[]),
        8 => call.callee_request(
            "NOTIFY",
            cseq,
            tag,
            &["Event: refer", "Content-Type: message/sipfrag"],
            "SIP/2.0 200 OK\r\n",
        ),
        9 => call.request("UPDATE", cseq, "UPDATE", Some(tag), "up", &[], ""),
        _ => {
            let status = *rng.pick(&[
                100u16, 180, 183, 200, 200, 401, 407, 302, 486, 487, 480, 503, 603,
            ]);
            let to = if status == 100 { None } else { Some(tag) };
            call.response(
                status,
                "X",
                cseq,
                "INVITE",
                to,
                &["Session-Expires: 120"],
                "",
            )
        }
    }
}

#[test]
fn random_dialogs_always_complete_exactly_once_with_gapless_sequences() {
    let mut seen_types = std::collections::BTreeSet::new();
    let mut seen_dispositions = std::collections::BTreeSet::new();
    for seed in 1..=40u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let calls: Vec<CallSpec> = (0..25)
            .map(|i| CallSpec::new(&format!("rnd-{seed}-{i}")))
            .collect();
        let mut msgs = Vec::new();
        let mut at = 0i64;
        // Each call starts with its INVITE; then messages of all calls interleave.
        for c in &calls {
            at += (rng.next() % 50) as i64;
            msgs.push((at, c.invite(1)));
        }
        for _ in 0..600 {
            at += (rng.next() % 2_000) as i64;
            let c = rng.pick(&calls);
            msgs.push((at, random_message(&mut rng, c)));
        }
        let mut t = tracker();
        let mut ev = feed(&mut t, &msgs);
        let mut out = Vec::new();
        t.on_time(Timestamp(T0 + at + 10 * 3600 * 1000), &mut out);
        ev.extend(to_json(out));
        assert_eq!(t.active_calls(), 0, "seed {seed}: calls left open");
        let mut by_call: std::collections::HashMap<String, Vec<&Value>> = Default::default();
        for e in &ev {
            by_call
                .entry(e["call"]["id"].as_str().unwrap().to_owned())
                .or_default()
                .push(e);
        }
        for e in &ev {
            seen_types.insert(e["type"].as_str().unwrap().to_owned());
            if let Some(d) = e["data"]["disposition"].as_str() {
                seen_dispositions.insert(d.to_owned());
            }
        }
        // A dialog the random stream starts again more than the tracker's reuse
        // memory after its last call ended gets that call's id again (see
        // docs/events.md, "Ids and deduplication"): each run of a call, from its
        // `call.initiated`, is checked on its own.
        let runs = by_call.into_iter().flat_map(|(id, list)| {
            let mut runs: Vec<(String, Vec<&Value>)> = Vec::new();
            for e in list {
                if e["type"] == "call.initiated" || runs.is_empty() {
                    runs.push((id.clone(), Vec::new()));
                }
                if let Some((_, r)) = runs.last_mut() {
                    r.push(e);
                }
            }
            runs
        });
        for (id, list) in runs {
            let seqs: Vec<u64> = list
                .iter()
                .map(|e| e["sequence"].as_u64().unwrap())
                .collect();
            let expected: Vec<u64> = (1..=list.len() as u64).collect();
            assert_eq!(
                seqs, expected,
                "seed {seed} {id}: sequence gaps or disorder"
            );
            assert_eq!(list[0]["type"], "call.initiated", "seed {seed} {id}");
            let completed = list
                .iter()
                .filter(|e| e["type"] == "call.completed")
                .count();
            assert_eq!(
                completed, 1,
                "seed {seed} {id}: completed {completed} times"
            );
            assert_eq!(
                list.last().unwrap()["type"],
                "call.completed",
                "seed {seed} {id}: completed is not last"
            );
            for once in ["call.initiated", "call.ringing", "call.answered"] {
                assert!(
                    list.iter().filter(|e| e["type"] == once).count() <= 1,
                    "seed {seed} {id}: {once} twice"
                );
            }
        }
    }
    // The random dialogs reached every kind of event and most endings.
    assert_eq!(seen_types.len(), 5, "{seen_types:?}");
    assert!(seen_dispositions.len() >= 5, "{seen_dispositions:?}");
}

#[test]
fn a_caller_without_from_tag_rfc2543_is_still_tracked_both_ways() {
    let mut call = CallSpec::new("rfc2543-1");
    let with_tag = call.invite(1);
    // The same INVITE with no tag on From.
    let tag = format!(";tag={}", call.from_tag);
    let invite = with_tag.replace(&tag, "");
    call.from_tag = String::new();
    let ok = call
        .resp(200, 1, "INVITE", Some("b"))
        .replace(";tag=;", ";")
        .replace(";tag=\r\n", "\r\n");
    let bye_from_callee = call
        .callee_request("BYE", 1, "b", &[], "")
        .replace(";tag=\r\n", "\r\n");
    let bye_ok = call
        .callee_response(200, 1, "BYE", "b", &[])
        .replace(";tag=\r\n", "\r\n");
    let ev = feed(
        &mut tracker(),
        &[
            (0, invite),
            (1_000, ok),
            (5_000, bye_from_callee),
            (5_020, bye_ok),
        ],
    );
    let types: Vec<&str> = ev.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["call.initiated", "call.answered", "call.completed"]);
    assert_eq!(ev[2]["data"]["ended_by"], "callee");
    assert_eq!(ev[0]["call"]["from"]["tag"], Value::Null);
}

/// A call resumed after a restart still knows the mirror shows both legs of its
/// proxy: a branch's failure towards the proxy does not end it.
#[test]
fn a_restored_call_keeps_knowing_both_legs_of_its_proxy() {
    let opts = ParseOptions::default();
    let (c, p, u1, u2) = (
        "10.0.0.1:5060",
        "10.0.0.2:5060",
        "10.0.0.3:5060",
        "10.0.0.4:5060",
    );
    let play = |t: &mut Tracker, steps: &[(&str, &str, String)], at: i64| {
        let mut out = Vec::new();
        for (src, dst, raw) in steps {
            let meta = Meta {
                transport: Transport::Udp,
                source: src.parse().unwrap(),
                destination: dst.parse().unwrap(),
                received_at: Timestamp(T0 + at),
            };
            let _ = t.on_message(&parse(raw.as_bytes(), &opts).unwrap(), &meta, &mut out);
        }
        out
    };
    let call = CallSpec::new("restored-two-legs");
    let mut before = tracker();
    let events = play(
        &mut before,
        &[
            (c, p, call.invite(1)),
            (p, u1, call.invite(1)),
            (p, u2, call.invite(1)),
            (u1, p, call.resp(180, 1, "INVITE", Some("b1"))),
            (p, c, call.resp(180, 1, "INVITE", Some("b1"))),
        ],
        0,
    );
    assert_eq!(events.len(), 2);
    // What the outbox keeps of the call: its last event's snapshot, through JSON.
    let snapshot = serde_json::to_vec(&events[1].snapshot()).unwrap();
    let mut after = tracker();
    after.restore(
        vec![serde_json::from_slice(&snapshot).unwrap()],
        Timestamp(T0 + 100),
    );
    let events = to_json(play(
        &mut after,
        &[
            (u2, p, call.resp(486, 1, "INVITE", Some("b2"))),
            (u1, p, call.resp(200, 1, "INVITE", Some("b1"))),
            (p, c, call.resp(200, 1, "INVITE", Some("b1"))),
        ],
        200,
    ));
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        ["call.answered"],
        "the branch's 486 did not end the call"
    );
}
