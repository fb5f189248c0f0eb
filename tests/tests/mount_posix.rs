//! POSIX beyond files and folders, on a real mount: FIFOs, sockets and device
//! nodes; extended attributes; fallocate; and the mount's type. Each is checked
//! against what ext4 gives, across a second mount of the account and a remount.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt};
use std::path::Path;
use std::time::Duration;

use pantests::tree::tree;
use pantests::{Api, Mount, PASSWORD, Server, posix};

fn errno<T: std::fmt::Debug>(r: std::io::Result<T>) -> i32 {
    r.expect_err("should fail")
        .raw_os_error()
        .expect("an errno")
}

/// Type and device number of a path, as `stat` shows them.
fn kind_and_rdev(path: &Path) -> (&'static str, u64) {
    let m = std::fs::symlink_metadata(path).expect("stat");
    let t = m.file_type();
    let kind = if t.is_fifo() {
        "fifo"
    } else if t.is_socket() {
        "socket"
    } else if t.is_char_device() {
        "chardev"
    } else if t.is_block_device() {
        "blockdev"
    } else if t.is_dir() {
        "dir"
    } else if t.is_symlink() {
        "symlink"
    } else {
        "file"
    };
    (kind, m.rdev())
}

const CHR: u64 = 120 << 8 | 7;
const BLK: u64 = 121 << 8 | 9;

fn assert_specials(m: &Mount, names: [&str; 4]) {
    let [fifo, sock, chr, blk] = names;
    assert_eq!(kind_and_rdev(&m.p(fifo)), ("fifo", 0));
    assert_eq!(kind_and_rdev(&m.p(sock)).0, "socket");
    assert_eq!(kind_and_rdev(&m.p(chr)), ("chardev", CHR));
    assert_eq!(kind_and_rdev(&m.p(blk)), ("blockdev", BLK));
}

#[test]
fn fifos_sockets_and_devices_are_nodes_every_mount_sees() {
    let server = Server::start();
    let mut a = Mount::new(&server, "alice");
    let b = Mount::new(&server, "alice");
    a.sh("mkfifo fifo");
    let listener = std::os::unix::net::UnixListener::bind(a.p("sock")).expect("bind a socket");
    posix::mknod(&a.p("chr"), libc::S_IFCHR | 0o600, libc::makedev(120, 7)).expect("mknod chr");
    posix::mknod(&a.p("blk"), libc::S_IFBLK | 0o600, libc::makedev(121, 9)).expect("mknod blk");
    assert_specials(&a, ["fifo", "sock", "chr", "blk"]);
    // Another mount sees them once this one synced (local-first: at once in strict mode).
    a.sync();
    assert_specials(&b, ["fifo", "sock", "chr", "blk"]);

    // The socket works: a client connects through its name on the mount.
    let mut client = std::os::unix::net::UnixStream::connect(a.p("sock")).expect("connect");
    let (mut served, _) = listener.accept().expect("accept");
    client.write_all(b"ping").expect("send");
    let mut got = [0u8; 4];
    served.read_exact(&mut got).expect("receive");
    assert_eq!(&got, b"ping");
    // So does the FIFO, as a shell script uses one.
    let writer = std::thread::spawn({
        let path = a.p("fifo");
        move || std::fs::write(path, b"through the pipe").expect("write the fifo")
    });
    assert_eq!(
        std::fs::read(a.p("fifo")).expect("read the fifo"),
        b"through the pipe"
    );
    writer.join().expect("writer");

    // The API lists them with their type and refuses their content.
    let api = {
        let mut api = Api::new(&server.url());
        api.signin("alice", PASSWORD).expect("signin");
        api
    };
    let root = api.root();
    let (status, listing) = api.get(&format!("/api/v1/nodes/{root}/children"));
    assert_eq!(status, 200);
    let kinds: Vec<(String, String)> = listing["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap_or_default().to_string(),
                e["node"]["kind"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    for (name, kind) in [
        ("blk", "blockdev"),
        ("chr", "chardev"),
        ("fifo", "fifo"),
        ("sock", "socket"),
    ] {
        assert!(
            kinds.contains(&(name.to_string(), kind.to_string())),
            "{name} as {kind} in {kinds:?}"
        );
    }
    let fifo_ino = std::fs::metadata(a.p("fifo")).expect("stat").ino();
    let (status, body) = api.get(&format!("/api/v1/nodes/{fifo_ino}/content"));
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("not_regular_file"))
    );
    let (status, _) = api.get("/api/v1/files/fifo");
    assert_eq!(status, 409);

    // They live like any node: rename, link, chmod, chown, utimensat, unlink.
    a.sh(
        "mv fifo fifo2 && ln chr chr2 && chmod 0640 blk && chown 1:2 blk \
         && touch -h -d @1000000000 sock && rm chr",
    );
    let chr2 = std::fs::metadata(a.p("chr2")).expect("chr2");
    assert_eq!((chr2.nlink(), chr2.rdev()), (1, CHR));
    let blk = std::fs::metadata(a.p("blk")).expect("blk");
    assert_eq!((blk.mode() & 0o7777, blk.uid(), blk.gid()), (0o640, 1, 2));
    assert_eq!(
        std::fs::symlink_metadata(a.p("sock"))
            .expect("sock")
            .mtime(),
        1_000_000_000
    );
    assert!(!a.p("fifo").exists() && !a.p("chr").exists());
    drop((client, served, listener));

    // A remount finds them all again.
    a.umount();
    a.mount();
    assert_specials(&a, ["fifo2", "sock", "chr2", "blk"]);
    server.assert_consistent("after special files");
}

