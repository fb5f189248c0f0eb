//! Following the server's change feed for as long as the mount lives. A change
//! made elsewhere is forgotten in the replica and in the kernel's caches (through
//! `KernelCache`), so both may cache for minutes. While the feed cannot be
//! followed, everything falls back to short TTLs until it has caught up.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use panproto::wire::ChangesResponse;
use serde::{Deserialize, Serialize};

use super::{PanFs, lock};
use crate::remote::FeedPage;
use crate::replica::{Invalidations, replica_path};

/// How long one poll of the feed waits for a change.
const POLL: Duration = Duration::from_secs(25);
/// How often a changed replica is written to the cache directory.
const SAVE_EVERY: Duration = Duration::from_secs(30);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// The kernel's caches, as the fuser notifier reaches them (kernel inodes).
pub trait KernelCache: Send + Sync {
    fn forget_entry(&self, parent: u64, name: &str);
    fn forget_attrs(&self, ino: u64);
    /// Attributes and cached pages.
    fn forget_data(&self, ino: u64);
}

/// The follower's state, for `panfs status`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FeedStatus {
    pub following: bool,
    pub cursor: Option<i64>,
    /// Changes made elsewhere that were applied.
    pub applied: u64,
    /// Times the feed's cursor expired and the replica started over.
    pub restarts: u64,
    /// Why the feed is not followed, when it is not.
    pub problem: Option<String>,
    /// Nodes, names and complete directories in the replica.
    pub replica: (usize, usize, usize),
}

impl PanFs {
    pub fn set_kernel(&self, kernel: Arc<dyn KernelCache>) {
        let _ = self.kernel.set(kernel);
    }

    pub fn following(&self) -> bool {
        lock(&self.tables).replica.following()
    }

    /// How long the kernel may cache (attributes, names) right now.
    pub fn ttls(&self) -> (Duration, Duration) {
        if self.following() {
            (self.opts.attr_ttl, self.opts.entry_ttl)
        } else {
            (self.opts.fallback_ttl, self.opts.fallback_ttl)
        }
    }

    /// How long the kernel may keep these attributes (attributes, name).
    pub fn ttls_for(&self, attr: &super::Attr) -> (Duration, Duration) {
        if attr.settled {
            self.ttls()
        } else {
            (self.opts.fallback_ttl, self.opts.fallback_ttl)
        }
    }

    pub fn feed_status(&self) -> FeedStatus {
        let mut status = lock(&self.feed).clone();
        let t = lock(&self.tables);
        status.following = t.replica.following();
        status.cursor = t.replica.cursor();
        status.replica = t.replica.counts();
        status
    }

    /// Takes the feed's position before the kernel sends any request. The
    /// follower's first page would otherwise arrive while the mount is
    /// already in use, make every record stale (an answer fetched before an
    /// upload committed could then size the file as it was) and make the
    /// kernel forget every name, a shell's working directory among them.
    pub fn take_feed_position(&self) {
        if lock(&self.tables).replica.cursor().is_some() {
            return;
        }
        match self.block_on(self.remote.changes(None, Duration::ZERO)) {
            Ok(page) => self.take_page(None, page),
            Err(e) => {
                tracing::info!(error = %e, "no change feed position at mount; the follower takes it later");
            }
        }
    }

    /// Takes a page of the feed asked for from `since`.
    fn take_page(&self, since: Option<i64>, page: FeedPage) {
        match (page, since) {
            (FeedPage::Changes(page), Some(_)) => self.apply(page),
            // No cursor yet: nothing seen so far can be vouched for.
            (FeedPage::Changes(page), None) => self.start_over(page.seq),
            (FeedPage::Expired { current }, _) => {
                tracing::warn!(
                    current,
                    "the change feed expired this mount's cursor: starting over"
                );
                lock(&self.feed).restarts += 1;
                self.start_over(current);
            }
        }
    }

    pub fn start_follower(self: &Arc<Self>) {
        let fs = self.clone();
        self.rt.spawn(async move { fs.follow().await });
    }

    /// Writes the replica to the cache directory, if it is current.
    pub fn save_replica(&self) {
        let path = replica_path(&self.opts.cache_dir);
        let mut t = lock(&self.tables);
        if let Err(e) = t.replica.save(&path, self.root) {
            tracing::warn!(path = %path.display(), error = %e, "could not save the replica");
        }
    }

