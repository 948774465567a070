//! The per-thread buffers: the hot path that appends a record, and the cold paths around it.
//!
//! A buffer is owned by one live thread, which alone appends to it; anyone who writes it out
//! (the owner when it is full or at thread exit, the final flush at process exit) holds its
//! lock. Buffers are `mmap`ed and never unmapped: a thread that exits leaves its buffer for the
//! next new thread.

use super::{
    file::write_recording, now_ns, tsc, BUFFERS, DROPPED, DROPPED_CHUNKS, KEY, RECORDING, THREADS,
    TIMES,
};
use crate::raw::*;
use crate::tls::{tls, Tls};
use libc::c_void;
use std::mem::size_of;
use std::ptr::{self, null_mut};
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicBool, AtomicUsize};

/// Payload bytes a buffer holds before it is written out (about 13,000 records).
const CAP: usize = 128 * 1024 - 128;

/// One thread's records, with the chunk header right before them so that one `write` sends both.
#[repr(C)]
pub(crate) struct Buffer {
    /// The next buffer in `BUFFERS`.
    pub(super) next: *mut Buffer,
    /// Owned by a live thread (else free for the next new thread).
    pub(super) in_use: AtomicBool,
    /// Held while the buffer is written out (by its owner when full, at thread exit or by the
    /// final flush at process exit).
    pub(super) lock: AtomicBool,
    /// Payload bytes written and published (release) by the owner.
    len: AtomicUsize,
    /// Delta bases of the encoding (see `raw`): owner only, reset with `len`.
    prev_seq: u64,
    prev_tsc: u64,
    prev_addr: u64,
    chunk: ChunkHeader,
    payload: [u8; CAP],
}

const _: () = {
    // The chunk header and the records must be contiguous in memory.
    assert!(
        std::mem::offset_of!(Buffer, payload) - std::mem::offset_of!(Buffer, chunk)
            == CHUNK_HEADER_SIZE
    );
};

/// A hook in progress on this thread; dropping it lets nested calls be recorded again.
pub(crate) struct Hook {
    t: &'static Tls,
}

impl Hook {
    /// `Some` if this call is to be recorded: recording is on and this thread is not already
    /// inside a hook. Requires STATE == READY.
    #[inline(always)]
    pub(crate) fn enter() -> Option<Hook> {
        if !RECORDING.load(Relaxed) {
            return None;
        }
        let t = tls();
        if t.in_hook.get() {
            return None;
        }
        t.in_hook.set(true);
        Some(Hook { t })
    }

    /// Appends one record: `op`, sequence number `seq`, then `fields`, of which those
    /// flagged in `addr` (bit i for field i) are addresses.
    #[inline(always)]
    pub(crate) fn record<const N: usize>(&self, seq: u64, op: u8, fields: [u64; N], addr: u8) {
        let mut buf = self.t.buf.get();
        if buf.is_null() {
            buf = attach_thread(self.t);
            if buf.is_null() {
                DROPPED.fetch_add(1, Relaxed);
                return;
            }
        }
        let now = if TIMES.load(Relaxed) { tsc() } else { 0 };
        // SAFETY: buf is this thread's buffer and only the owner appends; len <= CAP - MAX_RECORD
        // always holds after a record (a buffer with less room left is written out at once), so
        // the at most MAX_RECORD bytes written here are in bounds.
        unsafe {
            let b = &mut *buf;
            let n = b.len.load(Relaxed);
            let start = ptr::addr_of_mut!(b.payload).cast::<u8>();
            let mut p = start.add(n);
            *p = op;
            p = put_varint(p.add(1), seq.wrapping_sub(b.prev_seq));
            p = put_varint(p, zigzag(now.wrapping_sub(b.prev_tsc) as i64));
            b.prev_seq = seq;
            b.prev_tsc = now;
            for (i, &v) in fields.iter().enumerate() {
                if addr & (1 << i) != 0 {
                    p = put_varint(p, zigzag(v.wrapping_sub(b.prev_addr) as i64));
                    b.prev_addr = v;
                } else {
                    p = put_varint(p, v);
                }
            }
            let len = p as usize - start as usize;
            b.len.store(len, Release);
            if len > CAP - MAX_RECORD {
                flush_full(buf);
            }
        }
    }
}

