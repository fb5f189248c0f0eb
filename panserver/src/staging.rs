//! The staging area: verified chunks land here (fsync'd) before the transfer
//! worker moves them to the object store.

use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::meta::NewChunk;
use crate::sums::BlockSummer;

#[derive(Debug, thiserror::Error)]
pub enum StagingError {
    #[error("the chunk's bytes do not match its SHA-256")]
    HashMismatch,
    #[error("the chunk is larger than declared")]
    TooLarge,
    #[error("no space left on the staging disk")]
    NoSpace,
    #[error("staging I/O: {0}")]
    Io(std::io::Error),
}

impl From<std::io::Error> for StagingError {
    fn from(e: std::io::Error) -> Self {
        if e.raw_os_error() == Some(libc::ENOSPC) || e.raw_os_error() == Some(libc::EDQUOT) {
            StagingError::NoSpace
        } else {
            StagingError::Io(e)
        }
    }
}

/// A chunk being written: bytes go to a temporary file and are hashed and
/// block-summed on the way.
pub struct StagedWriter {
    file: std::fs::File,
    tmp: PathBuf,
    dest: PathBuf,
    /// None when the server hashed the bytes itself: no need to hash them twice.
    hasher: Option<Sha256>,
    summer: BlockSummer,
    written: u64,
    limit: u64,
}

impl StagedWriter {
    pub fn write(&mut self, data: &[u8]) -> Result<(), StagingError> {
        self.written += data.len() as u64;
        if self.written > self.limit {
            return Err(StagingError::TooLarge);
        }
        if let Some(hasher) = &mut self.hasher {
            hasher.update(data);
        }
        self.summer.update(data);
        self.file.write_all(data)?;
        Ok(())
    }

    /// Checks the hash and size, then makes the chunk durable under its name:
    /// the chunk to record.
    pub fn finish(self, sha256: &str, size: u64) -> Result<NewChunk, StagingError> {
        self.finish_as(sha256, size, true)
    }

    /// `sync` false leaves durability to the next `Staging::sync`: a batch of
    /// chunks costs one flush, not one each.
    fn finish_as(mut self, sha256: &str, size: u64, sync: bool) -> Result<NewChunk, StagingError> {
        let hashed = self.hasher.take().map(|h| hex::encode(h.finalize()));
        if hashed.is_some_and(|h| h != sha256) || self.written != size {
            return Err(StagingError::HashMismatch);
        }
        if sync {
            self.file.sync_all()?;
        }
        std::fs::rename(&self.tmp, &self.dest)?;
        Ok(NewChunk {
            sha256: sha256.to_string(),
            size: size as i64,
            block_sums: std::mem::take(&mut self.summer).finish(),
            inline: None,
        })
    }
}

impl Drop for StagedWriter {
    fn drop(&mut self) {
        // Removes the temporary file of a failed or abandoned write; after a successful
        // rename the name is gone and this does nothing.
        let _ = std::fs::remove_file(&self.tmp);
    }
}

#[derive(Clone)]
pub struct Staging {
    root: PathBuf,
}

