use super::decode::decode_event;
use super::encode::encode_event;
use super::*;
use crate::model::Record;

fn encode_all(recs: &[Record]) -> Vec<u8> {
    let mut state = CodecState::default();
    let mut out = Vec::new();
    for r in recs {
        encode_event(&mut state, r, &mut out);
    }
    out
}

fn decode_all(bytes: &[u8]) -> Result<Vec<Record>, String> {
    let mut state = CodecState::default();
    let mut pos = 0;
    let mut out = Vec::new();
    while pos < bytes.len() {
        out.push(decode_event(&mut state, bytes, &mut pos).map_err(|e| e.to_string())?);
    }
    Ok(out)
}

#[test]
fn events_encode_as_specified() {
    let recs = [
        // malloc(48) on thread 0: tag 0x00, size 48.
        Record::new(Event::Alloc {
            id: 0,
            size: 48,
            align: 0,
            kind: AllocKind::Malloc,
        }),
        // aligned(4096, 64) on thread 2 at t=1000: tag 0x02|F_THREAD|F_TIME|F_ALIGN, thread 2,
        // zigzag(1000) = 2000 (0xd0 0x0f), log2 64 = 6, size 4096 (0x80 0x20).
        Record {
            thread: 2,
            timestamp_ns: Some(1000),
            domain: crate::model::Domain::C,
            event: Event::Alloc {
                id: 1,
                size: 4096,
                align: 64,
                kind: AllocKind::Aligned,
            },
        },
        // free(object 0) on thread 2 at t=990: tag 0x03|F_TIME, delta -10 -> 19, distance 1.
        Record {
            thread: 2,
            timestamp_ns: Some(990),
            domain: crate::model::Domain::C,
            event: Event::Free { id: 0 },
        },
        // realloc(object 1 -> 2, 100) back on thread 0: tag 0x04|F_THREAD, thread 0, distance 0,
        // size 100.
        Record::new(Event::Realloc {
            old: 1,
            new: 2,
            size: 100,
        }),
        // calloc(1) with align 1: tag 0x01|F_ALIGN, log2 0, size 1.
        Record::new(Event::Alloc {
            id: 3,
            size: 1,
            align: 1,
            kind: AllocKind::Calloc,
        }),
    ];
    let bytes = encode_all(&recs);
    assert_eq!(
        bytes,
        [
            0x00, 48, //
            0x3a, 2, 0xd0, 0x0f, 6, 0x80, 0x20, //
            0x0b, 19, 1, //
            0x14, 0, 0, 100, //
            0x21, 0, 1,
        ]
    );
    assert_eq!(decode_all(&bytes).unwrap(), recs);
}

#[test]
fn decoder_refuses_what_no_encoder_writes() {
    let err = |b: &[u8]| decode_all(b).unwrap_err();
    assert!(err(&[0x05, 0]).contains("bad event tag"), "op 5 is unknown");
    assert!(
        err(&[0x0d, 0]).contains("bad event tag"),
        "op 5 with a timestamp"
    );
    assert!(err(&[0x23, 0, 0]).contains("alignment to a free"));
    assert!(
        err(&[0x03, 0]).contains("only 0 exist"),
        "free before any allocation"
    );
    assert!(err(&[0x00, 8, 0x03, 1]).contains("2 objects back, but only 1 exist"));
    assert!(
        err(&[0x10, 0, 0]).contains("already current"),
        "switch to thread 0 at start"
    );
    assert!(err(&[0x20, 64, 8]).contains("2^64"), "alignment 2^64");
    assert!(err(&[0x10, 0x80, 0x80, 0x80, 0x80, 0x10, 0]).contains("exceeds 2^32-1"));
    assert!(err(&[0x00]).contains("middle of an event"));
    assert!(err(&[0x00, 0x80, 0x00]).contains("minimally"));
}

