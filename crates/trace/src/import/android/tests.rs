use super::*;
use crate::{Form, TraceReader, TraceWriter, Validator};
use std::path::PathBuf;

fn convert_text(text: &str, lenient: bool) -> Result<(ImportSummary, Vec<Record>), TraceError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.txt");
    std::fs::write(&path, text).unwrap();
    let mut recs = Vec::new();
    let sum = convert(&path, lenient, &mut |r| {
        recs.push(r);
        Ok(())
    })?;
    let mut v = Validator::new();
    for r in &recs {
        v.check(r).unwrap();
    }
    Ok((sum, recs))
}

fn rec(thread: u32, event: Event) -> Record {
    Record {
        thread,
        timestamp_ns: None,
        domain: crate::model::Domain::C,
        event,
    }
}

#[test]
fn every_kind_of_line_maps_as_documented() {
    let text = "\
100: malloc 0xa000 24
100: calloc 0xb000 4 8
200: memalign 0xc000 64 100
200: realloc 0xd000 0xa000 48
100: realloc 0xe000 0x0 16
100: free 0x0
100: free 0xb000
200: thread_done 0x0
300: realloc 0x0 0xc000 0
300: malloc 0x0 0
300: realloc 0x0 0xd000 99

100: free 0xd000
";
    let (sum, recs) = convert_text(text, false).unwrap();
    use AllocKind::*;
    assert_eq!(
        recs,
        [
            rec(
                0,
                Event::Alloc {
                    id: 0,
                    size: 24,
                    align: 0,
                    kind: Malloc
                }
            ),
            rec(
                0,
                Event::Alloc {
                    id: 1,
                    size: 32,
                    align: 0,
                    kind: Calloc
                }
            ),
            rec(
                1,
                Event::Alloc {
                    id: 2,
                    size: 100,
                    align: 64,
                    kind: Aligned
                }
            ),
            rec(
                1,
                Event::Realloc {
                    old: 0,
                    new: 3,
                    size: 48
                }
            ),
            rec(
                0,
                Event::Alloc {
                    id: 4,
                    size: 16,
                    align: 0,
                    kind: Malloc
                }
            ),
            rec(0, Event::Free { id: 1 }),
            rec(2, Event::Free { id: 2 }),
            rec(0, Event::Free { id: 3 }),
        ]
    );
    assert_eq!(sum.lines, 13);
    assert_eq!(
        (sum.malloc, sum.calloc, sum.memalign, sum.realloc, sum.free),
        (2, 1, 1, 4, 3)
    );
    assert_eq!(
        (sum.thread_done, sum.null_frees, sum.realloc_from_null),
        (1, 1, 1)
    );
    assert_eq!((sum.realloc_to_zero, sum.failed_calls), (1, 2));
    assert_eq!(
        sum.counts,
        EventCounts {
            malloc: 2,
            calloc: 1,
            aligned: 1,
            frees: 3,
            reallocs: 1
        }
    );
    assert_eq!(
        (sum.threads, sum.live_at_end, sum.has_timestamps),
        (3, 1, false)
    );
    assert_eq!(
        sum.header.metadata.get("program").map(String::as_str),
        Some("app")
    );
    assert_eq!(
        sum.header.metadata.get("source").map(String::as_str),
        Some("mallard convert --from android app.txt")
    );
}

#[test]
fn timestamps_are_start_times_from_the_first() {
    let text = "\
7: malloc 0x10 8 5000 5100
7: free 0x10 5200 5250
7: thread_done 0x0 6000
8: malloc 20 8
8: malloc 30 8 0 0
";
    let (sum, recs) = convert_text(text, false).unwrap();
    let ts: Vec<_> = recs.iter().map(|r| r.timestamp_ns).collect();
    assert_eq!(ts, [Some(0), Some(200), None, None]);
    assert!(sum.has_timestamps);
    // `20` and `30` are hexadecimal addresses without `0x`.
    assert_eq!(
        recs[3].event,
        Event::Alloc {
            id: 2,
            size: 8,
            align: 0,
            kind: AllocKind::Malloc
        }
    );
}

