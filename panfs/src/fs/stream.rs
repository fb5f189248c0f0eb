//! Uploads while writing: a file that grows as it is written has its chunks
//! sent while it grows, not all at its close or `fsync`, which then wait for
//! little more than the last chunks and the commit.
//!
//! A thread looks at the files open for writing every `EVERY`. One whose
//! working copy (every byte of it on local disk) grew by `STEP` past what was
//! sent has the new part chunked from where the last chunk sent ended, and the
//! chunks the server lacks sent (`upload::send_ahead`). The upload at the
//! close chunks the file as always and finds those chunks on the server, so
//! the result never depends on them: bytes changed after they were sent are
//! simply sent again. Deduplication, 秒传 and the transfer figures stay as
//! they are. The chunks go a `STEP` at a time; an upload that starts
//! meanwhile waits for the piece being sent, and the streamer leaves the rest
//! of the file to it, so no chunk goes twice.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::files::{Ahead, Body, Life, OpenFile, Upload};
use super::{FsError, FsResult, PanFs, lock};
use crate::upload;

/// How often the files being written are looked at.
const EVERY: Duration = Duration::from_millis(500);
/// How much a file must grow past what was sent before more is sent.
const STEP: u64 = 32 << 20;

impl PanFs {
    /// Starts the thread that sends files' chunks while they are written; it
    /// ends with the file system.
    pub fn start_streamer(self: &Arc<Self>) {
        let fs: Weak<Self> = Arc::downgrade(self);
        let spawned = std::thread::Builder::new()
            .name("panfs-streamer".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(EVERY);
                    let Some(fs) = fs.upgrade() else {
                        break;
                    };
                    fs.send_ahead_of_uploads();
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "could not start sending files while they are written");
        }
    }

    fn send_ahead_of_uploads(&self) {
        let writing: Vec<(i64, Arc<OpenFile>)> = lock(&self.tables)
            .files
            .iter()
            .filter(|(_, f)| f.writers.load(Ordering::SeqCst) > 0)
            .map(|(&ino, f)| (ino, f.clone()))
            .collect();
        for (ino, file) in writing {
            if let Err(e) = self.send_ahead(ino, &file) {
                // The upload at the close sends whatever this did not.
                tracing::debug!(
                    ino,
                    error = e.chain(),
                    "sending a file while it is written failed"
                );
            }
        }
    }

    /// Sends what the file grew by, a `STEP` at a time, until it is sent or
    /// an upload of the file waits (see `Ahead::Stopping`).
    fn send_ahead(&self, ino: i64, file: &OpenFile) -> FsResult<()> {
        let (copy, mut from, to) = {
            let mut f = lock(&file.state);
            f.see_direct_writes()?;
            let from = f.sent_ahead;
            let (Body::Local { shadow, .. }, Life::Linked, Upload::Idle, Ahead::Idle) =
                (&f.body, f.life, f.upload, f.ahead)
            else {
                return Ok(());
            };
            let to = shadow.size();
            if to < from + STEP || !shadow.is_complete() {
                return Ok(());
            }
            let copy = shadow
                .file()
                .try_clone()
                .map_err(|e| FsError::local("reading the working copy", e))?;
            f.ahead = Ahead::Sending;
            (copy, from, to)
        };
        loop {
            let piece = (from, to.min(from + STEP));
            let sent = self.block_on(upload::send_ahead(
                &*self.remote,
                &copy,
                ino,
                piece,
                &self.stats,
            ));
            let mut f = lock(&file.state);
            let more = match sent {
                Ok((cut, session)) => {
                    f.ahead_sessions.extend(session);
                    let upto = cut.last().map_or(from, |(offset, len, _)| offset + len);
                    // Unless a new writer started over meanwhile.
                    let kept = f.sent_ahead == from;
                    if kept {
                        f.sent_ahead = upto;
                        f.ahead_cuts.extend(cut);
                    }
                    let more = kept && upto > from && upto < to && f.ahead == Ahead::Sending;
                    from = upto;
                    Ok(more)
                }
                Err(e) => Err(e.into()),
            };
            if !matches!(more, Ok(true)) {
                f.ahead = Ahead::Idle;
                file.upload_done.notify_all();
                return more.map(|_| ());
            }
        }
    }

    /// Ends, in the background, the sessions chunks were sent ahead in, once
    /// the upload they were for committed (see `upload::ahead`).
    pub(super) fn end_sessions_sent_ahead(&self, sessions: Vec<String>) {
        if sessions.is_empty() {
            return;
        }
        let remote = self.remote.clone();
        self.rt
            .spawn(async move { upload::end_sessions(remote.as_ref(), &sessions).await });
    }
}
