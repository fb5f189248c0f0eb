//! The metadata replica: the nodes, names and complete directory listings this
//! mount has seen, so that lookup, getattr, readdir and readlink answer without
//! the server.
//!
//! A record is current while the change feed is followed (every change made
//! elsewhere invalidates what it touched), and only for a short TTL when it is
//! not, as before the feed existed. Invalidated records are kept, marked stale,
//! so cached files stay reachable while the server is not. Changes made
//! elsewhere only ever invalidate, never overwrite: the feed may deliver a
//! change older than what this mount just did itself, and the server stays the
//! one source of attributes.
//!
//! A node fetched from the server never replaces a newer one: a `getattr`
//! sent before an upload committed may answer after it, and must not put the
//! old size back. Newer is what this mount committed after the fetch began
//! (whether the feed is followed or not: a file retired after its upload is
//! sized by the replica alone), or, while the feed is followed, a later
//! server ctime, which every change moves.

mod local;
mod store;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use panproto::wire::{Change, ChangeKind, Node};

pub use store::replica_path;

/// A remembered value and when it was seen (None: stale, kept for offline use).
/// `pin`: the last journaled local change that set it, not yet on the server
/// (0: none); a pinned value is current whatever the TTL or the feed says,
/// since the server does not know it yet.
#[derive(Debug, Clone)]
struct Record<T> {
    value: T,
    seen: Option<Instant>,
    pin: u64,
    /// The journaled change that set the value, once the server committed
    /// it (0: none or long ago).
    synced: u64,
    /// This mount's own commit that set the value, by number (0: none): a
    /// fetch begun before it may answer after it with what came before.
    committed: u64,
}

impl<T> Record<T> {
    /// Whether the value is newer than an answer got with `ticket`: its
    /// change is not on the server yet, or was committed after the request
    /// began (the answer may not show it).
    fn newer_than(&self, ticket: Ticket) -> bool {
        self.pin > 0 || self.synced > ticket.acked
    }

    /// Whether this mount committed the value after a request with `ticket`
    /// began.
    fn committed_since(&self, ticket: Ticket) -> bool {
        self.committed > ticket.commits
    }
}

/// When a request began: what it fetches is trusted only if no change from
/// elsewhere arrived meanwhile.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ticket {
    epoch: u64,
    /// The last journaled change the server had committed.
    acked: u64,
    /// How many of this mount's own commits the replica had taken.
    commits: u64,
}

/// What the replica knows of a name.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    Found(Node),
    Missing,
    Unknown,
}

/// What the kernel must forget after changes made elsewhere (server inodes).
#[derive(Debug, Default, PartialEq)]
pub struct Invalidations {
    pub entries: Vec<(i64, String)>,
    pub attrs: Vec<i64>,
    /// Files whose content changed: their cached pages go too.
    pub data: Vec<i64>,
}

pub struct Replica {
    nodes: HashMap<i64, Record<Node>>,
    /// `None`: the name is known to be missing.
    entries: BTreeMap<(i64, String), Record<Option<i64>>>,
    /// Directories whose every entry is in `entries`.
    complete: HashMap<i64, Record<()>>,
    /// The feed position everything here is current to.
    cursor: Option<i64>,
    following: bool,
    /// Bumped by every change from elsewhere: an answer fetched across a bump
    /// may predate it, so it is kept stale.
    epoch: u64,
    fallback_ttl: Duration,
    dirty: bool,
    /// Values pinned by local changes, in journal order (see `local`).
    pins: VecDeque<(u64, local::Pin)>,
    /// The last journaled change the server committed.
    acked: u64,
    /// The last journaled change that moved a directory or changed one's
    /// attributes: every path below it depends on it (`fsync_point`).
    dirs_changed: u64,
    /// How many of this mount's own commits (`set_node`) were taken.
    commits: u64,
}

impl Replica {
    pub fn new(fallback_ttl: Duration) -> Self {
        Replica {
            nodes: HashMap::new(),
            entries: BTreeMap::new(),
            complete: HashMap::new(),
            cursor: None,
            following: false,
            epoch: 0,
            fallback_ttl,
            dirty: false,
            pins: VecDeque::new(),
            acked: 0,
            dirs_changed: 0,
            commits: 0,
        }
    }

    fn current<T>(&self, r: &Record<T>) -> bool {
        r.pin > 0
            || r.seen
                .is_some_and(|at| self.following || at.elapsed() < self.fallback_ttl)
    }

    /// When a value fetched with `ticket` counts as seen now.
    fn seen_if(&self, ticket: Ticket) -> Option<Instant> {
        self.settled(ticket).then(Instant::now)
    }