impl Drop for Hook {
    #[inline(always)]
    fn drop(&mut self) {
        self.t.in_hook.set(false);
    }
}

/// Empties `buf` (the caller owns or has locked it).
pub(super) fn reset(buf: *mut Buffer) {
    // SAFETY: see the caller.
    unsafe {
        (*buf).prev_seq = 0;
        (*buf).prev_tsc = 0;
        (*buf).prev_addr = 0;
        (*buf).len.store(0, Release);
    }
}

/// Writes out `buf`'s records (the caller holds its lock) unless the final flush happened.
pub(super) fn write_buffer(buf: *mut Buffer) {
    // SAFETY: the caller holds buf's lock; records below the published len are complete.
    unsafe {
        let len = (*buf).len.load(Acquire);
        if len == 0 {
            return;
        }
        (*buf).chunk.len = len as u32;
        (*buf).chunk.tsc = tsc();
        (*buf).chunk.ns = now_ns();
        let start = ptr::addr_of!((*buf).chunk) as *const u8;
        if !write_recording(start, CHUNK_HEADER_SIZE + len) {
            DROPPED_CHUNKS.fetch_add(1, Relaxed);
        }
        reset(buf);
    }
}

pub(super) fn lock(buf: *mut Buffer) {
    // SAFETY: buf is a live Buffer (buffers are never unmapped).
    let l = unsafe { &(*buf).lock };
    while l
        .compare_exchange_weak(false, true, Acquire, Relaxed)
        .is_err()
    {
        std::hint::spin_loop();
    }
}

pub(super) fn unlock(buf: *mut Buffer) {
    // SAFETY: as in lock.
    unsafe { (*buf).lock.store(false, Release) };
}

/// The owner's buffer is full: write it out.
#[cold]
#[inline(never)]
fn flush_full(buf: *mut Buffer) {
    lock(buf);
    if RECORDING.load(Acquire) {
        write_buffer(buf);
    } else {
        // The final flush is done; nothing more is written.
        reset(buf);
    }
    unlock(buf);
}

/// Gives this thread a buffer (a free one, else a new one). Null if `mmap` fails.
#[cold]
#[inline(never)]
fn attach_thread(t: &Tls) -> *mut Buffer {
    if t.thread.get() == 0 {
        t.thread.set(THREADS.fetch_add(1, Relaxed) + 1);
    }
    let mut buf = BUFFERS.load(Acquire);
    while !buf.is_null() {
        // SAFETY: buffers in the list are never unmapped.
        unsafe {
            if (*buf)
                .in_use
                .compare_exchange(false, true, Acquire, Relaxed)
                .is_ok()
            {
                break;
            }
            buf = (*buf).next;
        }
    }
    if buf.is_null() {
        // SAFETY: a fresh anonymous mapping, zeroed, large enough for a Buffer; a zeroed
        // Buffer is valid (null next, false flags, zero len).
        unsafe {
            let p = libc::mmap(
                null_mut(),
                size_of::<Buffer>(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            if p == libc::MAP_FAILED {
                return null_mut();
            }
            buf = p.cast();
            (*buf).in_use.store(true, Relaxed);
            let mut head = BUFFERS.load(Relaxed);
            loop {
                (*buf).next = head;
                match BUFFERS.compare_exchange_weak(head, buf, Release, Relaxed) {
                    Ok(_) => break,
                    Err(h) => head = h,
                }
            }
        }
    }
    // SAFETY: the buffer is ours (in_use); the key was created in start_recording.
    unsafe {
        lock(buf);
        reset(buf);
        (*buf).chunk = ChunkHeader {
            tag: CHUNK_TAG,
            thread: t.thread.get() - 1,
            len: 0,
            reserved: 0,
            tsc: 0,
            ns: 0,
        };
        unlock(buf);
        libc::pthread_setspecific(KEY.load(Relaxed), buf as *const c_void);
    }
    t.buf.set(buf);
    buf
}
