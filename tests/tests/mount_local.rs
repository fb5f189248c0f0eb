//! Local-first mounts (`--sync-mode local`), end to end: a real panserver, a
//! real FUSE mount, `tar` and a shell script on it. What the mount shows is
//! compared with what a fresh strict mount of the same account reads from the
//! server after `panfs sync`.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use pantests::{Mount, Server, setting, wait_until, write_noise_file};

const LOCAL: &[&str] = &["--sync-mode", "local", "--timeout", "10"];
/// The reference: a mount that reads through to the server on every open.
const STRICT: &[&str] = &["--sync-mode", "strict"];

/// A source tree of `dirs` directories of `files` small files (a few with
/// more than one chunk), and its tarball.
fn source_tree(root: &Path, dirs: usize, files: usize) -> std::path::PathBuf {
    let src = root.join("src");
    for d in 0..dirs {
        let dir = src.join(format!("dir{d:02}")).join("sub");
        std::fs::create_dir_all(&dir).expect("source dir");
        for f in 0..files {
            let len = if f % 50 == 7 {
                3 << 20
            } else {
                100 + (f as u64 * 37) % 9000
            };
            write_noise_file(
                &dir.join(format!("file{f:03}.txt")),
                (d * 1000 + f) as u64,
                len,
            );
        }
        std::os::unix::fs::symlink("sub/file000.txt", src.join(format!("dir{d:02}/link")))
            .expect("symlink");
    }
    let tarball = root.join("src.tar");
    let out = Command::new("tar")
        .args([
            "cf",
            &tarball.to_string_lossy(),
            "-C",
            &src.to_string_lossy(),
            ".",
        ])
        .output()
        .expect("tar cf");
    assert!(out.status.success(), "tar cf failed");
    tarball
}

/// `diff -r` of two trees (names, types, bytes, symlink targets); panics with its report.
fn assert_same_tree(a: &Path, b: &Path) {
    let out = Command::new("diff")
        .args(["-r", "--no-dereference"])
        .arg(a)
        .arg(b)
        .output()
        .expect("diff");
    assert!(
        out.status.success(),
        "trees differ:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_tar_into_a_local_first_mount_is_on_the_server_after_panfs_sync() {
    let work = tempfile::tempdir().expect("work");
    let tarball = source_tree(work.path(), 8, 60);
    let server = Server::start();
    let local = Mount::with_args(&server, "tar-user", LOCAL);
    local.sh(&format!("mkdir t && tar xf {} -C t", tarball.display()));
    local.sync();
    // `panfs status` reads the mount's record, rewritten every second.
    wait_until(
        "status to show nothing pending",
        Duration::from_secs(10),
        || {
            let out = local.panfs(&["status"], "");
            String::from_utf8_lossy(&out.stdout).contains("sync: online; 0 changes pending")
        },
    );
    let strict = Mount::with_args(&server, "tar-user", STRICT);
    assert_same_tree(&work.path().join("src"), &strict.p("t"));
    assert_same_tree(&local.p("t"), &strict.p("t"));
    // Renames and removals made locally arrive too.
    local.sh(
        "mv t/dir00 t/moved && rm -r t/dir01 && mv t/moved/sub/file001.txt t/moved/renamed.txt",
    );
    local.sync();
    // The strict mount learns of them through the change feed.
    wait_until(
        "the renames to reach the other mount",
        Duration::from_secs(10),
        || strict.p("t/moved/renamed.txt").exists() && !strict.p("t/dir01").exists(),
    );
    assert_same_tree(&local.p("t"), &strict.p("t"));
    server.assert_consistent("after a local-first tar");
}

#[test]
fn panfs_killed_in_the_middle_of_a_tar_sends_its_journal_at_the_next_mount() {
    let work = tempfile::tempdir().expect("work");
    let tarball = source_tree(work.path(), 10, 80);
    let server = Server::start();
    let mut local = Mount::with_args(&server, "kill-user", LOCAL);
    let mut tar = Command::new("tar")
        .args(["xf", &tarball.to_string_lossy(), "-C"])
        .arg(local.p(""))
        .spawn()
        .expect("tar");
    wait_until("tar to be under way", Duration::from_secs(60), || {
        walkdir_count(&local.p("")) > 200
    });
    local.kill();
    let _ = tar.wait();
    local.mount();
    local.sync();
    let strict = Mount::with_args(&server, "kill-user", STRICT);
    // The server holds exactly what the journal held: the remounted
    // local-first view (journal replayed) and the server's tree agree.
    assert_same_tree(&local.p(""), &strict.p(""));
    assert!(
        walkdir_count(&strict.p("")) > 200,
        "the journaled changes arrived"
    );
    // A content sent before the kill, whose commit the killed panfs never
    // recorded, is the same version, not a conflict.
    let out = Command::new("find")
        .arg(strict.p(""))
        .output()
        .expect("find");
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        !listing.contains("(conflict on "),
        "no conflict copies: nothing else wrote\n{listing}"
    );
    server.assert_consistent("after panfs was killed mid-tar");
}

#[test]
fn a_script_works_on_while_the_server_is_stopped_and_everything_arrives() {
    let offline_secs: u64 = setting("PAN_OFFLINE_SECS", || 15);
    let mut server = Server::start();
    let local = Mount::with_args(&server, "offline-user", LOCAL);
    local.sh("mkdir work && echo before > work/before.txt");
    local.sync();
    server.kill();
    // Writes, renames and removals while the server is away: no error.
    local.sh(&format!(
        "cd work; end=$((SECONDS + {offline_secs})); i=0; \
         while [ $SECONDS -lt $end ]; do \
           mkdir -p d$((i % 5)); echo \"file $i\" > d$((i % 5))/f$i.txt; \
           if [ $((i % 3)) -eq 0 ]; then mv d$((i % 5))/f$i.txt d$((i % 5))/g$i.txt; fi; \
           if [ $((i % 7)) -eq 0 ]; then rm -f d$((i % 5))/f$i.txt d$((i % 5))/g$i.txt; fi; \
           i=$((i + 1)); sleep 0.05; \
         done; echo $i > count"
    ));
    let count: u64 = std::fs::read_to_string(local.p("work/count"))
        .expect("count")
        .trim()
        .parse()
        .expect("a number");
    assert!(count > 10, "the script ran offline ({count} rounds)");
    // fsync while the server is away fails with EIO after --timeout.
    let out = local.panfs(&["sync", &local.path.to_string_lossy()], "");
    assert!(!out.status.success(), "panfs sync must fail while offline");
    server.restart();
    local.sync();
    let strict = Mount::with_args(&server, "offline-user", STRICT);
    assert_same_tree(&local.p("work"), &strict.p("work"));
    server.assert_consistent("after the server came back");
}

/// Entries under `root` (files, directories and links), counted by `find`.
fn walkdir_count(root: &Path) -> usize {
    let out = Command::new("find").arg(root).output().expect("find");
    String::from_utf8_lossy(&out.stdout).lines().count()
}
