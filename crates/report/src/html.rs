//! `index.html`: one self-contained page per report, for people.
//!
//! Everything is inline: the CSS in a `<style>` element and every plot as an `<svg>` element
//! drawn with `plotters`' SVG backend, so the file opens from disk, from a CI artifact or from an
//! e-mail with no network access and no script. It shows, per trace:
//! - the summary table (the terminal table's figures, every operation kind);
//! - throughput with its spread: one dot per repetition, a bar at the median;
//! - RSS over the replay, one line per allocator, beside the ideal (the trace's live bytes on
//!   top of the harness's baseline), and after its end the RSS once everything was freed, at
//!   0 ms, 100 ms and 1 s (three marks per allocator, where sampled);
//! - per operation kind, the per-call latency percentile curve of each allocator on log-log
//!   axes (HdrHistogram's classic plot), with the timer's noise level dashed.
//!
//! The plotting helpers ([`page`], [`pareto_svg`], [`esc`]) are public so other pages (sweeps)
//! look the same. Like every writer here, this reads [`RunResults`] and never measures.

use crate::hist::{merge, quantile_ns};
use crate::model::{RunResults, OP_KINDS};
use crate::summary::{summarize, SummaryRow};
use crate::table::{bytes, footprint, FOOTPRINT_NOTE};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::fmt::Write as _;

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

const FONT: &str = "sans-serif";

/// `s` escaped for HTML text and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// A whole HTML page around `body`, with the shared inline style. No external resource.
pub fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{}</title>\n\
         <style>\n{STYLE}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n",
        esc(title)
    )
}

