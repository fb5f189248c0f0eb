//! This mount's own changes, applied to the replica before the server has
//! them (local-first). Each value a journaled change sets is pinned with the
//! change's number: it stays current whatever the TTL or the feed says, and a
//! listing fetched from the server never drops it, until the syncer reports
//! that the server committed that change.

use std::collections::BTreeMap;
use std::time::Instant;

use panproto::batch::BatchOp;
use panproto::wire::{Node, NodeKind, RenameMode};

use super::{Lookup, Record, Replica, Ticket};

/// A value pinned by a journaled change.
#[derive(Debug, Clone)]
pub(super) enum Pin {
    Node(i64),
    Entry(i64, String),
    Listing(i64),
}

/// A node made by `op`, a `Create`, as the server will make it.
fn new_node(op: &BatchOp, now: i64) -> Option<Node> {
    let (_, req, Some(ino)) = op.as_create()? else {
        return None;
    };
    Some(Node {
        ino,
        kind: req.kind,
        mode: req.mode & 0o7777,
        uid: req.uid,
        gid: req.gid,
        size: req.target.as_ref().map_or(0, |t| t.len() as i64),
        atime: now,
        mtime: now,
        ctime: now,
        nlink: if req.kind == NodeKind::Dir { 2 } else { 1 },
        content: None,
        target: req.target,
        rdev: req.rdev,
        xattrs: 0,
        stored_bytes: 0,
    })
}

impl Replica {
    fn pinned<T>(&self, value: T, seq: u64) -> Record<T> {
        Record {
            value,
            seen: Some(Instant::now()),
            pin: seq,
            synced: 0,
            committed: 0,
        }
    }

    fn pin_node(&mut self, node: Node, seq: u64) {
        self.pins.push_back((seq, Pin::Node(node.ino)));
        let record = self.pinned(node.clone(), seq);
        self.nodes.insert(node.ino, record);
    }

    fn pin_entry(&mut self, parent: i64, name: &str, ino: Option<i64>, seq: u64) {
        self.pins
            .push_back((seq, Pin::Entry(parent, name.to_string())));
        let record = self.pinned(ino, seq);
        self.entries.insert((parent, name.to_string()), record);
    }

    /// Changes `ino`'s node as a local change does (its ctime moves).
    fn edit_node(&mut self, ino: i64, seq: u64, now: i64, edit: impl FnOnce(&mut Node)) {
        let Some(mut node) = self.last_seen(ino).cloned() else {
            return;
        };
        edit(&mut node);
        node.ctime = now;
        self.pin_node(node, seq);
    }

    /// A directory gained or lost an entry: its times move, and its link count
    /// by `links` (a subdirectory's `..`).
    fn touch_dir(&mut self, dir: i64, links: i32, seq: u64, now: i64) {
        self.edit_node(dir, seq, now, |d| {
            d.mtime = now;
            d.nlink = d.nlink.saturating_add_signed(links);
        });
    }

    /// A name no longer leads to `ino`.
    fn unlinked(&mut self, ino: i64, seq: u64, now: i64) {
        self.edit_node(ino, seq, now, |n| {
            n.nlink = if n.kind == NodeKind::Dir {
                0
            } else {
                n.nlink.saturating_sub(1)
            };
        });
    }

    fn is_dir(&self, ino: Option<i64>) -> bool {
        ino.and_then(|i| self.last_seen(i))
            .is_some_and(|n| n.kind == NodeKind::Dir)
    }

