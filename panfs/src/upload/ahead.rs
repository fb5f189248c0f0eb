//! Chunks sent before the commit that claims them. Chunks sent in an upload
//! session that is never committed are this user's on the server, so the
//! upload that commits, which chunks the file as always, finds them there and
//! sends only the rest. Two uses:
//! - a file still being written (`send_ahead`, called by `fs::stream`);
//! - a big upload, whose chunks go out while the rest of the file is still
//!   cut and hashed (`plan_while_sending`): the client's hashing and the
//!   server's work overlap instead of taking turns.

use std::fs::File;
use std::sync::atomic::Ordering;

use futures::{StreamExt, TryStreamExt};
use panproto::Chunker;
use panproto::wire::{ChunkRef, UploadInit};

use super::plan::{Plan, RangeReader, plan};
use super::{PARALLEL_PUTS, Snapshot, TransferStats, UploadResult, read_local};
use crate::remote::Remote;

/// New bytes an upload must have for its chunks to go out while it is planned.
const PIPELINE_MIN: u64 = 64 << 20;
/// The chunks one session sends ahead, by their bytes.
const BATCH: u64 = 32 << 20;

/// A chunk cut from a file: offset, length, SHA-256.
type Cut = (u64, u64, String);

/// Sends the chunks of [from, to) of a file still being written, before its
/// upload: those cut by content (all but the last, which ends where the file
/// ends for now), in an upload session that is never committed. They are
/// then this user's on the server, so the upload at the file's close or
/// fsync, which chunks it as always, finds them there and sends the rest.
/// Chunks that other users hold are left to that upload's proof of
/// possession. Returns where the chunks sent end: `from` for the next call.
pub async fn send_ahead(
    remote: &dyn Remote,
    file: &File,
    ino: i64,
    (from, to): (u64, u64),
    stats: &TransferStats,
) -> UploadResult<u64> {
    let reader = RangeReader {
        file,
        pos: from,
        end: to,
    };
    let mut cut = Vec::new();
    for chunk in Chunker::new(reader) {
        let chunk = chunk?;
        let sha = panproto::sha256_hex(&chunk.data);
        cut.push((from + chunk.offset, chunk.data.len() as u64, sha));
    }
    cut.pop();
    let Some(&(last, len, _)) = cut.last() else {
        return Ok(from);
    };
    let sent = send_unclaimed(remote, file, ino, &cut, stats).await?;
    stats.bytes_sent_ahead.fetch_add(sent, Ordering::Relaxed);
    Ok(last + len)
}

/// Sends the chunks of `cut` that the server lacks, in an upload session
/// that is never committed. Returns the bytes sent.
async fn send_unclaimed(
    remote: &dyn Remote,
    file: &File,
    ino: i64,
    cut: &[Cut],
    stats: &TransferStats,
) -> UploadResult<u64> {
    let state = remote
        .begin_upload(&UploadInit {
            ino,
            chunks: cut
                .iter()
                .map(|(_, size, sha)| ChunkRef {
                    sha256: Some(sha.clone()),
                    size: *size,
                })
                .collect(),
            sha256: None,
            sha1: None,
        })
        .await?;
    let sent = futures::stream::iter(cut.iter().filter(|(_, _, sha)| state.missing.contains(sha)))
        .map(|(offset, len, sha)| {
            let session = state.id.clone();
            async move {
                let body = read_local(file, *offset, *len)?;
                remote.put_chunk(&session, sha, body).await?;
                stats.bytes_sent.fetch_add(*len, Ordering::Relaxed);
                Ok::<_, super::UploadError>(*len)
            }
        })
        .buffer_unordered(PARALLEL_PUTS)
        .try_collect::<Vec<u64>>()
        .await?;
    Ok(sent.iter().sum())
}

