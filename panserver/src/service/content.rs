//! Reading contents (streamed, by range) and truncating them.

use std::sync::Arc;

use bytes::Bytes;
use futures::Stream;
use panproto::CHUNK_MAX;
use panproto::wire::{ChunkRef, Node, NodeKind};

use crate::meta::{Actor, Extent};
use crate::service::{App, now_ns};
use crate::service::{ServiceError, ServiceResult};

/// Splits `len` zero bytes into holes no larger than a chunk, so every extent stays bounded.
pub fn holes(mut len: u64) -> Vec<ChunkRef> {
    let mut out = Vec::new();
    while len > 0 {
        let size = len.min(u64::from(CHUNK_MAX));
        out.push(ChunkRef { sha256: None, size });
        len -= size;
    }
    out
}

/// Streams bytes [start, end) of a content, one extent at a time (bounded memory).
pub fn stream_range(
    app: Arc<App>,
    extents: Vec<Extent>,
    start: i64,
    end: i64,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    futures::stream::unfold(
        (app, extents.into_iter()),
        move |(app, mut extents)| async move {
            let extent = extents.next()?;
            let from = (start.max(extent.offset) - extent.offset) as usize;
            let to = (end.min(extent.offset + extent.size) - extent.offset) as usize;
            let piece = match &extent.sha256 {
                Some(sha) => app
                    .read_chunk(sha)
                    .await
                    .map(|data| data.slice(from..to))
                    .map_err(|e| std::io::Error::other(e.to_string())),
                None => Ok(Bytes::from(vec![0u8; to - from])),
            };
            Some((piece, (app, extents)))
        },
    )
}

impl App {
    /// Sets a file's size: cuts or extends with zeros, re-staging only the chunk cut in two.
    pub async fn truncate(
        &self,
        by: Actor,
        ino: i64,
        size: i64,
        mtime: Option<i64>,
    ) -> ServiceResult<Node> {
        let user = by.user;
        if size < 0 {
            return Err(ServiceError::BadRequest("size must not be negative".into()));
        }
        if size as u64 > self.limits.max_upload_bytes {
            return Err(ServiceError::TooLarge);
        }
        let (node, extents) = self.meta.extents(user, ino).await?;
        if node.kind != NodeKind::File {
            return Err(ServiceError::not_a_file(node.kind));
        }
        let mut chunks = Vec::new();
        for e in extents.iter().take_while(|e| e.offset < size) {
            let keep = (size - e.offset).min(e.size) as u64;
            match &e.sha256 {
                Some(sha) if keep < e.size as u64 => {
                    let data = self.read_chunk(sha).await?;
                    let prefix = data.slice(..keep as usize);
                    let new_sha = self
                        .stage_and_record(user, move |staging| {
                            let sha = staging.put(&prefix)?;
                            Ok((vec![(sha.clone(), keep as i64)], sha))
                        })
                        .await?;
                    chunks.push(ChunkRef {
                        sha256: Some(new_sha),
                        size: keep,
                    });
                }
                _ => chunks.push(ChunkRef {
                    sha256: e.sha256.clone(),
                    size: keep,
                }),
            }
        }
        if size > node.size {
            chunks.extend(holes((size - node.size) as u64));
        }
        let now = now_ns();
        Ok(self
            .meta
            .set_content(
                by,
                ino,
                &chunks,
                None,
                Some(node.content.as_deref()),
                mtime.unwrap_or(now),
                now,
            )
            .await?)
    }
}
