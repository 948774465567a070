//! Timers and process measurements used by the worker.
//!
//! - [`Timer`]: the fenced cycle counter on x86_64 (`lfence; rdtsc; lfence` to open a bracket,
//!   `rdtscp; lfence` to close it), converted to time with a frequency calibrated against the
//!   monotonic clock. Elsewhere it falls back to `clock_gettime(CLOCK_MONOTONIC)` in ns.
//! - [`floor`]: the cost of an empty bracket, measured in every run, and the timer's
//!   resolution (the smallest non-zero step between two reads).
//! - [`Rss`]: the resident set size read from `/proc/self/statm`, through a file descriptor
//!   opened once (a read is a `pread` of a few bytes, about 2 us here).
//! - `VmHWM` (peak RSS) from `/proc/self/status`, reset through `/proc/self/clear_refs`, and
//!   page-fault counts from `getrusage`.
//! - The machine's limits, read by the parent before any worker starts so that work no worker
//!   could finish is refused up front: [`memory_available`] (`MemAvailable`, and the cgroup's
//!   limit less its usage), [`thread_limit`] (`vm.max_map_count`, `kernel.threads-max`,
//!   `RLIMIT_NPROC`), [`cpus_allowed`] (the affinity mask) and [`oom_kills`] (the kernel's count
//!   of OOM kills, to tell an OOM kill from another SIGKILL).
//! - Latency histograms: [`latency_histogram`] and [`record_ps`], recording in picoseconds
//!   within the bounds of the stored form (`mallard_report::hist`, which reads them back).

use hdrhistogram::Histogram;
use mallard_report::hist::{MAX_PS, SIGFIG};
use std::time::Instant;

/// A latency histogram for the replay to record into: picoseconds, 1 ps to `MAX_PS`, `SIGFIG`
/// significant digits (the bounds results.json's distributions are stored and read back with).
/// Allocated whole here, before the replay; it never resizes, so recording never allocates.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_PS, SIGFIG).expect("constant bounds are valid")
}

/// Records `n` operations of `ps` picoseconds each; a value beyond the top saturates there.
#[inline(always)]
pub fn record_ps(h: &mut Histogram<u64>, ps: u64, n: u64) {
    h.saturating_record_n(ps.min(MAX_PS), n);
}

/// The cycle counter, or the monotonic clock where there is none.
#[derive(Clone, Copy, Debug)]
pub struct Timer {
    /// Ticks per second.
    pub hz: f64,
}

#[cfg(target_arch = "x86_64")]
mod cycles {
    use core::arch::x86_64::{__rdtscp, _mm_lfence, _rdtsc};

    pub const NAME: &str = "rdtsc (lfence-fenced open, rdtscp+lfence close)";

    /// Opens a bracket: earlier instructions finish before the read, later ones start after.
    #[inline(always)]
    pub fn start() -> u64 {
        // SAFETY: lfence and rdtsc are available on every x86_64 CPU.
        unsafe {
            _mm_lfence();
            let t = _rdtsc();
            _mm_lfence();
            t
        }
    }

    /// Closes a bracket: rdtscp waits for earlier instructions; lfence keeps later ones out.
    #[inline(always)]
    pub fn stop() -> u64 {
        let mut aux = 0u32;
        // SAFETY: rdtscp is available on every x86_64 CPU Linux runs on (checked at startup
        // by the kernel for its own use); aux is a valid out-pointer.
        unsafe {
            let t = __rdtscp(&mut aux);
            _mm_lfence();
            t
        }
    }

