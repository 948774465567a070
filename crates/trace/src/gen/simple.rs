//! The small generators: each one pattern an allocator must handle, in a few lines.

use super::rng::Rng;
use super::{GenParams, Out};
use crate::error::TraceError;
use crate::model::ObjectId;
use std::collections::VecDeque;

/// Mean-reverting choice: allocate with probability `(2 * target - live) / (2 * target)`, so
/// the live count wanders around `target` and starts by climbing to it.
pub(super) fn should_alloc(rng: &mut Rng, live: usize, target: u64) -> bool {
    let live = live as u64;
    live == 0 || (live < 2 * target && rng.below(2 * target) >= live)
}

/// `uniform`: malloc of 16..=512 bytes or free of a uniformly chosen live object.
pub(super) fn uniform(params: &GenParams, out: &mut Out<'_>) -> Result<(), TraceError> {
    const TARGET: u64 = 1000;
    let mut rng = Rng::new(params.seed, 0);
    let mut live: Vec<ObjectId> = Vec::new();
    while !out.full() {
        if should_alloc(&mut rng, live.len(), TARGET) {
            let size = rng.range(16, 512);
            live.push(out.malloc(size)?);
        } else {
            let i = rng.below(live.len() as u64) as usize;
            out.free(live.swap_remove(i))?;
        }
    }
    Ok(())
}

/// `fragmentation`: rounds that punch holes too small for what comes next.
pub(super) fn fragmentation(params: &GenParams, out: &mut Out<'_>) -> Result<(), TraceError> {
    const SMALL: usize = 2048;
    let mut rng = Rng::new(params.seed, 0);
    let mut previous: Vec<ObjectId> = Vec::new();
    loop {
        let mut smalls = Vec::with_capacity(SMALL);
        for _ in 0..SMALL {
            if out.full() {
                return Ok(());
            }
            let size = 16 * rng.range(1, 4);
            smalls.push(out.malloc(size)?);
        }
        let mut survivors = Vec::with_capacity(SMALL);
        for (i, &id) in smalls.iter().enumerate() {
            if i % 2 == 1 {
                if out.full() {
                    return Ok(());
                }
                out.free(id)?;
            } else {
                survivors.push(id);
            }
        }
        for _ in 0..SMALL / 2 {
            if out.full() {
                return Ok(());
            }
            let size = rng.range(128, 512);
            survivors.push(out.malloc(size)?);
        }
        for &id in &previous {
            if out.full() {
                return Ok(());
            }
            out.free(id)?;
        }
        previous = survivors;
    }
}

/// `lifo`: a stack of live objects; every free pops the top.
pub(super) fn lifo(params: &GenParams, out: &mut Out<'_>) -> Result<(), TraceError> {
    const DEPTH: u64 = 64;
    let mut rng = Rng::new(params.seed, 0);
    let mut stack: Vec<ObjectId> = Vec::new();
    while !out.full() {
        if should_alloc(&mut rng, stack.len(), DEPTH) {
            let size = rng.log_range(16, 1023);
            stack.push(out.malloc(size)?);
        } else if let Some(id) = stack.pop() {
            out.free(id)?;
        }
    }
    Ok(())
}

/// `realloc-growth`: growing buffers among small FIFO churn.
pub(super) fn realloc_growth(params: &GenParams, out: &mut Out<'_>) -> Result<(), TraceError> {
    const BUFFERS: usize = 32;
    const SMALL_QUEUE: usize = 16;
    struct Buffer {
        id: ObjectId,
        size: u64,
        cap: u64,
    }
    let mut rng = Rng::new(params.seed, 0);
    let mut buffers: Vec<Buffer> = Vec::new();
    let mut small: VecDeque<ObjectId> = VecDeque::new();
    while !out.full() {
        if rng.chance(1, 2) {
            if small.len() < SMALL_QUEUE {
                let size = rng.range(16, 128);
                small.push_back(out.malloc(size)?);
            } else if let Some(id) = small.pop_front() {
                out.free(id)?;
            }
        } else if buffers.len() < BUFFERS {
            let id = out.malloc(16)?;
            let cap = rng.log_range(1 << 10, 1 << 20);
            buffers.push(Buffer { id, size: 16, cap });
        } else {
            let i = rng.below(buffers.len() as u64) as usize;
            if buffers[i].size >= buffers[i].cap {
                out.free(buffers.swap_remove(i).id)?;
            } else {
                let b = &mut buffers[i];
                b.size = (b.size * 2).min(b.cap);
                b.id = out.realloc(b.id, b.size)?;
            }
        }
    }
    Ok(())
}
