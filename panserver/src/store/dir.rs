//! An object store in a local directory: one file per object, written to a
//! temporary name, fsync'd, then renamed into place.

use std::path::PathBuf;

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

    async fn get(&self, key: &str) -> StoreResult<Option<Bytes>> {
        match tokio::fs::read(self.path(key)).await {
            Ok(data) => Ok(Some(Bytes::from(data))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        match tokio::fs::remove_file(self.path(key)).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }
}
