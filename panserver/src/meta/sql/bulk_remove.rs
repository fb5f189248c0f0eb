//! A batch's fast path for removals. `rm -rf` sends runs of removes: each
//! file's, then its directory's. Each remove on its own costs about a dozen
//! statements, and each statement a round trip to the database thread, so
//! the server spent most of an `rm -rf` handing statements between threads.
//! A run is checked with a few queries and written with multi-row
//! statements instead, with the same rows, outcomes and changes as the
//! operations one by one. Whatever the checks cannot show to be plain (a
//! missing name, a precondition that fails, a hard-linked file, a directory
//! the run does not empty, a kind the operation does not expect) sends the
//! run the slow way, where each operation gets its own outcome.

use std::collections::{HashMap, HashSet};

use panproto::wire::{ChangeKind, NodeKind};
use sqlx::{AssertSqlSafe, Row};

use super::bulk::{Fast, RUN_MIN};
use super::changes::{Edit, Write};
use super::tree::dir_changed;
use super::{BATCH, bind_each, for_update, placeholders};
use crate::meta::{MetaError, MetaResult, TreeOp};

/// One remove of the run.
struct Removal<'a> {
    parent: i64,
    name: &'a str,
    dir: bool,
    if_ino: Option<i64>,
    at: i64,
}

/// The longest run of removes at the head of `ops` in which no name comes
/// twice and none is in a directory an earlier remove of the run removed.
fn scan<'a>(ops: &'a [TreeOp], times: &[i64]) -> Vec<Removal<'a>> {
    let mut run = Vec::new();
    let mut names: HashSet<(i64, &str)> = HashSet::new();
    // A remove inside a directory the run removed earlier is told by the
    // checks: the directories' numbers are known only once entries are read.
    for (op, &at) in ops.iter().zip(times) {
        let TreeOp::Remove {
            parent,
            name,
            dir,
            if_ino,
        } = op
        else {
            break;
        };
        if !names.insert((*parent, name.as_str())) {
            break;
        }
        run.push(Removal {
            parent: *parent,
            name,
            dir: *dir,
            if_ino: *if_ino,
            at,
        });
    }
    run
}

/// A node the run removes, as the database has it.
#[derive(Clone, Copy)]
struct Gone {
    ino: i64,
    kind: NodeKind,
    size: i64,
    file_id: Option<i64>,
}

/// `CASE id WHEN ? THEN ? … END` for `pairs` pairs.
fn case_by_id(pairs: usize) -> String {
    format!("CASE id {} END", vec!["WHEN ? THEN ?"; pairs].join(" "))
}

impl Write {
    /// Applies the run of removes at the head of `ops`, if there is one and
    /// every check passes.
    pub(super) async fn apply_removals(
        &mut self,
        ops: &[TreeOp],
        times: &[i64],
    ) -> MetaResult<Fast> {
        let run = scan(ops, times);
        if run.len() < RUN_MIN {
            return Ok(Fast::NoRun);
        }
        let Some(gone) = self.check_removals(&run).await? else {
            return Ok(Fast::Declined(run.len()));
        };
        self.write_removals(&run, &gone).await?;
        for (r, g) in run.iter().zip(&gone) {
            self.now = r.at;
            self.record(Edit::new(ChangeKind::Remove, g.ino).entry(r.parent, r.name))
                .await?;
        }
        Ok(Fast::Applied(vec![None; run.len()]))
    }

