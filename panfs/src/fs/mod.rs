//! The file-system logic, free of fuser types: inodes, handles, attribute and
//! entry caches, reads through the block cache, writes into working copies, and
//! write-back on flush, fsync and release. Calls arrive on FUSE worker threads
//! and run the async remote on a shared tokio runtime.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use panproto::wire::{
    CreateRequest, DirEntry, Node, NodeKind, RenameMode, RenameRequest, SetAttrRequest,
};
use tokio::runtime::Handle;

use crate::cache::blocks::{BLOCK, BlockCache, BlockKey};
use crate::cache::disk::DiskCache;
use crate::cache::shadow::Shadow;
use crate::remote::{Remote, RemoteError};
use crate::upload::{UploadStats, upload};

mod alloc;
mod xattr;

pub use alloc::Fallocate;

/// An errno.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Errno(pub i32);

pub type FsResult<T> = Result<T, Errno>;

impl From<RemoteError> for Errno {
    fn from(e: RemoteError) -> Self {
        let errno = e.errno();
        if errno == libc::EIO {
            tracing::warn!(error = %e, "request failed");
        } else {
            tracing::debug!(error = %e, "request refused");
        }
        Errno(errno)
    }
}

fn io_errno(e: std::io::Error) -> Errno {
    tracing::warn!(error = %e, "local cache I/O failed");
    Errno(e.raw_os_error().unwrap_or(libc::EIO))
}

/// The inode number FUSE reserves for the root.
pub const ROOT: u64 = 1;

/// The node kind `mknod` makes for a mode's file type.
fn mknod_kind(mode: u32) -> FsResult<NodeKind> {
    match mode & libc::S_IFMT {
        libc::S_IFREG | 0 => Ok(NodeKind::File),
        libc::S_IFIFO => Ok(NodeKind::Fifo),
        libc::S_IFSOCK => Ok(NodeKind::Socket),
        libc::S_IFCHR => Ok(NodeKind::CharDev),
        libc::S_IFBLK => Ok(NodeKind::BlockDev),
        _ => Err(Errno(libc::EINVAL)),
    }
}

/// Attributes as the kernel wants them.
#[derive(Debug, Clone)]
pub struct Attr {
    pub ino: u64,
    pub kind: NodeKind,
    pub size: u64,
    pub atime: SystemTime,
    pub mtime: SystemTime,
    pub ctime: SystemTime,
    pub perm: u16,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u32,
    /// 512-byte blocks stored: holes cost none.
    pub blocks: u64,
}

#[derive(Debug, Clone)]
pub struct FsOptions {
    pub attr_ttl: Duration,
    pub entry_ttl: Duration,
    pub writeback: bool,
    pub cache_dir: PathBuf,
    pub memory_cache_bytes: u64,
    /// Disk space for recently read blocks.
    pub disk_cache_bytes: u64,
    /// Blocks fetched ahead of a sequential reader.
    pub readahead_blocks: u64,
    /// The mounting user, shown as the owner of the root.
    pub uid: u32,
    pub gid: u32,
}

/// Who creates a node.
#[derive(Debug, Clone, Copy)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

impl Owner {
    fn request(
        self,
        name: &str,
        kind: NodeKind,
        mode: u32,
        target: Option<String>,
    ) -> CreateRequest {
        CreateRequest {
            name: name.to_string(),
            kind,
            mode,
            uid: self.uid,
            gid: self.gid,
            target,
            rdev: 0,
        }
    }
}

/// A setattr: each field that is set changes.
#[derive(Debug, Clone, Default)]
pub struct AttrChange {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<SystemTime>,
    pub mtime: Option<SystemTime>,
}

pub struct StatFs {
    pub used_bytes: u64,
    pub quota_bytes: u64,
    pub used_files: u64,
    pub quota_files: u64,
}

fn to_time(ns: i64) -> SystemTime {
    if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    } else {
        UNIX_EPOCH - Duration::from_nanos(ns.unsigned_abs())
    }
}

pub fn from_time(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i64,
        Err(e) => -(e.duration().as_nanos() as i64),
    }
}

fn now_ns() -> i64 {
    from_time(SystemTime::now())
}

