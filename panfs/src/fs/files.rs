//! Open files and their handles. A file's state says where its bytes are
//! (only on the server, or in a working copy on local disk), whether its name
//! still leads to it, and whether an upload of it is running. The state's lock
//! is held briefly, never across a request, so `stat` and reads of a file never
//! wait for its upload. Lock order: `PanFs::tables` before a file's state, never
//! the other way round.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use panproto::wire::{Node, NodeKind};

use super::attr::now_ns;
use super::fetch::Window;
use super::passthrough::{HandleIo, Io, Opens};
use super::{FsError, FsResult, PanFs, lock};
use crate::cache::shadow::Shadow;
use crate::upload::Cut;

/// Where a file's bytes are, as this mount sees them.
pub(super) enum Body {
    /// Only on the server: reads go through the block cache.
    Remote { content: Option<String>, size: u64 },
    /// A working copy on local disk. `synced_ctime` is the ctime of this
    /// mount's last commit of it (0 before one): attributes fetched before that
    /// commit are older than the copy.
    Local {
        shadow: Box<Shadow>,
        synced_ctime: i64,
    },
}

impl Body {
    pub(super) fn empty() -> Self {
        Body::Remote {
            content: None,
            size: 0,
        }
    }

    pub(super) fn size(&self) -> u64 {
        match self {
            Body::Remote { size, .. } => *size,
            Body::Local { shadow, .. } => shadow.size(),
        }
    }

    pub(super) fn is_dirty(&self) -> bool {
        matches!(self, Body::Local { shadow, .. } if shadow.is_dirty())
    }
}

/// Whether the file's name still leads to it on the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Life {
    Linked,
    /// Removed while open here: the copy serves the open handles and is never
    /// sent, as a local disk keeps an unlinked file until its last close.
    Orphaned,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Upload {
    Idle,
    /// An upload is sending a snapshot of the copy; others wait for it to end.
    Running,
}

/// The streamer's sending of a file's chunks while it is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ahead {
    Idle,
    Sending,
    /// An upload waits: the streamer stops after the piece it is sending,
    /// whose chunks the upload then finds on the server.
    Stopping,
}

pub(super) struct FileState {
    pub body: Body,
    pub life: Life,
    pub upload: Upload,
    /// The handles, by how the kernel does their I/O (see `passthrough`).
    pub opens: Opens,
    /// Where the chunks sent while the file is written end (see `stream`).
    pub sent_ahead: u64,
    /// The sessions they went in, ended once the file's upload commits.
    pub ahead_sessions: Vec<String>,
    /// Those chunks, in file order, for the upload to check rather than cut
    /// and hash anew.
    pub ahead_cuts: Vec<Cut>,
    pub ahead: Ahead,
    /// The conflict copy that this mount's version went to while the file
    /// stayed open: a later send of the same bytes (a passthrough writer's
    /// close marks every byte written) is that copy, not a new conflict.
    pub kept_as: Option<Node>,
}

/// A file that is open, or still has writes to send.
pub(super) struct OpenFile {
    /// Open handles, outside the lock so opening and closing never wait.
    pub opens: AtomicU32,
    /// Of those, the handles open for writing. Counted before the handle's
    /// first write, whose state lock a snapshot holds: a background upload
    /// that sees none under that lock never takes a file half rewritten.
    pub writers: AtomicU32,
    pub state: Mutex<FileState>,
    /// Signalled when an upload of the file, or a send ahead of one, ends.
    pub upload_done: Condvar,
    /// Sent by the write-back worker only, never inline in a batch (recovered
    /// after a restart, or refused inline once: a conflict to resolve).
    pub no_inline: AtomicBool,
}

impl OpenFile {
    pub(super) fn new(body: Body) -> Arc<Self> {
        Arc::new(Self {
            opens: AtomicU32::new(0),
            writers: AtomicU32::new(0),
            state: Mutex::new(FileState {
                body,
                life: Life::Linked,
                upload: Upload::Idle,
                opens: Opens::default(),
                sent_ahead: 0,
                ahead_sessions: Vec::new(),
                ahead_cuts: Vec::new(),
                ahead: Ahead::Idle,
                kept_as: None,
            }),
            upload_done: Condvar::new(),
            no_inline: AtomicBool::new(false),
        })
    }
}

/// What the kernel may do with the pages it cached of a file it opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageCache {
    /// Keep them: local-first while the change feed is followed, every change
    /// made elsewhere reaches the kernel as an invalidation (`follow`), and
    /// this mount's own writes went through those pages. A file read again
    /// is then read from memory, as on a local disk.
    Keep,
    /// Drop them: without the feed, nothing would tell the kernel of a change
    /// made elsewhere, and the strict mode promises close-to-open at once.
    Drop,
    /// Bypass them (direct I/O): another client changed the file since the
    /// kernel last got its attributes; its cached size stays wrong for up to
    /// the attribute TTL and would cut reads short, so reads end where the
    /// version read really ends.
    Bypass,
}

