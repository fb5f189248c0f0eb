//! Upkeep: garbage collection and the consistency audit (`panserver check`).

use std::collections::HashSet;

use async_trait::async_trait;
use sqlx::{AssertSqlSafe, Row};

use super::{SqlMeta, parse_location};
use crate::meta::{Audit, ChunkLocation, Dialect, GcReport, MetaResult, Upkeep};

/// One audit rule: a query that lists what is wrong (a key, what is recorded,
/// what it should be), a message, and the statement that repairs one row; it
/// takes the value it should be, then the key.
struct Rule {
    find: &'static str,
    what: &'static str,
    repair: Option<&'static str>,
}

const AUDIT_RULES: &[Rule] = &[
    Rule {
        find: "SELECT CAST(f.id AS CHAR), f.refcount, \
               (SELECT COUNT(*) FROM tbl_inode i WHERE i.file_id = f.id AND i.status = 0) AS want \
               FROM tbl_file f WHERE f.refcount <> \
               (SELECT COUNT(*) FROM tbl_inode i WHERE i.file_id = f.id AND i.status = 0)",
        what: "content reference count",
        repair: Some("UPDATE tbl_file SET refcount = ? WHERE id = CAST(? AS SIGNED)"),
    },
    Rule {
        find: "SELECT c.sha256, c.refcount, \
               (SELECT COUNT(*) FROM tbl_file_chunk fc WHERE fc.chunk_sha256 = c.sha256) AS want \
               FROM tbl_chunk c WHERE c.refcount <> \
               (SELECT COUNT(*) FROM tbl_file_chunk fc WHERE fc.chunk_sha256 = c.sha256)",
        what: "chunk reference count",
        repair: Some("UPDATE tbl_chunk SET refcount = ? WHERE sha256 = ?"),
    },
    Rule {
        find: "SELECT CAST(u.id AS CHAR), u.used_bytes, \
               (SELECT CAST(COALESCE(SUM(i.size), 0) AS SIGNED) FROM tbl_inode i \
                WHERE i.user_id = u.id AND i.status = 0 AND i.kind = 'file') AS want \
               FROM tbl_user u WHERE u.used_bytes <> \
               (SELECT CAST(COALESCE(SUM(i.size), 0) AS SIGNED) FROM tbl_inode i \
                WHERE i.user_id = u.id AND i.status = 0 AND i.kind = 'file')",
        what: "user's byte count",
        repair: Some("UPDATE tbl_user SET used_bytes = ? WHERE id = CAST(? AS SIGNED)"),
    },
    Rule {
        find: "SELECT CAST(u.id AS CHAR), u.used_files, \
               (SELECT COUNT(*) FROM tbl_inode i WHERE i.user_id = u.id AND i.status = 0 AND i.id <> u.root_ino) AS want \
               FROM tbl_user u WHERE u.used_files <> \
               (SELECT COUNT(*) FROM tbl_inode i WHERE i.user_id = u.id AND i.status = 0 AND i.id <> u.root_ino)",
        what: "user's file count",
        repair: Some("UPDATE tbl_user SET used_files = ? WHERE id = CAST(? AS SIGNED)"),
    },
    Rule {
        find: "SELECT DISTINCT fc.chunk_sha256, 0, 1 FROM tbl_file_chunk fc \
               LEFT JOIN tbl_chunk c ON c.sha256 = fc.chunk_sha256 \
               WHERE fc.chunk_sha256 IS NOT NULL AND c.sha256 IS NULL",
        what: "chunk referenced by a content but unknown",
        repair: None,
    },
    Rule {
        find: "SELECT CONCAT(CAST(e.parent_ino AS CHAR), '/', e.file_name), 0, 0 FROM tbl_user_file e \
               LEFT JOIN tbl_inode i ON i.id = e.ino AND i.status = 0 WHERE i.id IS NULL",
        what: "directory entry naming a missing inode",
        // The value is always 0 here: the entry should not exist.
        repair: Some(
            "DELETE FROM tbl_user_file WHERE 0 = ? AND CONCAT(CAST(parent_ino AS CHAR), '/', file_name) = ?",
        ),
    },
];

