//! The syncer loop: sends journaled changes to the server in order, in
//! batches of up to `BATCH_OPS_MAX` (one server transaction each), and lays
//! the server's answers over the replica. A batch that cannot be sent is
//! tried again, with a growing pause, until the server answers: meanwhile the
//! mount works on (offline).
//!
//! Refusals are resolved by fixed rules, never by dropping data silently:
//! - a name this mount created that was created elsewhere meanwhile: the local
//!   node is made again under a conflict-copy name beside it, so both stay;
//! - a node this mount created in a directory removed elsewhere meanwhile: it
//!   is made again at the top under a conflict-copy name, and what this mount
//!   made inside it follows it there;
//! - a rename onto a name another client took meanwhile (the server checks
//!   the name still leads where this mount saw it lead): the rename goes to a
//!   conflict-copy name beside it, so neither node is replaced unseen;
//! - any other refusal (the node or name changed elsewhere): the server's
//!   version stands, the names and nodes involved are fetched again, and the
//!   refusal is logged and counted in `panfs status`.
//!
//! A change may have reached the server with no answer seen here: one a
//! previous panfs journaled (its acknowledgement had not reached the disk),
//! or one of a batch whose answer was lost. A resent create finds its node
//! (the server knows it by its reserved number); other refusals of a resend
//! may be the first send's own effect and are not counted as conflicts.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use panproto::batch::{BATCH_OPS_MAX, BatchOp, BatchRequest, OpResult};
use panproto::wire::{ErrorCode, RenameMode};

use super::attr::now_ns;
use super::conflict::{host_name, next_conflict_name};
use super::local::journal_in;
use super::{PanFs, lock};
use crate::journal::Record;
use crate::replica::Invalidations;
use crate::sync::{Journaled, SyncStatus, Syncer, created, last_naming, touched, worth_sending};

const FIRST_PAUSE: Duration = Duration::from_millis(100);
const LAST_PAUSE: Duration = Duration::from_secs(5);
/// A batch slower than this is logged: a waiting `fsync` may give up meanwhile.
const SLOW_BATCH: Duration = Duration::from_secs(5);

/// The same creation under a conflict-copy name, in `parent`: beside the
/// name taken elsewhere, or at the top when its directory was removed elsewhere.
fn create_again(op: &BatchOp, in_parent: i64) -> Option<BatchOp> {
    let mut again = op.clone();
    let BatchOp::Create { parent, name, .. } = &mut again else {
        return None;
    };
    *parent = in_parent;
    *name = next_conflict_name(name, &host_name(), SystemTime::now());
    Some(again)
}

/// The same rename onto a conflict-copy name beside the name it meant.
fn rename_again(op: &BatchOp) -> Option<BatchOp> {
    let mut again = op.clone();
    let BatchOp::Rename {
        new_name,
        if_target,
        ..
    } = &mut again
    else {
        return None;
    };
    *new_name = next_conflict_name(new_name, &host_name(), SystemTime::now());
    *if_target = Some(0);
    Some(again)
}

/// The same rename or removal from where the server has the node now.
fn from_where_it_is(op: &BatchOp, (at_parent, at_name): (i64, String)) -> BatchOp {
    let mut again = op.clone();
    if let BatchOp::Rename { parent, name, .. } | BatchOp::Remove { parent, name, .. } = &mut again
    {
        (*parent, *name) = (at_parent, at_name);
    }
    again
}

/// What becomes of a refused change of this mount's that would otherwise
/// lose what it made: the change made again, or nothing (the server's
/// version stands, and nothing of this mount's is lost by that).
fn kept_again(op: &BatchOp, code: ErrorCode, root: i64, s: &Syncer) -> Option<BatchOp> {
    let moved_node = match op {
        BatchOp::Rename { if_ino, .. } | BatchOp::Remove { if_ino, .. } => *if_ino,
        _ => None,
    };
    match (op, code) {
        (BatchOp::Create { parent, .. }, ErrorCode::Exists) => create_again(op, *parent),
        // Its directory was made again under another name: in it again.
        (BatchOp::Create { parent, .. }, ErrorCode::NotFound)
            if s.made_again_at(*parent).is_some() =>
        {
            Some(op.clone())
        }
        // Its directory was removed elsewhere: kept at the top, with everything
        // made inside it on this mount.
        (BatchOp::Create { .. }, ErrorCode::NotFound) => create_again(op, root),
        // A node of this mount's made again under another name: renamed or
        // removed from there, as this mount meant.
        // (Once: from there, a refusal stands.)
        (
            BatchOp::Rename { .. } | BatchOp::Remove { .. },
            ErrorCode::Conflict | ErrorCode::NotFound,
        ) => {
            let at = moved_node.and_then(|n| s.made_again_at(n))?;
            let again = from_where_it_is(op, at);
            (again != *op).then_some(again)
        }
        // A rename onto a name another client took meanwhile would replace
        // a node this mount never saw: it goes beside it instead.
        (BatchOp::Rename { mode, .. }, ErrorCode::Exists) if *mode != RenameMode::Exchange => {
            rename_again(op)
        }
        _ => None,
    }
}

