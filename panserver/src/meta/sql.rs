//! `MetaStore` over sqlx's `Any` driver. The SQL is shared by SQLite and
//! MySQL/MariaDB; the few dialect differences go through `Dialect`.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use panproto::wire::{
    ChunkRef, CreateRequest, DirEntry, Node, NodeKind, RenameMode, RenameRequest, SetAttrRequest,
    TokenInfo,
};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, AssertSqlSafe, Row, Transaction};

use super::{
    Audit, ChunkLocation, Dialect, Extent, GcReport, KnownContent, MetaError, MetaResult,
    MetaStore, UserRow, schema,
};

type Tx = Transaction<'static, sqlx::Any>;

const NODE_SELECT: &str = "SELECT i.id, i.kind, i.mode, i.uid, i.gid, i.size, i.atime, i.mtime, \
     i.ctime, i.nlink, f.manifest_sha256, i.target FROM tbl_inode i \
     LEFT JOIN tbl_file f ON f.id = i.file_id";

const USER_SELECT: &str = "SELECT id, user_name, user_pwd, root_ino, signup_at, used_bytes, \
     used_files, quota_bytes, quota_files, failed_logins, locked_until FROM tbl_user";

/// How many rows one multi-row statement carries.
const BATCH: usize = 200;
const RETRIES: u32 = 8;

pub struct SqlMeta {
    pool: AnyPool,
    dialect: Dialect,
}

impl SqlMeta {
    /// Connects without checking the schema; see `migrate` and `check_schema`.
    pub async fn connect(url: &str, max_connections: u32) -> MetaResult<Self> {
        sqlx::any::install_default_drivers();
        let dialect = if url.starts_with("sqlite:") {
            Dialect::Sqlite
        } else if url.starts_with("mysql:") || url.starts_with("mariadb:") {
            Dialect::Mysql
        } else {
            return Err(MetaError::Invalid(
                "database URL must start with sqlite: or mysql:",
            ));
        };
        let mut options = AnyPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10));
        if dialect == Dialect::Sqlite {
            options = options.after_connect(|conn, _| {
                Box::pin(async move {
                    use sqlx::Executor;
                    conn.execute("PRAGMA journal_mode = WAL").await?;
                    conn.execute("PRAGMA synchronous = NORMAL").await?;
                    conn.execute("PRAGMA busy_timeout = 10000").await?;
                    Ok(())
                })
            });
        }
        let pool = options.connect(url).await?;
        Ok(Self { pool, dialect })
    }

    pub fn pool(&self) -> AnyPool {
        self.pool.clone()
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    async fn schema_version(&self) -> MetaResult<i64> {
        let exists = sqlx::query("SELECT version FROM tbl_schema_version")
            .fetch_optional(&self.pool)
            .await;
        match exists {
            Ok(Some(row)) => Ok(row.try_get::<i64, _>(0)?),
            Ok(None) => Ok(0),
            // No version table: an empty database.
            Err(sqlx::Error::Database(_)) => Ok(0),
            Err(e) => Err(e.into()),
        }
    }

    /// Applies every migration not applied yet; returns the version reached.
    pub async fn migrate(&self) -> MetaResult<i64> {
        sqlx::query("CREATE TABLE IF NOT EXISTS tbl_schema_version (version BIGINT NOT NULL)")
            .execute(&self.pool)
            .await?;
        let from = self.schema_version().await?;
        for (version, statements) in schema::steps(self.dialect, from) {
            // MySQL commits DDL implicitly, so each statement stands alone and the
            // version is written last: a failed step is retried from its start.
            for stmt in statements {
                sqlx::query(AssertSqlSafe(stmt)).execute(&self.pool).await?;
            }
            sqlx::query("DELETE FROM tbl_schema_version")
                .execute(&self.pool)
                .await?;
            sqlx::query("INSERT INTO tbl_schema_version (version) VALUES (?)")
                .bind(version)
                .execute(&self.pool)
                .await?;
        }
        self.schema_version().await
    }

    /// Ok when the database is at the schema this binary expects.
    pub async fn check_schema(&self) -> Result<(), String> {
        let have = self.schema_version().await.map_err(|e| e.to_string())?;
        let want = schema::latest_version();
        match have.cmp(&want) {
            std::cmp::Ordering::Equal => Ok(()),
            std::cmp::Ordering::Less => Err(format!(
                "the database is at schema version {have}, this panserver needs {want}: run `panserver migrate`"
            )),
            std::cmp::Ordering::Greater => Err(format!(
                "the database is at schema version {have}, newer than this panserver ({want})"
            )),
        }
    }

    async fn begin_write(&self) -> MetaResult<Tx> {
        Ok(match self.dialect {
            // Take the write lock up front: a deferred transaction that reads first
            // fails with SQLITE_BUSY instead of waiting when another writer commits.
            Dialect::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Dialect::Mysql => self.pool.begin().await?,
        })
    }

    fn insert_ignore(&self) -> &'static str {
        match self.dialect {
            Dialect::Sqlite => "INSERT OR IGNORE",
            Dialect::Mysql => "INSERT IGNORE",
        }
    }

    /// Runs a write transaction again when the database reports a deadlock or a lock timeout.
    async fn retry<T, F, Fut>(&self, op: F) -> MetaResult<T>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = MetaResult<T>>,
    {
        let mut attempt = 0;
        loop {
            match op().await {
                Err(MetaError::Db(e)) if attempt < RETRIES && is_transient(&e) => {
                    attempt += 1;
                    tracing::debug!(attempt, error = %e, "retrying transaction");
                    tokio::time::sleep(Duration::from_millis(5 << attempt)).await;
                }
                Err(MetaError::Db(e)) if is_unavailable(&e) => {
                    return Err(MetaError::Unavailable(e.to_string()));
                }
                other => return other,
            }
        }
    }
}