const STYLE: &str = "body { font-family: system-ui, sans-serif; margin: 24px auto; max-width: 1380px; \
color: #222; line-height: 1.4; padding: 0 12px; }
h1 { margin-bottom: 4px; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 4px; margin-top: 36px; }
.meta { color: #555; margin-top: 0; }
table { border-collapse: collapse; margin: 12px 0; font-size: 13px; }
th, td { border: 1px solid #ddd; padding: 3px 6px; text-align: right; white-space: nowrap; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
td.l, th.l { text-align: left; }
tr.front td { background: #fff3e6; }
.plots { display: flex; flex-wrap: wrap; gap: 16px; }
figure { margin: 0; border: 1px solid #e4e4e4; padding: 6px; background: #fff; }
figcaption { font-size: 13px; color: #555; max-width: 640px; }
.scroll { overflow-x: auto; max-width: 100%; }
.fail { color: #b00020; }
details { margin: 12px 0; } dt { font-weight: 600; margin-top: 8px; } dd { margin-left: 16px; }
code { background: #f5f5f5; padding: 0 3px; }
";

/// Draws one SVG plot of [`PLOT_SIZE`]; a drawing error becomes a visible note instead.
fn svg(draw: impl FnOnce(&DrawingArea<SVGBackend, Shift>) -> Result<(), String>) -> String {
    let mut s = String::new();
    let res = {
        let root = SVGBackend::with_string(&mut s, PLOT_SIZE).into_drawing_area();
        root.fill(&WHITE)
            .map_err(|e| e.to_string())
            .and_then(|_| draw(&root))
            .and_then(|_| root.present().map_err(|e| e.to_string()))
    };
    match res {
        // Inline SVG in HTML needs no namespace declaration; dropping it keeps the page free of
        // any URL.
        Ok(()) => s.replacen(" xmlns=\"http://www.w3.org/2000/svg\"", "", 1),
        Err(e) => format!("<p class=\"fail\">plot failed: {}</p>", esc(&e)),
    }
}

macro_rules! t {
    ($e:expr) => {
        $e.map_err(|e| e.to_string())?
    };
}

/// Nanoseconds, short: `850 ns`, `12 µs`, `3.1 ms`.
pub fn ns_label(v: f64) -> String {
    let (v, unit) = if v >= 1e6 {
        (v / 1e6, "ms")
    } else if v >= 1e3 {
        (v / 1e3, "µs")
    } else {
        (v, "ns")
    };
    if v >= 10.0 || v.fract() == 0.0 {
        format!("{v:.0} {unit}")
    } else {
        format!("{v:.1} {unit}")
    }
}

const MIB: f64 = 1024.0 * 1024.0;

/// An axis tick already in MiB: no more decimals than it needs.
pub fn mib_tick(m: f64) -> String {
    let s = format!("{m:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_string()
}

/// Bytes as MiB with sensible precision, for axes.
pub fn mib_label(v: f64) -> String {
    let m = v / (1024.0 * 1024.0);
    if m >= 100.0 {
        format!("{m:.0} MiB")
    } else if m >= 1.0 {
        format!("{m:.1} MiB")
    } else {
        format!("{m:.2} MiB")
    }
}

fn pct_label(x: f64) -> String {
    // x = -log10(1 - q): 0 -> 0%, 1 -> 90%, 2 -> 99%, 3 -> 99.9%, ...
    if (x - x.round()).abs() > 1e-9 || x < 0.0 {
        return String::new();
    }
    match x.round() as i32 {
        0 => "0%".into(),
        1 => "90%".into(),
        k => format!("99.{}%", "9".repeat(k as usize - 2)),
    }
    .replace("99.%", "99%")
}

/// A scatter plot of sweep points with the Pareto front highlighted, joined, and numbered
/// 1, 2, ... in the order of `front` (the numbers key a table beside the plot).
pub fn pareto_svg(
    title: &str,
    x_desc: &str,
    y_desc: &str,
    x_fmt: &dyn Fn(f64) -> String,
    y_fmt: &dyn Fn(f64) -> String,
    points: &[(f64, f64)],
    front: &[usize],
) -> String {
    svg(|root| {
        let finite: Vec<(f64, f64)> = points
            .iter()
            .copied()
            .filter(|p| p.0.is_finite() && p.1.is_finite())
            .collect();
        let (x0, x1) = range(finite.iter().map(|p| p.0), false);
        let (y0, y1) = range(finite.iter().map(|p| p.1), true);
        let mut chart = t!(ChartBuilder::on(root)
            .caption(title, (FONT, 18))
            .margin(12)
            .margin_right(28)
            .x_label_area_size(44)
            .y_label_area_size(72)
            .build_cartesian_2d(x0..x1, y0..y1));
        t!(chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc(y_desc)
            .x_label_formatter(&|v| x_fmt(*v))
            .y_label_formatter(&|v| y_fmt(*v))
            .label_style((FONT, 13))
            .axis_desc_style((FONT, 14))
            .light_line_style(RGBColor(240, 240, 240))
            .draw());
        let grey = RGBColor(150, 150, 150);
        t!(chart
            .draw_series(
                finite
                    .iter()
                    .map(|&p| Circle::new(p, 4, grey.mix(0.6).filled()))
            )
            .map(
                |s| s.label("configuration").legend(move |(x, y)| Circle::new(
                    (x + 10, y),
                    4,
                    grey.filled()
                ))
            ));
        let red = PALETTE[3];
        let fp: Vec<(f64, f64)> = front.iter().map(|&i| points[i]).collect();
        t!(chart
            .draw_series(LineSeries::new(fp.clone(), red.stroke_width(2)))
            .map(|s| s
                .label("Pareto front")
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], red))));
        t!(chart.draw_series(fp.iter().map(|&p| Circle::new(p, 5, red.filled()))));
        // Coincident points share one label: "3-7".
        let mut labels: Vec<((f64, f64), String)> = Vec::new();
        let mut k = 0;
        while k < fp.len() {
            let mut end = k;
            while end + 1 < fp.len() && fp[end + 1] == fp[k] {
                end += 1;
            }
            let text = if end == k {
                format!("{}", k + 1)
            } else {
                format!("{}-{}", k + 1, end + 1)
            };
            labels.push((fp[k], text));
            k = end + 1;
        }
        t!(chart.draw_series(
            labels
                .into_iter()
                .map(|(p, text)| { EmptyElement::at(p) + Text::new(text, (7, -18), (FONT, 14)) })
        ));
        t!(chart
            .configure_series_labels()
            .label_font((FONT, 14))
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(200, 200, 200))
            .draw());
        Ok(())
    })
}

/// A plotting range covering `vals` with a margin; from 0 when `from_zero`.
fn range(vals: impl Iterator<Item = f64>, from_zero: bool) -> (f64, f64) {
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

/// Per-call latency percentile curves of one operation kind, one line per allocator.
fn latency_svg(results: &RunResults, rows: &[SummaryRow], trace: &str, op: &str) -> String {
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
        let mut chart = t!(ChartBuilder::on(root)
            .caption(format!("{op}: per-call latency percentiles"), (FONT, 18))
            .margin(12)
            .margin_right(28)
            .x_label_area_size(44)
            .y_label_area_size(72)
            .build_cartesian_2d(0f64..xmax, (1f64..ymax * 2.0).log_scale()));
        t!(chart
            .configure_mesh()
            .x_desc("percentile")
            .y_desc("latency (timer floor subtracted)")
            .x_labels(xmax as usize + 1)
            .x_label_formatter(&|v| pct_label(*v))
            .y_label_formatter(&|v| ns_label(*v))
            .label_style((FONT, 13))
            .axis_desc_style((FONT, 14))
            .light_line_style(RGBColor(240, 240, 240))
            .draw());
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
        for (ai, name, pts) in &curves {
            let c = PALETTE[ai % PALETTE.len()];
            t!(chart
                .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))
                .map(|s| s
                    .label(name.as_str())
                    .legend(move |(x, y)| PathElement::new(
                        vec![(x, y), (x + 20, y)],
                        c.stroke_width(2)
                    ))));
        }
        t!(chart
            .configure_series_labels()
            .label_font((FONT, 14))
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(200, 200, 200))
            .draw());
        Ok(())
    })
}

