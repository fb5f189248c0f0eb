//! Metadata: users, tokens, the per-user tree, extended attributes, contents and
//! chunks. One trait per concern, one SQL implementation over sqlx's `Any`
//! driver serving SQLite and MySQL/MariaDB.

#[cfg(test)]
mod batch_tests;
mod schema;
mod sql;
#[cfg(test)]
mod tests;

use std::collections::HashSet;

use async_trait::async_trait;
use panproto::wire::{
    Change, ChunkRef, CreateRequest, DirEntry, Node, RenameRequest, SetAttrRequest, TokenInfo,
    XattrMode,
};
use tokio::sync::broadcast;

pub use sql::SqlMeta;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Mysql,
}

#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("not found")]
    NotFound,
    #[error("already exists")]
    Exists,
    #[error("directory not empty")]
    NotEmpty,
    #[error("not a directory")]
    NotDir,
    #[error("is a directory")]
    IsDir,
    #[error("not a regular file")]
    NotRegularFile,
    #[error("{0}")]
    Invalid(&'static str),
    #[error("{0}")]
    NotPermitted(&'static str),
    #[error("the file changed since it was read")]
    Conflict,
    #[error("quota exceeded")]
    Quota,
    #[error("no such extended attribute")]
    NoAttribute,
    #[error(
        "the node's extended attributes would exceed {} bytes",
        panproto::XATTR_NODE_MAX
    )]
    XattrFull,
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database: {0}")]
    Db(sqlx::Error),
}

/// Every database error becomes `Unavailable` when the database could not be
/// reached (connection lost or refused, pool exhausted or closed), whatever the
/// query: a plain read during an outage answers 503, not 500.
impl From<sqlx::Error> for MetaError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Tls(_) => MetaError::Unavailable(e.to_string()),
            e => MetaError::Db(e),
        }
    }
}

pub type MetaResult<T> = Result<T, MetaError>;

/// Who makes a change to a tree: the user, and the client that asked for it
/// (recorded in the change feed, so a client can skip its own changes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Actor {
    pub user: i64,
    pub origin: Option<u64>,
}

impl Actor {
    /// A change with no client to name (the web page, pan.go's routes, tests).
    pub fn user(user: i64) -> Self {
        Actor { user, origin: None }
    }
}

/// A page of a user's change feed.
#[derive(Debug, Clone)]
pub struct ChangePage {
    /// The user's sequence number when the page was read.
    pub current: i64,
    /// False when changes after the cursor were already pruned (or the cursor is
    /// ahead of the feed): the client must start over.
    pub complete: bool,
    pub changes: Vec<Change>,
}

#[derive(Debug, Clone)]
pub struct UserRow {
    pub id: i64,
    pub username: String,
    pub password_hash: String,
    pub root_ino: i64,
    pub signup_at: i64,
    pub used_bytes: i64,
    pub used_files: i64,
    pub quota_bytes: i64,
    pub quota_files: i64,
    pub failed_logins: i64,
    pub locked_until: i64,
}

/// Where a chunk's verified bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkLocation {
    Staging,
    Store,
    /// In its database row (a chunk of at most `INLINE_MAX` bytes).
    Inline,
}

impl ChunkLocation {
    fn as_str(self) -> &'static str {
        match self {
            ChunkLocation::Staging => "staging",
            ChunkLocation::Store => "store",
            ChunkLocation::Inline => "inline",
        }
    }
}

/// One entry of a stored content: a chunk (or a hole) at an offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extent {
    pub offset: i64,
    pub size: i64,
    pub sha256: Option<String>,
    /// The chunk's block checksums (`crate::sums`); None for a hole or a chunk
    /// staged before they were kept.
    pub block_sums: Option<Vec<u8>>,
    /// The chunk's bytes, when its row holds them (`ChunkLocation::Inline`).
    pub inline: Option<Vec<u8>>,
    /// Where its chunk was when the extent was read; None for a hole. A read
    /// of a chunk in the store goes there at once, not by way of staging.
    pub location: Option<ChunkLocation>,
}

