//! The trace commands: `inspect`, `convert`, `gen`.

use anyhow::{bail, Context, Result};
use clap::Args;
use mallard_trace::{Form, Header, Input, Record, TraceError, TraceReader, TraceWriter};
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct GenArgs {
    /// Generator name (see --list).
    pub name: Option<String>,
    /// List the generators with what each models.
    #[arg(long)]
    pub list: bool,
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Number of events to generate.
    #[arg(long, default_value_t = 1_000_000)]
    pub events: u64,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Threads the workload runs on (larson, producer-consumer and thread-local model
    /// cross-thread traffic; the others spread their calls over threads).
    #[arg(long, default_value_t = 1)]
    pub threads: u32,
}

/// An input for `mallard run`, whose workers each read the trace again: the path itself if it
/// is a Mallard trace in a regular file; a Mallard trace arriving through a pipe or FIFO copied
/// to one file in `dir` (removed with it); another tool's recording (an Android .zip, an mtrace
/// log, a heaptrack file, a raw recording) imported into `dir`, as `mallard convert` would,
/// saying so on stderr. The path is opened once; input no format matches is refused at once,
/// saying why for each format.
pub fn for_run(t: &Path, dir: &Path) -> Result<PathBuf> {
    let mut input = Input::open(t)?;
    let format = detect(&mut input)?;
    let stem = mallard_trace::trace_name(t);
    let path = dir.join(format!("{stem}.mtr"));
    if format == "mallard" && input.is_seekable() {
        return Ok(t.to_path_buf());
    }
    if path.exists() {
        bail!("{}: two inputs named {stem}; rename one", t.display());
    }
    if format == "mallard" {
        let mut out =
            std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        input
            .copy_to(&mut out)
            .with_context(|| format!("copying {} to {}", t.display(), path.display()))?;
        return Ok(path);
    }
    eprintln!(
        "importing {} ({format}; `mallard convert {} -o {stem}.mtr` keeps a copy):",
        t.display(),
        t.display()
    );
    import_to(input, format, &path, Form::Binary, false)?;
    Ok(path)
}

/// The format of `input`, or an error that says for each format why it is not that.
fn detect(input: &mut Input) -> Result<&'static str> {
    mallard_trace::import::detect_input(input)
        .map_err(|why| anyhow::anyhow!("{}: {why}", input.path().display()))
}

pub fn cmd_inspect(path: &Path, json: bool) -> Result<()> {
    let mut input = Input::open(path)?;
    let format = detect(&mut input)?;
    let mut stats = mallard_trace::stats::TraceStats::new();
    let header = if format == "mallard" {
        // The reader checks every record against the model as it goes.
        let mut reader = TraceReader::from_input(input)?;
        let header = reader.header().clone();
        for rec in &mut reader {
            stats.add(&rec?);
        }
        header
    } else {
        // Another tool's recording: its records straight from the importer, checked here.
        eprintln!(
            "importing {} ({format}; `mallard convert {} -o FILE.mtr` keeps a copy):",
            path.display(),
            path.display()
        );
        let mut v = mallard_trace::Validator::new();
        let mut n = 0u64;
        import(input, format, false, &mut |rec| {
            v.check(&rec).map_err(|msg| TraceError::Invalid {
                path: path.to_path_buf(),
                location: mallard_trace::Location::Event { event: n },
                msg,
            })?;
            n += 1;
            stats.add(&rec);
            Ok(())
        })?
    };
    let stats = stats.finish();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({ "metadata": header.metadata, "stats": stats })
            )?
        );
    } else {
        println!("{}", path.display());
        for (k, v) in &header.metadata {
            // Metadata is the file's text: quoted, so no control byte reaches the terminal.
            println!("  {k}: {}", mallard_trace::quote(v));
        }
        println!("{stats}");
    }
    Ok(())
}

/// Imports another tool's recording from `input`, sending each record to `sink`; prints the
/// importer's summary on stderr and returns the trace's header.
fn import(
    input: Input,
    format: &str,
    lenient: bool,
    sink: &mut dyn FnMut(Record) -> Result<(), TraceError>,
) -> Result<Header> {
    use mallard_trace::import::{android, heaptrack, mtrace, recorder};
    let path = input.path().to_path_buf();
    let (header, summary) = match format {
        "mtrace" => (
            mtrace::header(&path, lenient),
            mtrace::convert_input(input, lenient, sink)?.to_string(),
        ),
        "heaptrack" => (
            heaptrack::header(&path, lenient),
            heaptrack::convert_input(input, lenient, sink)?.to_string(),
        ),
        "android" => (
            android::header(&path, lenient),
            android::convert_input(input, lenient, sink)?.to_string(),
        ),
        "recorder" => {
            // A raw recording is read by offset: a stream goes to a temporary file first.
            let (file, _keep) = seekable_path(input)?;
            let sum = recorder::convert(&file, sink)?;
            (Header::default(), sum.to_string())
        }
        other => bail!("{}: no importer for `{other}`", path.display()),
    };
    eprintln!("{summary}");
    Ok(header)
}