    /// An unfenced read, for resolution measurement.
    #[inline(always)]
    pub fn raw() -> u64 {
        // SAFETY: rdtsc is always available on x86_64.
        unsafe { _rdtsc() }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod cycles {
    pub const NAME: &str = "clock_gettime(CLOCK_MONOTONIC)";
    #[inline(always)]
    pub fn start() -> u64 {
        now()
    }
    #[inline(always)]
    pub fn stop() -> u64 {
        now()
    }
    #[inline(always)]
    pub fn raw() -> u64 {
        now()
    }
    fn now() -> u64 {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: ts is a valid out-pointer.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
    }
}

pub use cycles::{raw as read_raw, start as read_start, stop as read_stop, NAME as TIMER_NAME};

impl Timer {
    /// Measures the counter's frequency against the monotonic clock over `ms` milliseconds.
    pub fn calibrate(ms: u64) -> Timer {
        if cfg!(not(target_arch = "x86_64")) {
            return Timer { hz: 1e9 };
        }
        let t0 = Instant::now();
        let c0 = read_start();
        while t0.elapsed().as_millis() < ms as u128 {
            std::hint::spin_loop();
        }
        let c1 = read_stop();
        let el = t0.elapsed().as_secs_f64();
        Timer { hz: (c1 - c0) as f64 / el }
    }

    /// Ticks to picoseconds.
    #[inline(always)]
    pub fn ps(&self, ticks: f64) -> f64 {
        ticks * 1e12 / self.hz
    }

    pub fn ns(&self, ticks: f64) -> f64 {
        ticks * 1e9 / self.hz
    }
}

/// The cost of an empty bracket and the timer's resolution, in ticks.
#[derive(Clone, Copy, Debug, Default)]
pub struct Floor {
    /// Mean empty-bracket cost in ticks. The mean, not the median, is subtracted: the counter
    /// advances in coarse steps (about 10 ns here), and over many brackets the step's phase
    /// averages out in the mean while the median stays on one step.
    pub mean: f64,
    pub median: u64,
    pub p99: u64,
    pub resolution: u64,
}

/// Measures the empty-bracket cost (`samples` brackets) and the timer resolution.
pub fn floor(samples: usize) -> Floor {
    let mut v = Vec::with_capacity(samples);
    for _ in 0..samples {
        let a = read_start();
        let b = read_stop();
        v.push(b.wrapping_sub(a));
    }
    let mean = v.iter().sum::<u64>() as f64 / v.len() as f64;
    v.sort_unstable();
    let median = v[v.len() / 2];
    let p99 = v[(v.len() * 99) / 100];
    let mut resolution = u64::MAX;
    for _ in 0..10_000 {
        let a = read_raw();
        let mut b = read_raw();
        while b == a {
            b = read_raw();
        }
        resolution = resolution.min(b.wrapping_sub(a));
    }
    Floor { mean, median, p99, resolution }
}

/// Resident set size through `/proc/self/statm`, opened once.
pub struct Rss {
    fd: libc::c_int,
    page: u64,
}

impl Rss {
    pub fn open() -> Option<Rss> {
        // SAFETY: a NUL-terminated path; the result is checked.
        let fd = unsafe {
            libc::open(
                c"/proc/self/statm".as_ptr(),
                libc::O_RDONLY | libc::O_CLOEXEC,
            )
        };
        (fd >= 0).then(|| Rss { fd, page: page_size() })
    }

    /// Current RSS in bytes (0 if the read fails). Allocates nothing.
    pub fn read(&self) -> u64 {
        let mut buf = [0u8; 128];
        // SAFETY: buf is valid for its length; fd is open.
        let n =
            unsafe { libc::pread(self.fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len(), 0) };
        if n <= 0 {
            return 0;
        }
        // statm: size resident shared text lib data dt (pages)
        let mut fields = buf[..n as usize].split(|&b| b == b' ');
        fields.next();
        let resident = fields.next().map(parse_u64).unwrap_or(0);
        resident * self.page
    }
}

impl Drop for Rss {
    fn drop(&mut self) {
        // SAFETY: fd was opened by us and is closed once.
        unsafe { libc::close(self.fd) };
    }
}

fn parse_u64(s: &[u8]) -> u64 {
    s.iter()
        .take_while(|b| b.is_ascii_digit())
        .fold(0u64, |a, &b| a * 10 + (b - b'0') as u64)
}

pub fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as u64
    } else {
        4096
    }
}

