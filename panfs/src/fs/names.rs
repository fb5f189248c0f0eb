//! The namespace: looking names up, making and removing nodes, renames,
//! attribute changes. Names and attributes seen are cached for the TTLs, and
//! kept (stale) so cached files stay reachable while the server is not.

use std::sync::atomic::Ordering;
use std::time::SystemTime;

use panproto::batch::BatchOp;
use panproto::wire::{CreateRequest, Node, NodeKind, RenameMode, RenameRequest, SetAttrRequest};

use super::attr::{from_time, now_ns};
use super::files::{Body, Life, PageCache};
use super::passthrough::Io;
use super::{Attr, FsError, FsResult, Owner, PanFs, StatFs, Tables, check_name, lock, mknod_kind};
use crate::replica::{Lookup, Ticket};

/// After this many names the server said were missing in a directory not
/// listed here, it is listed: a process making files in it (a `cp`, an
/// unpack, an editor's temporary files) asks the server before each create
/// otherwise. A lookup that finds its name never counts, so a `stat` of a
/// known path in a huge directory does not list it.
const LIST_AFTER_MISSES: u32 = 4;
/// Directories whose misses are counted at once; past it the counts start over.
const MISSES_TRACKED: usize = 1024;

/// A setattr: each field that is set changes.
#[derive(Debug, Clone, Default)]
pub struct AttrChange {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<SystemTime>,
    pub mtime: Option<SystemTime>,
}

impl Owner {
    fn request(
        self,
        name: &str,
        kind: NodeKind,
        mode: u32,
        target: Option<String>,
    ) -> CreateRequest {
        CreateRequest {
            name: name.to_string(),
            kind,
            mode,
            uid: self.uid,
            gid: self.gid,
            target,
            rdev: 0,
        }
    }
}

impl PanFs {
    pub fn lookup(&self, parent: u64, name: &str) -> FsResult<Attr> {
        check_name(name)?;
        let parent = self.to_server(parent);
        let (known, ticket) = {
            let t = lock(&self.tables);
            (t.replica.lookup(parent, name), t.replica.ticket())
        };
        match known {
            Lookup::Found(node) => return Ok(self.attr_of(&node)),
            Lookup::Missing => return Err(FsError::new(libc::ENOENT, "no such entry (known)")),
            Lookup::Unknown => {}
        }
        match self.block_on(self.remote.lookup(parent, name)) {
            Ok(node) => {
                let mut t = lock(&self.tables);
                let node = t.replica.put_node(&node, ticket);
                t.replica.put_entry(parent, name, Some(node.ino), ticket);
                let settled = t.replica.settled(ticket);
                drop(t);
                let mut attr = self.attr_of(&node);
                attr.settled = settled;
                Ok(attr)
            }
            Err(e) => {
                let e = FsError::from(e);
                if e.errno() == libc::ENOENT {
                    let mut t = lock(&self.tables);
                    t.replica.put_entry(parent, name, None, ticket);
                    if self.worth_listing(&mut t, parent) {
                        drop(t);
                        // Only a cache: a failed listing leaves lookups as they were.
                        if let Err(e) = self.list_dir(parent) {
                            tracing::debug!(dir = parent, error = e.chain(), "listing failed");
                        }
                    }
                    return Err(e);
                }
                if e.errno() != libc::EIO {
                    return Err(e);
                }
                // Unreachable server: what was seen last answers (offline work).
                let cached = lock(&self.tables).replica.last_seen_lookup(parent, name);
                match cached {
                    Lookup::Found(node) => Ok(self.attr_of(&node)),
                    // Local-first only: strict mode answers what the server says.
                    Lookup::Missing if self.sync.is_some() => {
                        Err(FsError::new(libc::ENOENT, "no such entry (last seen)"))
                    }
                    _ => Err(e),
                }
            }
        }
    }

    /// Counts a name the server said is missing in `dir`, which the replica
    /// does not have whole: true when the directory is worth listing, so later
    /// new names in it (a process making files there) are known missing
    /// without asking the server each time. Only while the feed is followed,
    /// which keeps a listing current.
    fn worth_listing(&self, t: &mut Tables, dir: i64) -> bool {
        if !t.replica.following() {
            return false;
        }
        if t.misses.len() >= MISSES_TRACKED {
            t.misses.clear();
        }
        let misses = t.misses.entry(dir).or_default();
        *misses += 1;
        if *misses < LIST_AFTER_MISSES {
            return false;
        }
        t.misses.remove(&dir);
        true
    }

