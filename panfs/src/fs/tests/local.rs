//! Local-first mode: changes apply at once, reach the server through the
//! syncer in batches, survive a panfs that stops without sending them, and
//! `fsync` waits for the server (EIO after the timeout while it is away).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use panproto::wire::RenameMode;

use super::{OWNER, Rig, noise, options, rig_with, wait_until, written};
use crate::fs::{PanFs, ROOT, lock};
use crate::remote::Remote;
use crate::remote::memory::MemoryRemote;

pub(super) fn local_rig(server: Arc<MemoryRemote>, home: &std::path::Path) -> Rig {
    let opts = options(&home.join("cache"), &home.join("state"), true);
    local_rig_with(server, opts)
}

fn local_rig_with(server: Arc<MemoryRemote>, mut opts: crate::fs::FsOptions) -> Rig {
    opts.local_first = true;
    let rig = rig_with(server, opts);
    rig.fs.recover_journal();
    rig.fs.start_syncer();
    // The root was listed once, as a user who looks at the drive does.
    let dir = rig.fs.opendir(ROOT).expect("opendir");
    rig.fs.releasedir(dir);
    rig
}

/// A local-first rig that reserved its inode numbers and synced once, then
/// lost the server.
fn offline_after_warming_up() -> (tempfile::TempDir, Arc<MemoryRemote>, Rig) {
    let home = tempfile::tempdir().expect("home");
    let server = Arc::new(MemoryRemote::default());
    let rig = warm_then_offline(&server, home.path());
    (home, server, rig)
}

pub(super) fn warm_then_offline(server: &Arc<MemoryRemote>, home: &std::path::Path) -> Rig {
    let rig = local_rig(server.clone(), home);
    rig.fs.mkdir(ROOT, "warm", 0o755, OWNER).expect("mkdir");
    rig.fs.sync_all().expect("sync");
    rig.faults.set_offline(true);
    rig
}

/// The names under `dir` on the server, sorted.
pub(super) fn server_names(server: &MemoryRemote, dir: i64) -> Vec<String> {
    let rt = tokio::runtime::Runtime::new().expect("rt");
    let mut names: Vec<String> = rt
        .block_on(server.list(dir))
        .expect("list")
        .into_iter()
        .map(|e| e.name)
        .collect();
    names.sort();
    names
}

/// A small tree: d/{a,b}, d/a renamed to d/c, d/b removed, f with bytes.
fn make_tree(fs: &PanFs) -> u64 {
    let d = fs.mkdir(ROOT, "d", 0o755, OWNER).expect("mkdir").ino;
    for name in ["a", "b"] {
        let (_, fh, _) = fs.create(d, name, 0o644, OWNER, 0).expect("create");
        fs.release(fh);
    }
    fs.rename(d, "a", d, "c", RenameMode::Replace)
        .expect("rename");
    fs.unlink(d, "b", false).expect("unlink");
    let (_, fh, _) = fs.create(ROOT, "f", 0o644, OWNER, 0).expect("create f");
    fs.write(fh, 0, b"local first").expect("write");
    fs.release(fh);
    d
}

#[test]
fn changes_apply_at_once_and_reach_the_server_in_batches() {
    let home = tempfile::tempdir().expect("home");
    let server = Arc::new(MemoryRemote::default());
    let rig = local_rig(server.clone(), home.path());
    // The reserved numbers are asked for online; then the mount goes on offline.
    let d = rig.fs.mkdir(ROOT, "d", 0o755, OWNER).expect("mkdir").ino;
    rig.faults.set_offline(true);
    for name in ["a", "b"] {
        let (_, fh, _) = rig
            .fs
            .create(d, name, 0o644, OWNER, 0)
            .expect("create offline");
        rig.fs.release(fh);
    }
    rig.fs
        .rename(d, "a", d, "c", RenameMode::Replace)
        .expect("rename offline");
    rig.fs.unlink(d, "b", false).expect("unlink offline");
    assert!(rig.fs.lookup(d, "c").is_ok(), "the rename shows at once");
    assert_eq!(
        rig.fs.lookup(d, "b").map_err(|e| e.errno()).err(),
        Some(libc::ENOENT)
    );
    // fsync waits for the server, and fails with EIO after the timeout.
    let dir_sync = rig.fs.sync_all();
    assert_eq!(dir_sync.map_err(|e| e.errno()).err(), Some(libc::EIO));
    rig.faults.set_offline(false);
    rig.fs.sync_all().expect("sync once the server is back");
    let status = rig.fs.sync_status().expect("local-first status");
    assert_eq!(status.pending_ops, 0);
    // "b", made and removed before the sync, is not sent.
    assert!(status.ops_sent >= 3 && status.batches < status.ops_sent);
    assert_eq!(server_names(&server, d as i64), ["c"]);
    assert_eq!(status.conflicts, 0);
}

