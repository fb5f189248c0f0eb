//! The file-system logic against the in-memory server, with faults injected:
//! plain `cargo test`, no root, no FUSE, no panserver. The write path here; the
//! change feed and the replica in `feed.rs`.

mod copy;
mod feed;
mod fsync;
mod inos;
mod local;
mod passthrough;
mod read;
mod stream;

use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::write::SendWhen;
use super::{FsOptions, Owner, PanFs, ROOT, lock};
use crate::remote::Remote;
use crate::remote::faults::FaultyRemote;
use crate::remote::memory::MemoryRemote;

const OWNER: Owner = Owner { uid: 0, gid: 0 };
/// How long a test waits for something that should happen at once.
const PATIENCE: Duration = Duration::from_secs(10);

struct Rig {
    fs: Arc<PanFs>,
    server: Arc<MemoryRemote>,
    faults: Arc<FaultyRemote>,
    // Dropped last: the file system's threads run on it.
    _rt: tokio::runtime::Runtime,
}

fn options(cache: &Path, state: &Path, writeback: bool) -> FsOptions {
    FsOptions {
        attr_ttl: Duration::from_secs(300),
        entry_ttl: Duration::from_secs(300),
        fallback_ttl: Duration::from_secs(1),
        writeback,
        local_first: false,
        sync_timeout: Duration::from_secs(2),
        cache_dir: cache.to_path_buf(),
        state_dir: state.to_path_buf(),
        memory_cache_bytes: 8 << 20,
        disk_cache_bytes: 64 << 20,
        readahead_max: 2 << 20,
        passthrough: true,
        uid: 0,
        gid: 0,
    }
}

/// A panfs over `server`, with its cache and state under `home`.
fn rig(server: Arc<MemoryRemote>, home: &Path, writeback: bool) -> Rig {
    let opts = options(&home.join("cache"), &home.join("state"), writeback);
    rig_with(server, opts)
}

fn rig_with(server: Arc<MemoryRemote>, opts: FsOptions) -> Rig {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let faults = Arc::new(FaultyRemote::new(server.clone()));
    let fs = PanFs::new(rt.handle().clone(), faults.clone(), server.root(), opts).expect("fs");
    Rig {
        fs,
        server,
        faults,
        _rt: rt,
    }
}