/// One block of a content: from the disk cache, else from the server (then kept on disk).
async fn fetch_block(
    remote: Arc<dyn Remote>,
    disk: Arc<DiskCache>,
    ino: i64,
    key: BlockKey,
) -> Result<Bytes, RemoteError> {
    if let Some(hit) = disk.get(&key) {
        return Ok(hit);
    }
    let bytes = remote
        .read(ino, &key.0, key.1 * BLOCK, (key.1 + 1) * BLOCK)
        .await?;
    disk.put(&key, &bytes);
    Ok(bytes)
}

fn check_name(name: &str) -> FsResult<()> {
    panproto::validate_name(name).map_err(|e| match e {
        panproto::NameError::TooLong => Errno(libc::ENAMETOOLONG),
        _ => Errno(libc::EINVAL),
    })
}

/// A file that is open, or still has writes to send.
/// A file that is open, or still has writes to send. `opens` lives outside the
/// state's lock so opening and closing never wait for an upload in progress.
struct OpenFile {
    opens: AtomicU32,
    state: Mutex<FileState>,
}

impl OpenFile {
    fn new(state: FileState) -> Arc<Self> {
        Arc::new(Self {
            opens: AtomicU32::new(0),
            state: Mutex::new(state),
        })
    }
}

struct FileState {
    /// The content read at open (close-to-open: later changes show at the next open).
    content: Option<String>,
    size: u64,
    shadow: Option<Shadow>,
    next_sequential: u64,
    /// An upload failed; the write-back worker retries it.
    failed: bool,
    /// The server no longer has the inode (unlinked while open): writes stay local.
    unlinked: bool,
    /// The ctime the server gave our last commit: attributes fetched earlier are older than it.
    committed_ctime: i64,
}

struct Handle_ {
    ino: i64,
    append: bool,
}

#[derive(Default)]
struct Tables {
    /// Attributes and when they were fetched (None: stale, kept only for when the server is unreachable).
    nodes: HashMap<i64, (Node, Option<Instant>)>,
    /// Names seen, kept so cached files stay reachable while the server is not.
    entries: HashMap<(i64, String), i64>,
    negative: HashMap<(i64, String), Instant>,
    files: HashMap<i64, Arc<OpenFile>>,
    handles: HashMap<u64, Handle_>,
    dirs: HashMap<u64, Vec<(String, Node)>>,
}

pub struct PanFs {
    rt: Handle,
    remote: Arc<dyn Remote>,
    root: i64,
    opts: FsOptions,
    tables: Mutex<Tables>,
    blocks: Arc<BlockCache>,
    disk: Arc<DiskCache>,
    next_fh: AtomicU64,
    pub stats: Arc<UploadStats>,
    writeback_tx: tokio::sync::mpsc::UnboundedSender<i64>,
    writeback_rx: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<i64>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a lock must not take the whole mount down.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl PanFs {
    pub fn new(
        rt: Handle,
        remote: Arc<dyn Remote>,
        root: i64,
        opts: FsOptions,
    ) -> std::io::Result<Arc<Self>> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let disk = DiskCache::open(&opts.cache_dir.join("blocks"), opts.disk_cache_bytes)?;
        Ok(Arc::new(Self {
            rt,
            remote,
            root,
            blocks: Arc::new(BlockCache::new(opts.memory_cache_bytes)),
            disk: Arc::new(disk),
            opts,
            tables: Mutex::default(),
            next_fh: AtomicU64::new(1),
            stats: Arc::default(),
            writeback_tx: tx,
            writeback_rx: Mutex::new(Some(rx)),
        }))
    }

    fn journal_dir(&self) -> PathBuf {
        self.opts.cache_dir.join("journal")
    }

    pub fn to_server(&self, ino: u64) -> i64 {
        if ino == ROOT { self.root } else { ino as i64 }
    }

    fn to_fuse(&self, ino: i64) -> u64 {
        if ino == self.root { ROOT } else { ino as u64 }
    }

