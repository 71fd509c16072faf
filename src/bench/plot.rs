//! `--plot FILE.svg`: the latency distribution and latency over time of a run, so a
//! number in BENCHMARKS.md comes with the shape behind it (a p99 made of one stall
//! looks very different from a p99 made of steady queueing).

use std::path::Path;

use plotters::prelude::*;

use super::BenchError;
use super::output::Report;

/// Bins of the histogram.
const BINS: usize = 80;
/// Most points drawn in the scatter: beyond it every k-th sample is kept, and of
/// the samples above the p99 (the tail, which even thinning must keep visible)
/// at most `MAX_TAIL`, evenly spread. Keeps a plot of millions of samples to a
/// few hundred kilobytes.
const MAX_POINTS: usize = 3_000;
const MAX_TAIL: usize = 1_000;

const SIPHOOK: RGBColor = RGBColor(0x1f, 0x77, 0xb4);
const RELAY: RGBColor = RGBColor(0x99, 0x99, 0x99);

/// Writes the two panels as one SVG file.
pub fn write_svg(report: &Report, path: &Path) -> Result<(), BenchError> {
    let fail = |e: String| BenchError::Plot {
        path: path.display().to_string(),
        reason: e,
    };
    draw(report, path).map_err(|e| fail(e.to_string()))
}

type DrawResult = Result<(), Box<dyn std::error::Error>>;

fn draw(report: &Report, path: &Path) -> DrawResult {
    let root = SVGBackend::new(path, (1000, 760)).into_drawing_area();
    root.fill(&WHITE)?;
    let c = &report.config;
    let title = format!(
        "siphook bench: {} calls/s, {} calls, {:?} over {:?}",
        c.rate, report.siphook.calls_started, c.profile, c.transport
    );
    let root = root.titled(&title, ("sans-serif", 20))?;
    let (top, bottom) = root.split_vertically(360);
    let siphook = ms_series(&report.siphook.series);
    let relay = report
        .baseline
        .as_ref()
        .map(|b| ms_series(&b.series))
        .unwrap_or_default();
    // The axis ends past siphook's p99.9, not at its max: one outlier would
    // otherwise squash everything else into the first bin.
    let edge = report
        .siphook
        .latency_ms
        .as_ref()
        .map_or(1.0, |q| (q.p999 * 1.25).max(0.1));
    histogram(&top, &siphook, &relay, edge)?;
    over_time(&bottom, report, edge)?;
    root.present()?;
    Ok(())
}

/// (seconds since the phase's first send, latency in ms).
fn ms_series(series: &[(u64, u64)]) -> Vec<(f64, f64)> {
    let start = series.iter().map(|&(t, _)| t).min().unwrap_or(0);
    series
        .iter()
        .map(|&(t, l)| ((t - start) as f64 / 1e9, l as f64 / 1e6))
        .collect()
}

/// The share of samples in each bin; the last bin also holds everything past
/// the edge.
fn shares(samples: &[(f64, f64)], edge: f64) -> Vec<(f64, f64)> {
    let mut counts = [0usize; BINS];
    for &(_, ms) in samples {
        let bin = ((ms / edge) * BINS as f64) as usize;
        counts[bin.min(BINS - 1)] += 1;
    }
    let n = samples.len().max(1) as f64;
    let width = edge / BINS as f64;
    counts
        .iter()
        .enumerate()
        .map(|(i, &c)| ((i as f64 + 0.5) * width, 100.0 * c as f64 / n))
        .collect()
}

fn histogram<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    siphook: &[(f64, f64)],
    relay: &[(f64, f64)],
    edge: f64,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let s = shares(siphook, edge);
    let r = (!relay.is_empty()).then(|| shares(relay, edge));
    let top = s
        .iter()
        .chain(r.iter().flatten())
        .map(|&(_, p)| p)
        .fold(1.0f64, f64::max)
        * 1.1;
    let mut chart = ChartBuilder::on(area)
        .caption(
            "latency distribution (last bin: everything beyond)",
            ("sans-serif", 15),
        )
        .margin(12)
        .x_label_area_size(38)
        .y_label_area_size(55)
        .build_cartesian_2d(0f64..edge, 0f64..top)?;
    chart
        .configure_mesh()
        .x_desc("SIP message sent → webhook received (ms)")
        .y_desc("% of events")
        .draw()?;
    chart
        .draw_series(LineSeries::new(s, SIPHOOK.stroke_width(2)))?
        .label("siphook")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], SIPHOOK.stroke_width(2)));
    if let Some(r) = r {
        chart
            .draw_series(LineSeries::new(r, RELAY.stroke_width(2)))?
            .label("null relay (baseline)")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], RELAY.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

