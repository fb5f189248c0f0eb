//! The read path: a working copy is read locally (bytes it lacks come from its
//! base version first); a file without one is read through the memory and disk
//! block caches, with readahead for a sequential reader (`fetch`).

use bytes::Bytes;
use panproto::wire::ErrorCode;

use super::files::Body;
use super::{FsError, FsResult, PanFs, lock};
use crate::cache::blocks::BLOCK;
use crate::cache::bufs::{READ_MAX, READS};

impl PanFs {
    pub fn read(&self, fh: u64, offset: u64, size: u32) -> FsResult<Bytes> {
        let handle = self.handle(fh)?;
        let ino = handle.ino;
        loop {
            let (base, gaps, end) = {
                let mut f = lock(&handle.file.state);
                f.see_direct_writes()?;
                let file_size = f.body.size();
                if offset >= file_size {
                    return Ok(Bytes::new());
                }
                let end = (offset + u64::from(size)).min(file_size);
                match &f.body {
                    Body::Remote { content, .. } => {
                        let content = content.clone();
                        drop(f);
                        return self.read_remote(&handle, content, offset, end, file_size);
                    }
                    Body::Local { shadow, .. } => {
                        let gaps = shadow.record.present.gaps(offset, end);
                        if gaps.is_empty() {
                            let mut buf = vec![0u8; (end - offset) as usize];
                            shadow
                                .read_at(&mut buf, offset)
                                .map_err(|e| FsError::local("reading the working copy", e))?;
                            return Ok(Bytes::from(buf));
                        }
                        (shadow.record.base.clone(), gaps, end)
                    }
                }
            };
            // Bring the missing bytes in from the version the copy started from,
            // without the lock, then store them where nothing was written meanwhile.
            let mut fetched = Vec::with_capacity(gaps.len());
            for (a, b) in gaps {
                let bytes = match &base {
                    Some(base) => self.read_blocks(ino, base, a, b.min(end))?,
                    None => Bytes::from(vec![0u8; (b - a) as usize]),
                };
                fetched.push((a, bytes));
            }
            if let Body::Local { shadow, .. } = &mut lock(&handle.file.state).body {
                for (a, bytes) in fetched {
                    shadow
                        .fill(a, &bytes)
                        .map_err(|e| FsError::local("filling the working copy", e))?;
                }
                let end = end.min(shadow.size());
                let mut buf = vec![0u8; end.saturating_sub(offset) as usize];
                shadow
                    .read_at(&mut buf, offset)
                    .map_err(|e| FsError::local("reading the working copy", e))?;
                return Ok(Bytes::from(buf));
            }
            // The copy was dropped meanwhile: read the file as it is now.
        }
    }

    fn read_remote(
        &self,
        handle: &super::FileHandle,
        content: Option<String>,
        offset: u64,
        end: u64,
        file_size: u64,
    ) -> FsResult<Bytes> {
        let Some(content) = content else {
            return Ok(Bytes::from(vec![0u8; (end - offset) as usize]));
        };
        let ahead =
            lock(&handle.readahead).advance(offset, end, file_size, self.opts.readahead_max);
        // Asked for first, so the window's requests overlap this read's.
        if let Some((from, to)) = ahead {
            self.read_ahead(handle.ino, &content, from, to);
        }
        self.read_blocks(handle.ino, &content, offset, end)
    }

    /// Bytes [start, end) of `content`, through the block caches; the blocks
    /// missing are fetched at once, a request each.
    fn read_blocks(&self, ino: i64, content: &str, start: u64, end: u64) -> FsResult<Bytes> {
        let (first, last) = (start / BLOCK, (end - 1) / BLOCK);
        let wanted: Vec<(u64, u64)> = (first..=last)
            .map(|index| {
                let block_start = index * BLOCK;
                (
                    start.max(block_start) - block_start,
                    end.min(block_start + BLOCK) - block_start,
                )
            })
            .collect();
        let pieces = (first..=last)
            .zip(&wanted)
            .map(|(index, &(from, to))| self.block_part(ino, content, index, from, to));
        let mut pieces = self.block_on_here(futures::future::try_join_all(pieces))?;
        if pieces.len() == 1 {
            // Within one block, as the kernel's reads of a sequential reader
            // are: the cached block's bytes themselves, not a copy (a fresh
            // buffer per read was most of what a cold sequential read cost
            // panfs: mapped, faulted in, unmapped).
            return Ok(pieces.swap_remove(0));
        }
        let len = (end - start) as usize;
        let mut out = if len <= READ_MAX {
            READS.take()
        } else {
            Vec::with_capacity(len)
        };
        for (piece, (from, to)) in pieces.iter().zip(wanted) {
            out.extend_from_slice(piece);
            if (piece.len() as u64) < to - from {
                break; // the end of the content
            }
        }
        Ok(READS.freeze(out))
    }

    /// Bytes [from, to) of a block (fewer past the end of the content): from
    /// memory, else only those bytes from the disk cache, else the block
    /// fetched.
    async fn block_part(
        &self,
        ino: i64,
        content: &str,
        index: u64,
        from: u64,
        to: u64,
    ) -> FsResult<Bytes> {
        let key = (content.to_string(), index);
        let block = match self.fetcher.blocks.get(&key) {
            Some(block) => block,
            None => match self.fetcher.disk.read(&key, from, to) {
                Some(part) => return Ok(part),
                None => self.block(ino, content, index).await?,
            },
        };
        let len = block.len() as u64;
        Ok(block.slice(from.min(len) as usize..to.min(len) as usize))
    }

    async fn block(&self, ino: i64, content: &str, index: u64) -> FsResult<Bytes> {
        let key = (content.to_string(), index);
        let fetcher = &self.fetcher;
        let fetched = fetcher
            .blocks
            .get_or_fetch(key.clone(), || fetcher.fetch_block(ino, key))
            .await;
        match fetched {
            Ok(b) => Ok(b),
            Err(e) if e.is(ErrorCode::RangeNotSatisfiable) => Ok(Bytes::new()),
            Err(e) => Err(e.into()),
        }
    }
}
