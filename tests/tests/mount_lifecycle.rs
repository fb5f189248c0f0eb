//! Mounts over time: two mounts of one account, remounts, crashes of panfs and
//! of the server, and write-back mode.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use pantests::{Mount, Noise, Server, sha256_file, wait_until};

fn inodes(root: &Path) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).expect("readdir").flatten() {
            let meta = std::fs::symlink_metadata(e.path()).expect("stat");
            let rel = e
                .path()
                .strip_prefix(root)
                .expect("prefix")
                .to_string_lossy()
                .into_owned();
            out.insert(rel, meta.ino());
            if meta.is_dir() {
                stack.push(e.path());
            }
        }
    }
    out
}

#[test]
fn two_mounts_see_each_others_changes_after_close() {
    let server = Server::start();
    let a = Mount::new(&server, "alice");
    let b = Mount::new(&server, "alice");
    std::fs::write(a.p("shared.txt"), b"from a").expect("write a");
    // Close-to-open: the next open on the other mount sees it (entries expire within the TTL).
    wait_until("b to see the file", Duration::from_secs(10), || {
        std::fs::read(b.p("shared.txt")).is_ok_and(|d| d == b"from a")
    });
    std::fs::write(b.p("shared.txt"), b"from b, longer").expect("write b");
    wait_until("a to see the change", Duration::from_secs(10), || {
        std::fs::read(a.p("shared.txt")).is_ok_and(|d| d == b"from b, longer")
    });
    std::fs::create_dir(b.p("dir")).expect("mkdir");
    std::fs::remove_file(b.p("shared.txt")).expect("rm");
    wait_until("a to see the removal", Duration::from_secs(10), || {
        !a.p("shared.txt").exists() && a.p("dir").is_dir()
    });
}

/// Another client stores a version while this mount has the file open and
/// written: the close succeeds, the other version stays in place, and this
/// mount's version is kept beside it as a conflict copy.
#[test]
fn a_close_after_another_clients_write_keeps_both_versions() {
    let server = Server::start();
    let m = Mount::new(&server, "alice");
    let api = pantests::Api::user(&server.url(), "alice", pantests::PASSWORD);
    std::fs::write(m.p("plan.md"), b"first").expect("write");
    let mut truncating = std::fs::OpenOptions::new();
    truncating.write(true).truncate(true);
    m.write_while_another_client_stores(&api, "plan.md", &truncating, b"ours");
    assert_eq!(
        api.content_at("/api/v1/files/plan.md"),
        b"another client's version of plan.md"
    );
    m.assert_one_conflict_copy("plan", ".md", b"ours");
}

/// A version written here goes to a conflict copy while another handle here
/// reads the file: that handle reads on from the version it opened, never a
/// mix of the two (the load test once read a version cut short), and the
/// next open shows the other client's version.
#[test]
fn a_reader_of_a_version_kept_as_a_conflict_copy_reads_it_whole() {
    use std::io::{Read, Write};
    let server = Server::start();
    let m = Mount::new(&server, "alice");
    let api = pantests::Api::user(&server.url(), "alice", pantests::PASSWORD);
    std::fs::write(m.p("w.bin"), b"first").expect("write");
    let ours = Noise::bytes(54, 6 << 20);
    let theirs = Noise::bytes(55, 5 << 20);
    let mut w = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(m.p("w.bin"))
        .expect("open for writing");
    w.write_all(&ours).expect("write");
    let mut r = std::fs::File::open(m.p("w.bin")).expect("open for reading");
    let mut read = vec![0u8; 64 << 10];
    r.read_exact(&mut read).expect("first read");
    assert_eq!(api.put_bytes("/api/v1/files/w.bin", theirs.clone()).0, 201);
    w.sync_all()
        .expect("fsync keeps our version as a copy and succeeds");
    drop(w);
    let mut rest = Vec::new();
    r.read_to_end(&mut rest).expect("reading on");
    read.extend_from_slice(&rest);
    assert_eq!(
        panproto::sha256_hex(&read),
        panproto::sha256_hex(&ours),
        "the reader got {} bytes, not the version it opened",
        read.len()
    );
    drop(r);
    wait_until(
        "the other client's version",
        Duration::from_secs(10),
        || std::fs::read(m.p("w.bin")).is_ok_and(|d| d == theirs),
    );
}

