//! A set of byte ranges [start, end), kept sorted and merged.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeSet(Vec<(u64, u64)>);

impl RangeSet {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &(u64, u64)> {
        self.0.iter()
    }

    pub fn insert(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        let (mut s, mut e) = (start, end);
        let mut kept = Vec::with_capacity(self.0.len() + 1);
        for &(a, b) in &self.0 {
            if b < s || a > e {
                kept.push((a, b));
            } else {
                s = s.min(a);
                e = e.max(b);
            }
        }
        kept.push((s, e));
        kept.sort_unstable();
        self.0 = kept;
    }

    pub fn remove(&mut self, start: u64, end: u64) {
        let mut kept = Vec::with_capacity(self.0.len() + 1);
        for &(a, b) in &self.0 {
            if b <= start || a >= end {
                kept.push((a, b));
                continue;
            }
            if a < start {
                kept.push((a, start));
            }
            if b > end {
                kept.push((end, b));
            }
        }
        self.0 = kept;
    }

    /// The parts of [start, end) not in the set.
    pub fn gaps(&self, start: u64, end: u64) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let mut pos = start;
        for &(a, b) in &self.0 {
            if b <= pos {
                continue;
            }
            if a >= end {
                break;
            }
            if a > pos {
                out.push((pos, a));
            }
            pos = pos.max(b);
            if pos >= end {
                break;
            }
        }
        if pos < end {
            out.push((pos, end));
        }
        out
    }

    pub fn total(&self) -> u64 {
        self.0.iter().map(|(a, b)| b - a).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_merges_and_remove_splits() {
        let mut r = RangeSet::default();
        r.insert(10, 20);
        r.insert(30, 40);
        r.insert(20, 30);
        assert_eq!(r.iter().copied().collect::<Vec<_>>(), vec![(10, 40)]);
        r.remove(15, 25);
        assert_eq!(
            r.iter().copied().collect::<Vec<_>>(),
            vec![(10, 15), (25, 40)]
        );
        assert_eq!(r.gaps(0, 50), vec![(0, 10), (15, 25), (40, 50)]);
        assert_eq!(r.gaps(26, 30), vec![]);
        assert_eq!(r.total(), 20);
        r.remove(0, u64::MAX);
        assert!(r.is_empty());
    }
}
