//! Rank statistics for comparing two sets of repeated measurements.
//!
//! The gate compares, per metric, `n` baseline values with `m` candidate values, each value from
//! its own freshly started process. It asks two questions: *is the candidate larger?* (a test) and
//! *by how much?* (an estimate with an interval). Both answers come from one family of methods,
//! the Wilcoxon-Mann-Whitney rank test and its companion estimator:
//!
//! - **Test**: the Mann-Whitney U statistic counts the pairs (baseline, candidate) in which the
//!   candidate is larger. Under "no difference" its distribution depends only on `n` and `m`, so
//!   the p-value is exact for any shape of noise (computed by recursion for up to
//!   [`EXACT_MAX`] values a side; a normal approximation with tie correction beyond, or when the
//!   values have ties).
//! - **Estimate**: the Hodges-Lehmann shift, the median of all `n * m` differences
//!   `log(candidate_j) - log(baseline_i)`; `exp` of it is the candidate/baseline ratio.
//! - **Interval**: Moses' distribution-free interval: order statistics of the same `n * m`
//!   differences, at ranks taken from the U distribution. It contains the true ratio with the
//!   stated probability whatever the noise distribution, provided the two sides differ by a
//!   shift on the log scale (a multiplicative effect, which is what a slower allocator is).
//!
//! Why ranks rather than a bootstrap of medians or a t-test: CI machines have heavy-tailed noise
//! (one process lands on a busy core and takes twice as long). A mean or a t-interval is dragged
//! by one such outlier; a rank statistic moves by one rank. Unlike a bootstrap the result is
//! deterministic (no resampling seed: the same samples always give the same verdict) and exact
//! for small samples, where a bootstrap interval is too narrow. The efficiency cost is small:
//! for normal noise the rank test needs about 5% more repetitions than a t-test (asymptotic
//! relative efficiency 3/pi), for heavy tails it needs far fewer.
//!
//! Many metrics are tested at once, so p-values are adjusted with Holm's step-down method
//! (family-wise error rate, valid under any dependence) or Benjamini-Hochberg (false discovery
//! rate) before they are compared with alpha.
//!
//! This module knows nothing about allocators or metrics: it works on `f64` slices.

/// Largest sample size (per side) for which the exact U distribution is computed.
pub const EXACT_MAX: usize = 60;

/// The median of `v` (NaN for an empty slice).
pub fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    median_sorted(&s)
}

fn median_sorted(s: &[f64]) -> f64 {
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// Median absolute deviation from the median, scaled by 1.4826 so that it estimates the
/// standard deviation of normal noise.
pub fn mad_sd(v: &[f64]) -> f64 {
    if v.len() < 2 {
        return 0.0;
    }
    let m = median(v);
    let dev: Vec<f64> = v.iter().map(|x| (x - m).abs()).collect();
    1.4826 * median(&dev)
}

/// Robust coefficient of variation: [`mad_sd`] / |median|.
pub fn robust_cv(v: &[f64]) -> f64 {
    let m = median(v).abs();
    if m == 0.0 || !m.is_finite() {
        return 0.0;
    }
    mad_sd(v) / m
}

/// Classic coefficient of variation: sample standard deviation / |mean|.
pub fn cv(v: &[f64]) -> f64 {
    let n = v.len();
    if n < 2 {
        return 0.0;
    }
    let mean = v.iter().sum::<f64>() / n as f64;
    if mean == 0.0 {
        return 0.0;
    }
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    var.sqrt() / mean.abs()
}

/// Standard normal cumulative distribution function.
pub fn norm_cdf(z: f64) -> f64 {
    0.5 * erfc(-z / std::f64::consts::SQRT_2)
}

/// Complementary error function (Numerical Recipes' `erfcc`, fractional error < 1.2e-7).
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t
        * (-z * z - 1.265_512_23
            + t * (1.000_023_68
                + t * (0.374_091_96
                    + t * (0.096_784_18
                        + t * (-0.186_288_06
                            + t * (0.278_868_07
                                + t * (-1.135_203_98
                                    + t * (1.488_515_87
                                        + t * (-0.822_152_23 + t * 0.170_872_77)))))))))
            .exp();
    if x >= 0.0 {
        r
    } else {
        2.0 - r
    }
}

