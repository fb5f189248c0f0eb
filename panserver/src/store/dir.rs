//! An object store in a local directory: one file per object, written to a
//! temporary name, fsync'd, then renamed into place, or a staged chunk's file
//! linked into place.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::io::AsyncWriteExt;

use super::{ObjectStore, StoreResult};

pub struct DirStore {
    root: PathBuf,
}

impl DirStore {
    pub fn new(root: PathBuf) -> std::io::Result<Self> {
        std::fs::create_dir_all(root.join("tmp"))?;
        Ok(Self { root })
    }

    fn path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }
}

#[async_trait]
impl ObjectStore for DirStore {
    async fn put(&self, key: &str, data: Bytes) -> StoreResult<()> {
        let dest = self.path(key);
        if let Some(parent) = dest.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        let tmp = self.root.join("tmp").join(format!(
            "{}.{}",
            key.replace('/', "_"),
            rand::random::<u64>()
        ));
        let mut file = tokio::fs::File::create(&tmp).await?;
        let written = async {
            file.write_all(&data).await?;
            file.sync_all().await?;
            tokio::fs::rename(&tmp, &dest).await
        }
        .await;
        if written.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        Ok(written?)
    }

    /// A hard link to the staged file, when staging is on the same file
    /// system: no copy, no second fsync of the data, and no inode made and
    /// another freed per chunk (on ext4 without a journal, each create scans
    /// past every inode freed in the last minutes).
    async fn adopt(&self, key: &str, staged: &Path) -> StoreResult<bool> {
        let dest = self.path(key);
        let Some(parent) = dest.parent() else {
            return Ok(false);
        };
        tokio::fs::create_dir_all(parent).await?;
        match tokio::fs::hard_link(staged, &dest).await {
            // A try before a crash linked it: the name says what it holds.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            // Another file system, or no staged file: `put` says why.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EXDEV | libc::ENOENT | libc::EPERM)
                ) =>
            {
                return Ok(false);
            }
            linked => linked?,
        }
        // The new name is durable before the staging name goes.
        tokio::fs::File::open(parent).await?.sync_all().await?;
        Ok(true)
    }

    async fn get(&self, key: &str) -> StoreResult<Option<Bytes>> {
        match tokio::fs::read(self.path(key)).await {
            Ok(data) => Ok(Some(Bytes::from(data))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn get_range(&self, key: &str, start: u64, len: u64) -> StoreResult<Option<Bytes>> {
        Ok(crate::staging::read_range_of(self.path(key), start, len).await?)
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        match tokio::fs::remove_file(self.path(key)).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }
}
