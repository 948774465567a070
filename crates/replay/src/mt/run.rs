//! The loop of one replay thread: each pass (throughput, batched, tail) over the thread's
//! operations, waiting before an operation that takes an object from another thread and
//! signalling after one that hands an object on.

use super::handoff::{signal, wait_for, Waiting};
use super::program::MtOp;
use super::samples::ThreadSamples;
use crate::backend::Backend;
use crate::engine::{call, touch_op, OpFailed, TickScale};
use crate::measure::{read_start, read_stop};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// What one pass of a multi-threaded replay measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MtPass {
    Throughput,
    Batched { batch: usize },
    Tail,
}

/// A failed operation in a thread aborts that thread; the flags it would have set are set
/// anyway so no other thread waits forever.
#[allow(clippy::too_many_arguments)]
pub(super) fn run_thread<B: Backend, const T: u8>(
    b: &mut B,
    ops: &[MtOp],
    sp: *mut *mut u8,
    flags: &[AtomicU32],
    pass: MtPass,
    scale: TickScale,
    hists: &mut ThreadSamples,
    progress: &AtomicU64,
    how: Waiting,
) -> Result<(), OpFailed> {
    let fail = |i: usize| {
        for op in &ops[i..] {
            if op.signal != 0 {
                signal(&flags[op.signal as usize - 1], how);
            }
        }
        Err(OpFailed { index: i, op: ops[i].op })
    };
    match pass {
        MtPass::Throughput => {
            for (i, op) in ops.iter().enumerate() {
                if op.wait != 0 {
                    wait_for(&flags[op.wait as usize - 1], how);
                }
                // SAFETY: this thread owns op's slot now (hand-off above); see engine::call.
                unsafe {
                    if !call(b, sp, &op.op) {
                        return fail(i);
                    }
                    touch_op::<T>(sp, &op.op);
                }
                if op.signal != 0 {
                    signal(&flags[op.signal as usize - 1], how);
                }
            }
            progress.store(ops.len() as u64, Ordering::Relaxed);
        }
        MtPass::Tail => {
            for (i, op) in ops.iter().enumerate() {
                if op.wait != 0 {
                    wait_for(&flags[op.wait as usize - 1], how);
                }
                let t0 = read_start();
                // SAFETY: as above.
                let ok = unsafe { call(b, sp, &op.op) };
                let t1 = read_stop();
                if !ok {
                    return fail(i);
                }
                // SAFETY: as above.
                unsafe { touch_op::<T>(sp, &op.op) };
                if op.signal != 0 {
                    signal(&flags[op.signal as usize - 1], how);
                }
                hists.record(op.op.kind, t1.wrapping_sub(t0), 1, scale);
                if i % 256 == 0 {
                    progress.store(i as u64, Ordering::Relaxed);
                }
            }
            progress.store(ops.len() as u64, Ordering::Relaxed);
        }
        MtPass::Batched { batch } => {
            let batch = batch.max(1);
            let mut i = 0;
            while i < ops.len() {
                let kind = ops[i].op.kind;
                if ops[i].wait != 0 {
                    wait_for(&flags[ops[i].wait as usize - 1], how);
                }
                // A run ends at a kind change, at the batch size, before an operation that
                // must wait, and after one that signals (so no bracket holds a wait).
                let mut j = i + 1;
                if ops[i].signal == 0 {
                    while j < ops.len()
                        && j - i < batch
                        && ops[j].op.kind == kind
                        && ops[j].wait == 0
                    {
                        j += 1;
                        if ops[j - 1].signal != 0 {
                            break;
                        }
                    }
                }
                let run = &ops[i..j];
                let t0 = read_start();
                for (k, op) in run.iter().enumerate() {
                    // SAFETY: as above.
                    if unsafe { !call(b, sp, &op.op) } {
                        return fail(i + k);
                    }
                }
                let t1 = read_stop();
                for op in run {
                    // SAFETY: as above.
                    unsafe { touch_op::<T>(sp, &op.op) };
                }
                if let Some(last) = run.last() {
                    if last.signal != 0 {
                        signal(&flags[last.signal as usize - 1], how);
                    }
                }
                hists.record(kind, t1.wrapping_sub(t0), run.len() as u64, scale);
                i = j;
                progress.store(i as u64, Ordering::Relaxed);
            }
        }
    }
    Ok(())
}
