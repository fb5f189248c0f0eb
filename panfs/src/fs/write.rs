//! The write path: writes land in the file's working copy (journaled at the
//! first one), and flush, fsync or the write-back worker send it. A send
//! uploads a snapshot of the copy without holding its lock and commits it
//! against the version the copy started from; when another client replaced
//! that version meanwhile, the local one is kept as a conflict copy.

use std::sync::Arc;

use panproto::wire::ErrorCode;

use super::attr::now_ns;
use super::files::{Body, FileState, Life, OpenFile, Upload};
use super::{FsError, FsResult, PanFs, lock};
use crate::upload::{Committed, Snapshot, Source, Target, UploadError, UploadResult, upload};

/// The live working copy of a file, as an upload's `Source`: it locks the file
/// only for the moment it looks at or fills the copy.
pub(super) struct LiveCopy<'a> {
    pub file: &'a OpenFile,
}

impl Source for LiveCopy<'_> {
    fn gaps(&self, a: u64, b: u64) -> UploadResult<Vec<(u64, u64)>> {
        match &lock(&self.file.state).body {
            Body::Local { shadow, .. } => Ok(shadow.record.present.gaps(a, b)),
            Body::Remote { .. } => Err(UploadError::Dropped),
        }
    }

    fn fill(&self, offset: u64, bytes: &[u8]) -> UploadResult<()> {
        match &mut lock(&self.file.state).body {
            Body::Local { shadow, .. } => Ok(shadow.fill(offset, bytes)?),
            Body::Remote { .. } => Err(UploadError::Dropped),
        }
    }
}

/// A send to make: the snapshot, and the copy's generation when it was taken.
pub(super) struct Pending {
    pub snap: Snapshot,
    pub generation: u64,
}

impl PanFs {
    pub fn write(&self, fh: u64, offset: u64, data: &[u8]) -> FsResult<u32> {
        let handle = self.handle(fh)?;
        self.offline_room(data.len() as u64)?;
        self.with_copy(handle.ino, &handle.file, |shadow| {
            let offset = if handle.append { shadow.size() } else { offset };
            let first_write = !shadow.is_dirty();
            shadow
                .write(offset, data, now_ns())
                .map_err(|e| FsError::local("writing the working copy", e))?;
            if first_write {
                // Journal the pending write so a restarted panfs knows about it.
                shadow
                    .save(self.copies_synced())
                    .map_err(|e| FsError::local("journaling a write", e))?;
            }
            Ok(data.len() as u32)
        })
    }

    pub fn flush(&self, fh: u64) -> FsResult<()> {
        let handle = self.handle(fh)?;
        if !self.opts.writeback {
            return self.sync_file(handle.ino, &handle.file);
        }
        if let Body::Local { shadow, .. } = &lock(&handle.file.state).body {
            shadow
                .save(self.copies_synced())
                .map_err(|e| FsError::local("journaling", e))?;
        }
        Ok(())
    }

    /// Returns once the file's content and every journaled change before it
    /// (its name and its ancestry among them) are on the server.
    pub fn fsync(&self, fh: u64) -> FsResult<()> {
        let handle = self.handle(fh)?;
        self.settle()?;
        self.sync_file(handle.ino, &handle.file)
    }

    /// `fsync` of a directory, and `panfs sync`: returns once every change
    /// made on the mount before it, and every file's content, is on the server.
    pub fn sync_all(&self) -> FsResult<()> {
        self.settle()?;
        match self.flush_all() {
            0 => Ok(()),
            failed => Err(FsError::new(
                libc::EIO,
                format!("{failed} files could not be sent; they stay journaled"),
            )),
        }
    }

