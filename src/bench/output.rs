//! The result of a run as people and machines read it: what was asked, each
//! phase's figures, the ratios to the null relay, and the verdict.

use serde::Serialize;

use super::{PhaseResult, Profile, Quantiles, Ratios, Transport};

/// The run as configured, in the report.
#[derive(Debug, Clone, Serialize)]
pub struct RunConfig {
    /// `"spawn"`, or the external target's address.
    pub target: String,
    /// `udp`, `tcp` or `hep`.
    pub transport: Transport,
    /// Calls started per second, asked for.
    pub rate: f64,
    /// Calls per phase.
    pub calls: u64,
    /// `--duration`, if that set the number of calls, in seconds.
    pub duration_s: Option<f64>,
    /// Hold time, seconds.
    pub hold_s: f64,
    /// `answered` or `mixed`.
    pub profile: Profile,
    /// Whether the null relay ran too.
    pub baseline: bool,
    /// Drain deadline, seconds.
    pub drain_s: f64,
    /// CPUs this process may use.
    pub cpus: usize,
    /// The spawned siphook committed without fsync (`--no-fsync`).
    pub no_fsync: bool,
    /// What siphook delivered to: `webhook` (the bench's receiver) or `nats` (a
    /// JetStream stream the bench consumed).
    pub sink: String,
}

/// The result of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// What was asked.
    pub config: RunConfig,
    /// siphook's figures.
    pub siphook: PhaseResult,
    /// The null relay's, with `--baseline`.
    pub baseline: Option<PhaseResult>,
    /// siphook ÷ baseline latency, with `--baseline`.
    pub ratios: Option<Ratios>,
    /// Why the run failed; empty when it passed.
    pub failures: Vec<String>,
    /// What is worth knowing but does not fail the run.
    pub warnings: Vec<String>,
}

