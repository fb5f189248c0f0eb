//! `copy_file_range`: a whole file onto an empty one is copied on the server
//! (no byte sent), anything else here, and the bytes are right either way.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::local::local_rig;
use super::{OWNER, Rig, noise, rig, written};
use crate::fs::ROOT;

const SIZE: usize = 3 << 20;

/// A synced source of `SIZE` bytes and an empty destination, both open:
/// (source fh, destination ino, destination fh, the source's bytes).
fn source_and_empty_copy(r: &Rig) -> (u64, i64, u64, Vec<u8>) {
    let data = noise(SIZE, 7);
    let (_, src) = written(&r.fs, "src", &data);
    r.fs.fsync(src).expect("fsync");
    let (attr, dst, _) = r.fs.create(ROOT, "dst", 0o644, OWNER, 0).expect("create");
    (src, attr.ino as i64, dst, data)
}

fn read_all(r: &Rig, fh: u64) -> Vec<u8> {
    r.fs.read(fh, 0, (SIZE * 2) as u32).expect("read").to_vec()
}

fn whole_file_is_copied_on_the_server(r: &Rig) {
    let (src, dst_ino, dst, data) = source_and_empty_copy(r);
    let sent = r.fs.stats.bytes_sent.load(Ordering::Relaxed);
    let copied =
        r.fs.copy_range(src, 0, dst, 0, u64::MAX >> 1)
            .expect("copy");
    assert_eq!(copied, SIZE as u64);
    assert!(read_all(r, dst) == data, "the copy reads other bytes");
    r.fs.fsync(dst).expect("fsync");
    assert!(
        r.server.bytes(dst_ino) == Some(data),
        "the server holds other bytes"
    );
    assert_eq!(
        r.fs.stats.bytes_sent.load(Ordering::Relaxed),
        sent,
        "bytes sent"
    );
    let on_server = r.fs.stats.bytes_copied_on_server.load(Ordering::Relaxed);
    assert_eq!(on_server, SIZE as u64);
}

#[test]
fn a_whole_file_is_copied_on_the_server_in_strict_mode() {
    let home = tempfile::tempdir().expect("tmp");
    whole_file_is_copied_on_the_server(&rig(Arc::default(), home.path(), false));
}

/// Local-first, the destination is new here and reaches the server first.
#[test]
fn a_whole_file_is_copied_on_the_server_in_local_first_mode() {
    let home = tempfile::tempdir().expect("tmp");
    whole_file_is_copied_on_the_server(&local_rig(Arc::default(), home.path()));
}

/// A range, and a copy while the server is away, are copied here (a piece
/// per call) and sent as any write.
#[test]
fn ranges_and_offline_copies_are_made_here() {
    let home = tempfile::tempdir().expect("tmp");
    let r = local_rig(Arc::default(), home.path());
    let (src, dst_ino, dst, data) = source_and_empty_copy(&r);
    let copied = r.fs.copy_range(src, 1000, dst, 10, 5000).expect("range");
    assert_eq!(copied, 5000);
    let mut want = vec![0u8; 10];
    want.extend_from_slice(&data[1000..6000]);
    assert!(read_all(&r, dst) == want, "the range reads other bytes");

    r.faults.set_offline(true);
    let (attr, offline, _) =
        r.fs.create(ROOT, "offline", 0o644, OWNER, 0)
            .expect("create");
    let mut at = 0;
    while at < SIZE as u64 {
        let n =
            r.fs.copy_range(src, at, offline, at, u64::MAX >> 1)
                .expect("copy");
        assert!(n > 0, "a copy offline stopped at {at}");
        at += n;
    }
    assert!(
        read_all(&r, offline) == data,
        "the offline copy reads other bytes"
    );
    assert_eq!(r.fs.stats.bytes_copied_on_server.load(Ordering::Relaxed), 0);
    r.faults.set_offline(false);
    r.fs.release(offline);
    r.fs.release(dst);
    r.fs.sync_all().expect("sync");
    assert!(
        r.server.bytes(attr.ino as i64) == Some(data),
        "the offline copy on the server"
    );
    assert!(
        r.server.bytes(dst_ino) == Some(want),
        "the range on the server"
    );
}