fn is_transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            // SQLite busy/locked; MySQL deadlock, lock wait timeout and a duplicate key
            // (another transaction added the same row after this one looked: run again,
            // it sees the row); SQL serialization failure.
            matches!(
                code.as_ref(),
                "5" | "6" | "261" | "517" | "1213" | "1205" | "1062" | "40001"
            ) || db.message().contains("database is locked")
        }
        _ => false,
    }
}

fn is_unavailable(e: &sqlx::Error) -> bool {
    matches!(
        e,
        sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Tls(_)
    )
}

/// Reads a node whose columns (as in `NODE_SELECT`) start at column `at`.
fn node_at(row: &AnyRow, at: usize) -> MetaResult<Node> {
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
    })
}

fn node_from_row(row: &AnyRow) -> MetaResult<Node> {
    node_at(row, 0)
}

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

/// The id an INSERT just generated. SQLite through `Any` does not report it, so it
/// is asked for on the same connection.
async fn inserted_id(tx: &mut Tx, result: sqlx::any::AnyQueryResult) -> MetaResult<i64> {
    if let Some(id) = result.last_insert_id() {
        return Ok(id);
    }
    let row = sqlx::query("SELECT last_insert_rowid()")
        .fetch_one(&mut **tx)
        .await?;
    Ok(row.try_get(0)?)
}

fn parse_location(s: &str) -> ChunkLocation {
    if s == "store" {
        ChunkLocation::Store
    } else {
        ChunkLocation::Staging
    }
}

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

fn placeholders(n: usize) -> String {
    vec!["?"; n].join(", ")
}

/// The clause that locks the rows a write transaction reads before it changes them.
/// InnoDB's plain reads see a snapshot, so two transactions could both act on the
/// same stale row (both add one name, both release one content); a locking read
/// sees the newest committed row and makes the other wait. SQLite needs none: it
/// runs one writer at a time (`BEGIN IMMEDIATE`).
fn for_update(tx: &Tx) -> &'static str {
    if tx.backend_name() == "MySQL" {
        " FOR UPDATE"
    } else {
        ""
    }
}

