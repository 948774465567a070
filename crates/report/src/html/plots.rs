//! The run report's plots, each an inline `<svg>` drawn with `plotters`' SVG backend:
//! throughput per repetition, RSS over the replay (and after everything was freed), and per
//! operation kind the per-call latency percentile curve. [`svg`], [`range`], [`PALETTE`] and
//! [`FONT`] are public so other pages' plots (the sweep's Pareto plot) look the same.

use super::chart::{frame, labelled_line, legend, mesh, ops_by_mib};
use crate::format::{ns_label, pct_label};
use crate::hist::{merge, quantile_ns};
use crate::model::{RunResults, OP_KINDS};
use crate::summary::SummaryRow;
use plotters::coord::Shift;
use plotters::prelude::*;

/// Colours, one per allocator in the order of `RunResults::allocators` (tab10).
pub const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// Width and height of every plot, in SVG pixels.
pub const PLOT_SIZE: (u32, u32) = (640, 400);

/// The font family of every label.
pub const FONT: &str = "sans-serif";

/// What a drawing returns: its error keeps plotters' own (and that one's source).
pub type Drawn = Result<(), DrawError>;

/// A drawing's error: plotters' own, with its source.
pub type DrawError = Box<dyn std::error::Error + Send + Sync>;

/// Draws one SVG plot of [`PLOT_SIZE`]; a drawing error becomes a visible note instead.
pub fn svg(draw: impl FnOnce(&DrawingArea<SVGBackend, Shift>) -> Drawn) -> String {
    let mut s = String::new();
    let res = {
        let root = SVGBackend::with_string(&mut s, PLOT_SIZE).into_drawing_area();
        root.fill(&WHITE)
            .map_err(Into::into)
            .and_then(|_| draw(&root))
            .and_then(|_| root.present().map_err(Into::into))
    };
    match res {
        // Inline SVG in HTML needs no namespace declaration; dropping it keeps the page free of
        // any URL.
        Ok(()) => s.replacen(" xmlns=\"http://www.w3.org/2000/svg\"", "", 1),
        Err(e) => format!(
            "<p class=\"fail\">plot failed: {}</p>",
            crate::format::esc(&e.to_string())
        ),
    }
}

macro_rules! t {
    ($e:expr) => {
        $e.map_err(|e| e.to_string())?
    };
}

const MIB: f64 = 1024.0 * 1024.0;

/// A plotting range covering `vals` with a margin; from 0 when `from_zero`.
pub fn range(vals: impl Iterator<Item = f64>, from_zero: bool) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in vals {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    if from_zero {
        lo = lo.min(0.0);
    }
    let pad = ((hi - lo) * 0.08).max(hi.abs() * 0.02).max(1e-9);
    let lo = if from_zero && lo >= 0.0 {
        0.0
    } else {
        lo - pad
    };
    (lo, hi + pad)
}

/// One allocator's line: its index in `RunResults::allocators` (its colour), name and points.
type Line = (usize, String, Vec<(f64, f64)>);

/// One line per allocator, in its colour, named in the legend.
fn allocator_lines<CT: CoordTranslate<From = (f64, f64)>>(
    chart: &mut ChartContext<'_, SVGBackend<'_>, CT>,
    lines: &[Line],
) -> Drawn {
    for (ai, name, pts) in lines {
        let c = PALETTE[ai % PALETTE.len()];
        labelled_line(chart, pts.clone(), c.stroke_width(2), name)?;
    }
    Ok(())
}

