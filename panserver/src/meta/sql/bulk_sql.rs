//! The queries of a batch's fast path (see `bulk`): the checks a run of
//! new-node operations must pass, and its multi-row writes.

use std::collections::HashMap;

use panproto::wire::NodeKind;
use sqlx::{AssertSqlSafe, Row};

use super::bulk::{Content, Made, Played, Scan};
use super::changes::Write;
use super::contents::content_size;
use super::{BATCH, bind_each, for_update, placeholders};
use crate::meta::{MetaError, MetaResult};

/// Appends `(?, …, ?)` rows for `rows` items of `width` values each.
fn values(rows: usize, width: usize) -> String {
    let row = format!("({})", placeholders(width));
    vec![row.as_str(); rows].join(", ")
}

impl Write {
    /// The checks each operation makes on its own, for the whole run. Some:
    /// the contents the run uses, as the database has them (None: a new one).
    pub(super) async fn check_run(
        &mut self,
        s: &Scan,
    ) -> MetaResult<Option<HashMap<String, Content>>> {
        let user = self.user();
        let lock = for_update(&self.tx);
        if let (Some(&low), Some(&high)) = (s.reserved.iter().min(), s.reserved.iter().max()) {
            let ranges = sqlx::query(
                "SELECT first_ino, count FROM tbl_ino_range \
                 WHERE user_id = ? AND first_ino <= ? AND first_ino + count > ?",
            )
            .bind(user)
            .bind(high)
            .bind(low)
            .fetch_all(&mut *self.tx)
            .await?
            .iter()
            .map(|r| Ok((r.try_get::<i64, _>(0)?, r.try_get::<i64, _>(1)?)))
            .collect::<MetaResult<Vec<(i64, i64)>>>()?;
            // Minted numbers (rare: made offline) take the checks one by one.
            let reserved = |n: i64| ranges.iter().any(|&(f, c)| f <= n && n < f + c);
            if !s.reserved.iter().all(|&n| reserved(n)) {
                return Ok(None);
            }
            for numbers in s.reserved.chunks(BATCH) {
                let sql = format!(
                    "SELECT id FROM tbl_inode WHERE id IN ({}) LIMIT 1",
                    placeholders(numbers.len())
                );
                let q = bind_each(sqlx::query(AssertSqlSafe(sql)), numbers.iter().copied());
                if q.fetch_optional(&mut *self.tx).await?.is_some() {
                    return Ok(None);
                }
            }
        }
        for (parent, names) in &s.names {
            let sql = format!(
                "SELECT kind FROM tbl_inode WHERE id = ? AND user_id = ? AND status = 0{lock}"
            );
            let kind: Option<String> = sqlx::query(AssertSqlSafe(sql))
                .bind(*parent)
                .bind(user)
                .fetch_optional(&mut *self.tx)
                .await?
                .map(|r| r.try_get(0))
                .transpose()?;
            if kind.as_deref() != Some(NodeKind::Dir.as_str()) {
                return Ok(None);
            }
            for names in names.chunks(BATCH) {
                let sql = format!(
                    "SELECT ino FROM tbl_user_file WHERE parent_ino = ? AND file_name IN ({}) LIMIT 1{lock}",
                    placeholders(names.len())
                );
                let q = bind_each(
                    sqlx::query(AssertSqlSafe(sql)).bind(*parent),
                    names.iter().cloned(),
                );
                if q.fetch_optional(&mut *self.tx).await?.is_some() {
                    return Ok(None);
                }
            }
        }
        let quota = sqlx::query(
            "SELECT used_files, quota_files, used_bytes, quota_bytes FROM tbl_user WHERE id = ?",
        )
        .bind(user)
        .fetch_one(&mut *self.tx)
        .await?;
        let (files, file_limit): (i64, i64) = (quota.try_get(0)?, quota.try_get(1)?);
        let (bytes, byte_limit): (i64, i64) = (quota.try_get(2)?, quota.try_get(3)?);
        if (file_limit > 0 && files + s.files > file_limit)
            || (byte_limit > 0 && s.bytes > 0 && bytes + s.bytes > byte_limit)
        {
            return Ok(None);
        }
        self.known_contents(s).await
    }

