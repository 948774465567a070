//! The multi-threaded generators: workloads defined by what each thread does, including freeing
//! objects that another thread allocated.
//!
//! A recording of a multi-threaded program is one sequence of calls in the order they happened,
//! each tagged with its thread. These generators build such a sequence by taking turns
//! ([`Turns`]): thread 0 makes a short burst of 1 to [`MAX_BURST`] steps, then thread 1, and so
//! on round-robin, wrapping after the last thread. A thread that cannot go on (a producer facing
//! a full queue, a consumer facing an empty one) ends its burst early.
//!
//! ```text
//!   thread   0 0 0 1 2 2 2 2 2 3 3 0 1 1 1 2 3 3 3 ...
//!            |burst|-|burst---|---|
//! ```
//!
//! Each generator draws its workload (sizes, victims) from one random stream and the turns from
//! another, both from the seed, so the output depends only on the seed, `events` and `threads`.
//! Unlike the thread mixer in [`super::Out`], the calls themselves change with `threads`.
//!
//! What makes an object's free *cross-thread* is the thread of the free differing from the
//! thread of the allocation: `larson` makes many, `producer-consumer` only those, and
//! `thread-local` none.

use super::rng::Rng;
use super::simple::should_alloc;
use super::{GenParams, Out};
use crate::error::TraceError;
use crate::model::ObjectId;
use std::collections::VecDeque;

/// The longest burst of steps a thread makes before the next thread's turn.
const MAX_BURST: u64 = 8;

/// Round-robin turns in short random bursts: which thread makes the next call.
struct Turns {
    rng: Rng,
    threads: u32,
    current: u32,
    /// Steps left in the current burst.
    left: u64,
}

impl Turns {
    fn new(params: &GenParams) -> Turns {
        Turns {
            rng: Rng::new(params.seed, 0x7475_726e), // "turn"
            threads: params.threads,
            // So that the first call to `next` starts thread 0's burst.
            current: params.threads - 1,
            left: 0,
        }
    }

    /// The thread that takes the next step.
    #[inline]
    fn next(&mut self) -> u32 {
        if self.left == 0 {
            self.current = (self.current + 1) % self.threads;
            self.left = self.rng.range(1, MAX_BURST);
        }
        self.left -= 1;
        self.current
    }

    /// The current thread has to wait: its burst ends now.
    #[inline]
    fn wait(&mut self) {
        self.left = 0;
    }
}

/// `larson`: the Larson and Krishnan server benchmark (ISMM 1998), as in its common `larson.cpp`.
///
/// There, each thread owns an array of `asize` blocks; a step frees a random block of it and
/// allocates a new one of a uniform random size in its place. After a number of steps the thread
/// starts a new thread, hands it the array and exits, so the new thread frees blocks the old one
/// allocated, as a server hands connections from thread to thread.
///
/// Here: `threads` windows of 256 slots, window `w` held by thread `(w + hand_offs) % threads`.
/// A thread's first steps fill its window (the benchmark's warm-up, which its main thread does);
/// then each step frees a random slot's object and allocates 16..=512 bytes in its place (two
/// events, on one thread). Every 64 steps per thread (counted over all threads), each window
/// passes to the next thread. A round is far shorter than the benchmark's (which replaces a
/// window many times over), so that a trace of a million events sees hundreds to thousands of
/// hand-offs.
///
/// The share of frees that are cross-thread: a round replaces about 22% of a window's slots
/// (1 - (1 - 1/256)^64), so nearly 90% of a round's frees are of objects from before the hand-off,
/// made by other threads, except those that survived since the window last belonged to this
/// thread (`threads` rounds ago). Measured on 200,000 events (seeds 1 to 3): 50% with 2
/// threads, 66% with 3, 74% with 4, 84% with 8 and 88% with 16 or more; none with 1 thread. The
/// tests hold it above 40% from 2 threads on.
pub(super) fn larson(params: &GenParams, out: &mut Out<'_>) -> Result<(), TraceError> {
    const WINDOW: usize = 256;
    const ROUND: u64 = 64;
    const MIN_SIZE: u64 = 16;
    const MAX_SIZE: u64 = 512;
    let threads = params.threads as usize;
    let mut rng = Rng::new(params.seed, 0);
    let mut turns = Turns::new(params);
    let mut windows: Vec<Vec<ObjectId>> = vec![Vec::with_capacity(WINDOW); threads];
    let round_steps = ROUND * threads as u64;
    let mut steps = 0u64;
    let mut hand_offs = 0usize;
    while !out.full() {
        if steps > 0 && steps % round_steps == 0 {
            hand_offs = (hand_offs + 1) % threads;
        }
        steps += 1;
        let thread = turns.next();
        // Thread `t` holds window `(t - hand_offs) mod threads`.
        let window = &mut windows[(thread as usize + threads - hand_offs) % threads];
        let size = rng.range(MIN_SIZE, MAX_SIZE);
        if window.len() < WINDOW {
            window.push(out.malloc_on(thread, size)?);
            continue;
        }
        let victim = rng.below(WINDOW as u64) as usize;
        out.free_on(thread, window[victim])?;
        if out.full() {
            break;
        }
        window[victim] = out.malloc_on(thread, size)?;
    }
    Ok(())
}

