//! The importer of mallard-recorder's raw recordings.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mallard_trace::Validator;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let mut v = Validator::new();
    let _ = mallard_trace::import::recorder::convert_from(Path::new("rec.1"), &data, &mut |r| {
        assert!(v.check(&r).is_ok(), "the importer wrote an invalid trace");
        Ok(())
    });
});