/// RSS over the replay (first successful repetition of each allocator) and the ideal.
fn rss_svg(results: &RunResults, trace: &str) -> String {
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
        let mut chart = t!(ChartBuilder::on(root)
            .caption("RSS over the replay", (FONT, 18))
            .margin(12)
            .margin_right(28)
            .x_label_area_size(44)
            .y_label_area_size(72)
            .build_cartesian_2d(0f64..xmax, 0f64..ymax * 1.08));
        t!(chart
            .configure_mesh()
            .x_desc("operations done")
            .y_desc("resident memory (MiB)")
            .x_label_formatter(&|v| ops_label(*v))
            .y_label_formatter(&|v| mib_tick(*v))
            .label_style((FONT, 13))
            .axis_desc_style((FONT, 14))
            .light_line_style(RGBColor(240, 240, 240))
            .draw());
        for (ai, name, pts) in &lines {
            let c = PALETTE[ai % PALETTE.len()];
            t!(chart
                .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))
                .map(|s| s
                    .label(name.as_str())
                    .legend(move |(x, y)| PathElement::new(
                        vec![(x, y), (x + 20, y)],
                        c.stroke_width(2)
                    ))));
        }
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
            t!(chart
                .draw_series(LineSeries::new(ideal.clone(), BLACK.stroke_width(1)))
                .map(
                    |s| s.label("ideal: baseline + live bytes").legend(|(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], BLACK.stroke_width(1))
                    })
                ));
        }
        t!(chart
            .configure_series_labels()
            .label_font((FONT, 14))
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(200, 200, 200))
            .draw());
        Ok(())
    })
}

fn ops_label(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.0}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

/// Throughput of every repetition (dots) and the median (bar), per allocator.
fn throughput_svg(results: &RunResults, trace: &str) -> String {
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
        let mut chart = t!(ChartBuilder::on(root)
            .caption("Throughput per repetition", (FONT, 18))
            .margin(12)
            .margin_right(28)
            .x_label_area_size(44)
            .y_label_area_size(72)
            .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), 0f64..ymax));
        let label = |v: &f64| {
            let i = v.round();
            if (v - i).abs() < 1e-6 && i >= 0.0 {
                names.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        };
        t!(chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(n)
            .x_label_formatter(&label)
            .y_desc("Mops/s (whole replay, no per-call timer)")
            .y_label_formatter(&|v| format!("{v:.0}"))
            .label_style((FONT, 13))
            .axis_desc_style((FONT, 14))
            .light_line_style(RGBColor(240, 240, 240))
            .draw());
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
            let med = if sorted.len() % 2 == 1 {
                sorted[sorted.len() / 2]
            } else {
                (sorted[sorted.len() / 2 - 1] + sorted[sorted.len() / 2]) / 2.0
            };
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

/// How many plots [`render`] draws: per trace, throughput, RSS and one per plotted kind.
pub fn expected_plots(results: &RunResults) -> usize {
    results
        .traces
        .iter()
        .map(|t| 2 + plotted_kinds(results, &t.name).len())
        .sum()
}

/// `YYYY-MM-DD HH:MM UTC` from seconds since the epoch (civil-from-days, proleptic Gregorian).
pub fn utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        (rem % 3600) / 60
    )
}