/// An open file handle.
pub(super) struct Handle {
    pub ino: i64,
    pub append: bool,
    /// Open for writing (counted in `OpenFile::writers`).
    pub writes: bool,
    pub file: Arc<OpenFile>,
    /// The readahead window of this handle's reader.
    pub readahead: Mutex<Window>,
    /// How the kernel does this handle's I/O.
    pub io: Mutex<HandleIo>,
}

/// Whether open flags let the handle write.
fn writes(flags: i32) -> bool {
    flags & libc::O_ACCMODE != libc::O_RDONLY
}

impl PanFs {
    /// Opens a file node: its handle, and how the kernel does the handle's
    /// I/O (`pages`: what it may do with its cached pages if through them).
    /// `place`: a name of the node, when the caller knows one (a create);
    /// else one is looked for among the names this mount has seen.
    pub(super) fn open_node(
        &self,
        node: &Node,
        flags: i32,
        pages: PageCache,
        place: Option<(i64, String)>,
    ) -> FsResult<(u64, Io)> {
        if node.kind == NodeKind::Dir {
            return Err(FsError::new(libc::EISDIR, "is a directory"));
        }
        let writes = writes(flags);
        // Looked up before the file's lock (the tables' lock is taken first),
        // and only for a node that this open may give a working copy.
        let place = match place {
            Some(place) => Some(place),
            None if Self::may_copy_at_open(node) => self.place_of(node.ino),
            None => None,
        };
        let (file, node) = {
            let mut t = lock(&self.tables);
            // A working copy retired since `node` was read (its commit went to
            // the replica first) must not come back as that older, maybe
            // empty, version: the open goes on with what the replica holds
            // now. A commit keeps the ctime of the changes journaled here, so
            // at the same ctime the replica's node is the newer.
            let current = t.replica.node(node.ino).cloned();
            let newest = match current {
                Some(held) if held.ctime >= node.ctime => held,
                _ => node.clone(),
            };
            let file = t
                .files
                .entry(node.ino)
                .or_insert_with(|| {
                    OpenFile::new(Body::Remote {
                        content: newest.content.clone(),
                        size: newest.size as u64,
                    })
                })
                .clone();
            file.opens.fetch_add(1, Ordering::SeqCst);
            if writes {
                file.writers.fetch_add(1, Ordering::SeqCst);
            }
            (file, newest)
        };
        let node = &node;
        let (io, kernel_io) = {
            // Close-to-open: a file with no unsent writes here takes the server's
            // current version, unless this mount committed after that node was read.
            let mut f = lock(&file.state);
            let (synced, same) = match &f.body {
                Body::Local {
                    synced_ctime,
                    shadow,
                } => (*synced_ctime, shadow.record.base == node.content),
                Body::Remote { .. } => (0, false),
            };
            let settled = f.life == Life::Linked && f.upload == Upload::Idle && !f.body.is_dirty();
            // Passthrough handles read the copy: one that is that version stays.
            let shared = same && f.opens.is_passthrough();
            if settled && node.ctime >= synced && !shared {
                let current = Body::Remote {
                    content: node.content.clone(),
                    size: node.size as u64,
                };
                if let Body::Local { shadow, .. } = std::mem::replace(&mut f.body, current) {
                    shadow.retire(&self.fetcher.disk);
                }
            }
            if writes && file.writers.load(Ordering::SeqCst) == 1 {
                // What a new writer adds is sent while it writes.
                f.sent_ahead = f.body.size();
                f.ahead_cuts.clear();
            }
            let picked = self.pick_io(node, &mut f, writes, pages, place);
            if picked.is_err() {
                drop(f);
                self.open_failed(node.ino, &file, writes);
            }
            picked?
        };
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        let handle = Handle {
            ino: node.ino,
            append: flags & libc::O_APPEND != 0,
            writes,
            file,
            readahead: Mutex::default(),
            io: Mutex::new(io),
        };
        lock(&self.tables).handles.insert(fh, Arc::new(handle));
        Ok((fh, kernel_io))
    }

