//! The heaptrack importer (plain text, zstd or gzip). The first byte chooses lenient mode.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mallard_trace::Validator;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Some((&flag, bytes)) = data.split_first() else {
        return;
    };
    let mut v = Validator::new();
    let _ = mallard_trace::import::heaptrack::convert_from(
        Path::new("heaptrack.fuzz.zst"),
        bytes,
        flag & 1 == 1,
        &mut |r| {
            assert!(v.check(&r).is_ok(), "the importer wrote an invalid trace");
            Ok(())
        },
    );
});
