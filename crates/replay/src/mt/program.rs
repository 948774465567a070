//! Per-thread programs: [`split`] turns the global order into one operation list per recorded
//! thread, tying an object's operations on two threads by a hand-off (see `mt`'s module docs).

use crate::program::{Op, OpCounts, OpKind, Program};

/// An operation of one thread, with its hand-off flags (0: none; k + 1: flag k).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MtOp {
    pub op: Op,
    pub wait: u32,
    pub signal: u32,
}

/// The operations of one recorded thread.
#[derive(Clone, Debug, Default)]
pub struct ThreadProgram {
    pub ops: Vec<MtOp>,
    pub counts: OpCounts,
}

/// A program split by thread.
#[derive(Clone, Debug, Default)]
pub struct MtProgram {
    pub threads: Vec<ThreadProgram>,
    pub slots: usize,
    /// Number of cross-thread hand-offs (sync flags).
    pub handoffs: usize,
    /// Frees and reallocs of an object last touched by another thread.
    pub cross_thread_frees: u64,
}

/// Splits `prog` by recording thread (see the module docs).
pub fn split(prog: &Program) -> MtProgram {
    let nthreads = prog.threads.max(1) as usize;
    let mut threads: Vec<ThreadProgram> = (0..nthreads).map(|_| ThreadProgram::default()).collect();
    let mut mt_slot = vec![u32::MAX; prog.slots]; // serial slot -> slot of the live object
    let mut last: Vec<(u32, u32)> = Vec::new(); // per MT slot: (thread, index) of its last op
    let mut free_lists: Vec<Vec<u32>> = vec![Vec::new(); nthreads];
    let mut handoffs = 0usize;
    let mut cross = 0u64;
    for (i, op) in prog.ops.iter().enumerate() {
        let t = prog.op_thread.get(i).copied().unwrap_or(0);
        let tp = &mut threads[t as usize];
        let idx = tp.ops.len() as u32;
        let mut mop = MtOp { op: *op, wait: 0, signal: 0 };
        let m = match op.kind {
            OpKind::Malloc | OpKind::Calloc | OpKind::Aligned => {
                let m = free_lists[t as usize].pop().unwrap_or_else(|| {
                    last.push((0, 0));
                    (last.len() - 1) as u32
                });
                mt_slot[op.slot as usize] = m;
                m
            }
            OpKind::Free | OpKind::Realloc => {
                let m = mt_slot[op.slot as usize];
                let (u, j) = last[m as usize];
                if u != t {
                    handoffs += 1;
                    cross += 1;
                    threads[u as usize].ops[j as usize].signal = handoffs as u32;
                    mop.wait = handoffs as u32;
                }
                if op.kind == OpKind::Free {
                    free_lists[t as usize].push(m);
                }
                m
            }
        };
        last[m as usize] = (t, idx);
        mop.op.slot = m;
        let tp = &mut threads[t as usize];
        tp.counts.add(op.kind);
        tp.ops.push(mop);
    }
    MtProgram {
        slots: last.len(),
        threads,
        handoffs,
        cross_thread_frees: cross,
    }
}