    /// A record of a value got with `ticket`.
    fn record<T>(&mut self, value: T, ticket: Ticket) -> Record<T> {
        self.dirty = true;
        Record {
            value,
            seen: self.seen_if(ticket),
            pin: 0,
            synced: 0,
            committed: 0,
        }
    }

    /// Taken before a request whose answer goes into the replica.
    pub fn ticket(&self) -> Ticket {
        Ticket {
            epoch: self.epoch,
            acked: self.acked,
            commits: self.commits,
        }
    }

    /// Whether no change from elsewhere arrived since the ticket was taken.
    pub fn settled(&self, ticket: Ticket) -> bool {
        ticket.epoch == self.epoch
    }

    pub fn following(&self) -> bool {
        self.following
    }

    pub fn cursor(&self) -> Option<i64> {
        self.cursor
    }

    /// Caught up with the feed at `cursor` (or no longer following it).
    pub fn set_following(&mut self, following: bool, cursor: Option<i64>) {
        self.following = following;
        if cursor.is_some() && cursor != self.cursor {
            self.cursor = cursor;
            self.dirty = true;
        }
    }

    /// Sizes: nodes, names, complete directories.
    pub fn counts(&self) -> (usize, usize, usize) {
        (self.nodes.len(), self.entries.len(), self.complete.len())
    }

    pub fn node(&self, ino: i64) -> Option<&Node> {
        self.nodes
            .get(&ino)
            .filter(|r| self.current(r))
            .map(|r| &r.value)
    }

    /// The node as last seen, current or not (for when the server is unreachable).
    pub fn last_seen(&self, ino: i64) -> Option<&Node> {
        self.nodes.get(&ino).map(|r| &r.value)
    }

    pub fn lookup(&self, parent: i64, name: &str) -> Lookup {
        match self.entries.get(&(parent, name.to_string())) {
            Some(r) if self.current(r) => match r.value.and_then(|ino| self.node(ino)) {
                Some(node) => Lookup::Found(node.clone()),
                None if r.value.is_none() => Lookup::Missing,
                None => Lookup::Unknown,
            },
            Some(_) => Lookup::Unknown,
            None if self.listed(parent) => Lookup::Missing,
            None => Lookup::Unknown,
        }
    }

    /// The node a name had when last seen, current or not.
    pub fn last_seen_entry(&self, parent: i64, name: &str) -> Option<i64> {
        self.entries
            .get(&(parent, name.to_string()))
            .and_then(|r| r.value)
    }

    /// The names recorded in `dir` (entries are ordered by directory, then name).
    fn names_in(&self, dir: i64) -> impl Iterator<Item = (&(i64, String), &Record<Option<i64>>)> {
        self.entries
            .range((dir, String::new())..)
            .take_while(move |((parent, _), _)| *parent == dir)
    }

    fn listed(&self, dir: i64) -> bool {
        self.complete.get(&dir).is_some_and(|r| self.current(r))
    }

    /// The whole listing, when it and every node in it are current.
    pub fn listing(&self, dir: i64) -> Option<Vec<(String, Node)>> {
        if !self.listed(dir) {
            return None;
        }
        let mut out = Vec::new();
        for ((_, name), r) in self.names_in(dir) {
            if r.value.is_none() {
                continue;
            }
            if !self.current(r) {
                return None;
            }
            out.push((name.clone(), self.node(r.value?)?.clone()));
        }
        Some(out)
    }

    /// A node fetched from the server: returns the value the replica holds
    /// now, which is the one it had when that is current and newer.
    pub fn put_node(&mut self, node: &Node, ticket: Ticket) -> Node {
        match self.nodes.get(&node.ino) {
            Some(r)
                if r.newer_than(ticket)
                    || (r.committed_since(ticket) && r.value.ctime >= node.ctime)
                    || (self.current(r) && r.value.ctime > node.ctime) =>
            {
                r.value.clone()
            }
            _ => {
                let record = self.record(node.clone(), ticket);
                self.nodes.insert(node.ino, record);
                node.clone()
            }
        }
    }

    /// A node as this mount's own change left it, in the server's answer to
    /// a request that began with `ticket`.
    pub fn set_node(&mut self, node: &Node, ticket: Ticket) {
        self.commits += 1;
        let commit = self.commits;
        if let Some(r) = self
            .nodes
            .get_mut(&node.ino)
            .filter(|r| r.newer_than(ticket) || r.committed_since(ticket))
        {
            // Attributes changed here since the request began (not synced
            // yet, or committed after the answer was made: an upload that
            // ran beside a chmod) stay; the content is the server's to say.
            r.value.take_content_of(node);
            r.committed = commit;
            self.dirty = true;
            return;
        }
        let mut record = self.record(node.clone(), ticket);
        record.committed = commit;
        self.nodes.insert(node.ino, record);
    }

