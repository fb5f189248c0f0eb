//! The extents of contents read lately, kept by window, so that a ranged read
//! of a version asks the database for the file's node only.
//!
//! Why: a client that reads at random (a cold random read in panfs) sends one
//! ranged GET per block, and on the embedded profile every query is a round
//! trip to the SQLite driver's worker thread, whose wake-ups are most of such
//! a request's cost. A content's extents never change: its id names its chunk
//! list. Only where a chunk is can change, from staging to the store, and
//! `App::read_extent` looks in the store when staging no longer has it. So
//! what is kept here does not go stale.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::meta::Extent;

/// Extents are kept by windows of this many bytes of a content: a read asks
/// for its window's few hundred extents, never a whole huge content's.
pub const WINDOW: i64 = 64 << 20;
/// Past this many bytes kept, the cache starts over: it stays small
/// whatever the traffic.
const MAX_BYTES: usize = 32 << 20;
/// What a window costs to keep besides its extents and its content's id.
const ENTRY_COST: usize = 64;

type Key = (String, i64);

#[derive(Default)]
pub struct ExtentCache {
    kept: Mutex<Kept>,
}

#[derive(Default)]
struct Kept {
    windows: HashMap<Key, Arc<[Extent]>>,
    bytes: usize,
}

impl ExtentCache {
    /// The window of `content` that holds all of [start, end), if one does.
    pub fn window_of(start: i64, end: i64) -> Option<i64> {
        let window = start.div_euclid(WINDOW);
        (end > start && (end - 1).div_euclid(WINDOW) == window).then_some(window)
    }

    /// The extents that overlap `content`'s window `window`, when kept.
    pub fn get(&self, content: &str, window: i64) -> Option<Arc<[Extent]>> {
        let kept = self.kept.lock().ok()?;
        kept.windows.get(&(content.to_string(), window)).cloned()
    }

    /// Keeps the extents that overlap `content`'s window `window`. None are
    /// kept for a window without any (past the end, or no such content), nor
    /// for one larger than the whole bound, which would only empty the cache.
    pub fn insert(&self, content: &str, window: i64, extents: Arc<[Extent]>) {
        let weight = ENTRY_COST + content.len() + extents.iter().map(weight).sum::<usize>();
        if extents.is_empty() || weight > MAX_BYTES {
            return;
        }
        let Ok(mut kept) = self.kept.lock() else {
            return;
        };
        if kept.bytes + weight > MAX_BYTES {
            kept.windows.clear();
            kept.bytes = 0;
        }
        if kept
            .windows
            .insert((content.to_string(), window), extents)
            .is_none()
        {
            kept.bytes += weight;
        }
    }
}

/// The extents among `extents` that overlap [start, end).
pub fn overlapping(extents: &[Extent], start: i64, end: i64) -> Vec<Extent> {
    extents
        .iter()
        .filter(|e| e.offset < end && e.offset + e.size > start)
        .cloned()
        .collect()
}

/// What an extent costs to keep, roughly.
fn weight(e: &Extent) -> usize {
    std::mem::size_of::<Extent>()
        + e.sha256.as_ref().map_or(0, String::len)
        + e.block_sums.as_ref().map_or(0, Vec::len)
        + e.inline.as_ref().map_or(0, Vec::len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn extent(offset: i64, size: i64) -> Extent {
        Extent {
            offset,
            size,
            sha256: Some(format!("{offset:064x}")),
            block_sums: None,
            inline: None,
            location: None,
        }
    }

    #[test]
    fn a_range_has_a_window_only_when_it_lies_within_one() {
        assert_eq!(ExtentCache::window_of(0, 4096), Some(0));
        assert_eq!(ExtentCache::window_of(WINDOW - 1, WINDOW), Some(0));
        assert_eq!(ExtentCache::window_of(WINDOW, WINDOW + 1), Some(1));
        assert_eq!(ExtentCache::window_of(WINDOW - 1, WINDOW + 1), None);
        assert_eq!(ExtentCache::window_of(10, 10), None);
    }

    #[test]
    fn only_extents_that_overlap_the_range_are_given() {
        let extents = [extent(0, 100), extent(100, 100), extent(200, 100)];
        let offsets = |v: Vec<Extent>| v.iter().map(|e| e.offset).collect::<Vec<_>>();
        assert_eq!(offsets(overlapping(&extents, 100, 200)), [100]);
        assert_eq!(offsets(overlapping(&extents, 99, 201)), [0, 100, 200]);
        assert_eq!(offsets(overlapping(&extents, 300, 400)), Vec::<i64>::new());
    }

    #[test]
    fn the_cache_starts_over_past_its_bound_and_keeps_what_came_last() {
        let cache = ExtentCache::default();
        // Each a little over half the bound: two do not fit.
        let half = MAX_BYTES / 2 / weight(&extent(0, 1)) + 1;
        let big: Arc<[Extent]> = vec![extent(0, 1); half].into();
        cache.insert("a", 0, big.clone());
        assert!(cache.get("a", 0).is_some());
        cache.insert("b", 0, big);
        assert!(cache.get("a", 0).is_none(), "the first window was dropped");
        assert!(cache.get("b", 0).is_some());
        assert!(cache.get("b", 1).is_none());
    }

    #[test]
    fn a_window_larger_than_the_bound_is_not_kept_and_empties_nothing() {
        let cache = ExtentCache::default();
        cache.insert("a", 0, vec![extent(0, 1)].into());
        let over = MAX_BYTES / weight(&extent(0, 1)) + 1;
        cache.insert("huge", 0, vec![extent(0, 1); over].into());
        assert!(cache.get("huge", 0).is_none());
        assert!(cache.get("a", 0).is_some(), "what was kept stays");
    }

    #[test]
    fn a_window_without_extents_is_not_kept() {
        let cache = ExtentCache::default();
        cache.insert("no-such-content", 0, Vec::new().into());
        assert!(cache.get("no-such-content", 0).is_none());
        assert_eq!(cache.kept.lock().expect("lock").windows.len(), 0);
    }
}
