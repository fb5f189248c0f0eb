//! Recently read blocks on local disk, within a size limit, evicting the least
//! recently used. It outlives the mount, so files read recently stay local
//! across remounts and while the server is unreachable.
//!
//! The blocks of a content fetched from the server go into one sparse file
//! per content, each at its place (`CONTENT.part`); an evicted block is
//! punched out. One file per block, as before, cost an inode made and another
//! freed per 256 KiB read, which on ext4 was most of panfs's CPU time for a
//! cold read.
//!
//! Besides blocks fetched from the server, it keeps whole contents: the
//! working copy of a file written here becomes clean cached content once its
//! upload commits (moved in, not copied), so the file is read back from local
//! disk until it is evicted. Everything is keyed by content hash, so a cached
//! byte can never be another version's.
//!
//! A block written when the mount died may be torn, and nothing tells it
//! apart from a whole one. So the part files are kept across a restart only
//! when the mount before closed the cache (`close`), which syncs them and
//! leaves the `clean` mark; otherwise they are dropped. Whole contents are
//! moved in complete and always kept.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, RwLock};

use bytes::Bytes;
use lru::LruCache;

use super::blocks::{BLOCK, BlockKey};
use super::bufs::BLOCKS;

/// The index under which a whole content is kept (blocks have their number).
const WHOLE: u64 = u64::MAX;
/// Left by `close`: the part files hold only whole blocks.
const CLEAN: &str = "clean";

pub struct DiskCache {
    dir: PathBuf,
    limit: u64,
    /// Shared to read or write a block, exclusive to punch one out or move a
    /// whole content out: no reader sees a block's bytes go mid-read.
    io: RwLock<()>,
    index: Mutex<Index>,
    /// Set by `close`: nothing more is written, so the clean mark stays true.
    closed: AtomicBool,
}

struct Index {
    /// Block -> its size; the total is `used`.
    lru: LruCache<BlockKey, u64>,
    used: u64,
    /// How many blocks each content's part file holds; it goes with its last.
    parts: HashMap<String, usize>,
}

impl Index {
    fn add(&mut self, key: BlockKey, size: u64) {
        match self.lru.put(key.clone(), size) {
            Some(old) => self.used -= old,
            None if key.1 != WHOLE => *self.parts.entry(key.0).or_default() += 1,
            None => {}
        }
        self.used += size;
    }

    /// Drops a block from the index: whether it was its content's last.
    fn remove(&mut self, key: &BlockKey) -> bool {
        let Some(size) = self.lru.pop(key) else {
            return false;
        };
        self.used -= size;
        if key.1 == WHOLE {
            return false;
        }
        let left = self.parts.get_mut(&key.0).map(|n| {
            *n -= 1;
            *n
        });
        if left == Some(0) {
            self.parts.remove(&key.0);
        }
        left == Some(0)
    }
}

/// What a file in the cache holds.
#[derive(Debug, PartialEq)]
enum Kind {
    Whole,
    Part,
}

fn file_name(content: &str, kind: Kind) -> String {
    match kind {
        Kind::Whole => format!("{content}.all"),
        Kind::Part => format!("{content}.part"),
    }
}

/// `CONTENT.all` or `CONTENT.part`. (Files of an older panfs, one per block,
/// do not parse and are removed at open.)
fn parse_name(name: &str) -> Option<(String, Kind)> {
    let (content, kind) = name.rsplit_once('.')?;
    if !panproto::is_sha256_hex(content) {
        return None;
    }
    let kind = match kind {
        "all" => Kind::Whole,
        "part" => Kind::Part,
        _ => return None,
    };
    Some((content.to_string(), kind))
}

