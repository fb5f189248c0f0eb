//! Write-back: the worker that sends files with unsent writes (closed in
//! write-back mode, failed uploads, journal entries a previous panfs left).
//! Each file backs off on its own, so one that keeps failing never holds the
//! others back.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use super::files::{Body, OpenFile};
use super::write::SendWhen;
use super::{PanFs, lock};
use crate::cache::shadow::Shadow;

const FIRST_RETRY: Duration = Duration::from_millis(200);
const LAST_RETRY: Duration = Duration::from_secs(30);
/// How long the worker sleeps with nothing due.
const IDLE: Duration = Duration::from_secs(3600);

struct Retry {
    at: Instant,
    delay: Duration,
}

/// When each file with unsent writes is tried next.
#[derive(Default)]
pub(super) struct RetryQueue {
    due: HashMap<i64, Retry>,
}

impl RetryQueue {
    /// A file to send now; one already waiting keeps its place and backoff.
    pub fn add(&mut self, ino: i64, now: Instant) {
        self.due.entry(ino).or_insert(Retry {
            at: now,
            delay: FIRST_RETRY,
        });
    }

    /// The files due at `now`; each stays queued until `sent` or `failed`.
    pub fn take_due(&mut self, now: Instant) -> Vec<i64> {
        let mut due = Vec::new();
        for (ino, retry) in &mut self.due {
            if retry.at <= now {
                due.push(*ino);
                // Not due again while it is being tried.
                retry.at = now + IDLE;
            }
        }
        due
    }

    pub fn sent(&mut self, ino: i64) {
        self.due.remove(&ino);
    }

    /// The file is tried again after its own delay, which doubles up to a limit.
    pub fn failed(&mut self, ino: i64, now: Instant) {
        let retry = self.due.entry(ino).or_insert(Retry {
            at: now,
            delay: FIRST_RETRY,
        });
        retry.at = now + retry.delay;
        retry.delay = (retry.delay * 2).min(LAST_RETRY);
    }

    /// How long until the next file is due.
    pub fn wait(&self, now: Instant) -> Duration {
        self.due
            .values()
            .map(|r| r.at.saturating_duration_since(now))
            .min()
            .unwrap_or(IDLE)
    }
}

impl PanFs {
    /// Files with writes not yet committed, and their bytes.
    pub fn pending(&self) -> (usize, u64) {
        let files: Vec<_> = lock(&self.tables).files.values().cloned().collect();
        let mut count = 0;
        let mut bytes = 0;
        for file in files {
            if let Body::Local { shadow, .. } = &lock(&file.state).body
                && shadow.is_dirty()
            {
                count += 1;
                bytes += shadow.record.dirty.total();
            }
        }
        (count, bytes)
    }

    /// Uploads one file that has pending writes; true when it is clean
    /// afterwards, or left to its last writer's close.
    pub(super) fn write_back(&self, ino: i64, when: SendWhen) -> bool {
        let Some(file) = lock(&self.tables).files.get(&ino).cloned() else {
            return true;
        };
        match self.sync_file(ino, &file, when) {
            Ok(()) => {
                self.retire_if_idle(ino, &file);
                true
            }
            Err(e) => {
                tracing::warn!(ino, error = e.chain(), "write-back failed; will retry");
                false
            }
        }
    }

    /// Picks up journaled writes a previous panfs left, to be sent again. Each
    /// commits against the version it started from, so a newer version another
    /// client stored meanwhile is kept, and the local one becomes a conflict copy.
    pub fn recover_journal(&self) -> usize {
        let inos = self.copies.inodes();
        for &ino in &inos {
            match Shadow::open(&self.copies, ino) {
                Ok(shadow) => {
                    let file = OpenFile::new(Body::Local {
                        shadow: Box::new(shadow),
                        synced_ctime: 0,
                    });
                    // It may have been committed before the restart: the
                    // worker's upload finds out (and keeps a conflict copy
                    // only if the server's bytes differ).
                    file.no_inline
                        .store(true, std::sync::atomic::Ordering::SeqCst);
                    lock(&self.tables).files.insert(ino, file);
                    let _ = self.writeback_tx.send(ino);
                }
                Err(e) => tracing::warn!(ino, error = %e, "unreadable journal entry"),
            }
        }
        inos.len()
    }

    /// Starts the write-back worker.
    pub fn start_writeback(self: &Arc<Self>) {
        let Some(rx) = lock(&self.writeback_rx).take() else {
            return;
        };
        let fs = self.clone();
        std::thread::Builder::new()
            .name("panfs-writeback".into())
            .spawn(move || {
                loop {
                    let wait = lock(&fs.retries).wait(Instant::now());
                    let received = rx.recv_timeout(wait);
                    let now = Instant::now();
                    match received {
                        Ok(ino) => lock(&fs.retries).add(ino, now),
                        Err(RecvTimeoutError::Disconnected) => return,
                        Err(RecvTimeoutError::Timeout) => {}
                    }
                    while let Ok(ino) = rx.try_recv() {
                        lock(&fs.retries).add(ino, now);
                    }
                    let due = lock(&fs.retries).take_due(now);
                    for ino in due {
                        // A bug in one file's send must not stop every later one.
                        let sent = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            fs.write_back(ino, SendWhen::NoWriter)
                        }))
                        .unwrap_or_else(|_| {
                            tracing::error!(
                                ino,
                                "the write-back worker panicked on a file; it is tried again"
                            );
                            false
                        });
                        let mut retries = lock(&fs.retries);
                        if sent {
                            retries.sent(ino);
                        } else {
                            retries.failed(ino, Instant::now());
                        }
                    }
                }
            })
            .ok();
    }

    /// Sends every pending write (and saves the replica); returns how many
    /// files could not be sent.
    pub fn flush_all(&self) -> usize {
        let inos: Vec<i64> = lock(&self.tables).files.keys().copied().collect();
        if let Err(e) = self.settle() {
            // Files made here wait for their journaled creation: none can go.
            tracing::warn!(error = e.chain(), "journaled changes were not sent");
            self.save_replica();
            return inos.len() + 1;
        }
        let failed = inos
            .into_iter()
            .filter(|&ino| !self.write_back(ino, SendWhen::Now))
            .count();
        self.save_replica();
        failed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_file_backs_off_alone() {
        let t0 = Instant::now();
        let mut queue = RetryQueue::default();
        queue.add(1, t0);
        assert_eq!(queue.take_due(t0), [1]);
        for _ in 0..5 {
            queue.failed(1, t0);
        }
        // Its fifth retry waits 3.2 s; a new file is due at once.
        queue.add(2, t0);
        assert_eq!(queue.take_due(t0), [2]);
        queue.sent(2);
        assert_eq!(queue.wait(t0), Duration::from_millis(3200));
        assert!(queue.take_due(t0 + Duration::from_secs(3)).is_empty());
        assert_eq!(queue.take_due(t0 + Duration::from_millis(3200)), [1]);
        // Asking again for a file that is backing off keeps its backoff.
        queue.failed(1, t0);
        queue.add(1, t0);
        assert!(queue.take_due(t0).is_empty());
    }
}
