//! Local-first mounts (`--sync-mode local`), end to end: a real panserver, a
//! real FUSE mount, `tar` and a shell script on it. What the mount shows is
//! compared with what a fresh strict mount of the same account reads from the
//! server after `panfs sync`.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use pantests::{Mount, Server, setting, sha256_file, wait_until, write_noise_file};

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
    let mut local = Mount::with_args(&server, "tar-user", LOCAL);
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
    // After a remount with everything sent, `panfs sync` has nothing to wait
    // for (it once waited for the journal's old numbers until `--timeout`).
    local.umount();
    local.mount();
    local.sync();
}

/// panfs SIGKILLed while `copy` (a shell command run in the mount, given the
/// source tree and tarball) makes hundreds of files; remounted and synced.
fn panfs_killed_during(copy: &str, user: &str) {
    let work = tempfile::tempdir().expect("work");
    let tarball = source_tree(work.path(), 10, 80);
    let server = Server::start();
    let mut local = Mount::with_args(&server, user, LOCAL);
    let script = copy
        .replace("TARBALL", &tarball.to_string_lossy())
        .replace("SRC", &work.path().join("src").to_string_lossy());
    let mut writer = Command::new("bash")
        .args(["-c", &script])
        .current_dir(local.p(""))
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("the copy");
    wait_until("the copy to be under way", Duration::from_secs(60), || {
        walkdir_count(&local.p("")) > 200
    });
    local.kill();
    let _ = writer.wait();
    local.mount();
    local.sync();
    let strict = Mount::with_args(&server, user, STRICT);
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
    server.assert_consistent(&format!("after panfs was killed during `{copy}`"));
}

#[test]
fn panfs_killed_in_the_middle_of_a_tar_sends_its_journal_at_the_next_mount() {
    panfs_killed_during("tar xf TARBALL", "kill-tar");
}

#[test]
fn panfs_killed_in_the_middle_of_a_cp_r_sends_its_journal_at_the_next_mount() {
    panfs_killed_during("cp -r SRC copy", "kill-cp");
}

/// The server SIGKILLed while the syncer sends a `tar xf`'s batches: tar sees
/// no error; once the server is back every file arrives, byte for byte, and
/// the server's metadata is consistent (a batch is in whole or not at all,
/// and the syncer sends again what was not acknowledged).
#[test]
fn panserver_killed_while_batches_commit_loses_nothing() {
    let work = tempfile::tempdir().expect("work");
    let tarball = source_tree(work.path(), 10, 80);
    let mut server = Server::start();
    let local = Mount::with_args(&server, "batch-kill", LOCAL);
    let mut tar = Command::new("tar")
        .args(["xf", &tarball.to_string_lossy(), "-C"])
        .arg(local.p(""))
        .spawn()
        .expect("tar");
    wait_until("tar to be under way", Duration::from_secs(60), || {
        walkdir_count(&local.p("")) > 100
    });
    server.kill();
    assert!(tar.wait().expect("tar").success(), "tar fails on no call");
    server.restart();
    local.sync();
    let strict = Mount::with_args(&server, "batch-kill", STRICT);
    assert_same_tree(&work.path().join("src"), &strict.p(""));
    server.assert_consistent("after panserver was killed mid-batch");
}