/// The upload's plan (see `plan`). For a big one, a thread cuts and hashes
/// the file while this sends each batch of new chunks ahead. Sending ahead
/// only saves time: a batch that fails to go is left to the commit's session.
pub(super) async fn plan_while_sending(
    remote: &dyn Remote,
    snap: &Snapshot,
    regions: &[(u64, u64)],
    ino: i64,
    stats: &TransferStats,
) -> UploadResult<Plan> {
    let new: u64 = regions.iter().map(|(a, b)| b - a).sum();
    if new < PIPELINE_MIN {
        return plan(snap, regions, &mut |_, _, _| {});
    }
    let owned = Snapshot {
        record: snap.record.clone(),
        file: snap.file.try_clone()?,
    };
    let regions = regions.to_vec();
    let (batches, mut ready) = tokio::sync::mpsc::channel::<Vec<Cut>>(2);
    let (done, planned) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("panfs-plan".into())
        .spawn(move || {
            let (mut batch, mut bytes) = (Vec::new(), 0);
            let planned = plan(&owned, &regions, &mut |offset, len, sha| {
                batch.push((offset, len, sha.to_string()));
                bytes += len;
                if bytes >= BATCH {
                    bytes = 0;
                    // Once the sender stopped, the batches go nowhere.
                    let _ = batches.blocking_send(std::mem::take(&mut batch));
                }
            });
            let _ = done.send(planned);
        })?;
    while let Some(batch) = ready.recv().await {
        if let Err(e) = send_unclaimed(remote, &snap.file, ino, &batch, stats).await {
            tracing::debug!(ino, error = %e, "sending chunks ahead of the commit failed");
            break;
        }
    }
    drop(ready);
    planned
        .await
        .map_err(|_| std::io::Error::other("the thread cutting the file ended early"))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::memory::MemoryRemote;
    use panproto::wire::{CreateRequest, NodeKind};
    use std::os::unix::fs::FileExt;

    /// A big upload's chunks reach the server while it is planned, and the
    /// plan is the one planning alone makes: the commit's session then finds
    /// all but the last batch there.
    #[test]
    fn a_big_upload_sends_its_chunks_while_it_is_planned() {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let remote = MemoryRemote::default();
        let file_req = CreateRequest {
            name: "big".into(),
            kind: NodeKind::File,
            mode: 0o644,
            uid: 0,
            gid: 0,
            target: None,
            rdev: 0,
        };
        let node = rt
            .block_on(remote.create(remote.root(), &file_req))
            .expect("create");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("big");
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .expect("open");
        let size = PIPELINE_MIN + (13 << 20);
        let mut state = 7u64;
        let mut block = vec![0u8; 1 << 20];
        for at in (0..size).step_by(block.len()) {
            for b in &mut block {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1);
                *b = (state >> 56) as u8;
            }
            file.write_all_at(&block, at).expect("write");
        }
        let record = super::super::plan::tests::record(&[], size, &[(0, size)], None);
        let snap = Snapshot { record, file };
        let regions = [(0, size)];
        let stats = TransferStats::default();
        let planned = rt
            .block_on(plan_while_sending(
                &remote, &snap, &regions, node.ino, &stats,
            ))
            .expect("plan");
        let alone = plan(&snap, &regions, &mut |_, _, _| {}).expect("plan alone");
        assert_eq!(planned.chunks, alone.chunks);
        let sent = stats.bytes_sent.load(Ordering::Relaxed);
        assert!(sent >= PIPELINE_MIN, "only {sent} bytes went ahead");
        let state = rt
            .block_on(remote.begin_upload(&UploadInit {
                ino: node.ino,
                chunks: planned.chunks.clone(),
                sha256: None,
                sha1: None,
            }))
            .expect("begin");
        let missing: u64 = planned
            .chunks
            .iter()
            .filter(|c| c.sha256.as_ref().is_some_and(|s| state.missing.contains(s)))
            .map(|c| c.size)
            .sum();
        assert_eq!(missing + sent, size, "a chunk was sent twice or never");
    }
}
