//! Write-back of a working copy: re-chunk only the regions that changed, ask the
//! server which chunks it lacks, send those (several at once), prove possession
//! if asked, and commit. Unchanged chunks of the previous version are reused by
//! reference, so a small edit in a large file sends about one chunk.

use std::io::Read;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use panproto::proof::ProofHasher;
use panproto::wire::{ChunkRef, CommitRequest, Node, UploadInit};
use panproto::{CHUNK_MAX, Chunker};

use crate::cache::shadow::Shadow;
use crate::ranges::RangeSet;
use crate::remote::{Remote, RemoteError, RemoteResult};

/// Files up to this size go up in one request.
const SMALL_FILE: u64 = 1 << 20;
/// Chunk uploads in flight at once.
const PARALLEL_PUTS: usize = 4;

/// Counters shown by `panfs status` and used by the benchmark.
#[derive(Debug, Default)]
pub struct UploadStats {
    pub bytes_sent: AtomicU64,
    pub commits: AtomicU64,
}

/// Reads [pos, end) of a file, for the chunker.
struct RangeReader<'a> {
    file: &'a std::fs::File,
    pos: u64,
    end: u64,
}

impl Read for RangeReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let want = buf.len().min((self.end - self.pos) as usize);
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

fn io_error(e: std::io::Error) -> RemoteError {
    RemoteError::Refused {
        status: 0,
        code: if e.raw_os_error() == Some(libc::ENOSPC) {
            "no_space"
        } else {
            "local_io"
        }
        .into(),
        message: e.to_string(),
    }
}

/// Base chunks with their offsets.
fn with_offsets(chunks: &[ChunkRef]) -> Vec<(u64, ChunkRef)> {
    let mut offset = 0;
    chunks
        .iter()
        .map(|c| {
            let at = offset;
            offset += c.size;
            (at, c.clone())
        })
        .collect()
}

/// The byte ranges that must be chunked anew: each change widened to the base
/// chunks it touches, plus anything past the base's end.
fn changed_regions(shadow: &Shadow) -> Vec<(u64, u64)> {
    let r = &shadow.record;
    let size = r.size;
    let base = with_offsets(&r.base_chunks);
    let base_end = base.last().map_or(0, |(o, c)| o + c.size);
    if base.is_empty() {
        return if size > 0 {
            vec![(0, size)]
        } else {
            Vec::new()
        };
    }
    let widen = |a: u64, b: u64| -> (u64, u64) {
        let start = base
            .iter()
            .find(|(o, c)| o + c.size > a)
            .map_or(base_end, |(o, _)| *o);
        let end = base
            .iter()
            .find(|(o, c)| o + c.size >= b)
            .map_or(b, |(o, c)| (o + c.size).max(b));
        (start.min(a), end)
    };
    let mut regions = crate::ranges::RangeSet::default();
    for &(a, b) in r.dirty.iter() {
        let (s, e) = widen(a, b);
        regions.insert(s, e);
    }
    if let Some(cut) = r.cut
        && cut < base_end
    {
        let (s, e) = widen(cut, cut + 1);
        regions.insert(s, e);
    }
    if size > base_end {
        regions.insert(base_end, size);
    }
    regions
        .iter()
        .map(|&(a, b)| (a, b.min(size)))
        .filter(|(a, b)| a < b)
        .collect()
}

/// [a, b) cut into pieces that are all zeros (true) or hold data (false), in order.
fn segments(zeros: &RangeSet, a: u64, b: u64) -> Vec<(u64, u64, bool)> {
    let mut out = Vec::new();
    let mut pos = a;
    for (ga, gb) in zeros.gaps(a, b) {
        if pos < ga {
            out.push((pos, ga, true));
        }
        out.push((ga, gb, false));
        pos = gb;
    }
    if pos < b {
        out.push((pos, b, true));
    }
    out
}

/// A run of zeros as hole entries, none longer than a chunk may be.
fn holes(len: u64) -> impl Iterator<Item = ChunkRef> {
    let max = u64::from(CHUNK_MAX);
    (0..len.div_ceil(max)).map(move |i| ChunkRef {
        sha256: None,
        size: (len - i * max).min(max),
    })
}

/// Brings [a, b) of the working copy local, reading missing bytes from the base version.
async fn make_present(
    remote: &dyn Remote,
    shadow: &mut Shadow,
    a: u64,
    b: u64,
) -> RemoteResult<()> {
    let base = shadow.record.base.clone();
    for (gs, ge) in shadow.record.present.gaps(a, b) {
        let Some(base) = &base else {
            // No base version: unwritten bytes are zeros.
            shadow
                .fill(gs, &vec![0u8; (ge - gs) as usize])
                .map_err(io_error)?;
            continue;
        };
        let mut pos = gs;
        while pos < ge {
            let end = (pos + u64::from(CHUNK_MAX)).min(ge);
            let bytes = remote.read(shadow.record.ino, base, pos, end).await?;
            shadow.fill(pos, &bytes).map_err(io_error)?;
            pos = end;
        }
    }
    Ok(())
}

fn read_local(shadow: &Shadow, offset: u64, len: u64) -> RemoteResult<Bytes> {
    let mut buf = vec![0u8; len as usize];
    shadow.read_at(&mut buf, offset).map_err(io_error)?;
    Ok(Bytes::from(buf))
}

