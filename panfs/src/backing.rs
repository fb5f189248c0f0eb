//! The adapter's side of FUSE passthrough: the kernel's backing ids. The
//! kernel takes one backing file per inode at a time, so an inode's
//! passthrough handles share one id, kept until the last of them is
//! released. The file-system logic makes sure they all name the same local
//! file; this only holds the ids and answers the kernel.

use std::collections::HashMap;
use std::fs::File;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use fuser::{BackingId, FileAttr, FileHandle, FopenFlags, Generation, ReplyCreate, ReplyOpen};

use crate::fs::{Io, PageCache, PanFs};

#[derive(Default)]
pub struct Backings {
    /// Inode -> its backing id, and the passthrough handles that use it.
    by_ino: Mutex<HashMap<u64, (Arc<BackingId>, u32)>>,
    /// Passthrough handle -> its inode.
    by_fh: Mutex<HashMap<u64, u64>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The open flags of a handle whose I/O goes through panfs.
fn cached_flags(pages: PageCache) -> FopenFlags {
    match pages {
        PageCache::Keep => FopenFlags::FOPEN_KEEP_CACHE,
        PageCache::Drop => FopenFlags::empty(),
        PageCache::Bypass => FopenFlags::FOPEN_DIRECT_IO,
    }
}

impl Backings {
    /// The backing id for a new passthrough handle `fh` of `ino`: the one
    /// its other handles use, or a new one made of `file` by `open`.
    fn backing(
        &self,
        ino: u64,
        fh: u64,
        file: &File,
        open: impl FnOnce(&File) -> std::io::Result<BackingId>,
    ) -> std::io::Result<Arc<BackingId>> {
        let mut by_ino = lock(&self.by_ino);
        let id = match by_ino.get_mut(&ino) {
            Some((id, handles)) => {
                *handles += 1;
                id.clone()
            }
            None => {
                let id = Arc::new(open(file)?);
                by_ino.insert(ino, (id.clone(), 1));
                id
            }
        };
        lock(&self.by_fh).insert(fh, ino);
        Ok(id)
    }

    /// `read_only`: the handle cannot write, so its close has nothing to
    /// flush (panfs takes no POSIX locks, which a flush would release) and
    /// the kernel is told not to send one: a `cat` costs a round trip less.
    pub fn reply_open(
        &self,
        fs: &PanFs,
        (ino, fh): (u64, u64),
        read_only: bool,
        io: Io,
        reply: ReplyOpen,
    ) {
        let flush = if read_only {
            FopenFlags::FOPEN_NOFLUSH
        } else {
            FopenFlags::empty()
        };
        let file = match io {
            Io::Cached(pages) => return reply.opened(FileHandle(fh), cached_flags(pages) | flush),
            Io::Passthrough(file) => file,
        };
        match self.backing(ino, fh, &file, |f| reply.open_backing(f)) {
            Ok(id) => reply.opened_passthrough(FileHandle(fh), flush, &id),
            Err(e) => {
                fs.passthrough_refused(fh, &e);
                reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO | flush)
            }
        }
    }

    pub fn reply_create(
        &self,
        fs: &PanFs,
        (ttl, attr): (&Duration, &FileAttr),
        fh: u64,
        io: Io,
        reply: ReplyCreate,
    ) {
        let (handle, none) = (FileHandle(fh), Generation(0));
        let file = match io {
            Io::Cached(pages) => {
                return reply.created(ttl, attr, none, handle, cached_flags(pages));
            }
            Io::Passthrough(file) => file,
        };
        match self.backing(attr.ino.0, fh, &file, |f| reply.open_backing(f)) {
            Ok(id) => reply.created_passthrough(ttl, attr, none, handle, FopenFlags::empty(), &id),
            Err(e) => {
                fs.passthrough_refused(fh, &e);
                reply.created(ttl, attr, none, handle, FopenFlags::FOPEN_DIRECT_IO)
            }
        }
    }

    /// Forgets a handle at its release, before the file-system logic does
    /// (so while this holds an id, the logic still counts a handle on it).
    pub fn release(&self, fh: u64) {
        let Some(ino) = lock(&self.by_fh).remove(&fh) else {
            return;
        };
        let mut by_ino = lock(&self.by_ino);
        if let Some((_, handles)) = by_ino.get_mut(&ino) {
            *handles -= 1;
            if *handles == 0 {
                by_ino.remove(&ino);
            }
        }
    }
}