impl DiskCache {
    /// Opens the cache in `dir`, taking in what a previous mount left.
    pub fn open(dir: &Path, limit: u64) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        // Taken away now: if this mount dies, its part files are not trusted.
        let clean = std::fs::remove_file(dir.join(CLEAN)).is_ok();
        let mut index = Index {
            lru: LruCache::unbounded(),
            used: 0,
            parts: HashMap::new(),
        };
        for entry in std::fs::read_dir(dir)?.flatten() {
            let name = entry.file_name();
            let kept = match (name.to_str().and_then(parse_name), entry.metadata()) {
                (Some((content, Kind::Whole)), Ok(meta)) => {
                    index.add((content, WHOLE), meta.len());
                    true
                }
                (Some((content, Kind::Part)), Ok(_)) if clean => {
                    let blocks = whole_blocks(&entry.path()).unwrap_or_default();
                    for &(block, size) in &blocks {
                        index.add((content.clone(), block), size);
                    }
                    !blocks.is_empty()
                }
                // Leftover temporary files, old block files, untrusted parts.
                _ => false,
            };
            if !kept {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        let cache = Self {
            dir: dir.to_path_buf(),
            limit,
            io: RwLock::new(()),
            index: Mutex::new(index),
            closed: AtomicBool::new(false),
        };
        cache.evict();
        Ok(cache)
    }

    /// Makes the part files durable and marks them whole, for the next mount.
    pub fn close(&self) {
        let Ok(_io) = self.io.write() else {
            return;
        };
        self.closed.store(true, Ordering::SeqCst);
        let contents: Vec<String> = match self.index.lock() {
            Ok(index) => index.parts.keys().cloned().collect(),
            Err(_) => return,
        };
        for content in contents {
            let path = self.dir.join(file_name(&content, Kind::Part));
            if let Err(e) = File::open(&path).and_then(|f| f.sync_all()) {
                tracing::warn!(path = %path.display(), error = %e, "cache file not synced; the cache starts empty next time");
                return;
            }
        }
        let marked = File::create(self.dir.join(CLEAN))
            .and_then(|f| f.sync_all())
            .and_then(|()| File::open(&self.dir)?.sync_all());
        if let Err(e) = marked {
            tracing::warn!(error = %e, "cache not marked clean; it starts empty next time");
        }
    }

    pub fn used_bytes(&self) -> u64 {
        self.index.lock().map(|i| i.used).unwrap_or(0)
    }

    /// Whether the block is kept here (as a block, or in its whole content),
    /// without reading it or counting it as used.
    pub fn contains(&self, key: &BlockKey) -> bool {
        let whole = (key.0.clone(), WHOLE);
        self.index
            .lock()
            .is_ok_and(|index| index.lru.contains(key) || index.lru.contains(&whole))
    }

    pub fn get(&self, key: &BlockKey) -> Option<Bytes> {
        self.read(key, 0, BLOCK)
    }

    /// Bytes [from, to) of a block (offsets in the block; fewer past the end
    /// of its content), read from disk alone: a 4 KiB read of a cached block
    /// reads 4 KiB, not the block.
    pub fn read(&self, key: &BlockKey, from: u64, to: u64) -> Option<Bytes> {
        let _io = self.io.read().ok()?;
        let whole = (key.0.clone(), WHOLE);
        let (block_size, whole_size) = {
            let mut index = self.index.lock().ok()?;
            (index.lru.get(key).copied(), index.lru.get(&whole).copied())
        };
        let start = key.1.saturating_mul(BLOCK);
        let to = to.min(BLOCK);
        let from = from.min(to);
        if let Some(size) = block_size {
            // The block's `size` bytes are at `start` in its content's part file.
            let (a, b) = (from.min(size), to.min(size));
            let path = self.dir.join(file_name(&key.0, Kind::Part));
            match read_at(&path, start + a, b - a) {
                Ok(data) => return Some(data),
                Err(_) => self.forget(key),
            }
        }
        let size = whole_size?;
        // The whole content is `size` bytes: empty past its end, as the server answers.
        let (a, b) = ((start + from).min(size), (start + to).min(size));
        let path = self.dir.join(file_name(&key.0, Kind::Whole));
        match read_at(&path, a, b - a) {
            Ok(data) => Some(data),
            Err(_) => {
                self.forget(&whole);
                None
            }
        }
    }

    /// Takes the file at `path`, which holds all of `content` (`size` bytes),
    /// as that content's cached copy: moved in, not copied. False when it was
    /// not taken (the cache holds that content already, it is larger than the
    /// cache, or on another file system); the caller then disposes of it.
    pub fn adopt(&self, content: &str, path: &Path, size: u64) -> bool {
        if size > self.limit {
            return false;
        }
        let key = (content.to_string(), WHOLE);
        // Held already (another file with the same bytes): that copy stays,
        // and this one is not taken, rather than replacing it for nothing.
        if let Ok(mut index) = self.index.lock()
            && index.lru.get(&key) == Some(&size)
        {
            return false;
        }
        if std::fs::rename(path, self.dir.join(file_name(content, Kind::Whole))).is_err() {
            return false;
        }
        self.record(key, size);
        true
    }

    /// Moves the whole cached copy of `content` (`size` bytes) out to `to`,
    /// for a file that becomes a working copy again: false when the cache
    /// holds no whole copy of it (or it could not be moved).
    pub fn take_whole(&self, content: &str, size: u64, to: &Path) -> bool {
        let key = (content.to_string(), WHOLE);
        // No reader of the copy is mid-read when it starts to change.
        let Ok(_io) = self.io.write() else {
            return false;
        };
        let Ok(mut index) = self.index.lock() else {
            return false;
        };
        if index.lru.peek(&key) != Some(&size) {
            return false;
        }
        if std::fs::rename(self.dir.join(file_name(content, Kind::Whole)), to).is_err() {
            return false;
        }
        index.remove(&key);
        true
    }

    /// Keeps a block; failures (a full disk) only mean it is not cached.
    pub fn put(&self, key: &BlockKey, data: &[u8]) {
        if self.limit == 0 || data.len() as u64 > self.limit {
            return;
        }
        {
            let Ok(_io) = self.io.read() else {
                return;
            };
            if self.closed.load(Ordering::SeqCst) {
                return;
            }
            let path = self.dir.join(file_name(&key.0, Kind::Part));
            let Ok(file) = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
            else {
                return;
            };
            if file.write_all_at(data, key.1 * BLOCK).is_err() {
                // Part of it may be there: leave no block that looks whole.
                let _ = punch(&file, key.1);
                return;
            }
            if let Ok(mut index) = self.index.lock() {
                index.add(key.clone(), data.len() as u64);
            }
        }
        self.evict();
    }

    /// Counts a file just stored under `key`, then evicts down to the limit.
    fn record(&self, key: BlockKey, size: u64) {
        if let Ok(mut index) = self.index.lock() {
            index.add(key, size);
        }
        self.evict();
    }

    fn forget(&self, key: &BlockKey) {
        if let Ok(mut index) = self.index.lock() {
            index.remove(key);
        }
    }

    fn evict(&self) {
        if self
            .index
            .lock()
            .is_ok_and(|index| index.used <= self.limit)
        {
            return;
        }
        let Ok(_io) = self.io.write() else {
            return;
        };
        let Ok(mut index) = self.index.lock() else {
            return;
        };
        while index.used > self.limit {
            let Some((key, _)) = index.lru.peek_lru().map(|(k, s)| (k.clone(), *s)) else {
                break;
            };
            let last = index.remove(&key);
            if key.1 == WHOLE {
                let _ = std::fs::remove_file(self.dir.join(file_name(&key.0, Kind::Whole)));
                continue;
            }
            let path = self.dir.join(file_name(&key.0, Kind::Part));
            let punched = OpenOptions::new()
                .write(true)
                .open(&path)
                .and_then(|file| punch(&file, key.1));
            if last || punched.is_err() {
                // The file goes, and with it every block of it still counted.
                let _ = std::fs::remove_file(&path);
                let rest: Vec<BlockKey> = index
                    .lru
                    .iter()
                    .filter(|(k, _)| k.0 == key.0 && k.1 != WHOLE)
                    .map(|(k, _)| k.clone())
                    .collect();
                rest.iter().for_each(|k| {
                    index.remove(k);
                });
            }
        }
    }
}

/// Frees block `index` of a part file; reads of it then find a hole. The
/// whole block's range, even past the end of the file, so that no partly
/// filled file-system block is left of it.
fn punch(file: &File, index: u64) -> std::io::Result<()> {
    // SAFETY: the descriptor is open for the duration of the call.
    let done = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            (index * BLOCK) as libc::off_t,
            BLOCK as libc::off_t,
        )
    };
    if done != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn read_at(path: &Path, start: u64, len: u64) -> std::io::Result<Bytes> {
    let mut data = BLOCKS.take();
    data.resize(len as usize, 0);
    File::open(path)?.read_exact_at(&mut data, start)?;
    Ok(BLOCKS.freeze(data))
}

