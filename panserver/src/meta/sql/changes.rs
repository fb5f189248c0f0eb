//! The change feed's rows. A change takes its user's next sequence number and
//! is written in the transaction that makes it, so the feed holds exactly the
//! committed changes, in commit order: the user's row stays locked from the
//! increment to the commit, so sequence numbers commit in order. A `Write`
//! may hold many changes (a batch): each gets its own number.

use async_trait::async_trait;
use panproto::wire::{Change, ChangeKind, Node};
use sqlx::{AssertSqlSafe, Row};
use tokio::sync::broadcast;

use super::{BATCH, SqlMeta, Tx, for_update};
use crate::meta::{Actor, ChangePage, ChangeStore, MetaError, MetaResult};

/// A change about to be recorded: what it did, to which node and entry.
pub(super) struct Edit {
    change: Change,
}

impl Edit {
    pub(super) fn new(kind: ChangeKind, ino: i64) -> Self {
        Edit {
            change: Change {
                seq: 0,
                kind,
                ino,
                parent: None,
                name: None,
                new_parent: None,
                new_name: None,
                node: None,
                origin: None,
                at: 0,
            },
        }
    }

    pub(super) fn entry(mut self, parent: i64, name: &str) -> Self {
        self.change.parent = Some(parent);
        self.change.name = Some(name.to_string());
        self
    }

    pub(super) fn moved_to(mut self, parent: i64, name: &str) -> Self {
        self.change.new_parent = Some(parent);
        self.change.new_name = Some(name.to_string());
        self
    }

    pub(super) fn node(mut self, node: Option<Node>) -> Self {
        self.change.node = node;
        self
    }
}

/// The node as it is now, if it still has a name (for the change's attributes).
pub(super) async fn node_after(tx: &mut Tx, user: i64, ino: i64) -> MetaResult<Option<Node>> {
    match super::tree::live_node(tx, user, ino).await {
        Ok(node) => Ok(Some(node)),
        Err(MetaError::NotFound) => Ok(None),
        Err(e) => Err(e),
    }
}

/// A write transaction on one user's tree. Each change it makes is numbered
/// as it is made (`record`); the numbers and the feed's rows are written once,
/// at the commit, with all the changes.
pub(super) struct Write {
    pub tx: Tx,
    pub by: Actor,
    pub now: i64,
    /// The user's sequence number before this write (read, and the user's row
    /// locked, at the first change).
    base_seq: Option<i64>,
    changes: Vec<Change>,
}

impl Write {
    pub fn user(&self) -> i64 {
        self.by.user
    }

    /// Numbers `edit` as the actor's next change. The user's row stays locked
    /// from here to the commit, so sequence numbers commit in order.
    pub async fn record(&mut self, edit: Edit) -> MetaResult<()> {
        let base = match self.base_seq {
            Some(seq) => seq,
            None => {
                let sql = format!(
                    "SELECT change_seq FROM tbl_user WHERE id = ?{}",
                    for_update(&self.tx)
                );
                let seq: i64 = sqlx::query(AssertSqlSafe(sql))
                    .bind(self.by.user)
                    .fetch_one(&mut *self.tx)
                    .await?
                    .try_get(0)?;
                *self.base_seq.insert(seq)
            }
        };
        let mut change = edit.change;
        change.seq = base + self.changes.len() as i64 + 1;
        change.origin = self.by.origin;
        change.at = self.now;
        self.changes.push(change);
        Ok(())
    }

    /// How many changes are recorded so far (see `forget_since`).
    pub fn recorded(&self) -> usize {
        self.changes.len()
    }

    /// Forgets the changes recorded after the first `kept` (their statements
    /// were rolled back to a savepoint).
    pub fn forget_since(&mut self, kept: usize) {
        self.changes.truncate(kept);
    }

    /// Writes the user's new sequence number and the feed's rows.
    async fn write_changes(&mut self) -> MetaResult<()> {
        let Some(last) = self.changes.last().map(|c| c.seq) else {
            return Ok(());
        };
        sqlx::query("UPDATE tbl_user SET change_seq = ? WHERE id = ?")
            .bind(last)
            .bind(self.by.user)
            .execute(&mut *self.tx)
            .await?;
        for batch in self.changes.chunks(BATCH) {
            let sql = format!(
                "INSERT INTO tbl_change (user_id, seq, at, body) VALUES {}",
                vec!["(?, ?, ?, ?)"; batch.len()].join(", ")
            );
            let mut insert = sqlx::query(AssertSqlSafe(sql));
            for change in batch {
                let body = serde_json::to_string(change)
                    .map_err(|_| MetaError::Invalid("a change that cannot be encoded"))?;
                insert = insert
                    .bind(self.by.user)
                    .bind(change.seq)
                    .bind(change.at)
                    .bind(body);
            }
            insert.execute(&mut *self.tx).await?;
        }
        Ok(())
    }
}

impl SqlMeta {
    pub(super) async fn begin_edit(&self, by: Actor, now: i64) -> MetaResult<Write> {
        Ok(Write {
            tx: self.begin_write().await?,
            by,
            now,
            base_seq: None,
            changes: Vec::new(),
        })
    }

    /// Commits the write with its changes and tells this process's feed waiters.
    pub(super) async fn commit_write(&self, mut w: Write) -> MetaResult<()> {
        w.write_changes().await?;
        w.tx.commit().await?;
        if !w.changes.is_empty() {
            // Nobody listening is fine: waiters subscribe before they read.
            let _ = self.committed.send(w.by.user);
        }
        Ok(())
    }
}

#[async_trait]
impl ChangeStore for SqlMeta {
    async fn changes(&self, user: i64, since: i64, limit: i64) -> MetaResult<ChangePage> {
        let current = self.change_seq(user).await?;
        // Read after `current`: rows committed in between only add newer changes.
        let rows = sqlx::query(
            "SELECT body FROM tbl_change WHERE user_id = ? AND seq > ? ORDER BY seq LIMIT ?",
        )
        .bind(user)
        .bind(since)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let changes = rows
            .iter()
            .map(|row| {
                let body: String = row.try_get(0)?;
                serde_json::from_str::<Change>(&body)
                    .map_err(|_| MetaError::Invalid("a corrupt change record"))
            })
            .collect::<MetaResult<Vec<_>>>()?;
        // Pruning removes the oldest changes first, so the feed is whole after
        // `since` exactly when it still has the one right after it.
        let complete = since <= current
            && (since == current || changes.first().is_some_and(|c| c.seq == since + 1));
        Ok(ChangePage {
            current,
            complete,
            changes,
        })
    }

    async fn change_seq(&self, user: i64) -> MetaResult<i64> {
        let row = sqlx::query("SELECT change_seq FROM tbl_user WHERE id = ?")
            .bind(user)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(MetaError::NotFound)?;
        Ok(row.try_get(0)?)
    }

    async fn prune_changes(&self, before: i64, keep: i64) -> MetaResult<u64> {
        let old = sqlx::query("DELETE FROM tbl_change WHERE at < ?")
            .bind(before)
            .execute(&self.pool)
            .await?;
        let beyond = sqlx::query(
            "DELETE FROM tbl_change WHERE seq <= \
             (SELECT u.change_seq FROM tbl_user u WHERE u.id = tbl_change.user_id) - ?",
        )
        .bind(keep)
        .execute(&self.pool)
        .await?;
        Ok(old.rows_affected() + beyond.rows_affected())
    }

    fn committed(&self) -> broadcast::Receiver<i64> {
        self.committed.subscribe()
    }
}
