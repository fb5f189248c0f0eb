//! The journal: every change a process makes on the mount, on local disk
//! before the call returns, in order, until the server has it.
//!
//! Records are lines appended to `journal.log` in the state directory. A
//! written record survives a crash of the process (the kernel has it); one
//! made durable (`make_durable`, `append`) survives a crash of the machine.
//! The fdatasync is group-committed: the
//! first caller to need one makes it for every record written so far, and the
//! callers that arrive meanwhile wait for it or for the next (leader and
//! followers, as databases commit), so a burst of calls costs a few syncs, not
//! one each. The syncer reads the records not yet acknowledged, sends them,
//! and acknowledges them once the server committed, with a line of its own
//! (never synced: a lost one only makes the records go again, and the server
//! knows a resend). When every record is acknowledged and the log has grown
//! past `COMPACT_BYTES`, it starts afresh; that rewrite costs two syncs under
//! the log's lock, which every change waits on, so it is rare, not once a batch.
//!
//! A crash can tear only the last line, whose caller never returned: it is
//! dropped when the log is opened again. Any other unreadable line is an
//! error, never skipped.

use std::collections::VecDeque;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("journal line {line} is unreadable: {why}")]
    Corrupt { line: usize, why: String },
}

pub type JournalResult<T> = Result<T, JournalError>;

/// How long the log grows before an acknowledgement of everything in it
/// starts it afresh.
const COMPACT_BYTES: u64 = 4 << 20;

/// One line of the log.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum Line<T> {
    Record {
        seq: u64,
        op: T,
    },
    /// Every record up to `ack` is on the server.
    Ack {
        ack: u64,
    },
}

/// A change waiting for the server, numbered in the order it was made.
#[derive(Debug, Clone, PartialEq)]
pub struct Record<T> {
    pub seq: u64,
    pub op: T,
}

struct State<T> {
    file: File,
    /// The log's length in bytes.
    len: u64,
    /// The last record written (durable or not).
    written: u64,
    /// The last record known durable.
    durable: u64,
    /// The last record the server has.
    acked: u64,
    /// A caller is syncing the log now.
    syncing: bool,
    pending: VecDeque<Record<T>>,
}

pub struct Journal<T> {
    path: PathBuf,
    state: Mutex<State<T>>,
    synced: Condvar,
    /// fdatasyncs made so far (for `panfs status`, and to show group commit).
    syncs: AtomicU64,
}

fn lock<S>(m: &Mutex<S>) -> MutexGuard<'_, S> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Reads a log: the records not acknowledged, and the last sequence number.
fn replay<T: DeserializeOwned>(path: &Path) -> JournalResult<(VecDeque<Record<T>>, u64, u64)> {
    let mut pending = VecDeque::new();
    let (mut last, mut acked) = (0, 0);
    let lines = lines::read_lines(path)?;
    for (i, text) in lines.iter().enumerate() {
        match serde_json::from_str::<Line<T>>(text) {
            Ok(Line::Record { seq, op }) => {
                last = seq;
                pending.push_back(Record { seq, op });
            }
            Ok(Line::Ack { ack }) => {
                acked = acked.max(ack);
                last = last.max(ack);
                while pending.front().is_some_and(|r| r.seq <= ack) {
                    pending.pop_front();
                }
            }
            // The last line may be torn by a crash; its caller never returned.
            Err(_) if i + 1 == lines.len() => break,
            Err(e) => {
                return Err(JournalError::Corrupt {
                    line: i + 1,
                    why: e.to_string(),
                });
            }
        }
    }
    Ok((pending, last, acked))
}

