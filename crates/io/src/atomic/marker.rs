//! The [`MARKER`] of a directory Mallard wrote: what it holds, and how it is read and checked.

use super::{describe, MARKER, MARKER_MAX_BYTES, MARKER_SCHEMA};
use std::fs;
use std::io;
use std::path::Path;

/// The contents of a [`MARKER`] file.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Marker {
    /// Always `mallard`.
    pub tool: String,
    /// What wrote the directory: `report` (`mallard run`) or `gate` (`mallard gate`).
    pub kind: String,
    /// [`MARKER_SCHEMA`].
    pub schema: u64,
    /// Every file Mallard wrote into the directory (the marker itself excepted).
    pub files: Vec<String>,
}

/// Why a directory's [`MARKER`] is not Mallard's (the message says what was found there).
#[derive(Debug, thiserror::Error)]
pub enum MarkerError {
    /// It cannot be looked at or read.
    #[error("{0}")]
    Read(#[source] io::Error),
    /// It is not a regular file ("it is a directory", ...).
    #[error("it is {0}")]
    NotAFile(String),
    /// Larger than any marker Mallard writes.
    #[error("{0} bytes")]
    TooLarge(u64),
    /// Not the JSON of a [`Marker`].
    #[error("{0}")]
    Parse(#[source] serde_json::Error),
    /// Another tool's.
    #[error("tool \"{0}\"")]
    Tool(String),
    /// A schema this Mallard does not know.
    #[error("schema {0} (this Mallard knows {MARKER_SCHEMA})")]
    Schema(u64),
    /// It lists a path that is not a plain file name in the directory.
    #[error("it lists \"{0}\", not a plain file name")]
    BadName(String),
}

/// Reads and checks `dir`'s marker.
pub fn read_marker(dir: &Path) -> Result<Marker, MarkerError> {
    let p = dir.join(MARKER);
    let m = fs::symlink_metadata(&p).map_err(MarkerError::Read)?;
    if !m.file_type().is_file() {
        return Err(MarkerError::NotAFile(describe(&m)));
    }
    if m.len() > MARKER_MAX_BYTES {
        return Err(MarkerError::TooLarge(m.len()));
    }
    let text = fs::read(&p).map_err(MarkerError::Read)?;
    let marker: Marker = serde_json::from_slice(&text).map_err(MarkerError::Parse)?;
    if marker.tool != "mallard" {
        return Err(MarkerError::Tool(marker.tool));
    }
    if marker.schema != MARKER_SCHEMA {
        return Err(MarkerError::Schema(marker.schema));
    }
    if let Some(bad) = marker.files.iter().find(|f| !plain_name(f)) {
        return Err(MarkerError::BadName(bad.clone()));
    }
    Ok(marker)
}

/// A file name of its own inside a directory: no separator, not `.`/`..`, not the marker.
pub(super) fn plain_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && name != MARKER && !name.contains('/')
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error;

    #[test]
    fn a_bad_marker_says_why_and_keeps_its_source() {
        let tmp = tempfile::tempdir().unwrap();
        let e = read_marker(tmp.path()).unwrap_err();
        assert!(matches!(e, MarkerError::Read(_)), "{e:?}");
        assert!(e.source().is_some_and(|s| s.is::<io::Error>()), "{e:?}");
        fs::write(tmp.path().join(MARKER), "garbage").unwrap();
        let e = read_marker(tmp.path()).unwrap_err();
        assert!(
            e.source().is_some_and(|s| s.is::<serde_json::Error>()),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            serde_json::from_str::<Marker>("garbage")
                .unwrap_err()
                .to_string()
        );
        fs::write(
            tmp.path().join(MARKER),
            r#"{"tool":"mallard","kind":"report","schema":7,"files":[]}"#,
        )
        .unwrap();
        let e = read_marker(tmp.path()).unwrap_err();
        assert_eq!(e.to_string(), "schema 7 (this Mallard knows 1)");
        fs::write(
            tmp.path().join(MARKER),
            r#"{"tool":"mallard","kind":"report","schema":1,"files":["../x"]}"#,
        )
        .unwrap();
        let e = read_marker(tmp.path()).unwrap_err();
        assert_eq!(e.to_string(), "it lists \"../x\", not a plain file name");
    }
}
