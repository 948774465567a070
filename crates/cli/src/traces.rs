//! The trace commands: `inspect`, `convert`, `gen`, and the inputs `run` and `gate` take. The
//! formats, the importers and the generators are `mallard_trace`'s.

use anyhow::{bail, Result};
use clap::Args;
use mallard_trace::import::{self, Format};
use mallard_trace::prepare::{self, Prepared};
use mallard_trace::stats::TraceStats;
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

/// The inputs of `run` and `gate` as trace files the workers can read
/// ([`prepare::prepare_inputs`]), saying on stderr what is imported.
pub fn prepare(inputs: &[PathBuf], counts: &[u32]) -> Result<Prepared> {
    Ok(prepare::prepare_inputs(inputs, counts, &mut note)?)
}

fn note(s: &str) {
    eprintln!("{s}");
}

pub fn cmd_inspect(path: &Path, json: bool) -> Result<()> {
    let mut input = Input::open(path)?;
    let format = prepare::detect(&mut input)?;
    if format != Format::Mallard {
        note(&prepare::importing(path, format, "FILE.mtr"));
    }
    let (header, stats) = if format == Format::Mallard {
        // The model check and the statistics in one pass over one live table.
        let mut reader = mallard_trace::TraceReader::from_input(input)?;
        let stats = TraceStats::read(&mut reader)?;
        (reader.header().clone(), stats)
    } else {
        let mut stats = TraceStats::new();
        let (header, summary) = import::convert(input, format, false, &mut |rec| {
            stats.add(&rec);
            Ok(())
        })?;
        if let Some(s) = summary {
            note(&s);
        }
        (header, stats.finish())
    };
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
        None => prepare::detect(&mut input)?,
    };
    let n = prepare::convert_to(input, from, output, form, lenient, &mut note)?;
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
    let params =
        mallard_trace::gen::GenParams { events: g.events, seed: g.seed, threads: g.threads };
    let n = mallard_trace::gen::write(&name, &params, &output, Form::from_path(&output))?;
    eprintln!("wrote {n} events to {}", output.display());
    Ok(())
}