    fn attr_of(&self, node: &Node) -> Attr {
        let mut attr = Attr {
            ino: self.to_fuse(node.ino),
            kind: node.kind,
            size: node.size.max(0) as u64,
            atime: to_time(node.atime),
            mtime: to_time(node.mtime),
            ctime: to_time(node.ctime),
            perm: (node.mode & 0o7777) as u16,
            nlink: node.nlink,
            uid: node.uid,
            gid: node.gid,
            rdev: node.rdev,
            blocks: match node.kind {
                NodeKind::File => node.stored_bytes.max(0) as u64,
                _ => node.size.max(0) as u64,
            }
            .div_ceil(512),
        };
        if node.ino == self.root {
            attr.uid = self.opts.uid;
            attr.gid = self.opts.gid;
        }
        // A file being written shows its local size and time.
        let open = lock(&self.tables).files.get(&node.ino).cloned();
        if let Some(file) = open {
            let file = lock(&file.state);
            // While a working copy exists it is the truth (it may hold unsent writes).
            if let Some(shadow) = &file.shadow {
                attr.size = shadow.size();
                attr.mtime = to_time(shadow.record.mtime);
                attr.ctime = to_time(node.ctime.max(shadow.record.ctime));
                attr.blocks = shadow
                    .size()
                    .saturating_sub(shadow.record.zeros.total())
                    .div_ceil(512);
            }
        }
        attr
    }

    fn remember(&self, node: &Node) {
        let mut t = lock(&self.tables);
        t.nodes
            .insert(node.ino, (node.clone(), Some(Instant::now())));
    }

    fn forget_node(&self, ino: i64) {
        lock(&self.tables).nodes.remove(&ino);
    }

    /// A node whose name was removed or replaced. When that was a file's last
    /// link, its unsent writes die with it, as on a local disk: the working copy
    /// goes now if nothing holds it open, else at the last close.
    fn forget_gone(&self, node: &Node) {
        self.forget_node(node.ino);
        if node.kind != NodeKind::File || node.nlink > 1 {
            return;
        }
        let mut t = lock(&self.tables);
        let Some(file) = t.files.get(&node.ino).cloned() else {
            return;
        };
        // Busy uploading: that upload learns the file is gone and cleans up.
        let Ok(mut f) = file.state.try_lock() else {
            return;
        };
        f.unlinked = true;
        if file.opens.load(Ordering::SeqCst) > 0 {
            if let Some(shadow) = f.shadow.as_mut() {
                shadow.forget_journal();
            }
            return;
        }
        if let Some(shadow) = f.shadow.take() {
            shadow.discard();
        }
        drop(f);
        t.files.remove(&node.ino);
    }

    fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    // ---- namespace ----

    pub fn lookup(&self, parent: u64, name: &str) -> FsResult<Attr> {
        check_name(name)?;
        let parent = self.to_server(parent);
        let key = (parent, name.to_string());
        if let Some(at) = lock(&self.tables).negative.get(&key)
            && at.elapsed() < self.opts.entry_ttl
        {
            return Err(Errno(libc::ENOENT));
        }
        match self.block_on(self.remote.lookup(parent, name)) {
            Ok(node) => {
                self.remember(&node);
                lock(&self.tables).entries.insert(key, node.ino);
                Ok(self.attr_of(&node))
            }
            Err(e) => {
                let errno = Errno::from(e);
                if errno.0 == libc::ENOENT {
                    let mut t = lock(&self.tables);
                    t.entries.remove(&key);
                    t.negative.insert(key, Instant::now());
                    return Err(errno);
                }
                let cached = {
                    let t = lock(&self.tables);
                    t.entries
                        .get(&key)
                        .and_then(|ino| t.nodes.get(ino))
                        .map(|(n, _)| n.clone())
                };
                match cached {
                    Some(node) if errno.0 == libc::EIO => Ok(self.attr_of(&node)),
                    _ => Err(errno),
                }
            }
        }
    }

    fn node(&self, ino: i64, fresh: bool) -> FsResult<Node> {
        if !fresh
            && let Some((node, Some(at))) = lock(&self.tables).nodes.get(&ino)
            && at.elapsed() < self.opts.attr_ttl
        {
            return Ok(node.clone());
        }
        match self.block_on(self.remote.node(ino)) {
            Ok(node) => {
                self.remember(&node);
                Ok(node)
            }
            Err(e) => {
                let errno = Errno::from(e);
                // Unreachable server: what was seen last is still readable.
                let cached = lock(&self.tables).nodes.get(&ino).map(|(n, _)| n.clone());
                match cached {
                    Some(node) if errno.0 == libc::EIO => Ok(node),
                    _ => Err(errno),
                }
            }
        }
    }

    pub fn getattr(&self, ino: u64) -> FsResult<Attr> {
        let node = self.node(self.to_server(ino), false)?;
        Ok(self.attr_of(&node))
    }

