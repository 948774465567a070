use super::*;
use crate::Validator;
use proptest::prelude::*;
use std::io::Write;

fn run(bytes: &[u8], lenient: bool) -> Result<(HeaptrackSummary, Vec<Record>), TraceError> {
    let mut recs = Vec::new();
    let mut v = Validator::new();
    let sum = convert_from(Path::new("heaptrack.t.1.zst"), bytes, lenient, &mut |r| {
        v.check(&r).expect("importer output is a valid trace");
        recs.push(r);
        Ok(())
    })?;
    Ok((sum, recs))
}

fn malloc(id: u64, size: u64) -> Event {
    Event::Alloc {
        id,
        size,
        align: 0,
        kind: AllocKind::Malloc,
    }
}

/// What heaptrack 1.4 wrote for the program of the mtrace test (strings and stacks trimmed).
const FILE: &str = "v 10400 3
X ./t
I 1000 5e298d
s 4 main
t 1 0
i 401136 1 2 3 4
a 11c00 4
+ 0
a a 8
+ 1
a f 9
+ 2
- 1
a 64 a
+ 3
c 1a
- 2
a 7 b
+ 4
a 5 c
+ 5
- 3
- 0
c 2b
R 3b4

# strings: 20
";

#[test]
fn a_real_recording_maps_as_documented_in_every_compression() {
    let expect = vec![
        malloc(0, 0x11c00),
        malloc(1, 10),
        malloc(2, 15),
        Event::Free { id: 1 },
        malloc(3, 100),
        Event::Free { id: 2 },
        malloc(4, 7),
        malloc(5, 5),
        Event::Free { id: 3 },
        Event::Free { id: 0 },
    ];
    let zst = zstd::encode_all(FILE.as_bytes(), 3).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(FILE.as_bytes()).unwrap();
    let gz = gz.finish().unwrap();
    for bytes in [FILE.as_bytes(), &zst, &gz] {
        let (sum, recs) = run(bytes, false).unwrap();
        assert_eq!(recs.iter().map(|r| r.event).collect::<Vec<_>>(), expect);
        assert_eq!(recs[5].timestamp_ns, Some(26_000_000));
        assert_eq!(sum.allocations, 6);
        assert_eq!(sum.frees, 4);
        assert_eq!(sum.allocation_infos, 6);
        assert_eq!(sum.live_at_end, 2);
        assert_eq!(sum.command, "./t");
        assert_eq!((sum.heaptrack_version, sum.file_version), (0x10400, 3));
        assert_eq!(sum.lines, 27);
    }
    assert!(looks_like(&zst) && looks_like(&gz) && looks_like(FILE.as_bytes()));
}

#[test]
fn frees_pair_with_the_latest_live_allocation_of_their_info() {
    let (_, recs) = run(b"v 10400 3\na 10 1\n+ 0\n+ 0\n- 0\n+ 0\n- 0\n- 0\n", false).unwrap();
    let ev: Vec<Event> = recs.iter().map(|r| r.event).collect();
    assert_eq!(
        ev,
        vec![
            malloc(0, 16),
            malloc(1, 16),
            Event::Free { id: 1 },
            malloc(2, 16),
            Event::Free { id: 2 },
            Event::Free { id: 0 },
        ]
    );
}

#[test]
fn bad_lines_name_the_line_or_are_counted_when_lenient() {
    let text = b"v 10400 3\na 10 1\n+ 0\n- 0\n- 0\n+ 7\nq 1\n";
    let e = run(text, false).unwrap_err().to_string();
    assert_eq!(
        e,
        "heaptrack.t.1.zst: line 5: free of an allocation of info 0, but none is live"
    );
    let (sum, recs) = run(text, true).unwrap();
    assert_eq!((sum.bad_lines, sum.unmatched_frees, recs.len()), (3, 1, 2));
    let e = run(b"v 10400 9\n", false).unwrap_err();
    assert!(matches!(e, TraceError::Unsupported { .. }), "{e}");
    let e = run(b"+ 0\n", true).unwrap_err().to_string();
    assert!(e.contains("no `v` version line"), "{e}");
    let e = run(b"v 10400 3\nm 1 2\n", false).unwrap_err().to_string();
    assert!(e.contains("heaptrack -i"), "{e}");
    let e = run(&[0x28, 0xb5, 0x2f, 0xfd, 1, 2, 3], false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("cannot decompress"), "{e}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Any bytes: events or an error, never a panic; the events always form a valid trace.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300),
                                   lenient in any::<bool>()) {
        let _ = run(&bytes, lenient);
        let mut v = b"v 10400 3\n".to_vec();
        v.extend_from_slice(&bytes);
        let _ = run(&v, lenient);
    }

    /// Lines made of the format's own words, in any order.
    #[test]
    fn arbitrary_lines_never_panic(lines in proptest::collection::vec(
        (prop::sample::select(vec!["+", "-", "a", "c", "v", "X", "s"]), 0u64..5, 0u64..5), 0..40),
        lenient in any::<bool>()) {
        let mut text = String::from("v 10400 3\n");
        for (k, x, y) in lines {
            text.push_str(&format!("{k} {x:x} {y:x}\n"));
        }
        let _ = run(text.as_bytes(), lenient);
    }
}

#[test]
fn an_endless_line_ends_with_an_error_naming_it() {
    for start in [&b""[..], &b"v 10400 3\ns "[..]] {
        for lenient in [false, true] {
            let input =
                std::io::Read::chain(start, std::io::Read::take(std::io::repeat(b'z'), 1 << 40));
            let e = convert_from(Path::new("zero"), input, lenient, &mut |_| Ok(()))
                .unwrap_err()
                .to_string();
            assert!(e.contains("zero: line") && e.contains("longer than"), "{e}");
        }
    }
}
