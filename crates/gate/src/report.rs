//! The gate's result model: what `verdict.json` holds, and what every writer in
//! [`crate::output`] reads. Nothing here measures or formats.

use crate::config::GateConfig;
use crate::judge::{MetricResult, Overall};
use mallard_report::Machine;
use serde::{Deserialize, Serialize};

/// Version of the `verdict.json` schema.
pub const GATE_SCHEMA: u32 = 1;

/// How the two sides were obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Baseline and candidate run here, now, interleaved in fresh processes.
    SideBySide,
    /// Two stored `results.json`, measured separately.
    Stored,
    /// The baseline against itself (calibration).
    Calibration,
}

/// The settings a verdict was reached with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    pub threshold: f64,
    pub alpha: f64,
    /// Alpha of each look (alpha / looks the budget allows).
    pub alpha_per_look: f64,
    /// Confidence level of every interval shown (1 - 2 * alpha_per_look).
    pub confidence: f64,
    pub correction: String,
    pub min_reps: u32,
    pub max_reps: u32,
    pub step: u32,
    pub power: f64,
    pub memory_margin_bytes: f64,
    pub inconclusive_exit: i32,
}

impl Settings {
    pub fn from_config(c: &GateConfig, page_size: u64) -> Self {
        Settings {
            threshold: c.threshold,
            alpha: c.alpha,
            alpha_per_look: c.alpha_per_look(),
            confidence: 1.0 - 2.0 * c.alpha_per_look(),
            correction: c.correction.to_string(),
            min_reps: c.min_reps,
            max_reps: c.max_reps,
            step: c.step,
            power: c.power,
            memory_margin_bytes: c.memory_margin.resolve(page_size),
            inconclusive_exit: c.inconclusive_exit,
        }
    }
}

/// A trace both sides replayed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TraceRef {
    pub name: String,
    pub path: String,
    pub sha256: String,
    pub events: u64,
}

/// The outcome of one `mallard gate`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GateReport {
    pub schema: u32,
    pub tool: String,
    pub mode: Mode,
    /// What the baseline and the candidate are, in words.
    pub baseline: String,
    pub candidate: String,
    pub verdict: Overall,
    pub exit_code: i32,
    /// One line: the verdict and why.
    pub headline: String,
    /// Caveats a reader must see (cross-run comparison, A/A, counters, ...).
    pub notes: Vec<String>,
    pub settings: Settings,
    /// Repetitions per side actually run (stored mode: the smaller count of the two sets).
    pub repetitions: u32,
    /// How many times the verdict was evaluated (1 + times repetitions were added).
    pub looks: u32,
    pub elapsed_s: f64,
    pub machine: Option<Machine>,
    pub traces: Vec<TraceRef>,
    pub metrics: Vec<MetricResult>,
}

impl GateReport {
    /// Metrics whose verdict is `v`, required ones only.
    pub fn required_with(&self, v: crate::judge::Verdict) -> Vec<&MetricResult> {
        self.metrics
            .iter()
            .filter(|m| m.required && m.verdict == v)
            .collect()
    }
}

/// The noise of one metric in an A/A run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NoiseRow {
    pub id: String,
    pub unit: String,
    pub required: bool,
    pub n: usize,
    pub median: f64,
    /// Robust coefficient of variation (scaled MAD / median) over both A sides.
    pub cv_robust: f64,
    /// Classic coefficient of variation (sd / mean): shows outliers the robust one ignores.
    pub cv: f64,
    /// The noise a paired comparison sees: robust spread of the pairs' log-ratios over
    /// sqrt(2), i.e. the per-value noise left once the machine's drift between pairs cancels.
    /// What the detectable change is computed from when the samples are paired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cv_paired: Option<f64>,
    /// A/A ratio and its interval: should contain 1.
    pub aa_ratio: Option<f64>,
    pub aa_low: Option<f64>,
    pub aa_high: Option<f64>,
    /// Deterministic: the same value in every repetition.
    pub exact: bool,
    /// Smallest change the budget detects with the configured power.
    pub detectable: f64,
    pub threshold: f64,
    /// Whether the threshold is at least the detectable change.
    pub ok: bool,
}

/// The outcome of `mallard gate --calibrate`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CalibrationReport {
    pub schema: u32,
    pub tool: String,
    pub baseline: String,
    /// Repetitions per side run for the calibration, and the budget the detectable change is for.
    pub repetitions: u32,
    pub budget: u32,
    pub settings: Settings,
    pub elapsed_s: f64,
    pub machine: Option<Machine>,
    pub headline: String,
    pub notes: Vec<String>,
    /// True when every required metric can be judged at its threshold.
    pub ok: bool,
    pub exit_code: i32,
    pub rows: Vec<NoiseRow>,
    /// The A/A gate verdicts themselves (a calibration that fails is a broken gate).
    pub aa_metrics: Vec<MetricResult>,
}
