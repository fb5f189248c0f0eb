//! The change feed: each user's committed changes, in order, and long polls
//! that wait for the next one. A commit in this process wakes the user's
//! waiters at once and is published on the change bus for the other servers;
//! a waiter also looks at the database every few seconds, so a lost report
//! delays a change, never hides it.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use panproto::wire::ChangesResponse;
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;

use super::{App, ServiceError, ServiceResult};
use crate::bus::Wakeup;

/// The longest a request may wait for a change.
pub const WAIT_MAX: Duration = Duration::from_secs(60);
/// The most changes one answer carries.
pub const LIMIT_MAX: i64 = 1000;
/// How often a waiter looks at the database without being woken.
const RECHECK: Duration = Duration::from_secs(10);

/// The waiters, per user.
#[derive(Default)]
pub struct Feed {
    users: Mutex<HashMap<i64, watch::Sender<()>>>,
}

impl Feed {
    fn subscribe(&self, user: i64) -> watch::Receiver<()> {
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        users
            .entry(user)
            .or_insert_with(|| watch::channel(()).0)
            .subscribe()
    }

    pub fn wake(&self, wakeup: Wakeup) {
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        // A user with nobody waiting needs no entry.
        users.retain(|_, tx| tx.receiver_count() > 0);
        match wakeup {
            Wakeup::User(user) => {
                if let Some(tx) = users.get(&user) {
                    tx.send_replace(());
                }
            }
            Wakeup::All => users.values().for_each(|tx| {
                tx.send_replace(());
            }),
        }
    }
}

impl App {
    /// The changes after `since`, waiting up to `wait` for one when there are
    /// none yet. Without `since`: no changes, and the cursor to start from.
    pub async fn changes(
        &self,
        user: i64,
        since: Option<i64>,
        wait: Duration,
        limit: i64,
    ) -> ServiceResult<ChangesResponse> {
        let Some(since) = since else {
            return Ok(ChangesResponse {
                seq: self.meta.change_seq(user).await?,
                changes: Vec::new(),
                more: false,
            });
        };
        let limit = limit.clamp(1, LIMIT_MAX);
        let deadline = Instant::now() + wait.min(WAIT_MAX);
        let mut woken = self.feed.subscribe(user);
        loop {
            woken.borrow_and_update();
            // One more than asked tells whether more are waiting.
            let mut page = self.meta.changes(user, since, limit + 1).await?;
            if !page.complete {
                return Err(ServiceError::CursorExpired(page.current));
            }
            if !page.changes.is_empty() || Instant::now() >= deadline {
                let more = page.changes.len() as i64 > limit;
                page.changes.truncate(limit as usize);
                return Ok(ChangesResponse {
                    seq: page.changes.last().map_or(since, |c| c.seq),
                    changes: page.changes,
                    more,
                });
            }
            let next_look = deadline.min(Instant::now() + RECHECK);
            // Woken, timed out or the sender gone: look again either way.
            let _ = tokio::time::timeout_at(next_look, woken.changed()).await;
        }
    }

    /// Drops changes past the retention limits.
    pub async fn prune_changes(&self) -> ServiceResult<u64> {
        let before = super::now_ns() - self.limits.change_retention_secs * super::NS;
        Ok(self
            .meta
            .prune_changes(before, self.limits.change_retention_count)
            .await?)
    }
}

/// Wakes this server's waiters as changes commit here and tells the other
/// servers; runs for the life of the process.
pub async fn relay_commits(app: Arc<App>) {
    let mut committed = app.meta.committed();
    loop {
        let mut users = HashSet::new();
        match committed.recv().await {
            Ok(user) => {
                users.insert(user);
            }
            Err(broadcast::error::RecvError::Lagged(_)) => app.feed.wake(Wakeup::All),
            Err(broadcast::error::RecvError::Closed) => return,
        }
        // Whatever else committed meanwhile goes in the same round.
        while let Ok(user) = committed.try_recv() {
            users.insert(user);
        }
        for user in users {
            app.feed.wake(Wakeup::User(user));
            app.bus.publish(user).await;
        }
    }
}

/// Wakes this server's waiters for changes other servers report.
pub async fn follow_bus(app: Arc<App>) {
    let feed = app.clone();
    app.bus
        .listen(Arc::new(move |wakeup| feed.feed.wake(wakeup)))
        .await;
}
