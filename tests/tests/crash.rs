//! The crash matrix. Each fault strikes while a mount is busy with two writers
//! at once: a 1 GiB file (`cp` then `sync FILE`, i.e. fsync) and a burst of 200
//! small files, each fsync'd. Afterwards everything a writer saw fsync'd reads
//! back hash-equal, what was not yet promised can be written again, and
//! `panserver check` finds nothing wrong. Faults: SIGKILL of panserver, of panfs
//! (the journal resumes at remount), and on the full stack of a transfer worker,
//! restarts of MariaDB, Redis and RabbitMQ in turn, and the S3 store down for a minute.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pantests::mount::Mount;
use pantests::{Noise, Server, profile, services, sha256_file, wait_until, write_noise_file};

const BIG: u64 = 1 << 30;
const SMALL_FILES: u64 = 400;

/// The sources, written once and shared by every case.
struct Sources {
    _dir: tempfile::TempDir,
    big: PathBuf,
    big_sha: String,
    small_dir: PathBuf,
    small_sha: BTreeMap<String, String>,
}

impl Sources {
    fn new() -> Self {
        let dir = tempfile::tempdir_in("/var/tmp").expect("dir");
        let big = dir.path().join("big.bin");
        let big_sha = write_noise_file(&big, 7, BIG);
        let small_dir = dir.path().join("small");
        std::fs::create_dir_all(&small_dir).expect("dir");
        let small_sha = (0..SMALL_FILES)
            .map(|i| {
                let name = format!("s{i:03}");
                let len = 1 + (Noise::new(i).next() % (64 << 10));
                (
                    name.clone(),
                    write_noise_file(&small_dir.join(&name), 100 + i, len),
                )
            })
            .collect();
        Self {
            _dir: dir,
            big,
            big_sha,
            small_dir,
            small_sha,
        }
    }
}

trait NoiseExt {
    fn next(&mut self) -> u64;
}

impl NoiseExt for Noise {
    fn next(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.fill(&mut b);
        u64::from_le_bytes(b)
    }
}

/// The two writers, as shell processes (they may die with the mount).
struct Writers {
    big: Child,
    burst: Child,
}

fn shell(script: &str) -> Child {
    Command::new("bash")
        .args(["-c", script])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("bash")
}

impl Writers {
    fn start(src: &Sources, mount: &Mount) -> Self {
        std::fs::create_dir_all(mount.p("small")).expect("mkdir on the mount");
        let big = shell(&format!(
            "cp {} {dst} && sync {dst} && echo synced",
            src.big.display(),
            dst = mount.p("big.bin").display()
        ));
        let burst = shell(&format!(
            "sleep 3; for f in {}/*; do n=$(basename $f); if cp $f {dst}/$n && sync {dst}/$n; then echo ok $n; else echo fail $n; fi; done",
            src.small_dir.display(),
            dst = mount.p("small").display()
        ));
        Self { big, burst }
    }

    /// What each writer saw through: (the big file was fsync'd, small files fsync'd).
    fn finish(self) -> (bool, Vec<String>) {
        let big = self.big.wait_with_output().expect("big writer");
        let burst = self.burst.wait_with_output().expect("burst writer");
        let synced = String::from_utf8_lossy(&big.stdout).contains("synced");
        let ok = String::from_utf8_lossy(&burst.stdout)
            .lines()
            .filter_map(|l| l.strip_prefix("ok "))
            .map(str::to_string)
            .collect();
        (synced, ok)
    }
}

/// Checks the promises, then rewrites what was not promised and checks it all.
fn verify(src: &Sources, server: &Server, mount: &Mount, synced: bool, ok: &[String], case: &str) {
    if synced {
        assert_eq!(
            sha256_file(&mount.p("big.bin")),
            src.big_sha,
            "{case}: the fsync'd big file"
        );
    }
    for name in ok {
        assert_eq!(
            sha256_file(&mount.p(&format!("small/{name}"))),
            src.small_sha[name],
            "{case}: fsync'd {name}"
        );
    }
    let rewrite = |from: &Path, to: PathBuf| {
        let status = Command::new("bash")
            .args([
                "-c",
                &format!(
                    "cp {} {dst} && sync {dst}",
                    from.display(),
                    dst = to.display()
                ),
            ])
            .status()
            .expect("cp");
        assert!(
            status.success(),
            "{case}: writing {} again after recovery",
            to.display()
        );
    };
    if !synced {
        rewrite(&src.big, mount.p("big.bin"));
        assert_eq!(
            sha256_file(&mount.p("big.bin")),
            src.big_sha,
            "{case}: the big file written again"
        );
    }
    for (name, sha) in &src.small_sha {
        if !ok.contains(name) {
            rewrite(&src.small_dir.join(name), mount.p(&format!("small/{name}")));
        }
        assert_eq!(
            &sha256_file(&mount.p(&format!("small/{name}"))),
            sha,
            "{case}: {name}"
        );
    }
    server.assert_consistent(case);
    // Free the store for the next case (the test Ceph keeps objects in memory).
    mount.sh("rm -rf big.bin small");
    // Local-first, the removal reaches the server in the background: before gc.
    mount.sync();
    let out = server.command(&["gc", "--grace-secs", "0"], "");
    assert!(
        out.status.success(),
        "{case}: gc: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!(
        "{case}: big file fsync'd before the fault: {synced}; small files fsync'd: {}/{SMALL_FILES}; all verified",
        ok.len()
    );
}

