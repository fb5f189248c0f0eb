//! What an `fsync` waits for in local-first mode: a file's content, its
//! own journaled changes and its path's, not what the mount journaled since
//! elsewhere (a `tar xf` beside an editor that saves); a directory's, its
//! entries; the root's (`panfs sync`), everything.

use std::sync::Arc;

use panproto::wire::RenameMode;

use super::local::{local_rig, server_names};
use super::{OWNER, Rig, written};
use crate::fs::ROOT;
use crate::remote::memory::MemoryRemote;

/// A local-first rig over a fresh in-memory server, and the home it uses.
fn local_first() -> (tempfile::TempDir, Arc<MemoryRemote>, Rig) {
    let home = tempfile::tempdir().expect("home");
    let server = Arc::new(MemoryRemote::default());
    let rig = local_rig(server.clone(), home.path());
    (home, server, rig)
}

#[test]
fn an_fsync_does_not_wait_for_changes_journaled_elsewhere_on_the_mount() {
    let (_home, server, rig) = local_first();
    let (ino, fh) = written(&rig.fs, "notes.txt", b"first draft");
    rig.fs.fsync(fh).expect("first fsync");
    // The server is slow to take batches: a change made meanwhile waits.
    rig.faults.hold_batches(true);
    rig.fs.mkdir(ROOT, "unpacked", 0o755, OWNER).expect("mkdir");
    rig.fs.write(fh, 0, b"final").expect("write");
    let saved = rig.fs.fsync(fh);
    let names_meanwhile = server_names(&server, server.root());
    let bytes_meanwhile = server.bytes(ino as i64);
    rig.faults.hold_batches(false);
    saved.expect("fsync of a file whose own changes are on the server");
    assert_eq!(bytes_meanwhile.as_deref(), Some(&b"final draft"[..]));
    assert_eq!(
        names_meanwhile,
        ["notes.txt"],
        "the later mkdir is not sent yet"
    );
    rig.fs.sync_all().expect("sync");
    assert_eq!(
        server_names(&server, server.root()),
        ["notes.txt", "unpacked"]
    );
    rig.fs.release(fh);
}

#[test]
fn an_fsync_waits_for_its_directorys_rename() {
    let (_home, server, rig) = local_first();
    let dir = rig
        .fs
        .mkdir(ROOT, "draft", 0o755, OWNER)
        .expect("mkdir")
        .ino;
    let (_, fh, _) = rig.fs.create(dir, "f", 0o644, OWNER, 0).expect("create");
    rig.fs.write(fh, 0, b"text").expect("write");
    rig.fs.fsync(fh).expect("first fsync");
    rig.faults.hold_batches(true);
    rig.fs
        .rename(ROOT, "draft", ROOT, "final", RenameMode::Replace)
        .expect("rename");
    // The file's path is final/f only once the server has the rename.
    let while_held = rig.fs.fsync(fh).map_err(|e| e.errno());
    rig.faults.hold_batches(false);
    assert_eq!(while_held.err(), Some(libc::EIO));
    rig.fs
        .fsync(fh)
        .expect("fsync once the server takes batches");
    assert_eq!(server_names(&server, server.root()), ["final"]);
    rig.fs.release(fh);
}

#[test]
fn a_directorys_fsync_waits_for_its_entries_and_the_roots_for_everything() {
    let (_home, server, rig) = local_first();
    let saved = rig
        .fs
        .mkdir(ROOT, "saved", 0o755, OWNER)
        .expect("mkdir")
        .ino;
    let busy = rig.fs.mkdir(ROOT, "busy", 0o755, OWNER).expect("mkdir").ino;
    rig.fs
        .mknod(saved, "entry", libc::S_IFREG | 0o644, 0, OWNER)
        .expect("mknod");
    rig.fs.fsync_dir(saved).expect("fsync of saved/");
    assert_eq!(server_names(&server, saved as i64), ["entry"]);
    rig.faults.hold_batches(true);
    rig.fs
        .mknod(busy, "later", libc::S_IFREG | 0o644, 0, OWNER)
        .expect("mknod");
    let saved_again = rig.fs.fsync_dir(saved).map_err(|e| e.errno());
    let busy_held = rig.fs.fsync_dir(busy).map_err(|e| e.errno());
    let root_held = rig.fs.fsync_dir(ROOT).map_err(|e| e.errno());
    rig.faults.hold_batches(false);
    assert_eq!(saved_again, Ok(()), "nothing of saved/ is pending");
    assert_eq!(
        busy_held.err(),
        Some(libc::EIO),
        "busy/later is not on the server"
    );
    assert_eq!(
        root_held.err(),
        Some(libc::EIO),
        "the root waits for everything"
    );
    rig.fs
        .fsync_dir(busy)
        .expect("fsync of busy/ once the server takes batches");
    assert_eq!(server_names(&server, busy as i64), ["later"]);
}
