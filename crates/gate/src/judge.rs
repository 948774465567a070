//! From samples to verdicts: one [`MetricResult`] per metric, and the gate's overall verdict.
//!
//! For a metric with threshold `t` and absolute margin `a`, the *limit* is the ratio
//! `L = max(1 + t, 1 + a / baseline_median)`: a change must exceed both the relative threshold
//! and the absolute margin to count. Then, with the candidate/baseline ratio `r`, its interval
//! `[lo, hi]` and its multiplicity-adjusted one-sided p-value `p`:
//!
//! | verdict | when |
//! |---|---|
//! | **fail** | `p < alpha_look` (the candidate is larger, significantly, after Holm/BH over all metrics) **and** `r > L` (by more than the limit) |
//! | **pass** | `hi <= L`: even the upper confidence bound is within the limit |
//! | **inconclusive** | otherwise: the interval straddles the limit; more repetitions may decide |
//!
//! Both conditions are needed to fail: significance alone would fail on a real 0.5% change, an
//! effect alone would fail on noise. A metric whose values are the same in every repetition on
//! both sides (instruction counts, a deterministic footprint, arena statistics) is compared
//! directly: fail when `candidate / baseline > L`, else pass, with no statistics and no part
//! in the multiple-testing correction.
//!
//! The correction runs over two families separately: the required metrics (whose false
//! failures would fail a build) and the advisory ones.
//!
//! `alpha_look` is alpha divided by the number of looks the repetition budget allows (see
//! [`GateConfig::alpha_per_look`]), so that looking again after adding repetitions cannot raise
//! the false-alarm rate above alpha.

use crate::config::GateConfig;
use crate::metrics::{unit_of, MetricKey, Samples};
use crate::stats::{self, adjust, compare, compare_paired, detectable_change};
use serde::{Deserialize, Serialize};

/// A metric's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    Fail,
    Inconclusive,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Inconclusive => "inconclusive",
        }
    }
}

/// One side's values of a metric, summarised.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SideFigures {
    pub n: usize,
    pub median: f64,
    pub min: f64,
    pub max: f64,
    /// Robust coefficient of variation (scaled MAD / median).
    pub cv: f64,
    /// Every value, in the order the repetitions ran (for anyone who wants to re-analyse).
    #[serde(default)]
    pub values: Vec<f64>,
}

impl SideFigures {
    pub fn of(v: &[f64]) -> Self {
        SideFigures {
            n: v.len(),
            median: stats::median(v),
            min: v.iter().copied().fold(f64::INFINITY, f64::min),
            max: v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            cv: stats::robust_cv(v),
            values: v.to_vec(),
        }
    }
}

/// How a metric was compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// Mann-Whitney test, Hodges-Lehmann ratio, Moses interval (unpaired samples).
    RankTest,
    /// Wilcoxon signed-rank test on the pairs' log-ratios, one-sample Hodges-Lehmann ratio
    /// and its interval (baseline and candidate measured in back-to-back pairs).
    PairedRankTest,
    /// The same value in every repetition on both sides: compared directly.
    Direct,
}

/// The judgement of one metric.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricResult {
    /// `TRACE/ALLOCATOR/METRIC`.
    pub id: String,
    pub trace: String,
    pub allocator: String,
    pub metric: String,
    pub unit: String,
    /// Whether this metric decides the exit code (else advisory).
    pub required: bool,
    pub method: Method,
    pub baseline: SideFigures,
    pub candidate: SideFigures,
    /// Candidate / baseline (Hodges-Lehmann estimate); `None` when the baseline is zero.
    pub ratio: Option<f64>,
    /// Confidence interval of the ratio (two-sided, each bound at the per-look level).
    pub ratio_low: Option<f64>,
    pub ratio_high: Option<f64>,
    /// One-sided p-value of "the candidate is larger", and after the correction.
    pub p_value: Option<f64>,
    pub p_adjusted: Option<f64>,
    /// Relative threshold (0.05 = 5%) and absolute margin (metric unit).
    pub threshold: f64,
    pub margin: f64,
    /// The ratio above which a change counts: max(1 + threshold, 1 + margin / baseline).
    pub limit: f64,
    /// Smallest relative change this noise lets the full budget detect (95% of the time).
    pub detectable: Option<f64>,
    /// Whether the full budget could resolve a change the size of the limit at least half of
    /// the time: if not, more repetitions are not worth running.
    #[serde(default)]
    pub resolvable: bool,
    pub verdict: Verdict,
    /// Why, in words (for an open metric, the words of [`MetricResult::open`]).
    pub reason: String,
    /// Why the metric is still open, as a value: set exactly when the verdict is inconclusive.
    /// Not in `verdict.json` (the words in `reason` are).
    #[serde(skip)]
    pub open: Option<Open>,
}

impl MetricResult {
    /// Whether the runner is too noisy for this metric's threshold with the full budget.
    pub fn too_noisy(&self) -> bool {
        matches!(self.open, Some(Open::Straddles { too_noisy: Some(_), .. }))
    }

