//! Judges both systems' webhooks against the capture: for every call, which
//! events were due (from what crossed the wire), when their trigger message
//! reached the proxy, and when (and how often) each system's webhook arrived. Also
//! the harm to the calls: retransmissions, error answers to the caller, and how
//! long the proxy held each message before forwarding it.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use anyhow::Context;
use serde::Serialize;
use siphook::bench::Quantiles;

use crate::Ports;
use crate::calls::{CallWire, Dir, read};
use crate::receiver::Arrival;

/// One run's files and the rig's ports.
#[derive(clap::Args)]
pub struct AnalyseArgs {
    /// The run's name in the report.
    #[arg(long)]
    label: String,
    /// tcpdump's capture of the SIP legs (pcap or pcapng).
    #[arg(long)]
    capture: PathBuf,
    /// The receiver's arrival log.
    #[arg(long)]
    arrivals: PathBuf,
    #[command(flatten)]
    ports: Ports,
    /// Kamailio was configured to post (false for the baseline run).
    #[arg(long)]
    kamailio_posts: bool,
    /// SIPp's `-trace_stat` file of the caller.
    #[arg(long)]
    uac_stat: Option<PathBuf>,
    /// SIPp's `-trace_stat` file of the callee.
    #[arg(long)]
    uas_stat: Option<PathBuf>,
    /// Where to write the full result as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// The events compared, by their short names; Kamailio has no ringing.
const EVENTS: [&str; 4] = ["initiated", "ringing", "answered", "completed"];

#[derive(Serialize, Default)]
struct EventResult {
    expected: usize,
    received: usize,
    missing: usize,
    /// Of `missing`, those whose trigger the proxy never acted on (never forwarded
    /// or answered): the message was lost on its way into the proxy, so its mirror
    /// never had a copy either.
    missing_unhandled: usize,
    /// The same event again under a new identity: a real duplicate.
    duplicates: usize,
    /// The same webhook-id again (siphook's at-least-once redelivery).
    redeliveries: usize,
    /// Arrival before its trigger (clock or matching trouble; should be 0).
    negative: usize,
    latency_ms: Option<Quantiles>,
    #[serde(skip)]
    samples: Vec<u64>,
}

#[derive(Serialize, Default)]
struct SystemResult {
    events: BTreeMap<&'static str, EventResult>,
    all: EventResult,
    /// Arrivals for no due event (a call or event the wire did not show).
    unexpected: usize,
    /// Calls whose events first arrived in another order than they happened
    /// (initiated, ringing, answered, completed).
    calls_out_of_order: usize,
    bad_signatures: usize,
}

#[derive(Serialize, Default)]
struct Harm {
    calls: usize,
    invite_retransmissions_from_caller: usize,
    ok_retransmissions_from_callee: usize,
    bye_retransmissions_from_caller: usize,
    errors_to_caller: BTreeMap<u16, usize>,
    calls_answered: usize,
    calls_completed_by_bye: usize,
    invite_forwarding_ms: Option<Quantiles>,
    ok_forwarding_ms: Option<Quantiles>,
    bye_forwarding_ms: Option<Quantiles>,
    sipp_caller: BTreeMap<String, String>,
    sipp_callee: BTreeMap<String, String>,
}

#[derive(Serialize)]
struct RunResult {
    label: String,
    siphook: SystemResult,
    kamailio: Option<SystemResult>,
    harm: Harm,
    capture_unparsed: u64,
}

/// The short name of a webhook's event, by who sent it.
fn short(path: &str, event: &str) -> Option<&'static str> {
    match (path, event) {
        ("/siphook", "call.initiated") | ("/kamailio", "initiated") => Some("initiated"),
        ("/siphook", "call.ringing") => Some("ringing"),
        ("/siphook", "call.answered") | ("/kamailio", "answered") => Some("answered"),
        ("/siphook", "call.completed") | ("/kamailio", "completed" | "failed") => Some("completed"),
        _ => None,
    }
}

