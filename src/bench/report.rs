//! Matching what arrived to what was sent, and the statistics of a run.

use serde::Serialize;

use super::flow::{EventType, Profile};
use super::generator::Sent;
use super::receiver::{EventArrival, RelayArrival};

/// Latency quantiles in milliseconds, exact (nearest rank over the sorted samples).
#[derive(Debug, Clone, Serialize)]
pub struct Quantiles {
    /// How many latencies were measured.
    pub samples: usize,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest.
    pub max: f64,
    /// Arithmetic mean.
    pub mean: f64,
}

impl Quantiles {
    /// The quantiles of `samples` (nanoseconds); `None` without samples.
    pub fn of(mut samples: Vec<u64>) -> Option<Quantiles> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        let n = samples.len();
        let ms = |ns: u64| ns as f64 / 1e6;
        // Nearest rank: the smallest sample with at least q of them at or below it.
        let rank = |q: f64| {
            let r = (q * n as f64).ceil() as usize;
            ms(samples[r.clamp(1, n) - 1])
        };
        let sum: u128 = samples.iter().map(|&s| u128::from(s)).sum();
        Some(Quantiles {
            samples: n,
            p50: rank(0.50),
            p90: rank(0.90),
            p99: rank(0.99),
            p999: rank(0.999),
            max: ms(samples[n - 1]),
            mean: sum as f64 / n as f64 / 1e6,
        })
    }
}

/// What one phase (siphook, or the null relay) did.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseResult {
    /// Calls started.
    pub calls_started: usize,
    /// SIP messages sent.
    pub messages_sent: usize,
    /// Sends that failed.
    pub send_errors: u64,
    /// Calls started per second, as achieved.
    pub achieved_calls_per_sec: f64,
    /// The generator could not keep the pace and stopped early.
    pub generator_truncated: bool,
    /// Events expected (for the baseline: the relayed messages that cause them).
    pub expected: usize,
    /// Expected events received (verified, counted once).
    pub received: usize,
    /// Received per second, from the first message sent to the last arrival.
    pub events_per_sec: f64,
    /// Expected but not received within the drain deadline.
    pub lost: usize,
    /// `lost` by event type (for the baseline: by the type the message causes);
    /// only types with losses.
    pub lost_by_type: std::collections::BTreeMap<&'static str, usize>,
    /// Received again (same `webhook-id`; for the baseline, the same message).
    pub duplicates: usize,
    /// Events whose `sequence` was not above the call's previous one, in arrival
    /// order (not measured for the baseline, which keeps no order).
    pub out_of_order: Option<usize>,
    /// Requests whose signature did not verify (not signed by the baseline).
    pub bad_signatures: Option<usize>,
    /// Requests without the webhook headers or a JSON body.
    pub malformed: usize,
    /// Events of this run's calls that were not expected (an extra type, or a
    /// second event of a type with another id).
    pub unexpected: usize,
    /// Events of other calls (not this run's Call-IDs).
    pub foreign: usize,
    /// Events emitted by a siphook timer (no answer): counted, not timed.
    pub timer_events: usize,
    /// Relay posts that failed (baseline only).
    pub relay_errors: Option<u64>,
    /// SIP message sent → webhook received, for every expected event received
    /// that a message caused.
    pub latency_ms: Option<Quantiles>,
    /// Webhooks the receiver answered 503 on purpose (`--fail-every`); each one's
    /// retry is what counted as received, and its latency includes the wait.
    pub refused_on_purpose: usize,
    /// CPU over the phase (first message to the end of the drain wait), by the
    /// tap under test and by the bench tool itself.
    pub cpu: Option<super::CpuUse>,
    /// Every latency sample as (sent, latency) in nanoseconds since the run began,
    /// in arrival order: what `--plot` draws. Too bulky for the JSON report.
    #[serde(skip)]
    pub series: Vec<(u64, u64)>,
}

fn events_per_sec(received: usize, sent: &Sent, last_arrival: Option<u64>) -> f64 {
    match last_arrival {
        Some(last) if last > sent.first_start && received > 0 => {
            received as f64 / ((last - sent.first_start) as f64 / 1e9)
        }
        _ => 0.0,
    }
}

/// Counts of what arrived at the receiver for the siphook phase.
pub(crate) struct EventTally<'a> {
    pub(crate) events: &'a [EventArrival],
    pub(crate) bad_signatures: usize,
    pub(crate) duplicates: usize,
    pub(crate) malformed: usize,
    pub(crate) refused: usize,
}