/// Waits until both writers are busy: the burst has written some files (it
/// starts once the big file is well under way).
fn busy(mount: &Mount) {
    let start = Instant::now();
    let written = || {
        std::fs::read_dir(mount.p("small"))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    while start.elapsed() < Duration::from_secs(120) && written() < 40 {
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn case(name: &str, env: &[(&str, &str)], fault: impl FnOnce(&mut Server, &mut Mount)) {
    let src = Sources::new();
    let mut server = Server::start_with(env);
    let mut mount = Mount::new(&server, "crash");
    let t = Instant::now();
    let writers = Writers::start(&src, &mount);
    busy(&mount);
    let at = t.elapsed();
    fault(&mut server, &mut mount);
    let recovered = t.elapsed();
    let (synced, ok) = writers.finish();
    let finished = t.elapsed();
    verify(&src, &server, &mount, synced, &ok, name);
    println!(
        "{name}: fault at {at:.1?}, recovered at {recovered:.1?}, writers done at {finished:.1?}, verified at {:.1?}",
        t.elapsed()
    );
}

#[test]
fn panserver_killed_and_restarted() {
    case("SIGKILL panserver", &[], |server, _| {
        server.kill();
        std::thread::sleep(Duration::from_secs(2));
        server.restart();
    });
}

#[test]
fn panfs_killed_and_remounted() {
    case("SIGKILL panfs", &[], |_, mount| {
        mount.kill();
        mount.mount();
    });
}

#[test]
#[ignore = "needs the full stack: scripts/test.sh runs it"]
fn transfer_worker_killed() {
    assert!(profile::is_full());
    let logs = tempfile::tempdir().expect("dir");
    let mut worker: Option<Child> = None;
    case(
        "SIGKILL a transfer worker",
        &[("PAN_TRANSFER_WORKERS", "0")],
        |server, _| {
            let mut first = server.spawn_transfer_worker(&logs.path().join("w1.log"));
            wait_until("transfers to start", Duration::from_secs(60), || {
                server.stored_chunks() > 0
            });
            first.kill().expect("SIGKILL the worker");
            first.wait().expect("reap");
            worker = Some(server.spawn_transfer_worker(&logs.path().join("w2.log")));
        },
    );
    if let Some(mut w) = worker {
        let _ = w.kill();
        let _ = w.wait();
    }
}

#[test]
#[ignore = "needs the full stack: scripts/test.sh runs it"]
fn services_restarted_in_turn() {
    assert!(profile::is_full());
    case("MariaDB, Redis, RabbitMQ restarted", &[], |_, _| {
        for service in ["mariadb", "redis", "rabbitmq"] {
            services(&["restart", service]);
            std::thread::sleep(Duration::from_secs(2));
        }
    });
}

#[test]
#[ignore = "needs the full stack: scripts/test.sh runs it"]
fn store_down_for_a_minute() {
    assert!(profile::is_full());
    let src = Sources::new();
    let server = Server::start();
    let mount = Mount::new(&server, "crash");
    services(&["stop", "rgw"]);
    let down = Instant::now();
    let writers = Writers::start(&src, &mount);
    // Uploads commit to staging while the store is away.
    let (synced, ok) = writers.finish();
    assert!(synced, "the big file commits while the store is down");
    assert_eq!(
        ok.len() as u64,
        SMALL_FILES,
        "every small file commits while the store is down"
    );
    std::thread::sleep(Duration::from_secs(60).saturating_sub(down.elapsed()));
    services(&["start", "rgw"]);
    // Transfers retry with backoff and finish.
    wait_until(
        "staging to drain into the store",
        Duration::from_secs(300),
        || server.files_under("staging").is_empty(),
    );
    verify(
        &src,
        &server,
        &mount,
        synced,
        &ok,
        "S3 store down for a minute",
    );
}
