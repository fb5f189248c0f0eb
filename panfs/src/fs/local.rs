//! Local-first namespace changes: each is checked against the replica (as
//! the server would check it), applied to the replica, journaled on local
//! disk, and returned; the syncer (`sync.rs`) sends it later. A change the
//! replica cannot decide alone (a directory moved to another parent, where
//! only the server sees every ancestor) waits for the journal to reach the
//! server and is then made synchronously (`settle`).

use std::sync::Arc;

use panproto::batch::BatchOp;
use panproto::wire::{CreateRequest, Node, NodeKind, RenameMode};

use super::attr::now_ns;
use super::{FsError, FsResult, PanFs, lock};
use crate::replica::{Lookup, Replica};
use crate::sync::{CHANGE_BYTES, Journaled, Syncer};

/// Numbers reserved from the server at a time.
const RESERVE_BLOCK: i64 = 4096;

/// How many times `settle_until` waits for a node journaled again and again.
const SETTLE_ROUNDS: usize = 4;

/// Journals `op` and applies it to `replica`, whose lock the caller holds.
pub(super) fn journal_in(replica: &mut Replica, s: &Syncer, op: BatchOp) -> FsResult<()> {
    let at = now_ns();
    let seq = s.record(Journaled { at, op: op.clone() })?;
    replica.apply_local(&op, seq, at);
    Ok(())
}

impl PanFs {
    /// Applies `op` to the replica and journals it, in one order for both.
    /// It is on local disk when this returns (a crash of panfs keeps it); the
    /// syncer makes the journal durable before each batch, so a call costs no
    /// fsync, and `fsync` makes it durable on the server.
    pub(super) fn journal(&self, s: &Syncer, op: BatchOp) -> FsResult<()> {
        // A removal frees room, as on a full disk.
        if !matches!(op, BatchOp::Remove { .. }) {
            self.offline_room(CHANGE_BYTES)?;
        }
        journal_in(&mut lock(&self.tables).replica, s, op)
    }

    /// While the server is unreachable, local work (journaled changes and
    /// written bytes) is bounded by `--cache-size`: ENOSPC beyond it, as a
    /// full disk answers, until the server is back and the journal drains.
    pub(super) fn offline_room(&self, bytes: u64) -> FsResult<()> {
        match &self.sync {
            Some(s) if !s.charge(bytes, self.opts.disk_cache_bytes) => Err(FsError::new(
                libc::ENOSPC,
                "offline: local changes reached --cache-size; they are sent once the server is back",
            )),
            _ => Ok(()),
        }
    }

    /// Waits until the server has the node's journaled changes: what an
    /// upload of it, or a change sent at once, needs there first.
    pub(super) fn settle_node(&self, ino: i64) -> FsResult<()> {
        self.settle_until(|r| r.pin_of(ino))
    }

    /// Waits until the server has what an `fsync` of `ino` promises: the
    /// node's journaled changes and its path's (`Replica::fsync_point`),
    /// not changes made since elsewhere on the mount.
    pub(super) fn settle_path(&self, ino: i64) -> FsResult<()> {
        self.settle_until(|r| r.fsync_point(ino))
    }

    /// Waits until the server has every journaled change through the one
    /// `point` names. A refused creation is journaled again (under another
    /// name) while the first wait ends, so this looks again after each wait.
    fn settle_until(&self, point: impl Fn(&Replica) -> u64) -> FsResult<()> {
        for _ in 0..SETTLE_ROUNDS {
            let seq = point(&lock(&self.tables).replica);
            if seq == 0 {
                break;
            }
            self.settle_through(seq)?;
        }
        Ok(())
    }

    /// Whether working copies are synced to disk as they are journaled
    /// (strict mode); local-first, the upload or an `fsync` makes them durable.
    pub(super) fn copies_synced(&self) -> bool {
        self.sync.is_none()
    }

    /// Waits until the server has every change journaled so far (up to the
    /// mount's timeout: then EIO, and the changes stay journaled).
    pub(super) fn settle(&self) -> FsResult<()> {
        match &self.sync {
            Some(s) => self.settle_through(s.last()),
            None => Ok(()),
        }
    }

    /// Waits until the server has every journaled change through `seq`.
    fn settle_through(&self, seq: u64) -> FsResult<()> {
        let Some(s) = &self.sync else {
            return Ok(());
        };
        if s.wait_synced(seq, self.opts.sync_timeout) {
            return Ok(());
        }
        Err(FsError::new(
            libc::EIO,
            "the server did not take the journaled changes in time; they stay journaled",
        ))
    }