/// The largest chunk kept in its database row rather than in a file. A small
/// file then costs no file in staging or the store, no transfer and no fsync
/// of its own: it is durable with the commit that records it, and a batch of
/// them is one commit.
pub const INLINE_MAX: usize = 16 << 10;

/// A chunk just staged, verified against its hash, to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewChunk {
    pub sha256: String,
    pub size: i64,
    /// Its block checksums (`crate::sums`).
    pub block_sums: Vec<u8>,
    /// Its bytes, for a chunk kept in its row (at most `INLINE_MAX`); None for
    /// one in staging.
    pub inline: Option<Vec<u8>>,
}

/// A content recorded by its whole-file hashes, for instant upload.
#[derive(Debug, Clone)]
pub struct KnownContent {
    pub manifest_id: String,
    pub chunks: Vec<ChunkRef>,
}

/// What a consistency audit of the metadata found (and repaired).
#[derive(Debug, Default)]
pub struct Audit {
    pub problems: Vec<String>,
    pub repaired: usize,
}

/// The contents and chunks that garbage collection may remove now.
#[derive(Debug, Default)]
pub struct GcReport {
    pub contents_removed: u64,
    pub chunks_removed: Vec<(String, ChunkLocation)>,
}

/// Accounts and their tokens.
#[async_trait]
pub trait UserStore: Send + Sync {
    /// `quota` is (bytes, files); 0 means unlimited.
    async fn create_user(
        &self,
        username: &str,
        password_hash: &str,
        quota: (i64, i64),
        now: i64,
    ) -> MetaResult<UserRow>;
    async fn user_by_name(&self, username: &str) -> MetaResult<Option<UserRow>>;
    async fn user_by_id(&self, id: i64) -> MetaResult<UserRow>;
    async fn record_login_failure(
        &self,
        user: i64,
        failures: i64,
        locked_until: i64,
    ) -> MetaResult<()>;
    async fn insert_token(
        &self,
        user: i64,
        token_hash: &str,
        now: i64,
        expires_at: i64,
    ) -> MetaResult<i64>;
    /// The (user, token id) a live token belongs to.
    async fn token_owner(&self, token_hash: &str, now: i64) -> MetaResult<Option<(i64, i64)>>;
    async fn list_tokens(&self, user: i64, now: i64) -> MetaResult<Vec<TokenInfo>>;
    async fn delete_token(&self, user: i64, token_id: i64) -> MetaResult<()>;
}

/// The tree. Every call is scoped to `user`; another user's inode is `NotFound`.
/// Every change is recorded in the user's change feed in its own transaction.
#[async_trait]
pub trait TreeStore: Send + Sync {
    async fn node(&self, user: i64, ino: i64) -> MetaResult<Node>;
    async fn lookup(&self, user: i64, parent: i64, name: &str) -> MetaResult<Node>;
    async fn list(
        &self,
        user: i64,
        dir: i64,
        after: Option<&str>,
        limit: i64,
    ) -> MetaResult<Vec<DirEntry>>;
    async fn create(
        &self,
        by: Actor,
        parent: i64,
        req: &CreateRequest,
        now: i64,
    ) -> MetaResult<Node>;
    async fn link(
        &self,
        by: Actor,
        ino: i64,
        parent: i64,
        name: &str,
        now: i64,
    ) -> MetaResult<Node>;
    /// Removes a name; `dir` selects rmdir semantics.
    async fn remove(
        &self,
        by: Actor,
        parent: i64,
        name: &str,
        dir: bool,
        now: i64,
    ) -> MetaResult<()>;
    async fn rename(&self, by: Actor, req: &RenameRequest, now: i64) -> MetaResult<()>;
    /// Mode, owner and times; size changes go through `set_content`.
    async fn set_attr(
        &self,
        by: Actor,
        ino: i64,
        req: &SetAttrRequest,
        now: i64,
    ) -> MetaResult<Node>;
}