/// A file replaced by another client while open here: the open handle reads on
/// from the version it opened, as on a local disk (not a mix, not ESTALE).
#[test]
fn open_handle_reads_on_after_another_client_replaces_the_file() {
    use std::io::{Read, Seek, SeekFrom};
    let server = Server::start();
    let m = Mount::new(&server, "alice");
    let api = pantests::Api::user(&server.url(), "alice", pantests::PASSWORD);
    // Larger than the read-ahead, so most of it is fetched after the replacement.
    let old = Noise::bytes(51, 40 << 20);
    assert_eq!(api.put_bytes("/api/v1/files/r.bin", old.clone()).0, 201);
    let mut f = std::fs::File::open(m.p("r.bin")).expect("open");
    let mut head = vec![0u8; 64 << 10];
    f.read_exact(&mut head).expect("first read");
    let new = Noise::bytes(52, 3 << 20);
    assert_eq!(api.put_bytes("/api/v1/files/r.bin", new.clone()).0, 201);
    let mut rest = Vec::new();
    f.read_to_end(&mut rest)
        .expect("reading on after the replacement");
    head.extend_from_slice(&rest);
    assert_eq!(panproto::sha256_hex(&head), panproto::sha256_hex(&old));
    // And from the start again, by seeking back on the same handle.
    f.seek(SeekFrom::Start(30 << 20)).expect("seek");
    let mut tail = Vec::new();
    f.read_to_end(&mut tail).expect("read again");
    assert_eq!(tail, &old[30 << 20..]);
    drop(f);
    // A new open sees the new version.
    wait_until("the new version", Duration::from_secs(10), || {
        std::fs::read(m.p("r.bin")).is_ok_and(|d| d == new)
    });
}

/// A file removed while open here, by this mount or by another client: the
/// open handle reads on from its version, as on a local disk, though its bytes
/// were never on this machine.
#[test]
fn open_handle_reads_on_after_the_file_is_removed() {
    use std::io::Read;
    let server = Server::start();
    let m = Mount::new(&server, "alice");
    let api = pantests::Api::user(&server.url(), "alice", pantests::PASSWORD);
    // Larger than the read-ahead, so most of it is fetched after the removal.
    let data = Noise::bytes(53, 40 << 20);
    for by_this_mount in [true, false] {
        assert_eq!(api.put_bytes("/api/v1/files/gone.bin", data.clone()).0, 201);
        let mut f = std::fs::File::open(m.p("gone.bin")).expect("open");
        let mut head = vec![0u8; 64 << 10];
        f.read_exact(&mut head).expect("first read");
        if by_this_mount {
            std::fs::remove_file(m.p("gone.bin")).expect("unlink");
            // The removal reaches the server before the rest is read.
            m.sh("sync");
        } else {
            let (status, body) = api.delete("/api/v1/files/gone.bin");
            assert_eq!(status, 204, "{body}");
        }
        let mut rest = Vec::new();
        f.read_to_end(&mut rest)
            .expect("reading on after the removal");
        head.extend_from_slice(&rest);
        assert_eq!(
            panproto::sha256_hex(&head),
            panproto::sha256_hex(&data),
            "removed by this mount: {by_this_mount}"
        );
    }
}

#[test]
fn remount_keeps_everything_with_the_same_inodes() {
    let server = Server::start();
    let mut m = Mount::new(&server, "alice");
    m.sh("mkdir -p a/b && echo 1 > a/b/f && ln -s a/b/f link && ln a/b/f hard && head -c 5000000 /dev/urandom > big");
    let before = inodes(m.root());
    let big = sha256_file(&m.p("big"));
    m.umount();
    assert!(!m.p("big").exists(), "unmounted");
    m.mount();
    assert_eq!(inodes(m.root()), before);
    assert_eq!(sha256_file(&m.p("big")), big);
    assert_eq!(std::fs::read_to_string(m.p("link")).expect("link"), "1\n");
}

