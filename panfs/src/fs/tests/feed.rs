//! Following the change feed: what changes made elsewhere do to the replica
//! and the kernel, a remount with a saved replica, and life without the feed.

use std::sync::Arc;
use std::time::Duration;

use super::super::{PageCache, PanFs, ROOT};
use super::{
    KernelLog, OWNER, READ_VERSION, Rig, open_then_replaced_elsewhere, other_client_writes,
    read_whole_then_close, rig, wait_until, written,
};
use crate::remote::Remote;
use crate::remote::memory::MemoryRemote;

fn following(rig: &Rig) -> Arc<KernelLog> {
    let log = Arc::new(KernelLog::default());
    rig.fs.set_kernel(log.clone());
    rig.fs.start_follower();
    wait_until("following the feed", || rig.fs.following());
    log
}

/// What another client sends to make a node.
fn new_node(name: &str, kind: panproto::wire::NodeKind) -> panproto::wire::CreateRequest {
    panproto::wire::CreateRequest {
        name: name.into(),
        kind,
        mode: 0o755,
        uid: 0,
        gid: 0,
        target: None,
        rdev: 0,
    }
}

fn names(fs: &PanFs) -> Vec<String> {
    let fh = fs.opendir(ROOT).expect("opendir");
    let listing = fs.readdir(ROOT, fh, 2).expect("readdir");
    fs.releasedir(fh);
    listing.into_iter().map(|(_, name, _)| name).collect()
}

#[test]
fn changes_made_elsewhere_reach_the_replica_and_the_kernel() {
    let home = tempfile::tempdir().expect("home");
    let server = Arc::new(MemoryRemote::default());
    let rig = rig(server.clone(), home.path(), false);
    let log = following(&rig);
    let other = server.another_client();
    let rt = tokio::runtime::Runtime::new().expect("rt");
    let root = server.root();

    assert_eq!(
        rig.fs.lookup(ROOT, "a").map(|_| ()).unwrap_err().errno(),
        libc::ENOENT
    );
    let file = new_node("a", panproto::wire::NodeKind::File);
    let a = rt.block_on(other.create(root, &file)).expect("create");
    wait_until("the new name", || rig.fs.lookup(ROOT, "a").is_ok());
    assert!(
        log.0
            .lock()
            .expect("log")
            .contains(&format!("entry {ROOT}/a"))
    );

    // Known and current: asked again without a request.
    let before = rig.faults.requests();
    for _ in 0..10 {
        rig.fs.getattr(a.ino as u64).expect("getattr");
        rig.fs.lookup(ROOT, "a").expect("lookup");
        assert_eq!(
            rig.fs.lookup(ROOT, "nope").unwrap_err().errno(),
            libc::ENOENT
        );
    }
    assert_eq!(
        rig.faults.requests(),
        before + 1,
        "only the first miss asks"
    );

    let chmod = panproto::wire::SetAttrRequest {
        mode: Some(0o600),
        ..Default::default()
    };
    rt.block_on(other.set_attr(a.ino, &chmod)).expect("chmod");
    wait_until("the new mode", || {
        rig.fs.getattr(a.ino as u64).ok().map(|at| at.perm) == Some(0o600)
    });
    let rename = panproto::wire::RenameRequest {
        parent: root,
        name: "a".into(),
        new_parent: root,
        new_name: "b".into(),
        mode: panproto::wire::RenameMode::Replace,
    };
    rt.block_on(other.rename(&rename)).expect("rename");
    wait_until("the rename", || names(&rig.fs) == ["b"]);
    assert_eq!(rig.fs.lookup(ROOT, "a").unwrap_err().errno(), libc::ENOENT);
    other_client_writes(&other, a.ino, b"new bytes");
    wait_until("the new size", || {
        rig.fs.getattr(a.ino as u64).ok().map(|at| at.size) == Some(9)
    });
    assert!(
        log.0
            .lock()
            .expect("log")
            .contains(&format!("data {}", a.ino))
    );
    rt.block_on(other.remove(root, "b", false)).expect("remove");
    wait_until("the removal", || rig.fs.feed_status().applied == 5);
    assert_eq!(rig.fs.lookup(ROOT, "b").unwrap_err().errno(), libc::ENOENT);
    assert!(names(&rig.fs).is_empty());
    // This mount's own changes are not applied as if from elsewhere.
    let (_, fh) = written(&rig.fs, "mine", b"x");
    rig.fs.release(fh);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(rig.fs.feed_status().applied, 5);
}