    /// A node's attributes: from the replica when current (and `fresh` is not
    /// asked for), else from the server.
    pub(super) fn node(&self, ino: i64, fresh: bool) -> FsResult<Node> {
        let (known, ticket) = {
            let t = lock(&self.tables);
            let known = t.deferred.get(&ino).or_else(|| t.replica.node(ino));
            (known.cloned(), t.replica.ticket())
        };
        let pinned = lock(&self.tables).replica.is_pinned(ino);
        if let Some(node) = known
            && (!fresh || pinned)
        {
            // A node changed here and not synced yet is newer than the server's.
            return Ok(node);
        }
        match self.block_on(self.remote.node(ino)) {
            Ok(node) => {
                let held = self.remember_since(&node, ticket);
                // An open asks for the server's version itself (close-to-open
                // weighs it against this mount's commits by ctime); a stat gets
                // the replica's node when that is newer than the answer.
                Ok(if fresh { node } else { held })
            }
            Err(e) => {
                let e = FsError::from(e);
                let t = lock(&self.tables);
                let cached = t.replica.last_seen(ino).cloned();
                let held_open = t
                    .files
                    .get(&ino)
                    .is_some_and(|f| f.opens.load(Ordering::SeqCst) > 0);
                match cached {
                    // Unreachable server: what was seen last is still readable.
                    Some(node) if e.errno() == libc::EIO => Ok(node),
                    // Unlinked while open here: the server may have dropped it, or
                    // never had it (made and removed before a sync), but the open
                    // handles still use it, as on a local disk.
                    Some(mut node) if e.errno() == libc::ENOENT && held_open => {
                        node.nlink = 0;
                        Ok(node)
                    }
                    _ => Err(e),
                }
            }
        }
    }

    pub fn getattr(&self, ino: u64) -> FsResult<Attr> {
        let ticket = self.ticket();
        let node = self.node(self.to_server(ino), false)?;
        let mut attr = self.attr_of(&node);
        attr.settled = self.settled(ticket);
        Ok(attr)
    }

    pub fn readlink(&self, ino: u64) -> FsResult<String> {
        let node = self.node(self.to_server(ino), false)?;
        node.target
            .ok_or_else(|| FsError::new(libc::EINVAL, "not a symlink"))
    }

    /// This mount added a name (a new node, or a link); the request began with `ticket`.
    fn entry_added(&self, parent: i64, name: &str, node: &Node, ticket: Ticket) {
        let mut t = lock(&self.tables);
        t.replica.set_node(node, ticket);
        t.replica.put_entry(parent, name, Some(node.ino), ticket);
        if node.kind == NodeKind::Dir {
            t.replica.put_empty_dir(node.ino, ticket);
        }
        // The directory's times moved on the server.
        t.replica.mark_stale(parent);
    }

    /// This mount removed a name.
    pub(super) fn entry_removed(&self, parent: i64, name: &str, ticket: Ticket) {
        let mut t = lock(&self.tables);
        t.replica.put_entry(parent, name, None, ticket);
        t.replica.mark_stale(parent);
    }

    /// The node a name leads to: from the replica when current, else the server.
    fn entry_node(&self, parent: i64, name: &str) -> Option<Node> {
        let known = lock(&self.tables).replica.lookup(parent, name);
        match known {
            Lookup::Found(node) => Some(node),
            Lookup::Missing => None,
            Lookup::Unknown => self.block_on(self.remote.lookup(parent, name)).ok(),
        }
    }

    /// Where a file is known to be: a name this mount has seen for it.
    pub(super) fn place_of(&self, ino: i64) -> Option<(i64, String)> {
        lock(&self.tables).replica.place_of(ino)
    }

    pub(super) fn make(&self, parent: i64, req: CreateRequest) -> FsResult<Node> {
        check_name(&req.name)?;
        if let Some(s) = &self.sync {
            return self.make_local(s, parent, req);
        }
        let ticket = self.ticket();
        let node = self.block_on(self.remote.create(parent, &req))?;
        self.entry_added(parent, &req.name, &node, ticket);
        Ok(node)
    }

    pub fn mkdir(&self, parent: u64, name: &str, mode: u32, owner: Owner) -> FsResult<Attr> {
        let req = owner.request(name, NodeKind::Dir, mode, None);
        let node = self.make(self.to_server(parent), req)?;
        Ok(self.attr_of(&node))
    }