    /// Marks the metric inconclusive for `why`, and words the reason from it.
    fn set_open(&mut self, why: Open) {
        self.verdict = Verdict::Inconclusive;
        self.reason = why.to_string();
        self.open = Some(why);
    }
}

/// Why a metric is inconclusive. Its `Display` is the metric's `reason`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Open {
    /// The baseline is zero: there is no ratio to judge.
    NoRatio,
    /// Too few repetitions for an interval at the per-look confidence.
    TooFewRepetitions,
    /// The interval reaches past the limit. `above`: the estimate itself is above the limit
    /// (but not significantly).
    Straddles {
        /// Upper bound of the ratio's interval, and the limit (ratios).
        high: f64,
        limit: f64,
        above: bool,
        /// Set when the full budget cannot detect a change the size of the limit.
        too_noisy: Option<TooNoisy>,
    },
}

/// The runner's noise against a metric's threshold: the smallest change `budget` repetitions
/// detect (`None`: none at all) is larger than the limit.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TooNoisy {
    pub threshold: f64,
    pub budget: u32,
    pub detectable: Option<f64>,
}

impl std::fmt::Display for Open {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Open::NoRatio => f.write_str("no ratio: the baseline is zero"),
            Open::TooFewRepetitions => {
                f.write_str("too few repetitions for an interval at this confidence")
            }
            Open::Straddles { high, limit, above, too_noisy } => {
                write!(
                    f,
                    "interval reaches {} (limit {})",
                    pct(high - 1.0),
                    pct(limit - 1.0)
                )?;
                if above {
                    f.write_str(" and the estimate is above the limit, but not significantly")?;
                }
                if let Some(n) = too_noisy {
                    write!(
                        f,
                        "; runner too noisy for a {} threshold on this metric (smallest change detectable with {} repetitions: {})",
                        pct(n.threshold),
                        n.budget,
                        n.detectable.map(pct).unwrap_or_else(|| "none".into())
                    )?;
                }
                Ok(())
            }
        }
    }
}

/// Options of one judgement.
#[derive(Clone, Copy, Debug)]
pub struct JudgeContext {
    pub page_size: u64,
    /// Repetitions per side the budget allows (for the detectable change).
    pub budget: u32,
}