#[test]
fn timestamps_wrap_in_both_directions() {
    let recs = [
        Record {
            thread: 0,
            timestamp_ns: Some(u64::MAX),
            domain: crate::model::Domain::C,
            event: Event::Alloc {
                id: 0,
                size: 0,
                align: 0,
                kind: AllocKind::Malloc,
            },
        },
        Record {
            thread: 0,
            timestamp_ns: Some(0),
            domain: crate::model::Domain::C,
            event: Event::Free { id: 0 },
        },
        Record {
            thread: 0,
            timestamp_ns: Some(1 << 63),
            domain: crate::model::Domain::C,
            event: Event::Alloc {
                id: 1,
                size: u64::MAX,
                align: 1 << 63,
                kind: AllocKind::Aligned,
            },
        },
    ];
    assert_eq!(decode_all(&encode_all(&recs)).unwrap(), recs);
}

#[test]
fn metadata_is_canonical() {
    let mut h = Header::default();
    h.metadata.insert("b".into(), "2".into());
    h.metadata.insert("a".into(), "1".into());
    let mut bytes = Vec::new();
    encode_metadata(&h, &mut bytes);
    assert_eq!(
        bytes,
        [1, b'a', 1, 0, 0, 0, b'1', 1, b'b', 1, 0, 0, 0, b'2']
    );
    assert_eq!(decode_metadata(&bytes).unwrap(), h);
    // Out of order, repeated, bad key, truncated value: all refused.
    let swapped = [1, b'b', 1, 0, 0, 0, b'2', 1, b'a', 1, 0, 0, 0, b'1'];
    assert!(decode_metadata(&swapped)
        .unwrap_err()
        .1
        .contains("out of order"));
    let repeated = [1, b'a', 0, 0, 0, 0, 1, b'a', 0, 0, 0, 0];
    assert!(decode_metadata(&repeated).is_err());
    assert!(decode_metadata(&[1, b' ', 0, 0, 0, 0]).is_err());
    assert!(decode_metadata(&[1, b'a', 9, 0, 0, 0, b'x'])
        .unwrap_err()
        .1
        .contains("runs past"));
    assert!(decode_metadata(&[0]).is_err(), "empty key");
}

#[test]
fn trailer_round_trips_and_checks_itself() {
    let t = Trailer {
        counts: EventCounts {
            malloc: 1,
            calloc: 2,
            aligned: 3,
            frees: 4,
            reallocs: 5,
        },
        blocks: 6,
    };
    let bytes = t.encode();
    assert_eq!(&bytes[4..12], &15u64.to_le_bytes());
    assert_eq!(Trailer::decode(&bytes), Ok(t));
    let mut bad = bytes;
    bad[20] ^= 1;
    assert_eq!(
        Trailer::decode(&bad).unwrap_err(),
        "trailer checksum mismatch"
    );
}

#[test]
fn header_limits() {
    let mut h = Header::default();
    assert!(check_header(&h).is_ok());
    h.metadata.insert("k".repeat(MAX_KEY_LEN), "v".into());
    assert!(check_header(&h).is_ok());
    h.metadata.insert("k".repeat(MAX_KEY_LEN + 1), "v".into());
    assert!(check_header(&h).is_err());
    let mut h = Header::default();
    h.metadata
        .insert("big".into(), "x".repeat(MAX_METADATA_LEN));
    assert!(check_header(&h).unwrap_err().contains("limit"));
}

/// A binary file by hand: empty metadata, one stored block of `payload` holding `events`
/// events, and a trailer claiming `counts` (so that a test can put anything in the block).
fn stored_file(payload: &[u8], events: u32, counts: EventCounts) -> Vec<u8> {
    stored_file_of(VERSION, payload, events, counts)
}

