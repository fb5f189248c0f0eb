//! The POSIX conformance suite pjdfstest (the Rust port, `cargo install
//! pjdfstest`; scripts/test.sh installs it) on a real mount, as root, with
//! `--allow-other` so its cases that switch to other users reach the mount.
//! It fails on any failure outside the known differences listed (with their
//! reasons) in `tests/pjdfstest/pan.toml`, and prints the counts.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use pantests::{Mount, Server};

/// What one run of pjdfstest found.
#[derive(Debug, Default)]
struct Outcome {
    /// "failed", "skipped", "passed", "expected failures", "total".
    counts: Vec<(String, u64)>,
    /// Each failed case with the reason pjdfstest printed.
    failures: Vec<String>,
}

impl Outcome {
    fn count(&self, what: &str) -> u64 {
        self.counts
            .iter()
            .find(|(w, _)| w == what)
            .map_or(0, |(_, n)| *n)
    }
}

/// Parses pjdfstest's output: "name   FAILED" lines, the reason on the next
/// line, and the last line "Summary: F failed, S skipped, P passed, …".
fn parse(stdout: &str) -> Option<Outcome> {
    let lines: Vec<&str> = stdout.lines().collect();
    let failures = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.contains("FAILED") || l.contains("PASSED UNEXPECTEDLY"))
        .map(|(i, l)| {
            let case = l.split_whitespace().collect::<Vec<_>>().join(" ");
            match lines.get(i + 1).filter(|r| r.starts_with('\t')) {
                Some(reason) => format!("{case}: {}", reason.trim()),
                None => case,
            }
        })
        .collect();
    let summary = lines.iter().rev().find(|l| l.starts_with("Summary:"))?;
    let counts = summary
        .trim_start_matches("Summary:")
        .split(',')
        .map(|part| {
            let (n, what) = part.trim().split_once(' ')?;
            Some((what.to_string(), n.parse().ok()?))
        })
        .collect::<Option<_>>()?;
    Some(Outcome { counts, failures })
}

/// A directory holding a `mount` that remounts by itself. pjdfstest's EROFS
/// cases run `mount -o remount,ro PATH`; for a `fuse.pan` mount util-linux hands
/// that to FUSE's `mount.fuse` helper (when fuse3 is installed), which tries to
/// start a program named after the subtype. `-i` skips helpers: the kernel
/// remounts, as it does for any file system.
fn internal_mount(dir: &Path) -> std::path::PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).expect("mkdir");
    let mount = bin.join("mount");
    std::fs::write(&mount, "#!/bin/sh\nexec /bin/mount -i \"$@\"\n").expect("write");
    std::fs::set_permissions(&mount, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    bin
}

fn run(config: &Path, work: &Path, secondary: &Path, patterns: &[&str]) -> Outcome {
    std::fs::create_dir(work).expect("mkdir");
    let shim = internal_mount(secondary.parent().expect("scratch"));
    let path = format!(
        "{}:{}",
        shim.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("pjdfstest")
        .arg("-c")
        .arg(config)
        .arg("-p")
        .arg(work)
        .arg("-s")
        .arg(secondary)
        .args(patterns)
        .current_dir(work)
        .env("NO_COLOR", "1")
        .env("PATH", path)
        .output()
        .expect("pjdfstest is installed (scripts/test.sh runs `cargo install pjdfstest --locked`)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    parse(&stdout).unwrap_or_else(|| {
        panic!(
            "no summary from pjdfstest:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[test]
fn pjdfstest_passes_but_for_known_differences() {
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("pjdfstest/pan.toml");
    let server = Server::start();
    let m = Mount::with_args(&server, "alice", &["--allow-other"]);
    // Its cases run as other users (nobody, daemon): they must reach the mount.
    for dir in [m.root().parent().expect("mount home"), m.root()] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let scratch = tempfile::tempdir_in("/var/tmp").expect("a directory on another file system");
    std::fs::set_permissions(scratch.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod");
    let secondary = scratch.path().join("secondary");
    std::fs::create_dir(&secondary).expect("mkdir");
    std::fs::set_permissions(&secondary, std::fs::Permissions::from_mode(0o755)).expect("chmod");

    // The read-only remount cases first, on a mount nothing holds open yet.
    let text = std::fs::read_to_string(&config).expect("config");
    assert!(text.contains("allow_remount = false"));
    let remount_config = scratch.path().join("remount.toml");
    std::fs::write(
        &remount_config,
        text.replace("allow_remount = false", "allow_remount = true"),
    )
    .expect("write config");
    let erofs = run(&remount_config, &m.p("erofs"), &secondary, &["erofs"]);
    let all = run(&config, &m.p("all"), &secondary, &[]);
    println!("pjdfstest on pan, the EROFS cases: {:?}", erofs.counts);
    println!("pjdfstest on pan, the whole suite: {:?}", all.counts);
    let failures: Vec<&String> = erofs.failures.iter().chain(&all.failures).collect();
    for f in &failures {
        println!("  {f}");
    }
    assert!(erofs.count("passed") > 0, "the EROFS cases ran");
    assert_eq!(
        erofs.count("failed") + all.count("failed"),
        0,
        "pjdfstest failures: {failures:#?}"
    );
}
