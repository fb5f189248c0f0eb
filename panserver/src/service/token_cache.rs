//! Tokens recently found valid, so that most requests cost no token query.
//!
//! An entry is trusted for `TTL` at most. A token deleted through this server
//! leaves the cache at once; one deleted through another server of the same
//! deployment (or expired) is refused here within `TTL`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a token found valid is trusted without asking the database again.
pub const TTL: Duration = Duration::from_secs(2);
/// Past this many entries the cache starts over: it stays small whatever the traffic.
const MAX_ENTRIES: usize = 10_000;

#[derive(Default)]
pub struct TokenCache {
    /// Token hash -> (user, token id, when it was found valid).
    entries: Mutex<HashMap<String, (i64, i64, Instant)>>,
}

impl TokenCache {
    /// The (user, token id) of a token hash found valid within `TTL`.
    pub fn get(&self, hash: &str) -> Option<(i64, i64)> {
        let entries = self.entries.lock().ok()?;
        let &(user, id, seen) = entries.get(hash)?;
        (seen.elapsed() < TTL).then_some((user, id))
    }

    pub fn insert(&self, hash: String, user: i64, id: i64) {
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
            entries.insert(hash, (user, id, Instant::now()));
        }
    }

    /// Forgets a user's token, deleted just now.
    pub fn remove(&self, user: i64, id: i64) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.retain(|_, &mut (u, i, _)| (u, i) != (user, id));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deleted_token_leaves_at_once_and_others_stay() {
        let cache = TokenCache::default();
        cache.insert("a".into(), 1, 10);
        cache.insert("b".into(), 1, 11);
        assert_eq!(cache.get("a"), Some((1, 10)));
        cache.remove(1, 10);
        assert_eq!(cache.get("a"), None);
        assert_eq!(cache.get("b"), Some((1, 11)));
        assert_eq!(cache.get("c"), None);
    }

    #[test]
    fn an_entry_is_trusted_for_the_ttl_only() {
        let cache = TokenCache::default();
        if let Ok(mut entries) = cache.entries.lock() {
            let old = Instant::now().checked_sub(TTL).expect("a past instant");
            entries.insert("a".into(), (1, 10, old));
        }
        assert_eq!(cache.get("a"), None);
    }
}
