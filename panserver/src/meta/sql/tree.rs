//! The tree: inodes and directory entries, and every change to them but renames.

use async_trait::async_trait;
use panproto::wire::{
    ChangeKind, CreateRequest, DirEntry, Node, NodeKind, RenameRequest, SetAttrRequest,
};
use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, Row};

use super::changes::{Edit, Write, node_after};
use super::contents::release_content_of;
use super::{SqlMeta, Tx, for_update};
use crate::meta::{Actor, MetaError, MetaResult, TreeStore};

pub(super) const NODE_SELECT: &str = "SELECT i.id, i.kind, i.mode, i.uid, i.gid, i.size, i.atime, i.mtime, \
     i.ctime, i.nlink, f.manifest_sha256, i.target, i.rdev, \
     (SELECT COUNT(*) FROM tbl_xattr x WHERE x.ino = i.id), \
     COALESCE(f.data_bytes, f.file_size, 0) FROM tbl_inode i \
     LEFT JOIN tbl_file f ON f.id = i.file_id";

/// Reads a node whose columns (as in `NODE_SELECT`) start at column `at`.
pub(super) fn node_at(row: &AnyRow, at: usize) -> MetaResult<Node> {
    let kind: String = row.try_get(at + 1)?;
    Ok(Node {
        ino: row.try_get(at)?,
        kind: NodeKind::parse(&kind).ok_or(MetaError::Invalid("corrupt inode kind"))?,
        mode: row.try_get::<i64, _>(at + 2)? as u32,
        uid: row.try_get::<i64, _>(at + 3)? as u32,
        gid: row.try_get::<i64, _>(at + 4)? as u32,
        size: row.try_get(at + 5)?,
        atime: row.try_get(at + 6)?,
        mtime: row.try_get(at + 7)?,
        ctime: row.try_get(at + 8)?,
        nlink: row.try_get::<i64, _>(at + 9)? as u32,
        content: row.try_get(at + 10)?,
        target: row.try_get(at + 11)?,
        rdev: row.try_get::<i64, _>(at + 12)? as u32,
        xattrs: row.try_get::<i64, _>(at + 13)? as u32,
        stored_bytes: row.try_get(at + 14)?,
    })
}

pub(super) fn node_from_row(row: &AnyRow) -> MetaResult<Node> {
    node_at(row, 0)
}

pub(super) async fn live_node(tx: &mut Tx, user: i64, ino: i64) -> MetaResult<Node> {
    let sql = format!(
        "{NODE_SELECT} WHERE i.id = ? AND i.user_id = ? AND i.status = 0{}",
        for_update(tx)
    );
    let row = sqlx::query(AssertSqlSafe(sql))
        .bind(ino)
        .bind(user)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or(MetaError::NotFound)?;
    node_from_row(&row)
}

pub(super) async fn live_dir(tx: &mut Tx, user: i64, ino: i64) -> MetaResult<Node> {
    let node = live_node(tx, user, ino).await?;
    if node.kind != NodeKind::Dir {
        return Err(MetaError::NotDir);
    }
    Ok(node)
}

pub(super) async fn entry_ino(tx: &mut Tx, parent: i64, name: &str) -> MetaResult<Option<i64>> {
    let sql = format!(
        "SELECT ino FROM tbl_user_file WHERE parent_ino = ? AND file_name = ?{}",
        for_update(tx)
    );
    let row = sqlx::query(AssertSqlSafe(sql))
        .bind(parent)
        .bind(name)
        .fetch_optional(&mut **tx)
        .await?;
    Ok(match row {
        Some(r) => Some(r.try_get(0)?),
        None => None,
    })
}

pub(super) async fn dir_is_empty(tx: &mut Tx, dir: i64) -> MetaResult<bool> {
    let row = sqlx::query("SELECT ino FROM tbl_user_file WHERE parent_ino = ? LIMIT 1")
        .bind(dir)
        .fetch_optional(&mut **tx)
        .await?;
    Ok(row.is_none())
}

