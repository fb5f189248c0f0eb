//! Emptied data files of retired working copies, kept to be the next new
//! copies' files.
//!
//! Why: a working copy whose bytes are not kept (the disk cache has that
//! content already) would be unlinked, and the next new file would allocate
//! an inode. On ext4 without a journal, as on this
//! machine, allocating skips every inode of the group freed in the last minute
//! or more, one inode-table lookup each (`recently_deleted`): a run that makes
//! and drops thousands of small files paid most of its time there. A file
//! renamed here keeps its inode, and taking it back is a rename.
//!
//! A thread of its own, the filler, keeps a few empty files made ahead, so a
//! new file's create does not wait for an inode even when nothing was
//! retired: the allocation runs beside the calls instead of inside one. It
//! also empties the files put back. Emptying a file frees its blocks, and on
//! a disk mounted with `discard` (as this machine's) that waits for the
//! device: done at take, it was a third of a small file's create.
//!
//! A file put back keeps its old bytes until the filler or a take empties it,
//! under its name here: the working copy's own name is gone with the rename,
//! so a crash that brings back a record of that copy finds no file, never one
//! emptied under it.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::Duration;

/// How many files are kept, each of at most `SPARE_BYTES_MAX`; the others
/// are unlinked.
const SPARES_MAX: usize = 256;
const SPARE_BYTES_MAX: u64 = 64 << 10;
/// Below this many, the filler makes empty files up to `FILL_TO`.
const FILL_BELOW: usize = 16;
const FILL_TO: usize = 64;

pub struct SpareFiles {
    dir: PathBuf,
    files: Mutex<Pool>,
    next: AtomicU64,
    /// Signalled when the pool runs low or a file was put back.
    work: Condvar,
}

#[derive(Default)]
struct Pool {
    /// Empty files.
    empty: Vec<PathBuf>,
    /// Files put back, with their old bytes.
    used: Vec<PathBuf>,
}

impl Pool {
    fn len(&self) -> usize {
        self.empty.len() + self.used.len()
    }

    /// Whether the filler has something to do.
    fn wants_work(&self) -> bool {
        !self.used.is_empty() || self.empty.len() < FILL_BELOW
    }
}

fn lock(m: &Mutex<Pool>) -> MutexGuard<'_, Pool> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl SpareFiles {
    /// The pool in `dir`, with the files a panfs before this one left there,
    /// and its filler started (it ends once the pool is dropped).
    pub fn open(dir: &Path) -> std::io::Result<Arc<Self>> {
        let spares = Arc::new(Self::load(dir)?);
        let weak = Arc::downgrade(&spares);
        std::thread::Builder::new()
            .name("panfs-spares".into())
            .spawn(move || fill(weak))?;
        Ok(spares)
    }

    fn load(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut files = Pool::default();
        let mut next = 0;
        for entry in std::fs::read_dir(dir)?.flatten() {
            let number = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u64>().ok());
            match number {
                Some(n) if files.len() < SPARES_MAX => {
                    next = next.max(n + 1);
                    files.used.push(entry.path());
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
            work: Condvar::new(),
        })
    }

    /// The next unused name in the pool's directory.
    fn next_path(&self) -> PathBuf {
        self.dir
            .join(self.next.fetch_add(1, Ordering::Relaxed).to_string())
    }

    /// A new empty file in the pool. Its inode is allocated as an unnamed
    /// file (`O_TMPFILE`), which holds no lock on the directory, and only
    /// then linked in: made with a name, the allocation held the directory
    /// all along, and a create's `take` renaming a file out of it waited.
    fn make(&self) -> std::io::Result<()> {
        let path = self.next_path();
        match unnamed_file(&self.dir) {
            Ok(file) => link_unnamed(&file, &path)?,
            // A file system without unnamed files.
            Err(_) => drop(File::create(&path)?),
        }
        lock(&self.files).empty.push(path);
        Ok(())
    }

    /// Empties one file put back; false when none is left.
    fn empty_one(&self) -> bool {
        let Some(path) = lock(&self.files).used.pop() else {
            return false;
        };
        match OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_len(0))
        {
            Ok(()) => lock(&self.files).empty.push(path),
            Err(e) => {
                tracing::debug!(path = %path.display(), error = %e, "could not empty a spare file");
                let _ = std::fs::remove_file(&path);
            }
        }
        true
    }

    /// An empty file moved to `to` and opened for reading and writing, when
    /// the pool has one. An empty one is taken first; a file put back is
    /// emptied here only when the filler has not got to it yet.
    pub fn take(&self, to: &Path) -> Option<File> {
        loop {
            let (from, was_used) = {
                let mut files = lock(&self.files);
                let from = match files.empty.pop() {
                    Some(path) => (path, false),
                    None => (files.used.pop()?, true),
                };
                if files.wants_work() {
                    self.work.notify_one();
                }
                from
            };
            if std::fs::rename(&from, to).is_err() {
                let _ = std::fs::remove_file(&from);
                continue;
            }
            let file = OpenOptions::new().read(true).write(true).open(to).ok()?;
            if was_used && file.set_len(0).is_err() {
                let _ = std::fs::remove_file(to);
                continue;
            }
            return Some(file);
        }
    }

    /// Takes the data file at `path` (`size` bytes, no longer wanted, open
    /// here as `file`) into the pool; unlinks it when the pool is full, the
    /// file is large, or anything else still has it open.
    pub fn put(&self, path: &Path, file: &File, size: u64) {
        let mut files = lock(&self.files);
        if files.len() < SPARES_MAX && size <= SPARE_BYTES_MAX && sole_opener(file) {
            let to = self.next_path();
            if std::fs::rename(path, &to).is_ok() {
                files.used.push(to);
                self.work.notify_one();
                return;
            }
        }
        drop(files);
        let _ = std::fs::remove_file(path);
    }
}

