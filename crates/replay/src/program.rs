//! Compiling a trace into a replay program: a flat array of operations over a dense slot table.
//!
//! Before anything is timed, the trace is turned into [`Op`]s of 16 bytes each. Object ids
//! become *slots*: an allocation takes a free slot (the most recently freed first), a free
//! releases it, and a realloc keeps its object's slot for the new object. The slot table is
//! therefore only as large as the peak number of live objects, and replaying an operation is
//! an array index, never a hash lookup. The id -> slot map used while compiling is dropped
//! before the replay.
//!
//! Compiling also checks the trace: a free or realloc of an object that is not live, or an
//! object id out of order, is an error naming the file and the event's location. It checks
//! every rule of `mallard_trace::Validator`, so it may read an unchecked reader; then a free of
//! an object that the trace allocates only later (a cross-thread free recorded before its
//! allocation: two threads' events merged out of order) is told apart from one that is never
//! allocated, by reading on to the allocation and naming its place.
//!
//! # Domains
//!
//! A trace recorded with CPython's allocator domains (`mallard record --python`, a memray
//! import) says of each allocation whether the interpreter made it through its object or mem
//! allocator (`object`, `mem`: served by pymalloc in CPython) or through its raw allocator or
//! plain malloc from C (`raw`, `c`: served by the C library). An allocator that stands in for
//! pymalloc (the arena, CPython's own pymalloc) serves only the first kind, as in CPython; the
//! others go to the system allocator. The compiler marks each operation of an object of the
//! second kind with [`Op::SYSTEM`] in the op's spare byte (its free and reallocs too: a call
//! follows its object), and the backend decides what the mark means
//! ([`crate::backend::Backend::ROUTES_DOMAINS`]): the other allocators ignore it, at no cost.
//! Only a trace with at least one `mem` or `object` allocation is marked: every imported or
//! generated trace is all `c`, and replays exactly as before, every call to the contender. So
//! that such traces cost nothing to compile, the compiler marks the Python-domain operations
//! as it goes, and only when there are any flips the marks once at the end.

use mallard_trace::{AllocKind, Domain, Event, Record, TraceError, TraceReader};
/// The operation kinds and their counts are the trace model's (one byte each in an [`Op`]).
pub use mallard_trace::{OpCounts, OpKind};

/// How many operation kinds there are (per-kind tables are this long).
pub const KINDS: usize = OpKind::COUNT;

/// One operation of the replay. For `Free`, `size` is unused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct Op {
    pub size: u64,
    pub slot: u32,
    pub kind: OpKind,
    /// log2 of the alignment of an `Aligned` allocation (at least 3: posix_memalign's minimum).
    pub align_log2: u8,
    /// [`Op::SYSTEM`] or 0 (the bytes after `align_log2` are padding either way).
    pub flags: u8,
}

impl Op {
    /// In [`Op::flags`]: the operation's object is CPython's `raw` or `c` domain in a trace that
    /// records domains, served by the system allocator where the backend routes domains.
    pub const SYSTEM: u8 = 1;

    /// Whether the operation carries [`Op::SYSTEM`].
    #[inline(always)]
    pub fn system(&self) -> bool {
        self.flags & Op::SYSTEM != 0
    }
}

/// Largest single request a trace may make (128 TiB): beyond any address space, so a larger
/// size can only be corruption.
pub const MAX_REQUEST: u64 = 1 << 47;

/// A compiled trace.
#[derive(Clone, Debug, Default)]
pub struct Program {
    pub ops: Vec<Op>,
    /// Size of the slot table: the peak number of live objects.
    pub slots: usize,
    pub counts: OpCounts,
    /// Sum of all requested sizes (allocations and realloc targets).
    pub bytes_requested: u64,
    pub max_align: u64,
    /// The largest single request (an allocation's or a realloc's size).
    pub largest_request: u64,
    /// Operations marked [`Op::SYSTEM`] (allocations, reallocs and frees of `raw` and `c`
    /// objects in a trace that records domains; 0 otherwise): what a backend that routes
    /// domains sends to the system allocator in each replay.
    pub system_ops: u64,
    pub peak_live_bytes: u64,
    pub peak_live_objects: u64,
    /// Objects and bytes still live after the last event (freed by the harness, untimed).
    pub final_live_objects: u64,
    pub final_live_bytes: u64,
    /// The recording thread of each operation, parallel to `ops`; empty when every operation
    /// came from thread 0 (the common single-threaded case costs nothing).
    pub op_thread: Vec<u32>,
    /// Number of threads (highest thread index + 1).
    pub threads: u32,
}


