//! Hostile and broken HTTP input, by hand: bodies cut short, lying
//! Content-Length, huge headers, invalid JSON, deep paths, expired and revoked
//! tokens; HTTPS with --tls-cert/--tls-key; tokens kept out of the logs.
//! Each answer must be a clear 4xx (never 5xx, never a hang) and the server must
//! stay up and consistent.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use pantests::api::client;
use pantests::{Api, Server, bin, free_port, is_listening, wait_until};
use serde_json::json;

const PW: &str = "a good password";

/// Sends raw bytes, half-closes, and returns the status of the answer (None when
/// the server closed without one, which is also acceptable for garbage).
fn raw(port: u16, bytes: &[u8]) -> Option<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(90)))
        .expect("timeout");
    stream.write_all(bytes).ok()?;
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let head = String::from_utf8_lossy(&answer);
    head.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

fn healthy(server: &Server, api: &Api) {
    let (s, _) = api.get("/api/v1/user");
    assert_eq!(s, 200, "the server still answers");
    server.assert_consistent("after hostile input");
}

#[test]
fn broken_requests_get_clear_errors() {
    let server = Server::start();
    let api = Api::user(&server.url(), "mallory", PW);
    let token = api.token.clone().expect("token");
    let root = api.root();
    let file = api.create(root, "f", "file");
    let port = server.port;

    // A body shorter than its Content-Length: the upload fails and nothing changes.
    let status = raw(
        port,
        format!(
            "PUT /api/v1/nodes/{file}/content HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
             Content-Length: 100000\r\n\r\nonly a little"
        )
        .as_bytes(),
    );
    assert!(
        status.is_none_or(|s| (400..500).contains(&s)),
        "truncated body: {status:?}"
    );
    assert_eq!(
        api.content(file),
        Vec::<u8>::new(),
        "a cut-short upload stores nothing"
    );

    // A Content-Length that is not a number, or two that disagree.
    for lie in [
        "Content-Length: abc\r\n",
        "Content-Length: 5\r\nContent-Length: 6\r\n",
    ] {
        let status = raw(
            port,
            format!("PUT /api/v1/nodes/{file}/content HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n{lie}\r\nhello").as_bytes(),
        );
        assert!(
            status.is_none_or(|s| (400..500).contains(&s)),
            "{lie:?}: {status:?}"
        );
    }

    // Huge headers: refused, no crash.
    let big = "a".repeat(2 << 20);
    let status = raw(
        port,
        format!("GET /api/v1/user HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n").as_bytes(),
    );
    assert!(
        status.is_none_or(|s| (400..500).contains(&s)),
        "huge header: {status:?}"
    );
    // Not HTTP at all.
    assert!(
        raw(port, b"\x16\x03\x01\x02\x00garbage\r\n\r\n").is_none_or(|s| (400..500).contains(&s))
    );

    // Invalid JSON and JSON of the wrong shape.
    for body in [
        "{",
        "[]",
        "{\"name\": 5}",
        "\u{0}",
        "{\"name\":\"x\",\"kind\":\"door\",\"mode\":420}",
    ] {
        let resp = client()
            .post(format!("{}/api/v1/nodes/{root}/children", server.url()))
            .bearer_auth(&token)
            .body(body.to_string())
            .send()
            .expect("post");
        assert_eq!(resp.status(), 400, "body {body:?}");
        let err: serde_json::Value = resp.json().expect("a JSON error");
        assert_eq!(err["code"], "bad_request");
    }

    // Deep paths: a path of 300 levels is refused, 200 levels works.
    let deep: String = (0..300).map(|i| format!("d{i}/")).collect();
    let (s, body) = api.put_bytes(&format!("/api/v1/files/{deep}f"), b"x".to_vec());
    assert_eq!(
        (s, body["code"].as_str()),
        (400, Some("bad_request")),
        "{body}"
    );
    let ok: String = (0..200).map(|i| format!("d{i}/")).collect();
    let (s, _) = api.put_bytes(&format!("/api/v1/files/{ok}f"), b"x".to_vec());
    assert_eq!(s, 201);
    let resp = api.fetch(&format!("/api/v1/files/{ok}f"), None);
    assert_eq!(resp.bytes().expect("bytes").as_ref(), b"x");

    // Names: 256 bytes, NUL, encoded slash, invalid UTF-8 (`..` is in the http tests: clients rewrite it).
    for name in [
        "a".repeat(256),
        "a%00b".into(),
        "a%2Fb".into(),
        "%FF%FE".into(),
    ] {
        let (s, _) = api.put_bytes(&format!("/api/v1/files/{name}"), b"x".to_vec());
        assert_eq!(s, 400, "name {name:?}");
    }

    healthy(&server, &api);
}

#[test]
fn expired_revoked_and_foreign_tokens() {
    let server = Server::start_with(&[("PAN_TOKEN_TTL_DAYS", "0")]);
    let mut api = Api::user(&server.url(), "eve", PW);
    // A token that lives 0 days is expired as soon as it is issued.
    let (s, body) = api.get("/api/v1/user");
    assert_eq!((s, body["code"].as_str()), (401, Some("unauthorized")));
    drop(server);

    let server = Server::start();
    api = Api::user(&server.url(), "eve", PW);
    let (s, _) = api.get("/api/v1/user");
    assert_eq!(s, 200);
    let (s, _) = api.post("/api/v1/signout", &json!({}));
    assert_eq!(s, 204);
    let (s, body) = api.get("/api/v1/user");
    assert_eq!(
        (s, body["code"].as_str()),
        (401, Some("unauthorized")),
        "a revoked token is refused"
    );

    for bad in [
        "",
        "Bearer",
        "Bearer ",
        "Basic abc",
        "Bearer ../../etc/passwd",
        &format!("Bearer {}", "g".repeat(64)),
    ] {
        let resp = client()
            .get(format!("{}/api/v1/user", server.url()))
            .header("authorization", bad)
            .send()
            .expect("get");
        assert_eq!(resp.status(), 401, "{bad:?}");
    }
}

