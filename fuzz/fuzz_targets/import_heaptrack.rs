//! The heaptrack importer (plain text, zstd or gzip). The first byte chooses lenient mode.
#![no_main]
#[macro_use]
mod checked;

checked_import_target!(
    mallard_trace::import::heaptrack::convert_from,
    "heaptrack.fuzz.zst"
);
