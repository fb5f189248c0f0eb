//! The file-system logic, free of fuser types. Calls arrive on FUSE worker
//! threads and run the async remote on a shared tokio runtime. Each concern has
//! its module: attributes, names, directories, open files, the read path, the
//! write path, write-back and conflict copies. No lock is held across a request
//! to the server.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use panproto::wire::{Node, NodeKind};
use tokio::runtime::Handle;

use crate::cache::blocks::BlockCache;
use crate::cache::disk::DiskCache;
use crate::cache::records::CopyRecords;
use crate::remote::Remote;
use crate::replica::Replica;
use crate::sync::Syncer;
use crate::upload::TransferStats;

mod alloc;
mod attr;
pub(crate) use attr::now_ns;
mod conflict;
mod copy;
mod dirs;
mod error;
mod fetch;
mod files;
mod follow;
mod inline;
mod local;
mod names;
mod passthrough;
mod read;
mod stream;
mod sync;
#[cfg(test)]
mod tests;
mod write;
mod writeback;
mod xattr;

pub use alloc::Fallocate;
pub use attr::{Attr, from_time};
pub use error::{FsError, FsResult};
pub use follow::{FeedStatus, KernelCache};
pub use names::AttrChange;
pub use passthrough::{Io, PassthroughStatus};

pub use files::PageCache;
use files::{Handle as FileHandle, OpenFile};
use writeback::RetryQueue;

/// The inode number FUSE reserves for the root.
pub const ROOT: u64 = 1;