    /// The contents the run sets: the existing ones with their rows; the new
    /// ones only if every chunk they need is present.
    async fn known_contents(&mut self, s: &Scan) -> MetaResult<Option<HashMap<String, Content>>> {
        let ids: Vec<&String> = s.contents.keys().collect();
        let mut known = HashMap::new();
        for ids in ids.chunks(BATCH) {
            let sql = format!(
                "SELECT manifest_sha256, id, COALESCE(data_bytes, file_size, 0) FROM tbl_file \
                 WHERE manifest_sha256 IN ({}){}",
                placeholders(ids.len()),
                for_update(&self.tx)
            );
            let q = bind_each(
                sqlx::query(AssertSqlSafe(sql)),
                ids.iter().map(|id| (*id).clone()),
            );
            for row in q.fetch_all(&mut *self.tx).await? {
                let content = Content {
                    file_id: Some(row.try_get(1)?),
                    stored: row.try_get(2)?,
                    uses: 0,
                    first_use: 0,
                    last_use: 0,
                };
                known.insert(row.try_get::<String, _>(0)?, content);
            }
        }
        let mut needed: Vec<String> = Vec::new();
        for (id, chunks) in &s.contents {
            if known.contains_key(id) {
                continue;
            }
            needed.extend(chunks.iter().filter_map(|c| c.sha256.clone()));
            let content = Content {
                file_id: None,
                stored: super::contents::data_bytes(chunks),
                uses: 0,
                first_use: 0,
                last_use: 0,
            };
            known.insert(id.clone(), content);
        }
        needed.sort_unstable();
        needed.dedup();
        for shas in needed.chunks(BATCH) {
            let sql = format!(
                "SELECT COUNT(*) FROM tbl_chunk WHERE sha256 IN ({})",
                placeholders(shas.len())
            );
            let q = bind_each(sqlx::query(AssertSqlSafe(sql)), shas.iter().cloned());
            let present: i64 = q.fetch_one(&mut *self.tx).await?.try_get(0)?;
            if present != shas.len() as i64 {
                return Ok(None);
            }
        }
        Ok(Some(known))
    }

    /// Records the run's contents: new ones with their chunks (each chunk
    /// gains a reference per place in the list), and a reference per use.
    pub(super) async fn write_contents(
        &mut self,
        s: &Scan,
        contents: &mut HashMap<String, Content>,
    ) -> MetaResult<()> {
        // Contents recorded before take a reference each use; new ones are
        // recorded with theirs.
        let reused: Vec<(i64, i64, i64)> = contents
            .values()
            .filter(|c| c.uses > 0)
            .filter_map(|c| c.file_id.map(|id| (id, c.uses, c.last_use)))
            .collect();
        let fresh: Vec<(String, i64, i64, i64)> = contents
            .iter()
            .filter(|(_, c)| c.file_id.is_none() && c.uses > 0)
            .map(|(id, c)| (id.clone(), c.stored, c.uses, c.last_use))
            .collect();
        for rows in fresh.chunks(BATCH) {
            let sql = format!(
                "INSERT INTO tbl_file (manifest_sha256, file_size, data_bytes, refcount, updated_at) VALUES {}",
                values(rows.len(), 5)
            );
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for (id, stored, uses, last_use) in rows {
                let size = content_size(&s.contents[id]);
                q = q.bind(id.clone()).bind(size).bind(*stored);
                q = q.bind(*uses).bind(*last_use);
            }
            q.execute(&mut *self.tx).await?;
        }
        let ids: Vec<String> = fresh.into_iter().map(|(id, ..)| id).collect();
        for ids in ids.chunks(BATCH) {
            let sql = format!(
                "SELECT manifest_sha256, id FROM tbl_file WHERE manifest_sha256 IN ({})",
                placeholders(ids.len())
            );
            let q = bind_each(sqlx::query(AssertSqlSafe(sql)), ids.iter().cloned());
            for row in q.fetch_all(&mut *self.tx).await? {
                let id: String = row.try_get(0)?;
                if let Some(c) = contents.get_mut(&id) {
                    c.file_id = Some(row.try_get(1)?);
                }
            }
        }
        let mut chunk_rows = Vec::new();
        // Per chunk: references gained, and when the last content that
        // refers to it was recorded.
        let mut chunk_uses: HashMap<&str, (i64, i64)> = HashMap::new();
        for id in &ids {
            let (file_id, recorded) = (contents[id].file_id, contents[id].first_use);
            let mut offset = 0i64;
            for (seq, c) in s.contents[id].iter().enumerate() {
                chunk_rows.push((file_id, seq as i64, c.sha256.clone(), offset, c.size as i64));
                offset += c.size as i64;
                if let Some(sha) = c.sha256.as_deref() {
                    let (uses, at) = chunk_uses.entry(sha).or_default();
                    (*uses, *at) = (*uses + 1, (*at).max(recorded));
                }
            }
        }
        for rows in chunk_rows.chunks(BATCH) {
            let sql = format!(
                "INSERT INTO tbl_file_chunk (file_id, seq, chunk_sha256, chunk_offset, size) VALUES {}",
                values(rows.len(), 5)
            );
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for (file_id, seq, sha, offset, size) in rows {
                q = q.bind(*file_id).bind(*seq).bind(sha.clone());
                q = q.bind(*offset).bind(*size);
            }
            q.execute(&mut *self.tx).await?;
        }
        let uses: Vec<(String, i64, i64)> = chunk_uses
            .into_iter()
            .map(|(sha, (n, at))| (sha.to_string(), n, at))
            .collect();
        let changed = self
            .add_references("tbl_chunk", "sha256", "", &uses)
            .await?;
        if changed != uses.len() as u64 {
            // Checked present above, with the rows locked: not a refusal.
            return Err(MetaError::Unavailable(
                "a chunk went missing during a batch".into(),
            ));
        }
        self.add_references("tbl_file", "id", ", status = 0", &reused)
            .await?;
        Ok(())
    }

