//! Emptied data files of retired working copies, kept to be the next new
//! copies' files.
//!
//! Why: a working copy whose bytes are not kept (the disk cache has that
//! content already, or the file was removed) would be unlinked, and the next
//! new file would allocate an inode. On ext4 without a journal, as on this
//! machine, allocating skips every inode of the group freed in the last minute
//! or more, one inode-table lookup each (`recently_deleted`): a run that makes
//! and drops thousands of small files paid most of its time there. A file
//! renamed here keeps its inode, and taking it back is a rename.
//!
//! A file is emptied when it is taken, not when it is put: until then it
//! holds its old bytes, as an unlinked file's name would, so a crash that
//! brings back a record of its copy finds those bytes or no file, never a
//! file emptied under it.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// How many files are kept, each of at most `SPARE_BYTES_MAX`; the others
/// are unlinked.
const SPARES_MAX: usize = 256;
const SPARE_BYTES_MAX: u64 = 64 << 10;

pub struct SpareFiles {
    dir: PathBuf,
    files: Mutex<Vec<PathBuf>>,
    next: AtomicU64,
}

impl SpareFiles {
    /// The pool in `dir`, with the files a panfs before this one left there.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut files = Vec::new();
        let mut next = 0;
        for entry in std::fs::read_dir(dir)?.flatten() {
            let number = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u64>().ok());
            match number {
                Some(n) if files.len() < SPARES_MAX => {
                    next = next.max(n + 1);
                    files.push(entry.path());
                }
                _ => {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            files: Mutex::new(files),
            next: AtomicU64::new(next),
        })
    }

    /// An empty file moved to `to` and opened for reading and writing, when
    /// the pool has one.
    pub fn take(&self, to: &Path) -> Option<File> {
        loop {
            let from = self.files.lock().unwrap_or_else(|p| p.into_inner()).pop()?;
            if std::fs::rename(&from, to).is_err() {
                let _ = std::fs::remove_file(&from);
                continue;
            }
            let file = OpenOptions::new().read(true).write(true).open(to).ok()?;
            if file.set_len(0).is_err() {
                let _ = std::fs::remove_file(to);
                continue;
            }
            return Some(file);
        }
    }

    /// Takes the data file at `path` (`size` bytes, no longer wanted) into
    /// the pool; unlinks it when the pool is full or the file is large.
    pub fn put(&self, path: &Path, size: u64) {
        let mut files = self.files.lock().unwrap_or_else(|p| p.into_inner());
        if files.len() < SPARES_MAX && size <= SPARE_BYTES_MAX {
            let to = self
                .dir
                .join(self.next.fetch_add(1, Ordering::Relaxed).to_string());
            if std::fs::rename(path, &to).is_ok() {
                files.push(to);
                return;
            }
        }
        drop(files);
        let _ = std::fs::remove_file(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn a_file_put_back_is_taken_again_empty_with_its_inode() {
        let dir = tempfile::tempdir().expect("tmp");
        let spares = SpareFiles::open(&dir.path().join("spare")).expect("open");
        let path = dir.path().join("1.data");
        let mut file = File::create(&path).expect("create");
        file.write_all(b"old bytes").expect("write");
        let inode = file.metadata().expect("meta").ino();
        spares.put(&path, 9);
        assert!(!path.exists());
        let to = dir.path().join("2.data");
        let again = spares.take(&to).expect("a spare");
        assert_eq!(again.metadata().expect("meta").ino(), inode);
        assert_eq!(std::fs::read(&to).expect("read"), b"");
        assert!(spares.take(&dir.path().join("3.data")).is_none());
    }

    #[test]
    fn a_large_file_is_not_kept() {
        let dir = tempfile::tempdir().expect("tmp");
        let spares = SpareFiles::open(&dir.path().join("spare")).expect("open");
        let path = dir.path().join("1.data");
        File::create(&path).expect("create");
        spares.put(&path, SPARE_BYTES_MAX + 1);
        assert!(!path.exists());
        assert!(spares.take(&dir.path().join("2.data")).is_none());
    }

    #[test]
    fn spares_left_by_a_panfs_before_are_taken_in_and_emptied() {
        let dir = tempfile::tempdir().expect("tmp");
        let spare = dir.path().join("spare");
        std::fs::create_dir_all(&spare).expect("dir");
        std::fs::write(spare.join("7"), b"stale").expect("write");
        std::fs::write(spare.join("junk.tmp"), b"x").expect("write");
        let spares = SpareFiles::open(&spare).expect("open");
        assert!(!spare.join("junk.tmp").exists());
        let to = dir.path().join("new.data");
        spares.take(&to).expect("a spare");
        assert_eq!(std::fs::read(&to).expect("read"), b"");
        // Numbering goes on after the leftovers, so none is overwritten.
        let path = dir.path().join("x.data");
        File::create(&path).expect("create");
        spares.put(&path, 0);
        assert!(spare.join("8").exists());
    }
}