impl Program {
    /// Calls `f(i, live)` after each operation `i` with the bytes then requested and live: the
    /// one walk behind [`Program::live_bytes_at`] and the simulated sweep's peak of live bytes.
    pub fn for_each_live_bytes(&self, mut f: impl FnMut(usize, u64)) {
        let mut size = vec![0u64; self.slots];
        let mut live = 0u64;
        for (i, op) in self.ops.iter().enumerate() {
            let s = &mut size[op.slot as usize];
            match op.kind {
                OpKind::Free => {
                    live -= *s;
                    *s = 0;
                }
                OpKind::Realloc => {
                    live = live - *s + op.size;
                    *s = op.size;
                }
                _ => {
                    live += op.size;
                    *s = op.size;
                }
            }
            f(i, live);
        }
    }
}

/// Builds a [`Program`] event by event; used by [`compile`] and by tests.
#[derive(Default)]
pub struct Compiler {
    prog: Program,
    /// Object id -> slot (u32::MAX when the object is not live).
    id_slot: Vec<u32>,
    free_slots: Vec<u32>,
    slot_size: Vec<u64>,
    live_bytes: u64,
    live_objects: u64,
    /// Set when the last error was a free or realloc of an object id not allocated yet.
    unborn: Option<u64>,
    /// Per slot: whether its live object is of a Python domain (`mem` or `object`).
    slot_python: Vec<bool>,
    /// Operations of Python-domain objects so far (each marked [`Op::SYSTEM`] until
    /// [`Compiler::finish`] flips the marks; see the module doc).
    python_ops: u64,
}

const DEAD: u32 = u32::MAX;