#[test]
fn extended_attributes_behave_as_on_ext4() {
    let server = Server::start();
    let mut a = Mount::new(&server, "alice");
    let b = Mount::new(&server, "alice");
    let f = a.p("f");
    std::fs::write(&f, b"data").expect("write");
    let ctime = |p: &Path| std::fs::metadata(p).expect("stat").ctime_nsec();
    let before = std::fs::metadata(&f).expect("stat");

    assert_eq!(errno(posix::get_xattr(&f, "user.a")), libc::ENODATA);
    std::thread::sleep(Duration::from_millis(20));
    posix::set_xattr(&f, "user.a", b"first", 0).expect("set user.a");
    let after = std::fs::metadata(&f).expect("stat");
    assert!(
        (after.ctime(), after.ctime_nsec()) > (before.ctime(), before.ctime_nsec()),
        "setxattr must update ctime"
    );
    assert_eq!(posix::get_xattr(&f, "user.a").expect("get"), b"first");
    // Flags: create refuses an existing name, replace a missing one.
    assert_eq!(
        errno(posix::set_xattr(&f, "user.a", b"x", libc::XATTR_CREATE)),
        libc::EEXIST
    );
    assert_eq!(
        errno(posix::set_xattr(&f, "user.zz", b"x", libc::XATTR_REPLACE)),
        libc::ENODATA
    );
    posix::set_xattr(&f, "user.a", b"second", libc::XATTR_REPLACE).expect("replace");
    // A buffer too small is ERANGE; size 0 asks for the size.
    assert_eq!(errno(posix::get_xattr_sized(&f, "user.a", 2)), libc::ERANGE);
    assert_eq!(
        posix::get_xattr_sized(&f, "user.a", 0).expect("size").len(),
        6
    );
    // Limits: a value over 64 KiB is E2BIG; an unknown namespace ENOTSUP.
    assert_eq!(
        errno(posix::set_xattr(&f, "user.big", &vec![1u8; 65_537], 0)),
        libc::E2BIG
    );
    posix::set_xattr(&f, "user.max", &vec![7u8; 65_536], 0).expect("a 64 KiB value");
    assert_eq!(
        errno(posix::set_xattr(&f, "os2.name", b"x", 0)),
        libc::ENOTSUP
    );
    // Root may use trusted. and security.; directories carry attributes too.
    posix::set_xattr(&f, "trusted.t", b"root's", 0).expect("trusted");
    posix::set_xattr(&f, "security.s", b"label", 0).expect("security");
    std::fs::create_dir(a.p("d")).expect("mkdir");
    posix::set_xattr(&a.p("d"), "user.dir", b"on a folder", 0).expect("dir xattr");
    assert_eq!(
        posix::list_xattrs(&f).expect("list"),
        ["security.s", "trusted.t", "user.a", "user.max"]
    );
    let c = ctime(&f);
    posix::remove_xattr(&f, "user.max").expect("remove");
    assert_ne!(ctime(&f), c, "removexattr must update ctime");
    assert_eq!(errno(posix::remove_xattr(&f, "user.max")), libc::ENODATA);
    assert_eq!(errno(posix::get_xattr(&f, "user.max")), libc::ENODATA);

    // Every mount sees them, and so does a remount.
    let want = tree(a.root());
    assert_eq!(tree(b.root()), want);
    a.umount();
    a.mount();
    assert_eq!(tree(a.root()), want);
    assert_eq!(
        posix::get_xattr(&a.p("f"), "user.a").expect("get"),
        b"second"
    );
}