fn pct(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

/// Judges every metric both sides have.
pub fn judge(samples: &Samples, cfg: &GateConfig, ctx: JudgeContext) -> Vec<MetricResult> {
    let alpha = cfg.alpha_per_look();
    let mut out = Vec::new();
    // Index into `out` and raw p-value of each statistically tested metric.
    let mut tested: Vec<(usize, f64)> = Vec::new();
    for (key, b, c) in samples.paired() {
        if b.is_empty() || c.is_empty() || !cfg.selected(&key.metric, &key.id()) {
            continue;
        }
        let paired = samples.paired && b.len() == c.len();
        let r = judge_one(key, b, c, paired, cfg, ctx, alpha);
        if let Some(p) = r.p_value {
            tested.push((out.len(), p));
        }
        out.push(r);
    }
    // Two families: the required metrics, whose false failures would fail the build, and the
    // advisory ones. Each is corrected on its own, so that twenty advisory tail percentiles do
    // not cost the required metrics their power; the guarantee that matters (no false red
    // build with probability above alpha) is about the required family alone.
    for required in [true, false] {
        let family: Vec<(usize, f64)> = tested
            .iter()
            .copied()
            .filter(|&(i, _)| out[i].required == required)
            .collect();
        let n_tested = family.len().max(1);
        let adjusted = adjust(
            &family.iter().map(|t| t.1).collect::<Vec<_>>(),
            cfg.correction,
        );
        for ((i, _), pa) in family.iter().zip(adjusted) {
            let r = &mut out[*i];
            r.p_adjusted = Some(pa);
            decide(r, alpha, n_tested, cfg, ctx);
        }
    }
    out
}

fn judge_one(
    key: &MetricKey,
    b: &[f64],
    c: &[f64],
    paired: bool,
    cfg: &GateConfig,
    ctx: JudgeContext,
    alpha: f64,
) -> MetricResult {
    let id = key.id();
    let rule = cfg.rule(&key.metric, &id, ctx.page_size);
    let bf = SideFigures::of(b);
    let cf = SideFigures::of(c);
    let limit_for = |base: f64| {
        if base > 0.0 {
            (1.0 + rule.threshold).max(1.0 + rule.margin / base)
        } else {
            1.0 + rule.threshold
        }
    };
    let mut r = MetricResult {
        id,
        trace: key.trace.clone(),
        allocator: key.allocator.clone(),
        metric: key.metric.clone(),
        unit: unit_of(&key.metric).into(),
        required: rule.required,
        method: if paired {
            Method::PairedRankTest
        } else {
            Method::RankTest
        },
        baseline: bf.clone(),
        candidate: cf.clone(),
        ratio: None,
        ratio_low: None,
        ratio_high: None,
        p_value: None,
        p_adjusted: None,
        threshold: rule.threshold,
        margin: rule.margin,
        limit: limit_for(bf.median),
        detectable: None,
        resolvable: true,
        verdict: Verdict::Inconclusive,
        reason: String::new(),
        open: None,
    };
    let constant = |v: &[f64]| v.iter().all(|&x| x == v[0]);
    let repeated = (b.len() >= 2 && c.len() >= 2) || key.metric == "instructions";
    if repeated && constant(b) && constant(c) {
        r.method = Method::Direct;
        let (b0, c0) = (b[0], c[0]);
        r.ratio = (b0 > 0.0).then(|| c0 / b0);
        r.ratio_low = r.ratio;
        r.ratio_high = r.ratio;
        r.detectable = Some(0.0);
        let worse_by = c0 - b0;
        let over = match r.ratio {
            Some(q) => q > r.limit,
            None => worse_by > rule.margin,
        };
        if over && worse_by > rule.margin {
            r.verdict = Verdict::Fail;
            r.reason = format!(
                "exact figure (the same in every repetition) rose by {}, above the limit",
                r.ratio
                    .map(|q| pct(q - 1.0))
                    .unwrap_or_else(|| format!("{worse_by} {}", r.unit))
            );
        } else {
            r.verdict = Verdict::Pass;
            r.reason = if c0 == b0 {
                "exact figure, identical".into()
            } else {
                "exact figure (the same in every repetition), change within the limit".into()
            };
        }
        return r;
    }
    let positive = b.iter().chain(c).all(|&x| x > 0.0);
    // The noise of one value (sigma): for pairs, the spread of the pair differences over
    // sqrt(2), so that `detectable_change`'s two-sample formula gives the paired figure.
    let noise = |b: &[f64], c: &[f64]| {
        if paired {
            let d: Vec<f64> = b.iter().zip(c).map(|(x, y)| y - x).collect();
            stats::mad_sd(&d) / std::f64::consts::SQRT_2
        } else {
            ((stats::mad_sd(b).powi(2) + stats::mad_sd(c).powi(2)) / 2.0).sqrt()
        }
    };
    let test = |b: &[f64], c: &[f64]| {
        if paired {
            compare_paired(b, c, alpha)
        } else {
            compare(b, c, alpha)
        }
    };
    let (shift, sigma_rel) = if positive {
        let lb: Vec<f64> = b.iter().map(|x| x.ln()).collect();
        let lc: Vec<f64> = c.iter().map(|x| x.ln()).collect();
        let s = test(&lb, &lc);
        if let Some(s) = s {
            r.ratio = Some(s.estimate.exp());
            r.ratio_low = s.low.map(f64::exp);
            r.ratio_high = s.high.map(f64::exp);
        }
        (s, noise(&lb, &lc))
    } else {
        // Zeros (a latency below the timer's resolution): shift on the raw scale, expressed
        // relative to the baseline median.
        let s = test(b, c);
        let mb = bf.median;
        if let (Some(s), true) = (s, mb > 0.0) {
            r.ratio = Some((mb + s.estimate) / mb);
            r.ratio_low = s.low.map(|x| (mb + x) / mb);
            r.ratio_high = s.high.map(|x| (mb + x) / mb);
        }
        let sigma = if mb > 0.0 { noise(b, c) / mb } else { 0.0 };
        (s, sigma)
    };
    if let Some(s) = shift {
        r.p_value = Some(s.p_greater);
    }
    // Stored for `decide`, which knows how many metrics were tested.
    r.detectable = Some(sigma_rel);
    r
}

/// The hardest level a metric's test can face among `n_tested`: the first step of Holm and of
/// Benjamini-Hochberg is Bonferroni's alpha / n; without a correction it is alpha itself.
pub fn hardest_level(cfg: &GateConfig, alpha: f64, n_tested: usize) -> f64 {
    match cfg.correction {
        stats::Correction::None => alpha,
        stats::Correction::Holm | stats::Correction::Bh => alpha / n_tested.max(1) as f64,
    }
}

fn decide(r: &mut MetricResult, alpha: f64, n_tested: usize, cfg: &GateConfig, ctx: JudgeContext) {
    let sigma = r.detectable.unwrap_or(0.0);
    let level = hardest_level(cfg, alpha, n_tested);
    let det = detectable_change(sigma, ctx.budget, level, cfg.power);
    r.detectable = det.is_finite().then_some(det);
    r.resolvable = detectable_change(sigma, ctx.budget, level, 0.5) <= r.limit - 1.0;
    let (Some(ratio), Some(pa)) = (r.ratio, r.p_adjusted) else {
        r.set_open(Open::NoRatio);
        return;
    };
    if pa < alpha && ratio > r.limit {
        r.verdict = Verdict::Fail;
        r.reason = format!(
            "{} worse, significant (adjusted p = {:.2e} < {:.2e}) and above the {} limit",
            pct(ratio - 1.0),
            pa,
            alpha,
            pct(r.limit - 1.0)
        );
        return;
    }
    match r.ratio_high {
        Some(hi) if hi <= r.limit => {
            r.verdict = Verdict::Pass;
            r.reason = if hi < 1.0 {
                format!(
                    "better: the whole interval is below 1 ({})",
                    pct(ratio - 1.0)
                )
            } else {
                format!(
                    "upper bound {} within the {} limit",
                    pct(hi - 1.0),
                    pct(r.limit - 1.0)
                )
            };
        }
        Some(hi) => {
            let too_noisy = (det > r.limit - 1.0).then(|| TooNoisy {
                threshold: r.threshold,
                budget: ctx.budget,
                detectable: det.is_finite().then_some(det),
            });
            r.set_open(Open::Straddles {
                high: hi,
                limit: r.limit,
                above: ratio > r.limit,
                too_noisy,
            });
        }
        None => r.set_open(Open::TooFewRepetitions),
    }
}

/// The gate's overall verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Overall {
    Pass,
    Fail,
    Inconclusive,
}

