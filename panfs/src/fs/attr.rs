//! Attributes as the kernel sees them: the server's node, with the local truth
//! of a file being written (its size, times and blocks) laid over it.

use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use panproto::wire::{Node, NodeKind};

use super::files::Body;
use super::{PanFs, lock};
use crate::replica::Ticket;

/// Attributes as the kernel wants them.
#[derive(Debug, Clone)]
pub struct Attr {
    pub ino: u64,
    pub kind: NodeKind,
    pub size: u64,
    pub atime: SystemTime,
    pub mtime: SystemTime,
    pub ctime: SystemTime,
    pub perm: u16,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u32,
    /// 512-byte blocks stored: holes cost none.
    pub blocks: u64,
    /// False when a change made elsewhere arrived while these were fetched:
    /// they may predate it, so the kernel keeps them only briefly.
    pub settled: bool,
}

pub(super) fn to_time(ns: i64) -> SystemTime {
    if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    } else {
        UNIX_EPOCH - Duration::from_nanos(ns.unsigned_abs())
    }
}

pub fn from_time(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i64,
        Err(e) => -(e.duration().as_nanos() as i64),
    }
}

/// Now, in ns since the epoch, as the server and the journal count times.
pub(crate) fn now_ns() -> i64 {
    from_time(SystemTime::now())
}

impl PanFs {
    pub(super) fn attr_of(&self, node: &Node) -> Attr {
        // The tables stay locked until the file's state is read (the lock
        // order allows it): a working copy retired in between would leave an
        // empty body that agrees with a `node` read before its commit, and
        // the kernel would cache size 0 for a file just written.
        let mut t = lock(&self.tables);
        let open = t.files.get(&node.ino).cloned();
        // A file changed elsewhere while open here keeps the version its
        // handles read until the last close: a newer size would make the
        // kernel cut those reads short. Otherwise `node` may have been
        // read before a working copy was dropped (its commit went to the
        // replica first): the replica's current node is what this mount
        // knows now.
        let known = match (t.deferred.get(&node.ino), &open) {
            (Some(held), _) => Some(held.clone()),
            (None, Some(_)) => None,
            (None, None) => t.replica.node(node.ino).cloned(),
        };
        let node = known.as_ref().unwrap_or(node);
        let mut attr = Attr {
            ino: self.to_fuse(node.ino),
            kind: node.kind,
            size: node.size.max(0) as u64,
            atime: to_time(node.atime),
            mtime: to_time(node.mtime),
            ctime: to_time(node.ctime),
            perm: (node.mode & 0o7777) as u16,
            nlink: node.nlink,
            uid: node.uid,
            gid: node.gid,
            rdev: node.rdev,
            blocks: match node.kind {
                NodeKind::File => node.stored_bytes.max(0) as u64,
                _ => node.size.max(0) as u64,
            }
            .div_ceil(512),
            settled: true,
        };
        if node.ino == self.root {
            attr.uid = self.opts.uid;
            attr.gid = self.opts.gid;
        }
        let Some(file) = open else {
            return attr;
        };
        // While a working copy exists it is the truth (it may hold unsent writes).
        // Its lock is only ever held briefly, never across a request.
        let mut f = lock(&file.state);
        if let Err(e) = f.see_direct_writes() {
            tracing::warn!(
                error = e.chain(),
                "a stat could not take in passthrough writes"
            );
        }
        let read_version = match &f.body {
            Body::Local { shadow, .. } => {
                attr.size = shadow.size();
                attr.mtime = to_time(shadow.record.mtime);
                attr.ctime = to_time(node.ctime.max(shadow.record.ctime));
                attr.blocks = shadow
                    .size()
                    .saturating_sub(shadow.record.zeros.total())
                    .div_ceil(512);
                None
            }
            Body::Remote { content, size } if *content != node.content => {
                Some((content.clone(), *size))
            }
            Body::Remote { .. } => None,
        };
        // The server has a newer version than the open handles read (fetched
        // by a stat before the change feed told this mount): the kernel gets
        // the size of the version read, or it would cut those reads short, and
        // learns of the new one at the last close, as for a change the feed
        // brought.
        if let Some((content, size)) = read_version
            && file.opens.load(Ordering::SeqCst) > 0
        {
            attr.size = size;
            let mut held = node.clone();
            held.content = content;
            held.size = size as i64;
            t.deferred.entry(node.ino).or_insert(held);
        }
        attr
    }

    /// A node as this mount's own request returned it.
    pub(super) fn remember(&self, node: &Node) {
        let mut t = lock(&self.tables);
        let now = t.replica.ticket();
        t.replica.set_node(node, now);
    }

    /// A node as this mount's own request that set no content (an extended
    /// attribute's change, a chmod) returned it; the request began with
    /// `ticket`. It never takes back content that an upload of this mount
    /// committed while the request was on its way (rsync's `lsetxattr` on
    /// its temporary file, answered after the file's upload, once made the
    /// file read back empty).
    pub(super) fn remember_without_content(&self, node: &Node, ticket: Ticket) {
        lock(&self.tables)
            .replica
            .answered_without_content(node, ticket);
    }

    /// A node fetched by a request that began with `ticket`: the value the
    /// replica holds afterwards (newer, when this mount changed it meanwhile).
    pub(super) fn remember_since(&self, node: &Node, ticket: Ticket) -> Node {
        lock(&self.tables).replica.put_node(node, ticket)
    }

    /// The node's attributes changed on the server: fetch them again.
    pub(super) fn forget_node(&self, ino: i64) {
        lock(&self.tables).replica.mark_stale(ino);
    }

    pub(super) fn ticket(&self) -> Ticket {
        lock(&self.tables).replica.ticket()
    }

    /// Whether no change from elsewhere arrived since the ticket was taken.
    pub(super) fn settled(&self, ticket: Ticket) -> bool {
        lock(&self.tables).replica.settled(ticket)
    }
}