    pub fn readlink(&self, ino: u64) -> FsResult<String> {
        let node = self.node(self.to_server(ino), false)?;
        node.target.ok_or(Errno(libc::EINVAL))
    }

    fn entry_added(&self, parent: i64, name: &str, node: &Node) {
        self.entry_changed(parent, name);
        self.remember(node);
        lock(&self.tables)
            .entries
            .insert((parent, name.to_string()), node.ino);
    }

    fn entry_changed(&self, parent: i64, name: &str) {
        let mut t = lock(&self.tables);
        t.negative.remove(&(parent, name.to_string()));
        t.entries.remove(&(parent, name.to_string()));
        if let Some(entry) = t.nodes.get_mut(&parent) {
            entry.1 = None;
        }
    }

    fn make(&self, parent: u64, req: CreateRequest) -> FsResult<Node> {
        check_name(&req.name)?;
        let parent = self.to_server(parent);
        let node = self.block_on(self.remote.create(parent, &req))?;
        self.entry_added(parent, &req.name, &node);
        Ok(node)
    }

    pub fn mkdir(&self, parent: u64, name: &str, mode: u32, owner: Owner) -> FsResult<Attr> {
        let node = self.make(parent, owner.request(name, NodeKind::Dir, mode, None))?;
        Ok(self.attr_of(&node))
    }

    pub fn symlink(&self, parent: u64, name: &str, target: &str, owner: Owner) -> FsResult<Attr> {
        let req = owner.request(name, NodeKind::Symlink, 0o777, Some(target.to_string()));
        let node = self.make(parent, req)?;
        Ok(self.attr_of(&node))
    }

    /// A FIFO, socket or device node (metadata only), or a regular file.
    pub fn mknod(
        &self,
        parent: u64,
        name: &str,
        mode: u32,
        rdev: u32,
        owner: Owner,
    ) -> FsResult<Attr> {
        let kind = mknod_kind(mode)?;
        let mut req = owner.request(name, kind, mode & 0o7777, None);
        req.rdev = rdev;
        let node = self.make(parent, req)?;
        Ok(self.attr_of(&node))
    }

    pub fn create(
        &self,
        parent: u64,
        name: &str,
        mode: u32,
        owner: Owner,
        flags: i32,
    ) -> FsResult<(Attr, u64)> {
        let node = self.make(parent, owner.request(name, NodeKind::File, mode, None))?;
        let fh = self.open_node(&node, flags)?;
        Ok((self.attr_of(&node), fh))
    }

    pub fn link(&self, ino: u64, parent: u64, name: &str) -> FsResult<Attr> {
        check_name(name)?;
        let (ino, parent) = (self.to_server(ino), self.to_server(parent));
        let node = self.block_on(self.remote.link(ino, parent, name))?;
        self.entry_added(parent, name, &node);
        Ok(self.attr_of(&node))
    }

    pub fn unlink(&self, parent: u64, name: &str, dir: bool) -> FsResult<()> {
        check_name(name)?;
        let parent = self.to_server(parent);
        let victim = self.block_on(self.remote.lookup(parent, name)).ok();
        self.block_on(self.remote.remove(parent, name, dir))?;
        self.entry_changed(parent, name);
        if let Some(v) = victim {
            self.forget_gone(&v);
        }
        Ok(())
    }

    pub fn rename(
        &self,
        parent: u64,
        name: &str,
        new_parent: u64,
        new_name: &str,
        mode: RenameMode,
    ) -> FsResult<()> {
        check_name(name)?;
        check_name(new_name)?;
        let req = RenameRequest {
            parent: self.to_server(parent),
            name: name.to_string(),
            new_parent: self.to_server(new_parent),
            new_name: new_name.to_string(),
            mode,
        };
        let replaced = self
            .block_on(self.remote.lookup(req.new_parent, new_name))
            .ok();
        let moved = lock(&self.tables)
            .entries
            .get(&(req.parent, name.to_string()))
            .copied();
        self.block_on(self.remote.rename(&req))?;
        // A rename changes the moved inode's ctime on the server.
        if let Some(ino) = moved {
            self.forget_node(ino);
        }
        self.entry_changed(req.parent, name);
        self.entry_changed(req.new_parent, new_name);
        match replaced {
            // Exchanged, not replaced: the other node lives on under the old name.
            Some(v) if mode == RenameMode::Exchange => self.forget_node(v.ino),
            Some(v) => self.forget_gone(&v),
            None => {}
        }
        Ok(())
    }