    /// Applies a journaled change numbered `seq`, made at `now`, to the
    /// replica. The file-system logic checked it against the replica first.
    pub fn apply_local(&mut self, op: &BatchOp, seq: u64, now: i64) {
        self.dirty = true;
        match op {
            BatchOp::Create { parent, name, .. } => {
                let Some(node) = new_node(op, now) else {
                    return;
                };
                let is_dir = node.kind == NodeKind::Dir;
                if is_dir {
                    self.pins.push_back((seq, Pin::Listing(node.ino)));
                    let record = self.pinned((), seq);
                    self.complete.insert(node.ino, record);
                }
                self.pin_entry(*parent, name, Some(node.ino), seq);
                self.pin_node(node, seq);
                self.touch_dir(*parent, i32::from(is_dir), seq, now);
            }
            BatchOp::Link { ino, parent, name } => {
                self.edit_node(*ino, seq, now, |n| n.nlink += 1);
                self.pin_entry(*parent, name, Some(*ino), seq);
                self.touch_dir(*parent, 0, seq, now);
            }
            BatchOp::Remove {
                parent, name, dir, ..
            } => {
                let victim = self.last_seen_entry(*parent, name);
                self.pin_entry(*parent, name, None, seq);
                if let Some(v) = victim {
                    self.unlinked(v, seq, now);
                }
                self.touch_dir(*parent, -i32::from(*dir), seq, now);
            }
            BatchOp::Rename {
                parent,
                name,
                new_parent,
                new_name,
                mode,
                if_ino,
                ..
            } => {
                let moved = if_ino.or_else(|| self.last_seen_entry(*parent, name));
                let other = self.last_seen_entry(*new_parent, new_name);
                let exchange = *mode == RenameMode::Exchange;
                self.pin_entry(*parent, name, if exchange { other } else { None }, seq);
                self.pin_entry(*new_parent, new_name, moved, seq);
                if let Some(m) = moved {
                    self.edit_node(m, seq, now, |_| {});
                }
                match other {
                    Some(o) if exchange => self.edit_node(o, seq, now, |_| {}),
                    Some(o) => self.unlinked(o, seq, now),
                    None => {}
                }
                // A directory that moves takes its `..` along.
                let (moved_dir, other_dir) = (self.is_dir(moved), self.is_dir(other));
                if moved_dir || other_dir {
                    self.dirs_changed = seq;
                }
                let out = i32::from(moved_dir) - i32::from(exchange && other_dir);
                let into = i32::from(moved_dir) - i32::from(other_dir);
                if parent == new_parent {
                    self.touch_dir(*parent, into - out, seq, now);
                } else {
                    self.touch_dir(*parent, -out, seq, now);
                    self.touch_dir(*new_parent, into, seq, now);
                }
            }
            BatchOp::SetAttr {
                ino,
                mode,
                uid,
                gid,
                atime,
                mtime,
            } => {
                // An ancestor's owner or mode decides who reaches the path.
                if self.is_dir(Some(*ino)) {
                    self.dirs_changed = seq;
                }
                self.edit_node(*ino, seq, now, |n| {
                    n.mode = mode.map_or(n.mode, |m| m & 0o7777);
                    n.uid = uid.unwrap_or(n.uid);
                    n.gid = gid.unwrap_or(n.gid);
                    n.atime = atime.unwrap_or(n.atime);
                    n.mtime = mtime.unwrap_or(n.mtime);
                })
            }
            // Synced at once, not journaled: nothing to lay over the server's value.
            BatchOp::SetXattr { .. } | BatchOp::RemoveXattr { .. } | BatchOp::SetContent { .. } => {
            }
        }
    }

    /// The server committed every change up to `acked`: their values count as
    /// seen when the batch was sent with `ticket`, unless a change from
    /// elsewhere invalidated them meanwhile.
    pub fn unpin_through(&mut self, acked: u64, ticket: Ticket) {
        let seen = self.seen_if(ticket);
        while self.pins.front().is_some_and(|(seq, _)| *seq <= acked) {
            let Some((_, pin)) = self.pins.pop_front() else {
                break;
            };
            fn release<T>(r: Option<&mut Record<T>>, acked: u64, seen: Option<Instant>) {
                if let Some(r) = r
                    && r.pin > 0
                    && r.pin <= acked
                {
                    r.pin = 0;
                    r.synced = acked;
                    r.seen = r.seen.and(seen);
                }
            }
            match pin {
                Pin::Node(ino) => release(self.nodes.get_mut(&ino), acked, seen),
                Pin::Entry(parent, name) => {
                    release(self.entries.get_mut(&(parent, name)), acked, seen)
                }
                Pin::Listing(dir) => release(self.complete.get_mut(&dir), acked, seen),
            }
        }
        self.acked = self.acked.max(acked);
        self.dirty = true;
    }

    /// Forgets a name unless a local change not on the server yet set it.
    pub(super) fn forget_unpinned(&mut self, key: &(i64, String)) {
        match self.entries.get_mut(key) {
            Some(r) if r.pin > 0 => r.seen = None,
            Some(_) => {
                self.entries.remove(key);
            }
            None => {}
        }
    }

    /// The directory's listing is no longer known whole (a pinned one stays
    /// current until the server has it, then counts as stale).
    pub(super) fn forget_listing(&mut self, dir: i64) {
        match self.complete.get_mut(&dir) {
            Some(r) if r.pin > 0 => r.seen = None,
            Some(_) => {
                self.complete.remove(&dir);
            }
            None => {}
        }
    }