    /// A name now leads to `ino` (None: it is missing).
    pub fn put_entry(&mut self, parent: i64, name: &str, ino: Option<i64>, ticket: Ticket) {
        let key = (parent, name.to_string());
        if self.entry_newer_than(&key, ticket) {
            return;
        }
        let record = self.record(ino, ticket);
        self.entries.insert((parent, name.to_string()), record);
    }

    /// A directory's whole listing, replacing what was known of it.
    pub fn put_listing(&mut self, dir: i64, listing: &[(String, Node)], ticket: Ticket) {
        // Names this mount changed that the listing may not show yet stay.
        let known: Vec<(i64, String)> = self
            .names_in(dir)
            .filter(|(_, r)| !r.newer_than(ticket))
            .map(|(key, _)| key.clone())
            .collect();
        for key in known {
            self.entries.remove(&key);
        }
        for (name, node) in listing {
            self.put_node(node, ticket);
            let key = (dir, name.clone());
            if !self.entry_newer_than(&key, ticket) {
                let record = self.record(Some(node.ino), ticket);
                self.entries.insert(key, record);
            }
        }
        if self.complete.get(&dir).is_some_and(|r| r.pin > 0) {
            return;
        }
        if self.settled(ticket) {
            let record = self.record((), ticket);
            self.complete.insert(dir, record);
        } else {
            self.forget_listing(dir);
        }
    }

    /// A new directory this mount made: known to be empty.
    pub fn put_empty_dir(&mut self, dir: i64, ticket: Ticket) {
        if self.settled(ticket) {
            let record = self.record((), ticket);
            self.complete.insert(dir, record);
        }
    }

    /// The node's attributes must be fetched again (its last value is kept).
    pub fn mark_stale(&mut self, ino: i64) {
        if let Some(r) = self.nodes.get_mut(&ino) {
            r.seen = None;
        }
    }

    /// Forgets what a name leads to; the directory's listing is no longer whole.
    pub fn forget_entry(&mut self, parent: i64, name: &str) {
        let key = (parent, name.to_string());
        if !self.entry_pinned(&key) {
            self.entries.remove(&key);
        }
        self.forget_listing(parent);
        self.dirty = true;
    }

    /// Where a node is known to be: a name this mount has seen for it.
    pub fn place_of(&self, ino: i64) -> Option<(i64, String)> {
        self.entries
            .iter()
            .find(|(_, r)| r.value == Some(ino))
            .map(|(key, _)| key.clone())
    }

    /// A change made elsewhere: forget what it touched.
    pub fn apply_foreign(&mut self, change: &Change, out: &mut Invalidations) {
        self.epoch += 1;
        self.dirty = true;
        let names = [
            change.parent.zip(change.name.clone()),
            change.new_parent.zip(change.new_name.clone()),
        ];
        for (parent, name) in names.into_iter().flatten() {
            let key = (parent, name);
            // Whatever the name led to lost or gained a link.
            if let Some(was) = self.entries.get(&key).and_then(|r| r.value) {
                self.mark_stale(was);
                out.attrs.push(was);
            }
            self.forget_unpinned(&key);
            // The listing misses the new name, and the directory's times moved.
            self.forget_listing(parent);
            self.mark_stale(parent);
            out.attrs.push(parent);
            out.entries.push(key);
        }
        self.mark_stale(change.ino);
        out.attrs.push(change.ino);
        if change.kind == ChangeKind::Content {
            out.data.push(change.ino);
        }
    }

    /// Forgets everything (the feed's cursor expired): returns what the kernel
    /// may hold, to be forgotten too.
    pub fn clear(&mut self) -> Invalidations {
        self.epoch += 1;
        self.dirty = true;
        let out = Invalidations {
            entries: self.entries.keys().cloned().collect(),
            attrs: self.nodes.keys().copied().collect(),
            data: Vec::new(),
        };
        for r in self.nodes.values_mut() {
            r.seen = None;
        }
        self.entries.retain(|_, r| r.value.is_some() || r.pin > 0);
        for r in self.entries.values_mut() {
            r.seen = None;
        }
        self.complete.retain(|_, r| r.pin > 0);
        for r in self.complete.values_mut() {
            r.seen = None;
        }
        self.cursor = None;
        out
    }
}

#[cfg(test)]
mod tests;
