//! The command line: every option is documented in --help.

use std::process::Command;

fn help(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_panserver"))
        .args(args)
        .arg("--help")
        .output()
        .expect("run panserver");
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn help_documents_every_option() {
    let serve = help(&["serve"]);
    for flag in [
        "--listen",
        "--data",
        "--database-url",
        "--store",
        "--signup",
        "--transfer-workers",
        "PAN_LISTEN",
    ] {
        assert!(serve.contains(flag), "serve --help lacks {flag}:\n{serve}");
    }
    let add = help(&["user", "add"]);
    assert!(add.contains("--password-stdin"));
}

#[test]
fn user_add_then_duplicate_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = |name: &str| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_panserver"))
            .args(["user", "add", name, "--password-stdin", "--data"])
            .arg(dir.path())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn");
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(b"a good password\n")
            .expect("write");
        child.wait_with_output().expect("wait")
    };
    assert!(run("carol").status.success());
    let again = run("carol");
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists"));
}
