//! The working copy of a file being written: a sparse local file holding the
//! bytes written (and those read back from the server), with which ranges are
//! present and which are dirty. Its record on disk is the upload journal: a panfs
//! that dies with pending writes finds them again at the next mount.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use panproto::wire::ChunkRef;
use serde::{Deserialize, Serialize};

use crate::cache::direct::{DirectWrites, Stamp};
use crate::cache::disk::DiskCache;
use crate::cache::records::CopyRecords;
use crate::ranges::RangeSet;
use crate::upload::Snapshot;

/// What the journal keeps of a working copy.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShadowRecord {
    pub ino: i64,
    /// The server content the copy started from, and its chunk list.
    pub base: Option<String>,
    pub base_chunks: Vec<ChunkRef>,
    pub size: u64,
    pub present: RangeSet,
    pub dirty: RangeSet,
    /// The smallest size the file had since `base`: the chunk cut there changed.
    pub cut: Option<u64>,
    /// Ranges known to be zeros (punched, zeroed, or past an old end): they go up
    /// as holes, sending and storing nothing.
    #[serde(default)]
    pub zeros: RangeSet,
    pub mtime: i64,
    /// When the copy last changed (a write, a size change, a punched hole).
    #[serde(default)]
    pub ctime: i64,
    /// Where the file was (parent, name) when the copy began: a conflict copy
    /// made after a restart goes beside it.
    #[serde(default)]
    pub place: Option<(i64, String)>,
}

pub struct Shadow {
    pub record: ShadowRecord,
    /// Counts changes of the bytes, size or mtime, so an upload knows whether
    /// the copy changed while it was being sent.
    generation: u64,
    /// The generation whose record is on disk, if one is: a save with
    /// nothing changed since (a close after the write that journaled the
    /// copy) costs nothing, and a copy never journaled has no record to remove.
    saved: Option<u64>,
    /// panfs's looks at the local file while the kernel wrote it directly
    /// (passthrough).
    direct: DirectWrites,
    file: File,
    data_path: PathBuf,
    /// Where the record is journaled.
    records: Arc<CopyRecords>,
}

impl Shadow {
    fn data_path(records: &CopyRecords, ino: i64) -> PathBuf {
        records.dir().join(format!("{ino}.data"))
    }

