//! The command line: every documented option is in --help.

use std::process::Command;

fn help(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_panfs"))
        .args(args)
        .arg("--help")
        .output()
        .expect("run panfs");
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn help_documents_every_option() {
    let mount = help(&["mount"]);
    for flag in [
        "--foreground",
        "--cache-dir",
        "--state-dir",
        "--cache-size",
        "--allow-other",
        "--attr-ttl",
        "--entry-ttl",
        "--writeback",
        "--timeout",
    ] {
        assert!(mount.contains(flag), "mount --help lacks {flag}");
    }
    let login = help(&["login"]);
    for flag in ["--server", "--user", "--password-stdin", "--insecure-http"] {
        assert!(login.contains(flag), "login --help lacks {flag}");
    }
    for sub in ["login", "logout", "mount", "umount", "status"] {
        assert!(help(&[]).contains(sub));
    }
}

#[test]
fn mount_without_login_fails_clearly() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = Command::new(env!("CARGO_BIN_EXE_panfs"))
        .args(["mount", "/nonexistent"])
        .env("XDG_CONFIG_HOME", dir.path())
        .env("XDG_CACHE_HOME", dir.path())
        .output()
        .expect("run panfs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not logged in"));
}

#[test]
fn plain_http_to_a_remote_host_is_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = Command::new(env!("CARGO_BIN_EXE_panfs"))
        .args([
            "login",
            "--server",
            "http://pan.example.com",
            "--user",
            "x",
            "--password-stdin",
        ])
        .env("XDG_CONFIG_HOME", dir.path())
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run panfs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--insecure-http"));
}
