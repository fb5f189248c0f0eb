//! The metadata store over sqlx's `Any` driver. The SQL is shared by SQLite and
//! MySQL/MariaDB; the few dialect differences go through `Dialect`. One file per
//! concern, as the traits in `meta/mod.rs`: users and tokens, the tree (and its
//! renames), extended attributes, contents and chunks, upkeep.

mod batch;
mod bulk;
mod bulk_remove;
mod bulk_sql;
mod changes;
mod contents;
mod inos;
mod rename;
mod tree;
mod upkeep;
mod users;
mod xattrs;

use std::collections::HashSet;
use std::future::Future;
use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, AssertSqlSafe, Row, Transaction};

use super::{ChunkLocation, Dialect, MetaError, MetaResult, schema};

type Tx = Transaction<'static, sqlx::Any>;

/// How many rows one multi-row statement carries.
pub(super) const BATCH: usize = 200;
const RETRIES: u32 = 8;

pub struct SqlMeta {
    pool: AnyPool,
    dialect: Dialect,
    /// Users whose trees changed, as the changes commit (see `ChangeStore::committed`).
    committed: tokio::sync::broadcast::Sender<i64>,
    inos: tokio::sync::Mutex<inos::InoPool>,
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
        let (committed, _) = tokio::sync::broadcast::channel(1024);
        Ok(Self {
            pool,
            dialect,
            committed,
            inos: tokio::sync::Mutex::default(),
        })
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

    pub(super) async fn begin_write(&self) -> MetaResult<Tx> {
        Ok(match self.dialect {
            // Take the write lock up front: a deferred transaction that reads first
            // fails with SQLITE_BUSY instead of waiting when another writer commits.
            Dialect::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Dialect::Mysql => self.pool.begin().await?,
        })
    }

    pub(super) fn insert_ignore(&self) -> &'static str {
        match self.dialect {
            Dialect::Sqlite => "INSERT OR IGNORE",
            Dialect::Mysql => "INSERT IGNORE",
        }
    }

    /// Runs a write transaction again when the database reports a deadlock or a lock timeout.
    pub(super) async fn retry<T, F, Fut>(&self, op: F) -> MetaResult<T>
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

/// The id an INSERT just generated. SQLite through `Any` does not report it, so it
/// is asked for on the same connection.
pub(super) async fn inserted_id(tx: &mut Tx, result: sqlx::any::AnyQueryResult) -> MetaResult<i64> {
    if let Some(id) = result.last_insert_id() {
        return Ok(id);
    }
    let row = sqlx::query("SELECT last_insert_rowid()")
        .fetch_one(&mut **tx)
        .await?;
    Ok(row.try_get(0)?)
}

pub(super) fn parse_location(s: &str) -> ChunkLocation {
    match s {
        "store" => ChunkLocation::Store,
        "inline" => ChunkLocation::Inline,
        _ => ChunkLocation::Staging,
    }
}

pub(super) fn placeholders(n: usize) -> String {
    vec!["?"; n].join(", ")
}

/// A query on the `Any` driver, as `sqlx::query` makes it.
pub(super) type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>;

/// Binds `values` in order: the `?`s of an `IN (…)` list made by `placeholders`.
pub(super) fn bind_each<'q, T>(q: AnyQuery<'q>, values: impl IntoIterator<Item = T>) -> AnyQuery<'q>
where
    T: for<'t> sqlx::Encode<'t, sqlx::Any> + sqlx::Type<sqlx::Any>,
{
    values.into_iter().fold(q, |q, value| q.bind(value))
}

/// The clause that locks the rows a write transaction reads before it changes them.
/// InnoDB's plain reads see a snapshot, so two transactions could both act on the
/// same stale row (both add one name, both release one content); a locking read
/// sees the newest committed row and makes the other wait. SQLite needs none: it
/// runs one writer at a time (`BEGIN IMMEDIATE`).
pub(super) fn for_update(tx: &Tx) -> &'static str {
    if tx.backend_name() == "MySQL" {
        " FOR UPDATE"
    } else {
        ""
    }
}

impl SqlMeta {
    /// The first column of the row `sql` finds by one key: None when there is
    /// no such row or the column is NULL.
    pub(super) async fn nullable_by_key<T>(
        &self,
        sql: &'static str,
        key: &str,
    ) -> MetaResult<Option<T>>
    where
        T: for<'r> sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
    {
        let row = sqlx::query(sql)
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(r) => r.try_get(0)?,
            None => None,
        })
    }

    pub(super) async fn hashes_in(
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
            let q = bind_each(q, batch.iter().cloned());
            for row in q.fetch_all(&self.pool).await? {
                found.insert(row.try_get::<String, _>(0)?);
            }
        }
        Ok(found)
    }
}