    pub fn symlink(&self, parent: u64, name: &str, target: &str, owner: Owner) -> FsResult<Attr> {
        let req = owner.request(name, NodeKind::Symlink, 0o777, Some(target.to_string()));
        let node = self.make(self.to_server(parent), req)?;
        Ok(self.attr_of(&node))
    }

    /// A FIFO, socket or device node (metadata only), or a regular file.
    pub fn mknod(
        &self,
        parent: u64,
        name: &str,
        mode: u32,
        rdev: u32,
        owner: Owner,
    ) -> FsResult<Attr> {
        let kind = mknod_kind(mode)?;
        let mut req = owner.request(name, kind, mode & 0o7777, None);
        req.rdev = rdev;
        let node = self.make(self.to_server(parent), req)?;
        Ok(self.attr_of(&node))
    }

    pub fn create(
        &self,
        parent: u64,
        name: &str,
        mode: u32,
        owner: Owner,
        flags: i32,
    ) -> FsResult<(Attr, u64, Io)> {
        let req = owner.request(name, NodeKind::File, mode, None);
        let parent = self.to_server(parent);
        let node = self.make(parent, req)?;
        let place = Some((parent, name.to_string()));
        let (fh, io) = self.open_node(&node, flags, PageCache::Drop, place)?;
        Ok((self.attr_of(&node), fh, io))
    }

    pub fn link(&self, ino: u64, parent: u64, name: &str) -> FsResult<Attr> {
        check_name(name)?;
        let (ino, parent) = (self.to_server(ino), self.to_server(parent));
        if let Some(s) = &self.sync {
            let node = self.link_local(s, ino, parent, name)?;
            return Ok(self.attr_of(&node));
        }
        let ticket = self.ticket();
        let node = self.block_on(self.remote.link(ino, parent, name))?;
        self.entry_added(parent, name, &node, ticket);
        Ok(self.attr_of(&node))
    }

    pub fn unlink(&self, parent: u64, name: &str, dir: bool) -> FsResult<()> {
        check_name(name)?;
        let parent = self.to_server(parent);
        if let Some(s) = &self.sync {
            let victim = self.remove_local(s, parent, name, dir)?;
            self.forget_gone(&victim);
            return Ok(());
        }
        let victim = self.entry_node(parent, name);
        let ticket = self.ticket();
        self.block_on(self.remote.remove(parent, name, dir))?;
        self.entry_removed(parent, name, ticket);
        if let Some(v) = victim {
            self.forget_gone(&v);
        }
        Ok(())
    }

    /// A node whose name was removed or replaced. When that was a file's last
    /// link, its unsent writes die with it, as on a local disk: the working copy
    /// goes now if nothing holds it open, else at the last close.
    fn forget_gone(&self, node: &Node) {
        self.forget_node(node.ino);
        if node.kind != NodeKind::File || node.nlink > 1 {
            return;
        }
        let mut t = lock(&self.tables);
        let Some(file) = t.files.get(&node.ino).cloned() else {
            return;
        };
        let mut f = lock(&file.state);
        f.life = Life::Orphaned;
        if let Body::Local { shadow, .. } = &mut f.body {
            shadow.forget_journal();
        }
        if file.opens.load(Ordering::SeqCst) > 0 {
            return;
        }
        // An upload in flight finds the node gone and leaves the copy alone.
        if let Body::Local { shadow, .. } = std::mem::replace(&mut f.body, Body::empty()) {
            shadow.discard();
        }
        drop(f);
        t.files.remove(&node.ino);
    }