/// A per-call figure, or `<N` below the timer's noise (as the terminal table prints it).
pub fn tail_cell(v: f64, noise: f64) -> String {
    if v <= noise {
        format!("&lt;{}", crate::table::ns_text(noise.max(0.1)))
    } else {
        crate::table::ns_text(v)
    }
}

fn summary_table(results: &RunResults, rows: &[SummaryRow], trace: &str) -> String {
    let kinds: Vec<&str> = OP_KINDS
        .iter()
        .copied()
        .filter(|op| rows.iter().any(|r| r.trace == trace && r.op == *op))
        .collect();
    let crate::table::Shown { warm, drained, .. } = crate::table::Shown::of(results, rows, trace);
    let mut s = String::from("<table>\n<tr><th rowspan=\"2\">allocator</th><th rowspan=\"2\">Mops/s (min-max)</th><th rowspan=\"2\">ns/op</th>");
    if warm {
        s.push_str("<th rowspan=\"2\">warm ns/op</th>");
    }
    for k in &kinds {
        let _ = write!(s, "<th colspan=\"3\">{k} (ns)</th>");
    }
    s.push_str("<th rowspan=\"2\">peak RSS</th><th rowspan=\"2\">above base</th><th rowspan=\"2\">footprint</th>");
    if drained {
        s.push_str("<th rowspan=\"2\">RSS freed 0ms / 100ms / 1s</th>");
    }
    s.push_str("<th rowspan=\"2\">repetitions</th></tr>\n<tr>");
    for _ in &kinds {
        s.push_str("<th>p50</th><th>p99</th><th>p99.9</th>");
    }
    s.push_str("</tr>\n");
    for a in &results.allocators {
        let mine: Vec<&SummaryRow> = rows
            .iter()
            .filter(|r| r.trace == trace && r.allocator == a.name)
            .collect();
        let Some(any) = mine.first() else { continue };
        if any.repetitions_ok == 0 {
            let why = results
                .repetitions
                .iter()
                .find(|r| r.trace == trace && r.allocator == a.name)
                .and_then(|r| r.failure.clone())
                .unwrap_or_default();
            let _ = writeln!(
                s,
                "<tr><td>{}</td><td class=\"l fail\" colspan=\"{}\">FAILED: {}</td></tr>",
                esc(&a.name),
                6 + 3 * kinds.len() + warm as usize + drained as usize,
                esc(&why)
            );
            continue;
        }
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{:.1} ({:.1}-{:.1})</td><td>{:.2}</td>",
            esc(&a.name),
            any.throughput_mops,
            any.throughput_min_mops,
            any.throughput_max_mops,
            any.ns_per_op
        );
        if warm {
            let _ = write!(s, "<td>{}</td>", crate::table::warm_ns(any));
        }
        for k in &kinds {
            match mine.iter().find(|r| r.op == *k) {
                Some(r) => {
                    let approx = if r.batched_mean_run < 4.0 { "~" } else { "" };
                    let _ = write!(
                        s,
                        "<td>{approx}{}</td><td>{}</td><td>{}</td>",
                        crate::table::ns_text(r.p50_ns),
                        tail_cell(r.p99_ns, r.timer_noise_ns),
                        tail_cell(r.p999_ns, r.timer_noise_ns)
                    );
                }
                None => s.push_str("<td>-</td><td>-</td><td>-</td>"),
            }
        }
        let drain = if drained {
            let b = |v: Option<u64>| v.map(bytes).unwrap_or_else(|| "-".into());
            format!(
                "<td>{} / {} / {}</td>",
                b(any.rss_after_drain_0ms_bytes),
                b(any.rss_after_drain_100ms_bytes),
                b(any.rss_after_drain_1s_bytes)
            )
        } else {
            String::new()
        };
        let _ = writeln!(
            s,
            "<td>{}</td><td>{}</td><td>{}</td>{drain}<td>{} ok{}</td></tr>",
            bytes(any.peak_rss_bytes),
            bytes(any.peak_rss_above_baseline_bytes),
            footprint(any.footprint_bytes),
            any.repetitions_ok,
            if any.repetitions_failed > 0 {
                format!(
                    ", <span class=\"fail\">{} failed</span>",
                    any.repetitions_failed
                )
            } else {
                String::new()
            }
        );
    }
    s.push_str("</table>\n");
    s
}

