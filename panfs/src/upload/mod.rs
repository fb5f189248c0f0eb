//! Write-back of a working copy: re-chunk only the regions that changed, ask the
//! server which chunks it lacks, send those (several at once), prove possession
//! if asked, and commit against the version the copy started from. Unchanged
//! chunks of the previous version are reused by reference, so a small edit in a
//! large file sends about one chunk.
//!
//! An upload holds no lock: it reads a snapshot of the copy's record through its
//! own descriptor, and brings missing base bytes in through `Source`, which
//! locks briefly. Writes that land meanwhile stay dirty for the next upload.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use panproto::CHUNK_MAX;
use panproto::proof::ProofHasher;
use panproto::wire::{ChunkRef, CommitRequest, ErrorCode, Node, UploadInit};

use crate::cache::bufs::CHUNKS;
use crate::cache::shadow::ShadowRecord;
use crate::ranges::RangeSet;
use crate::remote::{Remote, RemoteError};

mod ahead;
mod cut;
pub use ahead::{end_sessions, send_ahead};
use cut::{cut_and_hash, still_cut};

/// Files up to this size go up in one request.
const SMALL_FILE: u64 = 1 << 20;
/// Chunk uploads in flight at once.
const PARALLEL_PUTS: usize = 4;
/// Sessions one upload opens at most when the server loses them.
const SESSION_TRIES: u32 = 3;

/// What this mount sent and fetched: shown by `panfs status`, used by the
/// benchmark.
#[derive(Debug, Default)]
pub struct TransferStats {
    pub bytes_sent: AtomicU64,
    /// Bytes of file contents fetched from the server (reads and readahead).
    pub bytes_fetched: AtomicU64,
    pub commits: AtomicU64,
    /// Local versions stored as conflict copies (another client changed or
    /// removed the file first).
    pub conflict_copies: AtomicU64,
    /// Bytes of files copied inside the mount as a server-side operation
    /// (`copy_file_range`), which sent none.
    pub bytes_copied_on_server: AtomicU64,
    /// Of `bytes_sent`, those sent while their file was still being written.
    pub bytes_sent_ahead: AtomicU64,
}