impl Staging {
    pub fn new(root: PathBuf) -> std::io::Result<Self> {
        std::fs::create_dir_all(root.join("tmp"))?;
        Ok(Self { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where a staged chunk's file is.
    pub fn path(&self, sha256: &str) -> PathBuf {
        self.root.join(&sha256[..2]).join(sha256)
    }

    /// Starts writing a chunk of at most `limit` bytes, checked against
    /// `sha256` at the end. Blocking I/O: call from a blocking context.
    pub fn writer(&self, sha256: &str, limit: u64) -> Result<StagedWriter, StagingError> {
        self.writer_as(sha256, limit, Some(Sha256::new()))
    }

    fn writer_as(
        &self,
        sha256: &str,
        limit: u64,
        hasher: Option<Sha256>,
    ) -> Result<StagedWriter, StagingError> {
        let dest = self.path(sha256);
        if let Some(dir) = dest.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = self
            .root
            .join("tmp")
            .join(format!("{sha256}.{}", rand::random::<u64>()));
        let file = std::fs::File::create(&tmp)?;
        Ok(StagedWriter {
            file,
            tmp,
            dest,
            hasher,
            summer: BlockSummer::default(),
            written: 0,
            limit,
        })
    }

    /// Stages bytes the server cut itself (blocking I/O).
    pub fn put(&self, data: &[u8]) -> Result<NewChunk, StagingError> {
        self.put_as(data, true)
    }

    /// Stages many small chunks with one flush of the staging file system for
    /// all of them (blocking I/O). When this returns, every one is durable
    /// under its name.
    pub fn put_all(&self, chunks: &[&[u8]]) -> Result<Vec<NewChunk>, StagingError> {
        let staged = chunks
            .iter()
            .map(|data| self.put_as(data, false))
            .collect::<Result<Vec<_>, _>>()?;
        if !staged.is_empty() {
            self.sync()?;
        }
        Ok(staged)
    }

    /// Stages bytes hashed here, so the writer need not hash them again.
    fn put_as(&self, data: &[u8], sync: bool) -> Result<NewChunk, StagingError> {
        let sha = panproto::sha256_hex(data);
        let size = data.len() as u64;
        let mut w = self.writer_as(&sha, size, None)?;
        w.write(data)?;
        w.finish_as(&sha, size, sync)
    }

    /// Flushes the staging file system: the data and the names of every chunk
    /// staged so far (one `syncfs`).
    fn sync(&self) -> std::io::Result<()> {
        use std::os::fd::AsRawFd;
        let dir = std::fs::File::open(&self.root)?;
        // SAFETY: the descriptor is open for the duration of the call.
        if unsafe { libc::syncfs(dir.as_raw_fd()) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    pub async fn read(&self, sha256: &str) -> std::io::Result<Option<Bytes>> {
        match tokio::fs::read(self.path(sha256)).await {
            Ok(data) => Ok(Some(Bytes::from(data))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `len` bytes of a staged chunk from `start`, or None when it is not staged.
    pub async fn read_range(
        &self,
        sha256: &str,
        start: u64,
        len: u64,
    ) -> std::io::Result<Option<Bytes>> {
        read_range_of(self.path(sha256), start, len).await
    }

    /// Whether a chunk is staged, without reading it.
    pub async fn contains(&self, sha256: &str) -> std::io::Result<bool> {
        tokio::fs::try_exists(self.path(sha256)).await
    }

    /// The names of every staged chunk file (not the temporary files or parts).
    pub async fn names(&self) -> std::io::Result<Vec<String>> {
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || {
            let mut names = Vec::new();
            for dir in std::fs::read_dir(&root)?.flatten() {
                if dir.file_name() == "tmp" || dir.file_name() == crate::parts::PARTS_DIR {
                    continue;
                }
                for f in std::fs::read_dir(dir.path())?.flatten() {
                    names.push(f.file_name().to_string_lossy().into_owned());
                }
            }
            Ok(names)
        })
        .await
        .map_err(std::io::Error::other)?
    }

    pub async fn remove(&self, sha256: &str) -> std::io::Result<()> {
        match tokio::fs::remove_file(self.path(sha256)).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// `len` bytes of the file at `path` from `start`, or None when there is no
/// such file (see `read_file_range`). A range wholly in the kernel's caches
/// is read on the request's own thread; handing it to the blocking pool and
/// back cost more than the read (a 4 KiB ranged GET of a chunk the server
/// has cached: 129-144 us -> 123-127 us from a Python client, four runs each).
pub async fn read_range_of(path: PathBuf, start: u64, len: u64) -> std::io::Result<Option<Bytes>> {
    if let Some(data) = read_cached_range(&path, start, len) {
        return Ok(Some(data));
    }
    tokio::task::spawn_blocking(move || read_file_range(&path, start, len))
        .await
        .map_err(std::io::Error::other)?
}

/// The range when the file's path and every byte of it are in the kernel's
/// caches, read without ever waiting for the disk; None otherwise (not
/// cached, not there, or a kernel without these calls: before 5.12).
fn read_cached_range(path: &Path, start: u64, len: u64) -> Option<Bytes> {
    use std::os::fd::FromRawFd;
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: open_how is plain integers, all zero meaning "none".
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_RDONLY | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_CACHED;
    // SAFETY: a NUL-terminated path and an open_how of the size passed.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            libc::AT_FDCWD,
            c_path.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return None;
    }
    // SAFETY: a descriptor just opened, owned by nothing else.
    let file = unsafe { std::fs::File::from_raw_fd(fd as i32) };
    // A read that finds the range not cached still starts the disk's read
    // of it before it gives up: of the range alone (not a readahead around
    // it), which the read through the pool then waits for.
    // SAFETY: the descriptor is open for the duration of the call.
    unsafe { libc::posix_fadvise(fd as i32, 0, 0, libc::POSIX_FADV_RANDOM) };
    let len = usize::try_from(len).ok()?;
    let mut buf: Vec<u8> = Vec::with_capacity(len);
    let iov = libc::iovec {
        iov_base: buf.spare_capacity_mut().as_mut_ptr().cast(),
        iov_len: len,
    };
    // SAFETY: the kernel writes at most `len` bytes into the vector's spare
    // room, which holds `len`; only a read of all of them is kept.
    let n = unsafe {
        libc::preadv2(
            std::os::fd::AsRawFd::as_raw_fd(&file),
            &iov,
            1,
            start as libc::off_t,
            libc::RWF_NOWAIT,
        )
    };
    if n != len as isize {
        return None;
    }
    // SAFETY: the kernel wrote all `len` bytes.
    unsafe { buf.set_len(len) };
    Some(Bytes::from(buf))
}

/// `len` bytes of the file at `path` from `start` (blocking), or None when there
/// is no such file. A file shorter than that is an error: the caller asked for
/// bytes its records say are there.
///
/// The range is read with as few `pread`s as the kernel allows and no
/// readahead: a reader's request names exactly what it wants (a random
/// reader's one block, a sequential reader's run, several of them in
/// flight). The kernel's readahead turned a 256 KiB read of a chunk on disk
/// into a read of the whole chunk, four times the bytes; and a read growing
/// from 8 KiB (`read_to_end`) into one disk request per step once there was
/// none.
pub fn read_file_range(path: &Path, start: u64, len: u64) -> std::io::Result<Option<Bytes>> {
    use std::os::fd::AsRawFd;
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let fd = file.as_raw_fd();
    // SAFETY: the descriptor is open for the duration of the call.
    unsafe { libc::posix_fadvise(fd, 0, 0, libc::POSIX_FADV_RANDOM) };
    let len = usize::try_from(len).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    // Read into the vector's spare room as it is: zeroing it first was a
    // twentieth of panserver's CPU in a cold sequential read.
    let mut buf: Vec<u8> = Vec::with_capacity(len);
    while buf.len() < len {
        let (filled, want) = (buf.len(), len - buf.len());
        let at = (start + filled as u64) as libc::off_t;
        let spare = buf.spare_capacity_mut().as_mut_ptr();
        // SAFETY: the kernel writes at most `want` bytes into the spare room,
        // which the vector owns and which holds `len - filled` bytes; only what
        // it wrote is then counted as the vector's.
        match unsafe { libc::pread(fd, spare.cast(), want, at) } {
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            n if n > 0 => unsafe { buf.set_len(filled + n as usize) },
            _ => {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
    Ok(Some(Bytes::from(buf)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_is_read_whole_or_is_an_error() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("chunk");
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).expect("write");
        let read = read_file_range(&path, 70_000, 30_000).expect("read");
        assert_eq!(read.as_deref(), Some(&data[70_000..]));
        let past_end = read_file_range(&path, 70_000, 30_001).expect_err("short");
        assert_eq!(past_end.kind(), std::io::ErrorKind::UnexpectedEof);
        let missing = read_file_range(&dir.path().join("gone"), 0, 1).expect("no error");
        assert!(missing.is_none());
    }

    #[test]
    fn a_cached_range_is_read_at_once_and_one_on_disk_only_through_the_pool() {
        // On a disk (not tmpfs, whose pages cannot leave memory).
        let dir = tempfile::tempdir_in("/var/tmp").expect("tmp");
        let path = dir.path().join("chunk");
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).expect("write");
        let cached = read_cached_range(&path, 300_000, 200_000);
        assert_eq!(cached.as_deref(), Some(&data[300_000..500_000]));
        let file = std::fs::File::open(&path).expect("open");
        file.sync_all().expect("fsync");
        // SAFETY: a valid descriptor; the advice only drops clean cached pages.
        let dropped = unsafe {
            libc::posix_fadvise(
                std::os::fd::AsRawFd::as_raw_fd(&file),
                0,
                0,
                libc::POSIX_FADV_DONTNEED,
            )
        };
        assert_eq!(dropped, 0);
        assert!(
            read_cached_range(&path, 300_000, 200_000).is_none(),
            "bytes only on disk were read without waiting for it"
        );
        assert!(read_cached_range(&dir.path().join("gone"), 0, 1).is_none());
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let read = rt
            .block_on(read_range_of(path, 300_000, 200_000))
            .expect("read");
        assert_eq!(read.as_deref(), Some(&data[300_000..500_000]));
        let missing = rt
            .block_on(read_range_of(dir.path().join("gone"), 0, 1))
            .expect("no error");
        assert!(missing.is_none());
    }
}