/// Quantile of the standard normal distribution (Acklam's rational approximation, relative
/// error < 1.2e-9), for `0 < p < 1`.
pub fn norm_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    let p = p.clamp(1e-300, 1.0 - 1e-16);
    let pl = 0.02425;
    if p < pl {
        let q = (-2.0 * p.ln()).sqrt();
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    } else if p <= 1.0 - pl {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    } else {
        -norm_quantile(1.0 - p)
    }
}

/// The exact null distribution of the Mann-Whitney U statistic for sample sizes `n` and `m`
/// without ties: element `u` is P(U = u), for u = 0 ..= n*m.
///
/// Recursion on the largest of the `n + m` values: it belongs to the first sample with
/// probability n/(n+m) and then beats all `m` values of the second (U = m + U(n-1, m)), or to
/// the second and beats nothing (U = U(n, m-1)).
pub fn u_pmf(n: usize, m: usize) -> Vec<f64> {
    // row[j] = distribution for (i, j) at the current i.
    let mut prev: Vec<Vec<f64>> = (0..=m).map(|_| vec![1.0]).collect(); // i = 0
    for i in 1..=n {
        let mut cur: Vec<Vec<f64>> = Vec::with_capacity(m + 1);
        cur.push(vec![1.0]); // j = 0
        for j in 1..=m {
            let mut d = vec![0.0; i * j + 1];
            let pa = i as f64 / (i + j) as f64;
            let pb = 1.0 - pa;
            for (u, &p) in prev[j].iter().enumerate() {
                d[u + j] += pa * p;
            }
            for (u, &p) in cur[j - 1].iter().enumerate() {
                d[u] += pb * p;
            }
            cur.push(d);
        }
        prev = cur;
    }
    prev.swap_remove(m)
}

/// The largest `u` with P(U <= u) <= `q` under the null, or `None` when even P(U = 0) > q.
fn u_lower_critical(n: usize, m: usize, q: f64) -> Option<usize> {
    if n <= EXACT_MAX && m <= EXACT_MAX {
        exact_lower_critical(&u_pmf(n, m), q)
    } else {
        let nm = (n * m) as f64;
        let sd = (nm * (n + m + 1) as f64 / 12.0).sqrt();
        normal_lower_critical(nm / 2.0, sd, q)
    }
}

/// The largest `k` with P(X <= k) <= `q` for the distribution `pmf` of a statistic on
/// 0, 1, 2, ..., or `None` when even P(X = 0) > q: the exact critical value of
/// [`u_lower_critical`] and [`signed_rank_lower_critical`].
fn exact_lower_critical(pmf: &[f64], q: f64) -> Option<usize> {
    let mut cdf = 0.0;
    let mut best = None;
    for (k, p) in pmf.iter().enumerate() {
        cdf += p;
        // A little slack for rounding in the recursion.
        if cdf <= q * (1.0 + 1e-9) {
            best = Some(k);
        } else {
            break;
        }
    }
    best
}

/// As [`exact_lower_critical`], from the normal approximation of a statistic with `mean` and
/// standard deviation `sd` (continuity-corrected).
fn normal_lower_critical(mean: f64, sd: f64, q: f64) -> Option<usize> {
    let c = (mean + norm_quantile(q) * sd - 0.5).floor();
    (c >= 0.0).then_some(c as usize)
}

/// The distribution-free interval of a shift: the order statistics `c` places in from either
/// end of `sorted` (the pairwise differences or Walsh averages), for the critical value `c` of
/// its rank test; `(None, None)` where the samples are too small for the level.
fn interval(sorted: &[f64], c: Option<usize>) -> (Option<f64>, Option<f64>) {
    match c {
        Some(c) => (Some(sorted[c]), Some(sorted[sorted.len() - 1 - c])),
        None => (None, None),
    }
}

/// One-sided p-values (greater, less) of the observed statistic `s` under its exact null
/// distribution `pmf`: P(X >= s) and P(X <= s).
fn exact_p(pmf: &[f64], s: usize) -> (f64, f64) {
    let p_ge: f64 = pmf[s..].iter().sum();
    let p_le: f64 = pmf[..=s].iter().sum();
    (p_ge.min(1.0), p_le.min(1.0))
}

