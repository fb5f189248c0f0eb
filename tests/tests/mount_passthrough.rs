//! FUSE passthrough, end to end: files wholly on local disk are read and
//! written by the kernel directly, and what it writes still reaches the
//! server. Every test runs twice: with passthrough on (and asserts that it
//! was used) and forced off (`--passthrough off`), where the same bytes must
//! come out of panfs's own read and write path.

use std::os::unix::fs::FileExt;
use std::time::Duration;

use pantests::{Mount, Noise, Server, sha256_file, wait_until, write_noise_file};

const STRICT: &[&str] = &["--sync-mode", "strict"];

/// Passthrough handles the mount opened, once its record caught up.
fn passthrough_opens(m: &Mount) -> u64 {
    std::thread::sleep(Duration::from_millis(1500));
    m.record()["passthrough_opens"].as_u64().unwrap_or(0)
}

fn mount(server: &Server, passthrough: bool) -> Mount {
    let switch = if passthrough { "on" } else { "off" };
    Mount::with_args(
        server,
        "alice",
        &["--passthrough", switch, "--timeout", "20"],
    )
}

/// What the mount says of passthrough, and whether it was used as asked.
fn assert_used(m: &Mount, passthrough: bool, since: u64) -> u64 {
    let opens = passthrough_opens(m);
    let said = m.record()["passthrough"].as_str().unwrap_or("").to_string();
    if passthrough {
        assert_eq!(said, "on", "{}", m.log_tail(30));
        assert!(opens > since, "no handle was opened with passthrough");
    } else {
        assert_eq!(said, "off (--passthrough off)");
        assert_eq!(opens, 0);
    }
    opens
}

fn written_here_reads_back_everywhere(passthrough: bool) {
    let server = Server::start();
    let mut m = mount(&server, passthrough);
    let src = tempfile::tempdir().expect("tempdir");
    let data = src.path().join("data");
    let hash = write_noise_file(&data, 7, (5 << 20) + 123);
    m.sh(&format!("cp {} data", data.display()));
    assert_eq!(sha256_file(&m.p("data")), hash);
    assert_used(&m, passthrough, 0);

    // A reader holding the file open sees what another handle appends, and
    // stat sees the new size.
    let reader = std::fs::File::open(m.p("data")).expect("open for reading");
    m.sh("printf more >> data");
    let mut tail = [0u8; 4];
    reader
        .read_exact_at(&mut tail, (5 << 20) + 123)
        .expect("read the appended bytes");
    assert_eq!(&tail, b"more");
    let size = std::fs::metadata(m.p("data")).expect("stat").len();
    assert_eq!(size, (5 << 20) + 127);
    drop(reader);
    let appended = sha256_file(&m.p("data"));

    // Another mount reads from the server what this one wrote.
    m.sync();
    let other = Mount::with_args(&server, "alice", STRICT);
    assert_eq!(sha256_file(&other.p("data")), appended);

    // After a remount the file is read from local disk, with nothing fetched.
    m.umount();
    m.mount();
    assert_eq!(sha256_file(&m.p("data")), appended);
    assert_eq!(m.bytes_fetched(), 0, "read again from the server");
    let opened = assert_used(&m, passthrough, 0);

    // A write in the middle, then fsync: the other mount sees it.
    m.sh("printf CHANGED | dd of=data bs=1 seek=1000 conv=notrunc,fsync status=none");
    wait_until(
        "the other mount to see the change",
        Duration::from_secs(20),
        || {
            let mut got = [0u8; 7];
            std::fs::File::open(other.p("data"))
                .and_then(|f| f.read_exact_at(&mut got, 1000))
                .is_ok_and(|()| &got == b"CHANGED")
        },
    );
    assert_eq!(sha256_file(&other.p("data")), sha256_file(&m.p("data")));
    assert_used(&m, passthrough, opened);
}

#[test]
fn a_file_written_with_passthrough_reads_back_everywhere() {
    written_here_reads_back_everywhere(true);
}

#[test]
fn a_file_written_without_passthrough_reads_back_everywhere() {
    written_here_reads_back_everywhere(false);
}