/// A path to read `input` from by name: its own if it is a regular file, else a copy in a
/// temporary directory (kept as long as the returned guard).
/// A temporary copy, removed when dropped or by the signal handler.
type TempCopy = (mallard_io::interrupt::TempGuard, tempfile::TempDir);

fn seekable_path(input: Input) -> Result<(PathBuf, Option<TempCopy>)> {
    if input.is_seekable() {
        return Ok((input.path().to_path_buf(), None));
    }
    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    let guard = mallard_io::interrupt::register_temp(dir.path());
    let name = input
        .path()
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_else(|| "input".into());
    let copy = dir.path().join(name);
    let mut out =
        std::fs::File::create(&copy).with_context(|| format!("creating {}", copy.display()))?;
    let shown = input.path().display().to_string();
    input
        .copy_to(&mut out)
        .with_context(|| format!("copying {shown}"))?;
    Ok((copy, Some((guard, dir))))
}

/// Converts `input` of the given format (`mallard`, or an importer's) to a trace at `output`.
fn import_to(input: Input, format: &str, output: &Path, form: Form, lenient: bool) -> Result<u64> {
    match format {
        "mallard" | "csv" => {
            let mut reader = TraceReader::from_input(input)?;
            let mut w = TraceWriter::create(output, reader.header(), form)?;
            for rec in &mut reader {
                w.push(&rec?)?;
            }
            Ok(w.finish()?)
        }
        "recorder" => {
            let (file, _keep) = seekable_path(input)?;
            crate::record::convert_raw(&file, output, form)
        }
        _ => {
            use mallard_trace::import::{android, heaptrack, mtrace};
            let path = input.path().to_path_buf();
            let header = match format {
                "mtrace" => mtrace::header(&path, lenient),
                "heaptrack" => heaptrack::header(&path, lenient),
                _ => android::header(&path, lenient),
            };
            let mut w = TraceWriter::create(output, &header, form)?;
            import(input, format, lenient, &mut |r| w.push(&r))?;
            Ok(w.finish()?)
        }
    }
}

pub fn cmd_convert(
    input: &Path,
    output: &Path,
    to: Option<&str>,
    from: Option<&str>,
    lenient: bool,
) -> Result<()> {
    // Before reading the input: may the trace go there (a file, `-`, a FIFO or a device)?
    mallard_io::atomic::check_file(output)?;
    let form = match to {
        Some("csv") => Form::Csv,
        Some(_) => Form::Binary,
        None if output
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("csv")) =>
        {
            Form::Csv
        }
        None => Form::Binary,
    };
    // Opened once: the format is told from the same reader that is then converted.
    let mut input = Input::open(input)?;
    let from = match from {
        Some(f) => f,
        None => detect(&mut input)?,
    };
    let n = import_to(input, from, output, form, lenient)?;
    eprintln!("wrote {n} events to {}", output.display());
    Ok(())
}

pub fn cmd_gen(g: GenArgs) -> Result<()> {
    if g.list {
        for info in mallard_trace::gen::list() {
            println!("{:<18} {}", info.name, info.about);
        }
        return Ok(());
    }
    let Some(name) = g.name else {
        bail!("name a generator (mallard gen --list shows them)")
    };
    let Some(output) = g.output else {
        bail!("--output FILE is required")
    };
    // Before generating: may the trace go there (a file, `-`, a FIFO or a device)?
    mallard_io::atomic::check_file(&output)?;
    let params = mallard_trace::gen::GenParams {
        events: g.events,
        seed: g.seed,
        threads: g.threads,
    };
    let header = mallard_trace::gen::header(&name, &params)?;
    let form = if output
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("csv"))
    {
        Form::Csv
    } else {
        Form::Binary
    };
    // Streamed: the writer works in a temporary file renamed into place by finish(), so a
    // failure (a full disk) leaves no half-written trace (a FIFO or device is written into).
    let mut w = TraceWriter::create(&output, &header, form)?;
    mallard_trace::gen::generate(&name, &params, &mut |r| w.push(&r))?;
    let n = w.finish()?;
    eprintln!("wrote {n} events to {}", output.display());
    Ok(())
}
