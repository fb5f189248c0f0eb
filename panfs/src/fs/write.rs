//! The write path: writes land in the file's working copy (journaled at the
//! first one), and flush, fsync or the write-back worker send it. A send
//! uploads a snapshot of the copy without holding its lock and commits it
//! against the version the copy started from; when another client replaced
//! that version meanwhile, the local one is kept as a conflict copy.

use std::sync::Arc;

use panproto::wire::ErrorCode;

use super::attr::now_ns;
use super::files::{Ahead, Body, FileState, Life, OpenFile, Upload};
use super::{FsError, FsResult, PanFs, lock};
use crate::replica::Ticket;
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

/// When a send may take a file's copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SendWhen {
    /// A sync point (flush, fsync, sync, unmount): the copy as it is now.
    Now,
    /// In the background: only while no handle may be writing, so another
    /// client never gets a file half rewritten; the last writer's close
    /// queues it again.
    NoWriter,
}

/// A send to make: the snapshot, and the copy's generation when it was taken.
pub(super) struct Pending {
    pub snap: Snapshot,
    pub generation: u64,
    /// Taken before the snapshot: what this mount changed on the node since
    /// then is newer than the commit's attributes.
    pub ticket: Ticket,
}

impl PanFs {
    pub fn write(&self, fh: u64, offset: u64, data: &[u8]) -> FsResult<u32> {
        let handle = self.handle(fh)?;
        self.offline_room(data.len() as u64)?;
        self.with_copy(handle.ino, &handle.file, true, |shadow| {
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
            return self.sync_file(handle.ino, &handle.file, SendWhen::Now);
        }
        let mut f = lock(&handle.file.state);
        f.see_direct_writes()?;
        if let Body::Local { shadow, .. } = &mut f.body {
            shadow
                .save(self.copies_synced())
                .map_err(|e| FsError::local("journaling", e))?;
        }
        Ok(())
    }

    /// Returns once the file's content and the journaled changes to it and
    /// to its path (its names, its ancestors' moves) are on the server, with
    /// every change journaled before them. Later changes elsewhere on the
    /// mount (a `tar xf` beside it) are not waited for.
    pub fn fsync(&self, fh: u64) -> FsResult<()> {
        let handle = self.handle(fh)?;
        self.settle_path(handle.ino)?;
        self.sync_file(handle.ino, &handle.file, SendWhen::Now)
    }

    /// `fsync` of a directory: returns once its journaled changes (names
    /// made, removed or moved in it) and its path's are on the server, as a
    /// local file system makes a directory's entries durable. The mount's
    /// root is `panfs sync`'s: every change and every file's content.
    pub fn fsync_dir(&self, ino: u64) -> FsResult<()> {
        if ino == super::ROOT {
            return self.sync_all();
        }
        self.settle_path(self.to_server(ino))
    }

    /// `panfs sync` and unmount: returns once every change made on the mount
    /// before it, and every file's content, is on the server.
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
    /// snapshot may predate writes this send must include), and after the
    /// piece the streamer is sending (the upload then finds its chunks on the
    /// server rather than send them alongside).
    pub(super) fn prepare(&self, file: &OpenFile, when: SendWhen) -> FsResult<Option<Pending>> {
        let ticket = self.ticket();
        let mut f = lock(&file.state);
        while f.upload == Upload::Running || f.ahead != Ahead::Idle {
            if f.ahead == Ahead::Sending {
                f.ahead = Ahead::Stopping;
            }
            f = file
                .upload_done
                .wait(f)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
        self.take_snapshot(file, &mut f, when, ticket)
    }

    /// As `prepare`, but `None` at once while the file is being sent: the
    /// syncer never waits for an upload, which may itself wait for the syncer.
    pub(super) fn prepare_if_idle(&self, file: &OpenFile) -> FsResult<Option<Pending>> {
        let ticket = self.ticket();
        let mut f = lock(&file.state);
        if f.upload == Upload::Running || f.ahead != Ahead::Idle {
            return Ok(None);
        }
        self.take_snapshot(file, &mut f, SendWhen::NoWriter, ticket)
    }

    /// Under the file's state lock (`f`), which every write holds.
    fn take_snapshot(
        &self,
        file: &OpenFile,
        f: &mut FileState,
        when: SendWhen,
        ticket: Ticket,
    ) -> FsResult<Option<Pending>> {
        f.settle_direct_writes()?;
        let writing = file.writers.load(std::sync::atomic::Ordering::SeqCst) > 0;
        if f.life == Life::Orphaned || (when == SendWhen::NoWriter && writing) {
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
        let mut snap = shadow.snapshot().map_err(local)?;
        snap.sent_ahead = f.ahead_cuts.clone();
        let generation = shadow.generation();
        f.upload = Upload::Running;
        Ok(Some(Pending {
            snap,
            generation,
            ticket,
        }))
    }

    /// Sends the file's pending writes and waits for the server's commit.
    pub(super) fn sync_file(&self, ino: i64, file: &Arc<OpenFile>, when: SendWhen) -> FsResult<()> {
        // A file made here is sent once the server has the node.
        self.settle_node(ino)?;
        let Some(pending) = self.prepare(file, when)? else {
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
        Pending {
            snap,
            generation,
            ticket,
        }: Pending,
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
        let recorded = self.record_send(ino, file, generation, ticket, sent);
        // Only now may a waiting fsync go on: the replica has the commit, so
        // the file's next open (after its copy is dropped) reads the version
        // just sent, not the one before it.
        upload_ended(&mut lock(&file.state), file);
        recorded
    }

    /// Records the outcome of a send that met no conflict.
    fn record_send(
        &self,
        ino: i64,
        file: &Arc<OpenFile>,
        generation: u64,
        ticket: Ticket,
        sent: UploadResult<Committed>,
    ) -> FsResult<()> {
        let mut f = lock(&file.state);
        match sent {
            Ok(done) => {
                tracing::debug!(ino, size = done.node.size, "content committed");
                f.kept_as = None;
                f.ahead_cuts.clear();
                let mut ahead = std::mem::take(&mut f.ahead_sessions);
                ahead.extend(done.ahead);
                self.end_sessions_sent_ahead(ahead);
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
                lock(&self.tables).replica.set_node(&done.node, ticket);
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