    /// A new, empty working copy of a file whose server content is `base`.
    pub fn create(
        records: &Arc<CopyRecords>,
        ino: i64,
        base: Option<String>,
        base_chunks: Vec<ChunkRef>,
        size: u64,
        mtime: i64,
    ) -> std::io::Result<Self> {
        let data_path = Self::data_path(records, ino);
        let open = || {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&data_path)
        };
        let file = match records.spares().take(&data_path) {
            Some(file) => file,
            None => open()?,
        };
        if size > 0 {
            file.set_len(size)?;
        }
        Ok(Self::unsaved(
            ino,
            (base, base_chunks),
            (size, mtime),
            file,
            (data_path, records.clone()),
        ))
    }

    /// A copy with no byte present or dirty yet and no record on disk.
    fn unsaved(
        ino: i64,
        (base, base_chunks): (Option<String>, Vec<ChunkRef>),
        (size, mtime): (u64, i64),
        file: File,
        (data_path, records): (PathBuf, Arc<CopyRecords>),
    ) -> Self {
        Self {
            record: ShadowRecord {
                ino,
                base,
                base_chunks,
                size,
                present: RangeSet::default(),
                dirty: RangeSet::default(),
                cut: None,
                zeros: RangeSet::default(),
                mtime,
                ctime: mtime,
                place: None,
            },
            generation: 0,
            saved: None,
            direct: DirectWrites::default(),
            file,
            data_path,
            records,
        }
    }

    /// A clean working copy of a whole content, moved in from the disk cache
    /// by `take` (which returns false when it could not): every byte
    /// present, nothing dirty. Its base chunk list is left empty, so an
    /// upload after a change chunks the whole file anew (the server still
    /// has the unchanged chunks, which are not sent).
    pub fn from_whole(
        records: &Arc<CopyRecords>,
        ino: i64,
        content: String,
        size: u64,
        mtime: i64,
        take: impl FnOnce(&Path) -> bool,
    ) -> std::io::Result<Option<Self>> {
        let data_path = Self::data_path(records, ino);
        if !take(&data_path) {
            return Ok(None);
        }
        let file = OpenOptions::new().read(true).write(true).open(&data_path)?;
        let mut copy = Self::unsaved(
            ino,
            (Some(content), Vec::new()),
            (size, mtime),
            file,
            (data_path, records.clone()),
        );
        copy.record.present.insert(0, size);
        Ok(Some(copy))
    }

    /// Reopens a journaled working copy.
    pub fn open(records: &Arc<CopyRecords>, ino: i64) -> std::io::Result<Self> {
        let data_path = Self::data_path(records, ino);
        let record = records.get(ino)?;
        let file = OpenOptions::new().read(true).write(true).open(&data_path)?;
        Ok(Self {
            record,
            generation: 0,
            saved: Some(0),
            direct: DirectWrites::default(),
            file,
            data_path,
            records: records.clone(),
        })
    }

    pub fn is_dirty(&self) -> bool {
        !self.record.dirty.is_empty() || self.record.cut.is_some()
    }

    pub fn size(&self) -> u64 {
        self.record.size
    }

    pub fn write(&mut self, offset: u64, data: &[u8], mtime: i64) -> std::io::Result<()> {
        self.file.write_all_at(data, offset)?;
        let end = offset + data.len() as u64;
        self.record.present.insert(offset, end);
        self.record.dirty.insert(offset, end);
        self.record.zeros.remove(offset, end);
        if end > self.record.size {
            // Bytes between the old end and this write are a hole: zeros, and new.
            self.grow(offset);
            self.record.size = end;
        }
        self.changed(mtime);
        Ok(())
    }

    /// Records [size, new_size) as new zeros (the local file is already sparse there).
    fn grow(&mut self, new_size: u64) {
        let old = self.record.size;
        self.record.present.insert(old, new_size);
        self.record.dirty.insert(old, new_size);
        self.record.zeros.insert(old, new_size);
    }

    /// A change of the bytes or the size: mtime and ctime move.
    fn changed(&mut self, mtime: i64) {
        self.generation += 1;
        self.record.mtime = mtime;
        self.touch(mtime);
    }

    /// An explicit mtime (utimes) that the next commit stamps.
    pub fn set_mtime(&mut self, mtime: i64) {
        self.generation += 1;
        self.record.mtime = mtime;
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The copy as it is now, for an upload that runs without the file's lock.
    pub fn snapshot(&self) -> std::io::Result<Snapshot> {
        Ok(Snapshot {
            record: self.record.clone(),
            file: self.file.try_clone()?,
            sent_ahead: Vec::new(),
        })
    }

    /// Turns [start, end) into zeros (a hole in the local file), within the
    /// current size. The size does not change: callers grow the file first.
    pub fn zero(&mut self, start: u64, end: u64, mtime: i64) -> std::io::Result<()> {
        let end = end.min(self.record.size);
        if start < end {
            punch_hole(&self.file, start, end)?;
            self.record.present.insert(start, end);
            self.record.dirty.insert(start, end);
            self.record.zeros.insert(start, end);
        }
        self.changed(mtime);
        Ok(())
    }

    /// A change of attributes only (`fallocate` that keeps the size): ctime moves.
    pub fn touch(&mut self, ctime: i64) {
        self.record.ctime = self.record.ctime.max(ctime);
    }

    /// Stores bytes read from the server (clean) so later reads are local.
    pub fn fill(&mut self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        let end = (offset + data.len() as u64).min(self.record.size);
        if end <= offset {
            return Ok(());
        }
        for (a, b) in self.record.present.gaps(offset, end) {
            self.file
                .write_all_at(&data[(a - offset) as usize..(b - offset) as usize], a)?;
        }
        self.record.present.insert(offset, end);
        Ok(())
    }

    pub fn set_size(&mut self, size: u64, mtime: i64) -> std::io::Result<()> {
        let old = self.record.size;
        self.file.set_len(size)?;
        if size < old {
            self.record.present.remove(size, u64::MAX);
            self.record.dirty.remove(size, u64::MAX);
            self.record.zeros.remove(size, u64::MAX);
            self.record.cut = Some(self.record.cut.map_or(size, |c| c.min(size)));
        } else {
            self.grow(size);
        }
        self.record.size = size;
        self.changed(mtime);
        Ok(())
    }

    /// Whether every byte of the file is in the copy: the kernel may then
    /// read and write it directly (FUSE passthrough).
    pub fn is_complete(&self) -> bool {
        self.record.present.gaps(0, self.record.size).is_empty()
    }

    /// The kernel may have written the copy directly (FUSE passthrough):
    /// unless the local file's stamp proves otherwise (see `direct`), its size
    /// is the file's, any byte may have changed, and the holes of the local
    /// file are its zeros. A settling look (before an upload) lets the next
    /// looks tell whether anything was written since.
    pub fn took_direct_writes(&mut self, now: i64, settle: bool) -> std::io::Result<()> {
        let stamp = Stamp::of(&self.file)?;
        if self.direct.unchanged(&stamp) {
            return Ok(());
        }
        let size = stamp.size;
        let written = self.direct.look(&stamp).is_some();
        if written {
            self.record.mtime = stamp.mtime;
        }
        if written || size != self.record.size {
            self.touch(now);
        }
        if size < self.record.size {
            self.record.cut = Some(self.record.cut.map_or(size, |c| c.min(size)));
        }
        let mut whole = RangeSet::default();
        whole.insert(0, size);
        let zeros = holes(&self.file, size)?;
        // A look that finds the record as it was (a close after a flush)
        // leaves the generation, so the record is not written again.
        let changed = written
            || size != self.record.size
            || self.record.dirty != whole
            || self.record.present != whole
            || self.record.zeros != zeros;
        self.record.size = size;
        self.record.present = whole.clone();
        self.record.dirty = whole;
        self.record.zeros = zeros;
        if changed {
            self.generation += 1;
        }
        if settle {
            self.direct.settle(&self.file, stamp)?;
        }
        Ok(())
    }

    /// Before the first passthrough writer opens: the record has every byte
    /// panfs wrote, so this look only settles (see `direct`).
    pub fn settle_direct_writes(&mut self) -> std::io::Result<()> {
        let stamp = Stamp::of(&self.file)?;
        self.direct.settle(&self.file, stamp)
    }

    /// The local file itself, for the kernel to read and write directly, and
    /// its identity (the same copy has the same number for as long as it lives).
    pub fn backing(&self) -> std::io::Result<(File, u64)> {
        use std::os::unix::fs::MetadataExt;
        Ok((self.file.try_clone()?, self.file.metadata()?.ino()))
    }

    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    /// Makes the bytes and the record durable: after this a crash loses nothing written.
    pub fn persist(&mut self) -> std::io::Result<()> {
        self.save(true)
    }

    /// Writes the record beside the bytes. `durable`: synced, so even a crash
    /// of the machine keeps them; else they survive a crash of panfs (the
    /// kernel has them), and the upload or an fsync makes them durable.
    pub fn save(&mut self, durable: bool) -> std::io::Result<()> {
        if !durable && self.saved == Some(self.generation) {
            return Ok(());
        }
        if durable {
            self.file.sync_data()?;
        }
        self.records.save(self.record.ino, &self.record, durable)?;
        self.saved = Some(self.generation);
        Ok(())
    }

    /// Removes the record, if one was written.
    fn remove_record(&mut self) {
        if self.saved.take().is_some()
            && let Err(e) = self.records.remove(self.record.ino)
        {
            tracing::warn!(ino = self.record.ino, error = %e, "could not journal that a working copy is done");
        }
    }

    /// Forgets the working copy. When it holds exactly a committed content
    /// (clean, every byte present), its bytes stay as that content's cached
    /// copy, so the file is read back from local disk until evicted.
    pub fn retire(self, cache: &DiskCache) {
        if let Some(path) = self.retire_keeping(cache) {
            let _ = std::fs::remove_file(path);
        }
    }

    /// As `retire`, for a copy that no handle holds open and no upload reads:
    /// a file not kept as cached content goes to the spare pool, to be a new
    /// copy's file, unless the kernel says something still has it open (a
    /// mapping outlives its handle); then it is unlinked, so its readers keep
    /// their bytes.
    pub fn retire_unopened(self, cache: &DiskCache) {
        let size = self.record.size;
        let records = self.records.clone();
        // The same open file description: it counts as this copy's own.
        let Ok(file) = self.file.try_clone() else {
            return self.retire(cache);
        };
        if let Some(path) = self.retire_keeping(cache) {
            records.spares().put(&path, &file, size);
        }
    }

    /// Forgets the record and offers the bytes to the cache: the data file's
    /// path when the cache did not take it.
    fn retire_keeping(mut self, cache: &DiskCache) -> Option<PathBuf> {
        self.remove_record();
        let size = self.record.size;
        let whole = !self.is_dirty() && size > 0 && self.record.present.gaps(0, size).is_empty();
        if let (true, Some(content)) = (whole, &self.record.base)
            && cache.adopt(content, &self.data_path, size)
        {
            return None;
        }
        Some(self.data_path.clone())
    }

    /// Forgets the working copy and its bytes.
    pub fn discard(mut self) {
        self.remove_record();
        let _ = std::fs::remove_file(&self.data_path);
    }

    /// Stops journaling the copy (its file is gone) but keeps its bytes for open handles.
    pub fn forget_journal(&mut self) {
        self.remove_record();
    }

    /// Marks the copy clean against the content just committed.
    pub fn committed(&mut self, content: Option<String>, chunks: Vec<ChunkRef>) {
        self.record.base = content;
        self.record.base_chunks = chunks;
        self.record.dirty = RangeSet::default();
        self.record.cut = None;
        self.forget_journal();
    }

    /// Records a commit of an older state of the copy (it changed while being
    /// sent): the new content is the base, and what is dirty stays dirty. The
    /// journal says so at once, or a replay would find its base replaced and
    /// take its own commit for another client's.
    pub fn rebase(
        &mut self,
        content: Option<String>,
        chunks: Vec<ChunkRef>,
    ) -> std::io::Result<()> {
        self.record.base = content;
        self.record.base_chunks = chunks;
        self.persist()
    }
}

