//! The tree: listing, attributes, creating nodes, renames, and paths.

use panproto::wire::{
    ChunkRef, CreateRequest, Listing, Manifest, Node, NodeKind, RenameRequest, SetAttrRequest,
};

use super::{App, ServiceError, ServiceResult, now_ns};
use crate::meta::{Actor, MetaError};

/// Most entries one page of a listing holds.
const PAGE_MAX: i64 = 1000;

impl App {
    /// One page of a directory: up to `limit` entries after the name `after`.
    pub async fn listing(
        &self,
        user: i64,
        dir: i64,
        after: Option<&str>,
        limit: Option<i64>,
    ) -> ServiceResult<Listing> {
        let limit = limit.unwrap_or(PAGE_MAX).clamp(1, PAGE_MAX);
        let entries = self.meta.list(user, dir, after, limit).await?;
        let next = (entries.len() as i64 == limit)
            .then(|| entries.last().map(|e| e.name.clone()))
            .flatten();
        Ok(Listing { entries, next })
    }

    pub async fn set_attr(
        &self,
        by: Actor,
        ino: i64,
        req: SetAttrRequest,
    ) -> ServiceResult<panproto::wire::Node> {
        let now = now_ns();
        if let Some(size) = req.size {
            self.truncate(by, ino, size, req.mtime).await?;
        }
        Ok(self.meta.set_attr(by, ino, &req, now).await?)
    }

    pub async fn manifest(&self, user: i64, ino: i64) -> ServiceResult<Manifest> {
        let (node, extents) = self.meta.extents(user, ino).await?;
        Ok(Manifest {
            content: node.content,
            size: node.size,
            chunks: extents
                .into_iter()
                .map(|e| ChunkRef {
                    sha256: e.sha256,
                    size: e.size as u64,
                })
                .collect(),
        })
    }

    pub async fn create_node(
        &self,
        by: Actor,
        parent: i64,
        req: CreateRequest,
    ) -> ServiceResult<panproto::wire::Node> {
        check_create(&req)?;
        Ok(self.meta.create(by, parent, &req, now_ns()).await?)
    }

    pub async fn rename_node(&self, by: Actor, req: RenameRequest) -> ServiceResult<()> {
        panproto::validate_name(&req.name)?;
        panproto::validate_name(&req.new_name)?;
        Ok(self.meta.rename(by, &req, now_ns()).await?)
    }
}

impl App {
    pub async fn resolve(&self, user: i64, path: &[String]) -> ServiceResult<Node> {
        let root = self.meta.user_by_id(user).await?.root_ino;
        let mut node = self.meta.node(user, root).await?;
        for name in path {
            node = self.meta.lookup(user, node.ino, name).await?;
        }
        Ok(node)
    }

    /// The file at `path`, created (with its missing parents) when absent; true when created.
    pub async fn file_for_put(&self, by: Actor, path: &[String]) -> ServiceResult<(Node, bool)> {
        let user = by.user;
        let Some((name, dirs)) = path.split_last() else {
            return Err(ServiceError::IsDir);
        };
        let root = self.meta.user_by_id(user).await?.root_ino;
        let mut parent = root;
        for dir in dirs {
            parent = match self.meta.lookup(user, parent, dir).await {
                Ok(node) if node.kind == NodeKind::Dir => node.ino,
                Ok(_) => return Err(ServiceError::NotDir),
                Err(MetaError::NotFound) => {
                    self.make(by, parent, dir, NodeKind::Dir, 0o755).await?.ino
                }
                Err(e) => return Err(e.into()),
            };
        }
        match self.meta.lookup(user, parent, name).await {
            Ok(node) if node.kind == NodeKind::File => Ok((node, false)),
            Ok(node) => Err(ServiceError::not_a_file(node.kind)),
            Err(MetaError::NotFound) => Ok((
                self.make(by, parent, name, NodeKind::File, 0o644).await?,
                true,
            )),
            Err(e) => Err(e.into()),
        }
    }

    /// Creates a node, or returns the one a concurrent request just created.
    pub async fn make(
        &self,
        by: Actor,
        parent: i64,
        name: &str,
        kind: NodeKind,
        mode: u32,
    ) -> ServiceResult<Node> {
        let user = by.user;
        let req = CreateRequest {
            name: name.to_string(),
            kind,
            mode,
            uid: 0,
            gid: 0,
            target: None,
            rdev: 0,
        };
        match self.create_node(by, parent, req).await {
            Err(ServiceError::Exists) => Ok(self.meta.lookup(user, parent, name).await?),
            other => other,
        }
    }

    pub async fn remove_path(&self, by: Actor, path: &[String]) -> ServiceResult<()> {
        let user = by.user;
        let Some((name, dirs)) = path.split_last() else {
            return Err(ServiceError::NotPermitted("the root cannot be removed"));
        };
        let parent = self.resolve(user, dirs).await?;
        let node = self.meta.lookup(user, parent.ino, name).await?;
        Ok(self
            .meta
            .remove(by, parent.ino, name, node.kind == NodeKind::Dir, now_ns())
            .await?)
    }
}

/// What a create must carry: a valid name, and a symlink a valid target.
pub(super) fn check_create(req: &CreateRequest) -> ServiceResult<()> {
    panproto::validate_name(&req.name)?;
    if req.kind == NodeKind::Symlink
        && let Some(target) = &req.target
        && (target.is_empty() || target.len() > 4095 || target.contains('\0'))
    {
        return Err(ServiceError::BadRequest(
            "a symlink target is 1 to 4095 bytes without NUL".into(),
        ));
    }
    Ok(())
}