/// A new file in `dir` without a name.
fn unnamed_file(dir: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_TMPFILE)
        .mode(0o600)
        .open(dir)
}

/// Gives an unnamed file the name `path`, as any process may: by linking
/// its `/proc/self/fd` entry.
fn link_unnamed(file: &File, path: &Path) -> std::io::Result<()> {
    use std::ffi::CString;
    use std::os::fd::AsRawFd;
    use std::os::unix::ffi::OsStrExt;
    let from = CString::new(format!("/proc/self/fd/{}", file.as_raw_fd()))?;
    let to = CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: both are NUL-terminated strings that live through the call.
    let linked = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    if linked != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Whether `file`'s open file description is the only one of its inode: no
/// other open, no passthrough handle's backing file in the kernel, no mapping
/// left by a process that closed its descriptor. Only such a file may be
/// emptied for another use; one still open elsewhere is unlinked, so its
/// readers keep their bytes. Asked as the kernel answers a write lease, which
/// it grants only then, and given back at once.
fn sole_opener(file: &File) -> bool {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    // SAFETY: fcntl on a descriptor this file owns; leases touch no memory.
    unsafe {
        if libc::fcntl(fd, libc::F_SETLEASE, libc::F_WRLCK) != 0 {
            return false;
        }
        libc::fcntl(fd, libc::F_SETLEASE, libc::F_UNLCK);
    }
    true
}

/// The filler: waits until the pool runs low or a file is put back, then
/// empties the files put back and makes empty files up to `FILL_TO`. It
/// holds the pool only while it works or waits a while, so it ends soon after
/// the pool is dropped.
fn fill(pool: Weak<SpareFiles>) {
    while let Some(spares) = pool.upgrade() {
        let files = lock(&spares.files);
        let (files, _) = spares
            .work
            .wait_timeout_while(files, Duration::from_secs(1), |f| !f.wants_work())
            .unwrap_or_else(|p| p.into_inner());
        drop(files);
        while spares.empty_one() {}
        let missing = FILL_TO.saturating_sub(lock(&spares.files).len());
        for _ in 0..missing {
            if let Err(e) = spares.make() {
                tracing::debug!(error = %e, "could not make a spare file");
                break;
            }
        }
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
        let spares = SpareFiles::load(&dir.path().join("spare")).expect("open");
        let path = dir.path().join("1.data");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .expect("create");
        file.write_all(b"old bytes").expect("write");
        let inode = file.metadata().expect("meta").ino();
        spares.put(&path, &file, 9);
        assert!(!path.exists());
        let to = dir.path().join("2.data");
        let again = spares.take(&to).expect("a spare");
        assert_eq!(again.metadata().expect("meta").ino(), inode);
        assert_eq!(std::fs::read(&to).expect("read"), b"");
        assert!(spares.take(&dir.path().join("3.data")).is_none());
    }

    #[test]
    fn an_unnamed_file_gets_its_name_when_linked() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut file = unnamed_file(dir.path()).expect("an unnamed file");
        assert_eq!(std::fs::read_dir(dir.path()).expect("list").count(), 0);
        let path = dir.path().join("7");
        link_unnamed(&file, &path).expect("linked");
        file.write_all(b"bytes").expect("write");
        assert_eq!(std::fs::read(&path).expect("read"), b"bytes");
    }

    #[test]
    fn the_filler_makes_empty_files_ahead_and_ends_with_the_pool() {
        let dir = tempfile::tempdir().expect("tmp");
        let spare = dir.path().join("spare");
        let spares = SpareFiles::open(&spare).expect("open");
        let start = std::time::Instant::now();
        while lock(&spares.files).empty.len() < FILL_TO {
            assert!(start.elapsed() < Duration::from_secs(30), "no spares made");
            std::thread::sleep(Duration::from_millis(10));
        }
        let to = dir.path().join("1.data");
        spares.take(&to).expect("a spare");
        assert_eq!(std::fs::read(&to).expect("read"), b"");
        let weak = Arc::downgrade(&spares);
        drop(spares);
        while weak.strong_count() > 0 {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the filler kept the pool"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn the_filler_empties_a_file_put_back_off_the_takers_path() {
        let dir = tempfile::tempdir().expect("tmp");
        let spares = SpareFiles::open(&dir.path().join("spare")).expect("open");
        let path = dir.path().join("1.data");
        let mut file = File::create(&path).expect("create");
        file.write_all(b"old bytes").expect("write");
        let inode = file.metadata().expect("meta").ino();
        spares.put(&path, &file, 9);
        let start = std::time::Instant::now();
        loop {
            let emptied = {
                let files = lock(&spares.files);
                files.used.is_empty().then(|| files.empty.clone())
            };
            let found = emptied
                .into_iter()
                .flatten()
                .find(|p| std::fs::metadata(p).is_ok_and(|m| m.ino() == inode && m.len() == 0));
            if found.is_some() {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(30), "not emptied");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn a_file_open_elsewhere_is_not_kept() {
        let dir = tempfile::tempdir().expect("tmp");
        let spares = SpareFiles::load(&dir.path().join("spare")).expect("open");
        let path = dir.path().join("1.data");
        std::fs::write(&path, b"a reader's bytes").expect("write");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .expect("open");
        let reader = File::open(&path).expect("a reader");
        spares.put(&path, &file, 16);
        assert!(!path.exists(), "unlinked");
        assert!(spares.take(&dir.path().join("2.data")).is_none());
        let mut kept = Vec::new();
        std::io::Read::read_to_end(&mut &reader, &mut kept).expect("read");
        assert_eq!(kept, b"a reader's bytes");
    }

    #[test]
    fn a_large_file_is_not_kept() {
        let dir = tempfile::tempdir().expect("tmp");
        let spares = SpareFiles::load(&dir.path().join("spare")).expect("open");
        let path = dir.path().join("1.data");
        let file = File::create(&path).expect("create");
        spares.put(&path, &file, SPARE_BYTES_MAX + 1);
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
        let spares = SpareFiles::load(&spare).expect("open");
        assert!(!spare.join("junk.tmp").exists());
        let to = dir.path().join("new.data");
        spares.take(&to).expect("a spare");
        assert_eq!(std::fs::read(&to).expect("read"), b"");
        // Numbering goes on after the leftovers, so none is overwritten.
        let path = dir.path().join("x.data");
        let file = File::create(&path).expect("create");
        spares.put(&path, &file, 0);
        assert!(spare.join("8").exists());
    }
}
