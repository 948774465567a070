//! Any input a command names, as a Mallard trace file its workers can read by path.
//!
//! `mallard run` and `mallard gate` replay each trace in many fresh worker processes, and every
//! worker opens the trace again. So every input becomes a path to a Mallard trace in a regular
//! file, decided here once for every command:
//!
//! ```text
//!  gen:NAME[:EVENTS]                generated into the temporary directory (seed 1), once per
//!                                   thread count asked for (NAME-tN.mtr), else once (NAME.mtr)
//!  a Mallard trace, regular file    used as it is
//!  a Mallard trace through a pipe   copied into the temporary directory
//!  another tool's recording         imported into the temporary directory, as `mallard convert`
//!                                   would, saying so (and the importer's summary) through `note`
//! ```
//!
//! Each path is opened once ([`Input`]), so a FIFO works; input that no format matches is
//! refused at once, saying for each format why it is not that. The temporary directory lives
//! as long as the [`Prepared`] value, and the signal handler removes it if the command is
//! interrupted. This module does not print: what it has to say goes to the caller's `note`.

use crate::import::{self, Format, Undetected};
use crate::{Form, Input, TraceError};
use std::io;
use std::path::{Path, PathBuf};

/// Events of a `gen:NAME` input that names no count.
pub const GEN_EVENTS: u64 = 200_000;

/// The inputs as trace files, and the directory that holds the ones made for the command.
pub struct Prepared {
    /// One path per trace, in the order of the inputs.
    pub traces: Vec<PathBuf>,
    /// The names ([`crate::trace_name`]) of the traces generated from `gen:` inputs.
    pub generated: Vec<String>,
    // Declared before `_dir`, so dropped first: the handler forgets the path, then it goes.
    _guard: mallard_io::interrupt::TempGuard,
    _dir: tempfile::TempDir,
}

