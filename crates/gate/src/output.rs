//! The gate's writers, one function per format, all reading a [`GateReport`]:
//!
//! | file | format | for |
//! |---|---|---|
//! | `summary.md` | Markdown table: metric, baseline, candidate, change with interval, limit, verdict | a CI job summary or a pull-request comment |
//! | `verdict.json` | the [`GateReport`] itself | scripts |
//! | `bencher.json` | Bencher Metric Format: benchmark `TRACE/ALLOCATOR`, one measure per metric | `bencher run --adapter json` |
//! | `benchmark-action.json` | github-action-benchmark `customSmallerIsBetter` | `benchmark-action/github-action-benchmark` |
//! | `junit.xml` | JUnit XML, one test case per metric | CI test reporters |
//!
//! Each file is a [`Writer`] (mallard-report's one trait for every output) over the gate's own
//! view, the [`GateReport`] (and the [`CalibrationReport`] for `--calibrate`): the same idea as
//! the run report's writers, with the view the gate has. [`GATE_DIR`] and [`CALIBRATION_DIR`]
//! list them; adding a format is one function here and one line in the list.
//!
//! The dashboard formats carry the *candidate's* figures (median, with min-max), since a
//! dashboard tracks the build under test. [`write_dir`] writes every file through
//! `mallard_io::atomic::StagedDir` (marker `kind: "gate"`): a staging directory swapped into
//! place when complete, so a failed write leaves no half-written output, replacing only an empty
//! directory or one Mallard wrote.

use crate::judge::{MetricResult, Overall, Verdict};
use crate::report::{CalibrationReport, GateReport, Mode};
use mallard_io::atomic::{OutputError, StagedDir};
use mallard_report::format::{esc as xml_escape, thousands};
use mallard_report::{Doc, ReportError, Writer};
use std::fmt::Write as _;
use std::path::Path;

/// A value in its unit, for people.
pub fn fmt_value(v: f64, unit: &str) -> String {
    if !v.is_finite() {
        return "-".into();
    }
    match unit {
        "bytes" => {
            let a = v.abs();
            if a >= 1024.0 * 1024.0 * 1024.0 {
                format!("{:.2} GiB", v / (1024.0 * 1024.0 * 1024.0))
            } else if a >= 1024.0 * 1024.0 {
                format!("{:.2} MiB", v / (1024.0 * 1024.0))
            } else if a >= 1024.0 {
                format!("{:.1} KiB", v / 1024.0)
            } else {
                format!("{v:.0} B")
            }
        }
        "ns" | "ns/op" => {
            let s = if v >= 100.0 {
                format!("{v:.0}")
            } else if v >= 10.0 {
                format!("{v:.1}")
            } else {
                format!("{v:.2}")
            };
            format!("{s} {unit}")
        }
        "instructions" => format!("{} instr", thousands(v.round() as u64)),
        _ => {
            if v.fract() == 0.0 {
                thousands(v as u64)
            } else {
                format!("{v:.3}")
            }
        }
    }
}

/// A ratio as a signed percentage change.
pub fn fmt_change(r: Option<f64>) -> String {
    match r {
        Some(r) if r.is_finite() => format!("{:+.1}%", (r - 1.0) * 100.0),
        _ => "n/a".into(),
    }
}

fn verdict_cell(m: &MetricResult) -> String {
    let v = match m.verdict {
        Verdict::Pass => "✅ pass",
        Verdict::Fail => "❌ fail",
        Verdict::Inconclusive => "⚠️ inconclusive",
    };
    if m.required {
        v.to_string()
    } else {
        format!("{v} (advisory)")
    }
}

fn severity(m: &MetricResult) -> u8 {
    match (m.verdict, m.required) {
        (Verdict::Fail, true) => 0,
        (Verdict::Inconclusive, true) => 1,
        (Verdict::Fail, false) => 2,
        (Verdict::Inconclusive, false) => 3,
        (Verdict::Pass, true) => 4,
        (Verdict::Pass, false) => 5,
    }
}

fn md_escape(s: &str) -> String {
    s.replace('|', "\\|")
}

/// A change and its interval, `+3.1% (+1.0% … +5.2%)`; `None` without both bounds.
fn change_in(ratio: Option<f64>, low: Option<f64>, high: Option<f64>) -> Option<String> {
    let (lo, hi) = low.zip(high)?;
    Some(format!(
        "{} ({} … {})",
        fmt_change(ratio),
        fmt_change(Some(lo)),
        fmt_change(Some(hi))
    ))
}

