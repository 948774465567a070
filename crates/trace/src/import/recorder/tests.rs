use super::*;
use crate::Validator;
use proptest::prelude::*;

/// Builds raw recordings the way the recorder does (restated here on purpose: the recorder's
/// own test checks real recordings against this reader).
struct Raw {
    bytes: Vec<u8>,
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn zz(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

impl Raw {
    fn new(pid: u32, flags: u32) -> Raw {
        let mut h = vec![0u8; 128];
        h[..8].copy_from_slice(&MAGIC);
        h[8..12].copy_from_slice(&2u32.to_le_bytes());
        h[16..20].copy_from_slice(&pid.to_le_bytes());
        h[20..24].copy_from_slice(&1u32.to_le_bytes());
        h[24..28].copy_from_slice(&flags.to_le_bytes());
        h[28..32].copy_from_slice(&4096u32.to_le_bytes());
        h[32..40].copy_from_slice(&1000u64.to_le_bytes()); // start tsc
        h[40..48].copy_from_slice(&5000u64.to_le_bytes()); // start ns
        h[48..53].copy_from_slice(b"0.1.0");
        h[64..71].copy_from_slice(b"prog -x");
        Raw { bytes: h }
    }

    /// A chunk of `thread` with records (seq, tsc, op, fields); the last clock pair is
    /// (tsc 3000, ns 6000): one tick is half a nanosecond.
    fn chunk(&mut self, thread: u32, recs: &[(u64, u64, u8, &[u64])]) {
        let mut p = Vec::new();
        let (mut ps, mut pt, mut pa) = (0u64, 0u64, 0u64);
        for &(seq, tsc, op, f) in recs {
            p.push(op);
            varint(&mut p, seq.wrapping_sub(ps));
            varint(&mut p, zz(tsc.wrapping_sub(pt) as i64));
            (ps, pt) = (seq, tsc);
            let (_, mask) = fields(op).unwrap_or((0, 0));
            for (i, &v) in f.iter().enumerate() {
                if mask & (1 << i) != 0 {
                    varint(&mut p, zz(v.wrapping_sub(pa) as i64));
                    pa = v;
                } else {
                    varint(&mut p, v);
                }
            }
        }
        self.bytes.extend_from_slice(b"CHNK");
        self.bytes.extend_from_slice(&thread.to_le_bytes());
        self.bytes
            .extend_from_slice(&(p.len() as u32).to_le_bytes());
        self.bytes.extend_from_slice(&0u32.to_le_bytes());
        self.bytes.extend_from_slice(&3000u64.to_le_bytes());
        self.bytes.extend_from_slice(&6000u64.to_le_bytes());
        self.bytes.extend_from_slice(&p);
    }

    fn end(&mut self) {
        self.bytes.extend_from_slice(b"END.");
        self.bytes.extend_from_slice(&2u32.to_le_bytes());
        self.bytes.extend_from_slice(&0u64.to_le_bytes());
        self.bytes.extend_from_slice(&3000u64.to_le_bytes());
        self.bytes.extend_from_slice(&6000u64.to_le_bytes());
    }
}

fn run(bytes: &[u8]) -> Result<(RecordingSummary, Vec<Record>), TraceError> {
    let mut recs = Vec::new();
    let sum = convert_from(Path::new("rec.1"), &bytes, &mut |r| {
        recs.push(r);
        Ok(())
    })?;
    Ok((sum, recs))
}

fn ev(recs: &[Record]) -> Vec<(u32, Event)> {
    recs.iter().map(|r| (r.thread, r.event)).collect()
}

fn malloc(id: u64, size: u64) -> Event {
    Event::Alloc {
        id,
        size,
        align: 0,
        kind: AllocKind::Malloc,
    }
}

/// Two threads making every kind of call the mapping table names.
fn two_threads() -> Raw {
    let mut raw = Raw::new(42, 0);
    // Thread 7: malloc A, realloc A -> B (begin 3, end 5), free of an unknown address,
    // realloc(NULL) and realloc(p, 0).
    raw.chunk(
        7,
        &[
            (0, 1000, OP_MALLOC, &[0xa000, 24]),
            (3, 1100, OP_REALLOC_BEGIN, &[0xa000]),
            (5, 1200, OP_REALLOC, &[0xb000, 0xa000, 100]),
            (6, 1300, OP_FREE, &[0x1234]),
            (7, 1400, OP_REALLOC, &[0xc000, 0, 8]),
            (8, 1500, OP_REALLOC_BEGIN, &[0xc000]),
            (9, 1600, OP_REALLOC, &[0, 0xc000, 0]),
        ],
    );
    // Thread 9: calloc, memalign, a failed malloc, then (after thread 7's realloc released A)
    // a malloc that gets A's address again, and valloc/pvalloc.
    raw.chunk(
        9,
        &[
            (1, 1000, OP_CALLOC, &[0xd000, 4, 8]),
            (2, 1050, OP_MEMALIGN, &[0xe000, 48, 100]),
            (4, 1150, OP_MALLOC, &[0xa000, 16]),
            (10, 1700, OP_MALLOC, &[0, 1 << 40]),
            (11, 1800, OP_PVALLOC, &[0xf000, 4096, 5000]),
            (12, 1900, OP_FREE, &[0xa000]),
        ],
    );
    raw.end();
    raw
}

#[test]
fn threads_merge_by_sequence_and_calls_map_as_documented() {
    let raw = two_threads();
    let (sum, recs) = run(&raw.bytes).unwrap();
    let mut v = Validator::new();
    for r in &recs {
        v.check(r).unwrap();
    }
    assert_eq!(
        ev(&recs),
        vec![
            (0, malloc(0, 24)),
            (
                1,
                Event::Alloc {
                    id: 1,
                    size: 32,
                    align: 0,
                    kind: AllocKind::Calloc
                }
            ),
            (
                1,
                Event::Alloc {
                    id: 2,
                    size: 100,
                    align: 64,
                    kind: AllocKind::Aligned
                }
            ),
            (1, malloc(3, 16)),
            (
                0,
                Event::Realloc {
                    old: 0,
                    new: 4,
                    size: 100
                }
            ),
            (0, malloc(5, 8)),
            (0, Event::Free { id: 5 }),
            (
                1,
                Event::Alloc {
                    id: 6,
                    size: 8192,
                    align: 4096,
                    kind: AllocKind::Aligned
                }
            ),
            (1, Event::Free { id: 3 }),
        ]
    );
    // Timestamps: (tsc - 1000) ticks of half a nanosecond.
    assert_eq!(recs[0].timestamp_ns, Some(0));
    assert_eq!(recs[4].timestamp_ns, Some(100));
    assert_eq!(sum.info.pid, 42);
    assert_eq!(sum.info.command, "prog -x");
    assert_eq!(sum.info.recorder_version, "0.1.0");
    assert!(sum.complete);
    assert_eq!(sum.records, 13);
    assert_eq!(sum.calls(), 11);
    assert_eq!(
        (sum.malloc, sum.realloc, sum.free, sum.calloc),
        (3, 3, 2, 1)
    );
    assert_eq!(sum.unknown_frees, 1);
    assert_eq!(sum.failed_calls, 1);
    assert_eq!(sum.realloc_from_null, 1);
    assert_eq!(sum.realloc_to_zero, 1);
    assert_eq!(sum.rounded_alignments, 1);
    assert_eq!(sum.threads, 2);
    assert_eq!(sum.live_at_end, 4); // calloc, memalign, realloc result, pvalloc blocks
    assert_eq!(sum.counts.events(), 9);
}

#[test]
fn failed_realloc_keeps_the_old_object_and_no_end_chunk_is_reported() {
    let mut raw = Raw::new(1, FLAG_FORKED);
    raw.chunk(
        0,
        &[
            (0, 1000, OP_MALLOC, &[0xa000, 24]),
            (1, 1000, OP_REALLOC_BEGIN, &[0xa000]),
            (2, 1000, OP_REALLOC, &[0, 0xa000, 1 << 50]),
            (3, 1000, OP_FREE, &[0xa000]),
        ],
    );
    let (sum, recs) = run(&raw.bytes).unwrap();
    assert_eq!(
        ev(&recs),
        vec![(0, malloc(0, 24)), (0, Event::Free { id: 0 })]
    );
    assert!(!sum.complete);
    assert!(sum.info.forked);
    assert_eq!(sum.failed_calls, 1);
    assert!(sum.to_string().contains("no end chunk"), "{sum}");
}

#[test]
fn damage_is_an_error_naming_the_offset() {
    let mut raw = Raw::new(1, 0);
    raw.chunk(0, &[(0, 1000, OP_MALLOC, &[0xa000, 24])]);
    let good = raw.bytes.clone();
    // Cut inside the chunk.
    let e = run(&good[..good.len() - 2]).unwrap_err().to_string();
    assert!(e.contains("byte 128") && e.contains("past the end"), "{e}");
    // Unknown op.
    let mut bad = good.clone();
    // (40: no call has it; bits 6-7 of the op byte are the domain, so a code stays below 64.)
    bad[160] = 40;
    let e = run(&bad).unwrap_err().to_string();
    assert!(
        e.contains("byte 160") && e.contains("unknown call code 40"),
        "{e}"
    );
    // Bad tag, bad magic, wrong version.
    let mut bad = good.clone();
    bad[128] = b'X';
    assert!(run(&bad)
        .unwrap_err()
        .to_string()
        .contains("unknown chunk tag"));
    assert!(run(&good[1..]).unwrap_err().to_string().contains("magic"));
    let mut bad = good.clone();
    bad[8] = 3;
    assert!(matches!(run(&bad), Err(TraceError::Unsupported { .. })));
    // A chunk length claiming 4 GiB is an error, not an allocation.
    let mut bad = good.clone();
    bad[136..140].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(run(&bad).unwrap_err().to_string().contains("out of range"));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Any bytes: a summary or an error, never a panic; events always form a valid trace.
    #[test]
    fn arbitrary_bytes_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..400),
                                   cut in 0usize..600) {
        let mut raw = Raw::new(1, 0);
        raw.chunk(0, &[(0, 1000, OP_MALLOC, &[0xa000, 24]), (1, 1000, OP_FREE, &[0xa000])]);
        let mut bytes = raw.bytes;
        bytes.truncate(cut.max(128));
        bytes.extend_from_slice(&tail);
        if let Ok((_, recs)) = run(&bytes) {
            let mut v = Validator::new();
            for r in &recs {
                prop_assert!(v.check(r).is_ok());
            }
        }
        let _ = run(&tail);
    }
}

