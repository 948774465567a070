//! The per-thread state every hook reads: a 32-byte, zero-initialised TLS block.

use crate::sink::Buffer;
use std::cell::Cell;
#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
use std::ptr::null_mut;

/// Per-thread state. All zero bits is the initial state (not in a hook, no buffer, no thread
/// number yet), so it can live in zero-initialised TLS, and it has no destructor: using it
/// never allocates and stays valid while the thread exits.
#[repr(C)]
pub(crate) struct Tls {
    /// Inside one of our hooks: nested calls go straight to the real functions.
    pub(crate) in_hook: Cell<bool>,
    pub(crate) buf: Cell<*mut Buffer>,
    /// This thread's number plus one (0: none yet); kept if the thread gets a buffer again
    /// during its exit.
    pub(crate) thread: Cell<u32>,
}

// On x86-64 Linux the state is a TLS block of our own, reached with the initial-exec model: a
// GOT load and an add of the thread pointer, where a Rust `thread_local!` in a shared library
// costs a call to `__tls_get_addr` on every hook (a tenth of the recorder's cost). Initial-exec
// TLS is fine for a library loaded at startup (`LD_PRELOAD`); `dlopen`ing the recorder later is
// not supported anyway.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
std::arch::global_asm!(
    ".pushsection .tbss,\"awT\",@nobits",
    // Global (the modules using it may land in other codegen units) but hidden: not exported.
    ".globl mallard_recorder_tls",
    ".hidden mallard_recorder_tls",
    ".p2align 4",
    ".type mallard_recorder_tls,@object",
    ".size mallard_recorder_tls,32",
    "mallard_recorder_tls:",
    ".zero 32",
    ".popsection",
);

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
#[inline(always)]
pub(crate) fn tls() -> &'static Tls {
    const _: () = assert!(std::mem::size_of::<Tls>() <= 32 && std::mem::align_of::<Tls>() <= 16);
    let p: *const Tls;
    // SAFETY: the initial-exec sequence: the GOT holds the block's offset from the thread
    // pointer, which %fs:0 holds (glibc's TCB points to itself). The block is 32 zeroed,
    // 16-aligned bytes per thread, a valid `Tls` (see above), used only by its own thread, and
    // lives as long as the thread.
    unsafe {
        std::arch::asm!(
            "mov {p}, qword ptr [rip + mallard_recorder_tls@GOTTPOFF]",
            "add {p}, qword ptr fs:[0]",
            p = out(reg) p,
            options(pure, readonly, nostack),
        );
        &*p
    }
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
thread_local! {
    static TLS: Tls = const {
        Tls { in_hook: Cell::new(false), buf: Cell::new(null_mut()), thread: Cell::new(0) }
    };
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
#[inline(always)]
pub(crate) fn tls() -> &'static Tls {
    // SAFETY: the thread-local lives as long as the thread, and the reference is used only on
    // this thread. It has no destructor, so it is valid during thread exit too.
    TLS.with(|t| unsafe { &*(t as *const Tls) })
}
