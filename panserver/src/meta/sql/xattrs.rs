//! Extended attributes: rows of (inode, name, value). Access goes through the
//! inode, so every call is scoped to the inode's owner.

use async_trait::async_trait;
use panproto::XATTR_NODE_MAX;
use panproto::wire::{ChangeKind, Node, XattrMode};
use sqlx::{AssertSqlSafe, Row};

use super::changes::{Edit, Write};
use super::tree::live_node;
use super::{SqlMeta, for_update};
use crate::meta::{Actor, MetaError, MetaResult, TreeStore, XattrStore};

impl Write {
    pub async fn set_xattr(
        &mut self,
        ino: i64,
        name: &str,
        value: &[u8],
        mode: XattrMode,
    ) -> MetaResult<Node> {
        let (user, now) = (self.user(), self.now);
        live_node(&mut self.tx, user, ino).await?;
        let sql = format!(
            "SELECT name, LENGTH(value) FROM tbl_xattr WHERE ino = ?{}",
            for_update(&self.tx)
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(ino)
            .fetch_all(&mut *self.tx)
            .await?;
        let mut exists = false;
        let mut others = 0usize;
        for row in rows {
            let other: String = row.try_get(0)?;
            if other == name {
                exists = true;
            } else {
                others += other.len() + row.try_get::<i64, _>(1)? as usize;
            }
        }
        match (mode, exists) {
            (XattrMode::Create, true) => return Err(MetaError::Exists),
            (XattrMode::Replace, false) => return Err(MetaError::NoAttribute),
            _ => {}
        }
        if others + name.len() + value.len() > XATTR_NODE_MAX {
            return Err(MetaError::XattrFull);
        }
        if exists {
            sqlx::query("UPDATE tbl_xattr SET value = ? WHERE ino = ? AND name = ?")
                .bind(value.to_vec())
                .bind(ino)
                .bind(name)
                .execute(&mut *self.tx)
                .await?;
        } else {
            sqlx::query("INSERT INTO tbl_xattr (ino, name, value) VALUES (?, ?, ?)")
                .bind(ino)
                .bind(name)
                .bind(value.to_vec())
                .execute(&mut *self.tx)
                .await?;
        }
        let node = touch(&mut self.tx, user, ino, now).await?;
        let edit = Edit::new(ChangeKind::Xattr, ino).node(Some(node.clone()));
        self.record(edit).await?;
        Ok(node)
    }

    pub async fn remove_xattr(&mut self, ino: i64, name: &str) -> MetaResult<Node> {
        let (user, now) = (self.user(), self.now);
        live_node(&mut self.tx, user, ino).await?;
        let gone = sqlx::query("DELETE FROM tbl_xattr WHERE ino = ? AND name = ?")
            .bind(ino)
            .bind(name)
            .execute(&mut *self.tx)
            .await?
            .rows_affected();
        if gone == 0 {
            return Err(MetaError::NoAttribute);
        }
        let node = touch(&mut self.tx, user, ino, now).await?;
        let edit = Edit::new(ChangeKind::Xattr, ino).node(Some(node.clone()));
        self.record(edit).await?;
        Ok(node)
    }
}

/// A change of extended attributes is a change of the inode: its ctime moves.
async fn touch(tx: &mut super::Tx, user: i64, ino: i64, now: i64) -> MetaResult<Node> {
    sqlx::query("UPDATE tbl_inode SET ctime = ? WHERE id = ?")
        .bind(now)
        .bind(ino)
        .execute(&mut **tx)
        .await?;
    live_node(tx, user, ino).await
}

#[async_trait]
impl XattrStore for SqlMeta {
    async fn xattr_names(&self, user: i64, ino: i64) -> MetaResult<Vec<String>> {
        self.node(user, ino).await?;
        let rows = sqlx::query("SELECT name FROM tbl_xattr WHERE ino = ? ORDER BY name")
            .bind(ino)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }

    async fn xattr(&self, user: i64, ino: i64, name: &str) -> MetaResult<Vec<u8>> {
        self.node(user, ino).await?;
        let row = sqlx::query("SELECT value FROM tbl_xattr WHERE ino = ? AND name = ?")
            .bind(ino)
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(MetaError::NoAttribute)?;
        Ok(row.try_get(0)?)
    }

    async fn set_xattr(
        &self,
        by: Actor,
        ino: i64,
        name: &str,
        value: &[u8],
        mode: XattrMode,
        now: i64,
    ) -> MetaResult<Node> {
        self.retry(|| async {
            let mut w = self.begin_edit(by, now).await?;
            let node = w.set_xattr(ino, name, value, mode).await?;
            self.commit_write(w).await?;
            Ok(node)
        })
        .await
    }

    async fn remove_xattr(&self, by: Actor, ino: i64, name: &str, now: i64) -> MetaResult<Node> {
        self.retry(|| async {
            let mut w = self.begin_edit(by, now).await?;
            let node = w.remove_xattr(ino, name).await?;
            self.commit_write(w).await?;
            Ok(node)
        })
        .await
    }
}