/// The one-pass writer (records spooled, header last) writes what a header-first writer would:
/// the CSV form byte for byte, the binary form the same records and metadata.
#[test]
fn write_trace_spools_the_records_and_writes_the_header_first() {
    let dir = tempfile::tempdir().unwrap();
    let raw_path = dir.path().join("rec.42");
    std::fs::write(&raw_path, two_threads().bytes).unwrap();
    let (_, expected) = run(&two_threads().bytes).unwrap();
    let p = Provenance {
        program: "prog",
        command: "prog -x",
        source: "test",
    };
    for form in [crate::Form::Binary, crate::Form::Csv] {
        let out = dir.path().join(if form == crate::Form::Csv {
            "t.csv"
        } else {
            "t.mtr"
        });
        let sum = write_trace(&raw_path, &out, form, &p, true, &|| false).unwrap();
        let back = crate::read_all(&out).unwrap();
        assert_eq!(back.records, expected, "{form:?}");
        let meta = |k: &str| back.header.get(k).map(str::to_string);
        assert_eq!(meta("unknown_frees").as_deref(), Some("1"));
        assert_eq!(meta("calls").as_deref(), Some("11"));
        assert_eq!(meta("threads").as_deref(), Some("2"));
        assert_eq!(meta("complete").as_deref(), Some("yes"));
        assert_eq!(sum.counts.events(), expected.len() as u64);
        if form == crate::Form::Csv {
            let again = dir.path().join("again.csv");
            crate::write(&again, &back.header, expected.clone(), form).unwrap();
            assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&again).unwrap());
        }
    }
    // Nothing but the raw file and the traces: the spool left nothing behind.
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["again.csv", "rec.42", "t.csv", "t.mtr"]);
    // Stopped: nothing written.
    let out = dir.path().join("stopped.mtr");
    let e = write_trace(&raw_path, &out, crate::Form::Binary, &p, true, &|| true).unwrap_err();
    assert!(matches!(e, TraceError::Write { .. }), "{e}");
    assert!(!out.exists());
}