    pub fn setattr(&self, ino: u64, change: AttrChange) -> FsResult<Attr> {
        let AttrChange {
            mode,
            uid,
            gid,
            size,
            atime,
            mtime,
        } = change;
        let ino = self.to_server(ino);
        let mut req = SetAttrRequest {
            mode,
            uid,
            gid,
            size: None,
            atime: atime.map(from_time),
            mtime: mtime.map(from_time),
        };
        if let Some(size) = size {
            let open = lock(&self.tables).files.get(&ino).cloned();
            match open {
                Some(file) => {
                    let mut file = lock(&file.state);
                    let mtime = req.mtime.unwrap_or_else(now_ns);
                    self.working_copy(ino, &mut file)?
                        .set_size(size, mtime)
                        .map_err(io_errno)?;
                    file.size = size;
                }
                None => req.size = Some(size as i64),
            }
        }
        let only_size = req.mode.is_none()
            && req.uid.is_none()
            && req.gid.is_none()
            && req.atime.is_none()
            && req.mtime.is_none()
            && req.size.is_none();
        let node = if only_size {
            // The size lives in the working copy until the next upload.
            self.node(ino, false)?
        } else {
            self.block_on(self.remote.set_attr(ino, &req))?
        };
        self.remember(&node);
        let open = lock(&self.tables).files.get(&ino).cloned();
        if let Some(file) = open {
            let mut file = lock(&file.state);
            if let (Some(shadow), Some(m)) = (file.shadow.as_mut(), req.mtime) {
                shadow.record.mtime = m;
            }
        }
        Ok(self.attr_of(&node))
    }

    // ---- directories ----

    pub fn opendir(&self, ino: u64) -> FsResult<u64> {
        let dir = self.to_server(ino);
        let node = self.node(dir, true)?;
        if node.kind != NodeKind::Dir {
            return Err(Errno(libc::ENOTDIR));
        }
        let entries: Vec<DirEntry> = self.block_on(self.remote.list(dir))?;
        let mut listing = Vec::with_capacity(entries.len());
        for e in entries {
            listing.push((e.name, e.node));
        }
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        let mut t = lock(&self.tables);
        for (name, n) in &listing {
            t.nodes.insert(n.ino, (n.clone(), Some(Instant::now())));
            t.entries.insert((dir, name.clone()), n.ino);
        }
        t.dirs.insert(fh, listing);
        Ok(fh)
    }

    /// Entries from `offset` on: (next offset, name, attributes).
    pub fn readdir(
        &self,
        dir_ino: u64,
        fh: u64,
        offset: u64,
    ) -> FsResult<Vec<(u64, String, Attr)>> {
        let listing = lock(&self.tables)
            .dirs
            .get(&fh)
            .cloned()
            .ok_or(Errno(libc::EBADF))?;
        let dir = self.node(self.to_server(dir_ino), false)?;
        let mut out = Vec::new();
        let dot = self.attr_of(&dir);
        let all = [(".".to_string(), dot.clone()), ("..".to_string(), dot)]
            .into_iter()
            .chain(
                listing
                    .iter()
                    .map(|(name, node)| (name.clone(), self.attr_of(node))),
            );
        for (i, (name, attr)) in all.enumerate().skip(offset as usize) {
            out.push((i as u64 + 1, name, attr));
        }
        Ok(out)
    }

    pub fn releasedir(&self, fh: u64) {
        lock(&self.tables).dirs.remove(&fh);
    }

    pub fn statfs(&self) -> FsResult<StatFs> {
        let info = self.block_on(self.remote.user_info())?;
        Ok(StatFs {
            used_bytes: info.used_bytes.max(0) as u64,
            quota_bytes: info.quota_bytes.max(0) as u64,
            used_files: info.used_files.max(0) as u64,
            quota_files: info.quota_files.max(0) as u64,
        })
    }

    // ---- files ----

