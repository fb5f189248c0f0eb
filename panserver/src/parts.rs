//! pan.go's multipart upload: numbered parts of a fixed size, kept on the staging
//! disk under `parts/ID/` until the client completes the upload. The upload id is
//! random and checked before it names a path; an upload belongs to one user.

use std::path::{Path, PathBuf};

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use crate::service::uploads::BodyStream;
use crate::service::{ServiceError, ServiceResult};

/// pan.go's part size.
pub const PART_SIZE: u64 = 5 * 1024 * 1024;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartUpload {
    pub id: String,
    pub user: i64,
    /// The whole file's SHA-1, as the client declared it; checked at completion.
    pub sha1: String,
    pub size: u64,
    pub expires_at: i64,
}

impl PartUpload {
    pub fn part_count(&self) -> u64 {
        self.size.div_ceil(PART_SIZE)
    }

    fn part_len(&self, index: u64) -> u64 {
        PART_SIZE.min(self.size - index * PART_SIZE)
    }
}

pub struct PartStore {
    root: PathBuf,
}

fn io_err(e: std::io::Error) -> ServiceError {
    if e.raw_os_error() == Some(libc::ENOSPC) {
        ServiceError::NoSpace
    } else {
        ServiceError::Internal(format!("part store: {e}"))
    }
}

impl PartStore {
    pub fn new(staging_root: &Path) -> Self {
        Self {
            root: staging_root.join(PARTS_DIR),
        }
    }

    fn dir(&self, id: &str) -> ServiceResult<PathBuf> {
        if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ServiceError::NotFound);
        }
        Ok(self.root.join(id))
    }

    pub async fn create(&self, upload: &PartUpload) -> ServiceResult<()> {
        let dir = self.dir(&upload.id)?;
        tokio::fs::create_dir_all(&dir).await.map_err(io_err)?;
        let json = serde_json::to_vec(upload).map_err(|e| ServiceError::Internal(e.to_string()))?;
        tokio::fs::write(dir.join("upload.json"), json)
            .await
            .map_err(io_err)
    }

    /// The user's live upload; another user's id, or an expired one, is not found.
    pub async fn load(&self, user: i64, id: &str, now: i64) -> ServiceResult<PartUpload> {
        let json = match tokio::fs::read(self.dir(id)?.join("upload.json")).await {
            Ok(json) => json,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ServiceError::NotFound);
            }
            Err(e) => return Err(io_err(e)),
        };
        let upload: PartUpload =
            serde_json::from_slice(&json).map_err(|e| ServiceError::Internal(e.to_string()))?;
        if upload.user != user || upload.expires_at < now {
            return Err(ServiceError::NotFound);
        }
        Ok(upload)
    }

    /// Streams part `index` to disk; it must have exactly the part's length.
    pub async fn write_part(
        &self,
        upload: &PartUpload,
        index: u64,
        mut body: BodyStream,
    ) -> ServiceResult<()> {
        if index >= upload.part_count() {
            return Err(ServiceError::BadRequest(format!(
                "part index {index} is out of range (the upload has {} parts)",
                upload.part_count()
            )));
        }
        let expected = upload.part_len(index);
        let dir = self.dir(&upload.id)?;
        let tmp = dir.join(format!("{index}.{}.tmp", rand::random::<u64>()));
        let result = async {
            let mut file = tokio::fs::File::create(&tmp).await.map_err(io_err)?;
            let mut written = 0u64;
            while let Some(piece) = body.next().await {
                let piece = piece
                    .map_err(|e| ServiceError::BadRequest(format!("reading the body: {e}")))?;
                written += piece.len() as u64;
                if written > expected {
                    return Err(ServiceError::TooLarge);
                }
                file.write_all(&piece).await.map_err(io_err)?;
            }
            if written != expected {
                return Err(ServiceError::BadRequest(format!(
                    "part {index} must be {expected} bytes, got {written}"
                )));
            }
            file.sync_all().await.map_err(io_err)?;
            tokio::fs::rename(&tmp, dir.join(index.to_string()))
                .await
                .map_err(io_err)
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        result
    }

    /// Indexes of the parts not yet received.
    pub async fn missing(&self, upload: &PartUpload) -> ServiceResult<Vec<u64>> {
        let dir = self.dir(&upload.id)?;
        let mut missing = Vec::new();
        for index in 0..upload.part_count() {
            if tokio::fs::metadata(dir.join(index.to_string()))
                .await
                .is_err()
            {
                missing.push(index);
            }
        }
        Ok(missing)
    }

    /// The parts in order, as one stream.
    pub fn content(&self, upload: &PartUpload) -> ServiceResult<BodyStream> {
        let dir = self.dir(&upload.id)?;
        let paths: Vec<PathBuf> = (0..upload.part_count())
            .map(|i| dir.join(i.to_string()))
            .collect();
        Ok(futures::stream::iter(paths)
            .then(|path| async move { tokio::fs::File::open(path).await })
            .map(|file| match file {
                Ok(file) => tokio_util::io::ReaderStream::new(file).boxed(),
                Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
            })
            .flatten()
            .boxed())
    }

    pub async fn remove(&self, id: &str) -> ServiceResult<()> {
        match tokio::fs::remove_dir_all(self.dir(id)?).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_err(e)),
            _ => Ok(()),
        }
    }

    /// Removes uploads that expired unfinished; returns how many.
    pub async fn sweep(&self, now: i64) -> ServiceResult<usize> {
        let mut removed = 0;
        let Ok(mut dirs) = tokio::fs::read_dir(&self.root).await else {
            return Ok(0);
        };
        while let Ok(Some(entry)) = dirs.next_entry().await {
            let id = entry.file_name().to_string_lossy().into_owned();
            let expired = match tokio::fs::read(entry.path().join("upload.json")).await {
                Ok(json) => serde_json::from_slice::<PartUpload>(&json)
                    .map(|u| u.expires_at < now)
                    .unwrap_or(true),
                // A folder without its record is a create in progress, or its leftover.
                Err(_) => entry
                    .metadata()
                    .await
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > std::time::Duration::from_secs(3600)),
            };
            if expired && self.remove(&id).await.is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// The staging subdirectory that holds part uploads (not chunks).
pub const PARTS_DIR: &str = "parts";
