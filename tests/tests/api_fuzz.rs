//! Fuzzes the whole HTTP API from its OpenAPI document with schemathesis
//! (valid and invalid requests, stateful sequences): no answer may be a 5xx, and
//! the server must stay up and consistent. scripts/fuzz-deps.sh installs it;
//! PAN_FUZZ_EXAMPLES and PAN_FUZZ_SEED tune a run.

use std::path::Path;
use std::process::Command;

use pantests::{Api, Server};

#[test]
fn schemathesis_finds_no_server_error() {
    let tool =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/schemathesis-venv/bin/schemathesis");
    assert!(
        tool.exists(),
        "schemathesis is missing: run scripts/fuzz-deps.sh (scripts/test.sh does)"
    );
    let server = Server::start();
    let api = Api::user(&server.url(), "fuzzer", "a good password");
    let token = api.token.clone().expect("token");
    // A change feed with history: a generated `since` then rarely equals the
    // current sequence number (which would wait out `wait`).
    for i in 0..5 {
        let path = format!("/api/v1/files/seed-{i}.txt");
        assert_eq!(api.put_bytes(&path, b"seed".to_vec()).0, 201);
    }
    let examples = std::env::var("PAN_FUZZ_EXAMPLES").unwrap_or_else(|_| "40".into());
    let seed = std::env::var("PAN_FUZZ_SEED").unwrap_or_else(|_| rand::random::<u32>().to_string());
    println!("schemathesis seed {seed} (replay with PAN_FUZZ_SEED={seed})");
    let report = tempfile::tempdir().expect("report dir");
    let status = Command::new(&tool)
        .current_dir(report.path())
        .arg("run")
        .arg(format!("{}/api/v1/openapi.yaml", server.url()))
        .args([
            "--checks",
            "not_a_server_error",
            // One worker: with two threads, Python 3.11's `ast` (which
            // hypothesis uses to describe its strategies) once crashed the run
            // with "AST constructor recursion depth mismatch" after every
            // generated case had passed.
            "--workers",
            "1",
            "--max-examples",
            &examples,
            "--seed",
            &seed,
            // A generated `since` that equals the current sequence number
            // waits out the generated `wait` (up to 60 s, the documented
            // maximum) before the feed answers; that is an answer, not a hang.
            "--request-timeout",
            "75",
        ])
        .args(["-H", &format!("Authorization: Bearer {token}")])
        // Signing out or revoking would end the fuzzer's own session.
        .args([
            "--exclude-path",
            "/api/v1/signout",
            "--exclude-path",
            "/api/v1/web/signout",
        ])
        .args(["--exclude-path-regex", "^/api/v1/tokens/"])
        .env("NO_COLOR", "1")
        .status()
        .expect("running schemathesis");
    assert!(
        status.success(),
        "schemathesis found failures (seed {seed})"
    );
    let (s, _) = api.get("/api/v1/user");
    assert_eq!(s, 200, "the server is still up");
    server.assert_consistent("after fuzzing");
}