/// Uploads the working copy and commits it as the file's new content.
pub async fn upload(
    remote: &dyn Remote,
    shadow: &mut Shadow,
    stats: &UploadStats,
) -> RemoteResult<Node> {
    let ino = shadow.record.ino;
    let size = shadow.size();
    let regions = changed_regions(shadow);
    for &(a, b) in &regions {
        make_present(remote, shadow, a, b).await?;
    }
    // A small file goes up whole, unless it has holes, which cost nothing as chunks.
    if size <= SMALL_FILE && shadow.record.zeros.is_empty() {
        make_present(remote, shadow, 0, size).await?;
        let body = read_local(shadow, 0, size)?;
        let node = remote.put_content(ino, body, shadow.record.mtime).await?;
        stats.bytes_sent.fetch_add(size, Ordering::Relaxed);
        // Small files are always sent whole, so their chunk list is not needed later.
        return Ok(finish(shadow, node, Vec::new(), stats));
    }
    // The new chunk list: base chunks outside the changed regions, new ones inside.
    let base = with_offsets(&shadow.record.base_chunks);
    let mut chunks: Vec<ChunkRef> = Vec::new();
    let mut local: Vec<(String, u64, u64)> = Vec::new();
    let mut pos = 0u64;
    let mut regions_iter = regions.iter().peekable();
    while pos < size {
        if let Some(&&(a, b)) = regions_iter.peek()
            && a <= pos
        {
            for (s, e, zeros) in segments(&shadow.record.zeros, a, b) {
                if zeros {
                    chunks.extend(holes(e - s));
                    continue;
                }
                let reader = RangeReader {
                    file: shadow.file(),
                    pos: s,
                    end: e,
                };
                for chunk in Chunker::new(reader) {
                    let chunk = chunk.map_err(io_error)?;
                    let sha = panproto::sha256_hex(&chunk.data);
                    let len = chunk.data.len() as u64;
                    local.push((sha.clone(), s + chunk.offset, len));
                    chunks.push(ChunkRef {
                        sha256: Some(sha),
                        size: len,
                    });
                }
            }
            pos = b;
            regions_iter.next();
            continue;
        }
        let next_region = regions_iter.peek().map_or(size, |r| r.0);
        match base.iter().find(|(o, _)| *o == pos) {
            Some((o, c)) if o + c.size <= next_region => {
                chunks.push(c.clone());
                pos += c.size;
            }
            _ => {
                return Err(RemoteError::Refused {
                    status: 0,
                    code: "local_io".into(),
                    message: format!("inconsistent chunk plan at offset {pos}"),
                });
            }
        }
    }
    let state = remote
        .begin_upload(&UploadInit {
            ino,
            chunks: chunks.clone(),
            sha256: None,
            sha1: None,
        })
        .await?;
    let missing: Vec<(String, u64, u64)> = state
        .missing
        .iter()
        .filter_map(|sha| local.iter().find(|(s, _, _)| s == sha).cloned())
        .collect();
    if missing.len() != state.missing.len() {
        return Err(RemoteError::Refused {
            status: 0,
            code: "conflict".into(),
            message: "the server lacks chunks of the previous version".into(),
        });
    }
    let shadow_ref = &*shadow;
    futures::stream::iter(missing)
        .map(|(sha, offset, len)| {
            let session = state.id.clone();
            async move {
                let body = read_local(shadow_ref, offset, len)?;
                remote.put_chunk(&session, &sha, body).await?;
                stats.bytes_sent.fetch_add(len, Ordering::Relaxed);
                Ok::<_, RemoteError>(())
            }
        })
        .buffer_unordered(PARALLEL_PUTS)
        .try_collect::<Vec<()>>()
        .await?;
    if let Some(challenge) = &state.challenge {
        let mut proof = ProofHasher::new(&challenge.nonce);
        for &(start, len) in &challenge.ranges {
            make_present(remote, shadow, start, start + len).await?;
            proof.update(&read_local(shadow, start, len)?);
        }
        remote.prove(&state.id, &proof.finish()).await?;
    }
    let node = remote
        .commit(
            &state.id,
            &CommitRequest {
                if_content: None,
                mtime: Some(shadow.record.mtime),
            },
        )
        .await?;
    Ok(finish(shadow, node, chunks, stats))
}

/// Records the commit: the working copy is now clean against the new content.
fn finish(shadow: &mut Shadow, node: Node, chunks: Vec<ChunkRef>, stats: &UploadStats) -> Node {
    shadow.committed(node.content.clone(), chunks);
    stats.commits.fetch_add(1, Ordering::Relaxed);
    node
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_alternate_data_and_zeros() {
        let mut zeros = RangeSet::default();
        zeros.insert(10, 20);
        zeros.insert(30, 40);
        assert_eq!(
            segments(&zeros, 0, 50),
            vec![
                (0, 10, false),
                (10, 20, true),
                (20, 30, false),
                (30, 40, true),
                (40, 50, false)
            ]
        );
        assert_eq!(segments(&zeros, 12, 18), vec![(12, 18, true)]);
        assert_eq!(segments(&RangeSet::default(), 5, 9), vec![(5, 9, false)]);
    }

    #[test]
    fn long_holes_are_split_at_the_chunk_limit() {
        let max = u64::from(CHUNK_MAX);
        let sizes: Vec<u64> = holes(2 * max + 7).map(|c| c.size).collect();
        assert_eq!(sizes, vec![max, max, 7]);
        assert!(holes(3 * max).all(|c| c.sha256.is_none()));
    }
}