#[test]
fn strict_errors_name_the_line_and_lenient_counts() {
    let unknown_free = "1: malloc 0x10 8\n1: free 0x20\n1: free 0x10\n";
    let err = convert_text(unknown_free, false).unwrap_err();
    assert!(matches!(
        err,
        TraceError::Invalid {
            location: Location::Line { line: 2 },
            ..
        }
    ));
    assert!(err.to_string().ends_with(
        "line 2: free of address 0x20, which is not live (use --lenient to skip such calls)"
    ));
    let (sum, recs) = convert_text(unknown_free, true).unwrap();
    assert_eq!((sum.unknown_frees, recs.len()), (1, 2));

    let reused = "1: malloc 0x10 8\n1: malloc 0x10 16\n1: free 0x10\n";
    let err = convert_text(reused, false).unwrap_err().to_string();
    assert!(
        err.contains("line 2: address 0x10 is allocated again"),
        "{err}"
    );
    let (sum, recs) = convert_text(reused, true).unwrap();
    assert_eq!(sum.reused_addresses, 1);
    assert_eq!(
        recs[2].event,
        Event::Free { id: 1 },
        "the newer object is the one freed"
    );
    assert_eq!(sum.live_at_end, 0);

    let odd_align = "1: memalign 0x10 24 8\n";
    assert!(convert_text(odd_align, false)
        .unwrap_err()
        .to_string()
        .contains("line 1: alignment 24"));
    let (sum, recs) = convert_text(odd_align, true).unwrap();
    assert_eq!(sum.rounded_alignments, 1);
    assert!(matches!(recs[0].event, Event::Alloc { align: 32, .. }));

    let lenient_realloc = "1: realloc 0x30 0x99 8\n";
    let (sum, recs) = convert_text(lenient_realloc, true).unwrap();
    assert_eq!(sum.unknown_frees, 1);
    assert!(matches!(recs[0].event, Event::Alloc { size: 8, .. }));
}

#[test]
fn malformed_lines_are_corrupt_with_line_numbers() {
    let cases = [
        ("1: malloc 0x10\n", "`malloc` takes 1 arguments"),
        ("1: malloc 0x10 8 9\n", "`malloc` takes 1 arguments"),
        ("x: malloc 0x10 8\n", "expected `TID:`"),
        ("1 malloc 0x10 8\n", "expected `TID:`"),
        ("1: mmap 0x10 8\n", "unknown call `mmap`"),
        ("1: malloc 0xzz 8\n", "not hexadecimal"),
        ("1: malloc 0x10 -8\n", "size `-8`"),
        ("1: calloc 0x10 4294967296 4294967296\n", "overflows"),
        ("1: free\n", "without an address"),
        ("1: thread_done 0x0 1 2\n", "at most one"),
    ];
    for (text, want) in cases {
        let text = format!("1: malloc 0x5 1\n{text}");
        let err = convert_text(&text, true).unwrap_err();
        assert!(matches!(
            err,
            TraceError::Corrupt {
                location: Location::Line { line: 2 },
                ..
            }
        ));
        assert!(err.to_string().contains(want), "{text:?}: {err}");
    }
    let long = format!("1: malloc 0x10 {}\n", "9".repeat(5000));
    assert!(convert_text(&long, false)
        .unwrap_err()
        .to_string()
        .contains("longer than"));
}

/// Where the shared traces live: beside the checkout (`../shared` from the repository root).
fn shared_android() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/traces/android")
}

