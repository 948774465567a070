//! `mallard-io`: the one place where Mallard decides what it may do to the user's files and
//! processes (docs/data-safety.md is the user-facing side of this crate).
//!
//! - [`atomic`]: every file and report directory Mallard writes goes through here: regular files
//!   are written to a temporary sibling and renamed into place; pipes, FIFOs and character
//!   devices get a streamed write and are never replaced; a report directory is replaced only if
//!   it carries Mallard's marker; output locations are checked before any work starts.
//! - [`interrupt`]: SIGINT/SIGTERM/SIGHUP handling: stop registered child processes, remove
//!   registered temporary paths, exit 128+signal; or, for `record`, forward them to the
//!   recorded program.
//!
//! - [`date`]: the one civil-date formatter (report dates, the recorder's `created`).
//! - [`text`]: the one parse of option words ([`text::Words`]: the message for an unknown word)
//!   and the one thousands separator.
//!
//! It knows nothing of traces, allocators or reports: only paths, bytes, processes and words.

pub mod atomic;
pub mod date;
pub mod interrupt;
pub mod text;