    fn open_node(&self, node: &Node, flags: i32) -> FsResult<u64> {
        if node.kind == NodeKind::Dir {
            return Err(Errno(libc::EISDIR));
        }
        let file = {
            let mut t = lock(&self.tables);
            let file = t
                .files
                .entry(node.ino)
                .or_insert_with(|| {
                    OpenFile::new(FileState {
                        content: node.content.clone(),
                        size: node.size as u64,
                        shadow: None,
                        next_sequential: 0,
                        failed: false,
                        unlinked: false,
                        committed_ctime: 0,
                    })
                })
                .clone();
            file.opens.fetch_add(1, Ordering::SeqCst);
            file
        };
        {
            let mut f = lock(&file.state);
            // Close-to-open: a file with no unsent writes here takes the server's current version.
            let newer = node.ctime >= f.committed_ctime;
            if newer && !f.shadow.as_ref().is_some_and(Shadow::is_dirty) && !f.unlinked {
                if let Some(s) = f.shadow.take() {
                    s.discard();
                }
                f.content = node.content.clone();
                f.size = node.size as u64;
            }
        }
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.tables).handles.insert(
            fh,
            Handle_ {
                ino: node.ino,
                append: flags & libc::O_APPEND != 0,
            },
        );
        Ok(fh)
    }

    /// Opens a file: its handle, and whether the kernel's view of it is stale.
    /// When another client changed the file since the kernel last got its
    /// attributes, the kernel's cached size stays wrong for up to the attribute
    /// TTL and would cut reads short; such a handle bypasses the page cache
    /// (direct I/O), so reads end where the version read really ends.
    pub fn open(&self, ino: u64, flags: i32) -> FsResult<(u64, bool)> {
        let ino = self.to_server(ino);
        let known = lock(&self.tables)
            .nodes
            .get(&ino)
            .map(|(n, _)| (n.content.clone(), n.size));
        let node = self.node(ino, true)?;
        let stale =
            known.is_some_and(|(content, size)| content != node.content || size != node.size);
        Ok((self.open_node(&node, flags)?, stale))
    }

    fn handle(&self, fh: u64) -> FsResult<(i64, bool, Arc<OpenFile>)> {
        let t = lock(&self.tables);
        let h = t.handles.get(&fh).ok_or(Errno(libc::EBADF))?;
        let file = t.files.get(&h.ino).cloned().ok_or(Errno(libc::EBADF))?;
        Ok((h.ino, h.append, file))
    }

    /// The file's working copy, made on first use from its current server version.
    fn working_copy<'a>(&self, ino: i64, file: &'a mut FileState) -> FsResult<&'a mut Shadow> {
        if file.shadow.is_none() {
            let chunks = match &file.content {
                Some(_) => self.block_on(self.remote.manifest(ino))?.chunks,
                None => Vec::new(),
            };
            let shadow = Shadow::create(
                &self.journal_dir(),
                ino,
                file.content.clone(),
                chunks,
                file.size,
                now_ns(),
            )
            .map_err(io_errno)?;
            file.shadow = Some(shadow);
        }
        file.shadow.as_mut().ok_or(Errno(libc::EIO))
    }

    pub fn read(&self, fh: u64, offset: u64, size: u32) -> FsResult<Bytes> {
        let (ino, _, file) = self.handle(fh)?;
        let mut f = lock(&file.state);
        let file_size = f.shadow.as_ref().map_or(f.size, Shadow::size);
        if offset >= file_size {
            return Ok(Bytes::new());
        }
        let end = (offset + u64::from(size)).min(file_size);
        if let Some(shadow) = f.shadow.as_mut() {
            // Bring missing bytes in from the version the copy started from, then read locally.
            for (a, b) in shadow.record.present.gaps(offset, end) {
                let base = shadow.record.base.clone();
                let bytes = match &base {
                    Some(base) => self.read_blocks(ino, base, a, b)?,
                    None => Bytes::from(vec![0u8; (b - a) as usize]),
                };
                shadow.fill(a, &bytes).map_err(io_errno)?;
            }
            let mut buf = vec![0u8; (end - offset) as usize];
            shadow.read_at(&mut buf, offset).map_err(io_errno)?;
            return Ok(Bytes::from(buf));
        }
        let Some(content) = f.content.clone() else {
            return Ok(Bytes::from(vec![0u8; (end - offset) as usize]));
        };
        let sequential = offset == f.next_sequential;
        f.next_sequential = end;
        drop(f);
        let bytes = self.read_blocks(ino, &content, offset, end)?;
        if sequential {
            self.read_ahead(ino, &content, end, file_size);
        }
        Ok(bytes)
    }

    /// Bytes [start, end) of `content`, through the block cache.
    fn read_blocks(&self, ino: i64, content: &str, start: u64, end: u64) -> FsResult<Bytes> {
        let first = start / BLOCK;
        let last = (end - 1) / BLOCK;
        let mut out = Vec::with_capacity((end - start) as usize);
        for index in first..=last {
            let block = self.block(ino, content, index)?;
            let block_start = index * BLOCK;
            let from = start.max(block_start) - block_start;
            let to = (end.min(block_start + block.len() as u64)).saturating_sub(block_start);
            if from >= to {
                break;
            }
            out.extend_from_slice(&block[from as usize..to as usize]);
        }
        Ok(Bytes::from(out))
    }

    fn block(&self, ino: i64, content: &str, index: u64) -> FsResult<Bytes> {
        let key = (content.to_string(), index);
        let fetched = self.block_on(self.blocks.get_or_fetch(key.clone(), || {
            fetch_block(self.remote.clone(), self.disk.clone(), ino, key)
        }));
        match fetched {
            Ok(b) => Ok(b),
            Err(RemoteError::Refused { code, .. }) if code == "range_not_satisfiable" => {
                Ok(Bytes::new())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Fetches the next blocks of a sequential reader in the background.
    fn read_ahead(&self, ino: i64, content: &str, from: u64, size: u64) {
        let first = from.div_ceil(BLOCK);
        for index in first..first + self.opts.readahead_blocks {
            if index * BLOCK >= size {
                break;
            }
            let key = (content.to_string(), index);
            if self.blocks.contains(&key) {
                continue;
            }
            let (blocks, remote, disk) =
                (self.blocks.clone(), self.remote.clone(), self.disk.clone());
            self.rt.spawn(async move {
                let _ = blocks
                    .get_or_fetch(key.clone(), || fetch_block(remote, disk, ino, key))
                    .await;
            });
        }
    }

    pub fn write(&self, fh: u64, offset: u64, data: &[u8]) -> FsResult<u32> {
        let (ino, append, file) = self.handle(fh)?;
        let mut f = lock(&file.state);
        let shadow = self.working_copy(ino, &mut f)?;
        let offset = if append { shadow.size() } else { offset };
        let first_write = !shadow.is_dirty();
        shadow.write(offset, data, now_ns()).map_err(io_errno)?;
        if first_write {
            // Journal the pending write so a restarted panfs knows about it.
            shadow.persist().map_err(io_errno)?;
        }
        f.size = f.shadow.as_ref().map_or(f.size, Shadow::size);
        Ok(data.len() as u32)
    }

    /// Sends the file's pending writes and waits for the server's commit.
    fn sync_file(&self, ino: i64, file: &OpenFile) -> FsResult<()> {
        let mut f = lock(&file.state);
        let Some(shadow) = f.shadow.as_mut() else {
            return Ok(());
        };
        if !shadow.is_dirty() {
            return Ok(());
        }
        shadow.persist().map_err(io_errno)?;
        match self.block_on(upload(self.remote.as_ref(), shadow, &self.stats)) {
            Ok(node) => {
                f.content = node.content.clone();
                f.size = node.size as u64;
                f.committed_ctime = node.ctime;
                f.failed = false;
                drop(f);
                self.remember(&node);
                Ok(())
            }
            // The file was removed meanwhile: its open handles keep the local copy,
            // and nothing is sent (as on a local disk, the data dies with the last close).
            Err(RemoteError::Refused { code, .. }) if code == "not_found" => {
                f.unlinked = true;
                if let Some(shadow) = f.shadow.as_mut() {
                    shadow.forget_journal();
                }
                Ok(())
            }
            Err(e) => {
                f.failed = true;
                let _ = self.writeback_tx.send(ino);
                Err(e.into())
            }
        }
    }

    pub fn flush(&self, fh: u64) -> FsResult<()> {
        if self.opts.writeback {
            let (_, _, file) = self.handle(fh)?;
            let f = lock(&file.state);
            if let Some(shadow) = &f.shadow {
                shadow.persist().map_err(io_errno)?;
            }
            return Ok(());
        }
        let (ino, _, file) = self.handle(fh)?;
        self.sync_file(ino, &file)
    }

    pub fn fsync(&self, fh: u64) -> FsResult<()> {
        let (ino, _, file) = self.handle(fh)?;
        self.sync_file(ino, &file)
    }

    pub fn release(&self, fh: u64) {
        let mut t = lock(&self.tables);
        let Some(h) = t.handles.remove(&fh) else {
            return;
        };
        let Some(file) = t.files.get(&h.ino).cloned() else {
            return;
        };
        if file.opens.fetch_sub(1, Ordering::SeqCst) > 1 {
            return;
        }
        // Last close. A file busy uploading is cleaned up by whoever uploads it.
        let Ok(mut f) = file.state.try_lock() else {
            return;
        };
        let dirty = !f.unlinked && f.shadow.as_ref().is_some_and(Shadow::is_dirty);
        if dirty {
            // Written but not sent (write-back mode, or a failed upload): the worker sends it.
            let _ = self.writeback_tx.send(h.ino);
            return;
        }
        if let Some(s) = f.shadow.take() {
            s.discard();
        }
        drop(f);
        t.files.remove(&h.ino);
    }

    // ---- write-back ----

    /// Files with writes not yet committed, and their bytes.
    pub fn pending(&self) -> (usize, u64) {
        let files: Vec<_> = lock(&self.tables).files.values().cloned().collect();
        let mut count = 0;
        let mut bytes = 0;
        for f in files {
            if let Ok(f) = f.state.try_lock()
                && let Some(s) = &f.shadow
                && s.is_dirty()
            {
                count += 1;
                bytes += s.record.dirty.total();
            }
        }
        (count, bytes)
    }

    /// Bytes of blocks cached in memory and on disk.
    pub fn cache_bytes(&self) -> (u64, u64) {
        (self.blocks.used_bytes(), self.disk.used_bytes())
    }

    /// Uploads one file that has pending writes; true when it is clean afterwards.
    fn write_back(&self, ino: i64) -> bool {
        let Some(file) = lock(&self.tables).files.get(&ino).cloned() else {
            return true;
        };
        let ok = self.sync_file(ino, &file).is_ok();
        if ok {
            let mut t = lock(&self.tables);
            if file.opens.load(Ordering::SeqCst) == 0
                && let Ok(mut f) = file.state.try_lock()
            {
                if let Some(s) = f.shadow.take() {
                    s.discard();
                }
                drop(f);
                t.files.remove(&ino);
            }
        }
        ok
    }

    /// Picks up journaled writes a previous panfs left, to be sent again.
    pub fn recover_journal(&self) -> usize {
        let inos = Shadow::journaled(&self.journal_dir());
        for &ino in &inos {
            match Shadow::open(&self.journal_dir(), ino) {
                Ok(shadow) => {
                    let file = FileState {
                        content: shadow.record.base.clone(),
                        size: shadow.size(),
                        shadow: Some(shadow),
                        next_sequential: 0,
                        failed: true,
                        unlinked: false,
                        committed_ctime: 0,
                    };
                    lock(&self.tables).files.insert(ino, OpenFile::new(file));
                    let _ = self.writeback_tx.send(ino);
                }
                Err(e) => tracing::warn!(ino, error = %e, "unreadable journal entry"),
            }
        }
        inos.len()
    }

    /// The write-back worker: sends files queued by release, retrying with backoff.
    pub fn start_writeback(self: &Arc<Self>) {
        let Some(mut rx) = lock(&self.writeback_rx).take() else {
            return;
        };
        let fs = self.clone();
        std::thread::Builder::new()
            .name("panfs-writeback".into())
            .spawn(move || {
                let mut delay = Duration::from_millis(200);
                while let Some(ino) = fs.rt.block_on(rx.recv()) {
                    if fs.write_back(ino) {
                        delay = Duration::from_millis(200);
                    } else {
                        tracing::warn!(ino, "write-back failed; will retry");
                        std::thread::sleep(delay);
                        delay = (delay * 2).min(Duration::from_secs(30));
                        let _ = fs.writeback_tx.send(ino);
                    }
                }
            })
            .ok();
    }

    /// Sends every pending write (before unmount); returns how many files failed.
    pub fn flush_all(&self) -> usize {
        let inos: Vec<i64> = lock(&self.tables).files.keys().copied().collect();
        inos.into_iter()
            .filter(|&ino| !self.write_back(ino))
            .count()
    }
}
