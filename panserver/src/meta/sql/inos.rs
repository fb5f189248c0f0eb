//! Inode numbers. Every new node takes its number from one counter
//! (`tbl_ino_alloc`), in blocks: a server takes a block at a time for the nodes
//! it makes, and a client reserves one for the nodes it makes before the server
//! hears of them (`tbl_ino_range` records whose it is), or mints one from a
//! block it reserved (`panproto::batch::mint`). A node's number is its number
//! for good, on every mount.

use async_trait::async_trait;
use panproto::batch::minted_from;
use panproto::wire::Node;
use sqlx::{AssertSqlSafe, Row};

use super::changes::Write;
use super::tree::{NODE_SELECT, node_from_row};
use super::{SqlMeta, for_update};
use crate::meta::{InoStore, MetaError, MetaResult};

/// Numbers a server takes from the counter at a time for its own creates.
const SERVER_BLOCK: i64 = 256;

/// The numbers a server has taken and not used yet.
#[derive(Default)]
pub(super) struct InoPool {
    next: i64,
    end: i64,
}

impl SqlMeta {
    /// Takes `count` numbers from the counter: the first of them.
    async fn take_block(&self, count: i64) -> MetaResult<i64> {
        self.retry(|| async {
            let mut tx = self.begin_write().await?;
            let sql = format!(
                "SELECT next_ino FROM tbl_ino_alloc WHERE id = 1{}",
                for_update(&tx)
            );
            let first: i64 = sqlx::query(AssertSqlSafe(sql))
                .fetch_one(&mut *tx)
                .await?
                .try_get(0)?;
            sqlx::query("UPDATE tbl_ino_alloc SET next_ino = ? WHERE id = 1")
                .bind(first + count)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(first)
        })
        .await
    }

    /// Numbers for `n` new nodes. Taken before the write that uses them (SQLite
    /// has one writer at a time); a write that fails leaves them unused.
    pub(super) async fn new_inos(&self, n: usize) -> MetaResult<Vec<i64>> {
        let mut pool = self.inos.lock().await;
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            if pool.next == pool.end {
                let want = SERVER_BLOCK.max((n - out.len()) as i64);
                pool.next = self.take_block(want).await?;
                pool.end = pool.next + want;
            }
            out.push(pool.next);
            pool.next += 1;
        }
        Ok(out)
    }
}

#[async_trait]
impl InoStore for SqlMeta {
    async fn reserve_inos(&self, user: i64, count: i64, now: i64) -> MetaResult<i64> {
        let first = self.take_block(count).await?;
        sqlx::query(
            "INSERT INTO tbl_ino_range (user_id, first_ino, count, created_at) VALUES (?, ?, ?, ?)",
        )
        .bind(user)
        .bind(first)
        .bind(count)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(first)
    }
}

impl Write {
    /// Checks a reserved number for a create. None: the number is this
    /// user's and unused, so the create may take it. Some: this user's node
    /// holds it already, so the create is a resend of one that reached the
    /// server while its answer was lost (a client uses a reserved number
    /// once), and it answers with that node as it is now. Refuses a number
    /// that was not reserved for this user, or that another user's node holds.
    pub async fn check_reserved(&mut self, ino: i64) -> MetaResult<Option<Node>> {
        // A minted number is the user's when the block it names is.
        let reserved = match minted_from(ino) {
            Some(first) => sqlx::query(
                "SELECT 1 FROM tbl_ino_range WHERE user_id = ? AND first_ino = ?",
            )
            .bind(self.user())
            .bind(first),
            None => sqlx::query(
                "SELECT 1 FROM tbl_ino_range WHERE user_id = ? AND first_ino <= ? AND ? < first_ino + count",
            )
            .bind(self.user())
            .bind(ino)
            .bind(ino),
        }
        .fetch_optional(&mut *self.tx)
        .await?;
        if reserved.is_none() {
            return Err(MetaError::NotPermitted(
                "not an inode number reserved for this user",
            ));
        }
        let used = sqlx::query("SELECT user_id FROM tbl_inode WHERE id = ?")
            .bind(ino)
            .fetch_optional(&mut *self.tx)
            .await?;
        let Some(used) = used else {
            return Ok(None);
        };
        if used.try_get::<i64, _>(0)? != self.user() {
            return Err(MetaError::Exists);
        }
        let sql = format!("{NODE_SELECT} WHERE i.id = ?");
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(ino)
            .fetch_one(&mut *self.tx)
            .await?;
        Ok(Some(node_from_row(&row)?))
    }
}
