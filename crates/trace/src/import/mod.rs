//! Importers: other tools' allocation traces turned into Mallard records.
//!
//! An importer reads the foreign file as a stream and sends records to a sink (typically a
//! [`crate::TraceWriter`]), so a trace of any size converts in constant memory plus one table
//! entry per live address. Importers map addresses to dense ids, which is the one place in
//! Mallard where a hash map is the right tool: replay never sees an address.
//!
//! * [`android`]: the text traces of AOSP's `memory_replay` (`malloc_debug`'s `record_allocs`).

pub mod android;