/// Extended attributes of a node, scoped to `user` like the tree. Names are
/// checked by the caller (`panproto::validate_xattr_name`); sizes here.
#[async_trait]
pub trait XattrStore: Send + Sync {
    async fn xattr_names(&self, user: i64, ino: i64) -> MetaResult<Vec<String>>;
    /// `NoAttribute` when the node has no attribute of that name.
    async fn xattr(&self, user: i64, ino: i64, name: &str) -> MetaResult<Vec<u8>>;
    /// Sets one attribute and the node's ctime; returns the node.
    async fn set_xattr(
        &self,
        by: Actor,
        ino: i64,
        name: &str,
        value: &[u8],
        mode: XattrMode,
        now: i64,
    ) -> MetaResult<Node>;
    async fn remove_xattr(&self, by: Actor, ino: i64, name: &str, now: i64) -> MetaResult<Node>;
}

/// File contents and the chunks they are made of.
#[async_trait]
pub trait ContentStore: Send + Sync {
    async fn extents(&self, user: i64, ino: i64) -> MetaResult<(Node, Vec<Extent>)>;
    /// Extents of a content overlapping [start, end).
    async fn extents_in(&self, manifest_id: &str, start: i64, end: i64) -> MetaResult<Vec<Extent>>;
    /// Points a file at a content made of `chunks` (all present), atomically.
    /// `if_content` makes it conditional on the file's current content.
    #[allow(clippy::too_many_arguments)]
    async fn set_content(
        &self,
        by: Actor,
        ino: i64,
        chunks: &[ChunkRef],
        hashes: Option<(&str, &str)>,
        if_content: Option<Option<&str>>,
        mtime: i64,
        now: i64,
    ) -> MetaResult<Node>;
    async fn content_by_hash(
        &self,
        sha256: &str,
        sha1: Option<&str>,
    ) -> MetaResult<Option<KnownContent>>;
    /// The whole-file SHA-1 of a content, once computed.
    async fn content_sha1(&self, manifest_id: &str) -> MetaResult<Option<String>>;
    /// Contents whose whole-file hashes are not yet known (computed after commit).
    async fn unhashed_contents(&self, limit: i64) -> MetaResult<Vec<String>>;
    async fn set_content_hashes(
        &self,
        manifest_id: &str,
        sha256: &str,
        sha1: &str,
    ) -> MetaResult<()>;

    // Chunks.
    async fn present_chunks(&self, hashes: &[String]) -> MetaResult<HashSet<String>>;
    /// Those of `hashes` whose chunk needs no staged file: moved to the object
    /// store, or kept in its row.
    async fn stored_chunks(&self, hashes: &[String]) -> MetaResult<HashSet<String>>;
    async fn owned_chunks(&self, user: i64, hashes: &[String]) -> MetaResult<HashSet<String>>;
    async fn grant_chunks(&self, user: i64, hashes: &[String]) -> MetaResult<()>;
    /// Records verified chunks in staging, (SHA-256, size) each; one already
    /// known only starts its grace period again.
    async fn add_chunks(&self, chunks: &[NewChunk], now: i64) -> MetaResult<()>;
    async fn chunk_location(&self, sha256: &str) -> MetaResult<Option<ChunkLocation>>;
    /// The bytes of a chunk kept in its row (None for any other chunk).
    async fn inline_chunk(&self, sha256: &str) -> MetaResult<Option<Vec<u8>>>;
    /// A chunk's recorded block checksums (None when it has none).
    async fn block_sums(&self, sha256: &str) -> MetaResult<Option<Vec<u8>>>;
    async fn set_block_sums(&self, sha256: &str, sums: &[u8]) -> MetaResult<()>;
    async fn set_chunk_location(
        &self,
        sha256: &str,
        location: ChunkLocation,
        now: i64,
    ) -> MetaResult<()>;
    /// Chunks still in staging whose last change is older than `before`.
    async fn staged_chunks(&self, before: i64, limit: i64) -> MetaResult<Vec<String>>;
}

