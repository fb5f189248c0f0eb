//! Inode numbers the server reserved for this mount's new nodes (as JuiceFS
//! allocates inode ids in batches): a node made here takes its number at
//! once, and keeps it on every mount and after a remount. The next block is
//! reserved while the current one still has a quarter left, so a mount that
//! goes offline has numbers for a while. One that runs out offline mints
//! provisional numbers from a block it reserved (`panproto::batch::mint`):
//! the server takes them at sync as it takes reserved ones, so they too are
//! for good once there; until then `panfs status` counts them.
//!
//! The licence to mint outlives the process: a file in the state directory
//! names the block and how far minting may have gone, so a panfs started
//! again while the server is away mints on from there, never reusing a
//! number an earlier one may have handed out. The file is written ahead, once
//! per `LICENCE_STEP` numbers, before any of them is used.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use panproto::batch::{mint, minted_from};

use crate::journal::lines::{read_lines, replace};

/// Minted numbers one write of the licence file covers.
const LICENCE_STEP: i64 = 4096;

#[derive(Default)]
struct Blocks {
    /// The next free number and the end of the range (exclusive).
    current: (i64, i64),
    /// A block reserved ahead, taken when the current one runs out.
    spare: Option<(i64, i64)>,
    /// The block whose licence minted numbers come from: the first one this
    /// process reserved, or, until it reserved one, the one an earlier panfs
    /// left in the licence file. How many it minted, and how far the file
    /// says minting may have gone.
    mint_block: Option<i64>,
    minted: i64,
    licensed_to: i64,
    /// Whether this process reserved a block.
    reserved_here: bool,
    /// Minted numbers whose creates the server has not taken yet.
    provisional: HashSet<i64>,
    /// A reservation is on its way to the server.
    reserving: bool,
}

#[derive(Default)]
pub struct InoPool {
    blocks: Mutex<Blocks>,
    /// Where the licence to mint is kept; None keeps it in memory only.
    licence: Option<PathBuf>,
}

impl InoPool {
    /// A pool whose licence to mint is kept in `path`, with the licence an
    /// earlier panfs left there. An unreadable file is logged and ignored:
    /// minting then waits for a block reserved by this process.
    pub fn with_licence(path: &Path) -> Self {
        let mut blocks = Blocks::default();
        match read_licence(path) {
            Ok(Some((block, to))) => {
                blocks.mint_block = Some(block);
                (blocks.minted, blocks.licensed_to) = (to, to);
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "the licence to mint inode numbers is unreadable; ignored");
            }
        }
        InoPool {
            blocks: Mutex::new(blocks),
            licence: Some(path.to_path_buf()),
        }
    }

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

    /// Whether this process reserved a block: later ones are reserved in
    /// the background, minting meanwhile if they are late.
    pub fn reserved_here(&self) -> bool {
        self.lock().reserved_here
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
    /// server cannot reserve more; None when there is no licence (no block
    /// reserved, here or by an earlier panfs), it is used up, or its file
    /// cannot be written.
    pub fn mint(&self) -> Option<i64> {
        let mut b = self.lock();
        let block = b.mint_block?;
        let ino = mint(block, b.minted)?;
        if b.minted >= b.licensed_to {
            let to = b.minted + LICENCE_STEP;
            self.write_licence(block, to).ok()?;
            b.licensed_to = to;
        }
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

    /// Writes, durably, that numbers minted from `block` may have gone up to
    /// `to`; a failure is logged and returned.
    fn write_licence(&self, block: i64, to: i64) -> std::io::Result<()> {
        let Some(path) = &self.licence else {
            return Ok(());
        };
        replace(path, [format!("{block} {to}")]).map(drop).inspect_err(|e| {
            tracing::warn!(path = %path.display(), error = %e, "could not write the licence to mint inode numbers");
        })
    }

    /// Numbers `first..first + count` were reserved.
    pub fn refill(&self, first: i64, count: i64) {
        let mut b = self.lock();
        if !b.reserved_here {
            // Minting goes on from this block: a licence an earlier panfs
            // left has done its part. Kept at once, so that a panfs started
            // again while offline can mint even if this one never did.
            (b.mint_block, b.minted, b.licensed_to) = (Some(first), 0, 0);
            b.reserved_here = true;
            let _ = self.write_licence(first, 0);
        }
        if b.current.0 >= b.current.1 {
            b.current = (first, first + count);
        } else {
            b.spare = Some((first, first + count));
        }
    }
}

/// The block and the bound an earlier panfs wrote, if it wrote any.
fn read_licence(path: &Path) -> std::io::Result<Option<(i64, i64)>> {
    let Some(line) = read_lines(path)?.into_iter().next() else {
        return Ok(None);
    };
    let mut numbers = line.split(' ').map(str::parse::<i64>);
    match (numbers.next(), numbers.next(), numbers.next()) {
        (Some(Ok(block)), Some(Ok(to)), None) => Ok(Some((block, to))),
        _ => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("not a block and a bound: {line:?}"),
        )),
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
        assert!(!pool.reserved_here());
        assert!(pool.start_reserving());
        assert!(!pool.start_reserving(), "a second one waits for the first");
        pool.end_reserving(None);
        assert!(pool.start_reserving(), "a failed one lets the next go");
        pool.end_reserving(Some((100, 2)));
        assert!(pool.reserved_here());
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

    #[test]
    fn a_licence_to_mint_outlives_the_process_and_no_number_is_minted_twice() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("mint-licence");
        let first = InoPool::with_licence(&path);
        first.refill(100, 2);
        let used: Vec<i64> = (0..3).map(|_| first.mint().expect("mint")).collect();
        drop(first);
        // Started again with no server: it mints on from the same block.
        let again = InoPool::with_licence(&path);
        assert!(!again.reserved_here());
        let next = again.mint().expect("minted under the licence left behind");
        assert_eq!(minted_from(next), Some(100));
        assert!(!used.contains(&next) && next > used[2]);
        // A block reserved now licenses what is minted from here on.
        again.refill(500, 2);
        assert_eq!(minted_from(again.mint().expect("mint")), Some(500));
        drop(again);
        let third = InoPool::with_licence(&path);
        assert_eq!(minted_from(third.mint().expect("mint")), Some(500));
        std::fs::write(&path, "garbage\n").expect("write");
        assert_eq!(
            InoPool::with_licence(&path).mint(),
            None,
            "an unreadable licence is no licence"
        );
    }
}