fn interval(m: &MetricResult) -> String {
    match m.method {
        crate::judge::Method::Direct => format!("{} (exact)", fmt_change(m.ratio)),
        crate::judge::Method::RankTest | crate::judge::Method::PairedRankTest => {
            change_in(m.ratio, m.ratio_low, m.ratio_high)
                .unwrap_or_else(|| format!("{} (no interval)", fmt_change(m.ratio)))
        }
    }
}

/// The Markdown summary.
pub fn markdown(r: &GateReport) -> String {
    let mut s = String::new();
    let word = match r.verdict {
        Overall::Pass => "PASS",
        Overall::Fail => "FAIL",
        Overall::Inconclusive => "INCONCLUSIVE",
    };
    let _ = writeln!(s, "## Mallard gate: {word}\n");
    let _ = writeln!(s, "{}\n", md_escape(&r.headline));
    let how = match r.mode {
        Mode::SideBySide => "in back-to-back pairs (ABBA order) of fresh processes on this machine",
        Mode::Stored => "from two stored result sets",
        Mode::Calibration => "baseline against itself (A/A)",
    };
    let _ = writeln!(
        s,
        "- baseline: `{}`\n- candidate: `{}`\n- {} repetitions per side, {how}; {} look(s)\n- threshold {:.1}% (per metric: see *limit*), {}% intervals, {} correction over {} required and {} advisory tested metrics (two families), alpha {} (exit code {})",
        r.baseline,
        r.candidate,
        r.repetitions,
        r.looks,
        r.settings.threshold * 100.0,
        fmt_pct_level(r.settings.confidence),
        r.settings.correction,
        r.metrics
            .iter()
            .filter(|m| m.p_value.is_some() && m.required)
            .count(),
        r.metrics
            .iter()
            .filter(|m| m.p_value.is_some() && !m.required)
            .count(),
        r.settings.alpha,
        r.exit_code
    );
    for n in &r.notes {
        let _ = writeln!(s, "- **note:** {}", md_escape(n));
    }
    let _ = writeln!(
        s,
        "\n| metric | baseline | candidate | change (interval) | limit | verdict |\n|---|---:|---:|---|---:|---|"
    );
    let mut rows: Vec<&MetricResult> = r.metrics.iter().collect();
    rows.sort_by(|a, b| severity(a).cmp(&severity(b)).then(a.id.cmp(&b.id)));
    for m in rows {
        let _ = writeln!(
            s,
            "| `{}` | {} | {} | {} | +{:.1}% | {} |",
            m.id,
            fmt_value(m.baseline.median, &m.unit),
            fmt_value(m.candidate.median, &m.unit),
            interval(m),
            (m.limit - 1.0) * 100.0,
            verdict_cell(m)
        );
    }
    let explain: Vec<&MetricResult> = r
        .metrics
        .iter()
        .filter(|m| m.verdict != Verdict::Pass)
        .collect();
    if !explain.is_empty() {
        let _ = writeln!(s, "\n<details><summary>why</summary>\n");
        for m in explain {
            let _ = writeln!(s, "- `{}`: {}", m.id, md_escape(&m.reason));
        }
        let _ = writeln!(s, "\n</details>");
    }
    s
}

fn fmt_pct_level(c: f64) -> String {
    let p = c * 100.0;
    if (p - p.round()).abs() < 1e-9 {
        format!("{p:.0}")
    } else {
        format!("{p:.2}")
    }
}

/// The JSON verdict (the report itself).
pub fn verdict_json(r: &GateReport) -> String {
    serde_json::to_string_pretty(r).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

/// Bencher's measure slug for a metric.
pub fn bencher_measure(metric: &str, unit: &str) -> String {
    if metric == "time" {
        return "latency".into(); // Bencher's built-in measure, nanoseconds
    }
    let slug: String = metric
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    match unit {
        "ns" => format!("{slug}-ns"),
        "bytes" if !slug.ends_with("bytes") => format!("{slug}-bytes"),
        _ => slug,
    }
}

/// Bencher Metric Format: `{ "TRACE/ALLOCATOR": { MEASURE: {value, lower_value, upper_value} } }`.
pub fn bencher(r: &GateReport) -> serde_json::Value {
    let mut root = serde_json::Map::new();
    for m in &r.metrics {
        let bench = format!("{}/{}", m.trace, m.allocator);
        let entry = root
            .entry(bench)
            .or_insert_with(|| serde_json::Value::Object(Default::default()));
        if let serde_json::Value::Object(map) = entry {
            map.insert(
                bencher_measure(&m.metric, &m.unit),
                serde_json::json!({
                    "value": m.candidate.median,
                    "lower_value": m.candidate.min,
                    "upper_value": m.candidate.max,
                }),
            );
        }
    }
    serde_json::Value::Object(root)
}

/// github-action-benchmark `customSmallerIsBetter`: `[{name, unit, value, range, extra}]`.
pub fn benchmark_action(r: &GateReport) -> serde_json::Value {
    let v: Vec<serde_json::Value> = r
        .metrics
        .iter()
        .map(|m| {
            let half = (m.candidate.max - m.candidate.min) / 2.0;
            serde_json::json!({
                "name": m.id,
                "unit": m.unit,
                "value": m.candidate.median,
                "range": format!("± {}", trim_float(half)),
                "extra": format!(
                    "baseline {} | change {} | limit +{:.1}% | {} | n = {}+{}",
                    fmt_value(m.baseline.median, &m.unit),
                    interval(m),
                    (m.limit - 1.0) * 100.0,
                    m.verdict.as_str(),
                    m.baseline.n,
                    m.candidate.n
                ),
            })
        })
        .collect();
    serde_json::Value::Array(v)
}

fn trim_float(x: f64) -> String {
    if x.fract() == 0.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.3}")
    }
}

