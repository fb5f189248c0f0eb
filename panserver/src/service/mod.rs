//! The domain: accounts, the tree, contents and uploads, over the four seams
//! (metadata, upload sessions, transfer queue, object store). It speaks domain
//! types and `ServiceError`, and never imports from `api/`, which only parses
//! requests, authenticates, calls in here and maps errors to status codes.

mod batch;
pub mod content;
mod error;
mod extent_cache;
pub mod feed;
mod record;
mod session_chunks;
mod token_cache;
mod tree;
pub mod uploads;
mod users;
mod version_reads;

pub use error::{ServiceError, ServiceResult};
pub use feed::Feed;
pub use token_cache::TokenCache;
pub use users::{Caller, user_info};

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::RwLock;

use crate::bus::ChangeBus;
use crate::meta::{ChunkLocation, MetaStore};
use crate::queue::TransferQueue;
use crate::session::SessionStore;
use crate::staging::Staging;
use crate::store::{ObjectStore, chunk_key};

/// The limits a server runs with (from `config::ServeArgs`).
#[derive(Debug, Clone)]
pub struct Limits {
    pub signup: bool,
    pub token_ttl_secs: i64,
    pub session_ttl_secs: i64,
    /// Largest body of a one-request upload.
    pub max_upload_bytes: u64,
    /// Most chunks one upload session may list.
    pub max_session_chunks: usize,
    /// Grace period before unreferenced data is removed.
    pub gc_grace_secs: i64,
    pub default_quota_bytes: i64,
    pub default_quota_files: i64,
    /// Mark the web page's cookie `Secure` (set when serving HTTPS).
    pub secure_cookies: bool,
    /// How long, and how many per user, the change feed keeps changes.
    pub change_retention_secs: i64,
    pub change_retention_count: i64,
}

pub struct App {
    pub meta: Arc<dyn MetaStore>,
    pub sessions: Arc<dyn SessionStore>,
    pub queue: Arc<dyn TransferQueue>,
    pub store: Arc<dyn ObjectStore>,
    pub staging: Staging,
    pub limits: Limits,
    /// Writers of chunks hold it shared, garbage collection exclusively: a chunk being
    /// re-uploaded is never removed under the uploader.
    pub chunk_gate: Arc<RwLock<()>>,
    /// Requests waiting for a user's next change.
    pub feed: Feed,
    /// Tells the other servers of a deployment about changes made here.
    pub bus: Arc<dyn ChangeBus>,
    /// Tokens recently found valid.
    pub tokens: TokenCache,
    /// The chunk lists of upload sessions in use.
    pub session_chunks: session_chunks::SessionChunkCache,
    /// The extents of contents read lately.
    pub extents: extent_cache::ExtentCache,
    /// Versions of files read lately, by whom.
    pub version_reads: version_reads::VersionReads,
}

pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

pub const NS: i64 = 1_000_000_000;

impl App {
    /// A chunk's bytes, checked against its hash: from staging, else from the
    /// store, else from its row.
    pub async fn read_chunk(&self, sha256: &str) -> ServiceResult<Bytes> {
        let data = match self.staging.read(sha256).await? {
            Some(data) => data,
            None => match self.store.get(&chunk_key(sha256)).await? {
                Some(data) => data,
                None => Bytes::from(self.meta.inline_chunk(sha256).await?.ok_or_else(|| {
                    tracing::error!(chunk = sha256, "chunk missing from staging, store and row");
                    ServiceError::Corrupt
                })?),
            },
        };
        if panproto::sha256_hex(&data) != sha256 {
            tracing::error!(
                chunk = sha256,
                "chunk corrupt: its bytes do not match its hash"
            );
            return Err(ServiceError::Corrupt);
        }
        Ok(data)
    }

    /// Moves one staged chunk to the object store. Idempotent: a redelivered job is harmless.
    pub async fn transfer_chunk(&self, sha256: &str) -> ServiceResult<()> {
        // Garbage collection waits for the move: a chunk it collected and an
        // upload staged again meanwhile would otherwise lose its new file below.
        let _gate = self.chunk_gate.read().await;
        match self.meta.chunk_location(sha256).await? {
            // Collected: the collector removed its files, and a file staged
            // since belongs to a new upload, whose own job moves it.
            None => return Ok(()),
            // Already moved, or kept in its row: only a leftover staging file may remain.
            Some(ChunkLocation::Store | ChunkLocation::Inline) => {}
            Some(ChunkLocation::Staging) => {
                // The staged file was hashed as it was written, and every read
                // checks the hash again: a store that takes the file itself
                // needs no copy checked on the way.
                let key = chunk_key(sha256);
                if !self.store.adopt(&key, &self.staging.path(sha256)).await? {
                    let Some(data) = self.staging.read(sha256).await? else {
                        // A duplicate job (the same chunk uploaded twice) may have
                        // moved it since its row was read above.
                        if let Some(ChunkLocation::Store) = self.meta.chunk_location(sha256).await?
                        {
                            return Ok(());
                        }
                        tracing::error!(chunk = sha256, "staged chunk has no file");
                        return Err(ServiceError::Corrupt);
                    };
                    if panproto::sha256_hex(&data) != sha256 {
                        tracing::error!(chunk = sha256, "staged chunk corrupt");
                        return Err(ServiceError::Corrupt);
                    }
                    self.store.put(&key, data).await?;
                }
                self.meta
                    .set_chunk_location(sha256, ChunkLocation::Store, now_ns())
                    .await?;
            }
        }
        self.staging.remove(sha256).await?;
        Ok(())
    }
}