/// The whole `index.html` for `results`.
pub fn render(results: &RunResults) -> String {
    let rows = summarize(results);
    let mut b = String::new();
    let m = &results.machine;
    let _ = writeln!(b, "<h1>Mallard report</h1>");
    let _ = writeln!(
        b,
        "<p class=\"meta\">{} {} &middot; started {} &middot; {} ({} logical CPUs, {} {}) &middot; timer {}</p>",
        esc(&results.tool.name),
        esc(&results.tool.version),
        utc(results.started_unix),
        esc(&m.cpu_model),
        m.logical_cpus,
        esc(&m.os),
        esc(&m.kernel),
        esc(&m.timer)
    );
    b.push_str("<h2>Traces</h2>\n<table>\n<tr><th>trace</th><th>events</th><th>malloc</th><th>calloc</th><th>aligned</th><th>realloc</th><th>free</th><th>peak live</th><th>peak live objects</th><th class=\"l\">SHA-256</th></tr>\n");
    for t in &results.traces {
        let c = &t.counts;
        let _ = writeln!(
            b,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"l\"><code>{}</code></td></tr>",
            esc(&t.name),
            t.events,
            c.malloc,
            c.calloc,
            c.aligned,
            c.realloc,
            c.free,
            bytes(t.peak_live_bytes),
            t.peak_live_objects,
            esc(&t.sha256.chars().take(16).collect::<String>())
        );
    }
    b.push_str("</table>\n<h2>Allocators</h2>\n<table>\n<tr><th>allocator</th><th class=\"l\">version</th><th class=\"l\">configuration</th></tr>\n");
    for (i, a) in results.allocators.iter().enumerate() {
        let c = PALETTE[i % PALETTE.len()];
        let _ = writeln!(
            b,
            "<tr><td><span style=\"color: rgb({},{},{})\">&#9632;</span> {}</td><td class=\"l\">{}</td><td class=\"l\">{}</td></tr>",
            c.0,
            c.1,
            c.2,
            esc(&a.name),
            esc(&a.version),
            esc(&a.config)
        );
    }
    b.push_str("</table>\n");
    for t in &results.traces {
        let _ = writeln!(b, "<h2>{}</h2>", esc(&t.name));
        b.push_str("<div class=\"scroll\">\n");
        b.push_str(&summary_table(results, &rows, &t.name));
        b.push_str("</div>\n");
        let _ = writeln!(
            b,
            "<p class=\"meta\">p50: runs of same-kind calls timed together (\"~\": runs average under 4 calls, \
             coarse). p99, p99.9: each call timed alone, timer floor subtracted (\"&lt;N\": below the timer's \
             noise). Mops/s: median over repetitions. Peak RSS includes the harness's own baseline; above base \
             is the peak minus it. {}{}</p>",
            esc(FOOTPRINT_NOTE),
            esc(&crate::table::legend_extra(
                &rows.iter().filter(|r| r.trace == t.name).cloned().collect::<Vec<_>>()
            ))
        );
        b.push_str("<div class=\"plots\">\n");
        let fig = |svg: String, caption: &str| {
            format!("<figure>{svg}<figcaption>{caption}</figcaption></figure>\n")
        };
        b.push_str(&fig(
            throughput_svg(results, &t.name),
            "One dot per repetition (each in a fresh process); the bar is the median, the thin line the \
             range. Higher is better.",
        ));
        b.push_str(&fig(
            rss_svg(results, &t.name),
            "Resident memory of each allocator's worker during the batched pass (first successful \
             repetition), and the ideal: the bytes the trace has live, on top of the median harness baseline. \
             Right of the grey line, where sampled: RSS after the last iteration freed everything, at 0 ms, \
             100 ms and 1 s (first repetition's throughput pass).",
        ));
        for op in plotted_kinds(results, &t.name) {
            b.push_str(&fig(
                latency_svg(results, &rows, &t.name, op),
                &format!(
                    "Per-call {op} latency, every repetition merged, log-log: the right end is the rare slow \
                     path (mmap, page faults). Values under 1 ns are drawn at 1 ns; under the dashed line they \
                     cannot be told from timer noise."
                ),
            ));
        }
        b.push_str("</div>\n");
    }
    let failures: Vec<_> = results
        .repetitions
        .iter()
        .filter(|r| r.failure.is_some())
        .collect();
    if !failures.is_empty() {
        b.push_str("<h2>Failures</h2>\n<ul>\n");
        for r in failures {
            let _ = writeln!(
                b,
                "<li class=\"fail\">{} on {} repetition {}: {}</li>",
                esc(&r.allocator),
                esc(&r.trace),
                r.index + 1,
                esc(r.failure.as_deref().unwrap_or(""))
            );
        }
        b.push_str("</ul>\n");
    }
    b.push_str(
        "<h2>Method</h2>\n<details open><summary>How each figure was measured</summary>\n<dl>\n",
    );
    for (k, v) in &results.methods {
        let _ = writeln!(b, "<dt>{}</dt><dd>{}</dd>", esc(k), esc(v));
    }
    b.push_str("</dl>\n</details>\n<details><summary>Settings</summary>\n<table>\n");
    for (k, v) in &results.settings {
        let _ = writeln!(
            b,
            "<tr><td>{}</td><td class=\"l\">{}</td></tr>",
            esc(k),
            esc(v)
        );
    }
    b.push_str("</table>\n</details>\n");
    page("Mallard report", &b)
}