/// As [`exact_p`], from the normal approximation with `mean` and variance `var`
/// (continuity-corrected); (1, 1) where the variance is none (every value equal: no evidence
/// either way).
fn normal_p(s: f64, mean: f64, var: f64) -> (f64, f64) {
    if var <= 0.0 {
        return (1.0, 1.0);
    }
    let sd = var.sqrt();
    (
        1.0 - norm_cdf((s - mean - 0.5) / sd),
        1.0 - norm_cdf((mean - s - 0.5) / sd),
    )
}

/// The result of comparing a candidate sample with a baseline sample.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Shift {
    /// Hodges-Lehmann estimate of candidate - baseline (on whatever scale the inputs were).
    pub estimate: f64,
    /// Moses interval for the shift; `None` where the samples are too small for the level.
    pub low: Option<f64>,
    pub high: Option<f64>,
    /// One-sided p-value of "the candidate is larger" (Mann-Whitney).
    pub p_greater: f64,
    /// One-sided p-value of "the candidate is smaller".
    pub p_less: f64,
    /// The rank statistic: Mann-Whitney U (pairs in which the candidate is larger, ties
    /// counting one half) for [`compare`], Wilcoxon's T+ for [`compare_paired`].
    pub u: f64,
    /// Whether p-values come from the exact distribution (else normal approximation).
    pub exact: bool,
}

/// Compares `cand` with `base`: Mann-Whitney test, Hodges-Lehmann estimate of the shift
/// `cand - base` and its two-sided Moses interval at confidence `1 - 2 * alpha_one_sided`
/// (so each bound is a one-sided bound at `alpha_one_sided`). Returns `None` if either side is
/// empty.
pub fn compare(base: &[f64], cand: &[f64], alpha_one_sided: f64) -> Option<Shift> {
    let n = base.len();
    let m = cand.len();
    if n == 0 || m == 0 {
        return None;
    }
    let mut diffs = Vec::with_capacity(n * m);
    let mut u = 0.0;
    for &b in base {
        for &c in cand {
            diffs.push(c - b);
            if c > b {
                u += 1.0;
            } else if c == b {
                u += 0.5;
            }
        }
    }
    diffs.sort_by(f64::total_cmp);
    let estimate = median_sorted(&diffs);
    let (low, high) = interval(&diffs, u_lower_critical(n, m, alpha_one_sided));

    // Ties across the pooled sample decide exact vs approximate p-values.
    let mut pooled: Vec<f64> = base.iter().chain(cand).copied().collect();
    pooled.sort_by(f64::total_cmp);
    let mut tie_term = 0.0;
    let mut i = 0;
    while i < pooled.len() {
        let mut j = i + 1;
        while j < pooled.len() && pooled[j] == pooled[i] {
            j += 1;
        }
        let t = (j - i) as f64;
        tie_term += t * t * t - t;
        i = j;
    }
    let exact = tie_term == 0.0 && n <= EXACT_MAX && m <= EXACT_MAX;
    let (p_greater, p_less) = if exact {
        exact_p(&u_pmf(n, m), u as usize) // no ties: U is an integer
    } else {
        let nf = n as f64;
        let mf = m as f64;
        let big_n = nf + mf;
        let var = nf * mf / 12.0 * ((big_n + 1.0) - tie_term / (big_n * (big_n - 1.0)));
        normal_p(u, nf * mf / 2.0, var)
    };
    Some(Shift { estimate, low, high, p_greater, p_less, u, exact })
}

/// Largest number of pairs for which the exact signed-rank distribution is computed.
pub const EXACT_MAX_PAIRS: usize = 200;

/// The exact null distribution of the Wilcoxon signed-rank statistic `T+` for `n` pairs
/// without ties or zeros: element `t` is P(T+ = t), for t = 0 ..= n(n+1)/2. Under the null each
/// rank 1..=n carries a + sign with probability 1/2, independently.
pub fn signed_rank_pmf(n: usize) -> Vec<f64> {
    let total = n * (n + 1) / 2;
    let mut d = vec![0.0; total + 1];
    d[0] = 1.0;
    let mut top = 0;
    for k in 1..=n {
        top += k;
        for t in (k..=top).rev() {
            d[t] = 0.5 * (d[t] + d[t - k]);
        }
        for x in d[..k.min(top + 1)].iter_mut() {
            *x *= 0.5;
        }
    }
    d
}

