//! Versions of files read lately, by whom: a ranged read of a version that
//! this server let the same user read within `TTL` asks the database nothing
//! (the version's extents are kept by `extent_cache`).
//!
//! Why: panfs reads a file it does not hold in blocks, one ranged GET each,
//! and the node's query was a round trip to the database (on the embedded
//! profile, to SQLite's worker thread): with its wake-ups, most of what the
//! server spent on a block. What is kept is what such a read needs of the
//! node: that the file is this user's, and the version's size. A content id
//! names its chunk list, so a version's size never changes. Only a file's
//! current version is kept. One removed or replaced meanwhile stays readable
//! by that version for at most `TTL` more, as a replaced version is anyway
//! until garbage collection, which keeps unreferenced chunks far longer
//! (`--gc-grace-secs`, an hour unless set lower).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a version found readable is trusted without asking the database again.
pub const TTL: Duration = Duration::from_secs(2);
/// Past this many entries the cache starts over: it stays small whatever the traffic.
const MAX_ENTRIES: usize = 10_000;

/// A version found readable: its id, its size, and when.
type Readable = (String, i64, Instant);

#[derive(Default)]
pub struct VersionReads {
    /// (user, file) -> the version last found readable.
    entries: Mutex<HashMap<(i64, i64), Readable>>,
}

impl VersionReads {
    /// The size of `version` of the user's file `ino`, when it was found
    /// readable within `TTL`.
    pub fn size(&self, user: i64, ino: i64, version: &str) -> Option<i64> {
        let entries = self.entries.lock().ok()?;
        let (kept, size, seen) = entries.get(&(user, ino))?;
        (kept == version && seen.elapsed() < TTL).then_some(*size)
    }

    pub fn insert(&self, user: i64, ino: i64, version: &str, size: i64) {
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
            entries.insert((user, ino), (version.to_string(), size, Instant::now()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_is_kept_for_its_reader_and_file_only() {
        let reads = VersionReads::default();
        reads.insert(1, 7, "v1", 4096);
        assert_eq!(reads.size(1, 7, "v1"), Some(4096));
        assert_eq!(reads.size(2, 7, "v1"), None, "another user");
        assert_eq!(reads.size(1, 8, "v1"), None, "another file");
        assert_eq!(reads.size(1, 7, "v2"), None, "another version");
    }

    #[test]
    fn a_version_found_readable_is_trusted_for_the_ttl_only() {
        let reads = VersionReads::default();
        reads.insert(1, 7, "v1", 1);
        reads
            .entries
            .lock()
            .expect("lock")
            .get_mut(&(1, 7))
            .expect("entry")
            .2 -= TTL;
        assert_eq!(reads.size(1, 7, "v1"), None);
    }
}
