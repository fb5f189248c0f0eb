//! Users and their tokens.

use async_trait::async_trait;
use panproto::wire::TokenInfo;
use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, Row};

use super::{SqlMeta, inserted_id};
use crate::meta::{MetaError, MetaResult, UserRow, UserStore};

const USER_SELECT: &str = "SELECT id, user_name, user_pwd, root_ino, signup_at, used_bytes, \
     used_files, quota_bytes, quota_files, failed_logins, locked_until FROM tbl_user";

fn user_from_row(row: &AnyRow) -> MetaResult<UserRow> {
    Ok(UserRow {
        id: row.try_get(0)?,
        username: row.try_get(1)?,
        password_hash: row.try_get(2)?,
        root_ino: row.try_get(3)?,
        signup_at: row.try_get(4)?,
        used_bytes: row.try_get(5)?,
        used_files: row.try_get(6)?,
        quota_bytes: row.try_get(7)?,
        quota_files: row.try_get(8)?,
        failed_logins: row.try_get(9)?,
        locked_until: row.try_get(10)?,
    })
}

impl SqlMeta {
    async fn create_user_tx(
        &self,
        username: &str,
        hash: &str,
        quota: (i64, i64),
        root: i64,
        now: i64,
    ) -> MetaResult<UserRow> {
        let mut tx = self.begin_write().await?;
        let taken = sqlx::query("SELECT id FROM tbl_user WHERE user_name = ?")
            .bind(username)
            .fetch_optional(&mut *tx)
            .await?;
        if taken.is_some() {
            return Err(MetaError::Exists);
        }
        let user = sqlx::query(
            "INSERT INTO tbl_user (user_name, user_pwd, signup_at, quota_bytes, quota_files) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(username)
        .bind(hash)
        .bind(now)
        .bind(quota.0)
        .bind(quota.1)
            .execute(&mut *tx)
        .await?;
        let user = inserted_id(&mut tx, user).await?;
        sqlx::query(
            "INSERT INTO tbl_inode (id, user_id, kind, mode, uid, gid, atime, mtime, ctime, nlink) \
             VALUES (?, ?, 'dir', 493, 0, 0, ?, ?, ?, 2)",
        )
        .bind(root)
        .bind(user)
        .bind(now)
        .bind(now)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE tbl_user SET root_ino = ? WHERE id = ?")
            .bind(root)
            .bind(user)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.user_by_id(user).await
    }
}

#[async_trait]
impl UserStore for SqlMeta {
    async fn create_user(
        &self,
        username: &str,
        password_hash: &str,
        quota: (i64, i64),
        now: i64,
    ) -> MetaResult<UserRow> {
        let root = self.new_inos(1).await?[0];
        self.retry(|| self.create_user_tx(username, password_hash, quota, root, now))
            .await
    }

    async fn user_by_name(&self, username: &str) -> MetaResult<Option<UserRow>> {
        let sql = format!("{USER_SELECT} WHERE user_name = ? AND status = 0");
        match sqlx::query(AssertSqlSafe(sql))
            .bind(username)
            .fetch_optional(&self.pool)
            .await?
        {
            Some(row) => Ok(Some(user_from_row(&row)?)),
            None => Ok(None),
        }
    }

    async fn user_by_id(&self, id: i64) -> MetaResult<UserRow> {
        let sql = format!("{USER_SELECT} WHERE id = ? AND status = 0");
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(MetaError::NotFound)?;
        user_from_row(&row)
    }

    async fn record_login_failure(
        &self,
        user: i64,
        failures: i64,
        locked_until: i64,
    ) -> MetaResult<()> {
        sqlx::query("UPDATE tbl_user SET failed_logins = ?, locked_until = ? WHERE id = ?")
            .bind(failures)
            .bind(locked_until)
            .bind(user)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn insert_token(
        &self,
        user: i64,
        token_hash: &str,
        now: i64,
        expires_at: i64,
    ) -> MetaResult<i64> {
        let mut tx = self.begin_write().await?;
        let result = sqlx::query(
            "INSERT INTO tbl_user_token (user_id, token_hash, created_at, expires_at) VALUES (?, ?, ?, ?)",
        )
        .bind(user)
        .bind(token_hash)
        .bind(now)
        .bind(expires_at)
        .execute(&mut *tx)
        .await?;
        let id = inserted_id(&mut tx, result).await?;
        tx.commit().await?;
        Ok(id)
    }

    async fn token_owner(&self, token_hash: &str, now: i64) -> MetaResult<Option<(i64, i64)>> {
        let row = sqlx::query(
            "SELECT user_id, id FROM tbl_user_token WHERE token_hash = ? AND expires_at > ?",
        )
        .bind(token_hash)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        Ok(match row {
            Some(r) => Some((r.try_get(0)?, r.try_get(1)?)),
            None => None,
        })
    }

    async fn list_tokens(&self, user: i64, now: i64) -> MetaResult<Vec<TokenInfo>> {
        let rows = sqlx::query(
            "SELECT id, created_at, expires_at FROM tbl_user_token WHERE user_id = ? AND expires_at > ? ORDER BY id",
        )
        .bind(user)
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(TokenInfo {
                    id: r.try_get(0)?,
                    created_at: r.try_get(1)?,
                    expires_at: r.try_get(2)?,
                    current: false,
                })
            })
            .collect()
    }

    async fn delete_token(&self, user: i64, token_id: i64) -> MetaResult<()> {
        let n = sqlx::query("DELETE FROM tbl_user_token WHERE id = ? AND user_id = ?")
            .bind(token_id)
            .bind(user)
            .execute(&self.pool)
            .await?
            .rows_affected();
        if n == 0 {
            Err(MetaError::NotFound)
        } else {
            Ok(())
        }
    }
}