/// A `/proc/self/status` field in bytes (`VmHWM`, `VmRSS`), if present.
pub fn status_bytes(field: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s
        .lines()
        .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))?;
    let kb = parse_u64(line[field.len() + 1..].trim_start().as_bytes());
    Some(kb * 1024)
}

/// Resets VmHWM to the current RSS (`echo 5 > /proc/self/clear_refs`). False if refused.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// (minor, major) page faults of this process so far.
pub fn faults() -> (u64, u64) {
    // SAFETY: ru is a valid out-pointer, zero is a valid rusage.
    unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        (ru.ru_minflt as u64, ru.ru_majflt as u64)
    }
}

/// CPU time consumed so far by the calling thread (user + system), in nanoseconds, from
/// `CLOCK_THREAD_CPUTIME_ID`. Unlike wall time it does not grow while the thread is
/// descheduled (another process on the core, and, where the kernel accounts steal time, the
/// hypervisor), so it is the steadier figure on a shared machine. A system call, not vDSO:
/// about a microsecond, so read it around a whole replay, never per operation.
pub fn thread_cpu_ns() -> u64 {
    cpu_clock(libc::CLOCK_THREAD_CPUTIME_ID)
}

/// CPU time consumed so far by all threads of this process, in nanoseconds
/// (`CLOCK_PROCESS_CPUTIME_ID`).
pub fn process_cpu_ns() -> u64 {
    cpu_clock(libc::CLOCK_PROCESS_CPUTIME_ID)
}

fn cpu_clock(id: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is a valid out-pointer; the CPU-time clocks exist on every Linux since 2.6.
    unsafe { libc::clock_gettime(id, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Which `perf_event_open` counter to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PerfEvent {
    /// Hardware: instructions retired in user space (`PERF_COUNT_HW_INSTRUCTIONS`).
    Instructions,
    /// Software: the task clock in nanoseconds (`PERF_COUNT_SW_TASK_CLOCK`).
    TaskClock,
    /// Software: page faults (`PERF_COUNT_SW_PAGE_FAULTS`).
    PageFaults,
}

/// A `perf_event_open` counter of the calling thread, user space only, opened disabled.
/// Virtual machines often have no hardware counters (this development machine has none:
/// opening [`PerfEvent::Instructions`] fails with ENOENT); the software ones work wherever
/// perf events are allowed at all.
pub struct PerfCounter {
    fd: libc::c_int,
}

const PERF_EVENT_IOC_ENABLE: libc::c_ulong = 0x2400;
const PERF_EVENT_IOC_DISABLE: libc::c_ulong = 0x2401;
const PERF_EVENT_IOC_RESET: libc::c_ulong = 0x2403;

impl PerfCounter {
    pub fn open(event: PerfEvent) -> std::io::Result<PerfCounter> {
        // struct perf_event_attr, PERF_ATTR_SIZE_VER5 (112 bytes): type u32 and size u32 (one
        // u64, little-endian: type in the low half), config u64, sample_period u64,
        // sample_type u64, read_format u64, flags u64 (bit 0 disabled, bit 5 exclude_kernel,
        // bit 6 exclude_hv), then fields left zero.
        let (kind, config) = match event {
            PerfEvent::Instructions => (0u64, 1u64), // PERF_TYPE_HARDWARE, HW_INSTRUCTIONS
            PerfEvent::TaskClock => (1, 1),          // PERF_TYPE_SOFTWARE, SW_TASK_CLOCK
            PerfEvent::PageFaults => (1, 2),         // PERF_TYPE_SOFTWARE, SW_PAGE_FAULTS
        };
        let mut attr = [0u64; 14];
        attr[0] = (112u64 << 32) | kind;
        attr[1] = config;
        attr[5] = 1 | (1 << 5) | (1 << 6);
        // SAFETY: perf_event_open reads `size` (112) bytes from a valid, zero-padded buffer of
        // 112 bytes; pid 0 / cpu -1 counts this thread on any CPU; no group, no flags.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_perf_event_open,
                attr.as_ptr(),
                0 as libc::pid_t,
                -1 as libc::c_int,
                -1 as libc::c_int,
                0 as libc::c_ulong,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(PerfCounter { fd: fd as libc::c_int })
    }

    /// Zeroes and starts the counter.
    pub fn start(&self) {
        // SAFETY: ioctls without argument on a perf event descriptor we own.
        unsafe {
            libc::ioctl(self.fd, PERF_EVENT_IOC_RESET as _, 0);
            libc::ioctl(self.fd, PERF_EVENT_IOC_ENABLE as _, 0);
        }
    }

    /// Stops the counter and returns its value since `start` (None if it cannot be read).
    pub fn stop(&self) -> Option<u64> {
        let mut v = 0u64;
        // SAFETY: a disabling ioctl on our descriptor, then a read of exactly the 8-byte value
        // (read_format 0) into a valid u64.
        let n = unsafe {
            libc::ioctl(self.fd, PERF_EVENT_IOC_DISABLE as _, 0);
            libc::read(self.fd, (&mut v as *mut u64).cast(), 8)
        };
        (n == 8).then_some(v)
    }
}

impl Drop for PerfCounter {
    fn drop(&mut self) {
        // SAFETY: closing the descriptor this value owns, once.
        unsafe { libc::close(self.fd) };
    }
}

/// A CPU the calling thread cannot be pinned to.
#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error("cannot pin to CPU {0}: beyond the largest CPU number")]
    Beyond(usize),
    #[error("cannot pin to CPU {cpu}: {source}")]
    Refused { cpu: usize, source: std::io::Error },
}

/// Pins the calling thread to one CPU.
pub fn pin_to_cpu(cpu: usize) -> Result<(), PinError> {
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(PinError::Beyond(cpu));
    }
    // SAFETY: set is a valid cpu_set_t, zeroed then filled by CPU_SET.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(PinError::Refused { cpu, source: std::io::Error::last_os_error() });
        }
    }
    Ok(())
}