/// The blocks a part file holds, (index, size), found from where its data is
/// (`SEEK_DATA`, `SEEK_HOLE`): each block's whole range, or, for the last block
/// of a content, everything to the end of the file.
fn whole_blocks(path: &Path) -> std::io::Result<Vec<(u64, u64)>> {
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    let fd = file.as_raw_fd();
    let mut blocks = Vec::new();
    let mut at = 0u64;
    while at < len {
        // SAFETY: the descriptor is open for the duration of the calls.
        let data = unsafe { libc::lseek(fd, at as libc::off_t, libc::SEEK_DATA) };
        if data < 0 {
            break; // ENXIO: no data past `at`
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
        if hole < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let (data, hole) = (data as u64, hole as u64);
        let mut block = data.div_ceil(BLOCK);
        while block * BLOCK < hole {
            let size = (hole - block * BLOCK).min(BLOCK);
            if size == BLOCK || hole == len {
                blocks.push((block, size));
            }
            block += 1;
        }
        at = hole;
    }
    Ok(blocks)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u64) -> BlockKey {
        ("a".repeat(64), i)
    }

    /// Block `i` of a content whose last block is block 4, short.
    fn block(i: u64) -> Vec<u8> {
        let len = if i == 4 { 1000 } else { BLOCK as usize };
        (0..len).map(|n| (n as u64 * 7 + i) as u8).collect()
    }

    fn files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("list")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn keeps_within_its_limit_and_survives_a_closed_reopen() {
        let dir = tempfile::tempdir().expect("tmp");
        let limit = 2 * BLOCK + 1000;
        let cache = DiskCache::open(dir.path(), limit).expect("open");
        for i in 0..5 {
            cache.put(&key(i), &block(i));
        }
        assert!(cache.used_bytes() <= limit);
        assert!(cache.get(&key(1)).is_none(), "an old block was evicted");
        assert_eq!(cache.get(&key(4)).as_deref(), Some(&block(4)[..]));
        // A part of a block is read alone; it ends where the block does.
        assert_eq!(cache.read(&key(3), 5, 9).as_deref(), Some(&block(3)[5..9]));
        assert_eq!(
            cache.read(&key(4), 10, 4096).as_deref(),
            Some(&block(4)[10..])
        );
        assert_eq!(
            files(dir.path()),
            [format!("{}.part", "a".repeat(64))],
            "one file for all of a content's blocks"
        );
        cache.close();
        drop(cache);
        let again = DiskCache::open(dir.path(), limit).expect("reopen");
        assert_eq!(again.used_bytes(), limit);
        for i in 2..5 {
            assert_eq!(again.get(&key(i)).as_deref(), Some(&block(i)[..]), "{i}");
        }
        assert!(again.get(&key(1)).is_none(), "an evicted block stays out");
    }

    #[test]
    fn blocks_of_a_mount_that_died_are_not_trusted_after() {
        let dir = tempfile::tempdir().expect("tmp");
        let cache = DiskCache::open(dir.path(), 8 << 20).expect("open");
        cache.put(&key(0), &block(0));
        cache.close();
        drop(cache);
        // This mount dies: it never closes the cache.
        let dying = DiskCache::open(dir.path(), 8 << 20).expect("reopen");
        assert!(dying.get(&key(0)).is_some());
        dying.put(&key(1), &block(1));
        drop(dying);
        let after = DiskCache::open(dir.path(), 8 << 20).expect("after");
        assert_eq!(after.used_bytes(), 0);
        assert!(after.get(&key(0)).is_none() && after.get(&key(1)).is_none());
        assert!(files(dir.path()).is_empty(), "{:?}", files(dir.path()));
    }

    #[test]
    fn a_contents_file_goes_with_its_last_block() {
        let dir = tempfile::tempdir().expect("tmp");
        let cache = DiskCache::open(dir.path(), BLOCK).expect("open");
        cache.put(&key(0), &block(0));
        let other = ("b".repeat(64), 0);
        cache.put(&other, &block(0));
        assert!(cache.get(&key(0)).is_none());
        assert_eq!(files(dir.path()), [format!("{}.part", "b".repeat(64))]);
        assert_eq!(cache.get(&other).as_deref(), Some(&block(0)[..]));
    }

    #[test]
    fn an_adopted_content_serves_its_blocks_and_outlives_a_reopen() {
        let dir = tempfile::tempdir().expect("tmp");
        let cache = DiskCache::open(&dir.path().join("cache"), 8 << 20).expect("open");
        let size = BLOCK + 5;
        let bytes: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let copy = dir.path().join("copy");
        std::fs::write(&copy, &bytes).expect("write");
        let content = "b".repeat(64);
        assert!(cache.adopt(&content, &copy, size));
        assert!(!copy.exists(), "moved, not copied");
        let block = |c: &DiskCache, i| c.get(&(content.clone(), i)).expect("cached");
        assert_eq!(block(&cache, 0), bytes[..BLOCK as usize]);
        assert_eq!(block(&cache, 1), bytes[BLOCK as usize..]);
        assert!(block(&cache, 2).is_empty(), "past the end");
        let part = cache.read(&(content.clone(), 1), 2, 100).expect("part");
        assert_eq!(part, bytes[BLOCK as usize + 2..], "to the content's end");
        let part = cache.read(&(content.clone(), 0), 7, 11).expect("part");
        assert_eq!(part, bytes[7..11]);
        assert!(
            cache.get(&key(0)).is_none(),
            "another content is not served"
        );
        drop(cache);
        let again = DiskCache::open(&dir.path().join("cache"), 8 << 20).expect("reopen");
        assert_eq!(again.used_bytes(), size);
        assert_eq!(block(&again, 1), bytes[BLOCK as usize..]);
    }

    #[test]
    fn a_content_larger_than_the_cache_is_not_adopted() {
        let dir = tempfile::tempdir().expect("tmp");
        let cache = DiskCache::open(&dir.path().join("cache"), 100).expect("open");
        let copy = dir.path().join("copy");
        std::fs::write(&copy, [1u8; 200]).expect("write");
        assert!(!cache.adopt(&"c".repeat(64), &copy, 200));
        assert_eq!(cache.used_bytes(), 0);
    }
}