/// When the message that makes `event` due reached the proxy, if it did.
fn trigger(call: &CallWire, event: &str) -> Option<u64> {
    let first = |v: &[u64]| v.first().copied();
    match event {
        "initiated" => first(call.req(Dir::UacIn, "INVITE")),
        "ringing" => first(call.resp(Dir::UasIn, 180, "INVITE")),
        "answered" => first(call.resp(Dir::UasIn, 200, "INVITE")),
        "completed" => first(call.req(Dir::UacIn, "BYE")).or_else(|| {
            [
                call.first_failure(Dir::UasIn),
                call.first_failure(Dir::UacOut),
            ]
            .into_iter()
            .flatten()
            .map(|(_, t)| t)
            .min()
        }),
        _ => None,
    }
}

/// Whether the proxy acted on the message that makes `event` due: forwarded it,
/// or (for a final answer) forwarded an answer to the caller.
fn handled(call: &CallWire, event: &str) -> bool {
    let any = |v: &[u64]| !v.is_empty();
    match event {
        "initiated" => {
            any(call.req(Dir::UasOut, "INVITE")) || call.first_failure(Dir::UacOut).is_some()
        }
        "ringing" => any(call.resp(Dir::UacOut, 180, "INVITE")),
        "answered" => any(call.resp(Dir::UacOut, 200, "INVITE")),
        "completed" => {
            any(call.req(Dir::UasOut, "BYE"))
                || any(call.resp(Dir::UacOut, 200, "BYE"))
                || call.first_failure(Dir::UacOut).is_some()
        }
        _ => false,
    }
}

/// One arrival of an event: when, and under which webhook-id.
type Seen<'a> = (u64, Option<&'a str>);

