//! Ordinary tools on a real mount: the bytes and metadata they leave must be
//! what a local disk would give.

use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::Path;

use pantests::tree::assert_same;
use pantests::{Mount, Server, sha256_file, write_noise_file};

#[test]
fn copy_one_gib_and_back() {
    let server = Server::start();
    let mut m = Mount::new(&server, "alice");
    let dir = tempfile::tempdir().expect("tmp");
    let src = dir.path().join("big");
    let want = write_noise_file(&src, 11, 1 << 30);
    std::fs::copy(&src, m.p("big")).expect("cp in");
    assert_eq!(sha256_file(&m.p("big")), want);
    let back = dir.path().join("back");
    std::fs::copy(m.p("big"), &back).expect("cp out");
    assert_eq!(sha256_file(&back), want);
    assert_eq!(std::fs::metadata(m.p("big")).expect("stat").len(), 1 << 30);

    // `cp` inside the mount (copy_file_range) copies on the server: the copy
    // shares the source's chunks, and no data is sent.
    m.sync();
    let sent_before = m.bytes_sent();
    let status = std::process::Command::new("cp")
        .arg(m.p("big"))
        .arg(m.p("copy"))
        .status()
        .expect("cp");
    assert!(status.success());
    m.sync();
    let sent = m.bytes_sent() - sent_before;
    assert!(sent < 1 << 20, "a copy inside the mount sent {sent} bytes");
    assert_eq!(
        m.bytes_copied_on_server(),
        1 << 30,
        "cp copied on the server"
    );
    assert_eq!(std::fs::metadata(m.p("copy")).expect("stat").len(), 1 << 30);
    assert_eq!(sha256_file(&m.p("copy")), want);

    // Read cold from the server, panfs's caches emptied: a 4 KiB random read
    // fetches one small block, not a readahead window.
    m.umount();
    m.empty_cache();
    m.mount();
    let at = 700 << 20;
    let (mut here, mut there) = (vec![0u8; 4096], vec![0u8; 4096]);
    std::fs::File::open(&src)
        .and_then(|f| f.read_exact_at(&mut here, at))
        .expect("read the local file");
    std::fs::File::open(m.p("big"))
        .and_then(|f| f.read_exact_at(&mut there, at))
        .expect("read the mount");
    assert!(here == there, "a cold random read gave other bytes");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let fetched = m.bytes_fetched();
    assert!(
        fetched <= 1 << 20,
        "a 4 KiB cold read fetched {fetched} bytes"
    );
    assert_eq!(sha256_file(&m.p("big")), want, "a cold sequential read");
}

/// 10,000 files in 10 folders; `PAN_SMALL_FILES` sets another count (scripts/test.sh
/// uses 500 on the full stack, where each file costs several MariaDB commits and
/// a confirmed RabbitMQ publish, to keep CI within its time).
#[test]
fn ten_thousand_small_files() {
    let count: usize = pantests::setting("PAN_SMALL_FILES", || 10_000);
    let server = Server::start();
    let m = Mount::new(&server, "alice");
    let dir = tempfile::tempdir().expect("tmp");
    let src = dir.path().join("many");
    for d in 0..10 {
        std::fs::create_dir_all(src.join(format!("d{d}"))).expect("mkdir");
        for f in 0..count.div_ceil(10) {
            std::fs::write(
                src.join(format!("d{d}/f{f}")),
                format!("file {d}/{f}\n").repeat(f % 7 + 1),
            )
            .expect("write");
        }
    }
    let status = std::process::Command::new("cp")
        .arg("-r")
        .arg(&src)
        .arg(m.p("many"))
        .status()
        .expect("cp");
    assert!(status.success());
    assert_same(&src, &m.p("many"), "the copied tree");
}

/// A tree as a build leaves it: panproto's sources, and beside them binaries of
/// several MiB that are hard-linked under a second name (as cargo's `deps/`
/// and its uplifted binaries are), an executable script and a symlink.
fn build_tree(root: &Path) {
    let sources = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .join("panproto");
    let status = std::process::Command::new("cp")
        .arg("-r")
        .arg(sources.join("src"))
        .arg(sources.join("Cargo.toml"))
        .arg(root)
        .status()
        .expect("cp");
    assert!(status.success());
    let deps = root.join("target/deps");
    std::fs::create_dir_all(&deps).expect("mkdir deps");
    for (i, mib) in [1u64, 3, 9, 17].into_iter().enumerate() {
        let bin = deps.join(format!("tool{i}-0123abcd"));
        write_noise_file(&bin, 40 + i as u64, (mib << 20) + 77);
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::fs::hard_link(&bin, root.join(format!("target/tool{i}"))).expect("ln");
    }
    std::fs::write(
        root.join("target/run.sh"),
        "#!/bin/sh\nexec ./tool0 \"$@\"\n",
    )
    .expect("write");
    std::fs::set_permissions(
        root.join("target/run.sh"),
        std::fs::Permissions::from_mode(0o700),
    )
    .expect("chmod");
    std::os::unix::fs::symlink("deps/tool3-0123abcd", root.join("target/latest")).expect("symlink");
}