#[test]
fn https_with_tls_cert_and_key() {
    let dir = tempfile::tempdir().expect("dir");
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
        .expect("cert");
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).expect("write cert");
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).expect("write key");
    let server = Server::start_with(&[
        ("PAN_TLS_CERT", cert_path.to_str().expect("utf-8")),
        ("PAN_TLS_KEY", key_path.to_str().expect("utf-8")),
    ]);
    let _ = client(); // installs the TLS provider
    let https = reqwest::blocking::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(cert.cert.pem().as_bytes()).expect("pem"),
        )
        .build()
        .expect("client");
    let url = format!("https://localhost:{}", server.port);
    let resp = https
        .post(format!("{url}/api/v1/signup"))
        .json(&json!({"username": "tina", "password": PW}))
        .send()
        .expect("https request");
    assert_eq!(resp.status(), 201);
    let resp = https
        .post(format!("{url}/api/v1/web/signin"))
        .json(&json!({"username": "tina", "password": PW}))
        .send()
        .expect("https request");
    let cookie = resp.headers()["set-cookie"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert!(
        cookie.contains("; Secure"),
        "the cookie is Secure over HTTPS: {cookie}"
    );
    // Plain HTTP to the HTTPS port gets no answer from the API.
    let plain = client()
        .get(format!("http://127.0.0.1:{}/api/v1/user", server.port))
        .send();
    assert!(plain.is_err() || plain.is_ok_and(|r| r.status() != 200));

    // A missing key file is a clear start-up error.
    let out = Command::new(bin("panserver"))
        .args(["serve", "--listen", "127.0.0.1:0", "--tls-cert"])
        .arg(&cert_path)
        .arg("--tls-key")
        .arg(dir.path().join("missing.pem"))
        .arg("--data")
        .arg(dir.path().join("data"))
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.pem"));
}

#[test]
fn tokens_stay_out_of_logs() {
    let dir = tempfile::tempdir().expect("dir");
    let log_path = dir.path().join("server.log");
    let port = free_port();
    // The embedded profile whatever the test profile: this is about logging.
    let mut cmd = Command::new(bin("panserver"));
    for var in [
        "PAN_DATABASE_URL",
        "PAN_REDIS_URL",
        "PAN_AMQP_URL",
        "PAN_STORE",
        "PAN_NAMESPACE",
    ] {
        cmd.env_remove(var);
    }
    let mut child = cmd
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data"])
        .arg(dir.path().join("data"))
        .env("PAN_LOG", "debug")
        .stderr(std::fs::File::create(&log_path).expect("log"))
        .stdout(Stdio::null())
        .spawn()
        .expect("panserver");
    wait_until("panserver", Duration::from_secs(60), || is_listening(port));
    let base = format!("http://127.0.0.1:{port}");
    let api = Api::user(&base, "lara", PW);
    let token = api.token.clone().expect("token");
    let root = api.root();
    api.create(root, "x", "file");
    api.get("/api/v1/nodes/999999");
    // pan.go's clients put the token in the query string.
    client()
        .get(format!("{base}/user/info?username=lara&token={token}"))
        .send()
        .expect("info");
    client()
        .get(format!(
            "{base}/file/meta?username=lara&token={token}&filehash=zz"
        ))
        .send()
        .expect("meta");
    let _ = child.kill();
    let _ = child.wait();
    let log = std::fs::read_to_string(&log_path).expect("log");
    assert!(!log.is_empty(), "the server logged at debug level");
    assert!(!log.contains(&token), "a token appears in the log");
    assert!(!log.contains(PW), "a password appears in the log");
}

#[test]
fn contents_are_keyed_by_sha256_not_sha1() {
    use sha1::Sha1;
    use sha2::{Digest, Sha256};
    let server = Server::start_with(&[("PAN_MAINTENANCE_SECS", "1")]);
    let alice = Api::user(&server.url(), "alice", PW);
    let bob = Api::user(&server.url(), "bob", PW);
    let a = pantests::Noise::bytes(1, 3 << 20);
    let b = pantests::Noise::bytes(2, 3 << 20);
    let (sha256_a, sha1_a) = (
        hex::encode(Sha256::digest(&a)),
        hex::encode(Sha1::digest(&a)),
    );
    let (sha256_b, sha1_b) = (
        hex::encode(Sha256::digest(&b)),
        hex::encode(Sha1::digest(&b)),
    );
    assert_eq!(alice.put_bytes("/api/v1/files/a.bin", a).0, 201);
    let ino = bob.create(bob.root(), "x", "file");
    let open = |sha256: &str, sha1: &str| {
        bob.post(
            "/api/v1/uploads",
            &json!({"ino": ino, "chunks": [], "sha256": sha256, "sha1": sha1}),
        )
    };
    // Once the server has hashed A, both of its hashes find it (and a proof is owed).
    wait_until("A's whole-file hashes", Duration::from_secs(60), || {
        open(&sha256_a, &sha1_a).0 == 201
    });
    let (_, state) = open(&sha256_a, &sha1_a);
    assert!(
        state["challenge"].is_object(),
        "knowing the hashes is not enough: {state}"
    );
    // A SHA-1 that matches with a SHA-256 that does not (a SHA-1 collision) finds nothing.
    assert_eq!(open(&sha256_b, &sha1_a).0, 404);
    assert_eq!(open(&sha256_a, &sha1_b).0, 404);
}