/// Matches siphook's webhooks to the messages that caused them.
pub(crate) fn analyse_events(profile: Profile, sent: &Sent, tally: EventTally<'_>) -> PhaseResult {
    let calls = sent.started;
    let expected = sent.expected_events(profile);
    let mut got = vec![0u8; calls * EventType::ALL.len()];
    let mut last_seq = vec![0u64; calls];
    let mut arrivals: Vec<&EventArrival> = tally.events.iter().collect();
    arrivals.sort_by_key(|a| a.at);
    let (mut samples, mut received, mut unexpected, mut foreign, mut timer_events, mut ooo) =
        (Vec::with_capacity(expected), 0, 0, 0, 0, 0);
    for a in &arrivals {
        let Some(call) = a.call.filter(|&c| c < calls) else {
            foreign += 1;
            continue;
        };
        let kind = profile.kind(call);
        let Some((event, cause)) = a.event.and_then(|e| kind.cause_of(e).map(|c| (e, c))) else {
            unexpected += 1;
            continue;
        };
        let slot = &mut got[call * EventType::ALL.len() + event.slot()];
        if *slot > 0 || !sent.expects(profile, call, event) {
            unexpected += 1;
            continue;
        }
        *slot = 1;
        received += 1;
        if a.sequence <= last_seq[call] {
            ooo += 1;
        }
        last_seq[call] = last_seq[call].max(a.sequence);
        match cause.and_then(|step| sent.time(call, step)) {
            Some(t) => samples.push((t, a.at.saturating_sub(t))),
            None => timer_events += usize::from(cause.is_none()),
        }
    }
    let mut lost_by_type = std::collections::BTreeMap::new();
    for call in 0..calls {
        for t in EventType::ALL {
            if sent.expects(profile, call, t) && got[call * EventType::ALL.len() + t.slot()] == 0 {
                *lost_by_type.entry(t.as_str()).or_insert(0) += 1;
            }
        }
    }
    PhaseResult {
        calls_started: calls,
        messages_sent: sent.messages,
        send_errors: sent.send_errors,
        achieved_calls_per_sec: sent.achieved_rate(),
        generator_truncated: sent.truncated,
        expected,
        received,
        events_per_sec: events_per_sec(received, sent, arrivals.last().map(|a| a.at)),
        lost: expected.saturating_sub(received),
        lost_by_type,
        duplicates: tally.duplicates,
        out_of_order: Some(ooo),
        bad_signatures: Some(tally.bad_signatures),
        malformed: tally.malformed,
        unexpected,
        foreign,
        timer_events,
        relay_errors: None,
        latency_ms: Quantiles::of(samples.iter().map(|&(_, l)| l).collect()),
        refused_on_purpose: tally.refused,
        cpu: None,
        series: samples,
    }
}

/// Matches the null relay's posts to the messages, for the steps that cause an
/// event in siphook: the same set of latencies, without siphook.
pub(crate) fn analyse_relay(
    profile: Profile,
    sent: &Sent,
    relayed: &[RelayArrival],
    relay_errors: u64,
) -> PhaseResult {
    let calls = sent.started;
    // The messages that cause an event, where they were sent.
    let expects = |call: usize, step: usize| {
        profile.kind(call).steps()[step].causes.is_some() && sent.time(call, step).is_some()
    };
    let expected: usize = (0..calls)
        .map(|c| {
            (0..profile.kind(c).steps().len())
                .filter(|&s| expects(c, s))
                .count()
        })
        .sum();
    let mut got = vec![false; calls * super::flow::MAX_STEPS];
    let (mut samples, mut received, mut duplicates, mut foreign) =
        (Vec::with_capacity(expected), 0, 0, 0);
    let mut last = None::<u64>;
    for a in relayed {
        let Some(call) = a.call.filter(|&c| c < calls) else {
            foreign += 1;
            continue;
        };
        let Some(step) = a.step else {
            foreign += 1;
            continue;
        };
        let seen = &mut got[call * super::flow::MAX_STEPS + step];
        if *seen {
            duplicates += 1;
            continue;
        }
        *seen = true;
        if !expects(call, step) {
            continue;
        }
        received += 1;
        last = last.max(Some(a.at));
        if let Some(t) = sent.time(call, step) {
            samples.push((t, a.at.saturating_sub(t)));
        }
    }
    let mut lost_by_type = std::collections::BTreeMap::new();
    for call in 0..calls {
        for (step, s) in profile.kind(call).steps().iter().enumerate() {
            if let Some(t) = s.causes
                && expects(call, step)
                && !got[call * super::flow::MAX_STEPS + step]
            {
                *lost_by_type.entry(t.as_str()).or_insert(0) += 1;
            }
        }
    }
    PhaseResult {
        calls_started: calls,
        messages_sent: sent.messages,
        send_errors: sent.send_errors,
        achieved_calls_per_sec: sent.achieved_rate(),
        generator_truncated: sent.truncated,
        expected,
        received,
        events_per_sec: events_per_sec(received, sent, last),
        lost: expected.saturating_sub(received),
        lost_by_type,
        duplicates,
        out_of_order: None,
        bad_signatures: None,
        malformed: 0,
        unexpected: 0,
        foreign,
        timer_events: 0,
        relay_errors: Some(relay_errors),
        latency_ms: Quantiles::of(samples.iter().map(|&(_, l)| l).collect()),
        refused_on_purpose: 0,
        cpu: None,
        series: samples,
    }
}