/// `producer-consumer`: threads `0..ceil(threads / 2)` produce, the rest consume.
///
/// A producer's step allocates a message of 32 B to 4 KiB (each doubling about equally likely)
/// and appends it to one shared queue of at most 1024 messages; a
/// consumer's step takes the oldest message and frees it. A producer facing a full queue, or a
/// consumer facing an empty one, waits (ends its turn). Every free is on a consumer and every
/// allocation on a producer, so every free is cross-thread. With an odd number of threads there
/// is one producer more than consumers and the queue runs near full.
pub(super) fn producer_consumer(params: &GenParams, out: &mut Out<'_>) -> Result<(), TraceError> {
    const CAPACITY: usize = 1024;
    debug_assert!(params.threads >= 2, "checked against min_threads");
    let producers = params.threads.div_ceil(2);
    let mut rng = Rng::new(params.seed, 0);
    let mut turns = Turns::new(params);
    let mut queue: VecDeque<ObjectId> = VecDeque::with_capacity(CAPACITY);
    while !out.full() {
        let thread = turns.next();
        if thread < producers {
            if queue.len() < CAPACITY {
                let size = rng.log_range(32, 4095);
                queue.push_back(out.malloc_on(thread, size)?);
            } else {
                turns.wait();
            }
        } else if let Some(id) = queue.pop_front() {
            out.free_on(thread, id)?;
        } else {
            turns.wait();
        }
    }
    Ok(())
}

/// `thread-local`: every thread allocates and frees its own objects, never another's.
///
/// Each thread keeps its own live set, wandering around 256 objects (the
/// mean-reverting choice of `uniform`): a step allocates 16 B to 1 KiB (each doubling about
/// equally likely) or frees a random object of its own. So the live set is about `256 *
/// threads`, every thread is busy all through the trace, and no free is cross-thread: the
/// pattern a per-thread cache serves best. The thread mixer (`uniform --threads 4`) differs: one
/// live set shared by all threads, long runs on one thread, and a live set that does not grow
/// with threads.
pub(super) fn thread_local(params: &GenParams, out: &mut Out<'_>) -> Result<(), TraceError> {
    const TARGET: u64 = 256;
    let mut rng = Rng::new(params.seed, 0);
    let mut turns = Turns::new(params);
    let mut live: Vec<Vec<ObjectId>> = vec![Vec::new(); params.threads as usize];
    while !out.full() {
        let thread = turns.next();
        let mine = &mut live[thread as usize];
        if should_alloc(&mut rng, mine.len(), TARGET) {
            let size = rng.log_range(16, 1023);
            mine.push(out.malloc_on(thread, size)?);
        } else {
            let i = rng.below(mine.len() as u64) as usize;
            out.free_on(thread, mine.swap_remove(i))?;
        }
    }
    Ok(())
}