#[test]
fn rsync_and_tar_round_trips() {
    let server = Server::start();
    let m = Mount::new(&server, "alice");
    let dir = tempfile::tempdir().expect("tmp");
    let src = dir.path().join("src");
    std::fs::create_dir(&src).expect("mkdir");
    build_tree(&src);
    let back = dir.path().join("back");
    m.sh(&format!("rsync -aH {}/ synced/", src.display()));
    assert_same(&src, &m.p("synced"), "the tree rsync wrote");
    m.sh(&format!("rsync -aH synced/ {}/", back.display()));
    assert_same(&src, &back, "the rsync round trip");
    m.sh(&format!(
        "tar -C {} -cf archive.tar . && mkdir extracted && tar -C extracted -xf archive.tar",
        src.display()
    ));
    assert_same(&src, &m.p("extracted"), "the tar round trip");
    // The hard links are links on the mount too, and stay so on the server.
    let links = |m: &Mount| {
        (0..4)
            .map(|i| {
                let a = std::fs::metadata(m.p(&format!("extracted/target/tool{i}"))).expect("stat");
                let b = std::fs::metadata(m.p(&format!("extracted/target/deps/tool{i}-0123abcd")))
                    .expect("stat");
                (a.ino() == b.ino(), a.nlink())
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(links(&m), vec![(true, 2); 4], "tar's hard links");
    m.sync();
    let other = Mount::new(&server, "alice");
    assert_same(
        &src,
        &other.p("extracted"),
        "the extracted tree seen from another mount",
    );
    assert_eq!(
        links(&other),
        vec![(true, 2); 4],
        "tar's hard links seen from another mount"
    );
}

#[test]
fn mv_ln_chmod_touch_truncate_dd() {
    let server = Server::start();
    let m = Mount::new(&server, "alice");
    // mv of a directory tree keeps every file.
    m.sh("mkdir -p a/b/c && echo one > a/b/c/f && echo two > a/g && mv a z");
    assert_eq!(std::fs::read_to_string(m.p("z/b/c/f")).expect("f"), "one\n");
    assert!(!m.p("a").exists());
    // Moving a directory into itself fails as on ext4.
    let out = std::process::Command::new("mv")
        .arg("z")
        .arg("z/b/")
        .current_dir(m.root())
        .output()
        .expect("mv");
    assert!(!out.status.success());
    // ln and ln -s.
    m.sh("ln z/g hard && ln -s z/g soft");
    assert_eq!(std::fs::metadata(m.p("hard")).expect("hard").nlink(), 2);
    assert_eq!(
        std::fs::read_link(m.p("soft")).expect("soft").to_str(),
        Some("z/g")
    );
    assert_eq!(
        std::fs::read_to_string(m.p("soft")).expect("via soft"),
        "two\n"
    );
    assert_eq!(
        std::fs::metadata(m.p("hard")).expect("hard").ino(),
        std::fs::metadata(m.p("z/g")).expect("g").ino()
    );
    // chmod and touch -d.
    m.sh("chmod 640 hard && touch -d '2001-02-03 04:05:06 UTC' hard");
    let meta = std::fs::metadata(m.p("z/g")).expect("g");
    assert_eq!(meta.permissions().mode() & 0o7777, 0o640);
    assert_eq!(meta.mtime(), 981173106);
    // truncate up and down.
    m.sh("printf 0123456789 > t && truncate -s 4 t && truncate -s 8 t");
    assert_eq!(std::fs::read(m.p("t")).expect("t"), b"0123\0\0\0\0");
    // dd with seek and notrunc: only the written bytes change.
    m.sh(
        "head -c 3000000 /dev/urandom > d.bin && cp d.bin /tmp/pan-dd-$$ && \
          dd if=/dev/zero of=d.bin bs=4096 count=3 seek=100 conv=notrunc status=none && \
          dd if=/dev/zero of=/tmp/pan-dd-$$ bs=4096 count=3 seek=100 conv=notrunc status=none && \
          cmp d.bin /tmp/pan-dd-$$ && rm /tmp/pan-dd-$$",
    );
    // Writes past the end leave a hole of zeros.
    m.sh("dd if=/dev/urandom of=sparse bs=1k count=1 seek=5000 status=none");
    let sparse = std::fs::read(m.p("sparse")).expect("sparse");
    assert_eq!(sparse.len(), 5001 * 1024);
    assert!(sparse[..5000 * 1024].iter().all(|&b| b == 0));
}

#[test]
fn git_and_a_shell_script_log() {
    let server = Server::start();
    let m = Mount::new(&server, "alice");
    let out = m.sh(
        "git init -q repo && cd repo && git config user.email t@example.com && git config user.name t && \
         echo hello > README && git add README && git commit -qm first && \
         echo more >> README && git commit -qam second && git log --oneline | wc -l && git status --porcelain",
    );
    assert_eq!(out.trim(), "2");
    m.sh("for i in $(seq 1 200); do echo \"line $i\" >> log.txt; done");
    let log = std::fs::read_to_string(m.p("log.txt")).expect("log");
    assert_eq!(log.lines().count(), 200);
    assert_eq!(log.lines().last(), Some("line 200"));
}

#[test]
fn errno_values_match_a_local_disk() {
    let server = Server::start();
    let m = Mount::new(&server, "alice");
    let errno = |r: std::io::Result<()>| r.expect_err("must fail").raw_os_error();
    m.sh("mkdir d && echo x > d/f && echo y > f");
    assert_eq!(errno(std::fs::create_dir(m.p("d"))), Some(libc::EEXIST));
    assert_eq!(errno(std::fs::remove_dir(m.p("d"))), Some(libc::ENOTEMPTY));
    assert_eq!(
        errno(std::fs::remove_file(m.p("missing"))),
        Some(libc::ENOENT)
    );
    assert_eq!(errno(std::fs::remove_file(m.p("d"))), Some(libc::EISDIR));
    assert_eq!(
        errno(std::fs::create_dir(m.p("f/sub"))),
        Some(libc::ENOTDIR)
    );
    assert_eq!(
        errno(std::fs::write(m.p(&"n".repeat(256)), b"x")),
        Some(libc::ENAMETOOLONG)
    );
    let excl = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(m.p("f"))
        .map(|_| ());
    assert_eq!(errno(excl), Some(libc::EEXIST));
    assert!(std::fs::write(m.p(&"n".repeat(255)), b"x").is_ok());
    // Renames within the mount never give EXDEV.
    std::fs::rename(m.p("d/f"), m.p("moved")).expect("rename across directories");
    // O_APPEND and O_TRUNC.
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(m.p("f"))
            .expect("append");
        f.write_all(b"z\n").expect("write");
    }
    assert_eq!(std::fs::read(m.p("f")).expect("f"), b"y\nz\n");
    std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(m.p("f"))
        .expect("trunc");
    assert_eq!(std::fs::read(m.p("f")).expect("f").len(), 0);
    // Extended attributes: a supported namespace works, another is ENOTSUP (as on ext4).
    pantests::posix::set_xattr(&m.p("f"), "user.x", b"v", 0).expect("user.x");
    assert_eq!(
        pantests::posix::set_xattr(&m.p("f"), "os2.x", b"v", 0)
            .expect_err("an unknown namespace")
            .raw_os_error(),
        Some(libc::ENOTSUP)
    );
}

#[test]
fn unlinked_open_file_stays_readable() {
    use std::io::{Read, Seek, Write};
    let server = Server::start();
    let m = Mount::new(&server, "alice");
    std::fs::write(m.p("f"), vec![7u8; 3 << 20]).expect("write");
    let mut f = std::fs::File::open(m.p("f")).expect("open");
    std::fs::remove_file(m.p("f")).expect("unlink");
    assert!(!m.p("f").exists());
    let mut all = Vec::new();
    f.read_to_end(&mut all).expect("read after unlink");
    assert_eq!(all, vec![7u8; 3 << 20]);
    // Also a file written after its unlink.
    let mut g = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(m.p("g"))
        .expect("g");
    std::fs::remove_file(m.p("g")).expect("unlink g");
    g.write_all(b"still here").expect("write");
    g.rewind().expect("seek");
    let mut s = String::new();
    g.read_to_string(&mut s).expect("read");
    assert_eq!(s, "still here");
}