#[test]
fn a_script_works_on_while_the_server_is_stopped_and_everything_arrives() {
    let offline_secs: u64 = setting("PAN_OFFLINE_SECS", || 60);
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

/// A server that stops answering without refusing (a lost network, here a
/// SIGSTOPped panserver) holds up no create or truncate: the mount cannot
/// know it is offline before its timeout (120 s here), so nothing on the way
/// may wait for the server. The script truncates files whose bytes are on
/// the server (as `open(O_TRUNC)` does) and creates more files than one
/// reserved range of inode numbers holds; it must end long before the
/// timeout, and everything arrives once the server answers again.
#[test]
fn a_server_that_stops_answering_holds_up_no_create_or_truncate() {
    let server = Server::start();
    let local = Mount::with_args(
        &server,
        "silent-user",
        &["--sync-mode", "local", "--timeout", "120"],
    );
    local.sh("mkdir work && for i in 0 1 2 3 4; do seq 1 $((i * 5000)) > work/old$i; done");
    // Sent: their working copies are retired, and their bytes are the server's.
    local.sync();
    let paused = Paused::new(server.pid().expect("a running server"));
    run_within_a_minute(
        local.root(),
        "cd work; for f in old*; do : > $f; done; mkdir new; \
         for i in $(seq 1 5000); do echo $i > new/f$i; done",
    );
    drop(paused);
    local.sync();
    let strict = Mount::with_args(&server, "silent-user", STRICT);
    assert_same_tree(&local.p("work"), &strict.p("work"));
    assert_eq!(walkdir_count(&strict.p("work/new")), 5001, "the new files");
    server.assert_consistent("after the server answered again");
}

/// Syncs and unmounts once the change feed is followed: the replica is kept
/// at unmount only when it is current, and a mount started offline answers
/// from it.
fn sync_and_umount_with_the_replica_kept(local: &mut Mount) {
    local.sync();
    wait_until(
        "the change feed to be followed",
        Duration::from_secs(30),
        || local.record()["feed"]["following"].as_bool() == Some(true),
    );
    local.umount();
}

/// Runs `script` in `dir`, which must succeed within 60 s (a hang bound,
/// not a speed figure); its output.
fn run_within_a_minute(dir: &Path, script: &str) -> String {
    let out = Command::new("timeout")
        .args(["60", "bash", "-euc", script])
        .current_dir(dir)
        .output()
        .expect("timeout");
    assert!(
        out.status.success(),
        "`{script}` with the server not answering: {:?} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A stopped process (SIGSTOP), continued when this goes.
struct Paused(i32);

impl Paused {
    fn new(pid: u32) -> Self {
        let pid = pid as i32;
        // SAFETY: signals a child process this test started.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0, "SIGSTOP");
        Paused(pid)
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}

/// A file written on this mount stays on local disk once uploaded, as clean
/// cached content: after a remount (the kernel's pages and panfs's memory
/// are gone) and with the server stopped, it reads back whole.
#[test]
fn files_written_here_read_back_from_local_disk_with_the_server_stopped() {
    let work = tempfile::tempdir().expect("work");
    let mut server = Server::start();
    let mut local = Mount::with_args(&server, "cache-user", LOCAL);
    let small = work.path().join("small.bin");
    let big = work.path().join("big.bin");
    let small_sha = write_noise_file(&small, 1, 20 << 10);
    let big_sha = write_noise_file(&big, 2, 9 << 20);
    local.sh(&format!("cp {} {} .", small.display(), big.display()));
    local.sync();
    local.umount();
    local.mount();
    server.kill();
    assert_eq!(sha256_file(&local.p("small.bin")), small_sha, "small.bin");
    assert_eq!(sha256_file(&local.p("big.bin")), big_sha, "big.bin");
    server.restart();
}

/// A local-first mount started while the server is down (a laptop with no
/// network): what the last mount saw lists and reads back, files and
/// directories are made (their inode numbers minted under the licence the
/// last mount left, though it only looked: another mount made the files),
/// moved and removed, and it all arrives once the server is back.
#[test]
fn a_mount_started_while_the_server_is_down_works_and_everything_arrives() {
    let work = tempfile::tempdir().expect("work");
    let mut server = Server::start();
    let mut strict = Mount::with_args(&server, "offline-start", STRICT);
    let big = work.path().join("big.bin");
    let big_sha = write_noise_file(&big, 3, 3 << 20);
    strict.sh(&format!(
        "mkdir -p work/sub && echo before > work/before.txt && echo x > work/sub/x && cp {} work/",
        big.display()
    ));
    strict.umount();
    let mut local = Mount::with_args(&server, "offline-start", LOCAL);
    local.sh("ls -R work >/dev/null && cat work/before.txt work/big.bin >/dev/null");
    sync_and_umount_with_the_replica_kept(&mut local);
    server.kill();
    local.mount();
    assert_eq!(
        local.sh("ls work; cat work/before.txt"),
        "before.txt\nbig.bin\nsub\nbefore\n"
    );
    assert_eq!(sha256_file(&local.p("work/big.bin")), big_sha, "big.bin");
    local.sh(
        "cd work && mkdir new && for i in $(seq 1 50); do echo $i > new/f$i; done && \
         mv before.txt after.txt && rm -r sub",
    );
    assert_eq!(
        local.sh("ls work; ls work/new | wc -l"),
        "after.txt\nbig.bin\nnew\n50\n"
    );
    server.restart();
    local.sync();
    strict.mount();
    assert_same_tree(&local.p("work"), &strict.p("work"));
    server.assert_consistent("after a mount started offline synced");
}

/// A local-first mount started while the server is silent (a stopped
/// process: connections open, nothing answers) waits out `--timeout` once,
/// not at every name: after a request timed out, calls that only read fail
/// at once and the mount answers from what it saw, until the server answers
/// again. Forty names at 5 s each would take 200 s; the script has 60.
#[test]
fn a_silent_server_is_waited_for_once_not_at_every_name() {
    let server = Server::start();
    let args = ["--sync-mode", "local", "--timeout", "5"];
    let mut local = Mount::with_args(&server, "silent-start", &args);
    local.sh("mkdir work && for i in $(seq 1 40); do echo $i > work/f$i; done");
    sync_and_umount_with_the_replica_kept(&mut local);
    // The mount itself waits out the timeout once: it asks for the account.
    let paused = Paused::new(server.pid().expect("a running server"));
    local.mount();
    let out = run_within_a_minute(
        local.root(),
        "for i in $(seq 1 40); do [ \"$(cat work/f$i)\" = $i ]; done; \
         ls work | wc -l; echo new > work/new",
    );
    drop(paused);
    assert_eq!(out, "40\n");
    local.sync();
    let strict = Mount::with_args(&server, "silent-start", STRICT);
    assert_same_tree(&local.p("work"), &strict.p("work"));
    server.assert_consistent("after the server answered again");
}

/// Entries under `root` (files, directories and links), counted by `find`.
fn walkdir_count(root: &Path) -> usize {
    let out = Command::new("find").arg(root).output().expect("find");
    String::from_utf8_lossy(&out.stdout).lines().count()
}

/// A small random number generator (xorshift), seeded per run.
struct Dice(u64);

impl Dice {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// A version of a file one mount wrote: its first line names it, its second
/// the version it replaced (read through the same open file, as an editor
/// does), if any.
struct Version {
    id: String,
    replaced: Option<String>,
}

fn first_line(bytes: &str) -> &str {
    bytes.lines().next().unwrap_or("")
}

/// Edits `path` as an editor does: opens it (or makes it), reads what it
/// holds, writes the new version over it through the same handle, closes.
fn edit(path: &Path, id: &str) -> std::io::Result<Version> {
    use std::io::{Read, Seek, Write};
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    let mut old = String::new();
    f.read_to_string(&mut old)?;
    let replaced = Some(first_line(&old).to_string()).filter(|l| !l.is_empty());
    f.set_len(0)?;
    f.rewind()?;
    f.write_all(format!("{id}\nreplaces: {replaced:?}\n").as_bytes())?;
    Ok(Version {
        id: id.to_string(),
        replaced,
    })
}

/// One mount's random work on names the other mount uses too: edits of
/// files, new directories and files inside them, and renames to names of
/// its own (which replace nothing). Returns every version it wrote.
fn random_work(mount: &Mount, who: &str, seed: u64) -> Vec<Version> {
    let mut dice = Dice(seed | 1);
    let mut written = Vec::new();
    for op in 0..150 {
        let dir = ["", "a/", "b/"][dice.below(3) as usize];
        if !dir.is_empty() {
            // Made on both sides: each keeps what it put inside.
            let _ = std::fs::create_dir(mount.p(dir));
        }
        let path = mount.p(&format!("{dir}f{}.txt", dice.below(6)));
        if dice.below(10) == 0 {
            let _ = std::fs::rename(&path, mount.p(&format!("{dir}r-{who}-{op}.txt")));
        } else if let Ok(v) = edit(&path, &format!("{who} op {op} seed {seed}")) {
            written.push(v);
        }
        if dice.below(4) == 0 {
            std::thread::sleep(Duration::from_millis(dice.below(20)));
        }
    }
    written
}

/// Every file's bytes under `root`, by path.
fn contents(root: &Path) -> BTreeMap<String, String> {
    let out = Command::new("find")
        .arg(root)
        .args(["-type", "f"])
        .output()
        .expect("find");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|p| {
            let rel = p.strip_prefix(&*root.to_string_lossy()).unwrap_or(p);
            let bytes = std::fs::read(p).unwrap_or_default();
            (
                rel.trim_start_matches('/').to_string(),
                String::from_utf8_lossy(&bytes).into_owned(),
            )
        })
        .collect()
}

/// Two local-first mounts of one account work at once on the same names.
/// After both sync, both mounts and the server show one tree, and every
/// version either wrote is kept (the file, a conflict copy, or renamed)
/// unless an edit that read it replaced it: no edit and no directory's
/// content is lost.
#[test]
fn two_mounts_working_on_the_same_names_lose_nothing() {
    let seed: u64 = setting("PAN_SEED", || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    println!("two mounts: seed {seed} (PAN_SEED={seed} repeats this run)");
    let server = Server::start();
    let one = Mount::with_args(&server, "both", LOCAL);
    let two = Mount::with_args(&server, "both", LOCAL);
    let (work_one, work_two) = std::thread::scope(|s| {
        let a = s.spawn(|| random_work(&one, "one", seed));
        let b = s.spawn(|| random_work(&two, "two", seed.rotate_left(17)));
        (a.join().expect("one"), b.join().expect("two"))
    });
    // Conflict copies made while syncing are synced by the next round.
    for _ in 0..2 {
        one.sync();
        two.sync();
    }
    let strict = Mount::with_args(&server, "both", STRICT);
    for m in [&one, &two] {
        wait_until(
            "both mounts to show the server's tree",
            Duration::from_secs(30),
            || contents(&m.p("")) == contents(&strict.p("")),
        );
    }
    // Every version either side wrote is on the server (as the file, a
    // conflict copy, or renamed), or a later edit read it and replaced it.
    let on_server = contents(&strict.p(""));
    let present: std::collections::BTreeSet<&str> =
        on_server.values().map(|b| first_line(b)).collect();
    let read_and_replaced: std::collections::BTreeSet<&str> = work_one
        .iter()
        .chain(&work_two)
        .filter_map(|v| v.replaced.as_deref())
        .collect();
    for v in work_one.iter().chain(&work_two) {
        assert!(
            present.contains(v.id.as_str()) || read_and_replaced.contains(v.id.as_str()),
            "seed {seed}: version {:?} is lost; the server has {on_server:#?}\n\
             mount one's log:\n{}\nmount two's log:\n{}",
            v.id,
            one.log_tail(300),
            two.log_tail(300)
        );
    }
    server.assert_consistent("after two mounts worked on the same names");
}