/// The same fallocate calls on a file in the mount and a local file leave the
/// same bytes and size; punched ranges are holes: not sent, and `du` shrinks.
#[test]
fn fallocate_modes_match_a_local_file() {
    let server = Server::start();
    let mut m = Mount::new(&server, "alice");
    let dir = tempfile::tempdir().expect("tmp");
    let size = 32u64 << 20;
    let data = pantests::Noise::bytes(5, size as usize);
    let open = |p: &Path| {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(p)
            .expect("open");
        f.write_all_at(&data, 0).expect("write");
        f.sync_all().expect("fsync");
        f
    };
    let (local, remote) = (open(&dir.path().join("f")), open(&m.p("f")));
    let du = |p: &Path| std::fs::metadata(p).expect("stat").blocks() * 512;
    let full = du(&m.p("f"));
    let sent_before = m.bytes_sent();
    let calls = [
        (
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            4 << 20,
            24 << 20,
        ),
        (0, size - 100, 1 << 20),
        (libc::FALLOC_FL_KEEP_SIZE, size + (4 << 20), 1 << 20),
        (libc::FALLOC_FL_ZERO_RANGE, 30 << 20, 6 << 20),
        (
            libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE,
            1 << 20,
            100_000,
        ),
    ];
    for (mode, offset, len) in calls {
        posix::fallocate(&local, mode, offset, len).expect("fallocate locally");
        posix::fallocate(&remote, mode, offset, len).expect("fallocate on the mount");
        let (a, b) = (
            local.metadata().expect("stat").len(),
            remote.metadata().expect("stat").len(),
        );
        assert_eq!(b, a, "size after fallocate mode {mode:#x}");
        let (mut x, mut y) = (vec![0u8; a as usize], vec![0u8; a as usize]);
        local.read_exact_at(&mut x, 0).expect("read local");
        remote.read_exact_at(&mut y, 0).expect("read mount");
        assert!(x == y, "bytes after fallocate mode {mode:#x}");
    }
    remote.sync_all().expect("fsync");
    drop((local, remote));
    // The 24 MiB hole was not sent, only the chunks around its edges were.
    let delta = m.bytes_sent() - sent_before;
    assert!(delta < 16 << 20, "{delta} bytes sent for a punched file");
    // Read back from the server after a remount, and `du` shows the holes.
    let want = tree(dir.path());
    m.umount();
    m.mount();
    assert_eq!(tree(m.root()), want);
    assert!(
        du(&m.p("f")) < full - (20 << 20),
        "du {} of a punched file, {full} before",
        du(&m.p("f"))
    );
    server.assert_consistent("after fallocate");
}