#[derive(Debug, Clone)]
pub struct FsOptions {
    /// How long the kernel may cache attributes and names while the change
    /// feed is followed (changes made elsewhere invalidate them at once).
    pub attr_ttl: Duration,
    pub entry_ttl: Duration,
    /// The kernel's and panfs's cache time while the feed cannot be followed.
    pub fallback_ttl: Duration,
    pub writeback: bool,
    /// Local-first: namespace changes are journaled and synced in batches
    /// (off: the strict mode, every call waits for the server).
    pub local_first: bool,
    /// How long `fsync` and the other durability points wait for the server.
    pub sync_timeout: Duration,
    /// Clean cached content (safe to delete).
    pub cache_dir: PathBuf,
    /// Unsent writes: the journal and the working copies (never delete).
    pub state_dir: PathBuf,
    pub memory_cache_bytes: u64,
    /// Disk space for recently read blocks.
    pub disk_cache_bytes: u64,
    /// The widest readahead window of a sequential reader, in bytes.
    pub readahead_max: u64,
    /// FUSE passthrough for files wholly on local disk, where the kernel can.
    pub passthrough: bool,
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

/// The drive's size as `statfs` gives it, in blocks of `StatFs::BLOCK` bytes.
pub struct StatFs {
    pub blocks: u64,
    pub free_blocks: u64,
    pub files: u64,
    pub free_files: u64,
}

impl StatFs {
    pub const BLOCK: u64 = 4096;
}

struct Tables {
    /// Nodes and names seen (see `replica`).
    replica: Replica,
    /// Files changed elsewhere while open here, with the attributes the kernel
    /// knows: those stay until the last close, so an open reader keeps its
    /// version's size (see `follow`).
    deferred: HashMap<i64, Node>,
    files: HashMap<i64, Arc<OpenFile>>,
    handles: HashMap<u64, Arc<FileHandle>>,
    dirs: HashMap<u64, Arc<dirs::Listing>>,
    /// Names the server said were missing, by directory not listed here
    /// (see `names::LIST_AFTER_MISSES`).
    misses: HashMap<i64, u32>,
}

pub struct PanFs {
    rt: Handle,
    remote: Arc<dyn Remote>,
    root: i64,
    opts: FsOptions,
    tables: Mutex<Tables>,
    /// The block caches and the readahead budget, for the read path.
    fetcher: fetch::Fetcher,
    /// The working copies' records (their bytes sit beside them).
    copies: Arc<CopyRecords>,
    next_fh: AtomicU64,
    pub stats: Arc<TransferStats>,
    pub passthrough: PassthroughStatus,
    /// Files for the write-back worker: a thread of its own, which waits
    /// on this queue without the runtime (so it ends quietly as it shuts down).
    writeback_tx: std::sync::mpsc::Sender<i64>,
    writeback_rx: Mutex<Option<std::sync::mpsc::Receiver<i64>>>,
    retries: Mutex<RetryQueue>,
    /// Tells the kernel to forget what changed elsewhere (set once mounted).
    kernel: OnceLock<Arc<dyn KernelCache>>,
    feed: Mutex<FeedStatus>,
    /// The journal and the syncer's state, in local-first mode.
    sync: Option<Arc<Syncer>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a lock must not take the whole mount down.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn check_name(name: &str) -> FsResult<()> {
    panproto::validate_name(name).map_err(|e| match e {
        panproto::NameError::TooLong => FsError::new(libc::ENAMETOOLONG, "name too long"),
        _ => FsError::new(libc::EINVAL, "invalid name"),
    })
}

/// The node kind `mknod` makes for a mode's file type.
fn mknod_kind(mode: u32) -> FsResult<NodeKind> {
    match mode & libc::S_IFMT {
        libc::S_IFREG | 0 => Ok(NodeKind::File),
        libc::S_IFIFO => Ok(NodeKind::Fifo),
        libc::S_IFSOCK => Ok(NodeKind::Socket),
        libc::S_IFCHR => Ok(NodeKind::CharDev),
        libc::S_IFBLK => Ok(NodeKind::BlockDev),
        _ => Err(FsError::new(libc::EINVAL, "unknown file type")),
    }
}

impl PanFs {
    pub fn new(
        rt: Handle,
        remote: Arc<dyn Remote>,
        root: i64,
        opts: FsOptions,
    ) -> std::io::Result<Arc<Self>> {
        let (tx, rx) = std::sync::mpsc::channel();
        let disk = DiskCache::open(&opts.cache_dir.join("blocks"), opts.disk_cache_bytes)?;
        let copies = Arc::new(CopyRecords::open(&opts.state_dir.join("journal"))?);
        let saved = crate::replica::replica_path(&opts.cache_dir);
        let mut replica = Replica::load(&saved, root, opts.fallback_ttl)
            .unwrap_or_else(|| Replica::new(opts.fallback_ttl));
        let sync = if opts.local_first {
            let syncer = Syncer::open(&opts.state_dir).map_err(std::io::Error::other)?;
            // What a previous panfs journaled shows at once, and is sent again.
            for record in syncer.left_over() {
                replica.apply_local(&record.op.op, record.seq, record.op.at);
            }
            Some(Arc::new(syncer))
        } else {
            None
        };
        let stats: Arc<TransferStats> = Arc::default();
        let fetcher = fetch::Fetcher {
            remote: remote.clone(),
            blocks: Arc::new(BlockCache::new(opts.memory_cache_bytes)),
            disk: Arc::new(disk),
            budget: Arc::new(tokio::sync::Semaphore::new(
                (fetch::IN_FLIGHT_MAX / crate::cache::blocks::BLOCK) as usize,
            )),
            stats: stats.clone(),
        };
        Ok(Arc::new(Self {
            rt,
            remote,
            root,
            fetcher,
            copies,
            opts,
            tables: Mutex::new(Tables {
                replica,
                deferred: HashMap::new(),
                files: HashMap::new(),
                handles: HashMap::new(),
                dirs: HashMap::new(),
                misses: HashMap::new(),
            }),
            next_fh: AtomicU64::new(1),
            stats,
            passthrough: PassthroughStatus::default(),
            writeback_tx: tx,
            writeback_rx: Mutex::new(Some(rx)),
            retries: Mutex::default(),
            kernel: OnceLock::new(),
            feed: Mutex::default(),
            sync,
        }))
    }

    pub fn to_server(&self, ino: u64) -> i64 {
        if ino == ROOT { self.root } else { ino as i64 }
    }

    fn to_fuse(&self, ino: i64) -> u64 {
        if ino == self.root { ROOT } else { ino as u64 }
    }

    fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// As `block_on`, for a read's fetches: run on a current-thread runtime
    /// of the calling thread's own, so a block's request, its socket and its
    /// answer stay on the FUSE thread that waits for them (handed to the
    /// shared runtime's threads and back, a block cost twice what its
    /// request did). What the future spawns goes to the shared runtime, by
    /// name: nothing runs on this one between reads.
    fn block_on_here<F: std::future::Future>(&self, f: F) -> F::Output {
        thread_local! {
            static OWN: Option<tokio::runtime::Runtime> = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .inspect_err(|e| tracing::warn!(error = %e, "no runtime of a FUSE thread's own"))
                .ok();
        }
        OWN.with(|own| match own {
            Some(rt) => rt.block_on(f),
            None => self.rt.block_on(f),
        })
    }

    /// Leaves the disk cache for the next mount to trust (at unmount).
    pub fn close_caches(&self) {
        self.fetcher.disk.close();
    }

    /// Bytes of blocks cached in memory and on disk.
    pub fn cache_bytes(&self) -> (u64, u64) {
        (
            self.fetcher.blocks.used_bytes(),
            self.fetcher.disk.used_bytes(),
        )
    }
}