impl<T: Serialize + DeserializeOwned + Clone> Journal<T> {
    /// Opens (or creates) the journal in `dir`, with the records a previous
    /// panfs left unacknowledged.
    pub fn open(dir: &Path) -> JournalResult<Self> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("journal.log");
        let (pending, last, acked) = replay::<T>(&path)?;
        // Rewritten whole: a torn last line must not stay before new ones.
        let file = rewrite(&path, &pending, acked)?;
        let len = file.metadata()?.len();
        Ok(Journal {
            path,
            state: Mutex::new(State {
                file,
                len,
                written: last,
                durable: last,
                acked,
                syncing: false,
                pending,
            }),
            synced: Condvar::new(),
            syncs: AtomicU64::new(0),
        })
    }

    /// Records `op` and returns its number once it is durable.
    pub fn append(&self, op: T) -> JournalResult<u64> {
        let seq = self.write(op)?;
        self.make_durable(seq)?;
        Ok(seq)
    }

    /// Writes `op` to the log and returns its number; it is durable once
    /// `make_durable` returns for it. Callers that must order records with
    /// other state write under their own lock and wait outside it.
    pub fn write(&self, op: T) -> JournalResult<u64> {
        let mut s = lock(&self.state);
        let seq = s.written + 1;
        let line = serde_json::to_string(&Line::Record {
            seq,
            op: op.clone(),
        })
        .map_err(|e| JournalError::Corrupt {
            line: 0,
            why: e.to_string(),
        })?;
        s.append_line(&line)?;
        s.written = seq;
        s.pending.push_back(Record { seq, op });
        Ok(seq)
    }

    /// Waits until record `seq` is on the disk.
    pub fn make_durable(&self, seq: u64) -> JournalResult<()> {
        let s = lock(&self.state);
        self.wait_durable(s, seq)
    }

    /// The number of the last record written.
    pub fn last(&self) -> u64 {
        lock(&self.state).written
    }

    /// The number of the last record acknowledged: every one up to it is done.
    pub fn acked(&self) -> u64 {
        lock(&self.state).acked
    }

    /// Waits until `seq` is durable, syncing the log when nobody else is.
    fn wait_durable<'a>(&'a self, mut s: MutexGuard<'a, State<T>>, seq: u64) -> JournalResult<()> {
        while s.durable < seq {
            if s.syncing {
                s = self.synced.wait(s).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            // Lead: sync everything written so far, without holding the lock.
            s.syncing = true;
            let upto = s.written;
            let file = s.file.try_clone()?;
            drop(s);
            let synced = file.sync_data();
            self.syncs.fetch_add(1, Ordering::Relaxed);
            s = lock(&self.state);
            s.syncing = false;
            self.synced.notify_all();
            synced?;
            s.durable = s.durable.max(upto);
        }
        Ok(())
    }

    /// Up to `max` records not yet on the server, oldest first.
    pub fn pending(&self, max: usize) -> Vec<Record<T>> {
        lock(&self.state)
            .pending
            .iter()
            .take(max)
            .cloned()
            .collect()
    }

    /// How many times the log was synced.
    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    /// How many records wait for the server.
    pub fn backlog(&self) -> usize {
        lock(&self.state).pending.len()
    }

    /// The server has every record up to `seq`. When that is all of them, the
    /// log starts afresh.
    pub fn acknowledge(&self, seq: u64) -> JournalResult<()> {
        let mut s = lock(&self.state);
        if seq <= s.acked {
            return Ok(());
        }
        s.acked = seq;
        while s.pending.front().is_some_and(|r| r.seq <= seq) {
            s.pending.pop_front();
        }
        if s.pending.is_empty() && !s.syncing && s.len > COMPACT_BYTES {
            s.file = rewrite(&self.path, &s.pending, seq)?;
            s.len = s.file.metadata()?.len();
        } else {
            s.append_line(&format!("{{\"ack\":{seq}}}"))?;
        }
        Ok(())
    }
}

impl<T> State<T> {
    fn append_line(&mut self, line: &str) -> std::io::Result<()> {
        lines::append_line(&mut self.file, &mut self.len, line)
    }
}

/// Writes a fresh log holding `pending` after an acknowledgement of `acked`,
/// durably, in place of the old one; returns it open for appending.
fn rewrite<T: Serialize>(
    path: &Path,
    pending: &VecDeque<Record<T>>,
    acked: u64,
) -> JournalResult<File> {
    let mut text = vec![format!("{{\"ack\":{acked}}}")];
    for r in pending {
        let line = serde_json::to_string(&Line::Record {
            seq: r.seq,
            op: &r.op,
        })
        .map_err(|e| JournalError::Corrupt {
            line: 0,
            why: e.to_string(),
        })?;
        text.push(line);
    }
    Ok(lines::replace(path, text)?)
}

pub mod lines;
#[cfg(test)]
mod tests;