/// An event the compiler refuses (the trace reader adds the file and the place).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    #[error("object id {id} out of order (the next new object must be {expected})")]
    OutOfOrder { id: u64, expected: u64 },
    #[error("object {id} requests {size} bytes, more than any address space holds")]
    TooLarge { id: u64, size: u64 },
    #[error("more than 4 billion live objects")]
    TooManyLive,
    /// `what` is `free` or `realloc`.
    #[error("{what} of object {id}, which was already freed")]
    AlreadyFreed { what: &'static str, id: u64 },
    #[error("{what} of object {id}, which was never allocated")]
    NeverAllocated { what: &'static str, id: u64 },
    #[error("object {id}: alignment {align} is not a power of two")]
    AlignNotPowerOfTwo { id: u64, align: u64 },
    #[error("object {id}: alignment {align} is beyond 1 GiB")]
    AlignTooLarge { id: u64, align: u64 },
}

impl Compiler {
    pub fn new() -> Self {
        Self::default()
    }

    fn new_object(&mut self, id: u64, size: u64) -> Result<u32, CompileError> {
        let expected = self.id_slot.len() as u64;
        if id != expected {
            return Err(CompileError::OutOfOrder { id, expected });
        }
        if size > MAX_REQUEST {
            return Err(CompileError::TooLarge { id, size });
        }
        let slot = match self.free_slots.pop() {
            Some(s) => s,
            None => {
                let s = self.prog.slots;
                if s >= DEAD as usize {
                    return Err(CompileError::TooManyLive);
                }
                self.prog.slots += 1;
                self.slot_size.push(0);
                self.slot_python.push(false);
                s as u32
            }
        };
        self.id_slot.push(slot);
        self.slot_size[slot as usize] = size;
        self.live_bytes += size;
        self.live_objects += 1;
        self.prog.bytes_requested += size;
        self.prog.largest_request = self.prog.largest_request.max(size);
        self.prog.peak_live_bytes = self.prog.peak_live_bytes.max(self.live_bytes);
        self.prog.peak_live_objects = self.prog.peak_live_objects.max(self.live_objects);
        Ok(slot)
    }

    fn end_object(&mut self, id: u64, what: &'static str) -> Result<u32, CompileError> {
        let slot = match self.id_slot.get(id as usize) {
            Some(&s) if s != DEAD => s,
            Some(_) => return Err(CompileError::AlreadyFreed { what, id }),
            None => {
                self.unborn = Some(id);
                return Err(CompileError::NeverAllocated { what, id });
            }
        };
        self.id_slot[id as usize] = DEAD;
        self.live_bytes -= self.slot_size[slot as usize];
        self.live_objects -= 1;
        Ok(slot)
    }

    /// Adds one record (its event and its thread); the error says what is wrong with it.
    pub fn push_record(&mut self, rec: &Record) -> Result<(), CompileError> {
        let python = matches!(rec.domain, Domain::Mem | Domain::Object);
        self.push_in(&rec.event, python)?;
        let t = rec.thread;
        if t != 0 && self.prog.op_thread.is_empty() {
            self.prog.op_thread.resize(self.prog.ops.len() - 1, 0);
        }
        if !self.prog.op_thread.is_empty() {
            self.prog.op_thread.push(t);
        }
        self.prog.threads = self.prog.threads.max(t + 1);
        Ok(())
    }

    /// Adds one event on thread 0 (of the `c` domain); the error says what is wrong with it.
    pub fn push(&mut self, ev: &Event) -> Result<(), CompileError> {
        self.push_in(ev, false)
    }

    /// Adds one event; `python` says that an allocation's object is of CPython's `mem` or
    /// `object` domain (a free's is its object's, whatever the record says).
    pub fn push_in(&mut self, ev: &Event, python: bool) -> Result<(), CompileError> {
        let mut op = match *ev {
            Event::Alloc { id, size, align, kind } => {
                let slot = self.new_object(id, size)?;
                let (kind, align_log2) = match kind {
                    AllocKind::Malloc => (OpKind::Malloc, 0),
                    AllocKind::Calloc => (OpKind::Calloc, 0),
                    AllocKind::Aligned => {
                        if align > 1 && !align.is_power_of_two() {
                            return Err(CompileError::AlignNotPowerOfTwo { id, align });
                        }
                        if align > 1 << 30 {
                            return Err(CompileError::AlignTooLarge { id, align });
                        }
                        let a = align.max(8);
                        self.prog.max_align = self.prog.max_align.max(a);
                        (OpKind::Aligned, a.trailing_zeros() as u8)
                    }
                };
                self.slot_python[slot as usize] = python;
                Op { size, slot, kind, align_log2, flags: 0 }
            }
            Event::Free { id } => {
                let slot = self.end_object(id, "free")?;
                self.free_slots.push(slot);
                Op {
                    size: 0,
                    slot,
                    kind: OpKind::Free,
                    align_log2: 0,
                    flags: 0,
                }
            }
            Event::Realloc { old, new, size } => {
                let slot = self.end_object(old, "realloc")?;
                // The new object takes over the old one's slot: realloc replaces it in place.
                self.free_slots.push(slot);
                let got = self.new_object(new, size)?;
                debug_assert_eq!(got, slot);
                Op {
                    size,
                    slot,
                    kind: OpKind::Realloc,
                    align_log2: 0,
                    flags: 0,
                }
            }
        };
        // A free and a realloc follow their object's domain (a realloc stays in it).
        if self.slot_python[op.slot as usize] {
            op.flags = Op::SYSTEM;
            self.python_ops += 1;
        }
        self.prog.counts.add(op.kind);
        self.prog.ops.push(op);
        Ok(())
    }

    pub fn finish(mut self) -> Program {
        self.prog.final_live_bytes = self.live_bytes;
        self.prog.final_live_objects = self.live_objects;
        self.prog.ops.shrink_to_fit();
        if self.python_ops > 0 {
            // The trace records domains: the mark goes to the other objects' operations.
            for op in &mut self.prog.ops {
                op.flags ^= Op::SYSTEM;
            }
            self.prog.system_ops = self.prog.ops.len() as u64 - self.python_ops;
        }
        self.prog.threads = self.prog.threads.max(1);
        self.prog
    }
}

/// Reads and compiles a whole trace, calling `each` on every record (for statistics).
pub fn compile(
    reader: &mut TraceReader,
    mut each: impl FnMut(&Record),
) -> Result<Program, TraceError> {
    let mut c = Compiler::new();
    while let Some(rec) = reader.next() {
        let rec = rec?;
        each(&rec);
        if let Err(e) = c.push_record(&rec) {
            // The trace's error carries the message with the file and the place.
            let msg = e.to_string();
            let Some(id) = c.unborn else {
                return Err(TraceError::invalid(reader, msg));
            };
            let here = TraceError::invalid(reader, String::new());
            return Err(match allocated_later(reader, id) {
                Some((at, thread)) => {
                    let what = match rec.event {
                        Event::Realloc { .. } => "realloc",
                        _ => "free",
                    };
                    let TraceError::Invalid { path, location, .. } = here else {
                        unreachable!("TraceError::invalid makes an Invalid")
                    };
                    TraceError::Invalid {
                        path,
                        location,
                        msg: format!(
                            "{what} of object {id} on thread {}, which is allocated later, at {at} \
                             (on thread {thread}): the trace records a cross-thread {what} before \
                             its allocation; put the allocation first (order the events by time)",
                            rec.thread
                        ),
                    }
                }
                None => {
                    let TraceError::Invalid { path, location, .. } = here else {
                        unreachable!("TraceError::invalid makes an Invalid")
                    };
                    TraceError::Invalid { path, location, msg }
                }
            });
        }
    }
    Ok(c.finish())
}

/// Reads on (the trace is already known to be bad) to where object `id` is created; its place
/// and thread. Stops at the first decoding error or once ids have passed `id`.
#[cold]
fn allocated_later(reader: &mut TraceReader, id: u64) -> Option<(mallard_trace::Location, u32)> {
    while let Some(Ok(rec)) = reader.next() {
        let created = match rec.event {
            Event::Alloc { id, .. } => id,
            Event::Realloc { new, .. } => new,
            Event::Free { .. } => continue,
        };
        if created == id {
            return Some((reader.location(), rec.thread));
        }
        if created > id {
            return None;
        }
    }
    None
}

impl Program {
    /// Bytes requested and live after each of the given operation counts (sorted ascending):
    /// the ideal RSS a perfect allocator would have. Computed by walking the program again.
    pub fn live_bytes_at(&self, points: &[u64]) -> Vec<u64> {
        let mut out = Vec::with_capacity(points.len());
        let mut next = points.iter().peekable();
        // Bytes live before operation i are those after operation i - 1 (none before the first).
        let mut before = 0u64;
        self.for_each_live_bytes(|i, live| {
            while next.peek().is_some_and(|&&p| p == i as u64) {
                out.push(before);
                next.next();
            }
            before = live;
        });
        for _ in next {
            out.push(before);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alloc(id: u64, size: u64) -> Event {
        Event::Alloc { id, size, align: 0, kind: AllocKind::Malloc }
    }

    #[test]
    fn slots_are_reused_and_table_is_peak_live() {
        let mut c = Compiler::new();
        for ev in [
            alloc(0, 10),
            alloc(1, 20),
            Event::Free { id: 0 },
            alloc(2, 30),
            Event::Realloc { old: 1, new: 3, size: 5 },
        ] {
            c.push(&ev).unwrap();
        }
        let p = c.finish();
        assert_eq!(p.slots, 2);
        assert_eq!(p.ops[3].slot, p.ops[0].slot, "freed slot reused");
        assert_eq!(p.ops[4].slot, p.ops[1].slot, "realloc keeps the slot");
        assert_eq!(p.peak_live_bytes, 50);
        assert_eq!(p.peak_live_objects, 2);
        assert_eq!(p.final_live_bytes, 35);
        let counts: Vec<u64> = p.counts.iter().map(|(_, n)| n).collect();
        assert_eq!(counts, [3, 0, 0, 1, 1]);
        assert_eq!((p.counts[OpKind::Free], p.counts.allocations()), (1, 4));
        assert_eq!(p.live_bytes_at(&[0, 1, 3, 5]), vec![0, 10, 20, 35]);
    }

    #[test]
    fn bad_frees_are_named() {
        let mut c = Compiler::new();
        c.push(&alloc(0, 8)).unwrap();
        let e = c.push(&Event::Free { id: 7 }).unwrap_err();
        assert_eq!(e, CompileError::NeverAllocated { what: "free", id: 7 });
        assert_eq!(e.to_string(), "free of object 7, which was never allocated");
        c.push(&Event::Free { id: 0 }).unwrap();
        assert!(c
            .push(&Event::Free { id: 0 })
            .unwrap_err()
            .to_string()
            .contains("already freed"));
        assert!(c
            .push(&Event::Realloc { old: 0, new: 1, size: 1 })
            .unwrap_err()
            .to_string()
            .contains("realloc of object 0"));
        assert_eq!(
            c.push(&alloc(5, 1)).unwrap_err(),
            CompileError::OutOfOrder { id: 5, expected: 1 }
        );
        assert!(c
            .push(&alloc(1, 1 << 50))
            .unwrap_err()
            .to_string()
            .contains("bytes"));
    }

    #[test]
    fn a_free_before_its_allocation_names_where_it_is_allocated() {
        let mut recs = vec![Record::new(alloc(0, 8))];
        let mut f = Record::new(Event::Free { id: 1 });
        f.thread = 1;
        recs.push(f);
        recs.push(Record::new(alloc(1, 8)));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.csv");
        let form = mallard_trace::Form::Csv;
        mallard_trace::write(&path, &Default::default(), recs.clone(), form).unwrap();
        let mut r = mallard_trace::open(&path).unwrap().unchecked();
        let e = compile(&mut r, |_| {}).unwrap_err().to_string();
        assert!(
            e.contains("free of object 1 on thread 1, which is allocated later, at line ")
                && e.contains("(on thread 0)"),
            "{e}"
        );
        // Never allocated at all: said so.
        recs.pop();
        mallard_trace::write(&path, &Default::default(), recs, form).unwrap();
        let mut r = mallard_trace::open(&path).unwrap().unchecked();
        let e = compile(&mut r, |_| {}).unwrap_err().to_string();
        assert!(e.contains("which was never allocated"), "{e}");
    }

    #[test]
    fn op_is_16_bytes() {
        assert_eq!(std::mem::size_of::<Op>(), 16);
    }

    fn compiled(recs: &[(Domain, Event)]) -> Program {
        let mut c = Compiler::new();
        for &(domain, event) in recs {
            let mut r = Record::new(event);
            r.domain = domain;
            c.push_record(&r).unwrap();
        }
        c.finish()
    }

    #[test]
    fn raw_and_c_objects_are_marked_only_in_a_trace_with_python_domains() {
        use Domain::*;
        let realloc = |old, new| Event::Realloc { old, new, size: 9 };
        let recs = [
            (Object, alloc(0, 8)),
            (Raw, alloc(1, 8)),
            (C, alloc(2, 8)),
            (Mem, alloc(3, 8)),
            // A free and a realloc follow their object, whatever their record says.
            (C, Event::Free { id: 0 }),
            (Object, realloc(1, 4)),
            (C, realloc(3, 5)),
            (Object, Event::Free { id: 2 }),
        ];
        let prog = compiled(&recs);
        let marks: Vec<bool> = prog.ops.iter().map(Op::system).collect();
        assert_eq!(marks, [false, true, true, false, false, true, false, true]);
        assert_eq!(prog.system_ops, 4);
        // All c (every generated or imported trace): nothing is marked.
        let plain: Vec<_> = recs.iter().map(|&(_, e)| (C, e)).collect();
        let prog = compiled(&plain);
        assert!(prog.ops.iter().all(|op| !op.system()));
        assert_eq!(prog.system_ops, 0);
    }
}
