//! Write-back of a working copy: re-chunk only the regions that changed, ask the
//! server which chunks it lacks, send those (several at once), prove possession
//! if asked, and commit against the version the copy started from. Unchanged
//! chunks of the previous version are reused by reference, so a small edit in a
//! large file sends about one chunk.
//!
//! An upload holds no lock: it reads a snapshot of the copy's record through its
//! own descriptor, and brings missing base bytes in through `Source`, which
//! locks briefly. Writes that land meanwhile stay dirty for the next upload.

mod ahead;
mod plan;

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use panproto::CHUNK_MAX;
use panproto::proof::ProofHasher;
use panproto::wire::{ChunkRef, CommitRequest, ErrorCode, Node, UploadInit};

use crate::cache::shadow::ShadowRecord;
use crate::remote::{Remote, RemoteError};

pub use ahead::send_ahead;
use plan::{Plan, changed_regions};

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

fn read_local(file: &File, offset: u64, len: u64) -> UploadResult<Bytes> {
    let mut buf = vec![0u8; len as usize];
    file.read_exact_at(&mut buf, offset)?;
    Ok(Bytes::from(buf))
}

/// A content committed by an upload, and the chunk list it was sent as.
pub struct Committed {
    pub node: Node,
    pub chunks: Vec<ChunkRef>,
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
        });
    }
    let regions = changed_regions(&snap.record);
    for &(a, b) in &regions {
        make_present(remote, snap, live, a, b).await?;
    }
    let plan = ahead::plan_while_sending(remote, snap, &regions, target.ino, stats).await?;
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