/// How much memory a new process can have, and where that figure comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryLimit {
    pub bytes: u64,
    /// E.g. `MemAvailable in /proc/meminfo` or `cgroup /sys/fs/cgroup/memory.max less usage`.
    pub source: String,
}

/// The memory a new process can use now without swapping or meeting the OOM killer: the
/// smaller of `MemAvailable` (/proc/meminfo) and, for every cgroup (v2 or v1) this process is in
/// and each of its ancestors, its limit less its current usage. `None` if nothing is readable.
pub fn memory_available() -> Option<MemoryLimit> {
    let mut best: Option<MemoryLimit> = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| meminfo_field(&s, "MemAvailable"))
        .map(|bytes| MemoryLimit {
            bytes,
            source: "MemAvailable in /proc/meminfo".into(),
        });
    for (limit_file, usage_file) in cgroup_memory_files() {
        let Some(limit) = read_u64(&limit_file) else {
            continue; // "max": no limit
        };
        if limit >= 1 << 60 {
            continue; // cgroup v1's "no limit" (9223372036854771712)
        }
        let usage = read_u64(&usage_file).unwrap_or(0);
        let bytes = limit.saturating_sub(usage);
        if best.as_ref().map(|b| bytes < b.bytes).unwrap_or(true) {
            best = Some(MemoryLimit {
                bytes,
                source: format!(
                    "the cgroup limit {} ({}) less its usage {}",
                    limit_file.display(),
                    mallard_trace::stats::human_bytes(limit),
                    mallard_trace::stats::human_bytes(usage)
                ),
            });
        }
    }
    best
}

/// A `/proc/meminfo` field (`NAME:  123 kB`) in bytes.
fn meminfo_field(text: &str, name: &str) -> Option<u64> {
    let line = text
        .lines()
        .find(|l| l.strip_prefix(name).is_some_and(|r| r.starts_with(':')))?;
    let v = line[name.len() + 1..].trim_start();
    v.split_whitespace()
        .next()?
        .parse::<u64>()
        .ok()
        .map(|kb| kb * 1024)
}

