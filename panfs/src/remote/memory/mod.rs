//! A whole pan server in memory, for tests of the file-system logic without a
//! server, root or FUSE. It keeps the server's rules that panfs relies on (the
//! contract suite checks both against each other): error codes, link counts,
//! ctime on every change, conditional commits, readable past versions, and
//! chunk-level deduplication.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use panproto::batch::{BatchRequest, BatchResponse, Reserved};
use panproto::wire::{
    ChangeKind, ChangesResponse, CommitRequest, CreateRequest, DirEntry, ErrorCode, Manifest, Node,
    NodeKind, RenameMode, RenameRequest, SetAttrRequest, UploadInit, UploadState, UserInfo,
    XattrMode,
};

use super::{FeedPage, IfContent, Remote, RemoteResult};

mod batch;
mod state;

use state::{Session, State, blank, check_name, refused};

const ROOT: i64 = 1;

pub struct MemoryRemote {
    state: Arc<Mutex<State>>,
    /// This client's number in the feed (each client of one state has its own).
    origin: u64,
}

static NEXT_ORIGIN: AtomicU64 = AtomicU64::new(1);

impl Default for MemoryRemote {
    fn default() -> Self {
        let mut state = State {
            next_ino: ROOT + 1,
            ..State::default()
        };
        let now = state.tick();
        state
            .nodes
            .insert(ROOT, blank(ROOT, NodeKind::Dir, 0o755, now));
        Self {
            state: Arc::new(Mutex::new(state)),
            origin: NEXT_ORIGIN.fetch_add(1, Ordering::Relaxed),
        }
    }
}

impl MemoryRemote {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The inode of the user's root directory.
    pub fn root(&self) -> i64 {
        ROOT
    }