    /// A number for a new node, from the range the server reserved for this
    /// mount. The next range is reserved ahead in the background, so that no
    /// create waits for the server: not even one far away, or one that stopped
    /// answering without the mount knowing yet (a lost network answers
    /// nothing until the timeout). Only this process's first range is waited
    /// for; if the server cannot give it, numbers are minted under the licence
    /// an earlier panfs left (a mount started again while offline).
    fn new_ino(&self, s: &Arc<Syncer>) -> FsResult<i64> {
        let pool = &s.inos;
        // Offline, the server is asked again only when no number is left.
        if pool.running_low(RESERVE_BLOCK) && (s.is_online() || pool.is_empty()) {
            if pool.reserved_here() {
                self.reserve_inos_ahead(s);
            } else if let Err(e) = self.reserve_inos_now(s) {
                tracing::debug!(error = e.chain(), "could not reserve inode numbers");
            }
        }
        if let Some(ino) = pool.take() {
            return Ok(ino);
        }
        let ino = pool.mint().ok_or_else(|| {
            FsError::new(
                libc::EIO,
                "no inode numbers left to reserve or mint, and the server cannot reserve more now",
            )
        })?;
        if pool.provisional() == 1 {
            tracing::warn!(
                ino,
                "reserved inode numbers ran out before the server reserved more: new nodes take provisional numbers until it does"
            );
        }
        Ok(ino)
    }

    /// Reserves this process's first range at a start with the server
    /// reachable, before any node is made: the licence to mint it leaves lets
    /// a panfs started later while the server is away make nodes, even when
    /// this one made none.
    pub fn reserve_first_inos(&self) {
        let Some(s) = &self.sync else {
            return;
        };
        if s.inos.reserved_here() {
            return;
        }
        if let Err(e) = self.reserve_inos_now(s) {
            tracing::warn!(
                error = e.chain(),
                "could not reserve inode numbers at the start; the first new node asks again"
            );
        }
    }

    fn reserve_inos_now(&self, s: &Syncer) -> FsResult<()> {
        let reserved = self.block_on(self.remote.reserve_inos(RESERVE_BLOCK))?;
        s.inos.refill(reserved.first, reserved.count);
        Ok(())
    }

    /// Starts reserving the next range, unless a reservation is on its way.
    fn reserve_inos_ahead(&self, s: &Arc<Syncer>) {
        if !s.inos.start_reserving() {
            return;
        }
        let (remote, s) = (self.remote.clone(), s.clone());
        self.rt.spawn(async move {
            let reserved = match remote.reserve_inos(RESERVE_BLOCK).await {
                Ok(r) => Some((r.first, r.count)),
                Err(e) => {
                    tracing::debug!(error = %e, "could not reserve inode numbers ahead");
                    None
                }
            };
            s.inos.end_reserving(reserved);
        });
    }

    /// What a name leads to now: the replica's answer, or the server's.
    fn entry_now(&self, parent: i64, name: &str) -> FsResult<Option<Node>> {
        let known = lock(&self.tables).replica.lookup(parent, name);
        match known {
            Lookup::Found(node) => return Ok(Some(node)),
            Lookup::Missing => return Ok(None),
            Lookup::Unknown => {}
        }
        match self.lookup(self.to_fuse(parent), name) {
            Ok(_) => {
                let t = lock(&self.tables);
                Ok(t.replica
                    .last_seen_entry(parent, name)
                    .and_then(|ino| t.replica.last_seen(ino).cloned()))
            }
            Err(e) if e.errno() == libc::ENOENT => Ok(None),
            // Unreachable: what was seen last decides, as offline work needs.
            Err(e) => match lock(&self.tables).replica.last_seen_lookup(parent, name) {
                Lookup::Found(node) => Ok(Some(node)),
                Lookup::Missing => Ok(None),
                Lookup::Unknown => Err(e),
            },
        }
    }

    fn dir_node(&self, dir: i64) -> FsResult<Node> {
        let node = self.node(dir, false)?;
        if node.kind != NodeKind::Dir {
            return Err(FsError::new(libc::ENOTDIR, "not a directory"));
        }
        Ok(node)
    }

    pub(super) fn held(&self, ino: i64) -> FsResult<Node> {
        lock(&self.tables)
            .replica
            .last_seen(ino)
            .cloned()
            .ok_or_else(|| FsError::new(libc::EIO, "a journaled node is missing"))
    }

    fn is_empty_dir(&self, dir: i64) -> FsResult<bool> {
        Ok(self.list_dir(dir)?.entries.is_empty())
    }

