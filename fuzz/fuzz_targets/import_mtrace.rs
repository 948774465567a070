//! The glibc mtrace importer. The first byte chooses lenient mode.
#![no_main]
#[macro_use]
mod checked;

checked_import_target!(mallard_trace::import::mtrace::convert_from, "fuzz.mtrace");