/// The test sample, with or without warm iterations and memory after the work.
#[cfg(test)]
pub(crate) fn sample_for_tests(warm: bool) -> RunResults {
    if warm {
        tests::sample_warm()
    } else {
        tests::sample()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::hist;
    use crate::model::*;

    /// Two allocators, two repetitions, malloc and free with a spread of latencies.
    pub fn sample() -> RunResults {
        let mut r = RunResults {
            schema: SCHEMA_VERSION,
            ..Default::default()
        };
        r.tool.name = "mallard".into();
        r.started_unix = 1_700_000_000;
        r.traces.push(TraceInfo {
            name: "t<1>".into(),
            counts: EventCounts {
                malloc: 1000,
                free: 1000,
                ..Default::default()
            },
            events: 2000,
            peak_live_bytes: 1 << 20,
            ..Default::default()
        });
        for a in ["arena", "glibc"] {
            r.allocators.push(AllocatorInfo {
                name: a.into(),
                ..Default::default()
            });
        }
        for (ai, a) in ["arena", "glibc"].iter().enumerate() {
            for rep in 0..2u32 {
                let mut h = hist::new_histogram();
                for v in 1..=1000u64 {
                    h.record(v * 1000 * (ai as u64 + 1)).unwrap();
                }
                let lat = LatencyFigures {
                    count: 1000,
                    mean_ns: 500.0,
                    mean_run: 8.0,
                    hist: hist::HistData::from_histogram(&h),
                    ..Default::default()
                };
                let mut rp = Repetition {
                    trace: "t<1>".into(),
                    allocator: a.to_string(),
                    index: rep,
                    ..Default::default()
                };
                rp.throughput = Some(Throughput {
                    ops: 2000,
                    elapsed_ns: 40_000.0,
                    ns_per_op: 20.0,
                    mops_per_s: 50.0 + rep as f64 + ai as f64 * 10.0,
                    ..Default::default()
                });
                rp.memory = Some(Memory {
                    baseline_rss: 4 << 20,
                    peak_rss: 6 << 20,
                    ..Default::default()
                });
                for op in ["malloc", "free"] {
                    rp.batched.insert(op.into(), lat.clone());
                    rp.tail.insert(op.into(), lat.clone());
                }
                for k in 0..10u64 {
                    rp.rss_timeline.push(RssSample {
                        ops_done: k * 200,
                        rss_bytes: (4 << 20) + k * 100_000 * (ai as u64 + 1),
                        live_bytes: k * 90_000,
                        footprint_bytes: None,
                    });
                }
                r.repetitions.push(rp);
            }
        }
        r.methods
            .insert("throughput".into(), "timed <whole> replay".into());
        r
    }

    /// [`sample`] replayed with `--iterations 3`: per-iteration ns/op (cold 20, warm 12 and
    /// 14 + the repetition), warm latency at half the cold, and memory after the work in the
    /// first repetition.
    pub fn sample_warm() -> RunResults {
        let mut r = sample();
        r.settings.insert("iterations".into(), "3".into());
        for rp in &mut r.repetitions {
            let t = rp.throughput.as_mut().unwrap();
            t.iterations_ns_per_op = vec![20.0, 12.0, 14.0 + rp.index as f64];
            t.warm_ns_per_op = warm_median(&t.iterations_ns_per_op);
            for (cold, warm) in [
                (&rp.batched, &mut rp.batched_warm),
                (&rp.tail, &mut rp.tail_warm),
            ] {
                for (op, f) in cold {
                    let mut h = hist::new_histogram();
                    for v in 1..=1000u64 {
                        h.record(v * 500).unwrap();
                    }
                    let mut w = f.clone();
                    w.mean_ns = f.mean_ns / 2.0;
                    w.hist = hist::HistData::from_histogram(&h);
                    warm.insert(op.clone(), w);
                }
            }
            if rp.index == 0 {
                rp.memory.as_mut().unwrap().drain = DRAIN_AFTER_MS
                    .iter()
                    .enumerate()
                    .map(|(k, &ms)| DrainSample {
                        after_ms: ms,
                        rss_bytes: (5 << 20) - k as u64 * (256 << 10),
                        footprint_bytes: Some((1 << 20) >> k),
                    })
                    .collect();
            }
        }
        r
    }

    #[test]
    fn warm_and_drain_figures_are_on_the_page() {
        let html = render(&sample_warm());
        assert!(html.contains("<th rowspan=\"2\">warm ns/op</th>"), "{html}");
        assert!(html.contains("<td>13.25 (13.0-13.5)</td>"), "{html}");
        assert!(
            html.contains("<td>5.0 MiB / 4.8 MiB / 4.5 MiB</td>"),
            "{html}"
        );
        assert!(
            html.contains("all freed:") && html.contains("\n1 s\n"),
            "{html}"
        );
        let cold = render(&sample());
        assert!(!cold.contains("warm ns/op") && !cold.contains("all freed:"));
        assert!(cold.contains("<th rowspan=\"2\">above base</th>"));
    }

    #[test]
    fn one_svg_per_plot_and_no_url() {
        let r = sample();
        let html = render(&r);
        assert_eq!(expected_plots(&r), 4); // throughput, RSS, malloc, free
        assert_eq!(html.matches("<svg").count(), 4, "{html}");
        assert_eq!(html.matches("</svg>").count(), 4);
        assert!(!html.contains("plot failed"), "{html}");
        assert!(!html.contains("http"), "a URL in the page");
        for attr in ["src=", "href=", "@import", "url("] {
            assert!(!html.contains(attr), "{attr} in the page");
        }
        // Names are escaped, the legend names every allocator, axes are labelled.
        assert!(html.contains("t&lt;1&gt;") && !html.contains("t<1>"));
        assert!(html.contains(">arena<") && html.contains(">glibc<"));
        assert!(html.contains("percentile") && html.contains("99.9%"));
        assert!(html.contains("timed &lt;whole&gt; replay"));
        assert!(html.contains("2023-11-14 22:13 UTC"), "{html}");
    }

    #[test]
    fn a_failed_allocator_is_shown_and_not_plotted() {
        let mut r = sample();
        for rep in r.repetitions.iter_mut().filter(|x| x.allocator == "glibc") {
            rep.failure = Some("worker killed by signal 9".into());
        }
        let html = render(&r);
        assert!(html.contains("FAILED: worker killed by signal 9"));
        assert_eq!(html.matches("<svg").count(), expected_plots(&r));
    }

    #[test]
    fn labels() {
        assert_eq!(pct_label(0.0), "0%");
        assert_eq!(pct_label(1.0), "90%");
        assert_eq!(pct_label(2.0), "99%");
        assert_eq!(pct_label(3.0), "99.9%");
        assert_eq!(pct_label(5.0), "99.999%");
        assert_eq!(pct_label(2.5), "");
        assert_eq!(ns_label(850.0), "850 ns");
        assert_eq!(ns_label(12_000.0), "12 µs");
        assert_eq!(ns_label(1.5), "1.5 ns");
        assert_eq!(mib_label(3.0 * 1048576.0), "3.0 MiB");
        assert_eq!(mib_tick(2.5), "2.5");
        assert_eq!(mib_tick(20.0), "20");
        assert_eq!(mib_tick(0.125), "0.125");
        assert_eq!(utc(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00 UTC");
    }
}