#[test]
fn a_remount_reuses_the_replica_and_catches_up() {
    let home = tempfile::tempdir().expect("home");
    let server = Arc::new(MemoryRemote::default());
    let first = rig(server.clone(), home.path(), false);
    following(&first);
    for name in ["one", "two", "three"] {
        let (_, fh) = written(&first.fs, name, name.as_bytes());
        first.fs.release(fh);
    }
    rig_mkdir(&first.fs, "dir");
    assert_eq!(names(&first.fs).len(), 4);
    assert_eq!(first.fs.flush_all(), 0);
    drop(first);

    let second = rig(server.clone(), home.path(), false);
    following(&second);
    let before = second.faults.requests();
    let mut listed = names(&second.fs);
    listed.sort();
    assert_eq!(listed, ["dir", "one", "three", "two"]);
    for name in &listed {
        second.fs.lookup(ROOT, name).expect("lookup");
    }
    assert_eq!(
        second.faults.requests(),
        before,
        "answered from the saved replica"
    );

    // A change made while unmounted is caught up with at the next mount.
    let other = server.another_client();
    let rt = tokio::runtime::Runtime::new().expect("rt");
    assert_eq!(second.fs.flush_all(), 0);
    drop(second);
    rt.block_on(other.remove(server.root(), "two", false))
        .expect("remove");
    let third = rig(server.clone(), home.path(), false);
    following(&third);
    assert_eq!(
        third.fs.lookup(ROOT, "two").unwrap_err().errno(),
        libc::ENOENT
    );
    assert!(!names(&third.fs).contains(&"two".to_string()));

    // A cursor the server no longer covers: everything is asked for again.
    assert_eq!(third.fs.flush_all(), 0);
    drop(third);
    rt.block_on(other.remove(server.root(), "three", false))
        .expect("remove");
    server.expire_feed();
    let fourth = rig(server.clone(), home.path(), false);
    following(&fourth);
    assert_eq!(fourth.fs.feed_status().restarts, 1);
    assert_eq!(
        fourth.fs.lookup(ROOT, "three").unwrap_err().errno(),
        libc::ENOENT
    );
    let mut listed = names(&fourth.fs);
    listed.sort();
    assert_eq!(listed, ["dir", "one"]);
}

#[test]
fn without_the_feed_the_mount_falls_back_to_short_cache_times_and_says_why() {
    let home = tempfile::tempdir().expect("home");
    let server = Arc::new(MemoryRemote::default());
    let rig = rig(server.clone(), home.path(), false);
    following(&rig);
    assert_eq!(rig.fs.ttls().0, Duration::from_secs(300));
    rig.faults.set_offline(true);
    wait_until("the fallback", || !rig.fs.following());
    let status = rig.fs.feed_status();
    assert!(status.problem.is_some_and(|p| p.contains("offline")));
    assert_eq!(
        rig.fs.ttls(),
        (Duration::from_secs(1), Duration::from_secs(1))
    );
    // A change made meanwhile is applied once the feed is back.
    let other = server.another_client();
    let rt = tokio::runtime::Runtime::new().expect("rt");
    rt.block_on(other.put_content(server.root(), bytes::Bytes::new(), 1, None))
        .expect_err("the root is no file");
    let dir = new_node("made while offline", panproto::wire::NodeKind::Dir);
    rt.block_on(other.create(server.root(), &dir))
        .expect("create");
    rig.faults.set_offline(false);
    wait_until("following again", || rig.fs.following());
    assert_eq!(rig.fs.feed_status().applied, 1);
    assert!(rig.fs.lookup(ROOT, "made while offline").is_ok());
}

fn rig_mkdir(fs: &PanFs, name: &str) {
    fs.mkdir(ROOT, name, 0o755, OWNER).expect("mkdir");
}