    /// Takes a snapshot to send, after any upload already running ends (its
    /// snapshot may predate writes this send must include).
    pub(super) fn prepare(&self, file: &OpenFile) -> FsResult<Option<Pending>> {
        let mut f = lock(&file.state);
        while f.upload == Upload::Running {
            f = file
                .upload_done
                .wait(f)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
        self.take_snapshot(&mut f)
    }

    /// As `prepare`, but `None` at once while the file is being sent: the
    /// syncer never waits for an upload, which may itself wait for the syncer.
    pub(super) fn prepare_if_idle(&self, file: &OpenFile) -> FsResult<Option<Pending>> {
        let mut f = lock(&file.state);
        if f.upload == Upload::Running {
            return Ok(None);
        }
        self.take_snapshot(&mut f)
    }

    fn take_snapshot(&self, f: &mut FileState) -> FsResult<Option<Pending>> {
        if f.life == Life::Orphaned {
            return Ok(None);
        }
        let Body::Local { shadow, .. } = &mut f.body else {
            return Ok(None);
        };
        if !shadow.is_dirty() {
            return Ok(None);
        }
        let local = |e| FsError::local("journaling before an upload", e);
        shadow.save(self.copies_synced()).map_err(local)?;
        let snap = shadow.snapshot().map_err(local)?;
        let generation = shadow.generation();
        f.upload = Upload::Running;
        Ok(Some(Pending { snap, generation }))
    }

    /// Sends the file's pending writes and waits for the server's commit.
    pub(super) fn sync_file(&self, ino: i64, file: &Arc<OpenFile>) -> FsResult<()> {
        // A file made here is sent once the server has the node.
        self.settle_node(ino)?;
        let Some(pending) = self.prepare(file)? else {
            return Ok(());
        };
        let target = Target {
            ino,
            if_content: Some(pending.snap.record.base.as_deref()),
        };
        let live = LiveCopy { file };
        let sent = self.block_on(upload(
            self.remote.as_ref(),
            &pending.snap,
            &live,
            target,
            &self.stats,
        ));
        self.finish_send(ino, file, pending, sent)
    }

    /// Ends a send: the copy is clean (or rebased on what was committed), the
    /// file was removed here meanwhile, or the local version goes to a
    /// conflict copy (another version won, or the file was removed elsewhere).
    pub(super) fn finish_send(
        &self,
        ino: i64,
        file: &Arc<OpenFile>,
        Pending { snap, generation }: Pending,
        sent: UploadResult<Committed>,
    ) -> FsResult<()> {
        let refused = match &sent {
            Err(UploadError::Remote(e)) => e.code(),
            _ => None,
        };
        // Removed here meanwhile, the file's writes die with it; removed
        // elsewhere, they are kept.
        let removed_elsewhere =
            refused == Some(ErrorCode::NotFound) && lock(&file.state).life == Life::Linked;
        if refused == Some(ErrorCode::Conflict) || removed_elsewhere {
            // Other sends of this file wait until the copy is made: each would
            // meet the same refusal and make a copy of its own.
            let kept = if removed_elsewhere {
                self.keep_removed_edit(ino, file, &snap)
            } else {
                self.keep_conflict_copy(ino, file, &snap, generation)
            };
            upload_ended(&mut lock(&file.state), file);
            return kept;
        }
        let mut f = lock(&file.state);
        upload_ended(&mut f, file);
        match sent {
            Ok(done) => {
                if let (
                    Life::Linked,
                    Body::Local {
                        shadow,
                        synced_ctime,
                    },
                ) = (f.life, &mut f.body)
                {
                    *synced_ctime = done.node.ctime;
                    if shadow.generation() == generation {
                        shadow.committed(done.node.content.clone(), done.chunks);
                    } else {
                        shadow
                            .rebase(done.node.content.clone(), done.chunks)
                            .map_err(|e| FsError::local("journaling a commit", e))?;
                    }
                }
                drop(f);
                self.remember(&done.node);
                Ok(())
            }
            // Removed here meanwhile: its open handles keep the local copy, and
            // nothing is sent (as on a local disk, the data dies with the last close).
            Err(UploadError::Remote(e)) if e.is(ErrorCode::NotFound) => {
                f.life = Life::Orphaned;
                if let Body::Local { shadow, .. } = &mut f.body {
                    shadow.forget_journal();
                }
                Ok(())
            }
            Err(UploadError::Dropped) => Ok(()),
            Err(e) => {
                drop(f);
                let _ = self.writeback_tx.send(ino);
                Err(e.into())
            }
        }
    }
}

/// Lets the next send of the file begin.
pub(super) fn upload_ended(f: &mut FileState, file: &OpenFile) {
    f.upload = Upload::Idle;
    file.upload_done.notify_all();
}
