//! Directory handles: a listing taken at opendir (from the replica when it has
//! the whole directory), served by offset.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use panproto::wire::{Node, NodeKind};

use super::{Attr, FsError, FsResult, PanFs, lock};

/// An open directory's entries, and whether a change made elsewhere arrived
/// while they were fetched (see `Attr::settled`).
pub(super) struct Listing {
    pub(super) entries: Vec<(String, Node)>,
    settled: bool,
}

impl PanFs {
    pub fn opendir(&self, ino: u64) -> FsResult<u64> {
        let dir = self.to_server(ino);
        let node = self.node(dir, !self.following())?;
        if node.kind != NodeKind::Dir {
            return Err(FsError::new(libc::ENOTDIR, "not a directory"));
        }
        let listing = self.list_dir(dir)?;
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.tables).dirs.insert(fh, Arc::new(listing));
        Ok(fh)
    }

    /// A directory's entries: from the replica when it has them all, else
    /// from the server (with what this mount changed meanwhile laid over).
    pub(super) fn list_dir(&self, dir: i64) -> FsResult<Listing> {
        let known = lock(&self.tables).replica.listing(dir);
        Ok(match known {
            Some(entries) => Listing {
                entries,
                settled: true,
            },
            None => {
                let ticket = self.ticket();
                let fetched: Vec<_> = match self.block_on(self.remote.list(dir)) {
                    Ok(entries) => entries.into_iter().map(|e| (e.name, e.node)).collect(),
                    Err(e) => return self.list_offline(dir, e.into()),
                };
                let mut t = lock(&self.tables);
                t.replica.put_listing(dir, &fetched, ticket);
                Listing {
                    // With what this mount changed meanwhile, when it is whole.
                    entries: match t.replica.listing(dir) {
                        Some(entries) => entries,
                        None => t.replica.with_local_changes(dir, fetched, ticket),
                    },
                    settled: t.replica.settled(ticket),
                }
            }
        })
    }

    /// With the server unreachable, a local-first mount lists a directory as
    /// it last saw it whole, with its own changes in (offline work, and a
    /// mount started offline); anything else gets the error.
    fn list_offline(&self, dir: i64, e: FsError) -> FsResult<Listing> {
        if e.errno() != libc::EIO || self.sync.is_none() {
            return Err(e);
        }
        let entries = lock(&self.tables).replica.last_seen_listing(dir).ok_or(e)?;
        Ok(Listing {
            entries,
            settled: false,
        })
    }

    /// Entries from `offset` on: (next offset, name, attributes).
    pub fn readdir(
        &self,
        dir_ino: u64,
        fh: u64,
        offset: u64,
    ) -> FsResult<Vec<(u64, String, Attr)>> {
        let listing = lock(&self.tables)
            .dirs
            .get(&fh)
            .cloned()
            .ok_or_else(|| FsError::new(libc::EBADF, "no such directory handle"))?;
        let dir = self.node(self.to_server(dir_ino), false)?;
        let dot = self.attr_of(&dir);
        let all = [(".".to_string(), dot.clone()), ("..".to_string(), dot)]
            .into_iter()
            .chain(listing.entries.iter().map(|(name, node)| {
                let mut attr = self.attr_of(node);
                attr.settled = listing.settled;
                (name.clone(), attr)
            }));
        Ok(all
            .enumerate()
            .skip(offset as usize)
            .map(|(i, (name, attr))| (i as u64 + 1, name, attr))
            .collect())
    }

    pub fn releasedir(&self, fh: u64) {
        lock(&self.tables).dirs.remove(&fh);
    }
}
