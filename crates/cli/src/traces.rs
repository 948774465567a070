//! The trace commands: `inspect`, `convert`, `gen`.

use anyhow::{bail, Result};
use clap::Args;
use mallard_trace::{Form, TraceWriter};
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

/// `t` itself if it is a Mallard trace (or unrecognised: opening it then says what is wrong),
/// else `t` imported into `dir` (an Android .zip, an mtrace log, a heaptrack file, a raw
/// recording), as `mallard convert` would, saying so on stderr.
pub fn as_mallard_trace(t: &Path, dir: &Path) -> Result<PathBuf> {
    let Some(format) = mallard_trace::import::detect(t).filter(|f| *f != "mallard") else {
        return Ok(t.to_path_buf());
    };
    let stem = t
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "trace".into());
    let path = dir.join(format!("{stem}.mtr"));
    if path.exists() {
        bail!("{}: two inputs named {stem}; rename one", t.display());
    }
    eprintln!(
        "importing {} ({format}; `mallard convert {} -o {stem}.mtr` keeps a copy):",
        t.display(),
        t.display()
    );
    cmd_convert(t, &path, None, Some(format), false)?;
    Ok(path)
}

pub fn cmd_inspect(path: &Path, json: bool) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let _dir_guard = mallard_io::interrupt::register_temp(dir.path());
    let trace = as_mallard_trace(path, dir.path())?;
    let mut reader = mallard_trace::open(&trace)?;
    let header = reader.header().clone();
    let mut stats = mallard_trace::stats::TraceStats::new();
    let mut v = mallard_trace::Validator::new();
    while let Some(rec) = reader.next() {
        let rec = rec?;
        if let Err(msg) = v.check(&rec) {
            return Err(mallard_trace::TraceError::invalid(&reader, msg).into());
        }
        stats.add(&rec);
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
            println!("  {k}: {v}");
        }
        println!("{stats}");
    }
    Ok(())
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
    let from = match from {
        Some(f) => f,
        // Unreadable: opening it as a Mallard trace reports why, naming the file.
        None if std::fs::File::open(input).is_err() => "mallard",
        None => mallard_trace::import::detect(input).ok_or_else(|| {
            anyhow::anyhow!(
                "{}: cannot tell the format (not a Mallard trace, Android memory_replay trace, \
                 glibc mtrace log, heaptrack recording or raw recording); name it with --from",
                input.display()
            )
        })?,
    };
    let n = match from {
        "mtrace" => {
            use mallard_trace::import::mtrace;
            let mut w = TraceWriter::create(output, &mtrace::header(input, lenient), form)?;
            let summary = mtrace::convert(input, lenient, &mut |r| w.push(&r))?;
            let n = w.finish()?;
            eprintln!("{summary}");
            n
        }
        "heaptrack" => {
            use mallard_trace::import::heaptrack;
            let mut w = TraceWriter::create(output, &heaptrack::header(input, lenient), form)?;
            let summary = heaptrack::convert(input, lenient, &mut |r| w.push(&r))?;
            let n = w.finish()?;
            eprintln!("{summary}");
            n
        }
        "recorder" => crate::record::convert_raw(input, output, form)?,
        "android" => {
            let header = mallard_trace::import::android::header(input, lenient);
            let mut w = TraceWriter::create(output, &header, form)?;
            let summary =
                mallard_trace::import::android::convert(input, lenient, &mut |r| w.push(&r))?;
            let n = w.finish()?;
            eprintln!("{summary}");
            n
        }
        _ => {
            let mut reader = mallard_trace::open(input)?;
            let mut w = TraceWriter::create(output, reader.header(), form)?;
            for rec in &mut reader {
                w.push(&rec?)?;
            }
            w.finish()?
        }
    };
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
