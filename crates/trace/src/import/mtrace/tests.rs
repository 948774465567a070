use super::*;
use crate::Validator;
use proptest::prelude::*;

fn run(text: &[u8], lenient: bool) -> Result<(MtraceSummary, Vec<Event>), TraceError> {
    let mut events = Vec::new();
    let mut v = Validator::new();
    let sum = convert_from(Path::new("m.txt"), text, lenient, &mut |r| {
        v.check(&r).expect("importer output is a valid trace");
        events.push(r.event);
        Ok(())
    })?;
    Ok((sum, events))
}

fn malloc(id: u64, size: u64) -> Event {
    Event::Alloc {
        id,
        size,
        align: 0,
        kind: AllocKind::Malloc,
    }
}

/// The log glibc 2.36 wrote for: a = malloc(10); b = calloc(3, 5); a = realloc(a, 100);
/// c = memalign(64, 30); free(b); d = realloc(NULL, 7); realloc(d, 0); free(NULL);
/// malloc(1 << 62) (fails); posix_memalign(&f, 32, 5); free(c); free(a); plus a free of a
/// block from before mtrace() and a caller with spaces in its file name.
const LOG: &str = "= Start
@ ./t:[0x11c0] + 0x561bb5cfe2a0 0xa
@ ./t:[0x11d3] + 0x561bb5cfe4a0 0xf
@ ./t:[0x11e8] < 0x561bb5cfe2a0
@ ./t:[0x11e8] > 0x561bb5cfe4c0 0x64
@ ./t:[0x11fb] + 0x561bb5cfe580 0x1e
@ ./t:[0x120b] - 0x561bb5cfe4a0
@ ./t:[0x1215] + 0x561bb5cfe4a0 0x7
@ ./t:[0x122a] - 0x561bb5cfe4a0
@ ./t:[0x123c] + (nil) 0x4000000000000000
@ ./t:[0x1256] + 0x561bb5cfe600 0x5
@ ./t:[0x1262] - 0x561bb5cfe580
@ /my dir/t:(main+0x1a)[0x126e] - 0x561bb5cfe4c0
@ /lib/x86_64-linux-gnu/libc.so.6:(__libc_freeres+a4)[0x17aa44] - 0x560fd5266b20
@ ./t:[0x1280] ! 0x561bb5cfe600 0x100000000
= End
";

#[test]
fn a_real_log_maps_as_documented() {
    let (sum, events) = run(LOG.as_bytes(), false).unwrap();
    assert_eq!(
        events,
        vec![
            malloc(0, 10),
            malloc(1, 15),
            Event::Realloc {
                old: 0,
                new: 2,
                size: 100
            },
            malloc(3, 30),
            Event::Free { id: 1 },
            malloc(4, 7),
            Event::Free { id: 4 },
            malloc(5, 5),
            Event::Free { id: 3 },
            Event::Free { id: 2 },
        ]
    );
    assert_eq!(sum.lines, 16);
    assert_eq!((sum.plus, sum.minus, sum.realloc_pairs), (6, 5, 1));
    assert_eq!(sum.failed_allocs, 1);
    assert_eq!(sum.failed_reallocs, 1);
    assert_eq!(sum.unknown_frees, 1);
    assert_eq!(sum.live_at_end, 1);
    assert_eq!(sum.counts.events(), 10);
    // Without the final line feed, and with a caller-less line.
    let (sum, _) = run(b"@ [0x1] + 0x10 0x8\n- 0x10", false).unwrap();
    assert_eq!(sum.counts.events(), 2);
}

#[test]
fn bad_lines_name_the_line_or_are_counted_when_lenient() {
    let text = "= Start\n@ ./t:[0x1] + 0x10 0x8\n@ ./t:[0x1] + 0x10 zz\n@ ./t:[0x2] - 0x10\n";
    let e = run(text.as_bytes(), false).unwrap_err().to_string();
    assert_eq!(e, "m.txt: line 3: size `zz` is not a 0x hexadecimal number");
    let (sum, events) = run(text.as_bytes(), true).unwrap();
    assert_eq!(sum.bad_lines, 1);
    assert_eq!(events, vec![malloc(0, 8), Event::Free { id: 0 }]);
    // A realloc cut in half; an address allocated twice.
    let e = run(b"+ 0x10 0x8\n< 0x10\n- 0x10\n", false)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("line 3") && e.contains("line 2 (`<`) is not followed"),
        "{e}"
    );
    let (sum, events) = run(b"+ 0x10 0x8\n< 0x10\n- 0x10\n", true).unwrap();
    assert_eq!((sum.bad_lines, events.len()), (1, 2));
    let e = run(b"+ 0x10 0x8\n+ 0x10 0x8\n", false)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("line 2") && e.contains("still lives there"),
        "{e}"
    );
    let e = run(b"hello world\n", false).unwrap_err().to_string();
    assert!(
        e.starts_with("m.txt: line 1: expected `+ ADDR SIZE`"),
        "{e}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Any bytes: events or an error, never a panic; the events always form a valid trace.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300),
                                   lenient in any::<bool>()) {
        let _ = run(&bytes, lenient);
    }

    /// Lines made of the format's own words, in any order.
    #[test]
    fn arbitrary_lines_never_panic(lines in proptest::collection::vec(
        ("[@ ]{0,2}", prop::sample::select(vec!["+", "-", "<", ">", "!", "=", "x"]),
         0u64..4, prop::sample::select(vec!["", " 0x10", " zz", " 0x"])), 0..40),
        lenient in any::<bool>()) {
        let text: String = lines.iter().map(|(pre, op, addr, size)| {
            format!("{pre}{op} {:#x}{size}\n", addr * 16)
        }).collect();
        let _ = run(text.as_bytes(), lenient);
    }
}

#[test]
fn a_caller_that_is_not_utf8_is_accepted() {
    let log = b"= Start\n@ ./t\xff\xfe:[0x11c0] + 0x10 0x20\n@ \xc3(\x80 - 0x10\n= End\n";
    let (sum, events) = run(log, false).unwrap();
    assert_eq!(events, vec![malloc(0, 0x20), Event::Free { id: 0 }]);
    assert_eq!(sum.lines, 4);
    // The call itself must still parse, and the message quotes the line safely.
    let e = run(b"@ x + 0x1\xff 0x5\n", false).unwrap_err().to_string();
    assert!(
        e.contains("line 1") && e.contains("\\xff") || e.contains('\u{fffd}'),
        "{e}"
    );
}

#[test]
fn an_endless_line_ends_with_an_error_naming_it() {
    for lenient in [false, true] {
        let input = std::io::BufReader::new(std::io::Read::take(std::io::repeat(0), 1 << 40));
        let e = convert_from(Path::new("zero"), input, lenient, &mut |_| Ok(()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("zero: line 1: line is longer than"), "{e}");
    }
    // With lenient, an over-long line that does end is skipped and counted.
    let mut log = b"@ x + 0x10 0x5\n".to_vec();
    log.extend(std::iter::repeat(b'a').take(MAX_LINE as usize * 3));
    log.extend_from_slice(b"\n@ x - 0x10\n");
    let (sum, events) = run(&log, true).unwrap();
    assert_eq!((sum.bad_lines, events.len()), (1, 2));
}
