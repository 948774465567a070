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
//! The page shell ([`page`]) and the plotting helpers ([`plots`], [`chart`]) are public so other
//! pages (the sweep's) look the same; the labels come from [`crate::format`]. Like every writer here, this reads
//! [`RunResults`] and never measures.

pub mod chart;
mod occupancy;
mod page;
pub mod plots;

pub use page::{page, render};

/// `index.html` as a [`Writer`](crate::writer::Writer): a page, written again by
/// `mallard report DIR`.
pub const HTML: crate::writer::Page = crate::writer::Page { name: "index.html", render };
pub use plots::{expected_plots, plotted_kinds, PALETTE, PLOT_SIZE};

#[cfg(test)]
use crate::model::RunResults;

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

    /// The page of `r`, its rows summarised here.
    fn render(r: &RunResults) -> String {
        super::render(r, &crate::summary::summarize(r))
    }
    use crate::hist;
    use crate::model::*;

    /// Two allocators, two repetitions, malloc and free with a spread of latencies.
    pub fn sample() -> RunResults {
        let mut r = RunResults { schema: SCHEMA_VERSION, ..Default::default() };
        r.tool.name = "mallard".into();
        r.started_unix = 1_700_000_000;
        r.traces.push(TraceInfo {
            name: "t<1>".into(),
            counts: EventCounts { malloc: 1000, free: 1000, ..Default::default() },
            events: 2000,
            peak_live_bytes: 1 << 20,
            ..Default::default()
        });
        for a in ["arena", "glibc"] {
            r.allocators
                .push(AllocatorInfo { name: a.into(), ..Default::default() });
        }
        for (ai, a) in ["arena", "glibc"].iter().enumerate() {
            for rep in 0..2u32 {
                let values = (1..=1000u64).map(|v| v * 1000 * (ai as u64 + 1));
                let lat = hist::figures_for_tests(values, 500.0, 8.0);
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
            for (cold, warm) in [(&rp.batched, &mut rp.batched_warm), (&rp.tail, &mut rp.tail_warm)]
            {
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
}
