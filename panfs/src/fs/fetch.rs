//! Fetching file contents from the server for the read path: a block a
//! reader needs, and readahead.
//!
//! Readahead serves a reader of a file without a working copy. Each handle has
//! a window: it starts at `WINDOW_MIN` when a read follows the one before,
//! doubles with every such read up to the mount's `readahead_max`, and is
//! dropped when the reader jumps (a random reader then fetches only the
//! blocks it reads). The window is fetched in runs of up to `RUN` bytes, one
//! range request each, several in flight; every block goes to the memory and
//! disk caches. What all readers' readahead holds in flight at once is
//! bounded (`IN_FLIGHT_MAX`): beyond it, readers fetch what they read.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use tokio::sync::Semaphore;

use super::PanFs;
use crate::cache::blocks::{BLOCK, BlockCache, BlockKey};
use crate::cache::disk::DiskCache;
use crate::remote::{Remote, RemoteError};
use crate::upload::TransferStats;

/// The window of a reader that just turned sequential.
const WINDOW_MIN: u64 = 1 << 20;
/// How far from the last read a read still counts as sequential.
const SLACK: u64 = 1 << 20;
/// The most one range request of readahead asks for.
const RUN: u64 = 4 << 20;
/// Readahead bytes in flight for all readers together.
pub(super) const IN_FLIGHT_MAX: u64 = 16 << 20;

/// One handle's readahead state.
#[derive(Debug, Default)]
pub(super) struct Window {
    /// Where the last read began and ended.
    last: (u64, u64),
    /// How far ahead of the reader to have fetched.
    size: u64,
    /// Where what was asked for so far ends.
    until: u64,
}

impl Window {
    /// A read of [offset, end) of a file of `file_size` bytes, at most `max`
    /// ahead: the range to fetch now, if any.
    pub(super) fn advance(
        &mut self,
        offset: u64,
        end: u64,
        file_size: u64,
        max: u64,
    ) -> Option<(u64, u64)> {
        // Near where the last read was: the kernel's own readahead asks for
        // a sequential reader's pages out of order now and then.
        let sequential = offset + SLACK >= self.last.0 && offset <= self.last.1 + SLACK;
        self.last = (offset, end);
        if !sequential {
            self.size = 0;
            self.until = end;
            return None;
        }
        self.size = (self.size * 2).clamp(WINDOW_MIN, max.max(WINDOW_MIN));
        // Ask for more once less than half the window is left ahead.
        if self.until.saturating_sub(end) >= self.size / 2 {
            return None;
        }
        let from = self.until.max(end);
        let to = (end + self.size).min(file_size);
        self.until = to.max(self.until);
        (from < to).then_some((from, to))
    }
}

/// Where fetched blocks go, and the budget of bytes in flight.
#[derive(Clone)]
pub(super) struct Fetcher {
    pub remote: Arc<dyn Remote>,
    pub blocks: Arc<BlockCache>,
    pub disk: Arc<DiskCache>,
    pub budget: Arc<Semaphore>,
    pub stats: Arc<TransferStats>,
}

impl PanFs {
    /// Fetches [from, to) of `content` in the background, a run per request,
    /// skipping blocks cached or being fetched.
    pub(super) fn read_ahead(&self, ino: i64, content: &str, from: u64, to: u64) {
        let fetcher = &self.fetcher;
        let (first, last) = (from / BLOCK, to.div_ceil(BLOCK));
        // What is on local disk (a file written here, blocks read before) is
        // read from there when the reader gets to it, never fetched again.
        let keys = (first..last)
            .map(|i| (content.to_string(), i))
            .filter(|key| !fetcher.disk.contains(key));
        let claimed = fetcher.blocks.claim(keys);
        for run in runs(claimed) {
            let permits = run.len() as u32;
            let Ok(permit) = fetcher.budget.clone().try_acquire_many_owned(permits) else {
                // Over the budget: the reader fetches these when it gets there.
                run.iter().for_each(|key| fetcher.blocks.abandon(key));
                continue;
            };
            let fetcher = fetcher.clone();
            self.rt.spawn(async move {
                fetcher.fetch_run(ino, run).await;
                drop(permit);
            });
        }
    }
}