    /// Another client of the same server (another mount, or the HTTP API).
    pub fn another_client(&self) -> Self {
        Self {
            state: self.state.clone(),
            origin: NEXT_ORIGIN.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// Forgets every change so far, as retention does: older cursors expire.
    pub fn expire_feed(&self) {
        let mut state = self.lock();
        state.feed_floor = state.feed_seq();
        state.feed.clear();
    }

    /// The bytes a file holds now (what another client would read).
    pub fn bytes(&self, ino: i64) -> Option<Vec<u8>> {
        let state = self.lock();
        let content = state.nodes.get(&ino)?.content.clone()?;
        Some(state.contents.get(&content)?.bytes.clone())
    }

    /// Upload sessions neither committed nor ended.
    pub fn live_sessions(&self) -> usize {
        self.lock().sessions.len()
    }
}

#[async_trait]
impl Remote for MemoryRemote {
    fn origin(&self) -> u64 {
        self.origin
    }

    /// Answers at once; with nothing new it pauses briefly, as a short long poll.
    async fn changes(&self, since: Option<i64>, wait: Duration) -> RemoteResult<FeedPage> {
        let page = {
            let state = self.lock();
            let current = state.feed_seq();
            let Some(since) = since else {
                return Ok(FeedPage::Changes(ChangesResponse {
                    seq: current,
                    changes: Vec::new(),
                    more: false,
                }));
            };
            if since < state.feed_floor || since > current {
                return Ok(FeedPage::Expired { current });
            }
            let changes = state.feed[(since - state.feed_floor) as usize..].to_vec();
            ChangesResponse {
                seq: current,
                changes,
                more: false,
            }
        };
        if page.changes.is_empty() {
            tokio::time::sleep(wait.min(Duration::from_millis(20))).await;
        }
        Ok(FeedPage::Changes(page))
    }

    async fn user_info(&self) -> RemoteResult<UserInfo> {
        let state = self.lock();
        Ok(UserInfo {
            id: 1,
            username: "memory".into(),
            created_at: 0,
            root_ino: ROOT,
            used_bytes: state.nodes.values().map(|n| n.size).sum(),
            used_files: state.nodes.values().filter(|n| n.nlink > 0).count() as i64,
            quota_bytes: i64::MAX,
            quota_files: i64::MAX,
        })
    }

    async fn node(&self, ino: i64) -> RemoteResult<Node> {
        self.lock().node(ino).cloned()
    }

    async fn lookup(&self, parent: i64, name: &str) -> RemoteResult<Node> {
        check_name(name)?;
        let state = self.lock();
        let ino = state.child(parent, name)?;
        state.node(ino).cloned()
    }

    async fn list(&self, dir: i64) -> RemoteResult<Vec<DirEntry>> {
        let state = self.lock();
        state.dir(dir)?;
        Ok(state
            .entries
            .range((dir, String::new())..)
            .take_while(|((p, _), _)| *p == dir)
            .filter_map(|((_, name), ino)| {
                Some(DirEntry {
                    name: name.clone(),
                    node: state.nodes.get(ino)?.clone(),
                })
            })
            .collect())
    }

    async fn create(&self, parent: i64, req: &CreateRequest) -> RemoteResult<Node> {
        self.create_node(parent, req, None)
    }

    async fn link(&self, ino: i64, parent: i64, name: &str) -> RemoteResult<Node> {
        check_name(name)?;
        let mut state = self.lock();
        if state.live(ino)?.kind == NodeKind::Dir {
            return Err(refused(ErrorCode::NotPermitted));
        }
        state.dir(parent)?;
        let key = (parent, name.to_string());
        if state.entries.contains_key(&key) {
            return Err(refused(ErrorCode::Exists));
        }
        let now = state.tick();
        state.entries.insert(key, ino);
        state.touch_dir(parent, now);
        let node = state.node_mut(ino)?;
        node.nlink += 1;
        node.ctime = now;
        let node = node.clone();
        state.record(
            self.origin,
            ChangeKind::Link,
            ino,
            Some((parent, name)),
            None,
        );
        Ok(node)
    }

    async fn remove(&self, parent: i64, name: &str, dir: bool) -> RemoteResult<()> {
        check_name(name)?;
        let mut state = self.lock();
        let ino = state.child(parent, name)?;
        let is_dir = state.node(ino)?.kind == NodeKind::Dir;
        match (dir, is_dir) {
            (true, false) => return Err(refused(ErrorCode::NotDir)),
            (false, true) => return Err(refused(ErrorCode::IsDir)),
            (true, true) if !state.is_empty_dir(ino) => return Err(refused(ErrorCode::NotEmpty)),
            _ => {}
        }
        let now = state.tick();
        state.entries.remove(&(parent, name.to_string()));
        if is_dir {
            state.node_mut(parent)?.nlink -= 1;
        }
        state.touch_dir(parent, now);
        state.unlink(ino, now);
        state.record(
            self.origin,
            ChangeKind::Remove,
            ino,
            Some((parent, name)),
            None,
        );
        Ok(())
    }

    async fn rename(&self, req: &RenameRequest) -> RemoteResult<()> {
        check_name(&req.name)?;
        check_name(&req.new_name)?;
        let mut state = self.lock();
        let ino = state.child(req.parent, &req.name)?;
        state.dir(req.new_parent)?;
        let to = (req.new_parent, req.new_name.clone());
        let target = state.entries.get(&to).copied();
        let moving_dir = state.node(ino)?.kind == NodeKind::Dir;
        // A directory may not move below itself.
        let mut up = Some(req.new_parent);
        while let Some(dir) = up.filter(|_| moving_dir) {
            if dir == ino {
                return Err(refused(ErrorCode::BadRequest));
            }
            up = state
                .entries
                .iter()
                .find(|(_, child)| **child == dir)
                .map(|((p, _), _)| *p);
        }
        let now = state.tick();
        match (req.mode, target) {
            (_, Some(t)) if t == ino => return Ok(()),
            (RenameMode::NoReplace, Some(_)) => return Err(refused(ErrorCode::Exists)),
            (RenameMode::Exchange, None) => return Err(refused(ErrorCode::NotFound)),
            (RenameMode::Exchange, Some(t)) => {
                state.entries.insert((req.parent, req.name.clone()), t);
                state.entries.insert(to, ino);
                state.node_mut(t)?.ctime = now;
            }
            (RenameMode::Replace, Some(t)) => {
                let target_dir = state.node(t)?.kind == NodeKind::Dir;
                match (moving_dir, target_dir) {
                    (true, false) => return Err(refused(ErrorCode::NotDir)),
                    (false, true) => return Err(refused(ErrorCode::IsDir)),
                    (true, true) if !state.is_empty_dir(t) => {
                        return Err(refused(ErrorCode::NotEmpty));
                    }
                    _ => {}
                }
                if target_dir {
                    state.node_mut(req.new_parent)?.nlink -= 1;
                }
                state.entries.remove(&(req.parent, req.name.clone()));
                state.entries.insert(to, ino);
                state.unlink(t, now);
            }
            (_, None) => {
                state.entries.remove(&(req.parent, req.name.clone()));
                state.entries.insert(to, ino);
            }
        }
        if moving_dir && req.parent != req.new_parent && req.mode != RenameMode::Exchange {
            state.node_mut(req.parent)?.nlink -= 1;
            state.node_mut(req.new_parent)?.nlink += 1;
        }
        state.touch_dir(req.parent, now);
        state.touch_dir(req.new_parent, now);
        state.node_mut(ino)?.ctime = now;
        let (from, to) = (
            (req.parent, req.name.as_str()),
            (req.new_parent, req.new_name.as_str()),
        );
        state.record(self.origin, ChangeKind::Rename, ino, Some(from), Some(to));
        Ok(())
    }

    async fn set_attr(&self, ino: i64, req: &SetAttrRequest) -> RemoteResult<Node> {
        let mut state = self.lock();
        if let Some(size) = req.size {
            let node = state.file(ino)?;
            let mut bytes = match &node.content {
                Some(c) => state.contents.get(c).map(|c| c.bytes.clone()),
                None => None,
            }
            .unwrap_or_default();
            bytes.resize(size.max(0) as usize, 0);
            let chunks = state.store(&bytes);
            state.set_content(ino, chunks, bytes, req.mtime, None)?;
            state.record(self.origin, ChangeKind::Content, ino, None, None);
        }
        let now = state.tick();
        let node = state.node_mut(ino)?;
        if let Some(mode) = req.mode {
            node.mode = mode & 0o7777;
        }
        node.uid = req.uid.unwrap_or(node.uid);
        node.gid = req.gid.unwrap_or(node.gid);
        node.atime = req.atime.unwrap_or(node.atime);
        node.mtime = req.mtime.unwrap_or(node.mtime);
        node.ctime = now;
        let node = node.clone();
        state.record(self.origin, ChangeKind::Attr, ino, None, None);
        Ok(node)
    }

    async fn manifest(&self, ino: i64) -> RemoteResult<Manifest> {
        let state = self.lock();
        let node = state.file(ino)?;
        let chunks = match &node.content {
            Some(c) => state
                .contents
                .get(c)
                .map(|c| c.chunks.clone())
                .unwrap_or_default(),
            None => Vec::new(),
        };
        Ok(Manifest {
            content: node.content.clone(),
            size: node.size,
            chunks,
        })
    }

    async fn read(&self, ino: i64, content: &str, start: u64, end: u64) -> RemoteResult<Bytes> {
        let state = self.lock();
        state.file(ino)?;
        let bytes = &state
            .contents
            .get(content)
            .ok_or_else(|| refused(ErrorCode::Changed))?
            .bytes;
        if start >= bytes.len() as u64 {
            return Err(refused(ErrorCode::RangeNotSatisfiable));
        }
        let end = end.min(bytes.len() as u64);
        Ok(Bytes::copy_from_slice(&bytes[start as usize..end as usize]))
    }

    async fn put_content(
        &self,
        ino: i64,
        body: Bytes,
        mtime: i64,
        if_content: IfContent<'_>,
    ) -> RemoteResult<Node> {
        let mut state = self.lock();
        state.file(ino)?;
        let chunks = state.store(&body);
        let node = state.set_content(ino, chunks, body.to_vec(), Some(mtime), if_content)?;
        state.record(self.origin, ChangeKind::Content, ino, None, None);
        Ok(node)
    }

    async fn begin_upload(&self, init: &UploadInit) -> RemoteResult<UploadState> {
        let mut state = self.lock();
        state.file(init.ino)?;
        let id = format!("session-{}", state.tick());
        state.sessions.insert(
            id.clone(),
            Session {
                ino: init.ino,
                chunks: init.chunks.clone(),
            },
        );
        state.upload_state(&id)
    }

    async fn put_chunk(&self, session: &str, sha256: &str, body: Bytes) -> RemoteResult<()> {
        let mut state = self.lock();
        state.upload_state(session)?;
        if panproto::sha256_hex(&body) != sha256 {
            return Err(refused(ErrorCode::HashMismatch));
        }
        state.chunks.insert(sha256.to_string(), body);
        Ok(())
    }

    async fn prove(&self, session: &str, _proof: &str) -> RemoteResult<UploadState> {
        self.lock().upload_state(session)
    }

    async fn commit(&self, session: &str, req: &CommitRequest) -> RemoteResult<Node> {
        let mut state = self.lock();
        if !state.upload_state(session)?.missing.is_empty() {
            return Err(refused(ErrorCode::Incomplete));
        }
        let Some(session) = state.sessions.remove(session) else {
            return Err(refused(ErrorCode::UploadGone));
        };
        let bytes = state.bytes_of(&session.chunks)?;
        let if_content = req.if_content.as_ref().map(|c| c.as_deref());
        let ino = session.ino;
        let node = state.set_content(ino, session.chunks, bytes, req.mtime, if_content)?;
        state.record(self.origin, ChangeKind::Content, ino, None, None);
        Ok(node)
    }

    async fn end_upload(&self, session: &str) -> RemoteResult<()> {
        match self.lock().sessions.remove(session) {
            Some(_) => Ok(()),
            None => Err(refused(ErrorCode::UploadGone)),
        }
    }

    async fn xattr_names(&self, ino: i64) -> RemoteResult<Vec<String>> {
        let state = self.lock();
        state.node(ino)?;
        Ok(state
            .xattrs
            .get(&ino)
            .map(|x| x.iter().map(|(n, _)| n.clone()).collect())
            .unwrap_or_default())
    }

    async fn xattr(&self, ino: i64, name: &str) -> RemoteResult<Bytes> {
        let state = self.lock();
        state.node(ino)?;
        state
            .xattrs
            .get(&ino)
            .and_then(|x| x.iter().find(|(n, _)| n == name))
            .map(|(_, v)| Bytes::copy_from_slice(v))
            .ok_or_else(|| refused(ErrorCode::NoAttribute))
    }

    async fn set_xattr(
        &self,
        ino: i64,
        name: &str,
        value: &[u8],
        mode: XattrMode,
    ) -> RemoteResult<Node> {
        panproto::validate_xattr_name(name).map_err(|e| match e {
            panproto::XattrNameError::Unsupported => refused(ErrorCode::XattrNotSupported),
            _ => refused(ErrorCode::BadXattrName),
        })?;
        let mut state = self.lock();
        state.node(ino)?;
        let attrs = state.xattrs.entry(ino).or_default();
        let at = attrs.iter().position(|(n, _)| n == name);
        match (mode, at) {
            (XattrMode::Create, Some(_)) => return Err(refused(ErrorCode::Exists)),
            (XattrMode::Replace, None) => return Err(refused(ErrorCode::NoAttribute)),
            (_, Some(i)) => attrs[i].1 = value.to_vec(),
            (_, None) => attrs.push((name.to_string(), value.to_vec())),
        }
        let count = attrs.len() as u32;
        let now = state.tick();
        let node = state.node_mut(ino)?;
        node.xattrs = count;
        node.ctime = now;
        let node = node.clone();
        state.record(self.origin, ChangeKind::Xattr, ino, None, None);
        Ok(node)
    }

    async fn remove_xattr(&self, ino: i64, name: &str) -> RemoteResult<Node> {
        let mut state = self.lock();
        state.node(ino)?;
        let attrs = state.xattrs.entry(ino).or_default();
        let at = attrs
            .iter()
            .position(|(n, _)| n == name)
            .ok_or_else(|| refused(ErrorCode::NoAttribute))?;
        attrs.remove(at);
        let count = attrs.len() as u32;
        let now = state.tick();
        let node = state.node_mut(ino)?;
        node.xattrs = count;
        node.ctime = now;
        let node = node.clone();
        state.record(self.origin, ChangeKind::Xattr, ino, None, None);
        Ok(node)
    }

    async fn batch(&self, req: &BatchRequest) -> RemoteResult<BatchResponse> {
        self.apply_batch(req.clone()).await
    }

    async fn reserve_inos(&self, count: i64) -> RemoteResult<Reserved> {
        self.reserve(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_memory_remote_keeps_the_contract() {
        let remote = MemoryRemote::default();
        super::super::contract::run(&remote, ROOT).await;
    }
}
