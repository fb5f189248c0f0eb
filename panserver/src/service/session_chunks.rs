//! The chunk sizes of upload sessions in use, so that a chunk sent into a
//! session does not read the whole session back.
//!
//! Why: a session lists every chunk of its file, and reading it for each of
//! them made a big file's upload quadratic (a 10 GiB file: ten thousand reads
//! of a ten-thousand-entry list). A session's chunk list never changes once it
//! is opened, so what is kept here cannot go stale; whether the session still
//! lives is asked of the session store each time (`SessionStore::touch`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::session::UploadSession;

/// Past this many sessions the cache starts over: it stays small whatever the traffic.
const MAX_SESSIONS: usize = 256;

/// A session's owner and its chunks' sizes by SHA-256.
#[derive(Clone)]
pub struct SessionChunks {
    pub user: i64,
    pub sizes: Arc<HashMap<String, u64>>,
}

impl SessionChunks {
    pub fn of(session: &UploadSession) -> Self {
        Self {
            user: session.user,
            sizes: Arc::new(
                session
                    .chunks
                    .iter()
                    .filter_map(|c| Some((c.sha256.clone()?, c.size)))
                    .collect(),
            ),
        }
    }
}

#[derive(Default)]
pub struct SessionChunkCache {
    entries: Mutex<HashMap<String, SessionChunks>>,
}

impl SessionChunkCache {
    /// The chunks of session `id`, when it is kept here and `user`'s.
    pub fn get(&self, user: i64, id: &str) -> Option<SessionChunks> {
        let entries = self.entries.lock().ok()?;
        entries.get(id).filter(|c| c.user == user).cloned()
    }

    pub fn insert(&self, id: &str, chunks: SessionChunks) {
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= MAX_SESSIONS {
                entries.clear();
            }
            entries.insert(id.to_string(), chunks);
        }
    }

    /// Forgets a session that ended (committed, removed, gone).
    pub fn remove(&self, id: &str) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.remove(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use panproto::wire::ChunkRef;

    fn session(user: i64) -> UploadSession {
        UploadSession {
            id: "a".repeat(32),
            user,
            ino: 1,
            new_file: None,
            chunks: vec![
                ChunkRef {
                    sha256: Some("b".repeat(64)),
                    size: 10,
                },
                ChunkRef {
                    sha256: None,
                    size: 20,
                },
            ],
            unproven: Vec::new(),
            challenge: None,
            expires_at: 0,
        }
    }

    #[test]
    fn a_session_is_found_only_by_its_user_and_until_it_is_removed() {
        let cache = SessionChunkCache::default();
        let s = session(7);
        cache.insert(&s.id, SessionChunks::of(&s));
        let found = cache.get(7, &s.id).expect("kept");
        assert_eq!(found.sizes.get(&"b".repeat(64)), Some(&10));
        assert_eq!(found.sizes.len(), 1, "holes have no hash");
        assert!(cache.get(8, &s.id).is_none(), "another user's id");
        cache.remove(&s.id);
        assert!(cache.get(7, &s.id).is_none());
    }
}
