//! Renames: move, replace, no-replace and exchange, in one transaction.

use panproto::wire::{ChangeKind, NodeKind, RenameMode, RenameRequest};

use super::changes::{Edit, Write, node_after};
use super::tree::{
    dir_changed, dir_is_empty, drop_link, entry_ino, is_within, live_dir, live_node,
};
use crate::meta::{MetaError, MetaResult};

impl Write {
    pub async fn rename(&mut self, req: &RenameRequest) -> MetaResult<()> {
        let (user, now) = (self.user(), self.now);
        // Both directories are locked, the lower inode first, so that two renames
        // between the same pair wait for each other instead of deadlocking.
        live_dir(&mut self.tx, user, req.parent.min(req.new_parent)).await?;
        live_dir(&mut self.tx, user, req.parent.max(req.new_parent)).await?;
        let src_ino = entry_ino(&mut self.tx, req.parent, &req.name)
            .await?
            .ok_or(MetaError::NotFound)?;
        let src = live_node(&mut self.tx, user, src_ino).await?;
        if req.parent == req.new_parent && req.name == req.new_name {
            return Ok(());
        }
        let src_is_dir = src.kind == NodeKind::Dir;
        if src_is_dir && is_within(&mut self.tx, user, req.new_parent, src.ino).await? {
            return Err(MetaError::Invalid("cannot move a directory into itself"));
        }
        let dst = match entry_ino(&mut self.tx, req.new_parent, &req.new_name).await? {
            Some(ino) => Some(live_node(&mut self.tx, user, ino).await?),
            None => None,
        };
        let moves_dir_between = |is_dir: bool| i64::from(is_dir && req.parent != req.new_parent);
        match (req.mode, dst) {
            (RenameMode::Exchange, None) => return Err(MetaError::NotFound),
            (RenameMode::Exchange, Some(dst)) => {
                let dst_is_dir = dst.kind == NodeKind::Dir;
                if dst_is_dir && is_within(&mut self.tx, user, req.parent, dst.ino).await? {
                    return Err(MetaError::Invalid("cannot move a directory into itself"));
                }
                for (parent, name, ino) in [
                    (req.parent, &req.name, dst.ino),
                    (req.new_parent, &req.new_name, src.ino),
                ] {
                    sqlx::query(
                        "UPDATE tbl_user_file SET ino = ? WHERE parent_ino = ? AND file_name = ?",
                    )
                    .bind(ino)
                    .bind(parent)
                    .bind(name)
                    .execute(&mut *self.tx)
                    .await?;
                }
                let shift = moves_dir_between(src_is_dir) - moves_dir_between(dst_is_dir);
                dir_changed(&mut self.tx, req.parent, -shift, now).await?;
                dir_changed(&mut self.tx, req.new_parent, shift, now).await?;
                for ino in [src.ino, dst.ino] {
                    sqlx::query("UPDATE tbl_inode SET ctime = ? WHERE id = ?")
                        .bind(now)
                        .bind(ino)
                        .execute(&mut *self.tx)
                        .await?;
                }
                let edit = Edit::new(ChangeKind::Rename, src.ino)
                    .entry(req.parent, &req.name)
                    .moved_to(req.new_parent, &req.new_name)
                    .node(node_after(&mut self.tx, user, src.ino).await?);
                return self.record(edit).await;
            }
            (RenameMode::NoReplace, Some(_)) => return Err(MetaError::Exists),
            (_, Some(dst)) => {
                if dst.ino == src.ino {
                    return Ok(());
                }
                let dst_is_dir = dst.kind == NodeKind::Dir;
                match (src_is_dir, dst_is_dir) {
                    (true, false) => return Err(MetaError::NotDir),
                    (false, true) => return Err(MetaError::IsDir),
                    (true, true) if !dir_is_empty(&mut self.tx, dst.ino).await? => {
                        return Err(MetaError::NotEmpty);
                    }
                    _ => {}
                }
                sqlx::query("DELETE FROM tbl_user_file WHERE parent_ino = ? AND file_name = ?")
                    .bind(req.new_parent)
                    .bind(&req.new_name)
                    .execute(&mut *self.tx)
                    .await?;
                drop_link(&mut self.tx, user, &dst, now).await?;
                dir_changed(&mut self.tx, req.new_parent, -i64::from(dst_is_dir), now).await?;
            }
            (_, None) => {}
        }
        sqlx::query(
            "UPDATE tbl_user_file SET parent_ino = ?, file_name = ? WHERE parent_ino = ? AND file_name = ?",
        )
        .bind(req.new_parent)
        .bind(&req.new_name)
        .bind(req.parent)
        .bind(&req.name)
        .execute(&mut *self.tx)
        .await?;
        let shift = moves_dir_between(src_is_dir);
        dir_changed(&mut self.tx, req.parent, -shift, now).await?;
        dir_changed(&mut self.tx, req.new_parent, shift, now).await?;
        sqlx::query("UPDATE tbl_inode SET ctime = ? WHERE id = ?")
            .bind(now)
            .bind(src.ino)
            .execute(&mut *self.tx)
            .await?;
        let edit = Edit::new(ChangeKind::Rename, src.ino)
            .entry(req.parent, &req.name)
            .moved_to(req.new_parent, &req.new_name)
            .node(node_after(&mut self.tx, user, src.ino).await?);
        self.record(edit).await
    }
}
