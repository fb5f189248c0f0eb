//! Sending chunks ahead of the upload that commits them, in upload sessions
//! that are never committed: the chunks are then this user's on the server,
//! and that upload, which chunks the file as always, finds them there and
//! sends only the rest. The result never depends on them: a chunk sent ahead
//! and changed after is simply sent again.
//!
//! Each such session is ended once the file's upload committed: until then
//! it keeps its chunks from the server's garbage collection, and after, the
//! file does. One not ended (panfs stopped first) expires on the server.
//!
//! Two callers: the streamer, while a file is still being written
//! (`send_ahead`), and an upload itself, which sends the chunks it has cut
//! while it goes on cutting the rest (`plan_sending_ahead`): hashing on this
//! machine and storing on the server then overlap instead of following each
//! other.

use std::fs::File;
use std::sync::atomic::Ordering;

use futures::{StreamExt, TryStreamExt};
use panproto::wire::{ChunkRef, UploadInit};

use super::{
    Cut, PARALLEL_PUTS, Plan, Snapshot, TransferStats, UploadError, UploadResult, cut_and_hash,
    plan, read_local,
};
use crate::remote::Remote;

/// Changed bytes below this are planned first and sent after, as one.
const OVERLAP_MIN: u64 = 64 << 20;
/// Chunks sent ahead per session.
const GROUP: usize = 32;

/// Sends the chunks of [from, to) of a file still being written, before its
/// upload: those cut by content (all but the last, which ends where the file
/// ends for now). Chunks that other users hold are left to that upload's
/// proof of possession. Returns the chunks cut (the next call goes on from
/// the last one's end), and the session they went in, to end after the
/// file's upload.
pub async fn send_ahead(
    remote: &dyn Remote,
    file: &File,
    ino: i64,
    (from, to): (u64, u64),
    stats: &TransferStats,
) -> UploadResult<(Vec<Cut>, Option<String>)> {
    let mut cut = Vec::new();
    cut_and_hash(file, (from, to), &mut |c| cut.push(c))?;
    cut.pop();
    if cut.is_empty() {
        return Ok((cut, None));
    }
    let (sent, session) = send_cut(remote, file, ino, &cut, stats).await?;
    stats.bytes_sent_ahead.fetch_add(sent, Ordering::Relaxed);
    Ok((cut, Some(session)))
}

/// Ends sessions that chunks were sent ahead in, once what they were for is
/// committed. A failure only leaves a session to expire on the server.
pub async fn end_sessions(remote: &dyn Remote, sessions: &[String]) {
    futures::stream::iter(sessions)
        .for_each_concurrent(PARALLEL_PUTS, |id| async move {
            if let Err(e) = remote.end_upload(id).await {
                tracing::debug!(session = %id, error = %e, "ending a session sent ahead in failed; it expires");
            }
        })
        .await;
}

/// Plans the upload of `regions` of the snapshot (see `plan`). When they are
/// large, the chunking runs on a thread of its own and the chunks it cuts are
/// sent ahead, `GROUP` at a time, meanwhile.
pub(super) async fn plan_sending_ahead(
    remote: &dyn Remote,
    snap: &Snapshot,
    regions: &[(u64, u64)],
    ino: i64,
    stats: &TransferStats,
) -> UploadResult<Plan> {
    let changed: u64 = regions.iter().map(|(a, b)| b - a).sum();
    if changed < OVERLAP_MIN {
        return plan(snap, regions, &mut |_| {});
    }
    let own = Snapshot {
        record: snap.record.clone(),
        file: snap.file.try_clone()?,
        sent_ahead: snap.sent_ahead.clone(),
    };
    let owned_regions = regions.to_vec();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Cut>(2 * GROUP);
    let planner = tokio::task::spawn_blocking(move || {
        // A closed channel (the sender gave up) only stops the sending ahead.
        plan(&own, &owned_regions, &mut |cut| {
            let _ = tx.blocking_send(cut);
        })
    });
    let mut sessions = Vec::new();
    let sender = async {
        let mut group = Vec::with_capacity(GROUP);
        loop {
            let next = rx.recv().await;
            let ended = next.is_none();
            group.extend(next);
            if group.len() == GROUP || (ended && !group.is_empty()) {
                // Only ahead: what fails here the upload sends itself, and
                // the planner goes on without waiting for this.
                match send_cut(remote, &snap.file, ino, &group, stats).await {
                    Ok((_, session)) => sessions.push(session),
                    Err(e) => {
                        tracing::debug!(ino, error = %e, "sending ahead failed; the upload sends it");
                        rx.close();
                        break;
                    }
                }
                group.clear();
            }
            if ended {
                break;
            }
        }
    };
    let (planned, ()) = futures::join!(planner, sender);
    let mut plan = planned.map_err(|e| UploadError::Local(std::io::Error::other(e)))??;
    plan.ahead = sessions;
    Ok(plan)
}

/// Sends the chunks of `cut` the server lacks, in a session of their own;
/// returns the bytes sent and the session.
async fn send_cut(
    remote: &dyn Remote,
    file: &File,
    ino: i64,
    cut: &[Cut],
    stats: &TransferStats,
) -> UploadResult<(u64, String)> {
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
    futures::stream::iter(cut.iter().filter(|(_, _, sha)| state.missing.contains(sha)))
        .map(|(offset, len, sha)| {
            let session = state.id.clone();
            async move {
                let body = read_local(file, *offset, *len)?;
                remote.put_chunk(&session, sha, body).await?;
                stats.bytes_sent.fetch_add(*len, Ordering::Relaxed);
                Ok::<_, UploadError>(*len)
            }
        })
        .buffer_unordered(PARALLEL_PUTS)
        .try_collect::<Vec<u64>>()
        .await
        .map(|sent| (sent.iter().sum(), state.id))
}