#[test]
fn unmounting_by_panfs_or_by_umount_logs_no_warning() {
    let server = Server::start();
    let mut m = Mount::new(&server, "alice");
    std::fs::write(m.p("a"), b"written before panfs umount").expect("write");
    m.umount();
    m.mount();
    std::fs::write(m.p("b"), b"written before umount(8)").expect("write");
    let pid = m.pid() as i32;
    let out = std::process::Command::new("umount")
        .arg(m.root())
        .output()
        .expect("umount");
    assert!(out.status.success(), "umount: {out:?}");
    wait_until("panfs to end after umount", Duration::from_secs(10), || {
        // SAFETY: probing a pid.
        unsafe { libc::kill(pid, 0) != 0 }
    });
    let log = m.log_tail(10_000);
    assert_eq!(
        log.matches("unmounted").count(),
        2,
        "two ends logged:\n{log}"
    );
    assert!(!log.contains("WARN"), "warnings logged:\n{log}");
    m.mount();
    assert_eq!(
        std::fs::read(m.p("b")).expect("read"),
        b"written before umount(8)"
    );
}

#[test]
fn sigkill_after_fsync_loses_nothing() {
    let server = Server::start();
    let mut m = Mount::new(&server, "alice");
    let data = Noise::bytes(21, 6 << 20);
    let mut f = std::fs::File::create(m.p("synced")).expect("create");
    f.write_all(&data).expect("write");
    f.sync_all().expect("fsync");
    m.kill();
    drop(f);
    m.mount();
    assert_eq!(std::fs::read(m.p("synced")).expect("read"), data);
}

#[test]
fn journaled_writes_resume_after_sigkill() {
    let server = Server::start();
    let mut m = Mount::with_args(&server, "alice", &["--writeback"]);
    let data = Noise::bytes(22, 3 << 20);
    // Closed in write-back mode: the data is journaled locally before close returns.
    std::fs::write(m.p("pending"), &data).expect("write");
    m.kill();
    // The cache is safe to delete: unsent writes are not in it.
    std::fs::remove_dir_all(m.cache_dir()).expect("delete the cache");
    m.mount();
    wait_until("the journal to be sent", Duration::from_secs(60), || {
        std::fs::read(m.p("pending")).is_ok_and(|d| d == data)
    });
}

#[test]
fn server_killed_mid_upload_then_restarted() {
    let mut server = Server::start();
    let m = Mount::new(&server, "alice");
    let dir = tempfile::tempdir().expect("tmp");
    let src = dir.path().join("src");
    let want = pantests::write_noise_file(&src, 23, 300 << 20);
    let target = m.p("big");
    let copier = std::thread::spawn(move || {
        let mut out = std::fs::File::create(&target).expect("create");
        let mut input = std::fs::File::open(&src).expect("open");
        std::io::copy(&mut input, &mut out).expect("copy into the working copy");
        // fsync uploads; it may fail while the server is down.
        out.sync_all().is_ok()
    });
    // Kill the server while the upload runs, then bring it back.
    std::thread::sleep(Duration::from_millis(1500));
    server.kill();
    std::thread::sleep(Duration::from_secs(2));
    server.restart();
    let synced = copier.join().expect("copier");
    if !synced {
        // The failed upload is retried by the write-back worker.
        wait_until("the upload to complete", Duration::from_secs(120), || {
            m.panfs(&["status"], "")
                .stdout
                .windows(12)
                .any(|w| w == b"0 files / 0 ")
        });
    }
    // Read through a fresh mount so nothing local can answer.
    let fresh = Mount::new(&server, "alice");
    wait_until("the content to match", Duration::from_secs(120), || {
        sha256_file(&fresh.p("big")) == want
    });
}

#[test]
fn writeback_close_returns_and_reads_see_new_data() {
    let server = Server::start();
    let m = Mount::with_args(&server, "alice", &["--writeback"]);
    let data = Noise::bytes(24, 2 << 20);
    std::fs::write(m.p("wb"), &data).expect("write");
    assert_eq!(std::fs::read(m.p("wb")).expect("read back"), data);
    let other = Mount::new(&server, "alice");
    wait_until("the upload", Duration::from_secs(60), || {
        std::fs::read(other.p("wb")).is_ok_and(|d| d == data)
    });
}