/// `cp -a`, `rsync -aX` and `tar --xattrs` keep extended attributes, FIFOs and
/// device nodes, into the mount and back out.
#[test]
fn copies_keep_xattrs_and_special_files() {
    let server = Server::start();
    let m = Mount::new(&server, "alice");
    let dir = tempfile::tempdir().expect("tmp");
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("sub")).expect("mkdir");
    std::fs::write(src.join("a.txt"), b"alpha").expect("write");
    std::fs::write(src.join("sub/b.bin"), pantests::Noise::bytes(3, 300_000)).expect("write");
    posix::set_xattr(&src.join("a.txt"), "user.origin", b"local disk", 0).expect("xattr");
    posix::set_xattr(&src.join("a.txt"), "user.empty", b"", 0).expect("xattr");
    posix::set_xattr(&src.join("sub"), "user.folder", b"yes", 0).expect("xattr");
    posix::set_xattr(&src.join("sub/b.bin"), "user.big", &vec![9u8; 4000], 0).expect("xattr");
    posix::mknod(&src.join("sub/pipe"), libc::S_IFIFO | 0o644, 0).expect("mkfifo");
    posix::mknod(
        &src.join("sub/dev"),
        libc::S_IFCHR | 0o600,
        libc::makedev(122, 1),
    )
    .expect("mknod");
    let want = tree(&src);
    let back = dir.path().join("back");
    let s = src.display();
    let k = back.display();

    m.sh(&format!("cp -a {s} cp"));
    assert_eq!(tree(&m.p("cp")), want, "cp -a into the mount");
    m.sh(&format!("cp -a cp {k}-cp"));
    assert_eq!(tree(Path::new(&format!("{k}-cp"))), want, "cp -a out");

    m.sh(&format!("rsync -aX {s}/ rsync/"));
    assert_eq!(tree(&m.p("rsync")), want, "rsync -aX into the mount");
    m.sh(&format!("rsync -aX rsync/ {k}-rsync/"));
    assert_eq!(
        tree(Path::new(&format!("{k}-rsync"))),
        want,
        "rsync -aX out"
    );

    let x = "--xattrs --xattrs-include='user.*'";
    m.sh(&format!(
        "tar {x} -C {s} -cf {k}.tar . && mkdir tar && tar {x} -C tar -xf {k}.tar"
    ));
    assert_eq!(tree(&m.p("tar")), want, "tar --xattrs into the mount");
    m.sh(&format!(
        "tar {x} -C tar -cf {k}-2.tar . && mkdir {k}-tar && tar {x} -C {k}-tar -xf {k}-2.tar"
    ));
    assert_eq!(
        tree(Path::new(&format!("{k}-tar"))),
        want,
        "tar --xattrs out"
    );
}

#[test]
fn the_mount_shows_its_type_as_fuse_pan() {
    let server = Server::start();
    let m = Mount::new(&server, "alice");
    let root = m.root().to_string_lossy().into_owned();
    let mounts = std::fs::read_to_string("/proc/mounts").expect("/proc/mounts");
    let line = mounts
        .lines()
        .find(|l| l.split(' ').nth(1) == Some(root.as_str()))
        .expect("the mount in /proc/mounts");
    assert_eq!(line.split(' ').nth(2), Some("fuse.pan"), "{line}");
    assert_eq!(
        m.sh(&format!("findmnt -n -o FSTYPE {root}")).trim(),
        "fuse.pan"
    );
    assert!(m.sh("df -T .").contains("fuse.pan"));
}

/// The errno of a terminal's `TCGETS` request on the file at `path` (what
/// `isatty` asks), or 0 if it was answered.
fn tcgets_errno(path: &Path) -> i32 {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(path).expect("open");
    let mut termios = std::mem::MaybeUninit::<libc::termios>::zeroed();
    // SAFETY: the descriptor is open and `termios` has room for the answer.
    let answered = unsafe { libc::ioctl(file.as_raw_fd(), libc::TCGETS, termios.as_mut_ptr()) };
    if answered == 0 {
        return 0;
    }
    std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)
}

#[test]
fn a_terminal_request_on_a_file_fails_as_on_ext4_and_logs_nothing() {
    let server = Server::start();
    let m = Mount::new(&server, "alice");
    std::fs::write(m.p("f"), b"bytes").expect("write");
    let local = tempfile::NamedTempFile::new().expect("a local file");
    let ext4 = tcgets_errno(local.path());
    assert_eq!(ext4, libc::ENOTTY);
    for _ in 0..50 {
        assert_eq!(tcgets_errno(&m.p("f")), ext4);
    }
    // Every `isatty` (Python asks on each open) once left a warning in the
    // log: a log that grows by a line per file opened.
    let log = m.log_tail(10_000);
    assert!(!log.contains("ioctl"), "the log speaks of ioctl:\n{log}");
}