impl Report {
    /// No loss, no bad signature, no duplicate, nothing out of order or unexpected.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    pub(super) fn judge(&mut self) {
        let s = &self.siphook;
        let mut f = Vec::new();
        if s.lost > 0 {
            f.push(format!("{} events lost", s.lost));
        }
        if let Some(n) = s.bad_signatures.filter(|&n| n > 0) {
            f.push(format!("{n} bad signatures"));
        }
        if s.duplicates > 0 {
            f.push(format!("{} duplicate webhooks", s.duplicates));
        }
        if let Some(n) = s.out_of_order.filter(|&n| n > 0) {
            f.push(format!("{n} events out of order"));
        }
        if s.unexpected > 0 {
            f.push(format!("{} unexpected events", s.unexpected));
        }
        if s.malformed > 0 {
            f.push(format!("{} malformed webhooks", s.malformed));
        }
        let mut w = Vec::new();
        for (name, p) in
            std::iter::once(("siphook", s)).chain(self.baseline.iter().map(|b| ("baseline", b)))
        {
            if p.generator_truncated {
                w.push(format!(
                    "{name}: the generator could not keep the pace and stopped after {} calls",
                    p.calls_started
                ));
            }
            if p.send_errors > 0 {
                w.push(format!("{name}: {} sends failed", p.send_errors));
            }
            if p.foreign > 0 {
                w.push(format!(
                    "{name}: {} requests for calls of other runs",
                    p.foreign
                ));
            }
        }
        if let Some(b) = &self.baseline {
            if b.lost > 0 {
                w.push(format!(
                    "baseline: {} messages lost: its quantiles are over fewer samples",
                    b.lost
                ));
            }
            if let Some(n) = b.relay_errors.filter(|&n| n > 0) {
                w.push(format!("baseline: {n} relay posts failed"));
            }
        }
        self.failures = f;
        self.warnings = w;
    }

    /// A small table for people.
    pub fn table(&self) -> String {
        use std::fmt::Write;
        let c = &self.config;
        let mut out = String::new();
        let limit = match c.duration_s {
            Some(d) => format!("{d}s ({} calls)", c.calls),
            None => format!("{} calls", c.calls),
        };
        let _ = writeln!(
            out,
            "siphook bench: target {} delivering to {}, {}, {} profile, {} calls/s for {limit}, hold {}s{}",
            c.target,
            match c.sink.as_str() {
                "nats" => "JetStream (a consumer of the stream)",
                "kafka" => "Kafka (a consumer of the topic)",
                _ => "webhooks",
            },
            c.transport,
            c.profile,
            c.rate,
            c.hold_s,
            if c.no_fsync {
                ", outbox commits WITHOUT fsync"
            } else {
                ""
            }
        );
        let s = &self.siphook;
        let b = self.baseline.as_ref();
        let mut rows: Vec<[String; 4]> = vec![[
            String::new(),
            "siphook".into(),
            b.map_or("", |_| "null relay").into(),
            self.ratios.as_ref().map_or("", |_| "ratio").into(),
        ]];
        let mut row = |name: &str, f: &dyn Fn(&PhaseResult) -> String| {
            rows.push([
                name.into(),
                f(s),
                b.map(f).unwrap_or_default(),
                String::new(),
            ]);
        };
        let opt = |v: Option<usize>| v.map_or("-".into(), |n| n.to_string());
        row("calls started", &|p| p.calls_started.to_string());
        row("achieved calls/s", &|p| {
            format!("{:.1}", p.achieved_calls_per_sec)
        });
        row("events expected", &|p| p.expected.to_string());
        row("events received", &|p| p.received.to_string());
        row("events/s", &|p| format!("{:.1}", p.events_per_sec));
        row("lost", &|p| p.lost.to_string());
        row("duplicates", &|p| p.duplicates.to_string());
        row("out of order", &|p| opt(p.out_of_order));
        row("bad signatures", &|p| opt(p.bad_signatures));
        let cores = |v: Option<f64>| v.map_or("-".into(), |c| format!("{c:.2}"));
        row("cpu: tap (cores)", &|p| cores(p.cpu.and_then(|c| c.tap)));
        row("cpu: bench tool (cores)", &|p| cores(p.cpu.map(|c| c.tool)));
        if s.timer_events > 0 {
            row("timer events (untimed)", &|p| p.timer_events.to_string());
        }
        if s.refused_on_purpose > 0 {
            row("answered 503 on purpose", &|p| {
                p.refused_on_purpose.to_string()
            });
        }
        let quantiles = [("p50", 0), ("p90", 1), ("p99", 2), ("p99.9", 3), ("max", 4)];
        for (name, i) in quantiles {
            let pick = |q: &Quantiles| [q.p50, q.p90, q.p99, q.p999, q.max][i];
            let ms = |p: &PhaseResult| {
                p.latency_ms
                    .as_ref()
                    .map_or("-".into(), |q| format!("{:.3}", pick(q)))
            };
            let ratio = self.ratios.as_ref().map(|r| {
                let x = [r.p50, r.p90, r.p99, r.p999, r.max][i];
                format!("{x:.2}x")
            });
            rows.push([
                format!("latency {name} (ms)"),
                ms(s),
                b.map(ms).unwrap_or_default(),
                ratio.unwrap_or_default(),
            ]);
        }
        for [name, a, bb, r] in &rows {
            let _ = writeln!(out, "{name:<24}{a:>12} {bb:>12} {r:>10}");
        }
        for (name, p) in std::iter::once(("siphook", s)).chain(b.map(|b| ("null relay", b))) {
            if !p.lost_by_type.is_empty() {
                let by: Vec<String> = p
                    .lost_by_type
                    .iter()
                    .map(|(t, n)| format!("{t} {n}"))
                    .collect();
                let _ = writeln!(out, "{name} lost: {}", by.join(", "));
            }
        }
        // What the figures mean, said where they are read (BENCHMARKS.md has the method).
        let arrival = match c.sink.as_str() {
            "nats" => "the bench's JetStream consumer having the stored message",
            "kafka" => {
                "the bench's consumer having the record from librdkafka's in-process mock \
                 cluster (the mock's figures, not a real cluster's)"
            }
            _ => "the bench's receiver having read the webhook's body",
        };
        let _ = writeln!(
            out,
            "latency: from the bench sending the SIP message that causes an event (INVITE, \
             180, the INVITE's 200, 486/487, NOTIFY, the BYE's 200) to {arrival}; events a \
             siphook timer causes are not timed"
        );
        if c.sink != "webhook" {
            let _ = writeln!(
                out,
                "broker: the load starts as soon as siphook listens; its first events may \
                 wait for the broker connection, which shows in the first fraction of a \
                 second of --plot and in the highest quantiles of a short run"
            );
        }
        if self.ratios.is_some() {
            let _ = writeln!(
                out,
                "ratio: siphook's latency over the null relay's at the same quantile; the \
                 relay POSTs each SIP message as it arrives (no parsing, tracking or outbox), \
                 the floor this host, its scheduler and HTTP set"
            );
        }
        let fsync = match (c.target.as_str(), c.no_fsync) {
            ("spawn", false) => "on: each outbox commit is fdatasynced before its event goes out",
            ("spawn", true) => "OFF (--no-fsync): commits reach the page cache only",
            _ => "as the target siphook is configured (not spawned by the bench)",
        };
        let _ = writeln!(out, "fsync: {fsync}");
        for w in &self.warnings {
            let _ = writeln!(out, "warning: {w}");
        }
        if self.failures.is_empty() {
            let _ = writeln!(
                out,
                "PASSED: no event lost, duplicated, out of order, unexpected or malformed, \
                 every signature valid (latency is reported, not judged)"
            );
        } else {
            let _ = writeln!(out, "FAILED: {}", self.failures.join(", "));
        }
        out
    }
}
