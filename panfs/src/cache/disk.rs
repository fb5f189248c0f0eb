//! Recently read blocks on local disk, within a size limit, evicting the least
//! recently used. It outlives the mount, so files read recently stay local
//! across remounts and while the server is unreachable.
//!
//! Besides blocks fetched from the server, it keeps whole contents: the
//! working copy of a file written here becomes clean cached content once its
//! upload commits (moved in, not copied), so the file is read back from local
//! disk until it is evicted. Everything is keyed by content hash, so a cached
//! byte can never be another version's.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use bytes::Bytes;
use lru::LruCache;

use super::blocks::{BLOCK, BlockKey};

/// The index under which a whole content is kept (blocks have their number).
const WHOLE: u64 = u64::MAX;

pub struct DiskCache {
    dir: PathBuf,
    limit: u64,
    /// Block -> its size; the total is `used`.
    index: Mutex<(LruCache<BlockKey, u64>, u64)>,
}

/// `CONTENT.all` for a whole content, `CONTENT.bINDEX` for a block. (Blocks
/// of another size, which an older panfs named `CONTENT.INDEX`, do not parse
/// and are removed at open.)
fn file_name(key: &BlockKey) -> String {
    match key.1 {
        WHOLE => format!("{}.all", key.0),
        index => format!("{}.b{index}", key.0),
    }
}

fn parse_name(name: &str) -> Option<BlockKey> {
    let (content, index) = name.rsplit_once('.')?;
    if !panproto::is_sha256_hex(content) {
        return None;
    }
    let index = match index {
        "all" => WHOLE,
        n => n.strip_prefix('b')?.parse().ok().filter(|&n| n != WHOLE)?,
    };
    Some((content.to_string(), index))
}

impl DiskCache {
    /// Opens the cache in `dir`, taking in the blocks a previous mount left.
    pub fn open(dir: &Path, limit: u64) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut lru = LruCache::unbounded();
        let mut used = 0;
        for entry in std::fs::read_dir(dir)?.flatten() {
            let name = entry.file_name();
            match (name.to_str().and_then(parse_name), entry.metadata()) {
                (Some(key), Ok(meta)) => {
                    used += meta.len();
                    lru.put(key, meta.len());
                }
                // Leftover temporary files of an interrupted write.
                _ => {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        let cache = Self {
            dir: dir.to_path_buf(),
            limit,
            index: Mutex::new((lru, used)),
        };
        cache.evict();
        Ok(cache)
    }

    pub fn used_bytes(&self) -> u64 {
        self.index.lock().map(|i| i.1).unwrap_or(0)
    }

    /// Whether the block is kept here (as a block, or in its whole content),
    /// without reading it or counting it as used.
    pub fn contains(&self, key: &BlockKey) -> bool {
        let whole = (key.0.clone(), WHOLE);
        self.index
            .lock()
            .is_ok_and(|index| index.0.contains(key) || index.0.contains(&whole))
    }

    pub fn get(&self, key: &BlockKey) -> Option<Bytes> {
        let whole = (key.0.clone(), WHOLE);
        let (block_known, whole_size) = {
            let mut index = self.index.lock().ok()?;
            let block_known = index.0.get(key).is_some();
            (block_known, index.0.get(&whole).copied())
        };
        if block_known {
            match std::fs::read(self.dir.join(file_name(key))) {
                Ok(data) => return Some(Bytes::from(data)),
                Err(_) => self.forget(key),
            }
        }
        let size = whole_size?;
        match read_block(&self.dir.join(file_name(&whole)), key.1, size) {
            Ok(data) => Some(data),
            Err(_) => {
                self.forget(&whole);
                None
            }
        }
    }

    /// Takes the file at `path`, which holds all of `content` (`size` bytes),
    /// as that content's cached copy: moved in, not copied. False when it was
    /// not taken (larger than the cache, or on another file system); the
    /// caller then removes it.
    pub fn adopt(&self, content: &str, path: &Path, size: u64) -> bool {
        if size > self.limit {
            return false;
        }
        let key = (content.to_string(), WHOLE);
        if std::fs::rename(path, self.dir.join(file_name(&key))).is_err() {
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
        let Ok(mut index) = self.index.lock() else {
            return false;
        };
        if index.0.peek(&key) != Some(&size) {
            return false;
        }
        if std::fs::rename(self.dir.join(file_name(&key)), to).is_err() {
            return false;
        }
        index.0.pop(&key);
        index.1 -= size;
        true
    }

    /// Keeps a block; failures (a full disk) only mean it is not cached.
    pub fn put(&self, key: &BlockKey, data: &[u8]) {
        if self.limit == 0 || data.len() as u64 > self.limit {
            return;
        }
        let path = self.dir.join(file_name(key));
        let tmp = self
            .dir
            .join(format!("{}.tmp{}", file_name(key), std::process::id()));
        if std::fs::write(&tmp, data)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .is_err()
        {
            let _ = std::fs::remove_file(&tmp);
            return;
        }
        self.record(key.clone(), data.len() as u64);
    }

    /// Counts a file just stored under `key`, then evicts down to the limit.
    fn record(&self, key: BlockKey, size: u64) {
        if let Ok(mut index) = self.index.lock() {
            if let Some(old) = index.0.put(key, size) {
                index.1 -= old;
            }
            index.1 += size;
        }
        self.evict();
    }

    fn forget(&self, key: &BlockKey) {
        if let Ok(mut index) = self.index.lock()
            && let Some(size) = index.0.pop(key)
        {
            index.1 -= size;
        }
    }

    fn evict(&self) {
        let Ok(mut index) = self.index.lock() else {
            return;
        };
        while index.1 > self.limit {
            let Some((key, size)) = index.0.pop_lru() else {
                break;
            };
            index.1 -= size;
            let _ = std::fs::remove_file(self.dir.join(file_name(&key)));
        }
    }
}

/// Block `index` of a whole content of `size` bytes kept in `path` (empty
/// past its end, as the server answers).
fn read_block(path: &Path, index: u64, size: u64) -> std::io::Result<Bytes> {
    let start = index.saturating_mul(BLOCK).min(size);
    let end = (start + BLOCK).min(size);
    let mut data = vec![0u8; (end - start) as usize];
    File::open(path)?.read_exact_at(&mut data, start)?;
    Ok(Bytes::from(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u64) -> BlockKey {
        ("a".repeat(64), i)
    }

    #[test]
    fn keeps_within_its_limit_and_survives_reopen() {
        let dir = tempfile::tempdir().expect("tmp");
        let cache = DiskCache::open(dir.path(), 3000).expect("open");
        for i in 0..5 {
            cache.put(&key(i), &[i as u8; 1000]);
        }
        assert!(cache.used_bytes() <= 3000);
        assert!(cache.get(&key(0)).is_none(), "the oldest block was evicted");
        assert_eq!(cache.get(&key(4)).as_deref(), Some(&[4u8; 1000][..]));
        drop(cache);
        let again = DiskCache::open(dir.path(), 3000).expect("reopen");
        assert_eq!(again.used_bytes(), 3000);
        assert_eq!(again.get(&key(3)).as_deref(), Some(&[3u8; 1000][..]));
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
