//! One table over all runs of a rig invocation (from each run's `result.json`):
//! the line per system and run that BENCHMARKS.md quotes.

use std::path::PathBuf;

use anyhow::Context;
use serde_json::Value;

/// The run directories to summarise, in order.
#[derive(clap::Args)]
pub struct SummaryArgs {
    /// Run directories (each with a result.json).
    dirs: Vec<PathBuf>,
}

fn num(v: &Value) -> String {
    match v.as_f64() {
        Some(x) if x >= 100.0 => format!("{x:.0}"),
        Some(x) => format!("{x:.2}"),
        None => "—".into(),
    }
}

fn count(v: &Value) -> u64 {
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or(0)
}

/// Prints the summary table (markdown).
pub fn run(args: &SummaryArgs) -> anyhow::Result<()> {
    println!(
        "| run | webhooks from | due | missing | duplicates | p50 / p99 / max (ms) | calls failed | retransmissions | errors to caller | INVITE forwarding p50 / p99 (ms) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for dir in &args.dirs {
        let path = dir.join("result.json");
        let text = std::fs::read_to_string(&path).with_context(|| crate::shown(&path))?;
        let r: Value = serde_json::from_str(&text).with_context(|| crate::shown(&path))?;
        let run = dir
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let h = &r["harm"];
        let failed = count(&h["sipp_caller"]["FailedCall(C)"]);
        let retrans = count(&h["sipp_caller"]["Retransmissions(C)"])
            + count(&h["sipp_callee"]["Retransmissions(C)"]);
        let errors = h["errors_to_caller"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(c, n)| format!("{c}×{n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "0".into());
        let fwd = &h["invite_forwarding_ms"];
        let harm = format!(
            "{failed} | {retrans} | {errors} | {} / {}",
            num(&fwd["p50"]),
            num(&fwd["p99"])
        );
        for (name, sys) in [("siphook", &r["siphook"]), ("Kamailio", &r["kamailio"])] {
            if sys.is_null() {
                continue;
            }
            let all = &sys["all"];
            let lat = &all["latency_ms"];
            println!(
                "| {run} | {name} | {} | {} | {} | {} / {} / {} | {harm} |",
                count(&all["expected"]),
                count(&all["missing"]),
                count(&all["duplicates"]),
                num(&lat["p50"]),
                num(&lat["p99"]),
                num(&lat["max"]),
            );
        }
    }
    Ok(())
}