fn over_time<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    report: &Report,
    edge: f64,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let p99 = report.siphook.latency_ms.as_ref().map_or(0.0, |q| q.p99);
    let points = thin(&ms_series(&report.siphook.series), p99);
    let span = points.iter().map(|&(t, _)| t).fold(1.0f64, f64::max);
    let mut chart = ChartBuilder::on(area)
        .caption(
            "siphook latency over the run (points past the top are drawn on it)",
            ("sans-serif", 15),
        )
        .margin(12)
        .x_label_area_size(38)
        .y_label_area_size(55)
        .build_cartesian_2d(0f64..span, 0f64..edge)?;
    chart
        .configure_mesh()
        .x_desc("time since the first call (s)")
        .y_desc("latency (ms)")
        .draw()?;
    chart.draw_series(
        points
            .iter()
            .map(|&(t, ms)| Circle::new((t, ms.min(edge)), 1, SIPHOOK.mix(0.5).filled())),
    )?;
    Ok(())
}

/// At most about `MAX_POINTS` + `MAX_TAIL`, with the tail thinned less.
fn thin(points: &[(f64, f64)], p99: f64) -> Vec<(f64, f64)> {
    let step = points.len().div_ceil(MAX_POINTS).max(1);
    let tail = points.iter().filter(|&&(_, ms)| ms > p99).count();
    let tail_step = tail.div_ceil(MAX_TAIL).max(1);
    let mut seen_tail = 0;
    let mut out = Vec::with_capacity(MAX_POINTS + MAX_TAIL);
    for (i, &(t, ms)) in points.iter().enumerate() {
        let keep_tail = ms > p99 && {
            seen_tail += 1;
            (seen_tail - 1) % tail_step == 0
        };
        if i % step == 0 || keep_tail {
            out.push((t, ms));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_sum_to_a_hundred_and_the_last_bin_takes_the_tail() {
        let samples: Vec<(f64, f64)> = (0..100).map(|i| (0.0, i as f64 / 10.0)).collect();
        let s = shares(&samples, 5.0);
        let total: f64 = s.iter().map(|&(_, p)| p).sum();
        assert!((total - 100.0).abs() < 1e-9);
        // 5.0..=9.9 ms: the 50 samples at or past the edge; 4.9 ms falls in bin 78.
        assert_eq!(s[BINS - 1].1, 50.0);
        assert_eq!(s[BINS - 2].1, 1.0);
    }

    #[test]
    fn thinning_keeps_the_tail() {
        let pts: Vec<(f64, f64)> = (0..100_000).map(|i| (i as f64, 1.0)).collect();
        let mut with_tail = pts.clone();
        with_tail[77_777].1 = 50.0;
        let kept = thin(&with_tail, 2.0);
        assert!(kept.len() <= MAX_POINTS + 1);
        assert!(kept.iter().any(|&(_, ms)| ms == 50.0));
        // A heavy tail is thinned too, but stays over-represented.
        let heavy: Vec<(f64, f64)> = (0..100_000)
            .map(|i| (i as f64, if i % 10 == 0 { 9.0 } else { 1.0 }))
            .collect();
        let kept = thin(&heavy, 2.0);
        assert!(kept.len() <= MAX_POINTS + MAX_TAIL + 1, "{}", kept.len());
        let tail = kept.iter().filter(|&&(_, ms)| ms > 2.0).count();
        assert!(
            tail >= MAX_TAIL && tail * 5 > kept.len(),
            "{tail} of {}",
            kept.len()
        );
    }
}