#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error(transparent)]
    Remote(#[from] RemoteError),
    /// This machine's disk failed us (reading the copy, storing base bytes).
    #[error("local disk")]
    Local(#[from] std::io::Error),
    /// The working copy was dropped (its file removed) while it was being sent.
    #[error("the working copy was dropped during the upload")]
    Dropped,
    #[error("inconsistent chunk plan at offset {0}")]
    Plan(u64),
}

pub type UploadResult<T> = Result<T, UploadError>;

/// The working copy as it was when the upload began: its record, and its bytes
/// through a descriptor of its own.
pub struct Snapshot {
    pub record: ShadowRecord,
    pub file: File,
    /// Chunks sent while the file was written, in file order: those that
    /// still hold its bytes are not cut and hashed again (`cut::still_cut`).
    pub sent_ahead: Vec<Cut>,
}

/// The live working copy, for the bytes of the base version an upload needs
/// locally (around a change, or asked for in a proof).
pub trait Source: Sync {
    /// The parts of [a, b) not on local disk yet.
    fn gaps(&self, a: u64, b: u64) -> UploadResult<Vec<(u64, u64)>>;
    /// Stores bytes of the base version, where nothing was written meanwhile.
    fn fill(&self, offset: u64, bytes: &[u8]) -> UploadResult<()>;
}

/// Where a content goes: the file, and the content it must still hold there.
pub struct Target<'a> {
    pub ino: i64,
    pub if_content: Option<Option<&'a str>>,
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
fn changed_regions(r: &ShadowRecord) -> Vec<(u64, u64)> {
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
    snap: &Snapshot,
    live: &dyn Source,
    a: u64,
    b: u64,
) -> UploadResult<()> {
    for (gs, ge) in live.gaps(a, b)? {
        let Some(base) = &snap.record.base else {
            // No base version: unwritten bytes are zeros.
            live.fill(gs, &vec![0u8; (ge - gs) as usize])?;
            continue;
        };
        let mut pos = gs;
        while pos < ge {
            let end = (pos + u64::from(CHUNK_MAX)).min(ge);
            let bytes = remote.read(snap.record.ino, base, pos, end).await?;
            live.fill(pos, &bytes)?;
            pos = end;
        }
    }
    Ok(())
}

/// Bytes of the working copy, in a recycled buffer (see `cache::bufs`).
fn read_local(file: &File, offset: u64, len: u64) -> UploadResult<Bytes> {
    let mut buf = CHUNKS.take();
    buf.resize(len as usize, 0);
    file.read_exact_at(&mut buf, offset)?;
    Ok(CHUNKS.freeze(buf))
}

/// A content committed by an upload, and the chunk list it was sent as.
pub struct Committed {
    pub node: Node,
    pub chunks: Vec<ChunkRef>,
    /// The sessions the upload sent chunks ahead in: no longer needed, to be
    /// ended (`end_sessions`).
    pub ahead: Vec<String>,
}

/// Uploads the snapshot and commits it as the target's new content.
pub async fn upload(
    remote: &dyn Remote,
    snap: &Snapshot,
    live: &dyn Source,
    target: Target<'_>,
    stats: &TransferStats,
) -> UploadResult<Committed> {
    let size = snap.record.size;
    // A small file goes up whole, unless it has holes, which cost nothing as chunks.
    if size <= SMALL_FILE && snap.record.zeros.is_empty() {
        make_present(remote, snap, live, 0, size).await?;
        let body = read_local(&snap.file, 0, size)?;
        let node = remote
            .put_content(target.ino, body, snap.record.mtime, target.if_content)
            .await?;
        stats.bytes_sent.fetch_add(size, Ordering::Relaxed);
        stats.commits.fetch_add(1, Ordering::Relaxed);
        // Small files are always sent whole, so their chunk list is not needed later.
        return Ok(Committed {
            node,
            chunks: Vec::new(),
            ahead: Vec::new(),
        });
    }
    let regions = changed_regions(&snap.record);
    for &(a, b) in &regions {
        make_present(remote, snap, live, a, b).await?;
    }
    let plan = ahead::plan_sending_ahead(remote, snap, &regions, target.ino, stats).await?;
    let mut tries = 1;
    let node = loop {
        match send_plan(remote, snap, live, &target, &plan, stats).await {
            // The server lost the session (a restart of the embedded profile, or
            // it expired): what it stored stays, so a new session sends the rest.
            Err(UploadError::Remote(e)) if e.is(ErrorCode::UploadGone) && tries < SESSION_TRIES => {
                tracing::warn!(
                    ino = target.ino,
                    tries,
                    "upload session gone; opening a new one"
                );
                tries += 1;
            }
            sent => break sent?,
        }
    };
    stats.commits.fetch_add(1, Ordering::Relaxed);
    Ok(Committed {
        node,
        chunks: plan.chunks,
        ahead: plan.ahead,
    })
}

/// One upload session for the plan: open it, send what the server lacks,
/// prove possession when asked, commit.
async fn send_plan(
    remote: &dyn Remote,
    snap: &Snapshot,
    live: &dyn Source,
    target: &Target<'_>,
    plan: &Plan,
    stats: &TransferStats,
) -> UploadResult<Node> {
    let state = remote
        .begin_upload(&UploadInit {
            ino: target.ino,
            chunks: plan.chunks.clone(),
            sha256: None,
            sha1: None,
        })
        .await?;
    // Missing chunks are sent from local disk; one of the base version the server
    // no longer has is read back from that version first.
    let mut missing = Vec::with_capacity(state.missing.len());
    for sha in &state.missing {
        let &(offset, len) = plan.placed.get(sha).ok_or(UploadError::Plan(0))?;
        make_present(remote, snap, live, offset, offset + len).await?;
        missing.push((sha.clone(), offset, len));
    }
    futures::stream::iter(missing)
        .map(|(sha, offset, len)| {
            let session = state.id.clone();
            async move {
                let body = read_local(&snap.file, offset, len)?;
                remote.put_chunk(&session, &sha, body).await?;
                stats.bytes_sent.fetch_add(len, Ordering::Relaxed);
                Ok::<_, UploadError>(())
            }
        })
        .buffer_unordered(PARALLEL_PUTS)
        .try_collect::<Vec<()>>()
        .await?;
    if let Some(challenge) = &state.challenge {
        let mut proof = ProofHasher::new(&challenge.nonce);
        for &(start, len) in &challenge.ranges {
            make_present(remote, snap, live, start, start + len).await?;
            proof.update(&read_local(&snap.file, start, len)?);
        }
        remote.prove(&state.id, &proof.finish()).await?;
    }
    let commit = CommitRequest {
        if_content: target.if_content.map(|c| c.map(str::to_string)),
        mtime: Some(snap.record.mtime),
    };
    Ok(remote.commit(&state.id, &commit).await?)
}

/// The chunk list of a new content, and where each data chunk lies in the file.
struct Plan {
    chunks: Vec<ChunkRef>,
    /// (offset, length) by SHA-256.
    placed: HashMap<String, (u64, u64)>,
    /// The sessions that chunks were sent ahead in while this was planned.
    ahead: Vec<String>,
}

/// A chunk cut from a changed region: (offset, length, SHA-256).
pub type Cut = (u64, u64, String);

/// The new chunk list: base chunks outside the changed regions, new ones
/// inside, each new one also given to `on_cut` as it is cut.
fn plan(
    snap: &Snapshot,
    regions: &[(u64, u64)],
    on_cut: &mut dyn FnMut(Cut),
) -> UploadResult<Plan> {
    let size = snap.record.size;
    let base = with_offsets(&snap.record.base_chunks);
    let mut chunks: Vec<ChunkRef> = Vec::new();
    let mut placed = HashMap::new();
    let mut pos = 0u64;
    let mut regions = regions.iter().peekable();
    while pos < size {
        if let Some(&&(a, b)) = regions.peek()
            && a <= pos
        {
            for (s, e, zeros) in segments(&snap.record.zeros, a, b) {
                if zeros {
                    chunks.extend(holes(e - s));
                    continue;
                }
                let sent = still_cut(&snap.file, &snap.sent_ahead, (s, e))?;
                let rest = sent.last().map_or(s, |(offset, len, _)| offset + len);
                for (offset, len, sha) in sent {
                    placed.insert(sha.clone(), (offset, len));
                    chunks.push(ChunkRef {
                        sha256: Some(sha),
                        size: len,
                    });
                }
                cut_and_hash(&snap.file, (rest, e), &mut |(offset, len, sha)| {
                    on_cut((offset, len, sha.clone()));
                    placed.insert(sha.clone(), (offset, len));
                    chunks.push(ChunkRef {
                        sha256: Some(sha),
                        size: len,
                    });
                })?;
            }
            pos = b;
            regions.next();
            continue;
        }
        let next_region = regions.peek().map_or(size, |r| r.0);
        match base.iter().find(|(o, _)| *o == pos) {
            Some((o, c)) if o + c.size <= next_region => {
                if let Some(sha) = &c.sha256 {
                    placed.entry(sha.clone()).or_insert((*o, c.size));
                }
                chunks.push(c.clone());
                pos += c.size;
            }
            _ => return Err(UploadError::Plan(pos)),
        }
    }
    Ok(Plan {
        chunks,
        placed,
        ahead: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(
        base_sizes: &[u64],
        size: u64,
        dirty: &[(u64, u64)],
        cut: Option<u64>,
    ) -> ShadowRecord {
        let mut r = ShadowRecord {
            ino: 1,
            base: Some("base".into()),
            base_chunks: base_sizes
                .iter()
                .map(|&size| ChunkRef {
                    sha256: Some(format!("{size}")),
                    size,
                })
                .collect(),
            size,
            present: RangeSet::default(),
            dirty: RangeSet::default(),
            cut,
            zeros: RangeSet::default(),
            mtime: 0,
            ctime: 0,
            place: None,
        };
        for &(a, b) in dirty {
            r.dirty.insert(a, b);
        }
        r
    }

    #[test]
    fn changes_are_widened_to_the_base_chunks_they_touch() {
        let base = [100, 100, 100];
        assert_eq!(
            changed_regions(&record(&base, 300, &[(150, 160)], None)),
            [(100, 200)]
        );
        // Two changes in touching chunks make one region.
        let two = record(&base, 300, &[(150, 160), (90, 110)], None);
        assert_eq!(changed_regions(&two), [(0, 200)]);
        // A file cut short re-chunks the chunk the cut falls in, up to the new end.
        assert_eq!(
            changed_regions(&record(&base, 250, &[], Some(250))),
            [(200, 250)]
        );
        // Bytes past the base's end are new.
        assert_eq!(
            changed_regions(&record(&base, 350, &[(300, 350)], None)),
            [(300, 350)]
        );
        // No base: everything is new; an empty file has nothing to send.
        assert_eq!(
            changed_regions(&record(&[], 10, &[(0, 10)], None)),
            [(0, 10)]
        );
        assert!(changed_regions(&record(&[], 0, &[], None)).is_empty());
    }

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