/// [`stored_file`] with the given format version in its header.
fn stored_file_of(version: u16, payload: &[u8], events: u32, counts: EventCounts) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&MAGIC);
    f.extend_from_slice(&version.to_le_bytes());
    f.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    let crc = crc32fast::hash(&f);
    f.extend_from_slice(&crc.to_le_bytes());
    let block_at = f.len();
    f.extend_from_slice(&BLOCK_TAG);
    f.extend_from_slice(&[CODEC_STORED, 0, 0, 0]);
    f.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    f.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    f.extend_from_slice(&events.to_le_bytes());
    let mut h = crc32fast::Hasher::new();
    h.update(&f[block_at..]);
    h.update(payload);
    f.extend_from_slice(&h.finalize().to_le_bytes());
    f.extend_from_slice(payload);
    f.extend_from_slice(&Trailer { counts, blocks: 1 }.encode());
    f
}

/// The records a reader returns before its error, and the error.
fn read_until_error(file: Vec<u8>) -> (usize, String) {
    let reader = crate::TraceReader::from_bytes(std::path::Path::new("t.mtr"), file).unwrap();
    let mut n = 0;
    for rec in reader {
        match rec {
            Ok(_) => n += 1,
            Err(e) => return (n, e.to_string()),
        }
    }
    panic!("no error after {n} records");
}

#[test]
fn errors_deep_in_a_block_name_their_event_whatever_the_batching() {
    // 300 malloc(48) (more than two of the decoder's batches), then a bad tag.
    let mut payload = [0x00, 0x30].repeat(300);
    payload.push(0x07);
    let counts = EventCounts {
        malloc: 301,
        ..Default::default()
    };
    let (n, err) = read_until_error(stored_file(&payload, 301, counts));
    assert_eq!(n, 300);
    assert_eq!(err, "t.mtr: byte 20 (event 300): bad event tag 0x07");

    // 200 events, then 2 bytes that no event claims: the last event is the one at fault.
    let mut payload = [0x00, 0x30].repeat(200);
    payload.extend_from_slice(&[0x00, 0x30]);
    let counts = EventCounts {
        malloc: 200,
        ..Default::default()
    };
    let (n, err) = read_until_error(stored_file(&payload, 200, counts));
    assert_eq!(n, 199);
    assert_eq!(
        err,
        "t.mtr: byte 20 (event 199): block has 2 bytes left after its last event"
    );

    // A free two objects back when only one exists, at event 129 (the second batch).
    let mut payload = [0x00, 0x30].repeat(129);
    payload.extend_from_slice(&[0x03, 0x81, 0x01]);
    let (n, err) = read_until_error(stored_file(&payload, 130, counts));
    assert_eq!(n, 129);
    assert_eq!(
        err,
        "t.mtr: byte 20 (event 129): event refers 130 objects back, but only 129 exist"
    );
}

fn read_all(file: Vec<u8>) -> Result<Vec<Record>, crate::TraceError> {
    crate::TraceReader::from_bytes(std::path::Path::new("t.mtr"), file)?.collect()
}

/// One record of each op in each domain, with the thread switching now and then.
fn every_domain() -> Vec<Record> {
    let mut recs = Vec::new();
    let mut next = 0;
    for (i, d) in crate::Domain::ALL.into_iter().enumerate() {
        let at = |event| Record {
            thread: (i % 2) as u32,
            timestamp_ns: None,
            domain: d,
            event,
        };
        recs.push(at(Event::Alloc {
            id: next,
            size: 24,
            align: 0,
            kind: AllocKind::Malloc,
        }));
        recs.push(at(Event::Alloc {
            id: next + 1,
            size: 4096,
            align: 64,
            kind: AllocKind::Aligned,
        }));
        recs.push(at(Event::Realloc {
            old: next,
            new: next + 2,
            size: 600,
        }));
        recs.push(at(Event::Free { id: next + 2 }));
        next += 3;
    }
    recs
}