    async fn follow(self: Arc<Self>) {
        let mut retry = Duration::from_millis(200);
        let mut saved = Instant::now();
        loop {
            let (since, following) = {
                let t = lock(&self.tables);
                (t.replica.cursor(), t.replica.following())
            };
            // Catching up asks without waiting; a follower waits for the next change.
            let wait = if following { POLL } else { Duration::ZERO };
            match self.remote.changes(since, wait).await {
                Ok(page) => {
                    retry = Duration::from_millis(200);
                    self.take_page(since, page);
                }
                Err(e) => {
                    if following {
                        tracing::warn!(error = %e, "lost the change feed: short cache times until it is back");
                    }
                    lock(&self.tables).replica.set_following(false, None);
                    lock(&self.feed).problem = Some(e.to_string());
                    tokio::time::sleep(retry).await;
                    retry = (retry * 2).min(RETRY_MAX);
                }
            }
            if saved.elapsed() >= SAVE_EVERY && lock(&self.tables).replica.dirty() {
                self.save_replica();
                saved = Instant::now();
            }
        }
    }

    /// Applies a page of the feed; caught up once nothing more waits.
    fn apply(&self, page: ChangesResponse) {
        let mine = self.remote.origin();
        let mut forget = Invalidations::default();
        let mut applied = 0;
        {
            let mut t = lock(&self.tables);
            for change in page.changes.iter().filter(|c| c.origin != Some(mine)) {
                tracing::debug!(change = ?change, "change from elsewhere");
                t.replica.apply_foreign(change, &mut forget);
                applied += 1;
            }
            t.replica.set_following(!page.more, Some(page.seq));
            // The kernel would cut an open reader short at the new size; new
            // opens see the new version meanwhile (they bypass the page cache).
            let open: Vec<i64> = forget
                .data
                .iter()
                .copied()
                .filter(|ino| {
                    t.files
                        .get(ino)
                        .is_some_and(|f| f.opens.load(Ordering::SeqCst) > 0)
                })
                .collect();
            forget.data.retain(|ino| !open.contains(ino));
            forget.attrs.retain(|ino| !open.contains(ino));
            for ino in open {
                if let Some(known) = t.replica.last_seen(ino).cloned() {
                    t.deferred.entry(ino).or_insert(known);
                }
            }
        }
        let mut feed = lock(&self.feed);
        feed.applied += applied;
        if !page.more {
            feed.problem = None;
        }
        drop(feed);
        self.tell_kernel(forget);
    }

    /// Forgets everything known and follows the feed from `current` on.
    fn start_over(&self, current: i64) {
        let forget = {
            let mut t = lock(&self.tables);
            let forget = t.replica.clear();
            t.replica.set_following(true, Some(current));
            forget
        };
        lock(&self.feed).problem = None;
        self.tell_kernel(forget);
    }

    /// The last close of a file: what changed elsewhere meanwhile reaches the kernel now.
    pub(super) fn closed_everywhere(&self, ino: i64) {
        if lock(&self.tables).deferred.remove(&ino).is_some() {
            self.tell_kernel(Invalidations {
                data: vec![ino],
                ..Invalidations::default()
            });
        }
    }

    /// Sends the kernel what it must forget, off the async threads: a
    /// notification waits for the directory's lock, which a request in flight may hold.
    pub(super) fn tell_kernel(&self, forget: Invalidations) {
        let Some(kernel) = self.kernel.get().cloned() else {
            return;
        };
        if forget == Invalidations::default() {
            return;
        }
        let to_fuse = |ino: i64| self.to_fuse(ino);
        let entries: Vec<(u64, String)> = forget
            .entries
            .into_iter()
            .map(|(parent, name)| (to_fuse(parent), name))
            .collect();
        // A file with new content loses its pages and attributes in one
        // notification: its attributes alone first would let a `stat` take the
        // new size while the old pages are still cached, and a read mix them.
        let attrs: Vec<u64> = forget
            .attrs
            .into_iter()
            .filter(|ino| !forget.data.contains(ino))
            .map(to_fuse)
            .collect();
        let data: Vec<u64> = forget.data.into_iter().map(to_fuse).collect();
        self.rt.spawn_blocking(move || {
            for (parent, name) in &entries {
                kernel.forget_entry(*parent, name);
            }
            for ino in data {
                kernel.forget_data(ino);
            }
            for ino in attrs {
                kernel.forget_attrs(ino);
            }
        });
    }
}
