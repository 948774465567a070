//! The worker's single-threaded replay: the three passes through [`crate::engine`] on one
//! backend, N iterations (the first cold), the RSS timeline and the arena's occupancy sampled
//! during the batched pass.

use super::readings::{
    drain, finish_iterations, floor_figures, kind_figures, routed, throughput_figures,
    with_settings, Around, Held,
};
use super::{Pass, WorkerError, WorkerOutput, WorkerSpec};
use crate::backend::Backend;
use crate::engine::{self, KindHists, Sampler, Slots};
use crate::measure::{self, Rss};
use crate::program::Program;
use mallard_report::RssSample;

struct RssSampler<'a> {
    rss: &'a Rss,
    held_before: Held,
    live: &'a [u64],
    out: &'a mut Vec<RssSample>,
    /// The arena's occupancy, sampled with the RSS (arena contenders).
    occupancy: Option<&'a mut crate::occupancy::Recorder>,
}

impl<B: Backend> Sampler<B> for RssSampler<'_> {
    fn sample(&mut self, ops_done: u64, backend: &mut B) {
        let k = self.out.len();
        let footprint = Held::read(backend).net_since(self.held_before);
        if k < self.out.capacity() {
            self.out.push(RssSample {
                ops_done,
                rss_bytes: self.rss.read(),
                live_bytes: self.live.get(k).copied().unwrap_or(0),
                footprint_bytes: footprint,
            });
        }
        if let Some(o) = self.occupancy.as_deref_mut() {
            o.at_rss_sample(ops_done, backend);
        }
    }
}

pub(super) fn run_with<B: Backend>(
    spec: &WorkerSpec,
    prog: &Program,
    mut b: B,
) -> Result<WorkerOutput, WorkerError> {
    let timer = super::protocol::timer(spec);
    let mut slots = Slots::new(prog.slots);
    let mut hists = KindHists::new();
    let iterations = spec.iterations.max(1) as usize;
    let mut warm = (iterations > 1 && spec.pass != Pass::Throughput).then(KindHists::new);
    let mut per_iteration: Vec<f64> = Vec::with_capacity(iterations);
    let rss = Rss::open().ok_or(WorkerError::Statm)?;
    let n = prog.ops.len() as u64;
    let sample_every = n.checked_div(spec.rss_samples).map_or(0, |e| e.max(1));
    let points: Vec<u64> = (1..=n.checked_div(sample_every).unwrap_or(0))
        .map(|k| k * sample_every)
        .collect();
    let live = prog.live_bytes_at(&points);
    let mut timeline: Vec<RssSample> = Vec::with_capacity(points.len() + 1);
    let mut occupancy = (spec.pass == Pass::Batched)
        .then(|| crate::occupancy::Recorder::new(&mut b, prog, points.len(), &spec.arena))
        .flatten();
    let mut out = WorkerOutput::default();

    let (floor, scale) = super::protocol::start(spec, &timer)?;

    let around = Around::begin(&rss, &mut b);
    let held_before = around.held_before;
    // Ended after the first (cold) iteration: its readings are the replay's.
    let mut around = Some(around);
    // Opened before the baseline readings; absent where the machine has no counter.
    let counter = (spec.pass == Pass::Throughput)
        .then(|| measure::PerfCounter::open(measure::PerfEvent::Instructions).ok())
        .flatten();
    for it in 0..iterations {
        // The cold iteration's figures go where they always went; the warm ones' beside them.
        let cold = it == 0;
        let result = match spec.pass {
            Pass::Throughput => {
                let cpu0 = measure::thread_cpu_ns();
                if let (true, Some(c)) = (cold, &counter) {
                    c.start();
                }
                let r = engine::throughput(&mut b, prog, &mut slots, spec.touch);
                let instructions = counter.as_ref().filter(|_| cold).and_then(|c| c.stop());
                let cpu = measure::thread_cpu_ns() - cpu0;
                r.map(|ns| {
                    per_iteration.push(ns / n.max(1) as f64);
                    if cold {
                        let mut t = throughput_figures(n, ns, cpu);
                        t.instructions = instructions;
                        out.throughput = Some(t);
                    }
                })
            }
            Pass::Batched => {
                let h = match warm.as_mut() {
                    Some(w) if !cold => w,
                    _ => &mut hists,
                };
                let mut sampler = RssSampler {
                    rss: &rss,
                    held_before,
                    live: &live,
                    out: &mut timeline,
                    occupancy: if cold { occupancy.as_mut() } else { None },
                };
                // The RSS timeline is the cold iteration's.
                let every = if cold { sample_every } else { 0 };
                let pass = engine::Batched {
                    batch: spec.batch,
                    scale,
                    hists: h,
                    sample_every: every,
                    sampler: &mut sampler,
                };
                engine::batched(&mut b, prog, &mut slots, spec.touch, pass)
            }
            Pass::Tail => {
                let h = match warm.as_mut() {
                    Some(w) if !cold => w,
                    _ => &mut hists,
                };
                engine::tail(&mut b, prog, &mut slots, spec.touch, scale, h)
            }
        };
        if let Some(a) = around.take() {
            let after = a.end(&rss);
            result?;
            if let Some(o) = occupancy.as_mut() {
                o.take(n, &mut b); // the state after the last operation
            }
            if spec.pass == Pass::Throughput {
                out.memory = Some(after.memory(&mut b, prog));
                out.allocator_stats = with_settings(routed::<B>(b.stats(), prog), spec);
            }
        } else {
            result.map_err(|e| WorkerError::Warm { number: Some(it + 1), source: e.into() })?;
        }
        // Untimed: the next iteration starts from an empty slot table, as the first did.
        slots.free_all(&mut b);
    }

    if spec.pass != Pass::Throughput {
        out.timer_floor = Some(floor_figures(&timer, &floor));
        out.latency = kind_figures(&hists, prog, &timer);
    }
    finish_iterations(spec, &mut out, &per_iteration, warm.as_ref(), prog, &timer);
    if spec.drain {
        if let Some(m) = out.memory.as_mut() {
            m.drain = drain(&rss, &mut b, held_before);
        }
    }
    out.rss_timeline = timeline;
    out.arena_occupancy = occupancy.map(crate::occupancy::Recorder::finish);
    drop(b);
    Ok(out)
}