/// JUnit XML: one `<testsuite>` per trace x allocator, one `<testcase>` per metric. A required
/// failure is a `<failure>`; inconclusive and advisory failures are `<skipped>` with the reason.
pub fn junit(r: &GateReport) -> String {
    let mut groups: std::collections::BTreeMap<(String, String), Vec<&MetricResult>> =
        Default::default();
    for m in &r.metrics {
        groups
            .entry((m.trace.clone(), m.allocator.clone()))
            .or_default()
            .push(m);
    }
    let count = |v: &[&MetricResult]| {
        let f = v
            .iter()
            .filter(|m| m.required && m.verdict == Verdict::Fail)
            .count();
        let s = v
            .iter()
            .filter(|m| {
                m.verdict == Verdict::Inconclusive || (!m.required && m.verdict == Verdict::Fail)
            })
            .count();
        (f, s)
    };
    let all: Vec<&MetricResult> = r.metrics.iter().collect();
    let (f, sk) = count(&all);
    let mut x = String::new();
    let _ = writeln!(x, r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    let _ = writeln!(
        x,
        r#"<testsuites name="mallard gate" tests="{}" failures="{f}" errors="0" skipped="{sk}" time="{:.3}">"#,
        all.len(),
        r.elapsed_s
    );
    for ((trace, alloc), ms) in &groups {
        let (f, sk) = count(ms);
        let _ = writeln!(
            x,
            r#"  <testsuite name="{}" tests="{}" failures="{f}" errors="0" skipped="{sk}">"#,
            xml_escape(&format!("mallard gate {trace}/{alloc}")),
            ms.len()
        );
        for m in ms {
            let _ = write!(
                x,
                r#"    <testcase classname="{}" name="{}" time="0">"#,
                xml_escape(&format!("mallard.gate.{trace}.{alloc}")),
                xml_escape(&m.metric)
            );
            let detail = format!(
                "baseline {} (n={}), candidate {} (n={}), change {}, limit +{:.1}%: {}",
                fmt_value(m.baseline.median, &m.unit),
                m.baseline.n,
                fmt_value(m.candidate.median, &m.unit),
                m.candidate.n,
                interval(m),
                (m.limit - 1.0) * 100.0,
                m.reason
            );
            match (m.verdict, m.required) {
                (Verdict::Fail, true) => {
                    let _ = write!(
                        x,
                        "\n      <failure type=\"regression\" message=\"{}\">{}</failure>\n    ",
                        xml_escape(&format!("{} regressed {}", m.id, fmt_change(m.ratio))),
                        xml_escape(&detail)
                    );
                }
                (Verdict::Fail, false) => {
                    let _ = write!(
                        x,
                        "\n      <skipped message=\"{}\"/>\n    ",
                        xml_escape(&format!(
                            "advisory regression (does not fail the gate): {detail}"
                        ))
                    );
                }
                (Verdict::Inconclusive, _) => {
                    let _ = write!(
                        x,
                        "\n      <skipped message=\"{}\"/>\n    ",
                        xml_escape(&format!("inconclusive: {detail}"))
                    );
                }
                (Verdict::Pass, _) => {
                    let _ = write!(
                        x,
                        "\n      <system-out>{}</system-out>\n    ",
                        xml_escape(&detail)
                    );
                }
            }
            let _ = writeln!(x, "</testcase>");
        }
        let _ = writeln!(x, "  </testsuite>");
    }
    let _ = writeln!(x, "</testsuites>");
    x
}

/// The calibration summary in Markdown.
pub fn calibration_markdown(c: &CalibrationReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "## Mallard gate calibration (A/A): {}\n",
        if c.ok { "OK" } else { "TOO NOISY" }
    );
    let _ = writeln!(s, "{}\n", md_escape(&c.headline));
    let _ = writeln!(
        s,
        "- baseline against itself: `{}`\n- {} repetitions per side; detectable change for a budget of {} per side, caught with probability {:.0}%",
        c.baseline,
        c.repetitions,
        c.budget,
        c.settings.power * 100.0
    );
    for n in &c.notes {
        let _ = writeln!(s, "- **note:** {}", md_escape(n));
    }
    let _ = writeln!(
        s,
        "\n| metric | median | CV (robust) | CV | CV within pairs | A/A change (interval) | detectable | threshold | |\n|---|---:|---:|---:|---:|---|---:|---:|---|"
    );
    for r in &c.rows {
        let _ = writeln!(
            s,
            "| `{}`{} | {} | {:.2}% | {:.2}% | {} | {} | {} | {:.1}% | {} |",
            r.id,
            if r.required { "" } else { " (advisory)" },
            fmt_value(r.median, &r.unit),
            r.cv_robust * 100.0,
            r.cv * 100.0,
            r.cv_paired
                .map_or_else(|| "-".to_string(), |x| format!("{:.2}%", x * 100.0)),
            if r.exact {
                "exact".to_string()
            } else {
                change_in(r.aa_ratio, r.aa_low, r.aa_high).unwrap_or_else(|| fmt_change(r.aa_ratio))
            },
            if r.detectable.is_finite() {
                format!("{:.1}%", r.detectable * 100.0)
            } else {
                "-".into()
            },
            r.threshold * 100.0,
            if r.ok { "ok" } else { "too noisy" }
        );
    }
    s
}

