//! Mallard's own reader (binary v1, or CSV when the bytes start with its first line): any bytes
//! give records or an error, never a panic, a hang or memory out of proportion.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    if let Ok(reader) = mallard_trace::TraceReader::from_bytes(Path::new("fuzz.mtr"), data.to_vec())
    {
        for rec in reader {
            if rec.is_err() {
                break;
            }
        }
    }
});