#[test]
fn a_panfs_stopped_before_syncing_sends_its_journal_at_the_next_mount() {
    let home = tempfile::tempdir().expect("home");
    let server = Arc::new(MemoryRemote::default());
    {
        // Reachable for the numbers, then gone: nothing is sent.
        let rig = warm_then_offline(&server, home.path());
        make_tree(&rig.fs);
        // Dropped without syncing, as after a SIGKILL.
    }
    assert_eq!(server_names(&server, server.root()), ["warm"]);
    let rig = local_rig(server.clone(), home.path());
    // What was journaled shows before it is sent.
    let d = rig.fs.lookup(ROOT, "d").expect("d after the restart").ino;
    assert!(rig.fs.lookup(d, "c").is_ok());
    rig.fs.sync_all().expect("sync");
    assert_eq!(server_names(&server, server.root()), ["d", "f", "warm"]);
    assert_eq!(server_names(&server, d as i64), ["c"]);
    let f = rig.fs.lookup(ROOT, "f").expect("f").ino;
    wait_until("f's content", || {
        server.bytes(f as i64).as_deref() == Some(&b"local first"[..])
    });
}

#[test]
fn a_name_created_elsewhere_meanwhile_keeps_both_files() {
    name_created_elsewhere_keeps_both_files(0);
}

/// A resend is no excuse: a refusal that is news from elsewhere is still
/// resolved when the first answer was lost.
#[test]
fn a_name_created_elsewhere_keeps_both_files_when_an_answer_was_lost() {
    name_created_elsewhere_keeps_both_files(1);
}

fn name_created_elsewhere_keeps_both_files(lost_answers: u64) {
    let (_home, server, rig) = offline_after_warming_up();
    rig.faults.lose_batch_answers(lost_answers);
    let (_, fh) = written(&rig.fs, "same", b"mine");
    rig.fs.release(fh);
    let other = server.another_client();
    let rt = tokio::runtime::Runtime::new().expect("rt");
    let theirs = rt
        .block_on(other.create(
            server.root(),
            &panproto::wire::CreateRequest {
                name: "same".into(),
                kind: panproto::wire::NodeKind::File,
                mode: 0o644,
                uid: 0,
                gid: 0,
                target: None,
                rdev: 0,
            },
        ))
        .expect("their create");
    rig.faults.set_offline(false);
    rig.fs.sync_all().expect("sync");
    rig.fs.sync_all().expect("sync the conflict copy");
    let names = server_names(&server, server.root());
    assert_eq!(names.len(), 3, "{names:?}");
    assert!(names.contains(&"same".to_string()));
    let copy = names
        .iter()
        .find(|n| n.starts_with("same (conflict on "))
        .expect("a conflict copy");
    let copy_ino = rt
        .block_on(server.lookup(server.root(), copy))
        .expect("copy")
        .ino;
    assert_ne!(copy_ino, theirs.ino);
    wait_until("the conflict copy's bytes", || {
        server.bytes(copy_ino).as_deref() == Some(&b"mine"[..])
    });
    assert_eq!(rig.fs.sync_status().expect("status").conflicts, 1);
}

#[test]
fn an_edit_of_a_file_removed_elsewhere_is_kept() {
    let home = tempfile::tempdir().expect("home");
    let server = Arc::new(MemoryRemote::default());
    let rig = local_rig(server.clone(), home.path());
    let (ino, fh) = written(&rig.fs, "notes", b"first");
    rig.fs.release(fh);
    rig.fs.sync_all().expect("sync");
    let (fh, _) = rig.fs.open(ino, libc::O_RDWR).expect("open");
    rig.fs.write(fh, 0, b"edited").expect("write");
    // Removed elsewhere before this edit is sent.
    let rt = tokio::runtime::Runtime::new().expect("rt");
    rt.block_on(
        server
            .another_client()
            .remove(server.root(), "notes", false),
    )
    .expect("their removal");
    rig.fs.release(fh);
    wait_until("the edit kept as a conflict copy", || {
        let _ = rig.fs.sync_all();
        let names = server_names(&server, server.root());
        names.iter().any(|n| {
            n.starts_with("notes (conflict on ")
                && rt
                    .block_on(server.lookup(server.root(), n))
                    .is_ok_and(|copy| server.bytes(copy.ino).as_deref() == Some(&b"edited"[..]))
        })
    });
    let names = server_names(&server, server.root());
    assert!(!names.contains(&"notes".to_string()), "{names:?}");
    assert_eq!(names.len(), 1, "one copy: {names:?}");
    assert_eq!(rig.fs.stats.conflict_copies.load(Ordering::Relaxed), 1);
}

