//! Upload sessions: the chunk list a client declared and the proof of possession
//! it still owes. In the metadata database in the embedded profile; Redis in the full stack.

mod redis_store;
mod sql;

use std::collections::HashSet;

use async_trait::async_trait;
use panproto::wire::{ChunkRef, ProofChallenge};
use serde::{Deserialize, Serialize};

pub use redis_store::RedisSessions;
pub use sql::SqlSessions;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UploadSession {
    pub id: String,
    pub user: i64,
    /// The file the content is for; 0 while `new_file` is still to be created.
    pub ino: i64,
    /// For an upload that creates its file only when it commits (pan.go's
    /// instant upload), so that an upload never finished leaves no empty file.
    #[serde(default)]
    pub new_file: Option<NewFile>,
    pub chunks: Vec<ChunkRef>,
    /// Chunks held by other users that this user must prove to have.
    pub unproven: Vec<String>,
    pub challenge: Option<ProofChallenge>,
    pub expires_at: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewFile {
    pub parent: i64,
    pub name: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("session store unavailable: {0}")]
    Unavailable(String),
    #[error("session store: {0}")]
    Corrupt(String),
}

pub type SessionResult<T> = Result<T, SessionError>;

#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Saves the session; it lives until `expires_at` unless saved again.
    async fn save(&self, session: &UploadSession) -> SessionResult<()>;
    /// The user's live session by id; another user's id is None.
    async fn load(&self, user: i64, id: &str, now: i64) -> SessionResult<Option<UploadSession>>;
    /// Keeps a live session alive until `expires_at` without writing it
    /// again (a chunk sent changes nothing in it): false when it is gone.
    async fn touch(&self, id: &str, expires_at: i64, now: i64) -> SessionResult<bool>;
    async fn remove(&self, id: &str) -> SessionResult<()>;
    /// Every chunk a live session lists: garbage collection must keep them.
    async fn pinned_chunks(&self, now: i64) -> SessionResult<HashSet<String>>;
}
