//! Contents (a file version: its chunk list) and the chunks they are made of.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use panproto::wire::{ChangeKind, ChunkRef, Node, NodeKind};
use sqlx::{AssertSqlSafe, Row};

use super::changes::{Edit, Write};
use super::tree::live_node;
use super::{BATCH, SqlMeta, Tx, for_update, inserted_id, parse_location, placeholders};
use crate::meta::{
    Actor, ChunkLocation, ContentStore, Extent, KnownContent, MetaError, MetaResult, NewChunk,
    TreeStore,
};

pub(super) async fn release_content_of(tx: &mut Tx, ino: i64, now: i64) -> MetaResult<()> {
    sqlx::query(
        "UPDATE tbl_file SET refcount = refcount - 1, updated_at = ?, \
         status = CASE WHEN refcount - 1 <= 0 THEN 1 ELSE 0 END \
         WHERE id = (SELECT file_id FROM tbl_inode WHERE id = ?)",
    )
    .bind(now)
    .bind(ino)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The size of the content a chunk list makes, holes included.
pub(super) fn content_size(chunks: &[ChunkRef]) -> i64 {
    chunks.iter().map(|c| c.size as i64).sum()
}

/// The bytes of a chunk list that are not holes.
pub(super) fn data_bytes(chunks: &[ChunkRef]) -> i64 {
    chunks
        .iter()
        .filter(|c| c.sha256.is_some())
        .map(|c| c.size as i64)
        .sum()
}

impl Write {
    #[allow(clippy::too_many_arguments)]
    pub async fn set_content(
        &mut self,
        ino: i64,
        chunks: &[ChunkRef],
        hashes: Option<(&str, &str)>,
        if_content: Option<Option<&str>>,
        mtime: i64,
    ) -> MetaResult<Node> {
        let (user, now) = (self.user(), self.now);
        let node = live_node(&mut self.tx, user, ino).await?;
        if node.kind != NodeKind::File {
            return Err(if node.kind == NodeKind::Dir {
                MetaError::IsDir
            } else {
                MetaError::NotRegularFile
            });
        }
        if let Some(expected) = if_content
            && expected != node.content.as_deref()
        {
            // The content is what this sets already (a resend whose first
            // answer was lost, or the same bytes stored elsewhere): nothing
            // to change, and nothing of anyone's is lost.
            let setting = (!chunks.is_empty()).then(|| panproto::manifest_id(chunks));
            if node.content == setting {
                return Ok(node);
            }
            return Err(MetaError::Conflict);
        }
        let size = content_size(chunks);
        let quota = sqlx::query("SELECT used_bytes, quota_bytes FROM tbl_user WHERE id = ?")
            .bind(user)
            .fetch_one(&mut *self.tx)
            .await?;
        let (used, limit): (i64, i64) = (quota.try_get(0)?, quota.try_get(1)?);
        if limit > 0 && size > node.size && used - node.size + size > limit {
            return Err(MetaError::Quota);
        }
        release_content_of(&mut self.tx, ino, now).await?;
        let file_id = if chunks.is_empty() {
            None
        } else {
            Some(acquire_content(&mut self.tx, chunks, size, hashes, now).await?)
        };
        sqlx::query(
            "UPDATE tbl_inode SET file_id = ?, size = ?, mtime = ?, ctime = ? WHERE id = ?",
        )
        .bind(file_id)
        .bind(size)
        .bind(mtime)
        .bind(now)
        .bind(ino)
        .execute(&mut *self.tx)
        .await?;
        sqlx::query("UPDATE tbl_user SET used_bytes = used_bytes + ? WHERE id = ?")
            .bind(size - node.size)
            .bind(user)
            .execute(&mut *self.tx)
            .await?;
        let node = live_node(&mut self.tx, user, ino).await?;
        let edit = Edit::new(ChangeKind::Content, ino).node(Some(node.clone()));
        self.record(edit).await?;
        Ok(node)
    }
}

/// Finds or records the content made of `chunks` and takes one reference to it.
async fn acquire_content(
    tx: &mut Tx,
    chunks: &[ChunkRef],
    size: i64,
    hashes: Option<(&str, &str)>,
    now: i64,
) -> MetaResult<i64> {
    let id = panproto::manifest_id(chunks);
    // Locked, so that garbage collection cannot delete a content row between
    // this read and the reference taken below.
    let sql = format!(
        "SELECT id FROM tbl_file WHERE manifest_sha256 = ?{}",
        for_update(tx)
    );
    let existing = sqlx::query(AssertSqlSafe(sql))
        .bind(&id)
        .fetch_optional(&mut **tx)
        .await?;
    if let Some(row) = existing {
        let file_id: i64 = row.try_get(0)?;
        sqlx::query(
            "UPDATE tbl_file SET refcount = refcount + 1, status = 0, updated_at = ? WHERE id = ?",
        )
        .bind(now)
        .bind(file_id)
        .execute(&mut **tx)
        .await?;
        return Ok(file_id);
    }
    let file_id = sqlx::query(
        "INSERT INTO tbl_file (manifest_sha256, file_sha256, file_sha1, file_size, data_bytes, refcount, updated_at) \
         VALUES (?, ?, ?, ?, ?, 1, ?)",
    )
    .bind(&id)
    .bind(hashes.map(|h| h.0.to_string()))
    .bind(hashes.map(|h| h.1.to_string()))
    .bind(size)
    .bind(data_bytes(chunks))
    .bind(now)
    .execute(&mut **tx)
    .await?;
    let file_id = inserted_id(tx, file_id).await?;
    let mut offset = 0i64;
    let mut rows = Vec::with_capacity(chunks.len());
    for (seq, c) in chunks.iter().enumerate() {
        rows.push((seq as i64, c.sha256.clone(), offset, c.size as i64));
        offset += c.size as i64;
    }
    for batch in rows.chunks(BATCH) {
        let sql = format!(
            "INSERT INTO tbl_file_chunk (file_id, seq, chunk_sha256, chunk_offset, size) VALUES {}",
            vec!["(?, ?, ?, ?, ?)"; batch.len()].join(", ")
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for (seq, sha, off, len) in batch {
            q = q
                .bind(file_id)
                .bind(*seq)
                .bind(sha.clone())
                .bind(*off)
                .bind(*len);
        }
        q.execute(&mut **tx).await?;
    }
    let mut uses: HashMap<&str, i64> = HashMap::new();
    for c in chunks {
        if let Some(sha) = c.sha256.as_deref() {
            *uses.entry(sha).or_default() += 1;
        }
    }
    for (sha, n) in uses {
        // Inside the transaction, so garbage collection cannot drop the chunk between
        // the caller's presence check and this reference.
        let updated = sqlx::query(
            "UPDATE tbl_chunk SET refcount = refcount + ?, updated_at = ? WHERE sha256 = ?",
        )
        .bind(n)
        .bind(now)
        .bind(sha)
        .execute(&mut **tx)
        .await?
        .rows_affected();
        if updated == 0 {
            return Err(MetaError::Invalid("a chunk of the content is missing"));
        }
    }
    Ok(file_id)
}

#[async_trait]
impl ContentStore for SqlMeta {
    async fn extents(&self, user: i64, ino: i64) -> MetaResult<(Node, Vec<Extent>)> {
        let node = self.node(user, ino).await?;
        let Some(content) = node.content.clone() else {
            return Ok((node, Vec::new()));
        };
        let extents = self.extents_in(&content, 0, i64::MAX).await?;
        Ok((node, extents))
    }

    async fn extents_in(&self, manifest_id: &str, start: i64, end: i64) -> MetaResult<Vec<Extent>> {
        // No extent is larger than a chunk (`CHUNK_MAX`), so one that overlaps
        // `start` begins less than that before it: the offset index finds a
        // range's extents without walking every extent before them. The bound
        // allows sixteen times that, in case chunks ever grow.
        let rows = sqlx::query(
            "SELECT c.chunk_sha256, c.chunk_offset, c.size, ch.block_sums, ch.data, ch.location \
             FROM tbl_file_chunk c \
             JOIN tbl_file f ON f.id = c.file_id \
             LEFT JOIN tbl_chunk ch ON ch.sha256 = c.chunk_sha256 \
             WHERE f.manifest_sha256 = ? AND c.chunk_offset < ? AND c.chunk_offset > ? \
             AND c.chunk_offset + c.size > ? \
             ORDER BY c.seq",
        )
        .bind(manifest_id)
        .bind(end)
        .bind(start.saturating_sub(16 * i64::from(panproto::CHUNK_MAX)))
        .bind(start)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Extent {
                    sha256: r.try_get(0)?,
                    offset: r.try_get(1)?,
                    size: r.try_get(2)?,
                    block_sums: r.try_get(3)?,
                    inline: r.try_get(4)?,
                    location: r
                        .try_get::<Option<String>, _>(5)?
                        .as_deref()
                        .map(parse_location),
                })
            })
            .collect()
    }

    async fn set_content(
        &self,
        by: Actor,
        ino: i64,
        chunks: &[ChunkRef],
        hashes: Option<(&str, &str)>,
        if_content: Option<Option<&str>>,
        mtime: i64,
        now: i64,
    ) -> MetaResult<Node> {
        self.retry(|| async {
            let mut w = self.begin_edit(by, now).await?;
            let node = w
                .set_content(ino, chunks, hashes, if_content, mtime)
                .await?;
            self.commit_write(w).await?;
            Ok(node)
        })
        .await
    }

    async fn content_by_hash(
        &self,
        sha256: &str,
        sha1: Option<&str>,
    ) -> MetaResult<Option<KnownContent>> {
        let row = sqlx::query(
            "SELECT id, manifest_sha256, file_sha1 FROM tbl_file WHERE file_sha256 = ? ORDER BY id LIMIT 1",
        )
        .bind(sha256)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let stored_sha1: Option<String> = row.try_get(2)?;
        if let Some(claimed) = sha1
            && stored_sha1.as_deref() != Some(claimed)
        {
            return Ok(None);
        }
        let file_id: i64 = row.try_get(0)?;
        let chunks = sqlx::query(
            "SELECT chunk_sha256, size FROM tbl_file_chunk WHERE file_id = ? ORDER BY seq",
        )
        .bind(file_id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| {
            Ok(ChunkRef {
                sha256: r.try_get(0)?,
                size: r.try_get::<i64, _>(1)? as u64,
            })
        })
        .collect::<MetaResult<Vec<_>>>()?;
        Ok(Some(KnownContent {
            manifest_id: row.try_get(1)?,
            chunks,
        }))
    }

    async fn content_sha1(&self, manifest_id: &str) -> MetaResult<Option<String>> {
        self.nullable_by_key(
            "SELECT file_sha1 FROM tbl_file WHERE manifest_sha256 = ?",
            manifest_id,
        )
        .await
    }

    async fn unhashed_contents(&self, limit: i64) -> MetaResult<Vec<String>> {
        let rows = sqlx::query(
            "SELECT manifest_sha256 FROM tbl_file WHERE file_sha256 IS NULL AND status = 0 LIMIT ?",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }

    async fn set_content_hashes(
        &self,
        manifest_id: &str,
        sha256: &str,
        sha1: &str,
    ) -> MetaResult<()> {
        sqlx::query("UPDATE tbl_file SET file_sha256 = ?, file_sha1 = ? WHERE manifest_sha256 = ?")
            .bind(sha256)
            .bind(sha1)
            .bind(manifest_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn present_chunks(&self, hashes: &[String]) -> MetaResult<HashSet<String>> {
        self.hashes_in("SELECT sha256 FROM tbl_chunk WHERE sha256 IN", None, hashes)
            .await
    }

    async fn stored_chunks(&self, hashes: &[String]) -> MetaResult<HashSet<String>> {
        self.hashes_in(
            "SELECT sha256 FROM tbl_chunk WHERE location <> 'staging' AND sha256 IN",
            None,
            hashes,
        )
        .await
    }

    async fn owned_chunks(&self, user: i64, hashes: &[String]) -> MetaResult<HashSet<String>> {
        self.hashes_in(
            "SELECT chunk_sha256 FROM tbl_user_chunk WHERE user_id = ? AND chunk_sha256 IN",
            Some(user),
            hashes,
        )
        .await
    }

    async fn grant_chunks(&self, user: i64, hashes: &[String]) -> MetaResult<()> {
        for batch in hashes.chunks(BATCH) {
            let sql = format!(
                "{} INTO tbl_user_chunk (user_id, chunk_sha256) VALUES {}",
                self.insert_ignore(),
                vec!["(?, ?)"; batch.len()].join(", ")
            );
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for h in batch {
                q = q.bind(user).bind(h.clone());
            }
            q.execute(&self.pool).await?;
        }
        Ok(())
    }

    async fn add_chunks(&self, chunks: &[NewChunk], now: i64) -> MetaResult<()> {
        for batch in chunks.chunks(BATCH) {
            let sql = format!(
                "{} INTO tbl_chunk (sha256, size, refcount, location, updated_at, block_sums, data) \
                 VALUES {}",
                self.insert_ignore(),
                vec!["(?, ?, 0, ?, ?, ?, ?)"; batch.len()].join(", ")
            );
            let mut insert = sqlx::query(AssertSqlSafe(sql));
            for c in batch {
                let location = match c.inline {
                    Some(_) => ChunkLocation::Inline,
                    None => ChunkLocation::Staging,
                };
                insert = insert
                    .bind(c.sha256.clone())
                    .bind(c.size)
                    .bind(location.as_str())
                    .bind(now)
                    .bind(c.block_sums.clone())
                    .bind(c.inline.clone());
            }
            let inserted = insert.execute(&self.pool).await?.rows_affected();
            if inserted < batch.len() as u64 {
                // Some were known already: a fresh upload restarts their grace period.
                let sql = format!(
                    "UPDATE tbl_chunk SET updated_at = ? WHERE sha256 IN ({})",
                    placeholders(batch.len())
                );
                let mut update = sqlx::query(AssertSqlSafe(sql)).bind(now);
                for c in batch {
                    update = update.bind(c.sha256.clone());
                }
                update.execute(&self.pool).await?;
            }
        }
        Ok(())
    }

    async fn chunk_location(&self, sha256: &str) -> MetaResult<Option<ChunkLocation>> {
        let location: Option<String> = self
            .nullable_by_key("SELECT location FROM tbl_chunk WHERE sha256 = ?", sha256)
            .await?;
        Ok(location.as_deref().map(parse_location))
    }

    async fn block_sums(&self, sha256: &str) -> MetaResult<Option<Vec<u8>>> {
        self.nullable_by_key("SELECT block_sums FROM tbl_chunk WHERE sha256 = ?", sha256)
            .await
    }

    async fn set_block_sums(&self, sha256: &str, sums: &[u8]) -> MetaResult<()> {
        sqlx::query("UPDATE tbl_chunk SET block_sums = ? WHERE sha256 = ?")
            .bind(sums)
            .bind(sha256)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn inline_chunk(&self, sha256: &str) -> MetaResult<Option<Vec<u8>>> {
        self.nullable_by_key(
            "SELECT data FROM tbl_chunk WHERE sha256 = ? AND location = 'inline'",
            sha256,
        )
        .await
    }

    async fn set_chunk_location(
        &self,
        sha256: &str,
        location: ChunkLocation,
        now: i64,
    ) -> MetaResult<()> {
        sqlx::query("UPDATE tbl_chunk SET location = ?, updated_at = ? WHERE sha256 = ?")
            .bind(location.as_str())
            .bind(now)
            .bind(sha256)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn staged_chunks(&self, before: i64, limit: i64) -> MetaResult<Vec<String>> {
        let rows = sqlx::query(
            "SELECT sha256 FROM tbl_chunk WHERE location = 'staging' AND updated_at < ? LIMIT ?",
        )
        .bind(before)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }
}