#[test]
fn small_files_go_to_the_server_inside_the_batches() {
    // Written while the server is away, so the syncer meets them all at once.
    let (_home, server, rig) = offline_after_warming_up();
    let mut files = Vec::new();
    for i in 0..50u32 {
        let data = format!("small file {i}").repeat(i as usize + 1);
        let (attr, fh, _) = rig
            .fs
            .create(ROOT, &format!("f{i}"), 0o644, OWNER, 0)
            .expect("create");
        rig.fs.write(fh, 0, data.as_bytes()).expect("write");
        rig.fs.release(fh);
        files.push((attr.ino as i64, data));
    }
    let before = rig.faults.requests();
    rig.faults.set_offline(false);
    rig.fs.sync_all().expect("sync");
    for (ino, data) in &files {
        assert_eq!(server.bytes(*ino).as_deref(), Some(data.as_bytes()));
    }
    let requests = rig.faults.requests() - before;
    assert!(
        requests < 10,
        "50 files and their contents took {requests} requests"
    );
}

/// Files and directories made here inside a directory that another client
/// removed meanwhile are kept: at the top, under a conflict-copy name, with
/// what was made inside them.
#[test]
fn what_was_made_in_a_directory_removed_elsewhere_is_kept() {
    let home = tempfile::tempdir().expect("home");
    let server = Arc::new(MemoryRemote::default());
    let rig = local_rig(server.clone(), home.path());
    let d = rig.fs.mkdir(ROOT, "d", 0o755, OWNER).expect("mkdir").ino;
    rig.fs.sync_all().expect("sync");
    rig.faults.set_offline(true);
    let sub = rig.fs.mkdir(d, "sub", 0o755, OWNER).expect("mkdir").ino;
    for (dir, name, data) in [(d, "top.txt", &b"top"[..]), (sub, "deep.txt", b"deep")] {
        let (_, fh, _) = rig.fs.create(dir, name, 0o644, OWNER, 0).expect("create");
        rig.fs.write(fh, 0, data).expect("write");
        rig.fs.release(fh);
    }
    let rt = tokio::runtime::Runtime::new().expect("rt");
    rt.block_on(server.another_client().remove(server.root(), "d", true))
        .expect("their rmdir");
    rig.faults.set_offline(false);
    rig.fs.sync_all().expect("sync");
    rig.fs.sync_all().expect("sync what was made again");
    // "sub" and "top.txt" under conflict names; "d" stays removed.
    let names = server_names(&server, server.root());
    assert_eq!(names.len(), 2, "{names:?}");
    let sub_copy = names
        .iter()
        .find(|n| n.starts_with("sub (conflict on "))
        .unwrap_or_else(|| panic!("sub kept at the top: {names:?}"));
    let sub_ino = rt
        .block_on(server.lookup(server.root(), sub_copy))
        .expect("sub")
        .ino;
    assert_eq!(sub_ino, sub as i64, "the same node, made again");
    assert_eq!(server_names(&server, sub_ino), ["deep.txt"]);
    let deep = rt
        .block_on(server.lookup(sub_ino, "deep.txt"))
        .expect("deep")
        .ino;
    let top = names
        .iter()
        .find(|n| n.starts_with("top (conflict on "))
        .unwrap_or_else(|| panic!("top.txt kept at the top: {names:?}"));
    let top = rt
        .block_on(server.lookup(server.root(), top))
        .expect("top")
        .ino;
    wait_until("the kept files' bytes", || {
        server.bytes(deep).as_deref() == Some(&b"deep"[..])
            && server.bytes(top).as_deref() == Some(&b"top"[..])
    });
}

