//! The read path from the server, with this mount's caches empty: a random
//! read fetches one small block, a sequential reader's readahead fetches each
//! block once, and the bytes are the file's.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{Rig, noise, rig, written};
use crate::cache::blocks::BLOCK;
use crate::fs::ROOT;
use crate::remote::memory::MemoryRemote;

const SIZE: usize = 8 << 20;

/// A file of `SIZE` bytes stored by another mount, and a mount with empty
/// caches that opens it: (that mount, its handle, the bytes).
fn stored_elsewhere(home: &std::path::Path) -> (Rig, u64, Vec<u8>) {
    let server = Arc::new(MemoryRemote::default());
    let data = noise(SIZE, 3);
    let writer = rig(server.clone(), &home.join("writer"), false);
    let (_, fh) = written(&writer.fs, "f", &data);
    writer.fs.fsync(fh).expect("fsync");
    writer.fs.release(fh);
    let reader = rig(server, &home.join("reader"), false);
    let ino = reader.fs.lookup(ROOT, "f").expect("lookup").ino;
    let (fh, _) = reader.fs.open(ino, libc::O_RDONLY).expect("open");
    (reader, fh, data)
}

fn fetched(r: &Rig) -> u64 {
    r.fs.stats.bytes_fetched.load(Ordering::Relaxed)
}

#[test]
fn a_random_read_fetches_one_small_block() {
    let home = tempfile::tempdir().expect("tmp");
    let (r, fh, data) = stored_elsewhere(home.path());
    let at = (5 << 20) + 100;
    let got = r.fs.read(fh, at, 4096).expect("read");
    assert!(
        got[..] == data[at as usize..at as usize + 4096],
        "other bytes"
    );
    assert_eq!(
        fetched(&r),
        BLOCK,
        "a 4 KiB random read fetched more than its block"
    );
    let at = (2 << 20) + 7;
    r.fs.read(fh, at, 4096).expect("read");
    assert_eq!(fetched(&r), 2 * BLOCK, "a second jump fetched ahead");
}

#[test]
fn a_sequential_reader_gets_every_block_once() {
    let home = tempfile::tempdir().expect("tmp");
    let (r, fh, data) = stored_elsewhere(home.path());
    let mut read = Vec::with_capacity(SIZE);
    loop {
        let piece = r.fs.read(fh, read.len() as u64, 128 << 10).expect("read");
        if piece.is_empty() {
            break;
        }
        read.extend_from_slice(&piece);
    }
    assert!(read == data, "a sequential read gave other bytes");
    assert_eq!(fetched(&r), SIZE as u64, "blocks fetched more than once");
}

/// A file written here is read back from local disk: readahead never asks
/// the server for what the disk cache holds.
#[test]
fn a_file_written_here_is_read_back_without_fetching() {
    let home = tempfile::tempdir().expect("tmp");
    let r = rig(Arc::default(), home.path(), false);
    let data = noise(SIZE, 5);
    let (ino, fh) = written(&r.fs, "f", &data);
    r.fs.fsync(fh).expect("fsync");
    r.fs.release(fh);
    let (fh, _) = r.fs.open(ino, libc::O_RDONLY).expect("open");
    let mut read = Vec::with_capacity(SIZE);
    while read.len() < SIZE {
        let piece = r.fs.read(fh, read.len() as u64, 128 << 10).expect("read");
        read.extend_from_slice(&piece);
    }
    assert!(read == data, "other bytes");
    assert_eq!(
        fetched(&r),
        0,
        "bytes fetched for a file held on local disk"
    );
}

/// Reads that span several blocks, as the kernel's 1 MiB reads do, joined in
/// a recycled buffer or (larger than one) in one of their own: the file's
/// bytes either way, over and over as the buffers come back.
#[test]
fn reads_across_blocks_are_the_files_bytes() {
    let home = tempfile::tempdir().expect("tmp");
    let (r, fh, data) = stored_elsewhere(home.path());
    for round in 0..3u64 {
        for (at, len) in [
            (BLOCK / 2 + round, 1 << 20),
            (3 * BLOCK - 1, (1 << 20) - 4096),
            (round * 4096, (2 << 20) + 5),
            (SIZE as u64 - BLOCK - 9, 1 << 20),
        ] {
            let got = r.fs.read(fh, at, len as u32).expect("read");
            let end = (at as usize + len).min(SIZE);
            assert!(got[..] == data[at as usize..end], "read of {len} at {at}");
        }
    }
}