    /// Undoes an open's counts when it fails after them.
    fn open_failed(&self, ino: i64, file: &Arc<OpenFile>, writes: bool) {
        if writes {
            file.writers.fetch_sub(1, Ordering::SeqCst);
        }
        if file.opens.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.retire_if_idle(ino, file);
        }
    }

    /// Opens a file: its handle, and how the kernel does its I/O (see
    /// `PageCache` and `passthrough`).
    pub fn open(&self, ino: u64, flags: i32) -> FsResult<(u64, Io)> {
        let ino = self.to_server(ino);
        let (known, changed_while_open) = {
            let t = lock(&self.tables);
            let known = t.deferred.get(&ino).or_else(|| t.replica.last_seen(ino));
            (
                known.map(|n| (n.content.clone(), n.size)),
                t.deferred.contains_key(&ino),
            )
        };
        // Following the feed, a current replica has the newest version already.
        let node = self.node(ino, changed_while_open || !self.following())?;
        let stale =
            known.is_some_and(|(content, size)| content != node.content || size != node.size);
        tracing::debug!(ino, size = node.size, content = ?node.content, stale, "open");
        let pages = if stale {
            PageCache::Bypass
        } else if self.sync.is_some() && self.following() {
            PageCache::Keep
        } else {
            PageCache::Drop
        };
        self.open_node(&node, flags, pages, None)
    }

    pub(super) fn handle(&self, fh: u64) -> FsResult<Arc<Handle>> {
        lock(&self.tables)
            .handles
            .get(&fh)
            .cloned()
            .ok_or_else(|| FsError::new(libc::EBADF, "no such file handle"))
    }

    /// Runs `change` on the file's working copy, made first from its current
    /// server version (whose chunk list is fetched without holding the lock).
    /// A change that keeps none of that version's bytes (`keeps_base` false:
    /// a truncate to zero, as `open(O_TRUNC)` makes) needs no chunk list, so
    /// it never waits for the server.
    pub(super) fn with_copy<T>(
        &self,
        ino: i64,
        file: &OpenFile,
        keeps_base: bool,
        change: impl FnOnce(&mut Shadow) -> FsResult<T>,
    ) -> FsResult<T> {
        loop {
            let (content, mut size) = {
                let mut f = lock(&file.state);
                f.see_direct_writes()?;
                match &mut f.body {
                    Body::Local { shadow, .. } => return change(shadow),
                    Body::Remote { content, size } => (content.clone(), *size),
                }
            };
            if !keeps_base {
                size = 0;
            }
            let chunks = match &content {
                Some(_) if keeps_base => match self.block_on(self.remote.manifest(ino)) {
                    Ok(manifest) => manifest.chunks,
                    // Offline, local-first: the copy starts without its base's
                    // chunk list. Its upload then chunks the whole file anew
                    // and fetches the base bytes it lacks, once the server is back.
                    Err(e) if self.sync.is_some() && e.code().is_none() => {
                        tracing::info!(ino, error = %e, "writing a file offline whose bytes are on the server");
                        Vec::new()
                    }
                    Err(e) => return Err(e.into()),
                },
                _ => Vec::new(),
            };
            // Looked up before the file's lock: the tables' lock is always taken first.
            let place = self.place_of(ino);
            let mut f = lock(&file.state);
            // Another version arrived meanwhile: start over from it.
            if !matches!(&f.body, Body::Remote { content: c, .. } if *c == content) {
                continue;
            }
            let mut shadow = Shadow::create(&self.copies, ino, content, chunks, size, now_ns())
                .map_err(|e| FsError::local("creating a working copy", e))?;
            shadow.record.place = place;
            f.body = Body::Local {
                shadow: Box::new(shadow),
                synced_ctime: 0,
            };
        }
    }

    pub fn release(&self, fh: u64) {
        let Some(handle) = lock(&self.tables).handles.remove(&fh) else {
            return;
        };
        let io = *lock(&handle.io);
        if self.io_released(&mut lock(&handle.file.state), io, handle.writes) {
            // It wrote past the pages the kernel may hold from earlier handles.
            if let Some(kernel) = self.kernel.get() {
                kernel.forget_data(self.to_fuse(handle.ino));
            }
        }
        let last_writer = handle.writes && handle.file.writers.fetch_sub(1, Ordering::SeqCst) == 1;
        let last = handle.file.opens.fetch_sub(1, Ordering::SeqCst) == 1;
        if last {
            self.closed_everywhere(handle.ino);
        } else if !last_writer {
            return;
        }
        // The last writer's close sends the file, even while readers hold it.
        let f = lock(&handle.file.state);
        if f.life == Life::Linked && f.body.is_dirty() {
            drop(f);
            match &self.sync {
                // Local-first, a small file rides in the syncer's next batch.
                Some(s) if super::inline::eligible(&handle.file) => s.contents_waiting(),
                // Written but not sent (write-back mode, or a failed upload): the worker sends it.
                _ => {
                    let _ = self.writeback_tx.send(handle.ino);
                }
            }
            return;
        }
        drop(f);
        if last {
            self.retire_if_idle(handle.ino, &handle.file);
        }
    }

    /// Drops a file nobody holds open and with nothing left to send, and its copy.
    pub(super) fn retire_if_idle(&self, ino: i64, file: &Arc<OpenFile>) {
        let mut t = lock(&self.tables);
        let mut f = lock(&file.state);
        let unsent = f.life == Life::Linked && f.body.is_dirty();
        if file.opens.load(Ordering::SeqCst) > 0 || f.upload == Upload::Running || unsent {
            return;
        }
        if let Body::Local { shadow, .. } = std::mem::replace(&mut f.body, Body::empty()) {
            shadow.retire_unopened(&self.fetcher.disk);
        }
        drop(f);
        if t.files
            .get(&ino)
            .is_some_and(|held| Arc::ptr_eq(held, file))
        {
            t.files.remove(&ino);
        }
    }
}
