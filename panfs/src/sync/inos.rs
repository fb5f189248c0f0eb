//! Inode numbers the server reserved for this mount's new nodes (as JuiceFS
//! allocates inode ids in batches): a node made here takes its number at
//! once, and keeps it on every mount and after a remount. The next block is
//! reserved while the current one still has a quarter left, so a mount that
//! goes offline has numbers for a while.

use std::sync::{Mutex, MutexGuard};

#[derive(Default)]
struct Blocks {
    /// The next free number and the end of the range (exclusive).
    current: (i64, i64),
    /// A block reserved ahead, taken when the current one runs out.
    spare: Option<(i64, i64)>,
}

#[derive(Default)]
pub struct InoPool {
    blocks: Mutex<Blocks>,
}

impl InoPool {
    fn lock(&self) -> MutexGuard<'_, Blocks> {
        self.blocks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A number, if one is left.
    pub fn take(&self) -> Option<i64> {
        let mut b = self.lock();
        if b.current.0 >= b.current.1 {
            b.current = b.spare.take()?;
        }
        b.current.0 += 1;
        Some(b.current.0 - 1)
    }

    /// Whether the next block should be reserved now: none is spare, and
    /// fewer than a quarter of `block` numbers are left.
    pub fn running_low(&self, block: i64) -> bool {
        let b = self.lock();
        b.spare.is_none() && b.current.1 - b.current.0 < block / 4
    }

    /// Whether no number is left.
    pub fn is_empty(&self) -> bool {
        let b = self.lock();
        b.spare.is_none() && b.current.0 >= b.current.1
    }

    /// Numbers `first..first + count` were reserved.
    pub fn refill(&self, first: i64, count: i64) {
        let mut b = self.lock();
        if b.current.0 >= b.current.1 {
            b.current = (first, first + count);
        } else {
            b.spare = Some((first, first + count));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_handed_out_once_each() {
        let pool = InoPool::default();
        assert_eq!(pool.take(), None);
        assert!(pool.is_empty() && pool.running_low(8));
        pool.refill(100, 8);
        assert_eq!((pool.take(), pool.take()), (Some(100), Some(101)));
        assert!(!pool.running_low(8));
        for _ in 0..5 {
            pool.take();
        }
        // One left: the next block is reserved ahead and used after it.
        assert!(pool.running_low(8));
        pool.refill(200, 8);
        assert!(!pool.running_low(8));
        assert_eq!((pool.take(), pool.take()), (Some(107), Some(200)));
    }
}
