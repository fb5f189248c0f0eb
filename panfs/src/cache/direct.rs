//! What the kernel may have written to a working copy through a passthrough
//! handle. panfs never sees those writes, only the local file afterwards.
//!
//! The file's change stamp (size, mtime, ctime) tells whether anything was
//! written since a look, but only when two things hold:
//! - The file system gives a change after a look a new time, not the clock
//!   tick's, which a write in the same tick would share. Multigrain
//!   timestamps do this: Linux 6.13 and later, on ext4, XFS, Btrfs and tmpfs.
//! - No page of the file is writable through a shared mapping. The first
//!   store to a write-protected page faults and stamps the file; later
//!   stores to that page do not.
//!
//! A settling look makes the second hold: it writes the file's dirty pages
//! back and waits, which write-protects every page, and takes the stamp
//! before and after. If the two are equal, nothing faulted in between, and a
//! later look that finds the same stamp knows that nothing was written. Any
//! other look counts every byte as written, as panfs cannot tell.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::OnceLock;

/// What a look at the local file sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub size: u64,
    pub mtime: i64,
    ctime: i64,
}

impl Stamp {
    pub fn of(file: &File) -> io::Result<Self> {
        use std::os::unix::fs::MetadataExt;
        let meta = file.metadata()?;
        Ok(Self {
            size: meta.len(),
            mtime: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
            ctime: meta.ctime() * 1_000_000_000 + meta.ctime_nsec(),
        })
    }
}

/// The looks panfs took at a working copy while the kernel wrote it.
#[derive(Debug, Default)]
pub struct DirectWrites {
    /// The stamp of the last settling look, while no look has found another.
    settled: Option<Stamp>,
    /// The local file's mtime at the last look: a later one is a write's.
    mtime: Option<i64>,
}

impl DirectWrites {
    /// Whether `stamp` proves that nothing was written since a settling look.
    pub fn unchanged(&self, stamp: &Stamp) -> bool {
        self.settled.as_ref() == Some(stamp)
    }

    /// Takes a look's stamp: the new mtime, if the local file's moved since
    /// the last look (so an mtime set explicitly, by utimes, stays).
    pub fn look(&mut self, stamp: &Stamp) -> Option<i64> {
        self.settled = None;
        let moved = self.mtime.is_some_and(|seen| seen != stamp.mtime);
        self.mtime = Some(stamp.mtime);
        moved.then_some(stamp.mtime)
    }

    /// Write-protects the file's pages and keeps `before` (this look's stamp)
    /// as settled, if nothing changed meanwhile and stamps are exact here.
    pub fn settle(&mut self, file: &File, before: Stamp) -> io::Result<()> {
        self.settled = None;
        self.mtime = Some(before.mtime);
        if !exact_stamps(file) {
            return Ok(());
        }
        let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE
            | libc::SYNC_FILE_RANGE_WRITE
            | libc::SYNC_FILE_RANGE_WAIT_AFTER;
        // SAFETY: a plain system call on a descriptor this file owns.
        if unsafe { libc::sync_file_range(file.as_raw_fd(), 0, 0, flags) } != 0 {
            return Err(io::Error::last_os_error());
        }
        if Stamp::of(file)? == before {
            self.settled = Some(before);
        }
        Ok(())
    }
}

/// Whether the file system holding `file` stamps every change after a look
/// with a new time (multigrain timestamps).
fn exact_stamps(file: &File) -> bool {
    const EXT4: libc::__fsword_t = 0xEF53;
    const XFS: libc::__fsword_t = 0x5846_5342;
    const BTRFS: libc::__fsword_t = 0x9123_683E;
    const TMPFS: libc::__fsword_t = 0x0102_1994;
    static KERNEL_HAS_THEM: OnceLock<bool> = OnceLock::new();
    let kernel = *KERNEL_HAS_THEM.get_or_init(|| kernel_at_least(6, 13));
    let mut fs = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: fstatfs fills the struct on success, and it is read only then.
    let kind = unsafe {
        if libc::fstatfs(file.as_raw_fd(), fs.as_mut_ptr()) != 0 {
            return false;
        }
        fs.assume_init().f_type
    };
    kernel && [EXT4, XFS, BTRFS, TMPFS].contains(&kind)
}

/// Whether the running kernel's release is `major.minor` or later.
fn kernel_at_least(major: u32, minor: u32) -> bool {
    let Ok(release) = std::fs::read_to_string("/proc/sys/kernel/osrelease") else {
        return false;
    };
    let mut parts = release
        .trim()
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let running = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    running >= (major, minor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    fn scratch(dir: &tempfile::TempDir) -> File {
        File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("copy"))
            .expect("create")
    }

    #[test]
    fn a_write_after_a_settling_look_changes_the_stamp() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = scratch(&dir);
        file.write_all_at(b"first", 0).expect("write");
        let mut looks = DirectWrites::default();
        let stamp = Stamp::of(&file).expect("stamp");
        looks.settle(&file, stamp).expect("settle");
        if !exact_stamps(&file) {
            assert!(!looks.unchanged(&stamp), "settled without exact stamps");
            return;
        }
        assert!(looks.unchanged(&Stamp::of(&file).expect("stamp")));
        // Same size, within the same clock tick: only the stamp's time tells.
        file.write_all_at(b"again", 0).expect("overwrite");
        let after = Stamp::of(&file).expect("stamp");
        assert!(!looks.unchanged(&after));
        assert_eq!(looks.look(&after), Some(after.mtime));
        assert!(!looks.unchanged(&after), "a plain look settles nothing");
    }

    /// A store to a page of a shared mapping that was already written (and
    /// so writable) before the settling look still changes the stamp.
    #[test]
    fn a_store_through_a_mapping_after_a_settling_look_changes_the_stamp() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = scratch(&dir);
        file.set_len(4096).expect("size");
        if !exact_stamps(&file) {
            return;
        }
        // SAFETY: a fresh shared mapping of one page of a file this test
        // owns, written only within that page and unmapped at the end.
        unsafe {
            let page = libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            );
            assert_ne!(page, libc::MAP_FAILED);
            let bytes = page.cast::<u8>();
            bytes.write_volatile(1);
            let mut looks = DirectWrites::default();
            let stamp = Stamp::of(&file).expect("stamp");
            looks.settle(&file, stamp).expect("settle");
            assert!(looks.unchanged(&Stamp::of(&file).expect("stamp")));
            bytes.add(100).write_volatile(2);
            let after = Stamp::of(&file).expect("stamp");
            libc::munmap(page, 4096);
            assert!(!looks.unchanged(&after), "the store left no stamp");
        }
    }
}