/// Creates `name` in the root with `data` written, still open: (ino, fh).
fn written(fs: &PanFs, name: &str, data: &[u8]) -> (u64, u64) {
    let (attr, fh, _) = fs.create(ROOT, name, 0o644, OWNER, 0).expect("create");
    assert_eq!(fs.write(fh, 0, data).expect("write") as usize, data.len());
    (attr.ino, fh)
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < PATIENCE, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Another client stores `data` as the file's content, unconditionally.
fn other_client_writes(server: &MemoryRemote, ino: i64, data: &'static [u8]) {
    let rt = tokio::runtime::Runtime::new().expect("rt");
    rt.block_on(server.put_content(ino, bytes::Bytes::from_static(data), 1, None))
        .expect("the other client's write");
}

/// The conflict copies of `stem.ext` in the root, and every name there (for messages).
fn conflict_copies(server: &MemoryRemote, stem: &str, ext: &str) -> (Vec<i64>, Vec<String>) {
    let rt = tokio::runtime::Runtime::new().expect("rt");
    let listing = rt.block_on(server.list(server.root())).expect("list");
    let prefix = format!("{stem} (conflict on ");
    let suffix = format!("){ext}");
    let copies = listing
        .iter()
        .filter(|e| e.name.starts_with(&prefix) && e.name.ends_with(&suffix))
        .map(|e| e.node.ino)
        .collect();
    (copies, listing.into_iter().map(|e| e.name).collect())
}

fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn writes_reach_the_server_and_read_back() {
    let home = tempfile::tempdir().expect("tmp");
    let r = rig(Arc::default(), home.path(), false);
    // Over the one-request limit, so it goes up as chunks.
    let data = noise(3 << 20, 1);
    let (ino, fh) = written(&r.fs, "big.bin", &data);
    r.fs.fsync(fh).expect("fsync");
    assert!(
        r.server.bytes(ino as i64) == Some(data.clone()),
        "the server holds other bytes"
    );
    // An edit of a few bytes in the middle sends about one chunk, not the file.
    r.fs.write(fh, 1 << 20, b"edit").expect("write");
    let before =
        r.fs.stats
            .bytes_sent
            .load(std::sync::atomic::Ordering::Relaxed);
    r.fs.flush(fh).expect("close");
    r.fs.release(fh);
    let sent =
        r.fs.stats
            .bytes_sent
            .load(std::sync::atomic::Ordering::Relaxed)
            - before;
    assert!(sent < (2 << 20), "a 4-byte edit sent {sent} bytes");
    let mut edited = data.clone();
    edited[1 << 20..(1 << 20) + 4].copy_from_slice(b"edit");
    assert!(
        r.server.bytes(ino as i64) == Some(edited.clone()),
        "the edit is not on the server"
    );
    let (fh, _) = r.fs.open(ino, libc::O_RDONLY).expect("open");
    assert_eq!(
        &r.fs.read(fh, (1 << 20) - 2, 8).expect("read")[..],
        &edited[(1 << 20) - 2..(1 << 20) + 6]
    );
    r.fs.release(fh);
}

/// A server that lost an upload's session (the embedded profile keeps them in
/// memory, so a restart loses them) answered `not_found`, which panfs took for
/// "the file was removed": fsync returned success and the data was dropped.
#[test]
fn a_lost_upload_session_is_opened_again_and_never_drops_the_data() {
    let home = tempfile::tempdir().expect("tmp");
    let r = rig(Arc::default(), home.path(), false);
    let data = noise(3 << 20, 5);
    let (ino, fh) = written(&r.fs, "big.bin", &data);
    r.faults.lose_sessions(1);
    r.fs.fsync(fh).expect("fsync after one lost session");
    assert!(r.server.bytes(ino as i64) == Some(data.clone()));
    // Lost every time: fsync fails, and the writes wait to be sent again.
    r.fs.write(fh, 0, b"second").expect("write");
    r.faults.lose_sessions(100);
    let e = r.fs.fsync(fh).expect_err("fsync with every session lost");
    assert_eq!(e.errno(), libc::EIO);
    r.faults.lose_sessions(0);
    r.fs.fsync(fh).expect("fsync once sessions last");
    let mut second = data;
    second[..6].copy_from_slice(b"second");
    assert!(r.server.bytes(ino as i64) == Some(second));
    r.fs.release(fh);
}

/// Latent bug 2: `sync_file` held the file's lock across the upload, and
/// `getattr` takes it, so `stat` or `ls -l` waited for the network.
#[test]
fn stat_read_and_write_do_not_wait_for_an_upload() {
    let home = tempfile::tempdir().expect("tmp");
    let r = rig(Arc::default(), home.path(), false);
    let (ino, fh) = written(&r.fs, "slow.bin", b"first part|");
    r.faults.hold_uploads(true);
    let fs = r.fs.clone();
    let uploader = std::thread::spawn(move || fs.fsync(fh));
    wait_until("the upload to start", || {
        r.faults.upload_attempts(ino as i64) == 1
    });

    let (tx, rx) = mpsc::channel();
    let fs = r.fs.clone();
    std::thread::spawn(move || {
        let size = fs.getattr(ino).map(|a| a.size);
        let read = fs.read(fh, 0, 5).map(|b| b.to_vec());
        let wrote = fs.write(fh, 11, b"second part");
        let _ = tx.send((size, read, wrote));
    });
    let (size, read, wrote) = rx
        .recv_timeout(PATIENCE)
        .expect("stat, read and write must answer while the upload is held");
    assert_eq!(size.expect("getattr"), 11);
    assert_eq!(read.expect("read"), b"first");
    assert_eq!(wrote.expect("write"), 11);

    r.faults.hold_uploads(false);
    uploader.join().expect("join").expect("fsync");
    // The write made during the upload was not part of it: it is still unsent.
    assert_eq!(r.fs.pending().0, 1);
    r.fs.fsync(fh).expect("second fsync");
    assert_eq!(
        r.server.bytes(ino as i64).as_deref(),
        Some(&b"first part|second part"[..])
    );
    assert_eq!(r.fs.pending(), (0, 0));
    r.fs.release(fh);
}

/// Latent bug 3: one backoff for the whole write-back queue, so a file that kept
/// failing put every other file behind its growing delay.
#[test]
fn a_failing_file_does_not_hold_back_the_others() {
    let home = tempfile::tempdir().expect("tmp");
    let r = rig(Arc::default(), home.path(), true);
    r.fs.start_writeback();
    let (bad, fh) = written(&r.fs, "bad.bin", b"never arrives");
    r.faults.fail_uploads(bad as i64, true);
    r.fs.release(fh);
    // After its fifth failure the file waits 3.2 s before its next try.
    wait_until("five failed tries", || {
        r.faults.upload_attempts(bad as i64) >= 5
    });

    let (good, fh) = written(&r.fs, "good.bin", b"arrives at once");
    r.fs.release(fh);
    let start = Instant::now();
    while r.server.bytes(good as i64).is_none() {
        assert!(
            start.elapsed() < Duration::from_millis(2500),
            "the good file waited behind the failing one's backoff"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        r.server.bytes(good as i64).as_deref(),
        Some(&b"arrives at once"[..])
    );
    // And the failing one goes once its uploads work again.
    r.faults.fail_uploads(bad as i64, false);
    wait_until("the failing file to arrive", || {
        r.server.bytes(bad as i64).is_some()
    });
}

/// Latent bug 4, first part: unsent writes lived in the cache directory, which
/// is safe to delete by convention; now they live in the state directory.
#[test]
fn unsent_writes_survive_losing_the_cache() {
    let home = tempfile::tempdir().expect("tmp");
    let server = Arc::new(MemoryRemote::default());
    let ino = {
        let r = rig(server.clone(), home.path(), true);
        let (ino, fh) = written(&r.fs, "unsent.txt", b"written before the crash");
        r.fs.release(fh);
        // The write-back worker never ran: the process "died" with this unsent.
        ino
    };
    assert!(server.bytes(ino as i64).is_none());
    std::fs::remove_dir_all(home.path().join("cache")).expect("delete the cache");

    let r = rig(server.clone(), home.path(), true);
    assert_eq!(r.fs.recover_journal(), 1);
    assert_eq!(r.fs.flush_all(), 0);
    assert_eq!(
        server.bytes(ino as i64).as_deref(),
        Some(&b"written before the crash"[..])
    );
}

/// What the kernel was told to forget.
#[derive(Default)]
pub(super) struct KernelLog(pub(super) std::sync::Mutex<Vec<String>>);

impl super::KernelCache for KernelLog {
    fn forget_entry(&self, parent: u64, name: &str) {
        self.0
            .lock()
            .expect("log")
            .push(format!("entry {parent}/{name}"));
    }
    fn forget_attrs(&self, ino: u64) {
        self.0.lock().expect("log").push(format!("attrs {ino}"));
    }
    fn forget_data(&self, ino: u64) {
        self.0.lock().expect("log").push(format!("data {ino}"));
    }
}

/// A version sent in the background meets a newer one: the file shows the
/// other version, and the kernel forgets the pages and size it held of this
/// mount's (its size would cut reads of the other version short).
#[test]
fn a_conflict_met_with_no_handle_open_reaches_the_kernel() {
    let home = tempfile::tempdir().expect("tmp");
    let server = Arc::new(MemoryRemote::default());
    let r = rig(server.clone(), home.path(), true);
    let log = Arc::new(KernelLog::default());
    r.fs.set_kernel(log.clone());
    let (ino, fh) = written(&r.fs, "short.txt", b"ours");
    r.fs.release(fh);
    other_client_writes(&server, ino as i64, b"their longer version");
    assert_eq!(r.fs.flush_all(), 0);
    assert_eq!(
        server.bytes(ino as i64).as_deref(),
        Some(&b"their longer version"[..])
    );
    let forgotten = format!("data {ino}");
    wait_until("the kernel told", || {
        log.0.lock().expect("log").contains(&forgotten)
    });
}

/// The load test's "read: 61440 bytes that no client wrote": a file queued for
/// sending in the background was snapshot while a program was rewriting it,
/// and another client read that half. A background send now waits for the
/// file's last writer to close, which queues it again (readers may stay).
#[test]
fn a_background_send_never_takes_a_file_half_rewritten() {
    let home = tempfile::tempdir().expect("tmp");
    let server = Arc::new(MemoryRemote::default());
    let r = rig(server.clone(), home.path(), true);
    let (ino, fh) = written(&r.fs, "f", b"first version");
    r.fs.release(fh);
    let before = server.bytes(ino as i64);
    let (writer, _) = r.fs.open(ino, libc::O_RDWR).expect("open to write");
    let (reader, _) = r.fs.open(ino, libc::O_RDONLY).expect("open to read");
    r.fs.write(writer, 0, b"HALF").expect("write");
    assert!(r.fs.write_back(ino as i64, SendWhen::NoWriter));
    assert_eq!(server.bytes(ino as i64), before, "a half rewrite was sent");
    r.fs.write(writer, 4, b"-second").expect("write");
    let queue = lock(&r.fs.writeback_rx).take().expect("the worker's queue");
    while queue.try_recv().is_ok() {}
    r.fs.release(writer);
    assert_eq!(
        queue.try_recv().ok(),
        Some(ino as i64),
        "the last writer's close queues it"
    );
    assert!(r.fs.write_back(ino as i64, SendWhen::NoWriter));
    assert_eq!(
        server.bytes(ino as i64).as_deref(),
        Some(&b"HALF-secondon"[..])
    );
    r.fs.release(reader);
}

/// Latent bug 4, second part: a replayed journal entry committed with no base,
/// overwriting what another client stored meanwhile. Now the other version
/// stays, and the local one is kept beside it as a conflict copy.
#[test]
fn a_replayed_write_never_overwrites_a_newer_version() {
    let home = tempfile::tempdir().expect("tmp");
    let server = Arc::new(MemoryRemote::default());
    let ino = {
        let r = rig(server.clone(), home.path(), true);
        let (ino, fh) = written(&r.fs, "notes.txt", b"version 1");
        r.fs.fsync(fh).expect("fsync");
        r.fs.write(fh, 0, b"VERSION 2 (local)").expect("write");
        r.fs.release(fh);
        ino as i64
    };
    // Meanwhile another client stores its own version.
    other_client_writes(&server, ino, b"their version");

    let r = rig(server.clone(), home.path(), true);
    assert_eq!(r.fs.recover_journal(), 1);
    assert_eq!(r.fs.flush_all(), 0);
    assert_eq!(server.bytes(ino).as_deref(), Some(&b"their version"[..]));
    let (copies, names) = conflict_copies(&server, "notes", ".txt");
    assert_eq!(copies.len(), 1, "{names:?}");
    assert_eq!(
        server.bytes(copies[0]).as_deref(),
        Some(&b"VERSION 2 (local)"[..])
    );
    assert_eq!(r.fs.pending(), (0, 0), "nothing is left to send");
}

/// Several sends of one file meet the same conflict (an fsync, a close and
/// the write-back worker at once): one conflict copy, not one per send.
#[test]
fn sends_that_meet_one_conflict_make_one_copy() {
    let home = tempfile::tempdir().expect("tmp");
    let r = rig(Arc::default(), home.path(), false);
    let (ino, fh) = written(&r.fs, "todo.txt", b"first");
    r.fs.fsync(fh).expect("fsync");
    r.fs.write(fh, 0, b"ours!").expect("write");
    other_client_writes(&r.server, ino as i64, b"theirs");
    r.faults.hold_uploads(true);
    std::thread::scope(|s| {
        let first = s.spawn(|| r.fs.fsync(fh));
        wait_until("the first send to start", || {
            r.faults.upload_attempts(ino as i64) >= 2
        });
        let others: Vec<_> = (0..4).map(|_| s.spawn(|| r.fs.fsync(fh))).collect();
        std::thread::sleep(Duration::from_millis(50));
        r.faults.hold_uploads(false);
        for sent in std::iter::once(first).chain(others) {
            sent.join().expect("thread").expect("fsync succeeds");
        }
    });
    r.fs.release(fh);
    let (copies, names) = conflict_copies(&r.server, "todo", ".txt");
    assert_eq!(copies.len(), 1, "{names:?}");
    assert_eq!(r.server.bytes(copies[0]).as_deref(), Some(&b"ours!"[..]));
    assert_eq!(r.server.bytes(ino as i64).as_deref(), Some(&b"theirs"[..]));
}

#[test]
fn a_close_after_another_client_wrote_keeps_both_versions() {
    let home = tempfile::tempdir().expect("tmp");
    let r = rig(Arc::default(), home.path(), false);
    let (ino, fh) = written(&r.fs, "plan.md", b"ours, first");
    r.fs.flush(fh).expect("close");
    r.fs.release(fh);
    let (fh, _) = r.fs.open(ino, libc::O_WRONLY).expect("open");
    r.fs.write(fh, 0, b"ours, second").expect("write");
    other_client_writes(&r.server, ino as i64, b"theirs");
    r.fs.flush(fh).expect("the close succeeds: nothing is lost");
    r.fs.release(fh);
    assert_eq!(r.server.bytes(ino as i64).as_deref(), Some(&b"theirs"[..]));
    let (copies, names) = conflict_copies(&r.server, "plan", ".md");
    let copy = *copies.first().expect("a conflict copy beside the file");
    assert_eq!(copies.len(), 1, "{names:?}");
    assert_eq!(r.server.bytes(copy).as_deref(), Some(&b"ours, second"[..]));
    // The file now reads as the other client's version.
    let (fh, _) = r.fs.open(ino, libc::O_RDONLY).expect("open");
    assert_eq!(&r.fs.read(fh, 0, 64).expect("read")[..], b"theirs");
    r.fs.release(fh);
}

#[test]
fn offline_the_cached_tree_reads_and_writes_wait_in_the_journal() {
    let home = tempfile::tempdir().expect("tmp");
    let r = rig(Arc::default(), home.path(), false);
    let (ino, fh) = written(&r.fs, "draft.txt", b"online");
    r.fs.fsync(fh).expect("fsync");
    r.faults.set_offline(true);
    let attr =
        r.fs.lookup(ROOT, "draft.txt")
            .expect("a cached name answers offline");
    assert_eq!((attr.ino, attr.size), (ino, 6));
    assert_eq!(r.fs.getattr(ino).expect("cached attributes").size, 6);
    assert_eq!(&r.fs.read(fh, 0, 6).expect("local read")[..], b"online");
    r.fs.write(fh, 6, b" and offline").expect("write");
    let err = r.fs.fsync(fh).expect_err("fsync cannot reach the server");
    assert_eq!(err.errno(), libc::EIO);
    assert_eq!(r.fs.pending(), (1, 12), "the write waits, journaled");
    let uncached = r.fs.lookup(ROOT, "never-seen").expect_err("nothing cached");
    assert_eq!(uncached.errno(), libc::EIO);

    r.faults.set_offline(false);
    r.fs.fsync(fh).expect("fsync once back");
    assert_eq!(
        r.server.bytes(ino as i64).as_deref(),
        Some(&b"online and offline"[..])
    );
    r.fs.release(fh);
}

#[test]
fn a_file_removed_while_open_lives_until_its_last_close() {
    let home = tempfile::tempdir().expect("tmp");
    let r = rig(Arc::default(), home.path(), false);
    let (ino, fh) = written(&r.fs, "tmp.bin", b"scratch");
    r.fs.unlink(ROOT, "tmp.bin", false).expect("unlink");
    assert_eq!(
        r.fs.lookup(ROOT, "tmp.bin").expect_err("gone").errno(),
        libc::ENOENT
    );
    // The open handle still reads and writes its bytes.
    r.fs.write(fh, 7, b" space").expect("write");
    assert_eq!(&r.fs.read(fh, 0, 64).expect("read")[..], b"scratch space");
    r.fs.fsync(fh)
        .expect("fsync of an unlinked file is a no-op");
    r.fs.release(fh);
    assert_eq!(r.fs.pending(), (0, 0));
    assert!(r.server.bytes(ino as i64).is_none());
    let journal = home.path().join("state/journal");
    let left: Vec<_> = std::fs::read_dir(&journal)
        .expect("journal dir")
        .flatten()
        .map(|e| e.file_name())
        .filter(|name| name != "copies.log" && name != "spare")
        .collect();
    assert!(
        left.is_empty(),
        "the working copy goes at the last close: {left:?}"
    );
    let records = crate::cache::records::CopyRecords::open(&journal).expect("records");
    assert!(records.inodes().is_empty(), "and so does its record");
}

#[test]
fn errors_from_the_server_become_the_errno_a_local_disk_gives() {
    let home = tempfile::tempdir().expect("tmp");
    let r = rig(Arc::default(), home.path(), false);
    r.fs.mkdir(ROOT, "d", 0o755, OWNER).expect("mkdir");
    let errno = |e: super::FsError| e.errno();
    assert_eq!(
        r.fs.mkdir(ROOT, "d", 0o755, OWNER).map_err(errno).err(),
        Some(libc::EEXIST)
    );
    assert_eq!(
        r.fs.unlink(ROOT, "d", false).map_err(errno),
        Err(libc::EISDIR)
    );
    assert_eq!(
        r.fs.lookup(ROOT, &"n".repeat(256)).map_err(errno).err(),
        Some(libc::ENAMETOOLONG)
    );
    let (_, fh) = written(&r.fs, "f", b"x");
    r.fs.release(fh);
    assert_eq!(
        r.fs.unlink(ROOT, "f", true).map_err(errno),
        Err(libc::ENOTDIR)
    );
    assert_eq!(
        r.fs.getxattr(ROOT, "user.none").map_err(errno).err(),
        Some(libc::ENODATA)
    );
}

/// The load test's other short read: a stat fetched a version newer than the
/// one an open handle reads (before any feed said so), and the kernel cut
/// the handle's reads at the new size. The open version's size stands until
/// the last close.
#[test]
fn a_stat_that_meets_a_newer_version_keeps_the_open_readers_size() {
    let home = tempfile::tempdir().expect("home");
    let server = Arc::new(MemoryRemote::default());
    let mut opts = options(
        &home.path().join("cache"),
        &home.path().join("state"),
        false,
    );
    opts.fallback_ttl = Duration::ZERO;
    let r = rig_with(server.clone(), opts);
    let (ino, reader) = open_then_replaced_elsewhere(&r);
    assert_eq!(
        r.fs.getattr(ino).expect("stat").size as usize,
        READ_VERSION.len()
    );
    read_whole_then_close(&r.fs, reader);
    assert_eq!(r.fs.getattr(ino).expect("stat").size, 7, "then the new one");
}

/// What a reader opened in the tests of a file replaced while open.
const READ_VERSION: &[u8] = b"the version a reader opened, longer than the next one";

/// "a" in the root, sent, open for reading (ino, fh); then another client
/// writes a shorter version ("shorter").
fn open_then_replaced_elsewhere(r: &Rig) -> (u64, u64) {
    let (ino, fh) = written(&r.fs, "a", READ_VERSION);
    r.fs.release(fh);
    assert_eq!(r.fs.flush_all(), 0);
    let (reader, _) = r.fs.open(ino, libc::O_RDONLY).expect("open");
    other_client_writes(&r.server.another_client(), ino as i64, b"shorter");
    (ino, reader)
}

/// The reader reads its version whole, and closes.
fn read_whole_then_close(fs: &PanFs, reader: u64) {
    let read = fs.read(reader, 0, 4096).expect("read");
    assert_eq!(
        &read[..],
        READ_VERSION,
        "the reader reads its version whole"
    );
    fs.release(reader);
}
