//! The hand-off flags and how a thread waits for one: spin, yield, and with far more threads
//! than CPUs sleep on the flag (futex) until the signalling thread wakes it.

use std::sync::atomic::{AtomicU32, Ordering};

/// A hand-off flag's states: not yet signalled, signalled, not yet signalled and its (single)
/// waiter asleep in `futex_wait`.
pub(super) const UNSET: u32 = 0;
pub(super) const SET: u32 = 1;
pub(super) const SLEEPING: u32 = 2;

/// Spins before sleeping: a hand-off from a thread running on the other core usually arrives
/// within a few microseconds, and sleeping costs two system calls and a wake-up.
const SPINS: u32 = 200;

/// How a thread waits for a hand-off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Waiting {
    /// Spin, then yield and spin again: the waiter stays runnable and sees the flag within
    /// about 100 ns of the signal when it has a core.
    Spin,
    /// Spin briefly, then sleep on the flag (futex) until the signalling thread wakes it
    /// (a wake-up costs a system call and microseconds). With hundreds of mostly idle threads
    /// (systemui: 393) the yielding waiters took turns on the CPU with the one thread that
    /// could make progress.
    Sleep,
}

/// Replays with more threads than this per CPU sleep while waiting; fewer spin. Measured on
/// this machine's 2 CPUs, ns/op with glibc, 3 rounds each, spin against sleep: generated
/// larson with 4 threads 68/74/28 against 135/74/46, 8 threads 54/71/76 against 84/46/53,
/// 32 threads 53/54/55 against 61/75/87; Android systemui (393 threads) 137/135/98 against
/// 83/94/74 (mimalloc 123/338/158 against 103/80/132).
const SLEEP_ABOVE_THREADS_PER_CPU: usize = 32;

impl Waiting {
    pub(super) fn for_threads(threads: usize) -> Waiting {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        if threads > SLEEP_ABOVE_THREADS_PER_CPU * cpus {
            Waiting::Sleep
        } else {
            Waiting::Spin
        }
    }
}

/// Waits until `flag` is set.
#[inline]
pub(super) fn wait_for(flag: &AtomicU32, how: Waiting) {
    if flag.load(Ordering::Acquire) == SET {
        return;
    }
    wait_slow(flag, how);
}

#[cold]
fn wait_slow(flag: &AtomicU32, how: Waiting) {
    for _ in 0..SPINS {
        std::hint::spin_loop();
        if flag.load(Ordering::Acquire) == SET {
            return;
        }
    }
    if how == Waiting::Spin {
        while flag.load(Ordering::Acquire) != SET {
            std::thread::yield_now();
        }
        return;
    }
    loop {
        match flag.compare_exchange(UNSET, SLEEPING, Ordering::Acquire, Ordering::Acquire) {
            Ok(_) | Err(SLEEPING) => {
                // SAFETY: futex(2) on a valid, aligned u32 that lives as long as the replay;
                // it returns at once if the value is no longer SLEEPING.
                unsafe {
                    libc::syscall(
                        libc::SYS_futex,
                        flag.as_ptr(),
                        libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
                        SLEEPING,
                        std::ptr::null::<libc::timespec>(),
                    );
                }
            }
            Err(_) => return, // SET
        }
        if flag.load(Ordering::Acquire) == SET {
            return;
        }
    }
}

/// Sets `flag` and wakes its waiter if it went to sleep. Only a sleeping waiter ever marks the
/// flag, so a spinning replay needs a plain store, not the read-modify-write.
#[inline]
pub(super) fn signal(flag: &AtomicU32, how: Waiting) {
    match how {
        Waiting::Spin => flag.store(SET, Ordering::Release),
        Waiting::Sleep => {
            if flag.swap(SET, Ordering::Release) == SLEEPING {
                wake(flag);
            }
        }
    }
}

/// Wakes the thread asleep on `flag` (a system call: microseconds).
#[cold]
fn wake(flag: &AtomicU32) {
    // SAFETY: futex(2) wake on the same valid u32 the waiter sleeps on.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            flag.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            1,
        );
    }
}
