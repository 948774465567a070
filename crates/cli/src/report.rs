//! `mallard report DIR`: write a report's pages (`index.html`, `report.md`) again from its
//! `results.json`, e.g. after upgrading Mallard or for a report copied from CI.

use anyhow::Result;
use std::path::{Path, PathBuf};

pub fn cmd_report(dir: &Path) -> Result<i32> {
    // Accept the results.json itself as well as its directory.
    let dir: PathBuf = if dir.file_name().is_some_and(|n| n == "results.json") && dir.is_file() {
        dir.parent().map(Path::to_path_buf).unwrap_or_default()
    } else {
        dir.to_path_buf()
    };
    let dir = if dir.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        dir
    };
    let view = mallard_report::regenerate(&dir)?;
    print!(
        "{}",
        mallard_report::table::render(&view.results, &view.rows)
    );
    println!(
        "\nwrote {} and {}",
        dir.join("index.html").display(),
        dir.join("report.md").display()
    );
    Ok(0)
}
