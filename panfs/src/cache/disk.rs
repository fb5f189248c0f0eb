//! Recently read blocks on local disk, within a size limit, evicting the least
//! recently used. It outlives the mount, so files read recently stay local
//! across remounts and while the server is unreachable.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use bytes::Bytes;
use lru::LruCache;

use super::blocks::BlockKey;

pub struct DiskCache {
    dir: PathBuf,
    limit: u64,
    /// Block -> its size; the total is `used`.
    index: Mutex<(LruCache<BlockKey, u64>, u64)>,
}

fn file_name(key: &BlockKey) -> String {
    format!("{}.{}", key.0, key.1)
}

fn parse_name(name: &str) -> Option<BlockKey> {
    let (content, index) = name.rsplit_once('.')?;
    if !panproto::is_sha256_hex(content) {
        return None;
    }
    Some((content.to_string(), index.parse().ok()?))
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

    pub fn get(&self, key: &BlockKey) -> Option<Bytes> {
        let known = self.index.lock().ok()?.0.get(key).is_some();
        if !known {
            return None;
        }
        match std::fs::read(self.dir.join(file_name(key))) {
            Ok(data) => Some(Bytes::from(data)),
            Err(_) => {
                self.forget(key);
                None
            }
        }
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
        if let Ok(mut index) = self.index.lock() {
            if let Some(old) = index.0.put(key.clone(), data.len() as u64) {
                index.1 -= old;
            }
            index.1 += data.len() as u64;
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
}