#[test]
fn server_down_gives_eio_cached_data_stays_readable_and_uploads_resume() {
    let mut server = Server::start();
    let m = Mount::with_args(&server, "alice", &["--timeout", "3"]);
    let cached = Noise::bytes(25, 3 << 20);
    std::fs::write(m.p("cached"), &cached).expect("write");
    assert_eq!(std::fs::read(m.p("cached")).expect("read"), cached);
    let mut pending = std::fs::File::create(m.p("pending")).expect("create");
    server.kill();
    // Reads of what was read before still work.
    assert_eq!(
        std::fs::read(m.p("cached")).expect("read while the server is down"),
        cached
    );
    // New work fails with EIO, promptly.
    let err = std::fs::write(m.p("new"), b"x").expect_err("no server");
    assert_eq!(err.raw_os_error(), Some(libc::EIO));
    // A close that cannot upload reports EIO and keeps the data journaled.
    pending
        .write_all(b"written while the server was down")
        .expect("write locally");
    let closed = pending.sync_all();
    assert_eq!(
        closed
            .expect_err("fsync cannot reach the server")
            .raw_os_error(),
        Some(libc::EIO)
    );
    drop(pending);
    server.restart();
    let other = Mount::new(&server, "alice");
    wait_until(
        "the journaled upload to resume",
        Duration::from_secs(90),
        || {
            std::fs::read(other.p("pending"))
                .is_ok_and(|d| d == b"written while the server was down")
        },
    );
}

#[test]
fn panfs_killed_while_a_file_is_sent_as_it_is_written_loses_nothing_fsynced() {
    let server = Server::start();
    let mut m = Mount::new(&server, "alice");
    let data = Noise::bytes(31, 160 << 20);
    let synced = 64 << 20;
    let mut file = std::fs::File::create(m.p("big")).expect("create");
    file.write_all(&data[..synced]).expect("write");
    file.sync_all().expect("fsync");
    // More, sent while it is written, then panfs dies before any close.
    file.write_all(&data[synced..]).expect("write");
    wait_until(
        "chunks sent while the file is written",
        Duration::from_secs(30),
        || m.record()["bytes_sent_ahead"].as_u64().unwrap_or(0) > 0,
    );
    m.kill();
    drop(file);
    m.mount();
    m.sync();
    // What fsync acknowledged is there, and nothing that was never written.
    let fresh = Mount::with_args(&server, "alice", &["--sync-mode", "strict"]);
    let got = std::fs::read(fresh.p("big")).expect("read");
    assert!(
        got.len() >= synced,
        "{} bytes left of {synced} fsync'd",
        got.len()
    );
    assert!(
        got[..] == data[..got.len()],
        "bytes that were never written"
    );
}

/// `panfs status` asks the daemon for its figures, rather than show the ones
/// it wrote up to a second ago: right after an `fsync` returns, they count
/// the file's bytes as sent and nothing as pending. Three rounds, so that a
/// periodic write landing just in time cannot pass it by luck.
#[test]
fn panfs_status_counts_what_an_fsync_just_sent() {
    let server = Server::start();
    let m = Mount::new(&server, "status-now");
    let mut written = 0;
    for round in 1..=3 {
        let size = round << 20;
        m.sh(&format!(
            "head -c {size} /dev/urandom > f{round} && sync f{round}"
        ));
        written += size;
        let out = String::from_utf8_lossy(&m.panfs(&["status"], "").stdout).into_owned();
        let sent: u64 = out
            .split(" bytes sent (")
            .next()
            .and_then(|before| before.rsplit(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no bytes sent in {out}"));
        assert!(
            sent >= written,
            "round {round}: {sent} bytes sent of {written}: {out}"
        );
        assert!(
            out.contains("0 files / 0 bytes pending upload"),
            "round {round}: {out}"
        );
    }
}