fn system(
    calls: &HashMap<String, CallWire>,
    arrivals: &[Arrival],
    path: &str,
    events: &[&'static str],
) -> SystemResult {
    let mut r = SystemResult::default();
    // (call, event) → arrivals (time, id), in arrival order.
    let mut got: HashMap<(&str, &'static str), Vec<Seen<'_>>> = HashMap::new();
    for a in arrivals.iter().filter(|a| a.path == path) {
        if a.sig_ok == Some(false) {
            r.bad_signatures += 1;
        }
        let key = a
            .call_id
            .as_deref()
            .zip(a.event.as_deref().and_then(|e| short(path, e)));
        match key {
            Some((call, event)) if events.contains(&event) => got
                .entry((call, event))
                .or_default()
                .push((a.t_ns, a.webhook_id.as_deref())),
            _ => r.unexpected += 1,
        }
    }
    for (id, call) in calls {
        let mut firsts: Vec<(u64, usize)> = Vec::new();
        for (rank, &event) in events.iter().enumerate() {
            if let Some(seen) = got.get(&(id.as_str(), event))
                && let Some(&(t, _)) = seen.iter().min_by_key(|&&(t, _)| t)
            {
                firsts.push((t, rank));
            }
        }
        firsts.sort_unstable();
        if firsts.windows(2).any(|w| w[0].1 > w[1].1) {
            r.calls_out_of_order += 1;
        }
        for &event in events {
            let e = r.events.entry(event).or_default();
            let Some(t0) = trigger(call, event) else {
                if let Some(extra) = got.remove(&(id.as_str(), event)) {
                    r.unexpected += extra.len();
                }
                continue;
            };
            e.expected += 1;
            let Some(mut seen) = got.remove(&(id.as_str(), event)) else {
                e.missing += 1;
                if !handled(call, event) {
                    e.missing_unhandled += 1;
                }
                continue;
            };
            seen.sort_by_key(|&(t, _)| t);
            e.received += 1;
            let (t, first_id) = seen[0];
            if t < t0 {
                e.negative += 1;
            }
            e.samples.push(t.saturating_sub(t0));
            for &(_, again) in &seen[1..] {
                if again.is_some() && again == first_id {
                    e.redeliveries += 1;
                } else {
                    e.duplicates += 1;
                }
            }
        }
    }
    r.unexpected += got.values().map(Vec::len).sum::<usize>();
    for e in r.events.values_mut() {
        r.all.expected += e.expected;
        r.all.received += e.received;
        r.all.missing += e.missing;
        r.all.missing_unhandled += e.missing_unhandled;
        r.all.duplicates += e.duplicates;
        r.all.redeliveries += e.redeliveries;
        r.all.negative += e.negative;
        r.all.samples.extend_from_slice(&e.samples);
        e.latency_ms = Quantiles::of(std::mem::take(&mut e.samples));
    }
    r.all.latency_ms = Quantiles::of(std::mem::take(&mut r.all.samples));
    r
}

fn harm(calls: &HashMap<String, CallWire>) -> Harm {
    let mut h = Harm {
        calls: calls.len(),
        ..Harm::default()
    };
    let (mut inv, mut ok, mut bye) = (Vec::new(), Vec::new(), Vec::new());
    let extra = |v: &[u64]| v.len().saturating_sub(1);
    let delay = |out: &mut Vec<u64>, a: &[u64], b: &[u64]| {
        if let (Some(&i), Some(&o)) = (a.first(), b.first()) {
            out.push(o.saturating_sub(i));
        }
    };
    for call in calls.values() {
        h.invite_retransmissions_from_caller += extra(call.req(Dir::UacIn, "INVITE"));
        h.ok_retransmissions_from_callee += extra(call.resp(Dir::UasIn, 200, "INVITE"));
        h.bye_retransmissions_from_caller += extra(call.req(Dir::UacIn, "BYE"));
        if !call.resp(Dir::UacOut, 200, "INVITE").is_empty() {
            h.calls_answered += 1;
        }
        if !call.resp(Dir::UacOut, 200, "BYE").is_empty() {
            h.calls_completed_by_bye += 1;
        }
        for ((dir, kind), times) in &call.seen {
            if *dir == Dir::UacOut
                && let Some(code) = kind.code.filter(|&c| c >= 400)
            {
                *h.errors_to_caller.entry(code).or_default() += times.len();
            }
        }
        delay(
            &mut inv,
            call.req(Dir::UacIn, "INVITE"),
            call.req(Dir::UasOut, "INVITE"),
        );
        delay(
            &mut ok,
            call.resp(Dir::UasIn, 200, "INVITE"),
            call.resp(Dir::UacOut, 200, "INVITE"),
        );
        delay(
            &mut bye,
            call.req(Dir::UacIn, "BYE"),
            call.req(Dir::UasOut, "BYE"),
        );
    }
    h.invite_forwarding_ms = Quantiles::of(inv);
    h.ok_forwarding_ms = Quantiles::of(ok);
    h.bye_forwarding_ms = Quantiles::of(bye);
    h
}

/// The counters of SIPp's `-trace_stat` file (its last line) that say whether
/// calls suffered.
fn sipp_stat(path: &std::path::Path) -> anyhow::Result<BTreeMap<String, String>> {
    const WANTED: [&str; 8] = [
        "OutgoingCall(C)",
        "IncomingCall(C)",
        "SuccessfulCall(C)",
        "FailedCall(C)",
        "Retransmissions(C)",
        "FailedUnexpectedMessage(C)",
        "FailedMaxUDPRetrans(C)",
        "FailedCallRejected(C)",
    ];
    let text = std::fs::read_to_string(path).with_context(|| crate::shown(path))?;
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines.next().unwrap_or_default().split(';').collect();
    let last: Vec<&str> = lines.next_back().unwrap_or_default().split(';').collect();
    Ok(header
        .iter()
        .zip(last)
        .filter(|(h, _)| WANTED.contains(h))
        .map(|(h, v)| ((*h).to_owned(), v.to_owned()))
        .collect())
}

/// Prints the run's tables (markdown) and writes its JSON.
pub fn run(args: &AnalyseArgs) -> anyhow::Result<()> {
    let wire = read(&args.capture, args.ports)?;
    let text =
        std::fs::read_to_string(&args.arrivals).with_context(|| crate::shown(&args.arrivals))?;
    let arrivals: Vec<Arrival> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let mut h = harm(&wire.calls);
    if let Some(p) = &args.uac_stat {
        h.sipp_caller = sipp_stat(p)?;
    }
    if let Some(p) = &args.uas_stat {
        h.sipp_callee = sipp_stat(p)?;
    }
    let result = RunResult {
        label: args.label.clone(),
        siphook: system(&wire.calls, &arrivals, "/siphook", &EVENTS),
        kamailio: args.kamailio_posts.then(|| {
            system(
                &wire.calls,
                &arrivals,
                "/kamailio",
                &["initiated", "answered", "completed"],
            )
        }),
        harm: h,
        capture_unparsed: wire.unparsed,
    };
    if let Some(p) = &args.json {
        std::fs::write(p, serde_json::to_vec_pretty(&result)?).with_context(|| crate::shown(p))?;
    }
    print!("{}", markdown(&result));
    Ok(())
}

fn q(x: &Option<Quantiles>) -> String {
    match x {
        Some(q) => format!("{:.2} / {:.2} / {:.2} / {:.2}", q.p50, q.p90, q.p99, q.max),
        None => "—".into(),
    }
}

fn markdown(r: &RunResult) -> String {
    let mut s = format!("### {}\n\n", r.label);
    s += "| system | event | due | received | missing (trigger never handled by the proxy) | duplicates | redelivered | latency p50 / p90 / p99 / max (ms) |\n|---|---|---|---|---|---|---|---|\n";
    let mut rows = |name: &str, sys: &SystemResult| {
        let ordered = EVENTS
            .iter()
            .filter_map(|k| Some((*k, sys.events.get(k)?)))
            .chain([("all", &sys.all)]);
        for (event, e) in ordered {
            s += &format!(
                "| {name} | {event} | {} | {} | {} ({}) | {} | {} | {} |\n",
                e.expected,
                e.received,
                e.missing,
                e.missing_unhandled,
                e.duplicates,
                e.redeliveries,
                q(&e.latency_ms)
            );
        }
    };
    rows("siphook", &r.siphook);
    if let Some(k) = &r.kamailio {
        rows("kamailio", k);
    }
    let h = &r.harm;
    let errors: Vec<String> = h
        .errors_to_caller
        .iter()
        .map(|(c, n)| format!("{c}×{n}"))
        .collect();
    let sipp = |m: &BTreeMap<String, String>| {
        m.iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    s += &format!(
        "\ncalls on the wire {}, answered {}, ended by BYE {}; retransmissions: INVITE {} (caller), 200 {} (callee), BYE {} (caller); errors to the caller: {}\n\n\
         forwarding through the proxy, p50 / p90 / p99 / max (ms): INVITE {}; 200 {}; BYE {}\n\n\
         SIPp caller: {}\n\nSIPp callee: {}\n\n",
        h.calls,
        h.calls_answered,
        h.calls_completed_by_bye,
        h.invite_retransmissions_from_caller,
        h.ok_retransmissions_from_callee,
        h.bye_retransmissions_from_caller,
        if errors.is_empty() {
            "none".into()
        } else {
            errors.join(", ")
        },
        q(&h.invite_forwarding_ms),
        q(&h.ok_forwarding_ms),
        q(&h.bye_forwarding_ms),
        sipp(&h.sipp_caller),
        sipp(&h.sipp_callee),
    );
    let unexpected = r.siphook.unexpected + r.kamailio.as_ref().map_or(0, |k| k.unexpected);
    let bad = r.siphook.bad_signatures;
    let order = match &r.kamailio {
        Some(k) => format!(
            "siphook {}, Kamailio {}",
            r.siphook.calls_out_of_order, k.calls_out_of_order
        ),
        None => format!("siphook {}", r.siphook.calls_out_of_order),
    };
    s += &format!(
        "calls with events out of order: {order}; unexpected webhooks {unexpected}, bad signatures {bad}, capture datagrams not parsed {}\n\n",
        r.capture_unparsed
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calls::Kind;

    const MS: u64 = 1_000_000;

    fn saw(
        call: &mut CallWire,
        dir: Dir,
        method: Option<&str>,
        code: Option<u16>,
        cseq: &str,
        t: u64,
    ) {
        let kind = Kind {
            method: method.map(str::to_owned),
            code,
            cseq: cseq.to_owned(),
        };
        call.seen.entry((dir, kind)).or_default().push(t);
    }

    /// An answered call as the capture shows it, every message forwarded at once.
    fn answered_call() -> CallWire {
        let mut c = CallWire::default();
        saw(
            &mut c,
            Dir::UacIn,
            Some("INVITE"),
            None,
            "INVITE",
            1000 * MS,
        );
        saw(
            &mut c,
            Dir::UasOut,
            Some("INVITE"),
            None,
            "INVITE",
            1001 * MS,
        );
        saw(&mut c, Dir::UasIn, None, Some(180), "INVITE", 1002 * MS);
        saw(&mut c, Dir::UacOut, None, Some(180), "INVITE", 1002 * MS);
        saw(&mut c, Dir::UasIn, None, Some(200), "INVITE", 1300 * MS);
        saw(&mut c, Dir::UasIn, None, Some(200), "INVITE", 1800 * MS);
        saw(&mut c, Dir::UacOut, None, Some(200), "INVITE", 1301 * MS);
        saw(&mut c, Dir::UacIn, Some("BYE"), None, "BYE", 1900 * MS);
        saw(&mut c, Dir::UasOut, Some("BYE"), None, "BYE", 1904 * MS);
        saw(&mut c, Dir::UacOut, None, Some(200), "BYE", 1905 * MS);
        c
    }

    fn arrival(path: &str, event: &str, t_ms: u64, id: Option<&str>) -> Arrival {
        Arrival {
            t_ns: t_ms * MS,
            path: path.into(),
            event: Some(event.into()),
            call_id: Some("c1".into()),
            webhook_id: id.map(str::to_owned),
            sig_ok: id.map(|_| true),
        }
    }

    #[test]
    fn latency_is_from_the_first_trigger_to_the_first_arrival_and_repeats_are_told_apart() {
        let calls = HashMap::from([("c1".to_string(), answered_call())]);
        let arrivals = vec![
            arrival("/siphook", "call.initiated", 1002, Some("e1")),
            arrival("/siphook", "call.ringing", 1005, Some("e2")),
            arrival("/siphook", "call.answered", 1303, Some("e3")),
            // The same webhook-id again: a redelivery, not a duplicate.
            arrival("/siphook", "call.answered", 1400, Some("e3")),
            arrival("/siphook", "call.completed", 1901, Some("e4")),
            // Another id for the same event: a real duplicate.
            arrival("/siphook", "call.completed", 1950, Some("e5")),
            arrival("/kamailio", "initiated", 1001, None),
            arrival("/kamailio", "completed", 1910, None),
        ];
        let s = system(&calls, &arrivals, "/siphook", &EVENTS);
        assert_eq!((s.all.expected, s.all.received, s.all.missing), (4, 4, 0));
        assert_eq!(
            (s.all.duplicates, s.all.redeliveries, s.unexpected),
            (1, 1, 0)
        );
        let answered = &s.events["answered"];
        // Trigger: the callee's first 200 (1300 ms), not its retransmission.
        assert_eq!(answered.latency_ms.as_ref().map(|q| q.max), Some(3.0));
        assert_eq!(
            s.events["initiated"].latency_ms.as_ref().map(|q| q.p50),
            Some(2.0)
        );
        assert_eq!(s.calls_out_of_order, 0);

        let k = system(
            &calls,
            &arrivals,
            "/kamailio",
            &["initiated", "answered", "completed"],
        );
        assert_eq!((k.all.expected, k.all.received, k.all.missing), (3, 2, 1));
        assert_eq!(k.events["answered"].missing, 1);
        // The proxy forwarded that 200: the event was lost by the poster, not the wire.
        assert_eq!(k.events["answered"].missing_unhandled, 0);
        assert_eq!(
            k.events["completed"].latency_ms.as_ref().map(|q| q.p50),
            Some(10.0)
        );
    }

    #[test]
    fn events_arriving_in_another_order_than_they_happened_are_counted() {
        let calls = HashMap::from([("c1".to_string(), answered_call())]);
        let arrivals = vec![
            arrival("/kamailio", "answered", 1310, None),
            arrival("/kamailio", "initiated", 1320, None),
            arrival("/kamailio", "completed", 1910, None),
        ];
        let k = system(
            &calls,
            &arrivals,
            "/kamailio",
            &["initiated", "answered", "completed"],
        );
        assert_eq!(k.calls_out_of_order, 1);
        assert_eq!(k.all.missing, 0);
    }

    #[test]
    fn a_trigger_the_proxy_never_handled_is_told_apart_and_unseen_calls_are_unexpected() {
        let mut c = CallWire::default();
        // The INVITE reached the proxy's socket but was never forwarded or answered.
        saw(
            &mut c,
            Dir::UacIn,
            Some("INVITE"),
            None,
            "INVITE",
            1000 * MS,
        );
        saw(
            &mut c,
            Dir::UacIn,
            Some("INVITE"),
            None,
            "INVITE",
            1500 * MS,
        );
        let calls = HashMap::from([("c1".to_string(), c)]);
        let mut stray = arrival("/siphook", "call.initiated", 5, Some("x"));
        stray.call_id = Some("not-on-the-wire".into());
        let s = system(&calls, &[stray], "/siphook", &EVENTS);
        assert_eq!(
            (s.all.expected, s.all.missing, s.all.missing_unhandled),
            (1, 1, 1)
        );
        assert_eq!(s.unexpected, 1);
        let h = harm(&calls);
        assert_eq!(h.invite_retransmissions_from_caller, 1);
        assert!(h.invite_forwarding_ms.is_none());
    }

    #[test]
    fn a_failed_call_completes_at_the_first_final_answer_and_kamailio_failed_counts_as_completed() {
        let mut c = CallWire::default();
        saw(
            &mut c,
            Dir::UacIn,
            Some("INVITE"),
            None,
            "INVITE",
            1000 * MS,
        );
        saw(
            &mut c,
            Dir::UasOut,
            Some("INVITE"),
            None,
            "INVITE",
            1001 * MS,
        );
        saw(&mut c, Dir::UasIn, None, Some(486), "INVITE", 1100 * MS);
        saw(&mut c, Dir::UacOut, None, Some(486), "INVITE", 1102 * MS);
        let calls = HashMap::from([("c1".to_string(), c)]);
        let arrivals = vec![
            arrival("/kamailio", "initiated", 1001, None),
            arrival("/kamailio", "failed", 1104, None),
        ];
        let k = system(
            &calls,
            &arrivals,
            "/kamailio",
            &["initiated", "answered", "completed"],
        );
        assert_eq!((k.all.expected, k.all.received), (2, 2));
        assert_eq!(
            k.events["completed"].latency_ms.as_ref().map(|q| q.p50),
            Some(4.0)
        );
        assert_eq!(harm(&calls).errors_to_caller, BTreeMap::from([(486, 1)]));
    }
}
