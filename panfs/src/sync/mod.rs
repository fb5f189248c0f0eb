//! Local-first syncing state: the journal of changes made on this mount, how
//! far the server has them, whether it answers, and the inode numbers it
//! reserved for this mount. The file-system logic records changes here and
//! waits here for durability (`fsync`, `panfs sync`, unmount); its syncer
//! loop (`fs::sync`) sends what is pending.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use panproto::batch::BatchOp;
use serde::{Deserialize, Serialize};

use crate::journal::{Journal, JournalError, JournalResult, Record};

mod coalesce;
mod inos;

pub use coalesce::{last_naming, touched, worth_sending};
pub use inos::InoPool;

/// A change as the journal keeps it: the operation and when it was made
/// (ns since the epoch), which the server takes as the times it sets.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Journaled {
    pub at: i64,
    pub op: BatchOp,
}

/// What `panfs status` shows of the syncer.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SyncStatus {
    /// The server answered the last batch (false after it could not be reached).
    pub online: bool,
    /// Journaled changes the server does not have yet.
    pub pending_ops: usize,
    /// When the server last committed a batch (seconds since the epoch).
    pub last_sync: Option<u64>,
    /// Batches committed, and changes in them.
    pub batches: u64,
    pub ops_sent: u64,
    /// Changes the server refused because the node or name changed elsewhere,
    /// resolved by the conflict rules.
    pub conflicts: u64,
    /// fdatasyncs of the journal (group-committed: far fewer than changes).
    pub journal_syncs: u64,
    /// Nodes made offline past the reserved inode numbers, whose provisional
    /// numbers the server has not taken yet.
    #[serde(default)]
    pub provisional_inos: usize,
    /// Why the last batch failed, while it does.
    pub problem: Option<String>,
}

struct Progress {
    /// Every record up to here is on the server.
    acked: u64,
    /// Small files were closed with content for the next batch to carry.
    contents: bool,
    /// Callers waiting for the server to have their changes (`wait_synced`).
    waiters: usize,
    /// Bytes written and changes journaled (at `CHANGE_BYTES` each) since the
    /// server was last reachable: bounded while it is not.
    offline_bytes: u64,
    status: SyncStatus,
}

/// What one journaled change counts for against the offline bound.
pub const CHANGE_BYTES: u64 = 512;

/// While changes keep arriving and nobody waits for them, a batch is held
/// back in steps of `LINGER_STEP`, up to `LINGER_MAX`, to gather more: a
/// process making files one after another would otherwise have each batch
/// carry the few made during the last round trip, and the server would pay
/// its per-batch costs (a request, two transactions, the feed) for each.
const LINGER_STEP: Duration = Duration::from_millis(2);
const LINGER_MAX: Duration = Duration::from_millis(50);