    pub fn rename(
        &self,
        parent: u64,
        name: &str,
        new_parent: u64,
        new_name: &str,
        mode: RenameMode,
    ) -> FsResult<()> {
        check_name(name)?;
        check_name(new_name)?;
        let req = RenameRequest {
            parent: self.to_server(parent),
            name: name.to_string(),
            new_parent: self.to_server(new_parent),
            new_name: new_name.to_string(),
            mode,
        };
        if let Some(s) = &self.sync {
            let from = (req.parent, name);
            let to = (req.new_parent, new_name);
            match self.rename_local(s, from, to, mode)? {
                Some(replaced) => {
                    match replaced {
                        Some(v) if mode == RenameMode::Exchange => self.forget_node(v.ino),
                        Some(v) => self.forget_gone(&v),
                        None => {}
                    }
                    return Ok(());
                }
                // Only the server can decide it: it gets every change before it first.
                None => self.settle()?,
            }
        }
        let replaced = self.entry_node(req.new_parent, new_name);
        let moved = self.entry_node(req.parent, name);
        let ticket = self.ticket();
        self.block_on(self.remote.rename(&req))?;
        {
            let mut t = lock(&self.tables);
            let left_behind = match (mode, &replaced) {
                (RenameMode::Exchange, Some(other)) => Some(other.ino),
                _ => None,
            };
            match &moved {
                Some(m) => {
                    t.replica.put_entry(req.parent, name, left_behind, ticket);
                    t.replica
                        .put_entry(req.new_parent, new_name, Some(m.ino), ticket);
                }
                // Not known which node moved: both names are asked for again.
                None => {
                    t.replica.forget_entry(req.parent, name);
                    t.replica.forget_entry(req.new_parent, new_name);
                }
            }
            for dir in [req.parent, req.new_parent] {
                t.replica.mark_stale(dir);
            }
            // A rename changes the moved inode's ctime on the server.
            if let Some(m) = &moved {
                t.replica.mark_stale(m.ino);
            }
        }
        match replaced {
            // Exchanged, not replaced: the other node lives on under the old name.
            Some(v) if mode == RenameMode::Exchange => self.forget_node(v.ino),
            Some(v) => self.forget_gone(&v),
            None => {}
        }
        Ok(())
    }

    pub fn setattr(&self, ino: u64, change: AttrChange) -> FsResult<Attr> {
        let AttrChange {
            mode,
            uid,
            gid,
            size,
            atime,
            mtime,
        } = change;
        let ino = self.to_server(ino);
        let mut req = SetAttrRequest {
            mode,
            uid,
            gid,
            size: None,
            atime: atime.map(from_time),
            mtime: mtime.map(from_time),
        };
        let open = lock(&self.tables).files.get(&ino).cloned();
        if let Some(size) = size {
            match &open {
                // The size lives in the working copy until the next upload.
                Some(file) => {
                    let mtime = req.mtime.unwrap_or_else(now_ns);
                    self.with_copy(ino, file, size > 0, |shadow| {
                        shadow
                            .set_size(size, mtime)
                            .map_err(|e| FsError::local("resizing the working copy", e))
                    })?;
                }
                None => req.size = Some(size as i64),
            }
        }
        let only_size = req.mode.is_none()
            && req.uid.is_none()
            && req.gid.is_none()
            && req.atime.is_none()
            && req.mtime.is_none()
            && req.size.is_none();
        let node = if only_size {
            let node = self.node(ino, false)?;
            self.remember(&node);
            node
        } else if let Some(s) = self.sync.as_ref().filter(|_| req.size.is_none()) {
            self.node(ino, false)?;
            let op = BatchOp::SetAttr {
                ino,
                mode: req.mode,
                uid: req.uid,
                gid: req.gid,
                atime: req.atime,
                mtime: req.mtime,
            };
            self.journal(s, op)?;
            self.held(ino)?
        } else {
            // A truncation of a file not open here is the server's to make,
            // once it has the node's journaled changes.
            self.settle_node(ino)?;
            let ticket = self.ticket();
            let node = self.block_on(self.remote.set_attr(ino, &req))?;
            if req.size.is_some() {
                self.remember(&node);
            } else {
                self.remember_without_content(&node, ticket);
            }
            node
        };
        if let (Some(file), Some(m)) = (open, req.mtime)
            && let Body::Local { shadow, .. } = &mut lock(&file.state).body
        {
            shadow.set_mtime(m);
        }
        Ok(self.attr_of(&node))
    }

    pub fn statfs(&self) -> FsResult<StatFs> {
        let info = self.block_on(self.remote.user_info())?;
        let count = |n: i64| n.max(0) as u64;
        // Without a quota, the drive shows as a large one.
        let or_large = |quota: u64, large: u64| if quota > 0 { quota } else { large };
        let blocks = or_large(count(info.quota_bytes), 1 << 50) / StatFs::BLOCK;
        let files = or_large(count(info.quota_files), 1 << 32);
        Ok(StatFs {
            blocks,
            free_blocks: blocks.saturating_sub(count(info.used_bytes).div_ceil(StatFs::BLOCK)),
            files,
            free_files: files.saturating_sub(count(info.used_files)),
        })
    }
}
