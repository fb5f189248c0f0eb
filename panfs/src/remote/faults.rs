//! A `Remote` that passes calls on to another and injects faults on demand: the
//! server going away, one file's uploads failing, uploads held mid-way. Tests use
//! it to show what the file system does when the network does not cooperate.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use panproto::batch::{BatchRequest, BatchResponse, Reserved};
use panproto::wire::{
    CommitRequest, CreateRequest, DirEntry, ErrorCode, Manifest, Node, RenameRequest,
    SetAttrRequest, UploadInit, UploadState, UserInfo, XattrMode,
};
use tokio::sync::watch;

use super::{FeedPage, IfContent, Remote, RemoteError, RemoteResult};

pub struct FaultyRemote {
    inner: Arc<dyn Remote>,
    offline: AtomicBool,
    failing_uploads: Mutex<HashSet<i64>>,
    /// While true, uploads wait before reaching the server.
    held: watch::Sender<bool>,
    /// While true, batches wait before reaching the server.
    batches_held: watch::Sender<bool>,
    upload_attempts: Mutex<HashMap<i64, u32>>,
    requests: AtomicU64,
    /// Commits still to answer as if the server had lost the session.
    lost_sessions: AtomicU64,
    /// Batches still to apply on the server whose answers are then lost.
    lost_batch_answers: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Waits until `held` is false (at once if it is).
async fn released(held: &watch::Sender<bool>) {
    // The caller holds the sender, so waiting cannot fail.
    let _ = held.subscribe().wait_for(|h| !h).await;
}

/// Counts one off `left`: whether there was one left to inject.
fn take_one(left: &AtomicU64) -> bool {
    left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

impl FaultyRemote {
    pub fn new(inner: Arc<dyn Remote>) -> Self {
        Self {
            inner,
            offline: AtomicBool::new(false),
            failing_uploads: Mutex::default(),
            held: watch::Sender::new(false),
            batches_held: watch::Sender::new(false),
            upload_attempts: Mutex::default(),
            requests: AtomicU64::new(0),
            lost_sessions: AtomicU64::new(0),
            lost_batch_answers: AtomicU64::new(0),
        }
    }

    /// Every call fails as if the server could not be reached.
    pub fn set_offline(&self, offline: bool) {
        self.offline.store(offline, Ordering::SeqCst);
    }

    /// Uploads of this file fail (the server is reachable for everything else).
    pub fn fail_uploads(&self, ino: i64, fail: bool) {
        let mut failing = lock(&self.failing_uploads);
        if fail {
            failing.insert(ino);
        } else {
            failing.remove(&ino);
        }
    }

    /// Holds every upload before it reaches the server until released.
    pub fn hold_uploads(&self, hold: bool) {
        self.held.send_replace(hold);
    }

    /// Holds every batch before it reaches the server until released, as a
    /// server busy with a long journal would.
    pub fn hold_batches(&self, hold: bool) {
        self.batches_held.send_replace(hold);
    }

    /// The next `n` commits find their session gone, as after a restart of a
    /// server that kept sessions in memory.
    pub fn lose_sessions(&self, n: u64) {
        self.lost_sessions.store(n, Ordering::SeqCst);
    }

    /// The next `n` batches are applied on the server, but their answers
    /// never reach the client, as when the server dies right after a commit.
    pub fn lose_batch_answers(&self, n: u64) {
        self.lost_batch_answers.store(n, Ordering::SeqCst);
    }

    /// How many uploads of this file were started (held or failed ones included).
    pub fn upload_attempts(&self, ino: i64) -> u32 {
        lock(&self.upload_attempts).get(&ino).copied().unwrap_or(0)
    }

    /// Calls made so far, failed ones included (the change feed's polls not counted).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    fn call(&self) -> RemoteResult<()> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        if self.offline.load(Ordering::SeqCst) {
            return Err(RemoteError::NotSent("injected: offline".into()));
        }
        Ok(())
    }

    async fn upload(&self, ino: i64) -> RemoteResult<()> {
        self.call()?;
        *lock(&self.upload_attempts).entry(ino).or_default() += 1;
        released(&self.held).await;
        if lock(&self.failing_uploads).contains(&ino) {
            return Err(RemoteError::Unreachable(format!(
                "injected: uploads of {ino} fail"
            )));
        }
        Ok(())
    }
}

#[async_trait]
impl Remote for FaultyRemote {
    fn origin(&self) -> u64 {
        self.inner.origin()
    }