/// Touches a directory whose entries changed, and adjusts its link count by `nlink_delta`
/// (a subdirectory's `..` counts as a link).
pub(super) async fn dir_changed(
    tx: &mut Tx,
    dir: i64,
    nlink_delta: i64,
    now: i64,
) -> MetaResult<()> {
    sqlx::query("UPDATE tbl_inode SET mtime = ?, ctime = ?, nlink = nlink + ? WHERE id = ?")
        .bind(now)
        .bind(now)
        .bind(nlink_delta)
        .bind(dir)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Drops one link to `node`; when none is left the inode is soft-deleted and its
/// content released. Its bytes stay readable by inode until garbage collection.
pub(super) async fn drop_link(tx: &mut Tx, user: i64, node: &Node, now: i64) -> MetaResult<()> {
    let last = node.kind == NodeKind::Dir || node.nlink <= 1;
    if !last {
        sqlx::query("UPDATE tbl_inode SET nlink = nlink - 1, ctime = ? WHERE id = ?")
            .bind(now)
            .bind(node.ino)
            .execute(&mut **tx)
            .await?;
        return Ok(());
    }
    sqlx::query(
        "UPDATE tbl_inode SET nlink = 0, ctime = ?, status = 1, deleted_at = ? WHERE id = ?",
    )
    .bind(now)
    .bind(now)
    .bind(node.ino)
    .execute(&mut **tx)
    .await?;
    let bytes = if node.kind == NodeKind::File {
        node.size
    } else {
        0
    };
    sqlx::query(
        "UPDATE tbl_user SET used_files = used_files - 1, used_bytes = used_bytes - ? WHERE id = ?",
    )
    .bind(bytes)
    .bind(user)
    .execute(&mut **tx)
    .await?;
    // Extended attributes go with the inode's last name (nobody can reach them after).
    sqlx::query("DELETE FROM tbl_xattr WHERE ino = ?")
        .bind(node.ino)
        .execute(&mut **tx)
        .await?;
    release_content_of(tx, node.ino, now).await
}

/// True when `ino` is `ancestor` or lies below it.
pub(super) async fn is_within(tx: &mut Tx, user: i64, ino: i64, ancestor: i64) -> MetaResult<bool> {
    let root: i64 = sqlx::query("SELECT root_ino FROM tbl_user WHERE id = ?")
        .bind(user)
        .fetch_one(&mut **tx)
        .await?
        .try_get(0)?;
    let mut cur = ino;
    loop {
        if cur == ancestor {
            return Ok(true);
        }
        if cur == root {
            return Ok(false);
        }
        let row = sqlx::query("SELECT parent_ino FROM tbl_user_file WHERE ino = ? LIMIT 1")
            .bind(cur)
            .fetch_optional(&mut **tx)
            .await?;
        match row {
            Some(r) => cur = r.try_get(0)?,
            None => return Ok(false),
        }
    }
}

impl Write {
    /// Makes a node numbered `ino` (from `SqlMeta::new_inos`, or a number
    /// reserved for the user and checked with `check_reserved`).
    pub async fn create(&mut self, parent: i64, req: &CreateRequest, ino: i64) -> MetaResult<Node> {
        let (user, now) = (self.user(), self.now);
        live_dir(&mut self.tx, user, parent).await?;
        if entry_ino(&mut self.tx, parent, &req.name).await?.is_some() {
            return Err(MetaError::Exists);
        }
        let quota = sqlx::query("SELECT used_files, quota_files FROM tbl_user WHERE id = ?")
            .bind(user)
            .fetch_one(&mut *self.tx)
            .await?;
        let (used, limit): (i64, i64) = (quota.try_get(0)?, quota.try_get(1)?);
        if limit > 0 && used >= limit {
            return Err(MetaError::Quota);
        }
        let (nlink, size) = match req.kind {
            NodeKind::Dir => (2, 0),
            NodeKind::Symlink => {
                let target = req
                    .target
                    .as_deref()
                    .ok_or(MetaError::Invalid("a symlink needs a target"))?;
                (1, target.len() as i64)
            }
            _ => (1, 0),
        };
        let rdev = match req.kind {
            NodeKind::CharDev | NodeKind::BlockDev => i64::from(req.rdev),
            _ => 0,
        };
        // Only a symlink keeps a target.
        let target = req.target.clone().filter(|_| req.kind == NodeKind::Symlink);
        sqlx::query(
            "INSERT INTO tbl_inode (id, user_id, kind, mode, uid, gid, size, atime, mtime, ctime, nlink, target, rdev) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(ino)
        .bind(user)
        .bind(req.kind.as_str())
        .bind(i64::from(req.mode & 0o7777))
        .bind(i64::from(req.uid))
        .bind(i64::from(req.gid))
        .bind(size)
        .bind(now)
        .bind(now)
        .bind(now)
        .bind(nlink)
        .bind(target)
        .bind(rdev)
        .execute(&mut *self.tx)
        .await?;
        sqlx::query(
            "INSERT INTO tbl_user_file (user_id, parent_ino, file_name, ino) VALUES (?, ?, ?, ?)",
        )
        .bind(user)
        .bind(parent)
        .bind(&req.name)
        .bind(ino)
        .execute(&mut *self.tx)
        .await?;
        let subdir = i64::from(req.kind == NodeKind::Dir);
        dir_changed(&mut self.tx, parent, subdir, now).await?;
        sqlx::query("UPDATE tbl_user SET used_files = used_files + 1 WHERE id = ?")
            .bind(user)
            .execute(&mut *self.tx)
            .await?;
        let node = live_node(&mut self.tx, user, ino).await?;
        let edit = Edit::new(ChangeKind::Create, ino)
            .entry(parent, &req.name)
            .node(Some(node.clone()));
        self.record(edit).await?;
        Ok(node)
    }

    pub async fn link(&mut self, ino: i64, parent: i64, name: &str) -> MetaResult<Node> {
        let (user, now) = (self.user(), self.now);
        let node = live_node(&mut self.tx, user, ino).await?;
        if node.kind == NodeKind::Dir {
            return Err(MetaError::NotPermitted(
                "hard links to directories are not allowed",
            ));
        }
        live_dir(&mut self.tx, user, parent).await?;
        if entry_ino(&mut self.tx, parent, name).await?.is_some() {
            return Err(MetaError::Exists);
        }
        sqlx::query(
            "INSERT INTO tbl_user_file (user_id, parent_ino, file_name, ino) VALUES (?, ?, ?, ?)",
        )
        .bind(user)
        .bind(parent)
        .bind(name)
        .bind(ino)
        .execute(&mut *self.tx)
        .await?;
        sqlx::query("UPDATE tbl_inode SET nlink = nlink + 1, ctime = ? WHERE id = ?")
            .bind(now)
            .bind(ino)
            .execute(&mut *self.tx)
            .await?;
        dir_changed(&mut self.tx, parent, 0, now).await?;
        let node = live_node(&mut self.tx, user, ino).await?;
        let edit = Edit::new(ChangeKind::Link, ino)
            .entry(parent, name)
            .node(Some(node.clone()));
        self.record(edit).await?;
        Ok(node)
    }

    pub async fn remove(&mut self, parent: i64, name: &str, dir: bool) -> MetaResult<()> {
        let (user, now) = (self.user(), self.now);
        live_dir(&mut self.tx, user, parent).await?;
        let ino = entry_ino(&mut self.tx, parent, name)
            .await?
            .ok_or(MetaError::NotFound)?;
        let node = live_node(&mut self.tx, user, ino).await?;
        match (dir, node.kind == NodeKind::Dir) {
            (true, false) => return Err(MetaError::NotDir),
            (false, true) => return Err(MetaError::IsDir),
            (true, true) if !dir_is_empty(&mut self.tx, ino).await? => {
                return Err(MetaError::NotEmpty);
            }
            _ => {}
        }
        sqlx::query("DELETE FROM tbl_user_file WHERE parent_ino = ? AND file_name = ?")
            .bind(parent)
            .bind(name)
            .execute(&mut *self.tx)
            .await?;
        drop_link(&mut self.tx, user, &node, now).await?;
        dir_changed(&mut self.tx, parent, -i64::from(dir), now).await?;
        let edit = Edit::new(ChangeKind::Remove, ino)
            .entry(parent, name)
            .node(node_after(&mut self.tx, user, ino).await?);
        self.record(edit).await
    }

    pub async fn set_attr(&mut self, ino: i64, req: &SetAttrRequest) -> MetaResult<Node> {
        let (user, now) = (self.user(), self.now);
        let node = live_node(&mut self.tx, user, ino).await?;
        sqlx::query("UPDATE tbl_inode SET mode = ?, uid = ?, gid = ?, atime = ?, mtime = ?, ctime = ? WHERE id = ?")
            .bind(i64::from(req.mode.unwrap_or(node.mode) & 0o7777))
            .bind(i64::from(req.uid.unwrap_or(node.uid)))
            .bind(i64::from(req.gid.unwrap_or(node.gid)))
            .bind(req.atime.unwrap_or(node.atime))
            .bind(req.mtime.unwrap_or(node.mtime))
            .bind(now)
            .bind(ino)
            .execute(&mut *self.tx)
            .await?;
        let node = live_node(&mut self.tx, user, ino).await?;
        let edit = Edit::new(ChangeKind::Attr, ino).node(Some(node.clone()));
        self.record(edit).await?;
        Ok(node)
    }
}

#[async_trait]
impl TreeStore for SqlMeta {
    async fn node(&self, user: i64, ino: i64) -> MetaResult<Node> {
        let sql = format!("{NODE_SELECT} WHERE i.id = ? AND i.user_id = ?");
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(ino)
            .bind(user)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(MetaError::NotFound)?;
        node_from_row(&row)
    }

    async fn lookup(&self, user: i64, parent: i64, name: &str) -> MetaResult<Node> {
        let sql = format!(
            "{NODE_SELECT} JOIN tbl_user_file e ON e.ino = i.id \
             WHERE e.parent_ino = ? AND e.file_name = ? AND e.user_id = ?"
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(parent)
            .bind(name)
            .bind(user)
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(row) => node_from_row(&row),
            None => {
                // Tell a missing parent (or a file used as a directory) from a missing name.
                let dir = self.node(user, parent).await?;
                if dir.kind != NodeKind::Dir {
                    Err(MetaError::NotDir)
                } else {
                    Err(MetaError::NotFound)
                }
            }
        }
    }

    async fn list(
        &self,
        user: i64,
        dir: i64,
        after: Option<&str>,
        limit: i64,
    ) -> MetaResult<Vec<DirEntry>> {
        let node = self.node(user, dir).await?;
        if node.kind != NodeKind::Dir {
            return Err(MetaError::NotDir);
        }
        let sql = format!(
            "{NODE_SELECT} JOIN tbl_user_file e ON e.ino = i.id \
             WHERE e.parent_ino = ? AND e.user_id = ? AND e.file_name > ? ORDER BY e.file_name LIMIT ?"
        )
        .replace("SELECT i.id", "SELECT e.file_name, i.id");
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(dir)
            .bind(user)
            .bind(after.unwrap_or(""))
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                let name: String = row.try_get(0)?;
                let node = node_at(row, 1)?;
                Ok(DirEntry { name, node })
            })
            .collect()
    }

    async fn create(
        &self,
        by: Actor,
        parent: i64,
        req: &CreateRequest,
        now: i64,
    ) -> MetaResult<Node> {
        let ino = self.new_inos(1).await?[0];
        self.retry(|| async {
            let mut w = self.begin_edit(by, now).await?;
            let node = w.create(parent, req, ino).await?;
            self.commit_write(w).await?;
            Ok(node)
        })
        .await
    }

    async fn link(
        &self,
        by: Actor,
        ino: i64,
        parent: i64,
        name: &str,
        now: i64,
    ) -> MetaResult<Node> {
        self.retry(|| async {
            let mut w = self.begin_edit(by, now).await?;
            let node = w.link(ino, parent, name).await?;
            self.commit_write(w).await?;
            Ok(node)
        })
        .await
    }

    async fn remove(
        &self,
        by: Actor,
        parent: i64,
        name: &str,
        dir: bool,
        now: i64,
    ) -> MetaResult<()> {
        self.retry(|| async {
            let mut w = self.begin_edit(by, now).await?;
            w.remove(parent, name, dir).await?;
            self.commit_write(w).await
        })
        .await
    }

    async fn rename(&self, by: Actor, req: &RenameRequest, now: i64) -> MetaResult<()> {
        self.retry(|| async {
            let mut w = self.begin_edit(by, now).await?;
            w.rename(req).await?;
            self.commit_write(w).await
        })
        .await
    }

    async fn set_attr(
        &self,
        by: Actor,
        ino: i64,
        req: &SetAttrRequest,
        now: i64,
    ) -> MetaResult<Node> {
        self.retry(|| async {
            let mut w = self.begin_edit(by, now).await?;
            let node = w.set_attr(ino, req).await?;
            self.commit_write(w).await?;
            Ok(node)
        })
        .await
    }
}