/// Garbage collection and the consistency audit.
#[async_trait]
pub trait Upkeep: Send + Sync {
    /// Drops contents no inode uses and chunks no content uses, once older than `cutoff`,
    /// sparing `pinned` chunks (those open upload sessions will use).
    async fn collect_garbage(&self, cutoff: i64, pinned: &HashSet<String>) -> MetaResult<GcReport>;
    async fn forget_chunk(&self, sha256: &str) -> MetaResult<()>;
    /// Known chunks in hash order, after `after`.
    async fn chunks_after(
        &self,
        after: &str,
        limit: i64,
    ) -> MetaResult<Vec<(String, ChunkLocation)>>;
    /// Checks reference counts, usage counters and dangling rows; `repair` fixes them.
    async fn audit(&self, repair: bool) -> MetaResult<Audit>;
}

/// The per-user change feed: every committed change to a tree, numbered.
#[async_trait]
pub trait ChangeStore: Send + Sync {
    /// Up to `limit` changes after `since`, oldest first.
    async fn changes(&self, user: i64, since: i64, limit: i64) -> MetaResult<ChangePage>;
    /// The user's current sequence number.
    async fn change_seq(&self, user: i64) -> MetaResult<i64>;
    /// Forgets changes committed before `before` and all but each user's newest
    /// `keep` changes; returns how many went.
    async fn prune_changes(&self, before: i64, keep: i64) -> MetaResult<u64>;
    /// The users whose trees this process changed, as each change commits. Other
    /// processes sharing the database are not seen here (see `feed`).
    fn committed(&self) -> broadcast::Receiver<i64>;
}

/// Inode numbers reserved for a client, for the nodes it makes before the
/// server hears of them.
#[async_trait]
pub trait InoStore: Send + Sync {
    /// Reserves `count` consecutive numbers for the user: the first of them.
    async fn reserve_inos(&self, user: i64, count: i64, now: i64) -> MetaResult<i64>;
}

/// One operation of a batch, as the metadata layer applies it.
#[derive(Debug, Clone)]
pub enum TreeOp {
    /// `ino`: a number reserved for the user; None lets the server number it.
    Create {
        parent: i64,
        req: CreateRequest,
        ino: Option<i64>,
    },
    Link {
        ino: i64,
        parent: i64,
        name: String,
    },
    /// `if_ino`: only while the name still leads to that node.
    Remove {
        parent: i64,
        name: String,
        dir: bool,
        if_ino: Option<i64>,
    },
    /// `if_ino`: only while the source name still leads to that node;
    /// `if_target`: only while the new name leads to that node (0: to none).
    Rename {
        req: RenameRequest,
        if_ino: Option<i64>,
        if_target: Option<i64>,
    },
    SetAttr {
        ino: i64,
        req: SetAttrRequest,
    },
    SetXattr {
        ino: i64,
        name: String,
        value: Vec<u8>,
        mode: XattrMode,
    },
    RemoveXattr {
        ino: i64,
        name: String,
    },
    /// The chunks must be present and the user's (the service sees to it).
    SetContent {
        ino: i64,
        chunks: Vec<ChunkRef>,
        if_content: Option<Option<String>>,
        mtime: i64,
    },
}

/// Ordered operations in one transaction.
#[async_trait]
pub trait BatchStore: Send + Sync {
    /// Applies `ops` in order and commits once. Each operation stands alone
    /// (one that is refused changes nothing and the others go on) and answers
    /// with the node it made or changed (None for a remove or a rename), or
    /// the error it would have given on its own. Each change is its own entry
    /// in the feed. Err only when the whole batch failed and nothing changed.
    /// `times`: when each operation happens (one per operation).
    async fn apply_batch(
        &self,
        by: Actor,
        ops: &[TreeOp],
        times: &[i64],
    ) -> MetaResult<Vec<MetaResult<Option<Node>>>>;
}

/// The whole metadata store, one trait per concern; callers import the ones they use.
pub trait MetaStore:
    UserStore + TreeStore + XattrStore + ContentStore + ChangeStore + InoStore + BatchStore + Upkeep
{
}

impl<
    T: UserStore
        + TreeStore
        + XattrStore
        + ContentStore
        + ChangeStore
        + InoStore
        + BatchStore
        + Upkeep,
> MetaStore for T
{
}