async fn live_node(tx: &mut Tx, user: i64, ino: i64) -> MetaResult<Node> {
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

async fn live_dir(tx: &mut Tx, user: i64, ino: i64) -> MetaResult<Node> {
    let node = live_node(tx, user, ino).await?;
    if node.kind != NodeKind::Dir {
        return Err(MetaError::NotDir);
    }
    Ok(node)
}

async fn entry_ino(tx: &mut Tx, parent: i64, name: &str) -> MetaResult<Option<i64>> {
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

async fn dir_is_empty(tx: &mut Tx, dir: i64) -> MetaResult<bool> {
    let row = sqlx::query("SELECT ino FROM tbl_user_file WHERE parent_ino = ? LIMIT 1")
        .bind(dir)
        .fetch_optional(&mut **tx)
        .await?;
    Ok(row.is_none())
}

/// Touches a directory whose entries changed, and adjusts its link count by `nlink_delta`
/// (a subdirectory's `..` counts as a link).
async fn dir_changed(tx: &mut Tx, dir: i64, nlink_delta: i64, now: i64) -> MetaResult<()> {
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
async fn drop_link(tx: &mut Tx, user: i64, node: &Node, now: i64) -> MetaResult<()> {
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
    release_content_of(tx, node.ino, now).await
}

async fn release_content_of(tx: &mut Tx, ino: i64, now: i64) -> MetaResult<()> {
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

/// True when `ino` is `ancestor` or lies below it.
async fn is_within(tx: &mut Tx, user: i64, ino: i64, ancestor: i64) -> MetaResult<bool> {
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

impl SqlMeta {
    async fn create_user_tx(
        &self,
        username: &str,
        hash: &str,
        quota: (i64, i64),
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
        let root = sqlx::query(
            "INSERT INTO tbl_inode (user_id, kind, mode, uid, gid, atime, mtime, ctime, nlink) \
             VALUES (?, 'dir', 493, 0, 0, ?, ?, ?, 2)",
        )
        .bind(user)
        .bind(now)
        .bind(now)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let root = inserted_id(&mut tx, root).await?;
        sqlx::query("UPDATE tbl_user SET root_ino = ? WHERE id = ?")
            .bind(root)
            .bind(user)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.user_by_id(user).await
    }

    async fn create_tx(
        &self,
        user: i64,
        parent: i64,
        req: &CreateRequest,
        now: i64,
    ) -> MetaResult<Node> {
        let mut tx = self.begin_write().await?;
        live_dir(&mut tx, user, parent).await?;
        if entry_ino(&mut tx, parent, &req.name).await?.is_some() {
            return Err(MetaError::Exists);
        }
        let quota = sqlx::query("SELECT used_files, quota_files FROM tbl_user WHERE id = ?")
            .bind(user)
            .fetch_one(&mut *tx)
            .await?;
        let (used, limit): (i64, i64) = (quota.try_get(0)?, quota.try_get(1)?);
        if limit > 0 && used >= limit {
            return Err(MetaError::Quota);
        }
        let (nlink, size) = match req.kind {
            NodeKind::Dir => (2, 0),
            NodeKind::File => (1, 0),
            NodeKind::Symlink => {
                let target = req
                    .target
                    .as_deref()
                    .ok_or(MetaError::Invalid("a symlink needs a target"))?;
                (1, target.len() as i64)
            }
        };
        let ino = sqlx::query(
            "INSERT INTO tbl_inode (user_id, kind, mode, uid, gid, size, atime, mtime, ctime, nlink, target) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
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
        .bind(req.target.clone())
        .execute(&mut *tx)
        .await?;
        let ino = inserted_id(&mut tx, ino).await?;
        sqlx::query(
            "INSERT INTO tbl_user_file (user_id, parent_ino, file_name, ino) VALUES (?, ?, ?, ?)",
        )
        .bind(user)
        .bind(parent)
        .bind(&req.name)
        .bind(ino)
        .execute(&mut *tx)
        .await?;
        let subdir = i64::from(req.kind == NodeKind::Dir);
        dir_changed(&mut tx, parent, subdir, now).await?;
        sqlx::query("UPDATE tbl_user SET used_files = used_files + 1 WHERE id = ?")
            .bind(user)
            .execute(&mut *tx)
            .await?;
        let node = live_node(&mut tx, user, ino).await?;
        tx.commit().await?;
        Ok(node)
    }

    async fn link_tx(
        &self,
        user: i64,
        ino: i64,
        parent: i64,
        name: &str,
        now: i64,
    ) -> MetaResult<Node> {
        let mut tx = self.begin_write().await?;
        let node = live_node(&mut tx, user, ino).await?;
        if node.kind == NodeKind::Dir {
            return Err(MetaError::NotPermitted(
                "hard links to directories are not allowed",
            ));
        }
        live_dir(&mut tx, user, parent).await?;
        if entry_ino(&mut tx, parent, name).await?.is_some() {
            return Err(MetaError::Exists);
        }
        sqlx::query(
            "INSERT INTO tbl_user_file (user_id, parent_ino, file_name, ino) VALUES (?, ?, ?, ?)",
        )
        .bind(user)
        .bind(parent)
        .bind(name)
        .bind(ino)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE tbl_inode SET nlink = nlink + 1, ctime = ? WHERE id = ?")
            .bind(now)
            .bind(ino)
            .execute(&mut *tx)
            .await?;
        dir_changed(&mut tx, parent, 0, now).await?;
        let node = live_node(&mut tx, user, ino).await?;
        tx.commit().await?;
        Ok(node)
    }

    async fn remove_tx(
        &self,
        user: i64,
        parent: i64,
        name: &str,
        dir: bool,
        now: i64,
    ) -> MetaResult<()> {
        let mut tx = self.begin_write().await?;
        live_dir(&mut tx, user, parent).await?;
        let ino = entry_ino(&mut tx, parent, name)
            .await?
            .ok_or(MetaError::NotFound)?;
        let node = live_node(&mut tx, user, ino).await?;
        match (dir, node.kind == NodeKind::Dir) {
            (true, false) => return Err(MetaError::NotDir),
            (false, true) => return Err(MetaError::IsDir),
            (true, true) if !dir_is_empty(&mut tx, ino).await? => return Err(MetaError::NotEmpty),
            _ => {}
        }
        sqlx::query("DELETE FROM tbl_user_file WHERE parent_ino = ? AND file_name = ?")
            .bind(parent)
            .bind(name)
            .execute(&mut *tx)
            .await?;
        drop_link(&mut tx, user, &node, now).await?;
        dir_changed(&mut tx, parent, -i64::from(dir), now).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn rename_tx(&self, user: i64, req: &RenameRequest, now: i64) -> MetaResult<()> {
        let mut tx = self.begin_write().await?;
        // Both directories are locked, the lower inode first, so that two renames
        // between the same pair wait for each other instead of deadlocking.
        live_dir(&mut tx, user, req.parent.min(req.new_parent)).await?;
        live_dir(&mut tx, user, req.parent.max(req.new_parent)).await?;
        let src_ino = entry_ino(&mut tx, req.parent, &req.name)
            .await?
            .ok_or(MetaError::NotFound)?;
        let src = live_node(&mut tx, user, src_ino).await?;
        if req.parent == req.new_parent && req.name == req.new_name {
            return Ok(());
        }
        let src_is_dir = src.kind == NodeKind::Dir;
        if src_is_dir && is_within(&mut tx, user, req.new_parent, src.ino).await? {
            return Err(MetaError::Invalid("cannot move a directory into itself"));
        }
        let dst = match entry_ino(&mut tx, req.new_parent, &req.new_name).await? {
            Some(ino) => Some(live_node(&mut tx, user, ino).await?),
            None => None,
        };
        let moves_dir_between = |is_dir: bool| i64::from(is_dir && req.parent != req.new_parent);
        match (req.mode, dst) {
            (RenameMode::Exchange, None) => return Err(MetaError::NotFound),
            (RenameMode::Exchange, Some(dst)) => {
                let dst_is_dir = dst.kind == NodeKind::Dir;
                if dst_is_dir && is_within(&mut tx, user, req.parent, dst.ino).await? {
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
                    .execute(&mut *tx)
                    .await?;
                }
                let shift = moves_dir_between(src_is_dir) - moves_dir_between(dst_is_dir);
                dir_changed(&mut tx, req.parent, -shift, now).await?;
                dir_changed(&mut tx, req.new_parent, shift, now).await?;
                for ino in [src.ino, dst.ino] {
                    sqlx::query("UPDATE tbl_inode SET ctime = ? WHERE id = ?")
                        .bind(now)
                        .bind(ino)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                return Ok(());
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
                    (true, true) if !dir_is_empty(&mut tx, dst.ino).await? => {
                        return Err(MetaError::NotEmpty);
                    }
                    _ => {}
                }
                sqlx::query("DELETE FROM tbl_user_file WHERE parent_ino = ? AND file_name = ?")
                    .bind(req.new_parent)
                    .bind(&req.new_name)
                    .execute(&mut *tx)
                    .await?;
                drop_link(&mut tx, user, &dst, now).await?;
                dir_changed(&mut tx, req.new_parent, -i64::from(dst_is_dir), now).await?;
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
        .execute(&mut *tx)
        .await?;
        let shift = moves_dir_between(src_is_dir);
        dir_changed(&mut tx, req.parent, -shift, now).await?;
        dir_changed(&mut tx, req.new_parent, shift, now).await?;
        sqlx::query("UPDATE tbl_inode SET ctime = ? WHERE id = ?")
            .bind(now)
            .bind(src.ino)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn set_attr_tx(
        &self,
        user: i64,
        ino: i64,
        req: &SetAttrRequest,
        now: i64,
    ) -> MetaResult<Node> {
        let mut tx = self.begin_write().await?;
        let node = live_node(&mut tx, user, ino).await?;
        sqlx::query("UPDATE tbl_inode SET mode = ?, uid = ?, gid = ?, atime = ?, mtime = ?, ctime = ? WHERE id = ?")
            .bind(i64::from(req.mode.unwrap_or(node.mode) & 0o7777))
            .bind(i64::from(req.uid.unwrap_or(node.uid)))
            .bind(i64::from(req.gid.unwrap_or(node.gid)))
            .bind(req.atime.unwrap_or(node.atime))
            .bind(req.mtime.unwrap_or(node.mtime))
            .bind(now)
            .bind(ino)
            .execute(&mut *tx)
            .await?;
        let node = live_node(&mut tx, user, ino).await?;
        tx.commit().await?;
        Ok(node)
    }

    #[allow(clippy::too_many_arguments)]
    async fn set_content_tx(
        &self,
        user: i64,
        ino: i64,
        chunks: &[ChunkRef],
        hashes: Option<(&str, &str)>,
        if_content: Option<Option<&str>>,
        mtime: i64,
        now: i64,
    ) -> MetaResult<Node> {
        let mut tx = self.begin_write().await?;
        let node = live_node(&mut tx, user, ino).await?;
        if node.kind != NodeKind::File {
            return Err(if node.kind == NodeKind::Dir {
                MetaError::IsDir
            } else {
                MetaError::Invalid("not a regular file")
            });
        }
        if let Some(expected) = if_content
            && expected != node.content.as_deref()
        {
            return Err(MetaError::Conflict);
        }
        let size: i64 = chunks.iter().map(|c| c.size as i64).sum();
        let quota = sqlx::query("SELECT used_bytes, quota_bytes FROM tbl_user WHERE id = ?")
            .bind(user)
            .fetch_one(&mut *tx)
            .await?;
        let (used, limit): (i64, i64) = (quota.try_get(0)?, quota.try_get(1)?);
        if limit > 0 && size > node.size && used - node.size + size > limit {
            return Err(MetaError::Quota);
        }
        release_content_of(&mut tx, ino, now).await?;
        let file_id = if chunks.is_empty() {
            None
        } else {
            Some(
                self.acquire_content(&mut tx, chunks, size, hashes, now)
                    .await?,
            )
        };
        sqlx::query(
            "UPDATE tbl_inode SET file_id = ?, size = ?, mtime = ?, ctime = ? WHERE id = ?",
        )
        .bind(file_id)
        .bind(size)
        .bind(mtime)
        .bind(now)
        .bind(ino)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE tbl_user SET used_bytes = used_bytes + ? WHERE id = ?")
            .bind(size - node.size)
            .bind(user)
            .execute(&mut *tx)
            .await?;
        let node = live_node(&mut tx, user, ino).await?;
        tx.commit().await?;
        Ok(node)
    }

    /// Finds or records the content made of `chunks` and takes one reference to it.
    async fn acquire_content(
        &self,
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
            sqlx::query("UPDATE tbl_file SET refcount = refcount + 1, status = 0, updated_at = ? WHERE id = ?")
                .bind(now)
                .bind(file_id)
                .execute(&mut **tx)
                .await?;
            return Ok(file_id);
        }
        let file_id = sqlx::query(
            "INSERT INTO tbl_file (manifest_sha256, file_sha256, file_sha1, file_size, refcount, updated_at) \
             VALUES (?, ?, ?, ?, 1, ?)",
        )
        .bind(&id)
        .bind(hashes.map(|h| h.0.to_string()))
        .bind(hashes.map(|h| h.1.to_string()))
        .bind(size)
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

    async fn hashes_in(
        &self,
        sql_prefix: &str,
        first: Option<i64>,
        hashes: &[String],
    ) -> MetaResult<HashSet<String>> {
        let mut found = HashSet::new();
        for batch in hashes.chunks(BATCH) {
            let sql = format!("{sql_prefix} ({})", placeholders(batch.len()));
            let mut q = sqlx::query(AssertSqlSafe(sql));
            if let Some(v) = first {
                q = q.bind(v);
            }
            for h in batch {
                q = q.bind(h.clone());
            }
            for row in q.fetch_all(&self.pool).await? {
                found.insert(row.try_get::<String, _>(0)?);
            }
        }
        Ok(found)
    }
}

#[async_trait]
impl MetaStore for SqlMeta {
    async fn create_user(
        &self,
        username: &str,
        password_hash: &str,
        quota: (i64, i64),
        now: i64,
    ) -> MetaResult<UserRow> {
        self.retry(|| self.create_user_tx(username, password_hash, quota, now))
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
        .await
        .map_err(|e| {
            if is_unavailable(&e) {
                MetaError::Unavailable(e.to_string())
            } else {
                e.into()
            }
        })?;
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
        user: i64,
        parent: i64,
        req: &CreateRequest,
        now: i64,
    ) -> MetaResult<Node> {
        self.retry(|| self.create_tx(user, parent, req, now)).await
    }

    async fn link(
        &self,
        user: i64,
        ino: i64,
        parent: i64,
        name: &str,
        now: i64,
    ) -> MetaResult<Node> {
        self.retry(|| self.link_tx(user, ino, parent, name, now))
            .await
    }

    async fn remove(
        &self,
        user: i64,
        parent: i64,
        name: &str,
        dir: bool,
        now: i64,
    ) -> MetaResult<()> {
        self.retry(|| self.remove_tx(user, parent, name, dir, now))
            .await
    }

    async fn rename(&self, user: i64, req: &RenameRequest, now: i64) -> MetaResult<()> {
        self.retry(|| self.rename_tx(user, req, now)).await
    }

    async fn set_attr(
        &self,
        user: i64,
        ino: i64,
        req: &SetAttrRequest,
        now: i64,
    ) -> MetaResult<Node> {
        self.retry(|| self.set_attr_tx(user, ino, req, now)).await
    }

    async fn extents(&self, user: i64, ino: i64) -> MetaResult<(Node, Vec<Extent>)> {
        let node = self.node(user, ino).await?;
        let Some(content) = node.content.clone() else {
            return Ok((node, Vec::new()));
        };
        let extents = self.extents_in(&content, 0, i64::MAX).await?;
        Ok((node, extents))
    }

    async fn extents_in(&self, manifest_id: &str, start: i64, end: i64) -> MetaResult<Vec<Extent>> {
        let rows = sqlx::query(
            "SELECT c.chunk_sha256, c.chunk_offset, c.size FROM tbl_file_chunk c \
             JOIN tbl_file f ON f.id = c.file_id \
             WHERE f.manifest_sha256 = ? AND c.chunk_offset < ? AND c.chunk_offset + c.size > ? \
             ORDER BY c.seq",
        )
        .bind(manifest_id)
        .bind(end)
        .bind(start)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Extent {
                    sha256: r.try_get(0)?,
                    offset: r.try_get(1)?,
                    size: r.try_get(2)?,
                })
            })
            .collect()
    }

    async fn set_content(
        &self,
        user: i64,
        ino: i64,
        chunks: &[ChunkRef],
        hashes: Option<(&str, &str)>,
        if_content: Option<Option<&str>>,
        mtime: i64,
        now: i64,
    ) -> MetaResult<Node> {
        self.retry(|| self.set_content_tx(user, ino, chunks, hashes, if_content, mtime, now))
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
        let row = sqlx::query("SELECT file_sha1 FROM tbl_file WHERE manifest_sha256 = ?")
            .bind(manifest_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(row) => row.try_get(0)?,
            None => None,
        })
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

    async fn add_chunk(&self, sha256: &str, size: i64, now: i64) -> MetaResult<()> {
        let sql = format!(
            "{} INTO tbl_chunk (sha256, size, refcount, location, updated_at) VALUES (?, ?, 0, 'staging', ?)",
            self.insert_ignore()
        );
        let inserted = sqlx::query(AssertSqlSafe(sql))
            .bind(sha256)
            .bind(size)
            .bind(now)
            .execute(&self.pool)
            .await?
            .rows_affected();
        if inserted == 0 {
            // Known already: a fresh upload restarts its grace period.
            sqlx::query("UPDATE tbl_chunk SET updated_at = ? WHERE sha256 = ?")
                .bind(now)
                .bind(sha256)
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    async fn chunk_location(&self, sha256: &str) -> MetaResult<Option<ChunkLocation>> {
        let row = sqlx::query("SELECT location FROM tbl_chunk WHERE sha256 = ?")
            .bind(sha256)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(r) => Some(match r.try_get::<String, _>(0)?.as_str() {
                "store" => ChunkLocation::Store,
                _ => ChunkLocation::Staging,
            }),
            None => None,
        })
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

    async fn collect_garbage(&self, cutoff: i64, pinned: &HashSet<String>) -> MetaResult<GcReport> {
        let mut report = GcReport::default();
        sqlx::query(
            "DELETE FROM tbl_inode WHERE status = 1 AND deleted_at < ? \
             AND id NOT IN (SELECT ino FROM tbl_user_file)",
        )
        .bind(cutoff)
        .execute(&self.pool)
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
            let location = if row.try_get::<String, _>(1)? == "store" {
                ChunkLocation::Store
            } else {
                ChunkLocation::Staging
            };
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
}