/// The load test's short read: a mount held a file open, another client
/// replaced its content with a shorter version, and a lookup gave the kernel
/// the new size; the kernel then cut the open reader's version short. While
/// a handle is open, every answer gives the version the handles read.
#[test]
fn a_file_replaced_elsewhere_while_open_keeps_its_size_for_the_reader() {
    let home = tempfile::tempdir().expect("home");
    let server = Arc::new(MemoryRemote::default());
    let rig = rig(server.clone(), home.path(), false);
    let _log = following(&rig);
    let (ino, reader) = open_then_replaced_elsewhere(&rig);
    wait_until("the change to reach the mount", || {
        super::super::lock(&rig.fs.tables)
            .deferred
            .contains_key(&(ino as i64))
    });
    let size = |what: &str| {
        let by_name = rig.fs.lookup(ROOT, "a").expect("lookup").size;
        let fh = rig.fs.opendir(ROOT).expect("opendir");
        let listed = rig.fs.readdir(ROOT, fh, 2).expect("readdir");
        rig.fs.releasedir(fh);
        let in_listing = listed
            .iter()
            .find(|(_, name, _)| name == "a")
            .map(|(_, _, attr)| attr.size);
        assert_eq!(
            Some(by_name),
            in_listing,
            "{what}: lookup and listing agree"
        );
        by_name
    };
    assert_eq!(
        size("open") as usize,
        READ_VERSION.len(),
        "the open version"
    );
    read_whole_then_close(&rig.fs, reader);
    assert_eq!(size("closed"), b"shorter".len() as u64, "then the new one");
}

/// The kernel keeps a file's pages across opens only where every change made
/// elsewhere reaches it: local-first while the feed is followed. A file
/// changed elsewhere since the kernel last saw it bypasses them once.
#[test]
fn the_kernel_keeps_pages_only_while_the_feed_tells_it_of_changes() {
    let home = tempfile::tempdir().expect("home");
    let server = Arc::new(MemoryRemote::default());
    let open = |fs: &PanFs, ino| {
        let (fh, io) = fs.open(ino, libc::O_RDONLY).expect("open");
        fs.release(fh);
        let crate::fs::Io::Cached(pages) = io else {
            panic!("passthrough is off in these tests");
        };
        pages
    };
    let local = super::local::local_rig(server.clone(), &home.path().join("local"));
    let (ino, fh) = written(&local.fs, "a", b"first");
    local.fs.release(fh);
    local.fs.sync_all().expect("sync");
    assert_eq!(open(&local.fs, ino), PageCache::Drop, "not following yet");
    let _log = following(&local);
    assert_eq!(open(&local.fs, ino), PageCache::Keep);
    let rt = tokio::runtime::Runtime::new().expect("rt");
    let other = server.another_client();
    let second = bytes::Bytes::from_static(b"second, from elsewhere");
    rt.block_on(other.put_content(ino as i64, second, 1, None))
        .expect("the other client's write");
    wait_until("the change from elsewhere", || {
        open(&local.fs, ino) == PageCache::Bypass
    });
    assert_eq!(
        open(&local.fs, ino),
        PageCache::Keep,
        "once the kernel knows"
    );

    let strict = rig(server.clone(), &home.path().join("strict"), false);
    let _log = following(&strict);
    assert_eq!(
        open(&strict.fs, ino),
        PageCache::Drop,
        "strict: close-to-open"
    );
}

#[test]
fn a_directory_where_names_keep_missing_is_listed_once_and_then_answers_locally() {
    let home = tempfile::tempdir().expect("home");
    let server = Arc::new(MemoryRemote::default());
    let rig = rig(server.clone(), home.path(), false);
    following(&rig);
    let other = server.another_client();
    let rt = tokio::runtime::Runtime::new().expect("rt");
    // Made elsewhere: this mount has never listed it.
    let dir = rt
        .block_on(other.create(server.root(), &new_node("d", panproto::wire::NodeKind::Dir)))
        .expect("mkdir");
    rt.block_on(other.create(dir.ino, &new_node("there", panproto::wire::NodeKind::File)))
        .expect("create");
    let d = rig.fs.lookup(ROOT, "d").expect("lookup").ino;
    let missing = |name: &str| {
        let before = rig.faults.requests();
        let errno = rig.fs.lookup(d, name).map(|_| ()).unwrap_err().errno();
        assert_eq!(errno, libc::ENOENT, "{name}");
        rig.faults.requests() - before
    };
    let asked: Vec<u64> = (0..8).map(|i| missing(&format!("new{i}"))).collect();
    // The first misses ask the server (the fourth lists the directory too);
    // after that a new name is known missing without a request.
    assert!(asked[..4].iter().all(|&n| n >= 1), "{asked:?}");
    assert_eq!(asked[4..], [0, 0, 0, 0], "{asked:?}");
    // The listing holds what was there, and a name made elsewhere later
    // arrives through the feed.
    assert!(rig.fs.lookup(d, "there").is_ok());
    rt.block_on(other.create(dir.ino, &new_node("later", panproto::wire::NodeKind::File)))
        .expect("create");
    wait_until("the name made elsewhere", || {
        rig.fs.lookup(d, "later").is_ok()
    });
}