#[test]
fn domains_ride_in_the_tag_bits_a_c_event_is_as_in_v1() {
    let rec = |domain, event| Record {
        thread: 0,
        timestamp_ns: None,
        domain,
        event,
    };
    let malloc = |id| Event::Alloc {
        id,
        size: 48,
        align: 0,
        kind: AllocKind::Malloc,
    };
    let recs = [
        rec(crate::Domain::C, malloc(0)),
        rec(crate::Domain::Raw, malloc(1)),
        rec(crate::Domain::Mem, malloc(2)),
        rec(crate::Domain::Object, malloc(3)),
        rec(crate::Domain::Object, Event::Free { id: 3 }),
    ];
    let bytes = encode_all(&recs);
    assert_eq!(bytes, [0x00, 48, 0x40, 48, 0x80, 48, 0xc0, 48, 0xc3, 0]);
    assert_eq!(decode_all(&bytes).unwrap(), recs);
}

#[test]
fn every_domain_round_trips_through_a_v2_file() {
    let recs = every_domain();
    let mut file = Vec::new();
    let mut enc = Encoder::with_block_target(&Header::default(), &mut file, 7).unwrap();
    for r in &recs {
        enc.push(r, &mut file).unwrap();
    }
    enc.finish(&mut file).unwrap();
    assert_eq!(
        u16::from_le_bytes([file[8], file[9]]),
        2,
        "writers write v2"
    );
    assert_eq!(read_all(file).unwrap(), recs);
}

/// The example of docs/trace-format.md (§2.8) as the version-1 writer wrote it, byte for byte.
const V1_SAMPLE: [u8; 140] = [
    0x4d, 0x41, 0x4c, 0x4c, 0x41, 0x52, 0x44, 0x00, 0x01, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00,
    0x07, 0x70, 0x72, 0x6f, 0x67, 0x72, 0x61, 0x6d, 0x04, 0x00, 0x00, 0x00, 0x64, 0x65, 0x6d, 0x6f,
    0x76, 0x68, 0xad, 0x51, 0x42, 0x4c, 0x43, 0x4b, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00,
    0x10, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x9b, 0xc2, 0x15, 0x23, 0x00, 0x30, 0x3a, 0x01,
    0xd0, 0x0f, 0x06, 0x80, 0x20, 0x0b, 0x13, 0x01, 0x14, 0x00, 0x00, 0x64, 0x54, 0x52, 0x4c, 0x52,
    0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xc3, 0xcf, 0x96, 0xff,
];

#[test]
fn a_version_1_file_still_reads_as_domain_c() {
    let (reader, header) = {
        let r = crate::TraceReader::from_bytes(std::path::Path::new("t.mtr"), V1_SAMPLE.to_vec())
            .unwrap();
        let h = r.header().clone();
        (r, h)
    };
    assert_eq!(header.get("program"), Some("demo"));
    let recs: Vec<Record> = reader.collect::<Result<_, _>>().unwrap();
    assert_eq!(recs.len(), 4);
    assert!(recs.iter().all(|r| r.domain == crate::Domain::C));
    assert_eq!(recs[1].thread, 1);
    assert_eq!(recs[1].timestamp_ns, Some(1000));
    assert_eq!(
        recs[3].event,
        Event::Realloc {
            old: 1,
            new: 2,
            size: 100
        }
    );
}

#[test]
fn version_1_keeps_the_domain_bits_reserved() {
    // In v1 bits 6-7 were reserved: a v1 file with them set is corrupt, and says where.
    let counts = EventCounts {
        malloc: 1,
        ..Default::default()
    };
    let err = read_all(stored_file_of(VERSION_1, &[0x40, 48], 1, counts)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "t.mtr: byte 20 (event 0): bad event tag 0x40"
    );
    // The same bytes in v2: a raw-domain malloc(48).
    let recs = read_all(stored_file_of(VERSION, &[0x40, 48], 1, counts)).unwrap();
    assert_eq!(recs[0].domain, crate::Domain::Raw);
    // Another version is unsupported.
    let err = read_all(stored_file_of(3, &[0x00, 48], 1, counts)).unwrap_err();
    assert!(err.to_string().contains("versions 1 and 2"), "{err}");
}
