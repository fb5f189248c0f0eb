//! The records of working copies (what `Shadow` journals: the base content,
//! which ranges are present and dirty), kept as one append-only log,
//! `copies.log`, beside the copies' data files.
//!
//! Why one log and not a file per copy: a record file costs an inode, and on
//! ext4 allocating inodes in a directory where many were just deleted is slow
//! (`recently_deleted` walks the inode table). A small file written on the
//! mount made two of them (its bytes and its record) and deleted one; this log
//! leaves it one.
//!
//! Each line is a record's newest version, or the mark that it is gone. A save
//! appends a line; a durable one syncs the log. A crash can tear only the last
//! line, which is dropped at open; the previous version of that record is then
//! the one that counts, as a rename of a whole file would have left. The log is
//! rewritten (through a temporary file and a rename) when it has grown past
//! `COMPACT_BYTES` and mostly holds replaced versions.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use crate::cache::shadow::ShadowRecord;
use crate::cache::spares::SpareFiles;
use crate::journal::lines;

/// How long the log grows before it may be rewritten with only the live records.
const COMPACT_BYTES: u64 = 1 << 20;

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum Line {
    Saved { ino: i64, record: ShadowRecord },
    Gone { gone: i64 },
}

struct Log {
    file: File,
    len: u64,
    /// Each live record's last line, as written.
    live: HashMap<i64, String>,
    live_bytes: u64,
}

pub struct CopyRecords {
    dir: PathBuf,
    path: PathBuf,
    log: Mutex<Log>,
    /// Data files of retired copies, to be new copies' files.
    spares: Arc<SpareFiles>,
}

fn lock(m: &Mutex<Log>) -> MutexGuard<'_, Log> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn invalid(why: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, why)
}

impl CopyRecords {
    /// Opens the log in `dir` (the working copies' directory). Records a panfs
    /// before this one kept as `INO.json` files are taken in, durably, and
    /// their files removed.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("copies.log");
        let mut live = replay(&path)?;
        let legacy = legacy_records(dir)?;
        for (ino, text) in &legacy {
            let record: ShadowRecord = serde_json::from_str(text)
                .map_err(|e| invalid(format!("record of working copy {ino}: {e}")))?;
            live.insert(*ino, line(&Line::Saved { ino: *ino, record })?);
        }
        // Rewritten whole: a torn last line must not stay before new ones.
        let file = rewrite(&path, &live)?;
        for ino in legacy.keys() {
            let _ = std::fs::remove_file(dir.join(format!("{ino}.json")));
        }
        let len = file.metadata()?.len();
        let live_bytes = live.values().map(|l| l.len() as u64).sum();
        Ok(Self {
            dir: dir.to_path_buf(),
            spares: SpareFiles::open(&dir.join("spare"))?,
            path,
            log: Mutex::new(Log {
                file,
                len,
                live,
                live_bytes,
            }),
        })
    }

    /// The directory of the working copies' data files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn spares(&self) -> &SpareFiles {
        &self.spares
    }

    /// Inodes with a record.
    pub fn inodes(&self) -> Vec<i64> {
        lock(&self.log).live.keys().copied().collect()
    }

    pub fn get(&self, ino: i64) -> std::io::Result<ShadowRecord> {
        let log = lock(&self.log);
        let text = log
            .live
            .get(&ino)
            .ok_or_else(|| invalid(format!("no record of working copy {ino}")))?;
        match serde_json::from_str(text) {
            Ok(Line::Saved { record, .. }) => Ok(record),
            _ => Err(invalid(format!(
                "record of working copy {ino} is unreadable"
            ))),
        }
    }

    /// Writes `record` as the copy's newest. `durable`: the log is synced, so
    /// a crash of the machine keeps it; else a crash of panfs does.
    pub fn save(&self, ino: i64, record: &ShadowRecord, durable: bool) -> std::io::Result<()> {
        let text = line(&Line::Saved {
            ino,
            record: record.clone(),
        })?;
        let mut log = lock(&self.log);
        log.append(&text)?;
        log.live_bytes += text.len() as u64;
        if let Some(old) = log.live.insert(ino, text) {
            log.live_bytes -= old.len() as u64;
        }
        if durable {
            log.file.sync_data()?;
        }
        self.compact_if_due(&mut log)
    }

    /// Forgets the copy's record. Not synced: a crash that loses the mark
    /// brings the record back, and the copy is sent again, which the server
    /// answers as a resend.
    pub fn remove(&self, ino: i64) -> std::io::Result<()> {
        let mut log = lock(&self.log);
        let Some(old) = log.live.remove(&ino) else {
            return Ok(());
        };
        log.live_bytes -= old.len() as u64;
        log.append(&line(&Line::Gone { gone: ino })?)?;
        self.compact_if_due(&mut log)
    }

    fn compact_if_due(&self, log: &mut Log) -> std::io::Result<()> {
        if log.len < COMPACT_BYTES || log.len < 4 * log.live_bytes {
            return Ok(());
        }
        log.file = rewrite(&self.path, &log.live)?;
        log.len = log.file.metadata()?.len();
        Ok(())
    }
}

impl Log {
    fn append(&mut self, text: &str) -> std::io::Result<()> {
        lines::append_line(&mut self.file, &mut self.len, text)
    }
}

