//! Inode numbers the server reserved for this mount's new nodes (as JuiceFS
//! allocates inode ids in batches): a node made here takes its number at
//! once, and keeps it on every mount and after a remount. The next block is
//! reserved while the current one still has a quarter left, so a mount that
//! goes offline has numbers for a while. One that runs out offline mints
//! provisional numbers from a block it reserved (`panproto::batch::mint`):
//! the server takes them at sync as it takes reserved ones, so they too are
//! for good once there; until then `panfs status` counts them.

use std::collections::HashSet;
use std::sync::{Mutex, MutexGuard};

use panproto::batch::{mint, minted_from};

#[derive(Default)]
struct Blocks {
    /// The next free number and the end of the range (exclusive).
    current: (i64, i64),
    /// A block reserved ahead, taken when the current one runs out.
    spare: Option<(i64, i64)>,
    /// The first block this mount reserved, which licenses its minted
    /// numbers, and how many it minted.
    mint_block: Option<i64>,
    minted: i64,
    /// Minted numbers whose creates the server has not taken yet.
    provisional: HashSet<i64>,
    /// A reservation is on its way to the server.
    reserving: bool,
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

    /// Whether numbers can be minted: this mount reserved a block once.
    pub fn can_mint(&self) -> bool {
        self.lock().mint_block.is_some()
    }

    /// Claims the one reservation in flight: false when one already is.
    pub fn start_reserving(&self) -> bool {
        !std::mem::replace(&mut self.lock().reserving, true)
    }

    /// The reservation in flight ended, with the numbers it got, if any.
    pub fn end_reserving(&self, reserved: Option<(i64, i64)>) {
        if let Some((first, count)) = reserved {
            self.refill(first, count);
        }
        self.lock().reserving = false;
    }

    /// A provisional number, minted when no reserved one is left and the
    /// server cannot reserve more; None when this mount reserved no block
    /// yet or minted all its block allows.
    pub fn mint(&self) -> Option<i64> {
        let mut b = self.lock();
        let ino = mint(b.mint_block?, b.minted)?;
        b.minted += 1;
        b.provisional.insert(ino);
        Some(ino)
    }

    /// A journaled create still waits for the server to take its number (one
    /// a previous panfs left, or one made again).
    pub fn waiting(&self, ino: i64) {
        if minted_from(ino).is_some() {
            self.lock().provisional.insert(ino);
        }
    }

    /// The server committed (or refused for good) the create of `ino`.
    pub fn settled(&self, ino: i64) {
        self.lock().provisional.remove(&ino);
    }

    /// Provisional numbers in use: nodes made offline past the reserved ones.
    pub fn provisional(&self) -> usize {
        self.lock().provisional.len()
    }

    /// Numbers `first..first + count` were reserved.
    pub fn refill(&self, first: i64, count: i64) {
        let mut b = self.lock();
        b.mint_block.get_or_insert(first);
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

    #[test]
    fn one_reservation_is_in_flight_at_a_time() {
        let pool = InoPool::default();
        assert!(!pool.can_mint());
        assert!(pool.start_reserving());
        assert!(!pool.start_reserving(), "a second one waits for the first");
        pool.end_reserving(None);
        assert!(pool.start_reserving(), "a failed one lets the next go");
        pool.end_reserving(Some((100, 2)));
        assert!(pool.can_mint());
        assert_eq!(
            (pool.take(), pool.take(), pool.take()),
            (Some(100), Some(101), None)
        );
    }

    #[test]
    fn provisional_numbers_come_from_the_first_block_and_are_counted_until_settled() {
        let pool = InoPool::default();
        assert_eq!(
            pool.mint(),
            None,
            "nothing reserved yet, nothing to mint from"
        );
        pool.refill(100, 2);
        pool.refill(300, 2);
        let (a, b) = (pool.mint().expect("mint"), pool.mint().expect("mint"));
        assert_ne!(a, b);
        assert_eq!((minted_from(a), minted_from(b)), (Some(100), Some(100)));
        assert_eq!(pool.provisional(), 2);
        pool.settled(a);
        pool.waiting(150);
        assert_eq!(
            pool.provisional(),
            1,
            "a reserved number is never provisional"
        );
        // Reserved numbers still come first.
        assert_eq!(pool.take(), Some(100));
    }
}