impl SqlMeta {
    async fn forget_chunk_tx(&self, sha256: &str) -> MetaResult<()> {
        let mut tx = self.begin_write().await?;
        let gone = sqlx::query("DELETE FROM tbl_chunk WHERE sha256 = ? AND refcount <= 0")
            .bind(sha256)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if gone > 0 {
            sqlx::query("DELETE FROM tbl_user_chunk WHERE chunk_sha256 = ?")
                .bind(sha256)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn gc_content_tx(&self, file_id: i64) -> MetaResult<bool> {
        let mut tx = self.begin_write().await?;
        let gone = sqlx::query("DELETE FROM tbl_file WHERE id = ? AND refcount <= 0")
            .bind(file_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if gone == 0 {
            return Ok(false);
        }
        let uses = sqlx::query(
            "SELECT chunk_sha256, COUNT(*) FROM tbl_file_chunk WHERE file_id = ? AND chunk_sha256 IS NOT NULL \
             GROUP BY chunk_sha256",
        )
        .bind(file_id)
        .fetch_all(&mut *tx)
        .await?;
        for row in uses {
            let sha: String = row.try_get(0)?;
            let n: i64 = row.try_get(1)?;
            sqlx::query("UPDATE tbl_chunk SET refcount = refcount - ? WHERE sha256 = ?")
                .bind(n)
                .bind(sha)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query("DELETE FROM tbl_file_chunk WHERE file_id = ?")
            .bind(file_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }
}

#[async_trait]
impl Upkeep for SqlMeta {
    async fn collect_garbage(&self, cutoff: i64, pinned: &HashSet<String>) -> MetaResult<GcReport> {
        let mut report = GcReport::default();
        // Every write here can meet a deadlock with the requests running
        // meanwhile (MariaDB's 1213); each is retried as a whole.
        self.retry(|| async {
            sqlx::query(
                "DELETE FROM tbl_inode WHERE status = 1 AND deleted_at < ? \
                 AND id NOT IN (SELECT ino FROM tbl_user_file)",
            )
            .bind(cutoff)
            .execute(&self.pool)
            .await?;
            Ok(())
        })
        .await?;
        let files = sqlx::query(
            "SELECT f.id FROM tbl_file f WHERE f.refcount <= 0 AND f.updated_at < ? \
             AND NOT EXISTS (SELECT 1 FROM tbl_inode i WHERE i.file_id = f.id) LIMIT 1000",
        )
        .bind(cutoff)
        .fetch_all(&self.pool)
        .await?;
        for row in files {
            let id: i64 = row.try_get(0)?;
            if self.retry(|| self.gc_content_tx(id)).await? {
                report.contents_removed += 1;
            }
        }
        let chunks = sqlx::query(
            "SELECT sha256, location FROM tbl_chunk WHERE refcount <= 0 AND updated_at < ? LIMIT 1000",
        )
        .bind(cutoff)
        .fetch_all(&self.pool)
        .await?;
        for row in chunks {
            let sha: String = row.try_get(0)?;
            if pinned.contains(&sha) {
                continue;
            }
            let location = parse_location(&row.try_get::<String, _>(1)?);
            report.chunks_removed.push((sha, location));
        }
        Ok(report)
    }

    async fn chunks_after(
        &self,
        after: &str,
        limit: i64,
    ) -> MetaResult<Vec<(String, ChunkLocation)>> {
        let rows = sqlx::query(
            "SELECT sha256, location FROM tbl_chunk WHERE sha256 > ? ORDER BY sha256 LIMIT ?",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, parse_location(&r.try_get::<String, _>(1)?))))
            .collect()
    }

    async fn audit(&self, repair: bool) -> MetaResult<Audit> {
        let mut audit = Audit::default();
        for rule in AUDIT_RULES {
            let sql = match self.dialect {
                // SQLite has no CONCAT; `||` joins strings there.
                Dialect::Sqlite => rule.find.replace(
                    "CONCAT(CAST(e.parent_ino AS CHAR), '/', e.file_name)",
                    "CAST(e.parent_ino AS TEXT) || '/' || e.file_name",
                ),
                Dialect::Mysql => rule.find.to_string(),
            };
            let rows = sqlx::query(AssertSqlSafe(sql))
                .fetch_all(&self.pool)
                .await?;
            for row in rows {
                let key: String = row.try_get(0)?;
                let (have, want): (i64, i64) = (row.try_get(1)?, row.try_get(2)?);
                audit.problems.push(format!(
                    "{} of {key}: recorded {have}, should be {want}",
                    rule.what
                ));
                if let (true, Some(fix)) = (repair, rule.repair) {
                    let fix = match self.dialect {
                        Dialect::Sqlite => fix
                            .replace("CAST(? AS SIGNED)", "CAST(? AS INTEGER)")
                            .replace(
                                "CONCAT(CAST(parent_ino AS CHAR), '/', file_name)",
                                "CAST(parent_ino AS TEXT) || '/' || file_name",
                            ),
                        Dialect::Mysql => fix.to_string(),
                    };
                    sqlx::query(AssertSqlSafe(fix))
                        .bind(want)
                        .bind(&key)
                        .execute(&self.pool)
                        .await?;
                    audit.repaired += 1;
                }
            }
        }
        Ok(audit)
    }

    async fn forget_chunk(&self, sha256: &str) -> MetaResult<()> {
        self.retry(|| self.forget_chunk_tx(sha256)).await
    }
}