    /// The checks each remove makes on its own, for the whole run: each
    /// name's node (in the run's order), or None when one would be refused
    /// or is not plain.
    async fn check_removals(&mut self, run: &[Removal<'_>]) -> MetaResult<Option<Vec<Gone>>> {
        let lock = for_update(&self.tx);
        let mut by_parent: HashMap<i64, Vec<&str>> = HashMap::new();
        for r in run {
            by_parent.entry(r.parent).or_default().push(r.name);
        }
        let mut entries: HashMap<(i64, String), i64> = HashMap::new();
        for (parent, names) in &by_parent {
            for names in names.chunks(BATCH) {
                let sql = format!(
                    "SELECT file_name, ino FROM tbl_user_file WHERE parent_ino = ? AND file_name IN ({}){lock}",
                    placeholders(names.len())
                );
                let q = bind_each(
                    sqlx::query(AssertSqlSafe(sql)).bind(*parent),
                    names.iter().map(|name| name.to_string()),
                );
                for row in q.fetch_all(&mut *self.tx).await? {
                    entries.insert((*parent, row.try_get(0)?), row.try_get(1)?);
                }
            }
        }
        let mut inos = Vec::with_capacity(run.len());
        for r in run {
            match entries.get(&(r.parent, r.name.to_string())) {
                Some(&ino) if r.if_ino.is_none_or(|want| want == ino) => inos.push(ino),
                _ => return Ok(None),
            }
        }
        let removed: HashSet<i64> = inos.iter().copied().collect();
        let parents: Vec<i64> = by_parent
            .keys()
            .copied()
            .filter(|p| !removed.contains(p))
            .collect();
        let nodes = self.nodes_of(inos.iter().chain(&parents).copied()).await?;
        let live_dir = |ino: &i64| nodes.get(ino).is_some_and(|(g, _)| g.kind == NodeKind::Dir);
        if !parents.iter().all(live_dir) {
            return Ok(None);
        }
        let mut gone = Vec::with_capacity(run.len());
        // How many names the run removes from each directory before it
        // removes the directory itself; a remove in one it removed already
        // would be refused.
        let mut emptied: HashMap<i64, i64> = HashMap::new();
        let mut removed_so_far = HashSet::new();
        for (r, ino) in run.iter().zip(&inos) {
            let Some((node, nlink)) = nodes.get(ino) else {
                return Ok(None);
            };
            let is_dir = node.kind == NodeKind::Dir;
            if r.dir != is_dir || (!is_dir && *nlink > 1) || removed_so_far.contains(&r.parent) {
                return Ok(None);
            }
            removed_so_far.insert(*ino);
            *emptied.entry(r.parent).or_default() += 1;
            gone.push(*node);
        }
        // Each directory the run removes holds only what the run removed
        // from it before.
        emptied.retain(|dir, _| removed.contains(dir));
        let dirs: Vec<i64> = emptied.keys().copied().collect();
        for dirs in dirs.chunks(BATCH) {
            let sql = format!(
                "SELECT parent_ino, COUNT(*) FROM tbl_user_file WHERE parent_ino IN ({}) GROUP BY parent_ino",
                placeholders(dirs.len())
            );
            let q = bind_each(sqlx::query(AssertSqlSafe(sql)), dirs.iter().copied());
            for row in q.fetch_all(&mut *self.tx).await? {
                let (dir, count): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
                if emptied.get(&dir) != Some(&count) {
                    return Ok(None);
                }
            }
        }
        Ok(Some(gone))
    }

    /// The user's live nodes among `inos`, with their link counts.
    async fn nodes_of(
        &mut self,
        inos: impl Iterator<Item = i64>,
    ) -> MetaResult<HashMap<i64, (Gone, i64)>> {
        let (user, lock) = (self.user(), for_update(&self.tx));
        let inos: Vec<i64> = inos.collect();
        let mut nodes = HashMap::new();
        for inos in inos.chunks(BATCH) {
            let sql = format!(
                "SELECT id, kind, size, file_id, nlink FROM tbl_inode \
                 WHERE user_id = ? AND status = 0 AND id IN ({}){lock}",
                placeholders(inos.len())
            );
            let q = bind_each(
                sqlx::query(AssertSqlSafe(sql)).bind(user),
                inos.iter().copied(),
            );
            for row in q.fetch_all(&mut *self.tx).await? {
                let kind: String = row.try_get(1)?;
                let gone = Gone {
                    ino: row.try_get(0)?,
                    kind: NodeKind::parse(&kind).ok_or(MetaError::Invalid("corrupt inode kind"))?,
                    size: row.try_get(2)?,
                    file_id: row.try_get(3)?,
                };
                nodes.insert(gone.ino, (gone, row.try_get(4)?));
            }
        }
        Ok(nodes)
    }

    /// The run's rows: names, nodes, contents, quota, and the directories
    /// whose entries changed, as the removes one by one leave them.
    async fn write_removals(&mut self, run: &[Removal<'_>], gone: &[Gone]) -> MetaResult<()> {
        // Every parent as its last remove leaves it (a removed directory
        // first, as it was before its own remove).
        let mut parents: HashMap<i64, (i64, i64)> = HashMap::new();
        for (r, g) in run.iter().zip(gone) {
            let e = parents.entry(r.parent).or_default();
            *e = (e.0 - i64::from(g.kind == NodeKind::Dir), r.at);
        }
        for (parent, (links, at)) in parents {
            dir_changed(&mut self.tx, parent, links, at).await?;
        }
        let at: Vec<(i64, i64)> = run.iter().zip(gone).map(|(r, g)| (g.ino, r.at)).collect();
        for at in at.chunks(BATCH) {
            let case = case_by_id(at.len());
            let sql = format!(
                "UPDATE tbl_inode SET nlink = 0, status = 1, ctime = {case}, deleted_at = {case} \
                 WHERE id IN ({})",
                placeholders(at.len())
            );
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for _ in 0..2 {
                for (ino, when) in at {
                    q = q.bind(*ino).bind(*when);
                }
            }
            q = bind_each(q, at.iter().map(|(ino, _)| *ino));
            q.execute(&mut *self.tx).await?;
            for table in ["tbl_user_file", "tbl_xattr"] {
                let sql = format!(
                    "DELETE FROM {table} WHERE ino IN ({})",
                    placeholders(at.len())
                );
                let q = bind_each(
                    sqlx::query(AssertSqlSafe(sql)),
                    at.iter().map(|(ino, _)| *ino),
                );
                q.execute(&mut *self.tx).await?;
            }
        }
        let files = gone.iter().filter(|g| g.kind == NodeKind::File);
        let bytes: i64 = files.map(|g| g.size).sum();
        sqlx::query(
            "UPDATE tbl_user SET used_files = used_files - ?, used_bytes = used_bytes - ? WHERE id = ?",
        )
        .bind(gone.len() as i64)
        .bind(bytes)
        .bind(self.user())
        .execute(&mut *self.tx)
        .await?;
        self.release_contents(run, gone).await
    }

    /// Each content the run's nodes held loses a reference per node, and is
    /// stamped with the last remove's time, as `release_content_of` does.
    async fn release_contents(&mut self, run: &[Removal<'_>], gone: &[Gone]) -> MetaResult<()> {
        let mut released: HashMap<i64, (i64, i64)> = HashMap::new();
        for (r, g) in run.iter().zip(gone) {
            if let Some(file) = g.file_id {
                let e = released.entry(file).or_default();
                *e = (e.0 + 1, r.at);
            }
        }
        let released: Vec<(i64, (i64, i64))> = released.into_iter().collect();
        for part in released.chunks(BATCH) {
            let case = case_by_id(part.len());
            let sql = format!(
                "UPDATE tbl_file SET updated_at = {case}, \
                 status = CASE WHEN refcount - {case} <= 0 THEN 1 ELSE 0 END, \
                 refcount = refcount - {case} WHERE id IN ({})",
                placeholders(part.len())
            );
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for (file, (_, at)) in part {
                q = q.bind(*file).bind(*at);
            }
            for _ in 0..2 {
                for (file, (uses, _)) in part {
                    q = q.bind(*file).bind(*uses);
                }
            }
            q = bind_each(q, part.iter().map(|(file, _)| *file));
            q.execute(&mut *self.tx).await?;
        }
        Ok(())
    }
}