/// A gate output as a [`Writer`] over the [`GateReport`]: a file name and its text.
pub struct GateFile(pub &'static str, pub fn(&GateReport) -> String);

/// A calibration output as a [`Writer`] over the [`CalibrationReport`].
pub struct CalibrationFile(pub &'static str, pub fn(&CalibrationReport) -> String);

impl Writer<GateReport> for GateFile {
    fn name(&self) -> &'static str {
        self.0
    }
    fn render(&self, r: &GateReport) -> Result<Vec<Doc>, ReportError> {
        Ok(vec![Doc::new(self.0, (self.1)(r))])
    }
}

impl Writer<CalibrationReport> for CalibrationFile {
    fn name(&self) -> &'static str {
        self.0
    }
    fn render(&self, c: &CalibrationReport) -> Result<Vec<Doc>, ReportError> {
        Ok(vec![Doc::new(self.0, (self.1)(c))])
    }
}

fn pretty<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

/// The files of a gate's output directory, in the order they are written.
pub const GATE_DIR: &[&dyn Writer<GateReport>] = &[
    &GateFile("summary.md", markdown),
    &GateFile("verdict.json", verdict_json),
    &GateFile("bencher.json", |r| pretty(&bencher(r))),
    &GateFile("benchmark-action.json", |r| pretty(&benchmark_action(r))),
    &GateFile("junit.xml", junit),
];

/// The files of a calibration's output directory.
pub const CALIBRATION_DIR: &[&dyn Writer<CalibrationReport>] = &[
    &CalibrationFile("calibration.md", calibration_markdown),
    &CalibrationFile("calibration.json", pretty::<CalibrationReport>),
];

/// Writes every output file of a gate report ([`GATE_DIR`]) into `dir`, atomically (see the
/// module docs).
pub fn write_dir(r: &GateReport, dir: &Path) -> Result<(), OutputError> {
    write_atomically(GATE_DIR, r, dir)
}

/// Writes the calibration's Markdown and JSON ([`CALIBRATION_DIR`]) into `dir`, atomically.
pub fn write_calibration_dir(c: &CalibrationReport, dir: &Path) -> Result<(), OutputError> {
    write_atomically(CALIBRATION_DIR, c, dir)
}

fn write_atomically<V>(
    writers: &[&dyn Writer<V>],
    view: &V,
    dir: &Path,
) -> Result<(), OutputError> {
    let mut staged = StagedDir::begin(dir, mallard_io::atomic::GATE)?;
    for w in writers {
        let docs = w.render(view).map_err(|e| OutputError::Write {
            path: dir.join(w.name()),
            source: std::io::Error::other(e.to_string()),
        })?;
        for d in docs {
            staged.add(&d.name, &d.bytes)?;
        }
    }
    staged.commit()
}