/// Whether a refusal of a change the server may have committed before (a
/// resend) can be that first commit's own effect. Not for a create with a
/// reserved number (the server answers a resend of one with its node) nor
/// for a rename onto a taken name (a resend of one finds its source gone
/// first): their refusals are always news from elsewhere.
fn may_be_its_own_effect(op: &BatchOp, code: ErrorCode) -> bool {
    match op {
        BatchOp::Create { ino, .. } => ino.is_none() && code != ErrorCode::NotFound,
        BatchOp::Rename { .. } => code != ErrorCode::Exists,
        _ => true,
    }
}

impl PanFs {
    pub fn sync_status(&self) -> Option<SyncStatus> {
        self.sync.as_ref().map(|s| s.status())
    }

    /// Starts the syncer (local-first mode only).
    pub fn start_syncer(self: &Arc<Self>) {
        let Some(s) = self.sync.clone() else {
            return;
        };
        let fs = self.clone();
        let spawned = std::thread::Builder::new()
            .name("panfs-syncer".into())
            .spawn(move || {
                let mut pause = FIRST_PAUSE;
                loop {
                    let (batch, acked) = s.next_batch(BATCH_OPS_MAX, Duration::from_secs(1));
                    let ops = batch.len();
                    let started = Instant::now();
                    // A bug in one batch must not stop every later sync unseen:
                    // the batch stays journaled and is tried again.
                    let sent = std::panic::catch_unwind(AssertUnwindSafe(|| {
                        fs.send_batch(&s, batch, acked)
                    }))
                    .unwrap_or_else(|_| {
                        tracing::error!(
                            ops,
                            "the syncer panicked on a batch; it stays journaled and is tried again"
                        );
                        s.failed("the syncer met a bug; see the log".into(), true);
                        false
                    });
                    if started.elapsed() > SLOW_BATCH {
                        tracing::warn!(
                            ops,
                            secs = started.elapsed().as_secs_f64(),
                            sent,
                            "a batch took long; fsync and panfs sync wait for it"
                        );
                    }
                    if sent {
                        pause = FIRST_PAUSE;
                    } else {
                        std::thread::sleep(pause);
                        pause = (pause * 2).min(LAST_PAUSE);
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "could not start the syncer");
        }
    }

    /// Sends one batch of journaled changes (`acked`: the last record the
    /// server has) and of small files' contents; true when the server
    /// committed it, or there was nothing to send.
    fn send_batch(&self, s: &Syncer, batch: Vec<Record<Journaled>>, acked: u64) -> bool {
        // The journal is synced once per batch, not once per change.
        let last = batch.last().map_or(acked, |r| r.seq);
        if let Err(e) = s.durable(last) {
            tracing::error!(error = %e, "could not sync the journal");
        }
        let ticket = self.ticket();
        let journaled = batch.len();
        // Once the server answers, these creates are settled, sent or not.
        let creates: Vec<i64> = batch.iter().filter_map(|r| created(&r.op.op)).collect();
        let settle = || creates.iter().for_each(|&ino| s.inos.settled(ino));
        let send = worth_sending(batch.iter().map(|r| &r.op.op), |i| {
            s.maybe_sent(batch[i].seq)
        });
        let batch: Vec<_> = batch
            .into_iter()
            .zip(send)
            .filter_map(|(r, send)| send.then_some(r))
            .collect();
        let (contents, inline) = self.inline_contents(last, BATCH_OPS_MAX - batch.len());
        if batch.is_empty() && inline.is_empty() {
            if journaled > 0 {
                // Everything cancelled out: done without the server.
                settle();
                let (forget, _) = self.apply_answer(s, last, &[], Vec::new(), ticket);
                self.acknowledge(s, last, 0, 0);
                self.tell_kernel(forget);
            }
            return true;
        }
        if !inline.is_empty() {
            // More may wait than one batch carries: look again after this one.
            s.contents_waiting();
        }
        let now = now_ns();
        let req = BatchRequest {
            ops: batch
                .iter()
                .map(|r| r.op.op.clone())
                .chain(contents)
                .collect(),
            at: batch
                .iter()
                .map(|r| r.op.at)
                .chain(inline.iter().map(|_| now))
                .collect(),
        };
        let mut answer = match self.block_on(self.remote.batch(&req)) {
            Ok(answer) if answer.results.len() == req.ops.len() => answer,
            Ok(_) => {
                s.failed("the server answered a batch partly".into(), true);
                self.inline_answered(inline, None);
                return false;
            }
            Err(e) => {
                tracing::warn!(error = %e, ops = batch.len(), "a batch was not sent; will retry");
                if e.maybe_done() {
                    s.unanswered(last);
                }
                s.failed(e.to_string(), e.code().is_some());
                self.inline_answered(inline, None);
                return false;
            }
        };
        let stored = answer.results.split_off(batch.len());
        settle();
        let (forget, conflicts) = self.apply_answer(s, last, &batch, answer.results, ticket);
        // Before anyone waiting for this batch goes on.
        self.inline_answered(inline, Some(stored));
        self.acknowledge(s, last, req.ops.len(), conflicts);
        self.tell_kernel(forget);
        true
    }

    fn acknowledge(&self, s: &Syncer, last: u64, sent: usize, conflicts: u64) {
        if let Err(e) = s.committed(last, sent, conflicts) {
            tracing::error!(error = %e, "could not acknowledge a batch in the journal; it will be sent again");
        }
    }

    /// Lays a committed batch's answers over the replica: what the kernel must
    /// forget, and how many conflicts were met. A node made again under a
    /// conflict name is journaled under the same lock, so no upload ever sees
    /// its node missing from both the server and the journal.
    fn apply_answer(
        &self,
        s: &Syncer,
        last: u64,
        batch: &[Record<Journaled>],
        results: Vec<OpResult>,
        ticket: crate::replica::Ticket,
    ) -> (Invalidations, u64) {
        let mut forget = Invalidations::default();
        let mut conflicts = 0;
        let mut t = lock(&self.tables);
        t.replica.unpin_through(last, ticket);
        // A node a later operation of the batch names keeps what the replica
        // made of that operation (the server answers no removal or rename).
        let last_named = last_naming(batch.iter().map(|r| &r.op.op));
        for (i, (record, result)) in batch.iter().zip(results).enumerate() {
            let Some(error) = result.error else {
                if let Some(node) = &result.node
                    && last_named.get(&node.ino).is_none_or(|&j| j <= i)
                {
                    tracing::debug!(ino = node.ino, size = node.size, "batch answer");
                    t.replica.answered_without_content(node, ticket);
                }
                continue;
            };
            let (names, nodes) = touched(&record.op.op);
            for (parent, name) in names {
                t.replica.forget_entry(parent, &name);
                forget.entries.push((parent, name));
            }
            for ino in nodes {
                t.replica.mark_stale(ino);
                forget.attrs.push(ino);
            }
            if s.maybe_sent(record.seq) && may_be_its_own_effect(&record.op.op, error.code) {
                tracing::info!(seq = record.seq, code = %error.code,
                    "a change sent before with no answer was refused: the server had it already");
                continue;
            }
            conflicts += 1;
            tracing::warn!(seq = record.seq, op = ?record.op.op, code = %error.code, message = %error.message,
                "the server refused a journaled change: it changed elsewhere meanwhile; the server's version stands");
            if let Some(again) = kept_again(&record.op.op, error.code, self.root, s) {
                tracing::warn!(
                    op = ?again,
                    "the name was taken or its directory removed elsewhere: this mount's change is made again under a conflict-copy name"
                );
                match &again {
                    BatchOp::Create {
                        ino: Some(ino),
                        parent,
                        name,
                        ..
                    } => {
                        s.inos.waiting(*ino);
                        s.made_again(*ino, (*parent, name.clone()))
                    }
                    // Where the node goes now, for its next journaled move.
                    BatchOp::Rename {
                        if_ino: Some(ino),
                        new_parent,
                        new_name,
                        ..
                    } if s.made_again_at(*ino).is_some() => {
                        s.made_again(*ino, (*new_parent, new_name.clone()))
                    }
                    _ => {}
                }
                if let Err(e) = journal_in(&mut t.replica, s, again) {
                    tracing::error!(error = e.chain(), "could not journal a conflict copy");
                }
            }
        }
        (forget, conflicts)
    }
}
