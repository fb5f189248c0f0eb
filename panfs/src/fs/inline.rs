//! Small files ride in the syncer's batches: the content of a closed file of
//! up to `INLINE_MAX` bytes, whole on local disk, goes inline (`set_content`)
//! after the journaled changes that made its node, so a `tar xf` of many
//! small files costs a batch per few hundred files rather than a request (and
//! a server fsync) each. Anything else, and any refusal, is left to the
//! write-back worker, which handles conflicts and retries as for any upload.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use base64::Engine;
use panproto::batch::{BATCH_OPS_MAX, BatchOp, OpResult};
use panproto::wire::Node;

use super::files::{Body, Life, OpenFile, Upload};
use super::write::{Pending, upload_ended};
use super::{PanFs, lock};
use crate::remote::RemoteError;
use crate::upload::{Committed, UploadError};

/// The largest file sent inline.
const INLINE_MAX: u64 = 256 << 10;
/// Inline bytes one batch carries at most (base64 grows them by a third;
/// the server takes 16 MiB).
const INLINE_BATCH_MAX: u64 = 8 << 20;

/// A file whose content a batch carries.
pub(super) struct Inline {
    ino: i64,
    file: Arc<OpenFile>,
    pending: Pending,
}

/// Whether a file's content can go inline now: closed for writing, written,
/// small, whole on local disk, and not being sent already.
pub(super) fn eligible(file: &OpenFile) -> bool {
    if file.writers.load(Ordering::SeqCst) > 0 || file.no_inline.load(Ordering::SeqCst) {
        return false;
    }
    let f = lock(&file.state);
    match &f.body {
        Body::Local { shadow, .. } => {
            f.life == Life::Linked
                && f.upload == Upload::Idle
                && shadow.is_dirty()
                && shadow.size() <= INLINE_MAX
                && shadow.record.zeros.is_empty()
                && shadow.record.present.gaps(0, shadow.size()).is_empty()
        }
        Body::Remote { .. } => false,
    }
}

impl PanFs {
    /// Contents to send with a batch that ends with journal record `upto`
    /// and has `room` operations left: their `set_content` operations, and
    /// what to finish once the server answers.
    pub(super) fn inline_contents(&self, upto: u64, room: usize) -> (Vec<BatchOp>, Vec<Inline>) {
        let candidates: Vec<(i64, Arc<OpenFile>)> = {
            let t = lock(&self.tables);
            t.files
                .iter()
                // The server has the node once this batch is in.
                .filter(|(ino, _)| t.replica.pin_of(**ino) <= upto)
                .map(|(ino, file)| (*ino, file.clone()))
                .collect()
        };
        let (mut ops, mut sends, mut bytes) = (Vec::new(), Vec::new(), 0);
        for (ino, file) in candidates {
            if ops.len() >= room.min(BATCH_OPS_MAX) || bytes >= INLINE_BATCH_MAX {
                break;
            }
            if !eligible(&file) {
                continue;
            }
            let Ok(Some(pending)) = self.prepare_if_idle(&file) else {
                continue;
            };
            let record = &pending.snap.record;
            let mut data = vec![0u8; record.size as usize];
            let read = std::os::unix::fs::FileExt::read_exact_at(&pending.snap.file, &mut data, 0);
            if record.size > INLINE_MAX || read.is_err() {
                // Changed meanwhile: the write-back worker sends it.
                self.give_back(ino, &file);
                continue;
            }
            bytes += record.size;
            ops.push(BatchOp::SetContent {
                ino,
                data: Some(base64::engine::general_purpose::STANDARD.encode(&data)),
                chunks: None,
                mtime: Some(record.mtime),
                if_content: Some(record.base.clone()),
            });
            sends.push(Inline { ino, file, pending });
        }
        (ops, sends)
    }

    /// The server answered a batch that carried `sends` (their results, in
    /// order), or could not be reached (`None`).
    pub(super) fn inline_answered(&self, sends: Vec<Inline>, results: Option<Vec<OpResult>>) {
        let mut results = results.map(Vec::into_iter);
        for Inline { ino, file, pending } in sends {
            let result = results.as_mut().and_then(Iterator::next);
            match result {
                Some(OpResult {
                    node: Some(node), ..
                }) => self.inline_stored(ino, &file, pending, node),
                // Refused (a conflict, a removal) or not sent: the write-back
                // worker sends it as any upload, with the same rules.
                other => {
                    if let Some(OpResult { error: Some(e), .. }) = other {
                        tracing::info!(ino, code = %e.code, "inline content refused; the write-back worker sends it");
                        file.no_inline.store(true, Ordering::SeqCst);
                    }
                    let dropped = Err(UploadError::Remote(RemoteError::Unreachable(
                        "not stored inline".into(),
                    )));
                    let _ = self.finish_send(ino, &file, pending, dropped);
                }
            }
        }
    }

    fn inline_stored(&self, ino: i64, file: &Arc<OpenFile>, pending: Pending, node: Node) {
        let size = pending.snap.record.size;
        let done = Ok(Committed {
            node,
            chunks: Vec::new(),
            ahead: Vec::new(),
        });
        match self.finish_send(ino, file, pending, done) {
            Ok(()) => {
                self.stats.bytes_sent.fetch_add(size, Ordering::Relaxed);
                self.stats.commits.fetch_add(1, Ordering::Relaxed);
                self.retire_if_idle(ino, file);
            }
            Err(e) => tracing::warn!(ino, error = e.chain(), "recording an inline commit failed"),
        }
    }

    /// Ends a send that did not happen; the write-back worker takes the file.
    fn give_back(&self, ino: i64, file: &Arc<OpenFile>) {
        upload_ended(&mut lock(&file.state), file);
        let _ = self.writeback_tx.send(ino);
    }
}
