//! The object store that chunks end up in. A local directory in the embedded
//! profile; S3 (Ceph RGW, Aliyun OSS, AWS) in the full stack.

mod dir;
mod s3;

use std::path::Path;

use async_trait::async_trait;
use bytes::Bytes;

pub use dir::DirStore;
pub use s3::{S3Location, S3Store};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("object store I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("object store: {0}")]
    Backend(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

#[async_trait]
pub trait ObjectStore: Send + Sync {
    /// Stores `data` under `key`, durably, replacing any object there.
    async fn put(&self, key: &str, data: Bytes) -> StoreResult<()>;
    /// The object's bytes, or None when there is no such object.
    async fn get(&self, key: &str) -> StoreResult<Option<Bytes>>;
    /// `len` (at least 1) bytes of the object from `start`, or None when there
    /// is no such object. An object shorter than that is an error.
    async fn get_range(&self, key: &str, start: u64, len: u64) -> StoreResult<Option<Bytes>>;
    async fn delete(&self, key: &str) -> StoreResult<()>;
    /// Stores the durable file at `staged`, which nothing changes again, under
    /// `key` by taking the file itself rather than a copy, where the store
    /// can: whether it did. A store that cannot leaves it to `put`.
    async fn adopt(&self, _key: &str, _staged: &Path) -> StoreResult<bool> {
        Ok(false)
    }
}

/// Where a chunk lives in a store.
pub fn chunk_key(sha256: &str) -> String {
    format!("chunks/{}/{}", &sha256[..2], sha256)
}

/// Opens the store named by a URL: `dir:///path` (or a plain path), or
/// `s3://bucket?endpoint=…&region=…&path_style=true&prefix=…`.
pub async fn open(url: &str) -> anyhow::Result<std::sync::Arc<dyn ObjectStore>> {
    if url.starts_with("s3://") {
        return Ok(std::sync::Arc::new(S3Store::open(url).await?));
    }
    let path = url.strip_prefix("dir://").unwrap_or(url);
    if path.contains("://") {
        anyhow::bail!("unsupported store URL {url}: use dir:///path or s3://bucket?…");
    }
    Ok(std::sync::Arc::new(DirStore::new(path.into())?))
}
