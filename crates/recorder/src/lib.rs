//! # mallard-recorder: record any program's allocator calls
//!
//! An `LD_PRELOAD` library (`target/release/libmallard_recorder.so`, built with
//! `cargo build --release -p mallard-recorder`) that interposes `malloc`, `free`, `calloc`,
//! `realloc`, `reallocarray`, `posix_memalign`, `aligned_alloc`, `memalign`, `valloc` and
//! `pvalloc` (`malloc_usable_size` is passed through) and appends one fixed-size record per call
//! to a per-thread buffer. `mallard record -o out.mtr -- CMD ARGS...` sets it up, runs the
//! program and converts the raw recording into a Mallard trace:
//!
//! ```text
//! MALLARD_RECORD_FILE=/tmp/rec LD_PRELOAD=target/release/libmallard_recorder.so python3 x.py
//!   -> /tmp/rec.<pid>  (one raw file per process; see [`raw`] for the layout)
//! ```
//!
//! Without `MALLARD_RECORD_FILE` the library only passes calls through. With
//! `MALLARD_RECORD_PYTHON=1` it also wraps CPython's allocator domains (see `python`), so each
//! object the interpreter allocates is recorded once, with its domain.
//!
//! ## Design
//!
//! ```text
//!  thread A ──► hook ──► real malloc ──► seq = SEQ.fetch_add(1) ──► A's buffer ──┐ write(2) when
//!  thread B ──► hook ──► real free   ◄── seq taken *before* ◄──── B's buffer ──┤ full, at thread
//!                                                                              │ exit, at exit
//!                                                          PREFIX.<pid> ◄──────┘
//! ```
//!
//! * **Fast path without locks or allocation.** A hook checks two flags, calls the real
//!   function, takes a global sequence number (one atomic add), reads the time-stamp counter
//!   (`rdtsc`; converted to nanoseconds by the reader) and appends a record of about 6 bytes
//!   (varint deltas) to the calling thread's buffer, found through a zero-initialised
//!   initial-exec TLS block (no lazy initialisation, no destructor, so no allocation, and no
//!   `__tls_get_addr` call). Buffers are `mmap`ed, 128 KiB each, and written with one
//!   `write(2)` when full. The sequence numbers give the global order across threads; a
//!   release takes its number before the real call and an allocation after it, so an address
//!   reused by another thread always appears freed before it is handed out again.
//! * **Bootstrap.** The real functions are found with `dlsym(RTLD_NEXT, ...)` on the first call
//!   (or when the library is loaded); `dlsym` itself may allocate, and those calls are served
//!   from a 64 KiB static arena whose blocks are never freed (and are ignored by `free`).
//! * **Recursion.** A thread-local flag marks a thread inside a hook; nested calls (the
//!   allocator or our own setup calling back into `malloc`) go straight to the real functions.
//! * **Threads.** A pthread key's destructor writes out a thread's buffer when the thread exits
//!   and hands the buffer to the next new thread. Thread numbers count up from 0 and are never
//!   reused.
//! * **Exit.** A `.fini_array` destructor (run by `exit` after the program's `atexit` handlers)
//!   stops recording, writes every buffer and an end chunk with totals. A process that dies by
//!   a signal, calls `_exit` or `exec`s loses what is still buffered; its file has no end chunk,
//!   and `mallard record` says so.
//! * **Descriptors.** The raw file's descriptor sits at a high number (`F_DUPFD_CLOEXEC`), and
//!   before each write (per full buffer, not per call) an `fstat` checks that it still names the
//!   raw file; if the program closed it or put a file of its own at that number, the raw file is
//!   opened again by its path (append). The recorder never writes into, nor closes, a descriptor
//!   that names a file it did not open (see `sink::file`, "The recording's descriptor").
//! * **Fork.** A `pthread_atfork` child handler drops the records the child inherited (they
//!   are the parent's to write) and opens the child's own file, `PREFIX.<childpid>`; if it
//!   cannot, the child stops recording. A process that `exec`s while recording is recorded
//!   again by the new image into `PREFIX.<pid>.1` (`.2`, ...).
//!
//! Deliberately not done: call stacks (heaptrack does that, at a price), `mmap` calls, and
//! programs that link their own allocator statically (their calls never reach the PLT).

//! ## Modules
//!
//! * `real`: finding the real functions (`dlsym`), the load and exit entry points;
//! * `boot`: the bootstrap arena that serves `dlsym`'s own allocations;
//! * `tls`: the per-thread state, in initial-exec TLS;
//! * `sink`: per-thread buffers and the hot `Hook::record`, the raw file and its descriptor,
//!   thread exit, `fork` and process exit;
//! * `hooks`: the exported functions, one small pattern each;
//! * `python`: CPython's allocator domains wrapped with `PyMem_SetAllocator` (`--python`);
//! * [`raw`]: the raw file format, shared with the reader.

mod boot;
pub mod raw;
mod sink;
mod tls;

// The hooks and the load/exit entry points are left out of unit-test builds, which would
// otherwise interpose the test harness's own allocations (and start recording it).
#[cfg(not(test))]
mod hooks;
#[cfg(not(test))]
mod python;
#[cfg(not(test))]
mod real;