/// Files made and removed again before the syncer sent them cost the server
/// nothing: no operation and no content reaches it.
#[test]
fn files_made_and_removed_before_a_sync_are_never_sent() {
    let (_home, server, rig) = offline_after_warming_up();
    let sent_before = rig.fs.sync_status().expect("status").ops_sent;
    for i in 0..20 {
        let name = format!("tmp{i}");
        let (_, fh, _) = rig.fs.create(ROOT, &name, 0o644, OWNER, 0).expect("create");
        rig.fs.write(fh, 0, b"scratch").expect("write");
        rig.fs.release(fh);
        rig.fs.unlink(ROOT, &name, false).expect("unlink");
    }
    // They cancel out without the server: the journal drains while offline.
    // (Going online before that could let a batch the syncer took mid-loop,
    // a create without its unlink, reach the server.)
    wait_until("the journal to drain offline", || {
        rig.fs.sync_status().expect("status").pending_ops == 0
    });
    rig.faults.set_offline(false);
    rig.fs.sync_all().expect("sync");
    assert_eq!(server_names(&server, server.root()), ["warm"]);
    let status = rig.fs.sync_status().expect("status");
    assert_eq!(status.ops_sent, sent_before, "nothing was sent");
    assert_eq!(status.pending_ops, 0);
}

/// While the server is away, local work is bounded by the cache size:
/// ENOSPC beyond it, removals still work, and once the server is back the
/// journal drains and writes go on.
#[test]
fn offline_work_is_bounded_by_the_cache_size() {
    let home = tempfile::tempdir().expect("home");
    let server = Arc::new(MemoryRemote::default());
    let mut opts = options(&home.path().join("cache"), &home.path().join("state"), true);
    opts.disk_cache_bytes = 256 << 10;
    let rig = local_rig_with(server.clone(), opts);
    rig.fs.mkdir(ROOT, "warm", 0o755, OWNER).expect("mkdir");
    rig.fs.sync_all().expect("sync");
    rig.faults.set_offline(true);
    let (_, fh, _) = rig.fs.create(ROOT, "big", 0o644, OWNER, 0).expect("create");
    wait_until("the syncer to find the server gone", || {
        !rig.fs.sync_status().expect("status").online
    });
    let block = vec![7u8; 64 << 10];
    let mut written = 0u64;
    let full = loop {
        match rig.fs.write(fh, written, &block) {
            Ok(n) => written += u64::from(n),
            Err(e) => break e.errno(),
        }
        assert!(
            written <= 1 << 20,
            "wrote {written} bytes offline past the bound"
        );
    };
    assert_eq!(full, libc::ENOSPC);
    assert!(written >= 128 << 10, "only {written} bytes before ENOSPC");
    rig.fs.release(fh);
    rig.fs
        .unlink(ROOT, "big", false)
        .expect("a removal still works");
    rig.faults.set_offline(false);
    rig.fs.sync_all().expect("sync once the server is back");
    let (_, fh, _) = rig
        .fs
        .create(ROOT, "after", 0o644, OWNER, 0)
        .expect("create");
    rig.fs.write(fh, 0, &block).expect("writes go on");
    rig.fs.release(fh);
}

/// The server commits a batch and dies before it answers: the resend finds
/// every node it made already made, and nothing is made twice or copied.
#[test]
fn a_batch_whose_answer_was_lost_is_sent_again_and_makes_nothing_twice() {
    let home = tempfile::tempdir().expect("home");
    let server = Arc::new(MemoryRemote::default());
    let rig = local_rig(server.clone(), home.path());
    rig.faults.lose_batch_answers(1);
    let d = make_tree(&rig.fs);
    rig.fs.sync_all().expect("sync, through the resend");
    assert_eq!(server_names(&server, server.root()), ["d", "f"]);
    assert_eq!(server_names(&server, d as i64), ["c"]);
    let f = rig.fs.lookup(ROOT, "f").expect("f").ino;
    wait_until("f's content", || {
        server.bytes(f as i64).as_deref() == Some(&b"local first"[..])
    });
    let status = rig.fs.sync_status().expect("status");
    assert_eq!((status.pending_ops, status.conflicts), (0, 0));
}