#[test]
fn converts_the_real_systemui_trace_exactly() {
    let zip = shared_android().join("systemui.zip");
    if !zip.exists() {
        eprintln!(
            "note: {} is absent; skipping the real-trace import test",
            zip.display()
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Read straight from the archive, as AOSP ships it.
    assert_eq!(crate::import::detect(&zip), Some("android"));
    let out = dir.path().join("systemui.mtr");
    let h = header(&zip, false);
    assert_eq!(h.get("program"), Some("systemui"));
    let mut w = TraceWriter::create(&out, &h, Form::Binary).unwrap();
    let sum = convert(&zip, false, &mut |r| w.push(&r)).unwrap();
    let written = w.finish().unwrap();

    // The counts in shared/traces/android/README.md.
    assert_eq!(sum.lines, 786_454);
    assert_eq!(
        (
            sum.malloc,
            sum.calloc,
            sum.memalign,
            sum.realloc,
            sum.free,
            sum.thread_done
        ),
        (383_154, 7_847, 1_066, 29_167, 364_863, 357)
    );
    assert_eq!((sum.null_frees, sum.realloc_from_null), (15_818, 10_623));
    assert_eq!(
        (sum.realloc_to_zero, sum.failed_calls, sum.threads),
        (0, 0, 393)
    );
    // What becomes of them: reallocs from NULL are mallocs, frees of NULL vanish.
    let expected = EventCounts {
        malloc: 383_154 + 10_623,
        calloc: 7_847,
        aligned: 1_066,
        frees: 364_863 - 15_818,
        reallocs: 29_167 - 10_623,
    };
    assert_eq!(sum.counts, expected);
    assert_eq!(written, 770_279);
    let text = sum.to_string();
    assert!(
        text.starts_with("imported 770,279 events on 393 threads from 786,454 lines\n"),
        "{text}"
    );
    assert!(text.contains("10,623 realloc(NULL, n) as malloc"), "{text}");
    assert!(!text.contains("lenient"), "{text}");
    assert_eq!(expected.events(), 786_454 - 15_818 - 357);
    assert_eq!(
        sum.live_at_end,
        expected.objects() - expected.frees - expected.reallocs
    );

    // And the file reads back, valid, with the same counts.
    let reader = crate::open(&out).unwrap();
    assert_eq!(reader.trailer_counts(), Some(expected));
    let mut stats = crate::stats::TraceStats::new();
    for r in reader {
        stats.add(&r.unwrap());
    }
    let stats = stats.finish();
    assert_eq!(stats.counts, expected);
    assert_eq!(stats.threads, 393);
    assert_eq!(stats.live_objects_end, sum.live_at_end);
    let _ = TraceReader::from_bytes(&out, std::fs::read(&out).unwrap()).unwrap();
}

/// Writes `entries` (name, text) into a zip archive at `path`, deflated.
fn write_zip(path: &Path, entries: &[(&str, &str)]) {
    use std::io::Write;
    let mut z = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, text) in entries {
        z.start_file(*name, opts).unwrap();
        z.write_all(text.as_bytes()).unwrap();
    }
    z.finish().unwrap();
}

#[test]
fn reads_a_trace_inside_a_zip_archive() {
    let text = "1: malloc 0x10 32\n2: calloc 0x20 4 8\n1: realloc 0x30 0x10 64\n2: free 0x20\n1: free 0x30\n";
    let (plain, want) = convert_text(text, false).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let one = |entries: &[(&str, &str)]| {
        let zip = dir.path().join("app.zip");
        write_zip(&zip, entries);
        let mut got = Vec::new();
        let r = convert(&zip, false, &mut |r| {
            got.push(r);
            Ok(())
        });
        (zip, r.map(|s| (s, got)))
    };
    // The only file, whatever its name.
    let (zip, r) = one(&[("trace.log", text)]);
    let (sum, got) = r.unwrap();
    assert_eq!((sum.counts, &got), (plain.counts, &want));
    assert_eq!(crate::import::detect(&zip), Some("android"));
    // The only .txt among other files.
    let (_, r) = one(&[("NOTICE", "licence"), ("app.txt", text)]);
    assert_eq!(r.unwrap().1, want);
    // Ambiguous or empty archives, and a damaged one, are errors that say so.
    let (zip, r) = one(&[("a.txt", text), ("b.txt", text)]);
    let e = r.unwrap_err().to_string();
    assert!(e.contains("one trace") && e.contains("a.txt, b.txt"), "{e}");
    assert_eq!(crate::import::detect(&zip), None);
    let (_, r) = one(&[]);
    let e = r.unwrap_err().to_string();
    assert!(e.contains("holds 0 files, 0 of them .txt: []"), "{e}");
    let (zip, _) = one(&[("app.txt", text)]);
    let bytes = std::fs::read(&zip).unwrap();
    std::fs::write(&zip, &bytes[..bytes.len() / 2]).unwrap();
    let e = convert(&zip, false, &mut |_| Ok(()))
        .unwrap_err()
        .to_string();
    assert!(e.contains("zip"), "{e}");
    // A zip of something else is not taken for an Android trace.
    let (zip, _) = one(&[("x.txt", "hello\n")]);
    assert_eq!(crate::import::detect(&zip), None);
    // Errors inside name the line of the text.
    let (_, r) = one(&[("app.txt", "1: malloc 0x10 32\n1: free 0x99\n")]);
    let e = r.unwrap_err().to_string();
    assert!(e.contains("app.zip") && e.contains("line 2"), "{e}");
}

#[test]
fn converts_the_real_surfaceflinger_trace_exactly() {
    let zip = shared_android().join("surfaceflinger.zip");
    if !zip.exists() {
        eprintln!("note: {} is absent; skipping", zip.display());
        return;
    }
    let mut events = 0u64;
    let sum = convert(&zip, false, &mut |_| {
        events += 1;
        Ok(())
    })
    .unwrap();
    // The counts in shared/traces/android/README.md.
    assert_eq!(sum.lines, 2_455_240);
    assert_eq!(
        (sum.malloc, sum.calloc, sum.memalign, sum.realloc, sum.free),
        (1_142_990, 44_229, 0, 73_781, 1_194_239)
    );
    assert_eq!((sum.thread_done, sum.threads), (1, 15));
    assert_eq!((sum.null_frees, sum.realloc_from_null), (2_514, 8_073));
    let expected = EventCounts {
        malloc: 1_142_990 + 8_073,
        calloc: 44_229,
        aligned: 0,
        frees: 1_194_239 - 2_514,
        reallocs: 73_781 - 8_073,
    };
    assert_eq!(sum.counts, expected);
    assert_eq!(events, 2_452_725);
    assert_eq!(sum.live_at_end, 3_567);
}