/// The overall verdict and exit code: fail (1) if a required metric failed; else inconclusive
/// (`inconclusive_exit`, 3 by default) if a required metric is inconclusive; else pass (0).
pub fn overall(results: &[MetricResult], cfg: &GateConfig) -> (Overall, i32) {
    let req = results.iter().filter(|r| r.required);
    let mut any_inconclusive = false;
    for r in req {
        match r.verdict {
            Verdict::Fail => return (Overall::Fail, 1),
            Verdict::Inconclusive => any_inconclusive = true,
            Verdict::Pass => {}
        }
    }
    if any_inconclusive {
        (Overall::Inconclusive, cfg.inconclusive_exit)
    } else {
        (Overall::Pass, 0)
    }
}

/// Whether a required metric is still open: inconclusive, with no required metric failed.
pub fn open(results: &[MetricResult]) -> bool {
    open_where(results, |_| true)
}

/// Whether more repetitions could change a required metric's verdict: it is inconclusive, no
/// required metric has failed, and its noise lets the full budget resolve a change the size of
/// its limit at least half of the time (a stricter rule, 95%, stopped too early in practice:
/// the noise estimated from ten repetitions is itself noisy).
pub fn worth_more(results: &[MetricResult]) -> bool {
    open_where(results, |r| r.resolvable)
}

