//! Inode numbers the server reserved for this mount's new nodes (as JuiceFS
//! allocates inode ids in batches): a node made here takes its number at
//! once, and keeps it on every mount and after a remount.

use std::sync::Mutex;

#[derive(Default)]
pub struct InoPool {
    /// The next free number and the end of the range (exclusive).
    range: Mutex<(i64, i64)>,
}

impl InoPool {
    /// A number, if one is left.
    pub fn take(&self) -> Option<i64> {
        let mut r = self.range.lock().unwrap_or_else(|p| p.into_inner());
        (r.0 < r.1).then(|| {
            r.0 += 1;
            r.0 - 1
        })
    }

    /// Numbers `first..first + count` were reserved.
    pub fn refill(&self, first: i64, count: i64) {
        *self.range.lock().unwrap_or_else(|p| p.into_inner()) = (first, first + count);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_handed_out_once_each() {
        let pool = InoPool::default();
        assert_eq!(pool.take(), None);
        pool.refill(100, 2);
        assert_eq!(
            (pool.take(), pool.take(), pool.take()),
            (Some(100), Some(101), None)
        );
    }
}