    async fn changes(&self, since: Option<i64>, wait: Duration) -> RemoteResult<FeedPage> {
        if self.offline.load(Ordering::SeqCst) {
            // As a real long poll against a dead server would, take a moment to fail.
            tokio::time::sleep(wait.min(Duration::from_millis(50))).await;
            return Err(RemoteError::NotSent("injected: offline".into()));
        }
        self.inner.changes(since, wait).await
    }

    async fn user_info(&self) -> RemoteResult<UserInfo> {
        self.call()?;
        self.inner.user_info().await
    }

    async fn node(&self, ino: i64) -> RemoteResult<Node> {
        self.call()?;
        self.inner.node(ino).await
    }

    async fn lookup(&self, parent: i64, name: &str) -> RemoteResult<Node> {
        self.call()?;
        self.inner.lookup(parent, name).await
    }

    async fn list(&self, dir: i64) -> RemoteResult<Vec<DirEntry>> {
        self.call()?;
        self.inner.list(dir).await
    }

    async fn create(&self, parent: i64, req: &CreateRequest) -> RemoteResult<Node> {
        self.call()?;
        self.inner.create(parent, req).await
    }

    async fn link(&self, ino: i64, parent: i64, name: &str) -> RemoteResult<Node> {
        self.call()?;
        self.inner.link(ino, parent, name).await
    }

    async fn remove(&self, parent: i64, name: &str, dir: bool) -> RemoteResult<()> {
        self.call()?;
        self.inner.remove(parent, name, dir).await
    }

    async fn rename(&self, req: &RenameRequest) -> RemoteResult<()> {
        self.call()?;
        self.inner.rename(req).await
    }

    async fn set_attr(&self, ino: i64, req: &SetAttrRequest) -> RemoteResult<Node> {
        self.call()?;
        self.inner.set_attr(ino, req).await
    }

    async fn manifest(&self, ino: i64) -> RemoteResult<Manifest> {
        self.call()?;
        self.inner.manifest(ino).await
    }

    async fn read(&self, ino: i64, content: &str, start: u64, end: u64) -> RemoteResult<Bytes> {
        self.call()?;
        self.inner.read(ino, content, start, end).await
    }

    async fn put_content(
        &self,
        ino: i64,
        body: Bytes,
        mtime: i64,
        if_content: IfContent<'_>,
    ) -> RemoteResult<Node> {
        self.upload(ino).await?;
        self.inner.put_content(ino, body, mtime, if_content).await
    }

    async fn begin_upload(&self, init: &UploadInit) -> RemoteResult<UploadState> {
        self.upload(init.ino).await?;
        self.inner.begin_upload(init).await
    }

    async fn put_chunk(&self, session: &str, sha256: &str, body: Bytes) -> RemoteResult<()> {
        self.call()?;
        self.inner.put_chunk(session, sha256, body).await
    }

    async fn prove(&self, session: &str, proof: &str) -> RemoteResult<UploadState> {
        self.call()?;
        self.inner.prove(session, proof).await
    }

    async fn end_upload(&self, session: &str) -> RemoteResult<()> {
        self.call()?;
        self.inner.end_upload(session).await
    }

    async fn commit(&self, session: &str, req: &CommitRequest) -> RemoteResult<Node> {
        self.call()?;
        if take_one(&self.lost_sessions) {
            return Err(RemoteError::Refused {
                status: 404,
                code: ErrorCode::UploadGone,
                message: "injected: the session is gone".into(),
            });
        }
        self.inner.commit(session, req).await
    }

    async fn xattr_names(&self, ino: i64) -> RemoteResult<Vec<String>> {
        self.call()?;
        self.inner.xattr_names(ino).await
    }

    async fn xattr(&self, ino: i64, name: &str) -> RemoteResult<Bytes> {
        self.call()?;
        self.inner.xattr(ino, name).await
    }

    async fn set_xattr(
        &self,
        ino: i64,
        name: &str,
        value: &[u8],
        mode: XattrMode,
    ) -> RemoteResult<Node> {
        self.call()?;
        self.inner.set_xattr(ino, name, value, mode).await
    }

    async fn remove_xattr(&self, ino: i64, name: &str) -> RemoteResult<Node> {
        self.call()?;
        self.inner.remove_xattr(ino, name).await
    }

    async fn batch(&self, req: &BatchRequest) -> RemoteResult<BatchResponse> {
        self.call()?;
        released(&self.batches_held).await;
        let answer = self.inner.batch(req).await?;
        if take_one(&self.lost_batch_answers) {
            return Err(RemoteError::Unreachable("injected: answer lost".into()));
        }
        Ok(answer)
    }

    async fn reserve_inos(&self, count: i64) -> RemoteResult<Reserved> {
        self.call()?;
        self.inner.reserve_inos(count).await
    }
}