/// Per-call latency percentile curves of one operation kind, one line per allocator.
pub(crate) fn latency_svg(
    results: &RunResults,
    rows: &[SummaryRow],
    trace: &str,
    op: &str,
) -> String {
    // Curve points: x = -log10(1 - q), y = ns.
    let mut curves: Vec<Line> = Vec::new();
    let mut xmax: f64 = 1.0;
    for (ai, a) in results.allocators.iter().enumerate() {
        let h = merge(
            results
                .repetitions
                .iter()
                .filter(|r| r.trace == trace && r.allocator == a.name && r.failure.is_none())
                .filter_map(|r| r.tail.get(op))
                .map(|f| &f.hist),
        );
        if h.is_empty() {
            continue;
        }
        let top = (h.len() as f64).log10().clamp(1.0, 6.0);
        xmax = xmax.max(top);
        let mut pts = Vec::new();
        let mut x = 0.0;
        while x < top {
            let q = 1.0 - 10f64.powf(-x);
            pts.push((x, quantile_ns(&h, q).max(1.0)));
            x += 0.05;
        }
        pts.push((top, (h.max() as f64 / 1000.0).max(1.0)));
        curves.push((ai, a.name.clone(), pts));
    }
    let noise = {
        let v: Vec<f64> = rows
            .iter()
            .filter(|r| r.trace == trace && r.op == op && r.repetitions_ok > 0)
            .map(|r| r.timer_noise_ns)
            .collect();
        if v.is_empty() {
            0.0
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    };
    let ymax = curves
        .iter()
        .flat_map(|c| c.2.iter().map(|p| p.1))
        .fold(10.0f64, f64::max);
    let xmax = xmax.ceil();
    svg(|root| {
        let caption = format!("{op}: per-call latency percentiles");
        let y = (1f64..ymax * 2.0).log_scale();
        let mut chart = frame(root, caption, 0f64..xmax, y)?;
        mesh(
            chart
                .configure_mesh()
                .x_desc("percentile")
                .y_desc("latency (timer floor subtracted)")
                .x_labels(xmax as usize + 1)
                .x_label_formatter(&|v| pct_label(*v))
                .y_label_formatter(&|v| ns_label(*v)),
        )?;
        if noise > 1.0 {
            let grey = RGBColor(120, 120, 120);
            t!(chart
                .draw_series(DashedLineSeries::new(
                    vec![(0.0, noise), (xmax, noise)],
                    6,
                    4,
                    grey.stroke_width(1),
                ))
                .map(|s| s
                    .label("timer noise")
                    .legend(move |(x, y)| { PathElement::new(vec![(x, y), (x + 20, y)], grey) })));
        }
        allocator_lines(&mut chart, &curves)?;
        legend(&mut chart, SeriesLabelPosition::UpperLeft)
    })
}

/// RSS over the replay (first successful repetition of each allocator) and the ideal.
pub(crate) fn rss_svg(results: &RunResults, trace: &str) -> String {
    let mut lines: Vec<Line> = Vec::new();
    let mut live: Vec<(f64, f64)> = Vec::new();
    for (ai, a) in results.allocators.iter().enumerate() {
        let Some(r) = results.repetitions.iter().find(|r| {
            r.trace == trace
                && r.allocator == a.name
                && r.failure.is_none()
                && !r.rss_timeline.is_empty()
        }) else {
            continue;
        };
        if live.is_empty() {
            live = r
                .rss_timeline
                .iter()
                .map(|s| (s.ops_done as f64, s.live_bytes as f64 / MIB))
                .collect();
        }
        lines.push((
            ai,
            a.name.clone(),
            r.rss_timeline
                .iter()
                .map(|s| (s.ops_done as f64, s.rss_bytes as f64 / MIB))
                .collect(),
        ));
    }
    let baseline = {
        let mut v: Vec<u64> = results
            .repetitions
            .iter()
            .filter(|r| r.trace == trace && r.failure.is_none())
            .filter_map(|r| r.memory.as_ref().map(|m| m.baseline_rss))
            .collect();
        v.sort_unstable();
        v.get(v.len() / 2).copied().unwrap_or(0) as f64
    };
    let ideal: Vec<(f64, f64)> = live.iter().map(|&(x, y)| (x, y + baseline / MIB)).collect();
    let end = lines
        .iter()
        .flat_map(|l| l.2.iter().map(|p| p.0))
        .fold(1.0f64, f64::max);
    // Memory after the work, right of the replay's end: one mark per reading, at evenly spaced
    // positions (their times are labelled, the x axis does not measure them).
    let drained: Vec<(usize, Vec<(f64, f64)>)> = results
        .allocators
        .iter()
        .enumerate()
        .filter_map(|(ai, a)| {
            let d = results
                .repetitions
                .iter()
                .filter(|r| r.trace == trace && r.allocator == a.name && r.failure.is_none())
                .find_map(|r| r.memory.as_ref().filter(|m| !m.drain.is_empty()))?;
            let pts = d
                .drain
                .iter()
                .enumerate()
                .map(|(k, s)| {
                    (
                        end * (1.0 + 0.1 * (k as f64 + 1.0)),
                        s.rss_bytes as f64 / MIB,
                    )
                })
                .collect();
            Some((ai, pts))
        })
        .collect();
    let drain_labels: Vec<(f64, String)> = results
        .repetitions
        .iter()
        .filter(|r| r.trace == trace)
        .find_map(|r| r.memory.as_ref().filter(|m| !m.drain.is_empty()))
        .map(|m| {
            m.drain
                .iter()
                .enumerate()
                .map(|(k, s)| {
                    let t = if s.after_ms >= 1000 {
                        format!("{} s", s.after_ms / 1000)
                    } else {
                        format!("{} ms", s.after_ms)
                    };
                    (end * (1.0 + 0.1 * (k as f64 + 1.0)), t)
                })
                .collect()
        })
        .unwrap_or_default();
    let xmax = if drained.is_empty() { end } else { end * 1.38 };
    let ymax = lines
        .iter()
        .flat_map(|l| l.2.iter().map(|p| p.1))
        .chain(ideal.iter().map(|p| p.1))
        .chain(drained.iter().flat_map(|d| d.1.iter().map(|p| p.1)))
        .fold(1.0f64, f64::max);
    svg(|root| {
        let mut chart = frame(root, "RSS over the replay", 0f64..xmax, 0f64..ymax * 1.08)?;
        ops_by_mib(&mut chart, "resident memory (MiB)")?;
        allocator_lines(&mut chart, &lines)?;
        if !drained.is_empty() {
            let grey = RGBColor(150, 150, 150);
            t!(chart.draw_series(LineSeries::new(
                vec![(end, 0.0), (end, ymax * 1.08)],
                grey.stroke_width(1)
            )));
            t!(chart.draw_series(std::iter::once(
                EmptyElement::at((end, ymax * 1.065))
                    + Text::new("all freed:", (-62, 0), (FONT, 12))
            )));
            t!(chart.draw_series(drain_labels.iter().map(|(x, t)| {
                EmptyElement::at((*x, ymax * 1.065)) + Text::new(t.clone(), (-10, 0), (FONT, 12))
            })));
            for (ai, pts) in &drained {
                let c = PALETTE[ai % PALETTE.len()];
                t!(chart.draw_series(pts.iter().map(|&p| Circle::new(p, 4, c.filled()))));
            }
        }
        if !ideal.is_empty() {
            // Solid and thin: the live bytes change at every operation, and dashes over a
            // jagged line read as noise.
            let ideal = ideal.clone();
            labelled_line(
                &mut chart,
                ideal,
                BLACK.stroke_width(1),
                "ideal: baseline + live bytes",
            )?;
        }
        legend(&mut chart, SeriesLabelPosition::LowerRight)
    })
}

/// Throughput of every repetition (dots) and the median (bar), per allocator.
pub(crate) fn throughput_svg(results: &RunResults, trace: &str) -> String {
    let names: Vec<String> = results.allocators.iter().map(|a| a.name.clone()).collect();
    let reps: Vec<Vec<f64>> = names
        .iter()
        .map(|a| {
            results
                .repetitions
                .iter()
                .filter(|r| r.trace == trace && &r.allocator == a && r.failure.is_none())
                .filter_map(|r| r.throughput.as_ref().map(|t| t.mops_per_s))
                .collect()
        })
        .collect();
    let ymax = reps.iter().flatten().copied().fold(1.0f64, f64::max) * 1.12;
    let n = names.len().max(1);
    svg(|root| {
        let x = -0.5f64..(n as f64 - 0.5);
        let mut chart = frame(root, "Throughput per repetition", x, 0f64..ymax)?;
        let label = |v: &f64| {
            let i = v.round();
            if (v - i).abs() < 1e-6 && i >= 0.0 {
                names.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        };
        mesh(
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_labels(n)
                .x_label_formatter(&label)
                .y_desc("Mops/s (whole replay, no per-call timer)")
                .y_label_formatter(&|v| format!("{v:.0}")),
        )?;
        for (i, vals) in reps.iter().enumerate() {
            if vals.is_empty() {
                continue;
            }
            let c = PALETTE[i % PALETTE.len()];
            let m = vals.len() as f64;
            t!(chart.draw_series(vals.iter().enumerate().map(|(k, &v)| {
                let x = i as f64 + (k as f64 - (m - 1.0) / 2.0) * (0.3 / m.max(2.0));
                Circle::new((x, v), 4, c.mix(0.75).filled())
            })));
            let mut sorted = vals.clone();
            sorted.sort_by(|a, b| a.total_cmp(b));
            let med = crate::stats::median(&sorted);
            let x = i as f64;
            t!(chart.draw_series(std::iter::once(PathElement::new(
                vec![(x - 0.3, med), (x + 0.3, med)],
                c.stroke_width(3),
            ))));
            t!(chart.draw_series(std::iter::once(PathElement::new(
                vec![(x, sorted[0]), (x, sorted[sorted.len() - 1])],
                c.stroke_width(1),
            ))));
            t!(chart.draw_series(std::iter::once(
                EmptyElement::at((x, med)) + Text::new(format!("{med:.1}"), (14, -18), (FONT, 13))
            )));
        }
        Ok(())
    })
}

/// Operation kinds of `trace` that have per-call latency data, in [`OP_KINDS`] order.
pub fn plotted_kinds(results: &RunResults, trace: &str) -> Vec<&'static str> {
    OP_KINDS
        .iter()
        .copied()
        .filter(|op| {
            results
                .repetitions
                .iter()
                .any(|r| r.trace == trace && r.failure.is_none() && r.tail.contains_key(*op))
        })
        .collect()
}

/// How many plots [`render`] draws: per trace, throughput, RSS, one per plotted kind, and two
/// (heat map, bytes) per contender with an arena occupancy timeline.
pub fn expected_plots(results: &RunResults) -> usize {
    results
        .traces
        .iter()
        .map(|t| {
            let occupancy = results
                .allocators
                .iter()
                .filter(|a| {
                    results.repetitions.iter().any(|r| {
                        r.trace == t.name
                            && r.allocator == a.name
                            && r.failure.is_none()
                            && r.arena_occupancy.is_some()
                    })
                })
                .count();
            2 + plotted_kinds(results, &t.name).len() + 2 * occupancy
        })
        .sum()
}