/// The largest `t` with P(T+ <= t) <= `q` under the null, or `None` when even P(T+ = 0) > q.
fn signed_rank_lower_critical(n: usize, q: f64) -> Option<usize> {
    if n <= EXACT_MAX_PAIRS {
        exact_lower_critical(&signed_rank_pmf(n), q)
    } else {
        let nf = n as f64;
        let mean = nf * (nf + 1.0) / 4.0;
        let sd = (nf * (nf + 1.0) * (2.0 * nf + 1.0) / 24.0).sqrt();
        normal_lower_critical(mean, sd, q)
    }
}

/// Compares paired samples: `cand[i]` was measured right beside `base[i]` (the same moment of
/// the machine), so the differences `d_i = cand[i] - base[i]` carry the effect without the
/// machine's slow drift. Wilcoxon signed-rank test on the `d_i`; the estimate is the
/// one-sample Hodges-Lehmann shift (median of the Walsh averages `(d_i + d_j) / 2`, i <= j) and
/// the interval its distribution-free companion (order statistics of the Walsh averages at
/// ranks from the signed-rank distribution), at confidence `1 - 2 * alpha_one_sided`.
/// Returns `None` for empty or unequal samples.
///
/// Exact p-values for up to [`EXACT_MAX_PAIRS`] pairs without ties or zero differences; else
/// the normal approximation with zeros dropped (Wilcoxon's rule) and the tie correction.
pub fn compare_paired(base: &[f64], cand: &[f64], alpha_one_sided: f64) -> Option<Shift> {
    let n = base.len();
    if n == 0 || cand.len() != n {
        return None;
    }
    let d: Vec<f64> = base.iter().zip(cand).map(|(b, c)| c - b).collect();
    let mut walsh = Vec::with_capacity(n * (n + 1) / 2);
    for i in 0..n {
        for j in i..n {
            walsh.push((d[i] + d[j]) / 2.0);
        }
    }
    walsh.sort_by(f64::total_cmp);
    let estimate = median_sorted(&walsh);
    let (low, high) = interval(&walsh, signed_rank_lower_critical(n, alpha_one_sided));

    // Ranks of |d| over the non-zero differences, ties averaged.
    let mut nz: Vec<f64> = d.iter().copied().filter(|&x| x != 0.0).collect();
    nz.sort_by(|a, b| a.abs().total_cmp(&b.abs()));
    let m = nz.len();
    let mut t_plus = 0.0;
    let mut tie_term = 0.0;
    let mut i = 0;
    while i < m {
        let mut j = i + 1;
        while j < m && nz[j].abs() == nz[i].abs() {
            j += 1;
        }
        let rank = (i + 1 + j) as f64 / 2.0; // mean of ranks i+1 ..= j
        t_plus += rank * nz[i..j].iter().filter(|&&x| x > 0.0).count() as f64;
        let t = (j - i) as f64;
        tie_term += t * t * t - t;
        i = j;
    }
    let exact = m == n && tie_term == 0.0 && n <= EXACT_MAX_PAIRS;
    let (p_greater, p_less) = if exact {
        exact_p(&signed_rank_pmf(n), t_plus as usize)
    } else if m == 0 {
        (1.0, 1.0)
    } else {
        let mf = m as f64;
        let mean = mf * (mf + 1.0) / 4.0;
        let var = mf * (mf + 1.0) * (2.0 * mf + 1.0) / 24.0 - tie_term / 48.0;
        normal_p(t_plus, mean, var)
    };
    Some(Shift {
        estimate,
        low,
        high,
        p_greater,
        p_less,
        u: t_plus,
        exact,
    })
}

/// How p-values of many simultaneous tests are adjusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Correction {
    /// Holm's step-down: controls the probability of *any* false alarm (family-wise error).
    Holm,
    /// Benjamini-Hochberg: controls the expected share of false alarms among alarms.
    Bh,
    /// No adjustment (not recommended with many metrics).
    None,
}

/// A correction name [`Correction`] does not know: the name as given.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown correction '{0}' (known: holm, bh, none)")]
pub struct UnknownCorrection(pub String);