/// Another client stores a version while a handle here writes the file:
/// fsync keeps this mount's version as one conflict copy, and the close that
/// follows makes no second one (panfs cannot see a passthrough writer's
/// writes, so its close counts every byte as written again).
fn a_conflict_while_open_keeps_one_copy(passthrough: bool) {
    let server = Server::start();
    let m = mount(&server, passthrough);
    let api = pantests::Api::user(&server.url(), "alice", pantests::PASSWORD);
    std::fs::File::create(m.p("plan.md")).expect("create");
    m.sync();
    m.write_while_another_client_stores(
        &api,
        "plan.md",
        std::fs::OpenOptions::new().write(true),
        b"ours",
    );
    m.sync();
    assert_eq!(
        api.content_at("/api/v1/files/plan.md"),
        b"another client's version of plan.md"
    );
    m.assert_one_conflict_copy("plan", ".md", b"ours");
    assert_used(&m, passthrough, 0);
}

#[test]
fn a_conflict_while_open_with_passthrough_keeps_one_copy() {
    a_conflict_while_open_keeps_one_copy(true);
}

#[test]
fn a_conflict_while_open_without_passthrough_keeps_one_copy() {
    a_conflict_while_open_keeps_one_copy(false);
}

/// A handle writes, fsyncs and closes: the fsync sends the file, and the close
/// sends nothing again (with passthrough, panfs cannot see the handle's writes
/// and must tell from the local file that there were none).
fn a_close_after_fsync_sends_nothing_again(passthrough: bool) {
    use std::io::Write;
    let server = Server::start();
    let m = mount(&server, passthrough);
    std::fs::File::create(m.p("notes.txt")).expect("create");
    m.sync();
    let before = m.bytes_sent();
    let text = Noise::bytes(61, 300 << 10);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(m.p("notes.txt"))
        .expect("open for writing");
    f.write_all(&text).expect("write");
    f.sync_all().expect("fsync");
    let fsynced = m.bytes_sent();
    assert_eq!(
        fsynced - before,
        text.len() as u64,
        "the fsync sent the file"
    );
    drop(f);
    m.sync();
    assert_eq!(m.bytes_sent(), fsynced, "the close sent the file again");
    assert_eq!(std::fs::read(m.p("notes.txt")).expect("read"), text);
    assert_used(&m, passthrough, 0);
}

#[test]
fn a_close_after_fsync_with_passthrough_sends_nothing_again() {
    a_close_after_fsync_sends_nothing_again(true);
}

#[test]
fn a_close_after_fsync_without_passthrough_sends_nothing_again() {
    a_close_after_fsync_sends_nothing_again(false);
}

/// A process that maps a file and closes it keeps reading that file's bytes,
/// even when panfs no longer needs the file's local copy (its content is
/// cached already) and recycles local files for new ones.
#[test]
fn a_mapping_outlives_its_handle_and_keeps_its_bytes() {
    let server = Server::start();
    let m = mount(&server, true);
    let same = vec![b'x'; 4096];
    // The content is cached once; the second file's copy is then not kept.
    std::fs::write(m.p("first"), &same).expect("write first");
    m.sync();
    std::fs::write(m.p("mapped"), &same).expect("write mapped");
    let file = std::fs::File::open(m.p("mapped")).expect("open");
    // SAFETY: a read-only shared mapping of an open file, unmapped below;
    // nothing else in this test maps it.
    let map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            same.len(),
            libc::PROT_READ,
            libc::MAP_SHARED,
            std::os::fd::AsRawFd::as_raw_fd(&file),
            0,
        )
    };
    assert_ne!(map, libc::MAP_FAILED, "mmap");
    drop(file);
    m.sync();
    // New files take local files panfs has spare; none may be the mapped one.
    for i in 0..300 {
        std::fs::write(m.p(&format!("new{i}")), vec![b'0' + (i % 10) as u8; 4096])
            .expect("write a new file");
    }
    m.sync();
    // SAFETY: the mapping is `same.len()` bytes long and still mapped.
    let seen = unsafe { std::slice::from_raw_parts(map as *const u8, same.len()) }.to_vec();
    // SAFETY: unmaps exactly what was mapped above.
    unsafe { libc::munmap(map, same.len()) };
    assert!(seen == same, "the mapping shows other bytes");
}