pub struct Syncer {
    journal: Journal<Journaled>,
    progress: Mutex<Progress>,
    /// Signalled when records are added (for the loop) and acknowledged (for waiters).
    changed: Condvar,
    /// Records the server may have committed already although this mount
    /// never saw it answer: those a previous panfs left (the acknowledgement
    /// had not reached the disk), and those of a batch whose answer was lost.
    /// A refusal of one of them may be its own first send's effect.
    maybe_sent_through: AtomicU64,
    /// This mount's nodes whose creation the server refused and that were
    /// made again under another name: where the server has them (parent,
    /// name). What was made inside them follows them there, and journaled
    /// renames and removals of them are made again from there. Lost at a
    /// restart (those changes are then refused, and the server's version stands).
    made_again: Mutex<HashMap<i64, (i64, String)>>,
    pub inos: InoPool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Syncer {
    /// Opens the journal in `state_dir`, with what a previous panfs left.
    pub fn open(state_dir: &Path) -> JournalResult<Self> {
        let journal: Journal<Journaled> = Journal::open(&state_dir.join("changes"))?;
        let left = journal.pending(usize::MAX);
        let left_through = left.last().map_or(0, |r| r.seq);
        // With nothing left, the server has every record the journal ever
        // numbered: a wait for the last one (an fsync, `panfs sync`, an
        // unmount right after a remount) has nothing to wait for.
        let acked = journal.acked();
        let inos = InoPool::with_licence(&state_dir.join("mint-licence"));
        for ino in left.iter().filter_map(|r| created(&r.op.op)) {
            inos.waiting(ino);
        }
        Ok(Syncer {
            journal,
            progress: Mutex::new(Progress {
                acked,
                contents: false,
                waiters: 0,
                offline_bytes: 0,
                status: SyncStatus {
                    online: true,
                    ..SyncStatus::default()
                },
            }),
            changed: Condvar::new(),
            maybe_sent_through: AtomicU64::new(left_through),
            made_again: Mutex::default(),
            inos,
        })
    }

    /// Changes a previous panfs journaled and the server may not have.
    pub fn left_over(&self) -> Vec<Record<Journaled>> {
        self.journal.pending(usize::MAX)
    }

    /// Whether the server may have the record already (see `maybe_sent_through`).
    pub fn maybe_sent(&self, seq: u64) -> bool {
        seq <= self.maybe_sent_through.load(Ordering::SeqCst)
    }

    /// A batch through `last` was sent and no answer came back: the server
    /// may have committed it.
    pub fn unanswered(&self, last: u64) {
        self.maybe_sent_through.fetch_max(last, Ordering::SeqCst);
    }

    pub fn made_again(&self, ino: i64, at: (i64, String)) {
        lock(&self.made_again).insert(ino, at);
    }

    /// Where the server has a node of this mount's made again, if it was.
    pub fn made_again_at(&self, ino: i64) -> Option<(i64, String)> {
        lock(&self.made_again).get(&ino).cloned()
    }

    /// Writes a change to the journal (not yet durable: see `durable`) and
    /// returns its number. Called in the order changes are applied.
    pub fn record(&self, change: Journaled) -> JournalResult<u64> {
        let seq = self.journal.write(change)?;
        // Under the lock the loop checks for records with: no wakeup is lost.
        let _held = lock(&self.progress);
        self.changed.notify_all();
        Ok(seq)
    }

    /// Waits until record `seq` is on the local disk.
    pub fn durable(&self, seq: u64) -> JournalResult<()> {
        self.journal.make_durable(seq)
    }

    /// The number of the last change recorded.
    pub fn last(&self) -> u64 {
        self.journal.last()
    }

    /// Up to `max` changes to send, waiting up to `wait` for one or for a
    /// file's content (`contents_waiting`), and lingering while more arrive
    /// (`LINGER_MAX`); with the number of the last record the server has.
    pub fn next_batch(&self, max: usize, wait: Duration) -> (Vec<Record<Journaled>>, u64) {
        let mut p = lock(&self.progress);
        if self.journal.backlog() == 0 && !p.contents {
            p = self
                .changed
                .wait_timeout(p, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        let started = Instant::now();
        while p.waiters == 0 && self.journal.backlog() < max && started.elapsed() < LINGER_MAX {
            let before = self.journal.last();
            drop(p);
            std::thread::sleep(LINGER_STEP);
            p = lock(&self.progress);
            if self.journal.last() == before {
                break;
            }
        }
        p.contents = false;
        (self.journal.pending(max), p.acked)
    }

    /// A closed file's content waits for the next batch.
    pub fn contents_waiting(&self) {
        lock(&self.progress).contents = true;
        self.changed.notify_all();
    }

    /// The server committed every change through `seq`.
    pub fn committed(&self, seq: u64, ops: usize, conflicts: u64) -> JournalResult<()> {
        self.journal.acknowledge(seq)?;
        let mut p = lock(&self.progress);
        p.acked = p.acked.max(seq);
        let s = &mut p.status;
        s.online = true;
        s.problem = None;
        s.batches += 1;
        s.ops_sent += ops as u64;
        s.conflicts += conflicts;
        s.last_sync = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .ok()
            .map(|d| d.as_secs());
        drop(p);
        self.changed.notify_all();
        Ok(())
    }

    /// A batch could not be sent; it is tried again.
    pub fn failed(&self, why: String, reachable: bool) {
        let mut p = lock(&self.progress);
        p.status.online = reachable;
        p.status.problem = Some(why);
        drop(p);
        self.changed.notify_all();
    }

    /// Whether the server answered the last batch.
    pub fn is_online(&self) -> bool {
        lock(&self.progress).status.online
    }

    /// Counts `bytes` more of local work while the server is unreachable;
    /// false when that would exceed `limit` (the caller answers ENOSPC).
    /// Online, nothing is counted: the syncer drains the journal as it grows.
    pub fn charge(&self, bytes: u64, limit: u64) -> bool {
        let mut p = lock(&self.progress);
        if p.status.online {
            p.offline_bytes = 0;
            return true;
        }
        if p.offline_bytes + bytes > limit {
            return false;
        }
        p.offline_bytes += bytes;
        true
    }

    /// Waits until the server has every change through `seq`. It gives up
    /// only when the server took nothing for `timeout`: a long journal (a
    /// `tar xf` made offline) drains at the server's pace, batch by batch,
    /// while a server that is away fails the wait after `timeout`.
    pub fn wait_synced(&self, seq: u64, timeout: Duration) -> bool {
        let mut p = lock(&self.progress);
        let mut seen = p.acked;
        let mut deadline = Instant::now() + timeout;
        // Counted, so the syncer sends at once rather than lingering.
        p.waiters += 1;
        let synced = loop {
            if p.acked >= seq {
                break true;
            }
            if p.acked > seen {
                seen = p.acked;
                deadline = Instant::now() + timeout;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break false;
            }
            p = self
                .changed
                .wait_timeout(p, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        };
        p.waiters -= 1;
        synced
    }

    pub fn status(&self) -> SyncStatus {
        let mut s = lock(&self.progress).status.clone();
        s.pending_ops = self.journal.backlog();
        s.journal_syncs = self.journal.syncs();
        s.provisional_inos = self.inos.provisional();
        s
    }
}

/// The number a create gives its node, when the client chose it.
pub fn created(op: &BatchOp) -> Option<i64> {
    match op {
        BatchOp::Create { ino, .. } => *ino,
        _ => None,
    }
}

impl From<JournalError> for crate::fs::FsError {
    fn from(e: JournalError) -> Self {
        match e {
            // A full disk is ENOSPC to the caller, as on a local disk.
            JournalError::Io(io) => crate::fs::FsError::local("the journal", io),
            corrupt => crate::fs::FsError::new(libc::EIO, corrupt.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::thread;

    fn syncer_with(changes: usize) -> (tempfile::TempDir, Arc<Syncer>) {
        let dir = tempfile::tempdir().expect("state dir");
        let s = Syncer::open(dir.path()).expect("journal");
        for i in 0..changes {
            let op = BatchOp::Remove {
                parent: 1,
                name: format!("f{i}"),
                dir: false,
                if_ino: None,
            };
            s.record(Journaled { at: 0, op }).expect("journaled");
        }
        (dir, Arc::new(s))
    }

    #[test]
    fn after_a_reopen_with_everything_sent_a_wait_ends_at_once() {
        let (dir, s) = syncer_with(3);
        s.committed(s.last(), 3, 0).expect("acknowledged");
        drop(s);
        let again = Syncer::open(dir.path()).expect("reopen");
        assert!(again.last() >= 3, "numbers go on after a reopen");
        assert!(again.wait_synced(again.last(), Duration::from_millis(50)));
    }

    #[test]
    fn a_wait_for_a_server_that_takes_nothing_ends_after_the_timeout() {
        let (_dir, s) = syncer_with(1);
        assert!(!s.wait_synced(s.last(), Duration::from_millis(50)));
    }

    #[test]
    fn a_wait_goes_on_while_the_server_takes_batches_slower_than_the_timeout() {
        let (_dir, s) = syncer_with(20);
        let last = s.last();
        let server = {
            let s = Arc::clone(&s);
            thread::spawn(move || {
                for seq in 1..=last {
                    thread::sleep(Duration::from_millis(40));
                    s.committed(seq, 1, 0).expect("acknowledged");
                }
            })
        };
        // Twenty batches 40 ms apart: 800 ms in all, each within 300 ms.
        assert!(s.wait_synced(last, Duration::from_millis(300)));
        server.join().expect("server thread");
    }
}