    /// A node as a committed request that sets no content left it: a batch
    /// (its inline contents are answered apart), an extended attribute's
    /// change. A current replica, or one whose content this mount committed
    /// after the request was sent (`ticket`), keeps the content it holds: an
    /// answer that left the server before an upload of this mount committed
    /// (a batch, or rsync's `lsetxattr`, racing an upload) would take it
    /// back, and nothing would bring it again. Its ctime cannot tell: a node
    /// pinned by a local change carries this machine's time.
    pub fn answered_without_content(&mut self, node: &Node, ticket: Ticket) {
        match self.nodes.get(&node.ino) {
            Some(held)
                if (self.current(held) || held.committed_since(ticket))
                    && held.value.content != node.content =>
            {
                let mut merged = node.clone();
                merged.take_content_of(&held.value);
                self.set_node(&merged, ticket);
            }
            _ => self.set_node(node, ticket),
        }
        // How many extended attributes the node has is the server's to say
        // (their changes are never journaled), even over attributes changed
        // here and not synced yet, which `set_node` keeps: a count left at
        // none would answer every name as missing without asking.
        if let Some(held) = self.nodes.get_mut(&node.ino) {
            held.value.xattrs = node.xattrs;
        }
    }

    /// A listing fetched from the server with `ticket`, with the names this
    /// mount changed that it may not show yet laid over it.
    pub fn with_local_changes(
        &self,
        dir: i64,
        fetched: Vec<(String, Node)>,
        ticket: Ticket,
    ) -> Vec<(String, Node)> {
        let mut out: BTreeMap<String, Node> = fetched.into_iter().collect();
        for ((_, name), r) in self.names_in(dir).filter(|(_, r)| r.newer_than(ticket)) {
            match r.value.and_then(|ino| self.last_seen(ino)) {
                Some(node) => out.insert(name.clone(), node.clone()),
                None => out.remove(name),
            };
        }
        out.into_iter().collect()
    }

    /// What a name led to when last seen, current or not (for changes made
    /// while the server is unreachable): `Unknown` only when it was never seen
    /// and its directory was never listed whole.
    pub fn last_seen_lookup(&self, parent: i64, name: &str) -> Lookup {
        match self.entries.get(&(parent, name.to_string())) {
            Some(r) => match r.value.and_then(|ino| self.last_seen(ino)) {
                Some(node) => Lookup::Found(node.clone()),
                None if r.value.is_none() => Lookup::Missing,
                None => Lookup::Unknown,
            },
            None if self.complete.contains_key(&parent) => Lookup::Missing,
            None => Lookup::Unknown,
        }
    }

    /// A directory's entries as last seen, current or not (for when the
    /// server is unreachable): only when it was listed whole once and every
    /// node in it was seen.
    pub fn last_seen_listing(&self, dir: i64) -> Option<Vec<(String, Node)>> {
        if !self.complete.contains_key(&dir) {
            return None;
        }
        self.names_in(dir)
            .filter_map(|((_, name), r)| Some((name, r.value?)))
            .map(|(name, ino)| Some((name.clone(), self.last_seen(ino)?.clone())))
            .collect()
    }

    /// Whether a local change not on the server yet set this name.
    pub(super) fn entry_pinned(&self, key: &(i64, String)) -> bool {
        self.entries.get(key).is_some_and(|r| r.pin > 0)
    }

    /// Whether an answer got with `ticket` may predate what this mount set
    /// the name to: a local change not on the server yet, or one the server
    /// committed after the request began.
    pub(super) fn entry_newer_than(&self, key: &(i64, String), ticket: Ticket) -> bool {
        self.entries.get(key).is_some_and(|r| r.newer_than(ticket))
    }

    /// The last journaled change to the node not on the server yet (0: none).
    pub fn pin_of(&self, ino: i64) -> u64 {
        self.nodes.get(&ino).map_or(0, |r| r.pin)
    }

    /// The journaled change an `fsync` of `ino` waits for (0: none): the
    /// node's last (its names among them), and the last that moved a
    /// directory or changed one's attributes, which may be an ancestor's.
    /// Changes reach the server in order, so every one before it goes too: a
    /// directory's creation comes before anything made in it.
    pub fn fsync_point(&self, ino: i64) -> u64 {
        let dirs = if self.dirs_changed > self.acked {
            self.dirs_changed
        } else {
            0
        };
        self.pin_of(ino).max(dirs)
    }

    /// Whether a local change to the node or the name is not on the server yet.
    pub fn is_pinned(&self, ino: i64) -> bool {
        self.nodes.get(&ino).is_some_and(|r| r.pin > 0)
    }
}