fn read_u64(p: &std::path::Path) -> Option<u64> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

/// (limit file, usage file) of every memory cgroup this process is in and its ancestors.
fn cgroup_memory_files() -> Vec<(std::path::PathBuf, std::path::PathBuf)> {
    use std::path::{Path, PathBuf};
    let mut out = Vec::new();
    let Ok(text) = std::fs::read_to_string("/proc/self/cgroup") else {
        return out;
    };
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(ctrl), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let (root, limit, usage) = if ctrl.is_empty() {
            ("/sys/fs/cgroup", "memory.max", "memory.current")
        } else if ctrl.split(',').any(|c| c == "memory") {
            (
                "/sys/fs/cgroup/memory",
                "memory.limit_in_bytes",
                "memory.usage_in_bytes",
            )
        } else {
            continue;
        };
        let mut dir = Some(Path::new(path.trim_start_matches('/')));
        while let Some(d) = dir {
            let full: PathBuf = Path::new(root).join(d);
            out.push((full.join(limit), full.join(usage)));
            dir = d.parent();
        }
    }
    out
}

/// Memory maps a replay thread costs: its stack and the stack's guard page, and Rust's
/// signal stack and its guard page. Measured: 20,000 threads failed at about 16,600 with
/// `vm.max_map_count` 65530.
pub const MAPS_PER_THREAD: u64 = 4;

/// Maps kept free for everything else a worker maps (the program, the allocators' arenas, the
/// libraries), over what the worker's own start-up has mapped.
const MAPS_RESERVE: u64 = 2000;

/// The most threads one process can start now, and the limit that says so.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThreadLimit {
    pub threads: u64,
    /// E.g. `vm.max_map_count 65530 (4 memory maps per replay thread)`.
    pub source: String,
}

/// The smallest of the limits on the threads one new process can start: the memory-map count
/// (`/proc/sys/vm/max_map_count`, [`MAPS_PER_THREAD`] per thread), the system's thread limit
/// less the threads running now (`/proc/sys/kernel/threads-max`, `/proc/loadavg`) and
/// `RLIMIT_NPROC` (not for root, whom it does not bind). `None` if none is readable.
pub fn thread_limit() -> Option<ThreadLimit> {
    let mut best: Option<ThreadLimit> = None;
    let mut consider = |threads: u64, source: String| {
        if best.as_ref().map(|b| threads < b.threads).unwrap_or(true) {
            best = Some(ThreadLimit { threads, source });
        }
    };
    if let Some(maps) = read_u64(std::path::Path::new("/proc/sys/vm/max_map_count")) {
        let own = std::fs::read_to_string("/proc/self/maps")
            .map(|s| s.lines().count() as u64)
            .unwrap_or(0);
        consider(
            maps.saturating_sub(own + MAPS_RESERVE) / MAPS_PER_THREAD,
            format!("vm.max_map_count {maps}, at {MAPS_PER_THREAD} memory maps per thread"),
        );
    }
    if let Some(max) = read_u64(std::path::Path::new("/proc/sys/kernel/threads-max")) {
        let running = std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|s| {
                let f = s.split_whitespace().nth(3)?;
                f.split('/').nth(1)?.parse::<u64>().ok()
            })
            .unwrap_or(0);
        consider(
            max.saturating_sub(running),
            format!("kernel.threads-max {max} with {running} threads running"),
        );
    }
    // SAFETY: geteuid has no preconditions; rl is a valid out-pointer.
    let (euid, rl) = unsafe {
        let mut rl: libc::rlimit = std::mem::zeroed();
        libc::getrlimit(libc::RLIMIT_NPROC, &mut rl);
        (libc::geteuid(), rl)
    };
    if euid != 0 && rl.rlim_cur != libc::RLIM_INFINITY {
        consider(
            rl.rlim_cur,
            format!("RLIMIT_NPROC {} (ulimit -u)", rl.rlim_cur),
        );
    }
    best
}

