//! A file of JSON lines that only grows, and is replaced whole: what the
//! journal and the working copies' records are written as.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;

/// The lines of `path`; none when it does not exist.
pub fn read_lines(path: &Path) -> std::io::Result<Vec<String>> {
    match File::open(path) {
        Ok(f) => BufReader::new(f).lines().collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// Appends `line` to `file`, whose length is `len`. A part written (a full
/// disk) is cut off again, so it never stays before later lines.
pub fn append_line(file: &mut File, len: &mut u64, line: &str) -> std::io::Result<()> {
    let text = format!("{line}\n");
    if let Err(e) = file.write_all(text.as_bytes()) {
        let _ = file.set_len(*len);
        return Err(e);
    }
    *len += text.len() as u64;
    Ok(())
}

/// Puts `lines` in place of the file at `path`, durably (a temporary file
/// synced, renamed over it, the directory synced): a crash leaves the old
/// file or the new one. Returns it open for appending.
pub fn replace(path: &Path, lines: impl IntoIterator<Item = String>) -> std::io::Result<File> {
    let tmp = path.with_extension("new");
    {
        let mut out = File::create(&tmp)?;
        let mut text = String::new();
        for line in lines {
            text.push_str(&line);
            text.push('\n');
        }
        out.write_all(text.as_bytes())?;
        out.sync_data()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    OpenOptions::new().append(true).open(path)
}