/// No required metric failed, and some required inconclusive metric satisfies `also`.
fn open_where(results: &[MetricResult], also: impl Fn(&MetricResult) -> bool) -> bool {
    let required = || results.iter().filter(|r| r.required);
    !required().any(|r| r.verdict == Verdict::Fail)
        && required().any(|r| r.verdict == Verdict::Inconclusive && also(r))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Side;
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};
    use rand_distr::{Distribution, Normal, StudentT};

    fn ctx() -> JudgeContext {
        JudgeContext { page_size: 4096, budget: 40 }
    }

    /// `n` values around `center` with relative normal noise `cv`.
    fn normal(rng: &mut SmallRng, n: usize, center: f64, cv: f64) -> Vec<f64> {
        let d = Normal::new(0.0, cv).unwrap();
        (0..n).map(|_| center * (1.0 + d.sample(rng))).collect()
    }

    /// `n` values per side with relative noise `cv` around the baseline's and the candidate's
    /// centre, drawn from `rng` (baseline first), judged under `cfg`.
    fn judged(
        rng: &mut SmallRng,
        n: usize,
        cv: f64,
        (base, cand): (f64, f64),
        cfg: &GateConfig,
    ) -> MetricResult {
        let b = normal(rng, n, base, cv);
        let c = normal(rng, n, cand, cv);
        one(b, c, cfg)
    }

    fn one(b: Vec<f64>, c: Vec<f64>, cfg: &GateConfig) -> MetricResult {
        let mut s = Samples::default();
        for v in b {
            s.push(Side::Baseline, MetricKey::new("t", "arena", "time"), v);
        }
        for v in c {
            s.push(Side::Candidate, MetricKey::new("t", "arena", "time"), v);
        }
        judge(&s, cfg, ctx()).remove(0)
    }

    #[test]
    fn pairs_decide_what_drift_hides_from_unpaired_samples() {
        // The machine's speed drifts by 12% (sd) from pair to pair, 1% within a pair; the
        // candidate is truly 7% slower. Unpaired, the gate cannot tell; paired, it fails.
        let mut rng = SmallRng::seed_from_u64(11);
        let drift: Normal<f64> = Normal::new(0.0, 0.12).unwrap();
        let (mut b, mut c) = (Vec::new(), Vec::new());
        for _ in 0..20 {
            let m = 100.0 * drift.sample(&mut rng).exp();
            b.extend(normal(&mut rng, 1, m, 0.01));
            c.extend(normal(&mut rng, 1, m * 1.07, 0.01));
        }
        let cfg = GateConfig::default();
        let unpaired = one(b.clone(), c.clone(), &cfg);
        assert_eq!(unpaired.method, Method::RankTest);
        assert_eq!(unpaired.verdict, Verdict::Inconclusive, "{unpaired:?}");
        let mut s = Samples { paired: true, ..Default::default() };
        for (x, y) in b.iter().zip(&c) {
            s.push(Side::Baseline, MetricKey::new("t", "arena", "time"), *x);
            s.push(Side::Candidate, MetricKey::new("t", "arena", "time"), *y);
        }
        let paired = judge(&s, &cfg, ctx()).remove(0);
        assert_eq!(paired.method, Method::PairedRankTest);
        assert_eq!(paired.verdict, Verdict::Fail, "{paired:?}");
        assert!((paired.ratio.unwrap() - 1.07).abs() < 0.01, "{paired:?}");
        // And an A/A under the same drift passes: the pairs' ratios sit at 1.
        let mut s = Samples { paired: true, ..Default::default() };
        for x in &b {
            let y = normal(&mut rng, 1, *x, 0.01)[0];
            s.push(Side::Baseline, MetricKey::new("t", "arena", "time"), *x);
            s.push(Side::Candidate, MetricKey::new("t", "arena", "time"), y);
        }
        let aa = judge(&s, &cfg, ctx()).remove(0);
        assert_eq!(aa.verdict, Verdict::Pass, "{aa:?}");
    }

    #[test]
    fn advisory_metrics_do_not_dilute_the_required_family() {
        // Ten pairs, all 10% worse in `time` (required): p = 2^-10 < alpha_look (0.0025).
        // Thirty advisory percentiles with no change beside it must not enter its Holm
        // family (that would need p < 0.0025 / 31).
        let cfg = GateConfig::default();
        let mut rng = SmallRng::seed_from_u64(12);
        let mut s = Samples { paired: true, ..Default::default() };
        let b = normal(&mut rng, 10, 100.0, 0.01);
        for x in &b {
            let y = normal(&mut rng, 1, x * 1.10, 0.005)[0];
            s.push(Side::Baseline, MetricKey::new("t", "arena", "time"), *x);
            s.push(Side::Candidate, MetricKey::new("t", "arena", "time"), y);
        }
        for k in 0..30 {
            let key = MetricKey::new("t", "arena", &format!("p99.m{k}"));
            for v in normal(&mut rng, 10, 100.0, 0.03) {
                s.push(Side::Baseline, key.clone(), v);
                s.push(Side::Candidate, key.clone(), v * 1.001);
            }
        }
        let all = judge(&s, &cfg, ctx());
        let time = all.iter().find(|m| m.metric == "time").unwrap();
        assert!(time.required);
        assert!(
            (time.p_adjusted.unwrap() - 0.5f64.powi(10)).abs() < 1e-12,
            "{time:?}"
        );
        assert_eq!(time.verdict, Verdict::Fail, "{time:?}");
        // The advisory family was corrected among itself: 30 metrics, Holm.
        let adv = all.iter().find(|m| m.metric == "p99.m0").unwrap();
        assert!(!adv.required);
        assert!(adv.p_adjusted.unwrap() >= adv.p_value.unwrap());
    }

    /// Judges `time` from pairs: `c[i]` measured right beside `b[i]`.
    fn one_paired(b: &[f64], c: &[f64], cfg: &GateConfig) -> MetricResult {
        let mut s = Samples { paired: true, ..Default::default() };
        for (x, y) in b.iter().zip(c) {
            s.push(Side::Baseline, MetricKey::new("t", "arena", "time"), *x);
            s.push(Side::Candidate, MetricKey::new("t", "arena", "time"), *y);
        }
        let r = judge(&s, cfg, ctx()).remove(0);
        assert_eq!(r.method, Method::PairedRankTest);
        r
    }

    /// `n` pairs: a common drift per pair (sd `drift` on the log scale), independent noise
    /// `noise` on each value, and the candidate's true ratio `ratio`.
    fn pairs(
        rng: &mut SmallRng,
        n: usize,
        ratio: f64,
        drift: f64,
        noise: f64,
    ) -> (Vec<f64>, Vec<f64>) {
        let d = Normal::new(0.0, drift).unwrap();
        let (mut b, mut c) = (Vec::new(), Vec::new());
        for _ in 0..n {
            let m = 100.0 * d.sample(rng).exp();
            b.push(normal(rng, 1, m, noise)[0]);
            c.push(normal(rng, 1, m * ratio, noise)[0]);
        }
        (b, c)
    }

    #[test]
    fn paired_known_answers() {
        let cfg = GateConfig::default();
        let mut rng = SmallRng::seed_from_u64(21);
        // Identical pairs: ratio exactly 1, a pass.
        let (b, _) = pairs(&mut rng, 20, 1.0, 0.1, 0.01);
        let r = one_paired(&b, &b, &cfg);
        assert_eq!(r.verdict, Verdict::Pass, "{r:?}");
        assert_eq!(r.ratio, Some(1.0));
        // 3% slower under 10% drift: significant, but the interval sits inside the 5% limit.
        let (b, c) = pairs(&mut rng, 20, 1.03, 0.1, 0.003);
        let r = one_paired(&b, &c, &cfg);
        assert!(r.p_value.unwrap() < 1e-5, "{r:?}");
        assert_eq!(r.verdict, Verdict::Pass, "{r:?}");
        assert!((r.ratio.unwrap() - 1.03).abs() < 0.005, "{r:?}");
        // 10% slower: a failure.
        let (b, c) = pairs(&mut rng, 20, 1.10, 0.1, 0.01);
        let r = one_paired(&b, &c, &cfg);
        assert_eq!(r.verdict, Verdict::Fail, "{r:?}");
        assert!((r.ratio.unwrap() - 1.10).abs() < 0.01, "{r:?}");
    }

    #[test]
    fn paired_heavy_tails_and_noise_alone() {
        // Pair noise with heavy tails (Student-t, 1.5 degrees of freedom, and one pair in
        // twenty thrown off by a 3x outlier on either side): a 10% shift is still caught, and
        // A/A comparisons never fail. (Outliers always on the baseline's side would cost the
        // signed-rank test more: they take the top ranks, all with the same sign; 45 of 50
        // were caught in that variant.)
        let cfg = GateConfig::default();
        let t = StudentT::new(1.5).unwrap();
        let mut rng = SmallRng::seed_from_u64(22);
        let trial = |ratio: f64, rng: &mut SmallRng| {
            let (mut b, mut c) = (Vec::new(), Vec::new());
            for _ in 0..30 {
                let z: f64 = t.sample(rng);
                let m = 100.0 * (0.1 * z).clamp(-1.0, 1.0).exp();
                let mut x = m * (1.0f64 + 0.01 * t.sample(rng)).max(0.5);
                let mut y = m * ratio * (1.0f64 + 0.01 * t.sample(rng)).max(0.5);
                // A burst of load slows one process of the pair, whichever ran then.
                if rng.gen_bool(0.05) {
                    if rng.gen_bool(0.5) {
                        x *= 3.0;
                    } else {
                        y *= 3.0;
                    }
                }
                b.push(x);
                c.push(y);
            }
            one_paired(&b, &c, &cfg).verdict
        };
        let mut caught = 0;
        let mut false_alarms = 0;
        for _ in 0..50 {
            caught += (trial(1.10, &mut rng) == Verdict::Fail) as u32;
            false_alarms += (trial(1.0, &mut rng) == Verdict::Fail) as u32;
        }
        assert!(caught >= 48, "caught {caught}/50");
        assert_eq!(false_alarms, 0);
        // Plain noise, no change, 400 trials of 10 pairs at 20% noise: failures stay within
        // the per-look alpha (0.0025: about one expected).
        let mut fails = 0;
        for _ in 0..400 {
            let (b, c) = pairs(&mut rng, 10, 1.0, 0.2, 0.2);
            fails += (one_paired(&b, &c, &cfg).verdict == Verdict::Fail) as u32;
        }
        assert!(fails <= 4, "{fails} false alarms in 400");
    }

    #[test]
    fn identical_samples_pass() {
        let mut rng = SmallRng::seed_from_u64(1);
        let cfg = GateConfig::default();
        let b = normal(&mut rng, 20, 100.0, 0.01);
        let r = one(b.clone(), b, &cfg);
        assert_eq!(r.verdict, Verdict::Pass, "{r:?}");
        assert!((r.ratio.unwrap() - 1.0).abs() < 1e-12);
        assert!(r.p_value.unwrap() > 0.4);
    }

    #[test]
    fn a_three_percent_shift_is_real_but_under_a_five_percent_threshold() {
        let mut rng = SmallRng::seed_from_u64(2);
        let cfg = GateConfig::default();
        let r = judged(&mut rng, 20, 0.005, (100.0, 103.0), &cfg);
        // Significant, yet a pass: the interval sits inside the 5% limit.
        assert!(r.p_value.unwrap() < 1e-6, "{r:?}");
        assert_eq!(r.verdict, Verdict::Pass, "{r:?}");
        let q = r.ratio.unwrap();
        assert!((q - 1.03).abs() < 0.005, "{q}");
        assert!(r.ratio_low.unwrap() < 1.03 && r.ratio_high.unwrap() > 1.03);
        // With a 2% threshold the same samples fail.
        let cfg2 = GateConfig { threshold: 0.02, ..GateConfig::default() };
        let mut rng = SmallRng::seed_from_u64(2);
        assert_eq!(
            judged(&mut rng, 20, 0.005, (100.0, 103.0), &cfg2).verdict,
            Verdict::Fail
        );
    }

    #[test]
    fn a_ten_percent_shift_fails() {
        let mut rng = SmallRng::seed_from_u64(3);
        let cfg = GateConfig::default();
        let r = judged(&mut rng, 10, 0.02, (100.0, 110.0), &cfg);
        assert_eq!(r.verdict, Verdict::Fail, "{r:?}");
        assert!((r.ratio.unwrap() - 1.10).abs() < 0.03);
        // And a 10% improvement passes, as better.
        let mut rng = SmallRng::seed_from_u64(3);
        let r = judged(&mut rng, 10, 0.02, (100.0, 90.0), &cfg);
        assert_eq!(r.verdict, Verdict::Pass);
        assert!(r.reason.starts_with("better"), "{}", r.reason);
    }

    #[test]
    fn noise_alone_fails_no_more_often_than_alpha() {
        // 20% noise, no true change: failures stay within the per-look alpha (the designed
        // false-alarm rate of one metric), and most trials say "too noisy" instead.
        let cfg = GateConfig::default();
        let mut rng = SmallRng::seed_from_u64(4);
        let trials = 400;
        let mut fails = 0;
        let mut noisy = 0;
        for _ in 0..trials {
            let r = judged(&mut rng, 10, 0.2, (100.0, 100.0), &cfg);
            fails += (r.verdict == Verdict::Fail) as u32;
            noisy += r.too_noisy() as u32;
        }
        // alpha_per_look = 0.01 / 4: about one expected failure in 400.
        assert!(fails <= 4, "{fails} false alarms in {trials}");
        assert!(noisy > trials * 3 / 4, "{noisy}");
    }

    #[test]
    fn heavy_tailed_noise_does_not_fool_the_rank_test() {
        // Student-t with 1.5 degrees of freedom (infinite variance) plus rare 3x outliers: a
        // real 10% shift is still found, and an A/A comparison never fails.
        let cfg = GateConfig::default();
        let t = StudentT::new(1.5).unwrap();
        let mut rng = SmallRng::seed_from_u64(5);
        let sample = |center: f64, rng: &mut SmallRng| -> Vec<f64> {
            (0..30)
                .map(|_| {
                    let mut v: f64 = center * (1.0f64 + 0.01 * t.sample(rng)).max(0.5);
                    if rng.gen_bool(0.05) {
                        v *= 3.0;
                    }
                    v
                })
                .collect()
        };
        let mut caught = 0;
        let mut false_alarms = 0;
        for _ in 0..50 {
            let b = sample(100.0, &mut rng);
            let c = sample(110.0, &mut rng);
            caught += (one(b, c, &cfg).verdict == Verdict::Fail) as u32;
            let b = sample(100.0, &mut rng);
            let c = sample(100.0, &mut rng);
            false_alarms += (one(b, c, &cfg).verdict == Verdict::Fail) as u32;
        }
        assert!(caught >= 48, "caught {caught}/50");
        assert_eq!(false_alarms, 0);
    }

    #[test]
    fn many_metrics_at_once_are_corrected() {
        // 60 metrics with no true change and 1 with a 10% regression: with Holm no null metric
        // fails, and the real one still does.
        let cfg = GateConfig::default();
        let mut rng = SmallRng::seed_from_u64(6);
        let mut s = Samples::default();
        for k in 0..60 {
            let key = MetricKey::new("t", "arena", &format!("p50.m{k}"));
            for v in normal(&mut rng, 12, 100.0, 0.03) {
                s.push(Side::Baseline, key.clone(), v);
            }
            for v in normal(&mut rng, 12, 100.0, 0.03) {
                s.push(Side::Candidate, key.clone(), v);
            }
        }
        let key = MetricKey::new("t", "arena", "time");
        for v in normal(&mut rng, 12, 100.0, 0.01) {
            s.push(Side::Baseline, key.clone(), v);
        }
        for v in normal(&mut rng, 12, 110.0, 0.01) {
            s.push(Side::Candidate, key.clone(), v);
        }
        let res = judge(&s, &cfg, ctx());
        assert_eq!(res.len(), 61);
        let fails: Vec<&str> = res
            .iter()
            .filter(|r| r.verdict == Verdict::Fail)
            .map(|r| r.metric.as_str())
            .collect();
        assert_eq!(fails, ["time"]);
        // Without correction, with a lax threshold, some null metric would reach raw p < alpha.
        let raw_hits = res
            .iter()
            .filter(|r| r.metric != "time" && r.p_value.unwrap() < cfg.alpha_per_look())
            .count();
        let adj_hits = res
            .iter()
            .filter(|r| r.metric != "time" && r.p_adjusted.unwrap() < cfg.alpha_per_look())
            .count();
        assert_eq!(adj_hits, 0);
        assert!(raw_hits >= adj_hits);
    }

    #[test]
    fn deterministic_figures_are_compared_directly() {
        let cfg = GateConfig::default();
        let r = one(vec![1000.0; 3], vec![1000.0; 3], &cfg);
        assert_eq!((r.method, r.verdict), (Method::Direct, Verdict::Pass));
        let r = one(vec![1000.0; 3], vec![1040.0; 3], &cfg);
        assert_eq!(r.verdict, Verdict::Pass);
        let r = one(vec![1000.0; 3], vec![1060.0; 3], &cfg);
        assert_eq!((r.method, r.verdict), (Method::Direct, Verdict::Fail));
        assert_eq!(r.ratio, Some(1.06));
        assert!(r.p_value.is_none());
    }

    #[test]
    fn memory_needs_the_absolute_margin_too() {
        let cfg = GateConfig::default(); // 16 pages = 64 KiB
        let key = MetricKey::new("t", "arena", "peak_rss");
        // Twelve pairs of peak RSS from `base` and `cand` bytes, each varying by 0-8 KiB.
        let peaks = |base: f64, cand: f64| {
            let mut s = Samples::default();
            for i in 0..12 {
                let wobble = 4096.0 * (i % 3) as f64;
                s.push(Side::Baseline, key.clone(), base + wobble);
                s.push(Side::Candidate, key.clone(), cand + wobble);
            }
            s
        };
        // 1 MiB baseline, +10% (~100 KiB) but varying: above both margins -> fail.
        let r = judge(&peaks(1048576.0, 1153434.0), &cfg, ctx()).remove(0);
        assert_eq!(r.verdict, Verdict::Fail, "{r:?}");
        // 256 KiB baseline, +20% (51 KiB) is above 5% but below 64 KiB: pass.
        let r = judge(&peaks(262144.0, 314572.0), &cfg, ctx()).remove(0);
        assert!(
            (r.limit - (1.0 + 65536.0 / 266240.0)).abs() < 1e-9,
            "{}",
            r.limit
        );
        assert_eq!(r.verdict, Verdict::Pass, "{r:?}");
    }

    #[test]
    fn more_repetitions_only_while_they_can_help() {
        let cfg = GateConfig::default();
        let mut rng = SmallRng::seed_from_u64(7);
        // 3% noise, no change: inconclusive at 10 repetitions, resolvable within 40.
        let r = judged(&mut rng, 10, 0.03, (100.0, 104.0), &cfg);
        if r.verdict == Verdict::Inconclusive {
            assert!(
                r.resolvable && worth_more(&[r]),
                "3% noise is worth more repetitions"
            );
        }
        // 40% noise: hopeless within the budget, so stop and say so.
        let r = judged(&mut rng, 10, 0.4, (100.0, 100.0), &cfg);
        assert_eq!(r.verdict, Verdict::Inconclusive);
        assert!(!r.resolvable && !worth_more(std::slice::from_ref(&r)));
        assert!(r.too_noisy(), "{}", r.reason);
        assert!(r.reason.contains("too noisy"), "{}", r.reason);
        // A required failure ends the run whatever else is open.
        let mut f = r.clone();
        f.verdict = Verdict::Fail;
        let mut open = r;
        open.resolvable = true;
        assert!(!worth_more(&[open, f]));
    }

    #[test]
    fn an_open_metric_carries_why_and_its_words_come_from_it() {
        let noisy = Open::Straddles {
            high: 1.2,
            limit: 1.05,
            above: true,
            too_noisy: Some(TooNoisy { threshold: 0.05, budget: 40, detectable: None }),
        };
        assert_eq!(
            noisy.to_string(),
            "interval reaches 20.0% (limit 5.0%) and the estimate is above the limit, but not \
             significantly; runner too noisy for a 5.0% threshold on this metric (smallest change \
             detectable with 40 repetitions: none)"
        );
        let cfg = GateConfig::default();
        let mut r = one(vec![1.0, 2.0, 3.0], vec![1.5, 2.5, 3.5], &cfg);
        r.set_open(noisy);
        assert!(r.too_noisy());
        assert_eq!(r.verdict, Verdict::Inconclusive);
        assert_eq!(r.reason, noisy.to_string());
        // Not in verdict.json: the words are.
        let json = serde_json::to_value(&r).unwrap();
        assert!(json.get("open").is_none(), "{json}");
        r.set_open(Open::TooFewRepetitions);
        assert!(!r.too_noisy());
        assert_eq!(
            r.reason,
            "too few repetitions for an interval at this confidence"
        );
    }

    #[test]
    fn overall_verdict_and_exit_codes() {
        let cfg = GateConfig::default();
        let mk = |required, verdict| MetricResult {
            required,
            verdict,
            ..one(vec![1.0; 3], vec![1.0; 3], &cfg)
        };
        assert_eq!(
            overall(&[mk(true, Verdict::Pass)], &cfg),
            (Overall::Pass, 0)
        );
        assert_eq!(
            overall(&[mk(true, Verdict::Pass), mk(false, Verdict::Fail)], &cfg),
            (Overall::Pass, 0)
        );
        assert_eq!(
            overall(&[mk(true, Verdict::Inconclusive)], &cfg),
            (Overall::Inconclusive, 3)
        );
        assert_eq!(
            overall(
                &[mk(true, Verdict::Inconclusive), mk(true, Verdict::Fail)],
                &cfg
            ),
            (Overall::Fail, 1)
        );
    }
}
