//! What the importer targets share (each target includes this file as `mod checked`).

/// A fuzz target for an importer's `convert_from(path, bytes, lenient, sink)`: the input's first
/// byte chooses lenient mode, the rest is the file `$name`, and every record the importer writes
/// must pass the trace validator (an error is fine; a panic, a hang or an invalid trace is not).
macro_rules! checked_import_target {
    ($convert_from:path, $name:literal) => {
        libfuzzer_sys::fuzz_target!(|data: &[u8]| {
            let Some((&flag, bytes)) = data.split_first() else {
                return;
            };
            let mut v = mallard_trace::Validator::new();
            let _ = $convert_from(
                std::path::Path::new($name),
                bytes,
                flag & 1 == 1,
                &mut |r| {
                    assert!(v.check(&r).is_ok(), "the importer wrote an invalid trace");
                    Ok(())
                },
            );
        });
    };
}