impl std::str::FromStr for Correction {
    type Err = UnknownCorrection;
    fn from_str(s: &str) -> Result<Self, UnknownCorrection> {
        match s.to_ascii_lowercase().as_str() {
            "holm" => Ok(Correction::Holm),
            "bh" | "benjamini-hochberg" | "fdr" => Ok(Correction::Bh),
            "none" => Ok(Correction::None),
            _ => Err(UnknownCorrection(s.into())),
        }
    }
}

impl std::fmt::Display for Correction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Correction::Holm => "holm",
            Correction::Bh => "bh",
            Correction::None => "none",
        })
    }
}

/// Adjusted p-values, in the order of `p`. An adjusted p-value below alpha is significant with
/// the correction's guarantee.
pub fn adjust(p: &[f64], how: Correction) -> Vec<f64> {
    let m = p.len();
    let mut idx: Vec<usize> = (0..m).collect();
    idx.sort_by(|&a, &b| p[a].total_cmp(&p[b]));
    let mut out = vec![1.0; m];
    match how {
        Correction::None => return p.iter().map(|x| x.min(1.0)).collect(),
        Correction::Holm => {
            let mut running: f64 = 0.0;
            for (rank, &i) in idx.iter().enumerate() {
                let v = ((m - rank) as f64 * p[i]).min(1.0);
                running = running.max(v);
                out[i] = running;
            }
        }
        Correction::Bh => {
            let mut running: f64 = 1.0;
            for (rank, &i) in idx.iter().enumerate().rev() {
                let v = (m as f64 / (rank + 1) as f64 * p[i]).min(1.0);
                running = running.min(v);
                out[i] = running;
            }
        }
    }
    out
}

