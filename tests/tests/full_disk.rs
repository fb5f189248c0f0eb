//! Full disks: the server's staging disk and panfs's local disk (its state directory), each a small
//! tmpfs filled on purpose. Clients get ENOSPC or 507 `no_space`, nothing
//! stored before is damaged, and work resumes once space is freed. Needs root.

use std::process::Command;
use std::time::Duration;

use pantests::mount::Mount;
use pantests::{Api, Noise, Server, SmallDisk, sha256_file, wait_until, write_noise_file};
use sha2::{Digest, Sha256};

fn sha(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

#[test]
fn staging_disk_full_gives_507_and_enospc_then_recovers() {
    let staging = SmallDisk::new(48);
    let server = Server::start_with(&[("PAN_STAGING_DIR", staging.path.to_str().expect("utf-8"))]);
    let api = Api::user(&server.url(), "fiona", pantests::PASSWORD);
    let before = Noise::bytes(1, 3 << 20);
    assert_eq!(
        api.put_bytes("/api/v1/files/before.bin", before.clone()).0,
        201
    );

    let filler = staging.fill(4);
    let big = Noise::bytes(2, 24 << 20);
    let (s, body) = api.put_bytes("/api/v1/files/big.bin", big.clone());
    assert_eq!(
        (s, body["code"].as_str()),
        (507, Some("no_space")),
        "{body}"
    );
    let (s, _) = api.get("/api/v1/stat/big.bin");
    assert_eq!(s, 404, "a refused upload leaves no file");

    // Through a mount: the fsync of a file that cannot be stored fails with
    // ENOSPC (local-first, close returns before the upload; strict, close fails too).
    let mount = Mount::new(&server, "fiona");
    let src = tempfile::tempdir().expect("dir");
    let local = src.path().join("big.bin");
    std::fs::write(&local, &big).expect("write");
    let out = Command::new("sh")
        .arg("-c")
        .arg("cp \"$0\" \"$1\" && sync \"$1\"")
        .arg(&local)
        .arg(mount.p("copy.bin"))
        .output()
        .expect("cp");
    assert!(
        !out.status.success(),
        "cp and sync onto a full server must fail"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("No space left on device"), "cp said: {err}");

    // What was stored before is intact.
    assert_eq!(
        sha(&api.content_at("/api/v1/files/before.bin")),
        sha(&before)
    );
    assert_eq!(sha256_file(&mount.p("before.bin")), sha(&before));

    // Space back: the journaled copy is uploaded by itself, and new uploads work.
    std::fs::remove_file(filler).expect("free space");
    wait_until(
        "the journaled copy to reach the server",
        Duration::from_secs(120),
        || api.get("/api/v1/stat/copy.bin").1["size"] == big.len(),
    );
    assert_eq!(sha(&api.content_at("/api/v1/files/copy.bin")), sha(&big));
    assert_eq!(api.put_bytes("/api/v1/files/big.bin", big.clone()).0, 201);
    server.assert_consistent("after the disk filled up");
}

#[test]
fn local_disk_full_gives_enospc_and_keeps_earlier_files() {
    let server = Server::start();
    let mut mount = Mount::new(&server, "gus");
    mount.umount();
    // Working copies of files being written live in the state directory.
    let disk = SmallDisk::mount_on(&mount.state_dir(), 40);
    mount.mount();

    let src = tempfile::tempdir().expect("dir");
    let small = src.path().join("small.bin");
    let small_sha = write_noise_file(&small, 3, 2 << 20);
    mount.sh(&format!("cp {} small.bin", small.display()));

    // A file larger than the local disk: the writes fail with ENOSPC.
    let out = Command::new("dd")
        .args(["if=/dev/zero", "bs=1M", "count=80", "conv=fsync"])
        .arg(format!("of={}", mount.p("huge.bin").display()))
        .output()
        .expect("dd");
    assert!(
        !out.status.success(),
        "writing past the local disk must fail"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("No space left on device"), "dd said: {err}");

    // Earlier files are intact; removing the failed file frees the space.
    assert_eq!(sha256_file(&mount.p("small.bin")), small_sha);
    std::fs::remove_file(mount.p("huge.bin")).expect("rm");
    // The space comes back once panfs drops the working copy: at the unlink,
    // or at the release of dd's handle if that comes later (the kernel sends
    // a release after the process closed the file, and may send it after the
    // rm), or once a send of the file's first part that holds it open ends.
    wait_until(
        "the removed file's space to come back",
        Duration::from_secs(30),
        || disk.free_bytes() >= 16 << 20,
    );
    let again = src.path().join("again.bin");
    let again_sha = write_noise_file(&again, 4, 8 << 20);
    mount.sh(&format!("cp {} again.bin && sync", again.display()));
    assert_eq!(sha256_file(&mount.p("again.bin")), again_sha);
    mount.umount();
    drop(disk);
}
