//! Batches and reserved inode numbers in the in-memory server: each operation
//! runs as its own request would (one lock each, so unlike the real server a
//! batch is not one transaction; the tests that need that run the real one).

use base64::Engine;
use bytes::Bytes;
use panproto::batch::{BatchOp, BatchRequest, BatchResponse, OpResult, Reserved, minted_from};
use panproto::wire::{
    ChangeKind, CreateRequest, ErrorBody, ErrorCode, Node, NodeKind, RenameRequest,
};

use super::MemoryRemote;
use super::state::{blank, check_name, refused};
use crate::remote::{Remote, RemoteError, RemoteResult};

impl MemoryRemote {
    /// A new node, numbered `ino` when the client reserved one.
    pub(super) fn create_node(
        &self,
        parent: i64,
        req: &CreateRequest,
        ino: Option<i64>,
    ) -> RemoteResult<Node> {
        check_name(&req.name)?;
        let mut state = self.lock();
        // Reserved numbers are below the counter; minted ones name a block below it.
        let handed_out = |i: i64| minted_from(i).unwrap_or(i) < state.next_ino;
        if ino.is_some_and(|i| !handed_out(i)) {
            return Err(refused(ErrorCode::BadRequest));
        }
        // A reserved number is used once: a create that finds it taken is a
        // resend whose first answer was lost, answered as the first time.
        if let Some(made_before) = ino.and_then(|i| state.nodes.get(&i)) {
            return Ok(made_before.clone());
        }
        state.dir(parent)?;
        let key = (parent, req.name.clone());
        if state.entries.contains_key(&key) {
            return Err(refused(ErrorCode::Exists));
        }
        let now = state.tick();
        let ino = ino.unwrap_or_else(|| {
            state.next_ino += 1;
            state.next_ino - 1
        });
        let mut node = blank(ino, req.kind, req.mode & 0o7777, now);
        node.uid = req.uid;
        node.gid = req.gid;
        node.rdev = req.rdev;
        if req.kind == NodeKind::Symlink {
            let target = req.target.clone().unwrap_or_default();
            node.size = target.len() as i64;
            node.target = Some(target);
        }
        if req.kind == NodeKind::Dir {
            state.node_mut(parent)?.nlink += 1;
        }
        state.touch_dir(parent, now);
        state.nodes.insert(ino, node.clone());
        state.entries.insert(key, ino);
        let entry = Some((parent, req.name.as_str()));
        state.record(self.origin, ChangeKind::Create, ino, entry, None);
        Ok(node)
    }
    /// The node a name leads to now, for an `if_ino` precondition.
    fn leads_to(&self, parent: i64, name: &str, if_ino: Option<i64>) -> RemoteResult<()> {
        let Some(want) = if_ino else {
            return Ok(());
        };
        let state = self.lock();
        match state.entries.get(&(parent, name.to_string())) {
            Some(&ino) if ino == want => Ok(()),
            Some(_) => Err(refused(ErrorCode::Conflict)),
            None => Err(refused(ErrorCode::NotFound)),
        }
    }

    async fn apply_op(&self, op: BatchOp) -> RemoteResult<Option<Node>> {
        match op {
            create @ BatchOp::Create { .. } => {
                let (parent, req, ino) =
                    create.as_create().ok_or(refused(ErrorCode::BadRequest))?;
                self.create_node(parent, &req, ino).map(Some)
            }
            BatchOp::Link { ino, parent, name } => self.link(ino, parent, &name).await.map(Some),
            BatchOp::Remove {
                parent,
                name,
                dir,
                if_ino,
            } => {
                self.leads_to(parent, &name, if_ino)?;
                self.remove(parent, &name, dir).await.map(|()| None)
            }
            BatchOp::Rename {
                parent,
                name,
                new_parent,
                new_name,
                mode,
                if_ino,
                if_target,
            } => {
                self.leads_to(parent, &name, if_ino)?;
                if let Some(expected) = if_target {
                    let found = self
                        .lock()
                        .entries
                        .get(&(new_parent, new_name.clone()))
                        .copied();
                    if found.unwrap_or(0) != expected {
                        return Err(refused(ErrorCode::Exists));
                    }
                }
                let moved = self.lookup(parent, &name).await?.ino;
                let req = RenameRequest {
                    parent,
                    name,
                    new_parent,
                    new_name,
                    mode,
                };
                self.rename(&req).await?;
                self.node(moved).await.map(Some)
            }
            set @ BatchOp::SetAttr { .. } => {
                let (ino, req) = set.as_set_attr().ok_or(refused(ErrorCode::BadRequest))?;
                self.set_attr(ino, &req).await.map(Some)
            }
            BatchOp::SetContent {
                ino,
                data: Some(data),
                chunks: None,
                mtime,
                if_content,
            } => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(data)
                    .map_err(|_| refused(ErrorCode::BadRequest))?;
                let if_content = if_content.as_ref().map(|c| c.as_deref());
                self.put_content(
                    ino,
                    Bytes::from(bytes),
                    mtime.unwrap_or_default(),
                    if_content,
                )
                .await
                .map(Some)
            }
            // panfs sends these on their own routes; the in-memory server
            // keeps to what panfs batches.
            BatchOp::SetXattr { .. } | BatchOp::RemoveXattr { .. } | BatchOp::SetContent { .. } => {
                Err(refused(ErrorCode::BadRequest))
            }
        }
    }

    pub(super) async fn apply_batch(&self, req: BatchRequest) -> RemoteResult<BatchResponse> {
        let mut results = Vec::with_capacity(req.ops.len());
        for op in req.ops {
            results.push(match self.apply_op(op).await {
                Ok(node) => OpResult { node, error: None },
                Err(RemoteError::Refused { code, message, .. }) => OpResult {
                    node: None,
                    error: Some(ErrorBody {
                        code,
                        message,
                        seq: None,
                    }),
                },
                Err(e) => return Err(e),
            });
        }
        let seq = self.lock().feed_seq();
        Ok(BatchResponse { seq, results })
    }

    pub(super) fn reserve(&self, count: i64) -> RemoteResult<Reserved> {
        if !(1..=panproto::batch::RESERVE_MAX).contains(&count) {
            return Err(refused(ErrorCode::BadRequest));
        }
        let mut state = self.lock();
        let first = state.next_ino;
        state.next_ino += count;
        Ok(Reserved { first, count })
    }
}