/// An input that cannot become a trace file.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error(transparent)]
    Trace(#[from] TraceError),
    #[error("creating a directory for generated traces")]
    TempDir(#[source] io::Error),
    #[error("{}: EVENTS must be a number", .0.display())]
    Events(PathBuf),
    #[error("{}: no such trace file", .0.display())]
    Missing(PathBuf),
    /// No format matched: why not, for each.
    #[error("{}: {why}", path.display())]
    Undetected { path: PathBuf, why: Undetected },
    /// Two inputs would be written to the same file.
    #[error("{}: two inputs named {name}; rename one", path.display())]
    SameName { path: PathBuf, name: String },
    #[error("creating {}", path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("copying {} to {}", from.display(), to.display())]
    Copy {
        from: PathBuf,
        to: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Every input as a Mallard trace file (see the module doc). `counts`: the thread counts each
/// `gen:` input is generated with (none: once, on one thread).
pub fn prepare_inputs(
    inputs: &[PathBuf],
    counts: &[u32],
    note: &mut dyn FnMut(&str),
) -> Result<Prepared, PrepareError> {
    let dir = tempfile::tempdir().map_err(PrepareError::TempDir)?;
    let guard = mallard_io::interrupt::register_temp(dir.path());
    let mut traces = Vec::new();
    let mut generated = Vec::new();
    for t in inputs {
        if let Some(spec) = t.to_str().and_then(|s| s.strip_prefix("gen:")) {
            let (name, events) = match spec.split_once(':') {
                Some((n, e)) => (n, e.parse().map_err(|_| PrepareError::Events(t.clone()))?),
                None => (spec, GEN_EVENTS),
            };
            let one = [1u32];
            for &threads in if counts.is_empty() { &one[..] } else { counts } {
                let file = match counts.is_empty() {
                    true => format!("{name}.mtr"),
                    false => format!("{name}-t{threads}.mtr"),
                };
                let path = dir.path().join(file);
                let params = crate::gen::GenParams { events, seed: 1, threads };
                crate::gen::write(name, &params, &path, Form::Binary)?;
                generated.push(crate::trace_name(&path));
                traces.push(path);
            }
        } else if !t.exists() {
            return Err(PrepareError::Missing(t.clone()));
        } else {
            traces.push(trace_file(t, dir.path(), note)?);
        }
    }
    Ok(Prepared { traces, generated, _guard: guard, _dir: dir })
}

/// One input as a trace file: the path itself if it is a Mallard trace in a regular file, else
/// a copy or an import into `dir`.
fn trace_file(t: &Path, dir: &Path, note: &mut dyn FnMut(&str)) -> Result<PathBuf, PrepareError> {
    let mut input = Input::open(t)?;
    let format = detect(&mut input)?;
    let name = crate::trace_name(t);
    let path = dir.join(format!("{name}.mtr"));
    if format == Format::Mallard && input.is_seekable() {
        return Ok(t.to_path_buf());
    }
    if path.exists() {
        return Err(PrepareError::SameName { path: t.to_path_buf(), name });
    }
    if format == Format::Mallard {
        let mut out = std::fs::File::create(&path)
            .map_err(|source| PrepareError::Create { path: path.clone(), source })?;
        input
            .copy_to(&mut out)
            .map_err(|source| PrepareError::Copy {
                from: t.to_path_buf(),
                to: path.clone(),
                source,
            })?;
        return Ok(path);
    }
    note(&importing(t, format, &format!("{name}.mtr")));
    convert_to(input, format, &path, Form::Binary, false, note)?;
    Ok(path)
}

/// The format of `input`, or an error that says for each format why it is not that.
pub fn detect(input: &mut Input) -> Result<Format, PrepareError> {
    import::detect_input(input)
        .map_err(|why| PrepareError::Undetected { path: input.path().to_path_buf(), why })
}

/// What a command says before it imports `t` for its own use: how to keep a copy as `keep`.
pub fn importing(t: &Path, format: Format, keep: &str) -> String {
    format!(
        "importing {} ({format}; `mallard convert {} -o {keep}` keeps a copy):",
        t.display(),
        t.display()
    )
}

/// [`import::convert_to`], with the importer's summary sent to `note`.
pub fn convert_to(
    input: Input,
    format: Format,
    out: &Path,
    form: Form,
    lenient: bool,
    note: &mut dyn FnMut(&str),
) -> Result<u64, TraceError> {
    let (n, summary) = import::convert_to(input, format, out, form, lenient)?;
    if let Some(s) = summary {
        note(&s);
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(p: &Prepared) -> Vec<String> {
        p.traces.iter().map(|t| crate::trace_name(t)).collect()
    }

    #[test]
    fn generated_inputs_are_made_once_per_thread_count() {
        let inputs = [PathBuf::from("gen:uniform:500")];
        let p = prepare_inputs(&inputs, &[], &mut |_| {}).unwrap();
        assert_eq!(names(&p), ["uniform"]);
        assert_eq!(p.generated, ["uniform"]);
        assert_eq!(crate::read_all(&p.traces[0]).unwrap().records.len(), 500);
        let p = prepare_inputs(&inputs, &[1, 4], &mut |_| {}).unwrap();
        assert_eq!(p.generated, ["uniform-t1", "uniform-t4"]);
        let dir = p.traces[0].parent().unwrap().to_path_buf();
        assert!(dir.is_dir());
        drop(p);
        assert!(!dir.exists(), "the temporary directory goes with the value");
    }

    #[test]
    fn a_trace_file_is_used_as_it_is_and_an_import_is_noted() {
        let tmp = tempfile::tempdir().unwrap();
        let mallard = tmp.path().join("a.mtr");
        let params = crate::gen::GenParams { events: 100, ..Default::default() };
        crate::gen::write("uniform", &params, &mallard, Form::Binary).unwrap();
        let mtrace = tmp.path().join("m.log");
        std::fs::write(
            &mtrace,
            "= Start\n@ ./a:[0x1] + 0x10 0x20\n@ ./a:[0x2] - 0x10\n",
        )
        .unwrap();
        let mut notes = Vec::new();
        let p = prepare_inputs(&[mallard.clone(), mtrace.clone()], &[], &mut |s| {
            notes.push(s.to_string())
        })
        .unwrap();
        assert_eq!(p.traces[0], mallard);
        assert_ne!(p.traces[1], mtrace);
        assert_eq!(crate::read_all(&p.traces[1]).unwrap().records.len(), 2);
        assert!(p.generated.is_empty());
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(
            notes[0].starts_with("importing ") && notes[0].contains("(mtrace;"),
            "{notes:?}"
        );
    }

    #[test]
    fn inputs_that_cannot_become_traces_are_refused_naming_them() {
        let tmp = tempfile::tempdir().unwrap();
        let err = |inputs: &[PathBuf]| {
            prepare_inputs(inputs, &[], &mut |_| {})
                .err()
                .unwrap()
                .to_string()
        };
        assert_eq!(
            err(&["gen:uniform:many".into()]),
            "gen:uniform:many: EVENTS must be a number"
        );
        let gone = tmp.path().join("gone.mtr");
        assert_eq!(
            err(std::slice::from_ref(&gone)),
            format!("{}: no such trace file", gone.display())
        );
        let junk = tmp.path().join("junk.bin");
        std::fs::write(&junk, [0xffu8; 64]).unwrap();
        assert!(err(&[junk]).contains("cannot tell the format"));
        let log = |n: &str| {
            let p = tmp.path().join(n);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, "= Start\n@ ./a:[0x1] + 0x10 0x20\n").unwrap();
            p
        };
        let (a, b) = (log("x/m.log"), log("y/m.log"));
        assert!(err(&[a, b]).ends_with("two inputs named m; rename one"));
    }
}
