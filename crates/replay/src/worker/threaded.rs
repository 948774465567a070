//! The worker's faithful multi-threaded replay ([`crate::mt`]): one OS thread per recorded
//! thread, the RSS sampler polling the threads' progress, N iterations (the first cold), and
//! the per-thread samples turned into figures.

use super::readings::{
    drain, finish_iterations, floor_figures, kind_figures, routed, thread_figures,
    throughput_figures, with_settings, Around, Held,
};
use super::{Pass, WorkerError, WorkerOutput, WorkerSpec};
use crate::backend::Backend;
use crate::engine::{KindHists, Slots};
use crate::measure::{self, Rss};
use crate::mt;
use crate::program::Program;
use mallard_report::{RssSample, ThreadInfo};

pub(super) fn run_mt<B: Backend, F: Fn() -> B + Sync>(
    spec: &WorkerSpec,
    prog: &Program,
    mt: &mt::MtProgram,
    make: F,
) -> Result<WorkerOutput, WorkerError> {
    let timer = super::protocol::timer(spec);
    let mut slots = Slots::new(mt.slots);
    let rss = Rss::open().ok_or(WorkerError::Statm)?;
    let n = prog.ops.len() as u64;
    let iterations = spec.iterations.max(1) as usize;
    let progress = mt::Progress::new(mt.threads.len());
    let wanted = if spec.pass == Pass::Batched {
        spec.rss_samples
    } else {
        0
    };
    let every = n.checked_div(wanted).map_or(u64::MAX, |e| e.max(1));
    let points: Vec<u64> = if wanted == 0 {
        vec![]
    } else {
        (1..=n / every).map(|k| k * every).collect()
    };
    let live = prog.live_bytes_at(&points);
    let mut timeline: Vec<RssSample> = Vec::with_capacity(points.len() + 1);
    let mut per_iteration: Vec<f64> = Vec::with_capacity(iterations);
    let mut warm = (iterations > 1 && spec.pass != Pass::Throughput).then(KindHists::new);
    let (floor, scale) = super::protocol::start(spec, &timer)?;
    let pass = match spec.pass {
        Pass::Throughput => mt::MtPass::Throughput,
        Pass::Batched => mt::MtPass::Batched { batch: spec.batch },
        Pass::Tail => mt::MtPass::Tail,
    };
    let run = mt::MtRun {
        prog: mt,
        touch: spec.touch,
        pass,
        scale,
        progress: &progress,
    };
    let around = Around::begin(&rss, &mut make());
    let held_before = around.held_before;
    let mut cpu_ns = 0;
    let stop = std::sync::atomic::AtomicBool::new(false);
    // The cold iteration, with the RSS sampler of the batched pass.
    let outcome = std::thread::scope(|s| {
        // The RSS sampler: polls the threads' progress every 200 us (sleeping in between,
        // so it takes little CPU from the replay) and samples when the next point is passed.
        let sampler = (wanted > 0).then(|| {
            let (rss, progress, stop, live, make, timeline) =
                (&rss, &progress, &stop, &live, &make, &mut timeline);
            s.spawn(move || {
                let mut b = make();
                let mut k = 0usize;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && k < live.len() {
                    let done = progress.total();
                    if done >= (k as u64 + 1) * every {
                        timeline.push(RssSample {
                            ops_done: done,
                            rss_bytes: rss.read(),
                            live_bytes: live[((done / every) as usize)
                                .saturating_sub(1)
                                .min(live.len() - 1)],
                            footprint_bytes: Held::read(&mut b).net_since(held_before),
                        });
                        k = (done / every) as usize;
                    } else {
                        std::thread::sleep(std::time::Duration::from_micros(200));
                    }
                }
            })
        });
        let cpu0 = measure::process_cpu_ns();
        let out = mt::replay(run, &slots, &make);
        cpu_ns = measure::process_cpu_ns() - cpu0;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(h) = sampler {
            let _ = h.join();
        }
        out
    });
    let after = around.end(&rss);
    let outcome = outcome?;
    per_iteration.push(outcome.elapsed_ns / n.max(1) as f64);
    let mut b = make();
    let mut out = WorkerOutput::default();
    if spec.pass == Pass::Throughput {
        out.throughput = Some(throughput_figures(n, outcome.elapsed_ns, cpu_ns));
        out.memory = Some(after.memory(&mut b, prog));
        out.allocator_stats = with_settings(routed::<B>(b.stats(), prog), spec);
    } else {
        out.timer_floor = Some(floor_figures(&timer, &floor));
        let mut all = KindHists::new();
        for (t, samples) in outcome.per_thread.iter().enumerate() {
            samples.add_to(&mut all);
            out.per_thread
                .push(thread_figures(t as u32, samples, &timer));
        }
        out.latency = kind_figures(&all, prog, &timer);
    }
    drop(outcome);
    slots.free_all(&mut b);
    // The warm iterations: the same replay again on the emptied slot table (each starts its
    // threads afresh behind the start barrier; nothing here is timed).
    for _ in 1..iterations {
        progress.reset();
        let outcome = mt::replay(run, &slots, &make)
            .map_err(|source| WorkerError::Warm { number: None, source })?;
        per_iteration.push(outcome.elapsed_ns / n.max(1) as f64);
        if let Some(w) = warm.as_mut() {
            for samples in &outcome.per_thread {
                samples.add_to(w);
            }
        }
        drop(outcome);
        slots.free_all(&mut b);
    }
    finish_iterations(spec, &mut out, &per_iteration, warm.as_ref(), prog, &timer);
    if spec.drain {
        if let Some(m) = out.memory.as_mut() {
            m.drain = drain(&rss, &mut b, held_before);
        }
    }
    out.rss_timeline = timeline;
    out.threads = Some(ThreadInfo {
        threads: mt.threads.len() as u32,
        handoffs: mt.handoffs as u64,
        cross_thread_frees: mt.cross_thread_frees,
        mode: "faithful".into(),
    });
    Ok(out)
}