impl Fetcher {
    /// One block, from the disk cache, else from the server (then kept on disk).
    pub(super) async fn fetch_block(&self, ino: i64, key: BlockKey) -> Result<Bytes, RemoteError> {
        if let Some(hit) = self.disk.get(&key) {
            return Ok(hit);
        }
        let bytes = self
            .remote
            .read(ino, &key.0, key.1 * BLOCK, (key.1 + 1) * BLOCK)
            .await?;
        self.fetched(&bytes);
        // Written to disk beside the reader's answer, not before it (a
        // random reader waits for every block it misses): the memory cache
        // holds the block meanwhile.
        let (disk, kept) = (self.disk.clone(), bytes.clone());
        tokio::task::spawn_blocking(move || disk.put(&key, &kept));
        Ok(bytes)
    }

    fn fetched(&self, bytes: &Bytes) {
        self.stats
            .bytes_fetched
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
    }

    /// One range request for a run of claimed blocks, split into blocks.
    async fn fetch_run(&self, ino: i64, run: Vec<BlockKey>) {
        let (Some(first), Some(last)) = (run.first(), run.last()) else {
            return;
        };
        let (start, end) = (first.1 * BLOCK, (last.1 + 1) * BLOCK);
        match self.remote.read_blocks(ino, &first.0, start, end).await {
            Ok(blocks) => {
                let mut blocks = blocks.into_iter();
                for key in run {
                    // Past the end of the content a block is empty.
                    let block = blocks.next().unwrap_or_default();
                    self.fetched(&block);
                    self.disk.put(&key, &block);
                    self.blocks.fulfil(key, block);
                }
            }
            Err(e) => {
                tracing::debug!(ino, error = %e, "readahead failed; readers fetch what they read");
                run.iter().for_each(|key| self.blocks.abandon(key));
            }
        }
    }
}

/// Claimed blocks (in order) cut into runs of consecutive blocks of at most
/// `RUN` bytes.
fn runs(claimed: Vec<BlockKey>) -> Vec<Vec<BlockKey>> {
    let mut runs: Vec<Vec<BlockKey>> = Vec::new();
    for key in claimed {
        match runs.last_mut() {
            Some(run)
                if run.last().is_some_and(|k| k.1 + 1 == key.1)
                    && (run.len() as u64 + 1) * BLOCK <= RUN =>
            {
                run.push(key)
            }
            _ => runs.push(vec![key]),
        }
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: u64 = 32 << 20;

    #[test]
    fn the_window_grows_while_sequential_and_is_dropped_on_a_jump() {
        let mut w = Window::default();
        let size = 1 << 30;
        assert_eq!(
            w.advance(0, 128 << 10, size, MAX),
            Some((128 << 10, (128 << 10) + WINDOW_MIN))
        );
        let mut at = 128 << 10;
        let mut widest = 0;
        for _ in 0..200 {
            if let Some((from, to)) = w.advance(at, at + (128 << 10), size, MAX) {
                let end = at + (128 << 10);
                assert!(from >= end, "fetches ahead of the reader");
                widest = widest.max(to - end);
            }
            at += 128 << 10;
        }
        assert_eq!(widest, MAX, "grew to the mount's maximum, no further");
        assert_eq!(
            w.advance(5 << 20, (5 << 20) + 4096, size, MAX),
            None,
            "a jump fetches nothing ahead"
        );
        assert_eq!(w.advance(9 << 20, (9 << 20) + 4096, size, MAX), None);
    }

    #[test]
    fn the_window_stops_at_the_end_of_the_file() {
        let mut w = Window::default();
        assert_eq!(w.advance(0, 4096, 100_000, MAX), Some((4096, 100_000)));
        assert_eq!(w.advance(4096, 8192, 100_000, MAX), None);
    }

    #[test]
    fn runs_are_consecutive_and_bounded() {
        let key = |i| ("a".to_string(), i);
        let claimed = [0, 1, 2, 5, 6].into_iter().chain(10..40).map(key).collect();
        let runs = runs(claimed);
        let lens: Vec<usize> = runs.iter().map(Vec::len).collect();
        assert_eq!(lens, [3, 2, 16, 14]);
        assert_eq!(runs[2][0], key(10));
    }
}
