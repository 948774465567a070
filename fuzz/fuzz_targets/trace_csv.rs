//! Mallard's CSV reader, steered past the first-line check.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let mut bytes = b"# mallard-trace v1\n".to_vec();
    bytes.extend_from_slice(data);
    if let Ok(reader) = mallard_trace::TraceReader::from_bytes(Path::new("fuzz.csv"), bytes) {
        for rec in reader {
            if rec.is_err() {
                break;
            }
        }
    }
});
