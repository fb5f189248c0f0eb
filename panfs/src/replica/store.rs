//! The replica on disk, in the cache directory: what was current at a feed
//! cursor. A remount loads it, catches up from that cursor, and then trusts
//! it; until then it answers only as a fallback.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use panproto::wire::Node;
use serde::{Deserialize, Serialize};

use super::{Record, Replica};

/// Bumped when the layout changes: an older file is ignored, not misread.
const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Saved {
    version: u32,
    /// The account's root: a replica of another account is never loaded.
    root: i64,
    cursor: i64,
    nodes: Vec<Node>,
    entries: Vec<(i64, String, Option<i64>)>,
    complete: Vec<i64>,
}

pub fn replica_path(cache_dir: &Path) -> PathBuf {
    cache_dir.join("replica.json")
}

impl Replica {
    /// Whether something changed since the last save.
    pub fn dirty(&self) -> bool {
        self.dirty
    }

    /// Writes what is current (nothing while the feed is not followed: the
    /// records would not match a cursor).
    pub fn save(&mut self, path: &Path, root: i64) -> std::io::Result<bool> {
        let Some(cursor) = self.cursor.filter(|_| self.following) else {
            return Ok(false);
        };
        let saved = Saved {
            version: VERSION,
            root,
            cursor,
            nodes: self
                .nodes
                .values()
                .filter(|r| r.seen.is_some() && r.pin == 0)
                .map(|r| r.value.clone())
                .collect(),
            entries: self
                .entries
                .iter()
                .filter(|(_, r)| r.seen.is_some() && r.pin == 0)
                .map(|((parent, name), r)| (*parent, name.clone(), r.value))
                .collect(),
            // Changes not on the server yet are replayed from the journal.
            complete: self
                .complete
                .iter()
                .filter(|(_, r)| r.pin == 0)
                .map(|(dir, _)| *dir)
                .collect(),
        };
        let tmp = path.with_extension("tmp");
        let mut file = std::fs::File::create(&tmp)?;
        serde_json::to_writer(std::io::BufWriter::new(&mut file), &saved)?;
        file.flush()?;
        std::fs::rename(&tmp, path)?;
        self.dirty = false;
        Ok(true)
    }

    /// The replica saved at `path`, if it is this account's; its records count
    /// as current only once the feed has caught up from its cursor.
    pub fn load(path: &Path, root: i64, fallback_ttl: Duration) -> Option<Replica> {
        let bytes = std::fs::read(path).ok()?;
        let saved: Saved = match serde_json::from_slice(&bytes) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "ignoring an unreadable replica");
                return None;
            }
        };
        if saved.version != VERSION || saved.root != root {
            return None;
        }
        // Seen long enough ago that the fallback TTL never trusts it.
        let seen = Instant::now()
            .checked_sub(fallback_ttl + Duration::from_secs(1))
            .unwrap_or_else(Instant::now);
        let mut replica = Replica::new(fallback_ttl);
        replica.cursor = Some(saved.cursor);
        for node in saved.nodes {
            let seen = Some(seen);
            replica.nodes.insert(
                node.ino,
                Record {
                    value: node,
                    seen,
                    pin: 0,
                    synced: 0,
                    committed: 0,
                },
            );
        }
        for (parent, name, ino) in saved.entries {
            let seen = Some(seen);
            replica.entries.insert(
                (parent, name),
                Record {
                    value: ino,
                    seen,
                    pin: 0,
                    synced: 0,
                    committed: 0,
                },
            );
        }
        for dir in saved.complete {
            let seen = Some(seen);
            replica.complete.insert(
                dir,
                Record {
                    value: (),
                    seen,
                    pin: 0,
                    synced: 0,
                    committed: 0,
                },
            );
        }
        Some(replica)
    }
}
