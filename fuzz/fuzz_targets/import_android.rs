//! The Android memory_replay importer (it reads files: the input goes through one in /dev/shm).
//! The first byte chooses lenient mode.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;
use std::sync::OnceLock;

fn scratch() -> &'static PathBuf {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        let dir = if std::path::Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        dir.join(format!("mallard-fuzz-android-{}.txt", std::process::id()))
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&flag, text)) = data.split_first() else {
        return;
    };
    let path = scratch();
    std::fs::write(path, text).expect("write the scratch file");
    let _ = mallard_trace::import::android::convert(path, flag & 1 == 1, &mut |_| Ok(()));
});