/// siphook's latency over the null relay's, quantile by quantile.
#[derive(Debug, Clone, Serialize)]
pub struct Ratios {
    /// p50 ratio: the figure the target is about.
    pub p50: f64,
    /// p90 ratio.
    pub p90: f64,
    /// p99 ratio.
    pub p99: f64,
    /// p99.9 ratio.
    pub p999: f64,
    /// Max ratio.
    pub max: f64,
}

impl Ratios {
    /// `a / b` per quantile.
    pub fn of(a: &Quantiles, b: &Quantiles) -> Ratios {
        let r = |x: f64, y: f64| if y > 0.0 { x / y } else { f64::NAN };
        Ratios {
            p50: r(a.p50, b.p50),
            p90: r(a.p90, b.p90),
            p99: r(a.p99, b.p99),
            p999: r(a.p999, b.p999),
            max: r(a.max, b.max),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::flow::MAX_STEPS;
    use crate::bench::generator::NOT_SENT;

    fn sent(calls: usize) -> Sent {
        Sent {
            times: vec![NOT_SENT; calls * MAX_STEPS],
            started: calls,
            messages: 0,
            send_errors: 0,
            first_start: 0,
            last_start: 0,
            truncated: false,
        }
    }

    fn arrival(at: u64, call: Option<usize>, event: EventType, sequence: u64) -> EventArrival {
        EventArrival {
            at,
            call,
            event: Some(event),
            sequence,
        }
    }

    #[test]
    fn events_are_matched_to_their_cause_and_counted_once() {
        use EventType::*;
        const MS: u64 = 1_000_000;
        let mut s = sent(2);
        // Call 0 sent whole at 10 ms; call 1 without the 200 to its BYE, which
        // is what completes a call (the generator stopped).
        for step in 0..7 {
            s.times[step] = 10 * MS;
            if step != 6 {
                s.times[MAX_STEPS + step] = 20 * MS;
            }
        }
        let events = [
            arrival(11 * MS, Some(0), Initiated, 1),
            arrival(12 * MS, Some(0), Answered, 3),
            arrival(13 * MS, Some(0), Ringing, 2),
            arrival(14 * MS, Some(0), Completed, 4),
            arrival(21 * MS, Some(1), Initiated, 1),
            arrival(22 * MS, Some(1), Ringing, 2),
            arrival(23 * MS, Some(1), Ringing, 3),
            arrival(24 * MS, None, Initiated, 1),
        ];
        let r = analyse_events(
            Profile::Answered,
            &s,
            EventTally {
                events: &events,
                bad_signatures: 0,
                duplicates: 0,
                malformed: 0,
                refused: 0,
            },
        );
        assert_eq!((r.expected, r.received, r.lost), (7, 6, 1));
        assert_eq!(r.lost_by_type.get("call.answered"), Some(&1));
        assert_eq!(r.out_of_order, Some(1), "ringing (2) after answered (3)");
        assert_eq!((r.unexpected, r.foreign), (1, 1));
        let q = r.latency_ms.unwrap();
        assert_eq!((q.samples, q.p50, q.max), (6, 2.0, 4.0));
    }

    #[test]
    fn nearest_rank_quantiles() {
        let q = Quantiles::of((1..=1000).map(|i| i * 1_000_000).collect()).unwrap();
        assert_eq!(
            (q.samples, q.p50, q.p90, q.p99, q.p999, q.max),
            (1000, 500.0, 900.0, 990.0, 999.0, 1000.0)
        );
        assert!((q.mean - 500.5).abs() < 1e-9);
        let one = Quantiles::of(vec![3_000_000]).unwrap();
        assert_eq!((one.p50, one.p999, one.max), (3.0, 3.0, 3.0));
        assert!(Quantiles::of(vec![]).is_none());
    }
}
