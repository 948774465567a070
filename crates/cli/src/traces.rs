//! The trace commands: `inspect`, `convert`, `gen`, and the inputs `run` and `gate` take. The
//! formats, the importers and the generators are `mallard_trace`'s.

use anyhow::{bail, Context, Result};
use clap::Args;
use mallard_trace::import::{self, Format};
use mallard_trace::{Form, Input};
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
    if format == Format::Mallard && input.is_seekable() {
        return Ok(t.to_path_buf());
    }
    if path.exists() {
        bail!("{}: two inputs named {stem}; rename one", t.display());
    }
    if format == Format::Mallard {
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
    convert_to(input, format, &path, Form::Binary, false)?;
    Ok(path)
}

/// The format of `input`, or an error that says for each format why it is not that.
fn detect(input: &mut Input) -> Result<Format> {
    import::detect_input(input).map_err(|why| anyhow::anyhow!("{}: {why}", input.path().display()))
}

/// [`import::convert_to`], printing the importer's summary.
fn convert_to(input: Input, format: Format, out: &Path, form: Form, lenient: bool) -> Result<u64> {
    let (n, summary) = import::convert_to(input, format, out, form, lenient)?;
    if let Some(s) = summary {
        eprintln!("{s}");
    }
    Ok(n)
}

pub fn cmd_inspect(path: &Path, json: bool) -> Result<()> {
    let mut input = Input::open(path)?;
    let format = detect(&mut input)?;
    if format != Format::Mallard {
        eprintln!(
            "importing {} ({format}; `mallard convert {} -o FILE.mtr` keeps a copy):",
            path.display(),
            path.display()
        );
    }
    let mut stats = mallard_trace::stats::TraceStats::new();
    let (header, summary) = import::convert(input, format, false, &mut |rec| {
        stats.add(&rec);
        Ok(())
    })?;
    if let Some(s) = summary {
        eprintln!("{s}");
    }
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

pub fn cmd_convert(
    input: &Path,
    output: &Path,
    to: Option<Form>,
    from: Option<Format>,
    lenient: bool,
) -> Result<()> {
    // Before reading the input: may the trace go there (a file, `-`, a FIFO or a device)?
    mallard_io::atomic::check_file(output)?;
    let form = to.unwrap_or_else(|| Form::from_path(output));
    // Opened once: the format is told from the same reader that is then converted.
    let mut input = Input::open(input)?;
    let from = match from {
        Some(f) => f,
        None => detect(&mut input)?,
    };
    let n = convert_to(input, from, output, form, lenient)?;
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
    let n = mallard_trace::gen::write(&name, &params, &output, Form::from_path(&output))?;
    eprintln!("wrote {n} events to {}", output.display());
    Ok(())
}