    /// Writes the new nodes and their names, touches the existing parents and
    /// counts the files and bytes against the user.
    pub(super) async fn write_nodes(
        &mut self,
        p: &Played,
        contents: &HashMap<String, Content>,
        bytes: i64,
    ) -> MetaResult<()> {
        let user = self.user();
        for rows in p.made.chunks(BATCH) {
            let sql = format!(
                "INSERT INTO tbl_inode (id, user_id, kind, mode, uid, gid, size, atime, mtime, ctime, \
                 nlink, target, rdev, file_id) VALUES {}",
                values(rows.len(), 14)
            );
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for Made { node: n, .. } in rows {
                let file_id = n.content.as_ref().and_then(|id| contents.get(id)?.file_id);
                q = q.bind(n.ino).bind(user).bind(n.kind.as_str());
                q = q.bind(i64::from(n.mode)).bind(i64::from(n.uid));
                q = q.bind(i64::from(n.gid)).bind(n.size).bind(n.atime);
                q = q.bind(n.mtime).bind(n.ctime).bind(i64::from(n.nlink));
                q = q
                    .bind(n.target.clone())
                    .bind(i64::from(n.rdev))
                    .bind(file_id);
            }
            q.execute(&mut *self.tx).await?;
            let sql = format!(
                "INSERT INTO tbl_user_file (user_id, parent_ino, file_name, ino) VALUES {}",
                values(rows.len(), 4)
            );
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for m in rows {
                q = q
                    .bind(user)
                    .bind(m.parent)
                    .bind(m.name.clone())
                    .bind(m.node.ino);
            }
            q.execute(&mut *self.tx).await?;
        }
        for (parent, (links, at)) in &p.parents {
            super::tree::dir_changed(&mut self.tx, *parent, *links, *at).await?;
        }
        sqlx::query(
            "UPDATE tbl_user SET used_files = used_files + ?, used_bytes = used_bytes + ? WHERE id = ?",
        )
        .bind(p.made.len() as i64)
        .bind(bytes)
        .bind(user)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Adds `uses` references to each row of `table` whose `key` is given,
    /// and sets its `updated_at` to `at`, with one statement per `BATCH` rows
    /// (`also`: more to set, as SQL). Answers how many rows changed.
    async fn add_references<K>(
        &mut self,
        table: &'static str,
        key: &'static str,
        also: &'static str,
        rows: &[(K, i64, i64)],
    ) -> MetaResult<u64>
    where
        K: for<'q> sqlx::Encode<'q, sqlx::Any> + sqlx::Type<sqlx::Any> + Clone + Send + 'static,
    {
        let mut changed = 0;
        for rows in rows.chunks(BATCH) {
            let sql = format!(
                "UPDATE {table} SET refcount = refcount + CASE {key} {0} END, \
                 updated_at = CASE {key} {0} END{also} WHERE {key} IN ({1})",
                vec!["WHEN ? THEN ?"; rows.len()].join(" "),
                placeholders(rows.len())
            );
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for (k, uses, _) in rows {
                q = q.bind(k.clone()).bind(*uses);
            }
            for (k, _, at) in rows {
                q = q.bind(k.clone()).bind(*at);
            }
            q = bind_each(q, rows.iter().map(|(k, ..)| k.clone()));
            changed += q.execute(&mut *self.tx).await?.rows_affected();
        }
        Ok(changed)
    }
}
