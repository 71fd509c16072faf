//! Who used the machine during a phase: the tap under test (the spawned siphook,
//! or the null relay) and the bench tool itself (generator, receiver, the rest of
//! this process), in cores, from the kernel's per-thread accounting. A latency
//! figure means little without how much of the two cores the tap had.
//!
//! Threads are told apart by name: the spawned siphook's runtime is `siphook-rt`
//! (the thread it runs on `siphook-serve`, its admin listener `siphook-admin`,
//! its outbox's spare maker `outbox-spare`), the relay's `relay-rt` (on
//! `null-relay`). Everything else in the process is the tool, the main thread
//! (named `siphook`, as the process) included.

use std::collections::HashMap;
use std::time::Instant;

use serde::Serialize;

/// CPU over a phase, in cores: 1.0 is one core busy for the whole phase.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CpuUse {
    /// The tap under test (siphook or the relay); `None` for an external target.
    pub tap: Option<f64>,
    /// This process's own work: the generator, the receiver, the report.
    pub tool: f64,
    /// Seconds measured over.
    pub wall_s: f64,
}

/// Per-thread CPU ticks at one moment.
pub(crate) struct Sample {
    at: Instant,
    /// Ticks of live tap threads, by thread id (a thread that exits between two
    /// samples is counted as the tool's: its time stays in the process total).
    tap: HashMap<u32, u64>,
    /// The whole process, exited threads included.
    total: u64,
}

/// Not the bare process name: this process is `siphook` too, and its main
/// thread runs the generator.
fn thread_is_tap(name: &str) -> bool {
    ["siphook-", "outbox-spare", "relay-rt", "null-relay"]
        .iter()
        .any(|p| name.starts_with(p))
}

/// `(comm, utime + stime)` of a `/proc/.../stat` line. The name is in
/// parentheses and may hold spaces or parentheses itself, so the fields are
/// counted from the last `)`.
fn parse_stat(text: &str) -> Option<(&str, u64)> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let name = text.get(open + 1..close)?;
    let mut fields = text.get(close + 1..)?.split_whitespace();
    // After the name: state is field 3; utime and stime are fields 14 and 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((name, utime + stime))
}

/// Reads the process's threads now. Best effort: an unreadable entry counts 0.
pub(crate) fn sample() -> Sample {
    let total = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|t| parse_stat(&t).map(|(_, ticks)| ticks))
        .unwrap_or(0);
    let mut tap = HashMap::new();
    if let Ok(dir) = std::fs::read_dir("/proc/self/task") {
        for entry in dir.flatten() {
            let Some(tid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
                continue;
            };
            let Ok(text) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            if let Some((name, ticks)) = parse_stat(&text)
                && thread_is_tap(name)
            {
                tap.insert(tid, ticks);
            }
        }
    }
    Sample {
        at: Instant::now(),
        tap,
        total,
    }
}

/// What was used between two samples; `tap` is `None` when there is no tap in
/// this process (an external target).
pub(crate) fn between(a: &Sample, b: &Sample, tap_here: bool) -> CpuUse {
    let hz = rustix::param::clock_ticks_per_second() as f64;
    let wall = b.at.duration_since(a.at).as_secs_f64().max(1e-9);
    let tap: u64 = b
        .tap
        .iter()
        .map(|(tid, &t)| t.saturating_sub(a.tap.get(tid).copied().unwrap_or(0)))
        .sum();
    let total = b.total.saturating_sub(a.total);
    let cores = |ticks: u64| ticks as f64 / hz / wall;
    CpuUse {
        tap: tap_here.then(|| cores(tap)),
        tool: cores(total.saturating_sub(tap)),
        wall_s: wall,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_name_with_spaces_and_parentheses_is_read_to_the_last_one() {
        let line = "4242 (siphook-rt (x) y) S 1 2 3 4 5 6 7 8 9 10 250 31 0 0 20 0";
        assert_eq!(parse_stat(line), Some(("siphook-rt (x) y", 281)));
        assert_eq!(parse_stat("4242 (cut"), None);
        assert!(thread_is_tap("siphook-rt") && thread_is_tap("relay-rt"));
        assert!(!thread_is_tap("tokio-runtime-w") && !thread_is_tap("siphook"));
        assert!(thread_is_tap("siphook-serve") && thread_is_tap("null-relay"));
    }

    #[test]
    fn busy_work_on_a_tap_thread_is_the_taps_and_the_rest_the_tools() {
        let a = sample();
        let spin = |until: Instant| {
            let mut x = 0u64;
            while Instant::now() < until {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            }
            std::hint::black_box(x);
        };
        let (spun, spun_rx) = std::sync::mpsc::channel();
        let (sampled, sampled_rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::Builder::new()
            .name("siphook-rt".into())
            .spawn(move || {
                spin(Instant::now() + std::time::Duration::from_millis(250));
                let _ = spun.send(());
                // Alive until sampled: a thread's ticks are read while it lives.
                let _ = sampled_rx.recv();
            })
            .unwrap();
        spun_rx.recv().unwrap();
        let b = sample();
        sampled.send(()).unwrap();
        t.join().unwrap();
        let u = between(&a, &b, true);
        let tap = u.tap.unwrap();
        assert!(tap > 0.2, "the spinning thread shows: {u:?}");
        assert!(u.tool < tap, "{u:?}");
    }
}