    /// Whether a directory (`dir`) or another node may take `victim`'s name
    /// away from it, as rmdir/unlink and rename-over check: ENOTDIR, EISDIR,
    /// or ENOTEMPTY for a directory that is not empty.
    fn may_replace(&self, dir: bool, victim: &Node) -> FsResult<()> {
        match (dir, victim.kind == NodeKind::Dir) {
            (true, false) => Err(FsError::new(libc::ENOTDIR, "not a directory")),
            (false, true) => Err(FsError::new(libc::EISDIR, "is a directory")),
            (true, true) if !self.is_empty_dir(victim.ino)? => {
                Err(FsError::new(libc::ENOTEMPTY, "directory not empty"))
            }
            _ => Ok(()),
        }
    }

    pub(super) fn make_local(
        &self,
        s: &Arc<Syncer>,
        parent: i64,
        req: CreateRequest,
    ) -> FsResult<Node> {
        self.dir_node(parent)?;
        if self.entry_now(parent, &req.name)?.is_some() {
            return Err(FsError::new(libc::EEXIST, "name exists"));
        }
        let ino = self.new_ino(s)?;
        let op = BatchOp::create(parent, req, Some(ino));
        self.journal(s, op)?;
        self.held(ino)
    }

    pub(super) fn link_local(
        &self,
        s: &Syncer,
        ino: i64,
        parent: i64,
        name: &str,
    ) -> FsResult<Node> {
        if self.node(ino, false)?.kind == NodeKind::Dir {
            return Err(FsError::new(libc::EPERM, "hard link to a directory"));
        }
        self.dir_node(parent)?;
        if self.entry_now(parent, name)?.is_some() {
            return Err(FsError::new(libc::EEXIST, "name exists"));
        }
        let op = BatchOp::Link {
            ino,
            parent,
            name: name.to_string(),
        };
        self.journal(s, op)?;
        self.held(ino)
    }

    /// Removes a name; returns the node it led to.
    pub(super) fn remove_local(
        &self,
        s: &Syncer,
        parent: i64,
        name: &str,
        dir: bool,
    ) -> FsResult<Node> {
        let victim = self
            .entry_now(parent, name)?
            .ok_or_else(|| FsError::new(libc::ENOENT, "no such entry"))?;
        self.may_replace(dir, &victim)?;
        let op = BatchOp::Remove {
            parent,
            name: name.to_string(),
            dir,
            if_ino: Some(victim.ino),
        };
        self.journal(s, op)?;
        Ok(victim)
    }

    /// A rename the replica can decide: `Ok(None)` when it cannot (the
    /// caller settles the journal and asks the server). Returns the node the
    /// new name led to before, if any.
    pub(super) fn rename_local(
        &self,
        s: &Syncer,
        (parent, name): (i64, &str),
        (new_parent, new_name): (i64, &str),
        mode: RenameMode,
    ) -> FsResult<Option<Option<Node>>> {
        let moved = self
            .entry_now(parent, name)?
            .ok_or_else(|| FsError::new(libc::ENOENT, "no such entry"))?;
        self.dir_node(new_parent)?;
        let other = self.entry_now(new_parent, new_name)?;
        let moved_dir = moved.kind == NodeKind::Dir;
        let other_dir = other.as_ref().is_some_and(|o| o.kind == NodeKind::Dir);
        // Only the server sees every ancestor, to refuse moving a directory
        // under itself.
        if parent != new_parent && (moved_dir || (mode == RenameMode::Exchange && other_dir)) {
            return Ok(None);
        }
        match (&other, mode) {
            (Some(o), _) if o.ino == moved.ino => return Ok(Some(None)),
            (Some(_), RenameMode::NoReplace) => {
                return Err(FsError::new(libc::EEXIST, "name exists"));
            }
            (None, RenameMode::Exchange) => {
                return Err(FsError::new(libc::ENOENT, "nothing to exchange with"));
            }
            (Some(_), RenameMode::Exchange) | (None, _) => {}
            (Some(o), RenameMode::Replace) => self.may_replace(moved_dir, o)?,
        }
        let op = BatchOp::Rename {
            parent,
            name: name.to_string(),
            new_parent,
            new_name: new_name.to_string(),
            mode,
            if_ino: Some(moved.ino),
            // An exchange needs its other node whichever it is now.
            if_target: (mode != RenameMode::Exchange).then(|| other.as_ref().map_or(0, |o| o.ino)),
        };
        self.journal(s, op)?;
        Ok(Some(other))
    }
}
