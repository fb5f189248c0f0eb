//! Reading contents (streamed, by range) and truncating them.

use std::sync::Arc;

use bytes::Bytes;
use futures::Stream;
use panproto::CHUNK_MAX;
use panproto::wire::{ChunkRef, Node, NodeKind};

use crate::meta::{Actor, ChunkLocation, Extent};
use crate::service::extent_cache::{ExtentCache, WINDOW, overlapping};
use crate::service::{App, now_ns};
use crate::service::{ServiceError, ServiceResult};
use crate::store::chunk_key;
use crate::sums;

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
                Some(_) => app
                    .read_extent(&extent, from as u64, to as u64)
                    .await
                    .map_err(|e| std::io::Error::other(e.to_string())),
                None => Ok(Bytes::from(vec![0u8; to - from])),
            };
            Some((piece, (app, extents)))
        },
    )
}

impl App {
    /// The extents of `content` that overlap [start, end). A range within one
    /// window comes from the extents kept for that window (`ExtentCache`),
    /// asked for and kept on a miss; a wider range asks the database.
    pub async fn extents_in(
        &self,
        content: &str,
        start: i64,
        end: i64,
    ) -> ServiceResult<Vec<Extent>> {
        let Some(window) = ExtentCache::window_of(start, end) else {
            return Ok(self.meta.extents_in(content, start, end).await?);
        };
        let kept = match self.extents.get(content, window) {
            Some(kept) => kept,
            None => {
                let from = window * WINDOW;
                let kept: Arc<[Extent]> = self
                    .meta
                    .extents_in(content, from, from.saturating_add(WINDOW))
                    .await?
                    .into();
                self.extents.insert(content, window, kept.clone());
                kept
            }
        };
        Ok(overlapping(&kept, start, end))
    }

    /// Bytes [from, to) of an extent's chunk, checked. A chunk with block
    /// checksums is read and checked only in the blocks that hold them (from
    /// its row, which came with the extent, or from staging or the store); one
    /// without is read whole and checked against its SHA-256.
    pub async fn read_extent(&self, extent: &Extent, from: u64, to: u64) -> ServiceResult<Bytes> {
        let Some(sha256) = extent.sha256.as_deref() else {
            return Ok(Bytes::from(vec![0u8; (to - from) as usize]));
        };
        let size = extent.size as u64;
        let Some(block_sums) = extent.block_sums.as_deref().filter(|s| sums::fits(s, size)) else {
            let data = self.read_chunk(sha256).await?;
            return Ok(data.slice(from as usize..to as usize));
        };
        let (start, end) = sums::covering(size, from, to);
        let len = end - start;
        let data = match &extent.inline {
            // A row that holds other than the chunk's size is corrupt too.
            Some(row) if row.len() as u64 == size => {
                Bytes::copy_from_slice(&row[start as usize..end as usize])
            }
            Some(_) => Bytes::new(),
            None => {
                // A chunk still staged may have moved to the store since its
                // row was read: staging first, then the store.
                let staged = match extent.location {
                    Some(ChunkLocation::Store) => None,
                    _ => self.staging.read_range(sha256, start, len).await?,
                };
                match staged {
                    Some(data) => data,
                    None => self
                        .store
                        .get_range(&chunk_key(sha256), start, len)
                        .await?
                        .ok_or_else(|| {
                            tracing::error!(chunk = sha256, "chunk missing from staging and store");
                            ServiceError::Corrupt
                        })?,
                }
            }
        };
        if data.len() as u64 != len || !sums::check(block_sums, start, &data) {
            tracing::error!(
                chunk = sha256,
                start,
                len,
                "chunk corrupt: a block does not match its checksum"
            );
            return Err(ServiceError::Corrupt);
        }
        Ok(data.slice((from - start) as usize..(to - start) as usize))
    }

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
                Some(_) if keep < e.size as u64 => {
                    let prefix = self.read_extent(e, 0, keep).await?;
                    let new_sha = self
                        .stage_and_record(user, move |staging| {
                            let staged = staging.put(&prefix)?;
                            let sha = staged.sha256.clone();
                            Ok((vec![staged], sha))
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