/// A file written here stays on local disk once uploaded, as clean cached
/// content: it reads back whole with the server gone. One file rides inline
/// in a batch, the other goes up as chunks through the write-back worker.
#[test]
fn a_file_written_here_reads_back_from_local_disk_after_its_upload() {
    let home = tempfile::tempdir().expect("home");
    let server = Arc::new(MemoryRemote::default());
    let rig = local_rig(server.clone(), home.path());
    let files = [("small", noise(4 << 10, 7)), ("large", noise(3 << 20, 8))];
    let mut inos = Vec::new();
    for (name, data) in &files {
        let (ino, fh) = written(&rig.fs, name, data);
        rig.fs.release(fh);
        inos.push(ino);
    }
    rig.fs.sync_all().expect("sync");
    for (ino, (_, data)) in inos.iter().zip(&files) {
        assert_eq!(server.bytes(*ino as i64).as_ref(), Some(data), "uploaded");
        wait_until("the working copy to retire", || {
            !lock(&rig.fs.tables).files.contains_key(&(*ino as i64))
        });
    }
    let cached = rig.fs.cache_bytes().1;
    assert!(
        cached >= (3 << 20) + (4 << 10),
        "the disk cache holds {cached} bytes"
    );
    rig.faults.set_offline(true);
    for (ino, (name, data)) in inos.iter().zip(&files) {
        let (fh, _) = rig.fs.open(*ino, libc::O_RDONLY).expect("open offline");
        let mut back = Vec::new();
        while back.len() < data.len() {
            let part = rig
                .fs
                .read(fh, back.len() as u64, 1 << 20)
                .expect("read offline");
            assert!(!part.is_empty(), "{name} ends early");
            back.extend_from_slice(&part);
        }
        rig.fs.release(fh);
        assert!(back == *data, "{name} reads back other bytes");
    }
}

#[test]
fn a_file_whose_bytes_are_only_on_the_server_is_written_offline() {
    let (_home, server, rig) = offline_after_warming_up();
    rig.faults.set_offline(false);
    // Another client's file: this mount learns of it, but holds none of its bytes.
    let rt = tokio::runtime::Runtime::new().expect("rt");
    let theirs = rt
        .block_on(server.another_client().create(
            server.root(),
            &panproto::wire::CreateRequest::plain("theirs", panproto::wire::NodeKind::File),
        ))
        .expect("their create");
    super::other_client_writes(&server, theirs.ino, b"0123456789 from elsewhere");
    // Once what the mount saw of the root is older than the fallback TTL.
    std::thread::sleep(std::time::Duration::from_millis(1200));
    let ino = rig.fs.lookup(ROOT, "theirs").expect("lookup").ino;
    rig.faults.set_offline(true);
    let (fh, _) = rig.fs.open(ino, libc::O_WRONLY).expect("open offline");
    assert_eq!(rig.fs.write(fh, 2, b"AB").expect("write offline"), 2);
    rig.fs.release(fh);
    rig.faults.set_offline(false);
    rig.fs.sync_all().expect("sync once the server is back");
    assert_eq!(
        server.bytes(ino as i64).as_deref(),
        Some(&b"01AB456789 from elsewhere"[..])
    );
}

/// An open that read the file's node before its content was committed, and
/// found the file retired by the time it took the file's entry, opens the
/// committed version: not the node it read, which still has the size and
/// content the file had when it was created (mount_tools once read a file
/// copied in with `cp -r` back empty this way).
#[test]
fn an_open_that_read_the_node_before_the_commit_reads_the_content() {
    let home = tempfile::tempdir().expect("home");
    let server = Arc::new(MemoryRemote::default());
    let rig = local_rig(server.clone(), home.path());
    let data = b"file 9/804\n".repeat(7);
    let (ino, fh) = written(&rig.fs, "f804", &data);
    rig.fs.release(fh);
    let ino = ino as i64;
    let read_before = lock(&rig.fs.tables)
        .replica
        .node(ino)
        .cloned()
        .expect("node");
    rig.fs.sync_all().expect("sync");
    wait_until("the working copy to retire", || {
        !lock(&rig.fs.tables).files.contains_key(&ino)
    });
    let (fh, _) = rig
        .fs
        .open_node(
            &read_before,
            libc::O_RDONLY,
            crate::fs::PageCache::Keep,
            None,
        )
        .expect("open");
    let back = rig.fs.read(fh, 0, 4096).expect("read");
    rig.fs.release(fh);
    assert_eq!(&back[..], &data[..], "read {} bytes back", back.len());
}
