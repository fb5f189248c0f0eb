//! Passthrough handles: the kernel's rules (one backing file per inode, never
//! mixed with page-cache handles) are kept, and what the kernel writes
//! straight into the local file is seen by `stat` and sent at close.

use std::os::unix::fs::FileExt;
use std::sync::Arc;

use super::{OWNER, Rig, rig, written};
use crate::fs::{Io, PageCache, ROOT};

fn passthrough_rig(home: &std::path::Path) -> Rig {
    let r = rig(Arc::default(), home, false);
    r.fs.set_passthrough(true, "");
    r
}

fn backing(io: Io) -> std::fs::File {
    match io {
        Io::Passthrough(file) => file,
        Io::Cached(pages) => panic!("opened through panfs ({pages:?}), not with passthrough"),
    }
}

#[test]
fn what_the_kernel_writes_is_seen_by_stat_and_sent_at_close() {
    let home = tempfile::tempdir().expect("tmp");
    let r = passthrough_rig(home.path());
    let (attr, writer, io) =
        r.fs.create(ROOT, "f", 0o644, OWNER, libc::O_WRONLY)
            .expect("create");
    let local = backing(io);
    local
        .write_all_at(b"written by the kernel", 0)
        .expect("write");
    assert_eq!(r.fs.getattr(attr.ino).expect("stat").size, 21);
    // A reader of the same file shares the backing file.
    let (reader, io) = r.fs.open(attr.ino, libc::O_RDONLY).expect("open");
    let mut got = [0u8; 7];
    backing(io).read_exact_at(&mut got, 11).expect("read");
    assert_eq!(&got, b"the ker");
    r.fs.flush(writer).expect("close");
    r.fs.release(writer);
    r.fs.release(reader);
    assert_eq!(
        r.server.bytes(attr.ino as i64).as_deref(),
        Some(&b"written by the kernel"[..])
    );
}

#[test]
fn a_file_open_through_the_page_cache_gets_passthrough_only_after_those_close() {
    let home = tempfile::tempdir().expect("tmp");
    let r = passthrough_rig(home.path());
    r.fs.set_passthrough(false, "off for the first handle");
    // Large enough to be opened from the disk cache with passthrough.
    let mut data = b"through panfs".to_vec();
    data.resize(3 << 19, 7);
    let (ino, cached) = written(&r.fs, "f", &data);
    r.fs.set_passthrough(true, "");
    // The kernel refuses a passthrough open beside a page-cache one.
    let (second, io) = r.fs.open(ino, libc::O_RDONLY).expect("open");
    assert!(
        matches!(io, Io::Cached(PageCache::Drop)),
        "beside a cached handle"
    );
    r.fs.flush(cached).expect("close");
    r.fs.release(cached);
    r.fs.release(second);
    let (third, io) = r.fs.open(ino, libc::O_RDWR).expect("open");
    let local = backing(io);
    // A handle that cannot use the backing file goes direct, never cached.
    r.fs.set_passthrough(false, "off again");
    let (fourth, io) = r.fs.open(ino, libc::O_RDONLY).expect("open");
    assert!(matches!(io, Io::Cached(PageCache::Bypass)));
    local.write_all_at(b"T", 0).expect("write");
    data[0] = b'T';
    assert_eq!(
        &r.fs.read(fourth, 0, 13).expect("read")[..],
        b"Through panfs"
    );
    r.fs.release(fourth);
    r.fs.flush(third).expect("close");
    r.fs.release(third);
    assert!(
        r.server.bytes(ino as i64) == Some(data),
        "the server holds other bytes"
    );
}

#[test]
fn a_cached_whole_content_is_read_with_passthrough_and_goes_back_to_the_cache() {
    let home = tempfile::tempdir().expect("tmp");
    let r = passthrough_rig(home.path());
    let data = super::noise(3 << 19, 5);
    let (ino, fh) = written(&r.fs, "f", &data);
    r.fs.flush(fh).expect("close");
    r.fs.release(fh);
    for _ in 0..2 {
        let (reader, io) = r.fs.open(ino, libc::O_RDONLY).expect("open");
        let mut got = vec![0u8; data.len()];
        backing(io).read_exact_at(&mut got, 0).expect("read");
        assert!(got == data, "other bytes");
        r.fs.release(reader);
    }
    assert_eq!(
        r.fs.stats
            .bytes_fetched
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}
