//! Recently read blocks of file contents, in memory (bounded LRU). A block is
//! keyed by the content it belongs to, so a changed file never serves stale bytes.
//! A block being fetched is claimed: other readers of it wait for that fetch
//! (a readahead's run of blocks, or another reader's single block) instead of
//! asking the server again.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use lru::LruCache;
use tokio::sync::Notify;

/// Bytes per cached block: a random read fetches one (aligned), a sequential
/// reader's readahead fetches runs of them in one request each.
pub const BLOCK: u64 = 256 << 10;

pub type BlockKey = (String, u64);

pub struct BlockCache {
    lru: Mutex<LruCache<BlockKey, Bytes>>,
    /// Blocks being fetched, and how their waiters learn the fetch ended.
    claimed: Mutex<HashMap<BlockKey, Arc<Notify>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl BlockCache {
    pub fn new(capacity_bytes: u64) -> Self {
        let blocks = (capacity_bytes / BLOCK).max(4) as usize;
        Self {
            lru: Mutex::new(LruCache::new(
                NonZeroUsize::new(blocks).unwrap_or(NonZeroUsize::MIN),
            )),
            claimed: Mutex::default(),
        }
    }

    pub fn get(&self, key: &BlockKey) -> Option<Bytes> {
        lock(&self.lru).get(key).cloned()
    }

    pub fn used_bytes(&self) -> u64 {
        lock(&self.lru).iter().map(|(_, v)| v.len() as u64).sum()
    }

    /// Of `keys`, claims those neither cached nor being fetched, for the
    /// caller to fetch; it ends each claim with `fulfil` or `abandon`.
    pub fn claim(&self, keys: impl IntoIterator<Item = BlockKey>) -> Vec<BlockKey> {
        let lru = lock(&self.lru);
        let mut claimed = lock(&self.claimed);
        let mut mine = Vec::new();
        for key in keys {
            if !lru.contains(&key) && !claimed.contains_key(&key) {
                claimed.insert(key.clone(), Arc::default());
                mine.push(key);
            }
        }
        mine
    }

    /// A claimed block arrived: it is cached, and its waiters go on.
    pub fn fulfil(&self, key: BlockKey, bytes: Bytes) {
        lock(&self.lru).put(key.clone(), bytes);
        self.abandon(&key);
    }

    /// A claimed block will not arrive: its waiters fetch it themselves.
    pub fn abandon(&self, key: &BlockKey) {
        if let Some(waiters) = lock(&self.claimed).remove(key) {
            waiters.notify_waiters();
        }
    }

    /// The block, from the cache, from a fetch already running, or from
    /// `fetch` (run by this caller once it holds the claim).
    pub async fn get_or_fetch<F, Fut, E>(&self, key: BlockKey, fetch: F) -> Result<Bytes, E>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Bytes, E>>,
    {
        loop {
            let running = {
                if let Some(hit) = self.get(&key) {
                    return Ok(hit);
                }
                let mut claimed = lock(&self.claimed);
                match claimed.get(&key) {
                    Some(waiters) => waiters.clone(),
                    None => {
                        claimed.insert(key.clone(), Arc::default());
                        break;
                    }
                }
            };
            let ended = running.notified();
            tokio::pin!(ended);
            // Registered before looking again, so an end in between is not missed.
            ended.as_mut().enable();
            if self.get(&key).is_some() || !lock(&self.claimed).contains_key(&key) {
                continue;
            }
            ended.await;
        }
        // Dropped unfulfilled (an error, or the caller gave up on this
        // future, as `try_join_all` does with the rest when one block fails),
        // the claim is abandoned: its waiters must never wait for ever.
        let claim = Claim {
            cache: self,
            key: Some(key),
        };
        let bytes = fetch().await?;
        claim.fulfil(bytes.clone());
        Ok(bytes)
    }
}

/// A claim held by `get_or_fetch` while its fetch runs.
struct Claim<'a> {
    cache: &'a BlockCache,
    key: Option<BlockKey>,
}

impl Claim<'_> {
    fn fulfil(mut self, bytes: Bytes) {
        if let Some(key) = self.key.take() {
            self.cache.fulfil(key, bytes);
        }
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if let Some(key) = &self.key {
            self.cache.abandon(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u64) -> BlockKey {
        ("c".repeat(64), i)
    }

    #[tokio::test]
    async fn a_reader_waits_for_the_claimed_fetch_instead_of_fetching_again() {
        let cache = Arc::new(BlockCache::new(8 << 20));
        assert_eq!(cache.claim([key(0), key(1)]), [key(0), key(1)]);
        assert!(cache.claim([key(1)]).is_empty(), "claimed once");
        let reader = {
            let cache = cache.clone();
            tokio::spawn(async move {
                cache
                    .get_or_fetch(key(1), || async { Err::<Bytes, &str>("fetched again") })
                    .await
            })
        };
        tokio::task::yield_now().await;
        cache.fulfil(key(1), Bytes::from_static(b"one"));
        let got = reader.await.expect("reader");
        assert_eq!(got, Ok(Bytes::from_static(b"one")));
        // An abandoned claim lets the next reader fetch it.
        cache.abandon(&key(0));
        let own = cache
            .get_or_fetch(key(0), || async {
                Ok::<_, ()>(Bytes::from_static(b"zero"))
            })
            .await;
        assert_eq!(own, Ok(Bytes::from_static(b"zero")));
        assert_eq!(cache.get(&key(0)), Some(Bytes::from_static(b"zero")));
    }

    /// A fetch given up half way (its future dropped) leaves no claim behind
    /// for the next reader to wait on for ever.
    #[tokio::test]
    async fn a_fetch_given_up_half_way_lets_the_next_reader_fetch() {
        let cache = BlockCache::new(8 << 20);
        let stalled = cache.get_or_fetch(key(2), std::future::pending::<Result<Bytes, ()>>);
        let gave_up = tokio::time::timeout(std::time::Duration::from_millis(10), stalled).await;
        assert!(gave_up.is_err(), "the stalled fetch never ends");
        let next = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            cache.get_or_fetch(key(2), || async { Ok::<_, ()>(Bytes::from_static(b"two")) }),
        )
        .await;
        assert_eq!(
            next,
            Ok(Ok(Bytes::from_static(b"two"))),
            "the next reader waited on"
        );
    }
}