/// Deallocates [start, end) of a local file, which then reads as zeros. A file
/// system that cannot punch holes gets zeros written instead.
/// The holes of `file` below `size`: they read as zeros, and go up as holes.
fn holes(file: &File, size: u64) -> std::io::Result<RangeSet> {
    use std::os::fd::AsRawFd;
    // The offset lseek moves is never used: the copy is read and written at
    // explicit offsets only.
    let seek = |from: u64, whence: i32| -> std::io::Result<u64> {
        // SAFETY: lseek on a descriptor this file owns; it moves no data.
        let at = unsafe { libc::lseek(file.as_raw_fd(), from as libc::off_t, whence) };
        match at {
            at if at >= 0 => Ok((at as u64).min(size)),
            // No data after `from`: the rest is a hole.
            _ if std::io::Error::last_os_error().raw_os_error() == Some(libc::ENXIO) => Ok(size),
            _ => Err(std::io::Error::last_os_error()),
        }
    };
    let mut holes = RangeSet::default();
    let mut at = 0;
    while at < size {
        let data = seek(at, libc::SEEK_DATA)?;
        holes.insert(at, data);
        if data >= size {
            break;
        }
        at = seek(data, libc::SEEK_HOLE)?;
    }
    Ok(holes)
}

fn punch_hole(file: &File, start: u64, end: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    // SAFETY: fallocate on an open descriptor with in-range arguments touches no memory.
    let rc = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            mode,
            start as libc::off_t,
            (end - start) as libc::off_t,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::EOPNOTSUPP) {
        return Err(err);
    }
    let zeros = vec![0u8; (end - start).min(1 << 20) as usize];
    let mut pos = start;
    while pos < end {
        let n = (end - pos).min(zeros.len() as u64) as usize;
        file.write_all_at(&zeros[..n], pos)?;
        pos += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(s: &Shadow, offset: u64, len: usize) -> Vec<u8> {
        let mut buf = vec![0u8; len];
        s.read_at(&mut buf, offset).expect("read");
        buf
    }

    #[test]
    fn zeroed_and_grown_ranges_are_recorded_as_zeros() {
        let dir = tempfile::tempdir().expect("tmp");
        let records = Arc::new(CopyRecords::open(dir.path()).expect("records"));
        let mut s = Shadow::create(&records, 7, None, Vec::new(), 0, 1).expect("create");
        s.write(0, &[1u8; 100], 2).expect("write");
        // A write past the end leaves a hole of zeros before it.
        s.write(200, &[2u8; 10], 3).expect("write");
        assert_eq!(
            s.record.zeros.iter().copied().collect::<Vec<_>>(),
            [(100, 200)]
        );
        // Punching inside data zeros it; the size stays.
        s.zero(10, 20, 4).expect("zero");
        assert_eq!(s.size(), 210);
        assert_eq!(
            read(&s, 5, 20),
            [[1u8; 5], [0u8; 5], [0u8; 5], [1u8; 5]].concat()
        );
        assert_eq!(
            s.record.zeros.iter().copied().collect::<Vec<_>>(),
            [(10, 20), (100, 200)]
        );
        // Zeroing past the end is clipped to the size; growing adds zeros.
        s.zero(205, 400, 5).expect("zero");
        s.set_size(300, 6).expect("grow");
        assert_eq!(
            s.record.zeros.iter().copied().collect::<Vec<_>>(),
            [(10, 20), (100, 200), (205, 300)]
        );
        // Writing over zeros makes them data again; shrinking drops what is cut.
        s.write(150, &[3u8; 10], 7).expect("write");
        s.set_size(206, 8).expect("shrink");
        assert_eq!(
            s.record.zeros.iter().copied().collect::<Vec<_>>(),
            [(10, 20), (100, 150), (160, 200), (205, 206)]
        );
        assert_eq!(s.record.ctime, 8, "every change moves the ctime");
        assert!(s.is_dirty());
    }
}