/// The CPUs this process may run on (its affinity mask), ascending.
pub fn cpus_allowed() -> Vec<usize> {
    // SAFETY: set is a valid, zeroed cpu_set_t of the size passed.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

/// The kernel's count of processes killed by the OOM killer since boot (`oom_kill` in
/// /proc/vmstat, Linux 4.13 and later).
pub fn oom_kills() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/vmstat").ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn machine_limits_are_read() {
        let m = memory_available().expect("/proc/meminfo");
        assert!(m.bytes > 0, "{m:?}");
        let t = thread_limit().expect("/proc/sys/vm/max_map_count");
        assert!(t.threads > 0, "{t:?}");
        let cpus = cpus_allowed();
        assert!(!cpus.is_empty());
        assert!(pin_to_cpu(100_000).is_err());
        assert_eq!(
            meminfo_field(
                "MemTotal:  10 kB\nMemAvailable:    2048 kB\n",
                "MemAvailable"
            ),
            Some(2048 * 1024)
        );
    }

    #[test]
    fn timer_counts_forward_and_floor_is_sane() {
        let t = Timer::calibrate(20);
        assert!(t.hz > 1e8 && t.hz < 1e11, "hz {}", t.hz);
        let f = floor(10_000);
        assert!(f.median > 0 && f.p99 >= f.median && f.resolution >= 1);
        // An empty bracket costs less than a microsecond on any machine we would run on.
        assert!(
            t.ns(f.median as f64) < 1000.0,
            "floor {} ns",
            t.ns(f.median as f64)
        );
    }

    #[test]
    fn perf_software_counters_count_this_thread() {
        // The hardware counter is absent on this machine; the software counters share every
        // line of code with it but the event number, so they prove open/start/stop/read.
        let c = PerfCounter::open(PerfEvent::PageFaults).expect("software perf events");
        let pages = 256;
        // SAFETY: a fresh anonymous mapping of `pages` pages, written once per page, unmapped.
        unsafe {
            let len = pages * 4096;
            let p = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            assert_ne!(p, libc::MAP_FAILED);
            c.start();
            for i in 0..pages {
                std::ptr::write_volatile((p as *mut u8).add(i * 4096), 1);
            }
            let n = c.stop().unwrap();
            libc::munmap(p, len);
            assert!(n >= pages as u64 && n < 4 * pages as u64, "{n} faults");
        }
        // Stopped means stopped: more faults do not count.
        assert_eq!(c.stop(), c.stop());
        let t = PerfCounter::open(PerfEvent::TaskClock).unwrap();
        t.start();
        // Spin for 20 ms of this thread's own CPU time (not wall time: on a loaded machine the
        // thread may run for a fraction of a wall-clock window).
        let cpu0 = thread_cpu_ns();
        let mut x = 1u64;
        while thread_cpu_ns() - cpu0 < 20_000_000 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let ns = t.stop().unwrap();
        let cpu = thread_cpu_ns() - cpu0;
        assert!(
            ns > cpu / 2 && ns < cpu * 2,
            "{ns} ns of task clock for {cpu} ns of thread CPU time"
        );
    }

    /// RSS is process-wide: tests that allocate a lot take this lock so that they do not run
    /// while another one reads RSS.
    static RSS_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

    /// Takes [`RSS_LOCK`] (a test that panicked while holding it does not poison the others).
    pub(crate) fn rss_lock() -> std::sync::MutexGuard<'static, ()> {
        RSS_LOCK.lock().unwrap_or_else(|e| e.into_inner())
    }

    #[test]
    fn rss_grows_when_pages_are_touched() {
        let _g = rss_lock();
        let rss = Rss::open().unwrap();
        let before = rss.read();
        let mut v = vec![0u8; 64 << 20];
        for i in (0..v.len()).step_by(4096) {
            v[i] = 1;
        }
        std::hint::black_box(&v);
        let after = rss.read();
        assert!(
            after >= before + (60 << 20),
            "before {before} after {after}"
        );
        assert!(status_bytes("VmHWM").unwrap() >= after - 4096);
    }
}