fn line(l: &Line) -> std::io::Result<String> {
    serde_json::to_string(l).map_err(std::io::Error::other)
}

/// The live records of a log, by inode, each as its last line.
fn replay(path: &Path) -> std::io::Result<HashMap<i64, String>> {
    let mut live = HashMap::new();
    let lines = lines::read_lines(path)?;
    for (i, text) in lines.iter().enumerate() {
        match serde_json::from_str::<Line>(text) {
            Ok(Line::Saved { ino, .. }) => {
                live.insert(ino, text.clone());
            }
            Ok(Line::Gone { gone }) => {
                live.remove(&gone);
            }
            // The last line may be torn by a crash; its save never returned.
            Err(_) if i + 1 == lines.len() => break,
            Err(e) => {
                return Err(invalid(format!(
                    "{} line {} is unreadable: {e}",
                    path.display(),
                    i + 1
                )));
            }
        }
    }
    Ok(live)
}

/// Records kept one file each (`INO.json`) by an older panfs.
fn legacy_records(dir: &Path) -> std::io::Result<HashMap<i64, String>> {
    let mut records = HashMap::new();
    for entry in std::fs::read_dir(dir)?.flatten() {
        let name = entry.file_name();
        let Some(ino) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".json"))
            .and_then(|n| n.parse::<i64>().ok())
        else {
            continue;
        };
        records.insert(ino, std::fs::read_to_string(entry.path())?);
    }
    Ok(records)
}

/// Writes a fresh log holding `live` in place of the old one.
fn rewrite(path: &Path, live: &HashMap<i64, String>) -> std::io::Result<File> {
    lines::replace(path, live.values().cloned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ranges::RangeSet;
    use std::fs::OpenOptions;
    use std::io::Write;

    fn record(ino: i64, size: u64) -> ShadowRecord {
        ShadowRecord {
            ino,
            base: None,
            base_chunks: Vec::new(),
            size,
            present: RangeSet::default(),
            dirty: RangeSet::default(),
            cut: None,
            zeros: RangeSet::default(),
            mtime: 1,
            ctime: 1,
            place: None,
        }
    }

    #[test]
    fn the_newest_version_of_each_record_survives_a_reopen() {
        let dir = tempfile::tempdir().expect("tmp");
        let log = CopyRecords::open(dir.path()).expect("open");
        log.save(1, &record(1, 10), false).expect("save");
        log.save(2, &record(2, 20), true).expect("save");
        log.save(1, &record(1, 11), false).expect("save");
        log.remove(2).expect("remove");
        log.save(3, &record(3, 30), false).expect("save");
        drop(log);
        let log = CopyRecords::open(dir.path()).expect("reopen");
        let mut inodes = log.inodes();
        inodes.sort();
        assert_eq!(inodes, [1, 3]);
        assert_eq!(log.get(1).expect("record").size, 11);
        assert!(log.get(2).is_err());
    }

    #[test]
    fn a_torn_last_line_leaves_the_version_before_it() {
        let dir = tempfile::tempdir().expect("tmp");
        let log = CopyRecords::open(dir.path()).expect("open");
        log.save(1, &record(1, 10), true).expect("save");
        drop(log);
        let path = dir.path().join("copies.log");
        let mut f = OpenOptions::new().append(true).open(&path).expect("log");
        f.write_all(b"{\"ino\":1,\"record\":{\"ino\":1,\"si")
            .expect("tear");
        drop(f);
        let log = CopyRecords::open(dir.path()).expect("reopen");
        assert_eq!(log.get(1).expect("record").size, 10);
        // The torn line is gone, so later lines follow whole ones.
        log.save(1, &record(1, 12), false).expect("save");
        drop(log);
        let log = CopyRecords::open(dir.path()).expect("reopen");
        assert_eq!(log.get(1).expect("record").size, 12);
    }

    #[test]
    fn a_corrupt_line_before_the_last_is_an_error() {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::write(dir.path().join("copies.log"), "garbage\n{\"gone\":1}\n").expect("write");
        assert!(CopyRecords::open(dir.path()).is_err());
    }

    #[test]
    fn records_of_an_older_panfs_are_taken_in() {
        let dir = tempfile::tempdir().expect("tmp");
        let text = serde_json::to_string(&record(7, 70)).expect("json");
        std::fs::write(dir.path().join("7.json"), text).expect("write");
        let log = CopyRecords::open(dir.path()).expect("open");
        assert_eq!(log.get(7).expect("record").size, 70);
        assert!(!dir.path().join("7.json").exists());
        drop(log);
        let log = CopyRecords::open(dir.path()).expect("reopen");
        assert_eq!(log.inodes(), [7]);
    }

    #[test]
    fn the_log_is_rewritten_once_it_mostly_holds_replaced_versions() {
        let dir = tempfile::tempdir().expect("tmp");
        let log = CopyRecords::open(dir.path()).expect("open");
        let path = dir.path().join("copies.log");
        for size in 0..20_000 {
            log.save(1, &record(1, size), false).expect("save");
        }
        assert!(std::fs::metadata(&path).expect("log").len() < 2 * COMPACT_BYTES);
        drop(log);
        let log = CopyRecords::open(dir.path()).expect("reopen");
        assert_eq!(log.get(1).expect("record").size, 19_999);
    }
}