/// The smallest relative change (as a ratio - 1) that a comparison of `n` against `n`
/// repetitions detects with probability `power`, at one-sided level `alpha`, when the noise on
/// the log scale has standard deviation `sigma_log`. Uses the normal approximation of the
/// Hodges-Lehmann estimator's spread, `sigma * sqrt(2/n) / sqrt(3/pi)`.
pub fn detectable_change(sigma_log: f64, n: u32, alpha: f64, power: f64) -> f64 {
    if n == 0 {
        return f64::INFINITY;
    }
    let se = sigma_log * (2.0 / n as f64).sqrt() / (3.0 / std::f64::consts::PI).sqrt();
    let z = norm_quantile(1.0 - alpha) + norm_quantile(power);
    (z * se).exp() - 1.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn u_distribution_is_exact_for_small_samples() {
        // n = m = 2: the 6 arrangements give U = 0,1,2,2,3,4.
        let d = u_pmf(2, 2);
        let want = [1.0, 1.0, 2.0, 1.0, 1.0].map(|x| x / 6.0);
        for (a, b) in d.iter().zip(want) {
            assert!((a - b).abs() < 1e-12, "{d:?}");
        }
        // Sums to one and is symmetric for bigger sizes.
        let d = u_pmf(7, 11);
        assert!((d.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        for u in 0..d.len() {
            assert!((d[u] - d[d.len() - 1 - u]).abs() < 1e-12);
        }
        // P(U = 0) = 1 / C(n+m, n).
        let d = u_pmf(10, 10);
        assert!((d[0] - 1.0 / 184_756.0).abs() < 1e-15);
    }

    #[test]
    fn normal_functions_match_tables() {
        assert!((norm_cdf(0.0) - 0.5).abs() < 1e-7);
        assert!((norm_cdf(1.959_963_985) - 0.975).abs() < 1e-6);
        assert!((norm_quantile(0.975) - 1.959_963_985).abs() < 1e-6);
        assert!((norm_quantile(0.05) + 1.644_853_627).abs() < 1e-6);
        assert!((norm_quantile(1e-6) + 4.753_424_309).abs() < 1e-5);
    }

    #[test]
    fn mann_whitney_complete_separation() {
        let b = [1.0, 2.0, 3.0, 4.0, 5.0];
        let c = [6.0, 7.0, 8.0, 9.0, 10.0];
        let s = compare(&b, &c, 0.025).unwrap();
        assert!(s.exact);
        assert_eq!(s.u, 25.0);
        // One arrangement of 252 is this extreme.
        assert!((s.p_greater - 1.0 / 252.0).abs() < 1e-12);
        assert!((s.p_less - 1.0).abs() < 1e-12);
        // Median of the 25 differences (1..=9 with a triangular count) is 5.
        assert_eq!(s.estimate, 5.0);
    }

    #[test]
    fn moses_interval_uses_tabulated_critical_value() {
        // n = m = 10, two-sided 95%: the tabulated lower critical value of U is 23, so the
        // interval runs from the 24th smallest to the 24th largest difference.
        assert_eq!(u_lower_critical(10, 10, 0.025), Some(23));
        // n = m = 5, two-sided 95%: critical value 2.
        assert_eq!(u_lower_critical(5, 5, 0.025), Some(2));
        // Too small to ever reach 99.9%: 1/C(6,3) = 0.05.
        assert_eq!(u_lower_critical(3, 3, 0.0005), None);
    }

    #[test]
    fn signed_rank_distribution_is_exact() {
        // n = 3: the 8 sign patterns give T+ = 0,1,2,3,3,4,5,6.
        let d = signed_rank_pmf(3);
        let want = [1.0, 1.0, 1.0, 2.0, 1.0, 1.0, 1.0].map(|x| x / 8.0);
        for (a, b) in d.iter().zip(want) {
            assert!((a - b).abs() < 1e-12, "{d:?}");
        }
        let d = signed_rank_pmf(30);
        assert_eq!(d.len(), 30 * 31 / 2 + 1);
        assert!((d.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        for t in 0..d.len() {
            assert!((d[t] - d[d.len() - 1 - t]).abs() < 1e-15);
        }
        assert!((d[0] - 0.5f64.powi(30)).abs() < 1e-20);
    }

    #[test]
    fn signed_rank_critical_values_match_tables() {
        // Tabulated two-sided 5% critical values of Wilcoxon's T: n = 6: 0, n = 10: 8,
        // n = 20: 52; n = 5 cannot reach it (P(T = 0) = 1/32 > 0.025).
        assert_eq!(signed_rank_lower_critical(6, 0.025), Some(0));
        assert_eq!(signed_rank_lower_critical(10, 0.025), Some(8));
        assert_eq!(signed_rank_lower_critical(20, 0.025), Some(52));
        assert_eq!(signed_rank_lower_critical(5, 0.025), None);
        // The normal approximation beyond the exact range agrees with the exact one near it.
        let exact = signed_rank_lower_critical(EXACT_MAX_PAIRS, 0.005).unwrap() as f64;
        let nf = EXACT_MAX_PAIRS as f64;
        let approx = nf * (nf + 1.0) / 4.0
            + norm_quantile(0.005) * (nf * (nf + 1.0) * (2.0 * nf + 1.0) / 24.0).sqrt();
        assert!(
            (exact - approx).abs() / exact < 0.002,
            "{exact} vs {approx}"
        );
    }

    #[test]
    fn paired_all_positive_differences() {
        let b = [10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0];
        let c = [11.0, 22.0, 33.0, 44.0, 55.0, 66.0, 77.0, 88.0];
        let s = compare_paired(&b, &c, 0.025).unwrap();
        assert!(s.exact);
        assert_eq!(s.u, 36.0); // every rank positive: 1 + ... + 8
        assert!((s.p_greater - 0.5f64.powi(8)).abs() < 1e-15);
        assert!((s.p_less - 1.0).abs() < 1e-12);
        // Differences 1..=8: the median of their Walsh averages is 4.5.
        assert_eq!(s.estimate, 4.5);
        assert!(s.low.unwrap() > 0.0 && s.high.unwrap() <= 8.0);
        // Unequal lengths are not pairs.
        assert!(compare_paired(&b, &c[..7], 0.025).is_none());
        assert!(compare_paired(&[], &[], 0.025).is_none());
    }

    #[test]
    fn paired_zeros_and_ties_use_the_normal_approximation() {
        let b = [1.0; 12];
        let c = [1.0, 1.0, 2.0, 2.0, 2.0, 0.0, 2.0, 2.0, 2.0, 2.0, 1.5, 1.5];
        let s = compare_paired(&b, &c, 0.025).unwrap();
        assert!(!s.exact);
        // Non-zero differences: +1 x7, -1 x1, +0.5 x2: ranks 1.5, 1.5 (the 0.5s), 6.5 (the
        // eight 1s share ranks 3..=10); T+ = 1.5 + 1.5 + 7 * 6.5 = 48.5.
        assert_eq!(s.u, 48.5);
        assert!(s.p_greater < 0.02 && s.p_greater > 0.001, "{}", s.p_greater);
        // All differences zero: no evidence either way.
        let s = compare_paired(&b, &b, 0.025).unwrap();
        assert_eq!((s.p_greater, s.p_less, s.estimate), (1.0, 1.0, 0.0));
    }

    /// Deterministic noise for the tests: a 64-bit LCG mapped to roughly normal values (sum of
    /// four uniforms, centred, unit variance).
    fn noise(seed: &mut u64) -> f64 {
        let mut sum = 0.0;
        for _ in 0..4 {
            *seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            sum += (*seed >> 11) as f64 / (1u64 << 53) as f64;
        }
        (sum - 2.0) * 3f64.sqrt()
    }

    #[test]
    fn pairing_cancels_drift_that_hides_a_shift_from_the_unpaired_test() {
        // A machine whose speed drifts by +-15% between pairs (log scale), 1% noise within a
        // pair, and a candidate truly 6% slower.
        let mut seed = 7;
        let (mut b, mut c) = (Vec::new(), Vec::new());
        for _ in 0..20 {
            let drift = 0.15 * noise(&mut seed);
            b.push(drift + 0.01 * noise(&mut seed));
            c.push(drift + 0.06f64.ln_1p() + 0.01 * noise(&mut seed));
        }
        let un = compare(&b, &c, 0.0025).unwrap();
        let pa = compare_paired(&b, &c, 0.0025).unwrap();
        // Unpaired: the drift swamps the shift.
        assert!(un.p_greater > 0.0025, "{un:?}");
        assert!(un.high.unwrap() - un.low.unwrap() > 0.1, "{un:?}");
        // Paired: decided, and the interval holds the true 6% tightly.
        assert!(pa.p_greater < 1e-5, "{pa:?}");
        let (lo, hi) = (pa.low.unwrap().exp() - 1.0, pa.high.unwrap().exp() - 1.0);
        assert!(
            lo > 0.045 && hi < 0.075 && lo < 0.06 && hi > 0.06,
            "{lo} {hi}"
        );
    }

    #[test]
    fn holm_and_bh_by_hand() {
        let p = [0.01, 0.04, 0.03, 0.005];
        let h = adjust(&p, Correction::Holm);
        // sorted: 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> monotone 0.06
        let want = [0.03, 0.06, 0.06, 0.02];
        for (a, b) in h.iter().zip(want) {
            assert!((a - b).abs() < 1e-12, "{h:?}");
        }
        let f = adjust(&p, Correction::Bh);
        // sorted: 0.005*4/1=0.02, 0.01*4/2=0.02, 0.03*4/3=0.04, 0.04*4/4=0.04
        let want = [0.02, 0.04, 0.04, 0.02];
        for (a, b) in f.iter().zip(want) {
            assert!((a - b).abs() < 1e-12, "{f:?}");
        }
    }

    #[test]
    fn ties_use_the_corrected_normal_approximation() {
        let b = [1.0, 1.0, 2.0, 2.0, 3.0, 3.0];
        let c = [1.0, 1.0, 2.0, 2.0, 3.0, 3.0];
        let s = compare(&b, &c, 0.025).unwrap();
        assert!(!s.exact);
        assert_eq!(s.u, 18.0);
        assert!(s.p_greater > 0.5 && s.p_less > 0.5);
        let all = [5.0; 8];
        let s = compare(&all, &all, 0.025).unwrap();
        assert_eq!((s.p_greater, s.p_less), (1.0, 1.0));
        assert_eq!(s.estimate, 0.0);
    }

    #[test]
    fn robust_spread() {
        let v = [10.0, 10.0, 11.0, 9.0, 1000.0];
        assert_eq!(median(&v), 10.0);
        assert!((mad_sd(&v) - 1.4826).abs() < 1e-12);
        assert!(cv(&v) > 1.0);
        assert!((robust_cv(&v) - 0.14826).abs() < 1e-12);
    }

    #[test]
    fn detectable_change_shrinks_with_repetitions() {
        let a = detectable_change(0.02, 10, 0.001, 0.95);
        let b = detectable_change(0.02, 40, 0.001, 0.95);
        assert!(a > b && b > 0.0);
        assert!((a / b - 2.0).abs() < 0.1, "{a} {b}");
    }
}
