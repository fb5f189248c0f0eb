//! Recently read blocks of file contents, in memory (bounded LRU). A block is
//! keyed by the content it belongs to, so a changed file never serves stale bytes.
//! Concurrent readers of one block share a single fetch.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use lru::LruCache;
use tokio::sync::OnceCell;

/// Bytes per cached block; reads and readahead fetch whole blocks.
pub const BLOCK: u64 = 1 << 20;

pub type BlockKey = (String, u64);

type Fetch = Arc<OnceCell<Bytes>>;

pub struct BlockCache {
    lru: Mutex<LruCache<BlockKey, Bytes>>,
    inflight: Mutex<HashMap<BlockKey, Fetch>>,
}

impl BlockCache {
    pub fn new(capacity_bytes: u64) -> Self {
        let blocks = (capacity_bytes / BLOCK).max(4) as usize;
        Self {
            lru: Mutex::new(LruCache::new(
                NonZeroUsize::new(blocks).unwrap_or(NonZeroUsize::MIN),
            )),
            inflight: Mutex::default(),
        }
    }

    pub fn get(&self, key: &BlockKey) -> Option<Bytes> {
        self.lru.lock().ok()?.get(key).cloned()
    }

    pub fn contains(&self, key: &BlockKey) -> bool {
        self.lru.lock().map(|l| l.contains(key)).unwrap_or(false)
    }

    pub fn used_bytes(&self) -> u64 {
        self.lru
            .lock()
            .map(|l| l.iter().map(|(_, v)| v.len() as u64).sum())
            .unwrap_or(0)
    }

    /// The block, from the cache or from `fetch` (run once however many callers wait).
    pub async fn get_or_fetch<F, Fut, E>(&self, key: BlockKey, fetch: F) -> Result<Bytes, E>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Bytes, E>>,
    {
        if let Some(hit) = self.get(&key) {
            return Ok(hit);
        }
        let cell = {
            let Ok(mut inflight) = self.inflight.lock() else {
                return fetch().await;
            };
            inflight.entry(key.clone()).or_default().clone()
        };
        let result = cell.get_or_try_init(fetch).await.cloned();
        if let Ok(mut inflight) = self.inflight.lock() {
            inflight.remove(&key);
        }
        if let Ok(bytes) = &result
            && let Ok(mut lru) = self.lru.lock()
        {
            lru.put(key, bytes.clone());
        }
        result
    }
}
