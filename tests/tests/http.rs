//! The HTTP API against a real panserver: accounts, the tree, uploads,
//! downloads, isolation between users and every error the spec names.

use pantests::api::prove;
use pantests::{Api, Noise, Server, wait_until};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::time::Duration;

const PW: &str = "a good password";

fn sha(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

#[test]
fn accounts_tokens_and_throttling() {
    let server = Server::start();
    let mut api = Api::user(&server.url(), "alice", PW);
    let (s, info) = api.get("/api/v1/user");
    assert_eq!(s, 200);
    assert_eq!(info["username"], "alice");

    // Duplicate signup, bad names, short passwords.
    let anon = Api::new(&server.url());
    let (s, b) = anon.post(
        "/api/v1/signup",
        &json!({"username": "alice", "password": PW}),
    );
    assert_eq!((s, b["code"].as_str()), (409, Some("exists")));
    let (s, _) = anon.post(
        "/api/v1/signup",
        &json!({"username": "../x", "password": PW}),
    );
    assert_eq!(s, 400);
    let (s, _) = anon.post(
        "/api/v1/signup",
        &json!({"username": "dave", "password": "short"}),
    );
    assert_eq!(s, 400);

    // Several tokens; listing marks the current one; revoking one keeps the other.
    let mut second = Api::new(&server.url());
    second.signin("alice", PW).expect("second signin");
    let (s, tokens) = api.get("/api/v1/tokens");
    assert_eq!(s, 200);
    let tokens = tokens.as_array().expect("array").clone();
    assert_eq!(tokens.len(), 2);
    assert_eq!(tokens.iter().filter(|t| t["current"] == true).count(), 1);
    let other = tokens
        .iter()
        .find(|t| t["current"] == false)
        .expect("other token");
    let (s, _) = api.delete(&format!("/api/v1/tokens/{}", other["id"]));
    assert_eq!(s, 204);
    assert_eq!(second.get("/api/v1/user").0, 401);
    assert_eq!(api.get("/api/v1/user").0, 200);

    // Signout revokes the token used.
    assert_eq!(api.post("/api/v1/signout", &json!({})).0, 204);
    let (s, b) = api.get("/api/v1/user");
    assert_eq!((s, b["code"].as_str()), (401, Some("unauthorized")));

    // Bad tokens of every shape.
    for token in ["", "x", &"0".repeat(64), &"g".repeat(64)] {
        api.token = Some(token.to_string());
        assert_eq!(api.get("/api/v1/user").0, 401, "token {token:?}");
    }
    api.token = None;
    assert_eq!(api.get("/api/v1/user").0, 401);

    // Wrong passwords: refused, then throttled even for the right one.
    for _ in 0..5 {
        let err = api
            .signin("alice", "wrong password")
            .expect_err("wrong password");
        assert_eq!(err.0, 401);
        assert_eq!(err.1["code"], "bad_credentials");
    }
    let err = api.signin("alice", PW).expect_err("locked");
    assert_eq!(err.0, 429, "{}", err.1);
    let err = api.signin("nobody", PW).expect_err("unknown user");
    assert_eq!(err.0, 401);
}

#[test]
fn signup_can_be_disabled() {
    let server = Server::start_with(&[("PAN_SIGNUP", "false")]);
    let anon = Api::new(&server.url());
    let (s, b) = anon.post(
        "/api/v1/signup",
        &json!({"username": "eve", "password": PW}),
    );
    assert_eq!((s, b["code"].as_str()), (403, Some("signup_disabled")));
    let out = server.command(&["user", "add", "eve", "--password-stdin"], PW);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut eve = Api::new(&server.url());
    eve.signin("eve", PW).expect("signin after user add");
}

#[test]
fn index_needs_no_token() {
    let server = Server::start();
    let resp = Api::new(&server.url()).fetch("/", None);
    assert_eq!(resp.status().as_u16(), 200);
}

#[test]
fn tree_operations() {
    let server = Server::start();
    let api = Api::user(&server.url(), "alice", PW);
    let root = api.root();
    let dir = api.create(root, "dir", "dir");
    let file = api.create(dir, "f.txt", "file");
    // Duplicate name.
    let (s, b) = api.post(
        &format!("/api/v1/nodes/{dir}/children"),
        &json!({"name": "f.txt", "kind": "file"}),
    );
    assert_eq!((s, b["code"].as_str()), (409, Some("exists")));
    // Lookup by name and by path agree.
    let (s, by_name) = api.get(&format!("/api/v1/nodes/{dir}/children/f.txt"));
    assert_eq!(s, 200);
    assert_eq!(by_name["ino"], file);
    let (s, by_path) = api.get("/api/v1/stat/dir/f.txt");
    assert_eq!(s, 200);
    assert_eq!(by_path["ino"], file);
    // Symlink and hard link.
    let (s, link) = api.post(
        &format!("/api/v1/nodes/{root}/children"),
        &json!({"name": "ln", "kind": "symlink", "target": "dir/f.txt"}),
    );
    assert_eq!(s, 201);
    assert_eq!(link["target"], "dir/f.txt");
    let (s, hard) = api.post(
        &format!("/api/v1/nodes/{root}/links"),
        &json!({"ino": file, "name": "hard"}),
    );
    assert_eq!(s, 201);
    assert_eq!(hard["nlink"], 2);
    let (s, b) = api.post(
        &format!("/api/v1/nodes/{root}/links"),
        &json!({"ino": dir, "name": "dirlink"}),
    );
    assert_eq!((s, b["code"].as_str()), (403, Some("not_permitted")));
    // Directory link counts: root has . .. and dir's ..
    assert_eq!(api.get(&format!("/api/v1/nodes/{root}")).1["nlink"], 3);
    // rmdir of a non-empty directory, unlink of a directory, rmdir of a file.
    let (s, b) = api.delete(&format!("/api/v1/nodes/{root}/children/dir?dir=true"));
    assert_eq!((s, b["code"].as_str()), (409, Some("not_empty")));
    let (s, b) = api.delete(&format!("/api/v1/nodes/{root}/children/dir"));
    assert_eq!((s, b["code"].as_str()), (409, Some("is_dir")));
    let (s, b) = api.delete(&format!("/api/v1/nodes/{root}/children/hard?dir=true"));
    assert_eq!((s, b["code"].as_str()), (409, Some("not_dir")));
    // Unlinking one hard link keeps the other.
    assert_eq!(
        api.delete(&format!("/api/v1/nodes/{root}/children/hard")).0,
        204
    );
    assert_eq!(api.get(&format!("/api/v1/nodes/{file}")).1["nlink"], 1);
    // setattr: mode, owner, times.
    let (s, n) = api.patch(
        &format!("/api/v1/nodes/{file}"),
        &json!({"mode": 0o600, "uid": 1000, "gid": 100, "mtime": 1_000_000_000_000_000_000i64}),
    );
    assert_eq!(s, 200, "{n}");
    assert_eq!(
        (n["mode"].as_u64(), n["uid"].as_u64(), n["gid"].as_u64()),
        (Some(0o600), Some(1000), Some(100))
    );
    assert_eq!(n["mtime"], 1_000_000_000_000_000_000i64);
    // Remove everything; the tree is empty again.
    assert_eq!(
        api.delete(&format!("/api/v1/nodes/{dir}/children/f.txt")).0,
        204
    );
    assert_eq!(
        api.delete(&format!("/api/v1/nodes/{root}/children/dir?dir=true"))
            .0,
        204
    );
    assert_eq!(
        api.delete(&format!("/api/v1/nodes/{root}/children/ln")).0,
        204
    );
    let (s, list) = api.get(&format!("/api/v1/nodes/{root}/children"));
    assert_eq!(s, 200);
    assert_eq!(list["entries"].as_array().map(Vec::len), Some(0));
    let (s, _) = api.get(&format!("/api/v1/nodes/{dir}/children/x"));
    assert_eq!(s, 404);
}

#[test]
fn listing_is_paged() {
    let server = Server::start();
    let api = Api::user(&server.url(), "alice", PW);
    let root = api.root();
    for i in 0..25 {
        api.create(root, &format!("f{i:03}"), "file");
    }
    let mut names = Vec::new();
    let mut after = String::new();
    loop {
        let (s, page) = api.get(&format!(
            "/api/v1/nodes/{root}/children?limit=10&after={after}"
        ));
        assert_eq!(s, 200);
        for e in page["entries"].as_array().expect("entries") {
            names.push(e["name"].as_str().expect("name").to_string());
            assert_eq!(e["node"]["kind"], "file");
        }
        match page["next"].as_str() {
            Some(next) => after = next.to_string(),
            None => break,
        }
    }
    let want: Vec<String> = (0..25).map(|i| format!("f{i:03}")).collect();
    assert_eq!(names, want);
}

#[test]
fn rename_modes() {
    let server = Server::start();
    let api = Api::user(&server.url(), "alice", PW);
    let root = api.root();
    let a = api.create(root, "a", "dir");
    let b = api.create(a, "b", "dir");
    let x = api.create(root, "x", "file");
    let y = api.create(root, "y", "file");
    let rename = |p: i64, n: &str, np: i64, nn: &str, mode: &str| {
        api.post(
            "/api/v1/rename",
            &json!({"parent": p, "name": n, "new_parent": np, "new_name": nn, "mode": mode}),
        )
    };
    // No-replace refuses an existing target.
    let (s, r) = rename(root, "x", root, "y", "noreplace");
    assert_eq!((s, r["code"].as_str()), (409, Some("exists")));
    // Exchange swaps.
    assert_eq!(rename(root, "x", root, "y", "exchange").0, 204);
    assert_eq!(
        api.get(&format!("/api/v1/nodes/{root}/children/x")).1["ino"],
        y
    );
    assert_eq!(
        api.get(&format!("/api/v1/nodes/{root}/children/y")).1["ino"],
        x
    );
    // Replace drops the target.
    assert_eq!(rename(root, "x", root, "y", "replace").0, 204);
    assert_eq!(
        api.get(&format!("/api/v1/nodes/{root}/children/y")).1["ino"],
        y
    );
    assert_eq!(api.get(&format!("/api/v1/nodes/{root}/children/x")).0, 404);
    // A directory cannot move into itself or below itself.
    let (s, _) = rename(root, "a", b, "a2", "replace");
    assert_eq!(s, 400);
    let (s, _) = rename(root, "a", a, "a2", "replace");
    assert_eq!(s, 400);
    // Moving a whole directory keeps its subtree, and link counts follow.
    let c = api.create(root, "c", "dir");
    assert_eq!(rename(root, "a", c, "a", "replace").0, 204);
    assert_eq!(api.get("/api/v1/stat/c/a/b").1["ino"], b);
    assert_eq!(api.get(&format!("/api/v1/nodes/{c}")).1["nlink"], 3);
    // Replacing a non-empty directory, or a file by a directory, is refused.
    let d = api.create(root, "d", "dir");
    api.create(d, "inner", "file");
    let (s, r) = rename(c, "a", root, "d", "replace");
    assert_eq!((s, r["code"].as_str()), (409, Some("not_empty")));
    let (s, r) = rename(c, "a", root, "y", "replace");
    assert_eq!((s, r["code"].as_str()), (409, Some("not_dir")));
    let (s, r) = rename(root, "y", c, "a", "replace");
    assert_eq!((s, r["code"].as_str()), (409, Some("is_dir")));
}

#[test]
fn bad_names_are_refused() {
    let server = Server::start();
    let api = Api::user(&server.url(), "alice", PW);
    let root = api.root();
    let long = "n".repeat(256);
    for (name, code) in [
        ("a/b", "bad_name"),
        ("a\0b", "bad_name"),
        (".", "bad_name"),
        ("..", "bad_name"),
        ("", "bad_name"),
        (long.as_str(), "name_too_long"),
    ] {
        let (s, b) = api.post(
            &format!("/api/v1/nodes/{root}/children"),
            &json!({"name": name, "kind": "file"}),
        );
        assert_eq!((s, b["code"].as_str()), (400, Some(code)), "name {name:?}");
    }
    assert!(api.create(root, &"n".repeat(255), "file") > 0);
    // Through paths: encoded slash, NUL, dot-dot, invalid UTF-8.
    for path in [
        "/api/v1/files/a%2Fb",
        "/api/v1/files/a%00b",
        "/api/v1/files/%FF",
    ] {
        let (s, b) = api.put_bytes(path, b"x".to_vec());
        assert_eq!(s, 400, "{path}: {b}");
        assert!(b["code"].is_string());
    }
    // Dot segments sent as they are (HTTP clients normalise them away).
    let token = api.token.clone().expect("token");
    for path in [
        "/api/v1/files/../x",
        "/api/v1/files/a/%2E%2E/x",
        "/api/v1/files/./x",
    ] {
        let status = pantests::raw_http(
            server.port,
            &format!(
                "PUT {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx"
            ),
        );
        assert_eq!(status, 400, "{path}");
    }
    let (s, b) = api.put_bytes(&format!("/api/v1/files/{long}"), b"x".to_vec());
    assert_eq!((s, b["code"].as_str()), (400, Some("name_too_long")));
    // Invalid JSON and unknown routes.
    let resp = api
        .request(
            reqwest::Method::POST,
            &format!("/api/v1/nodes/{root}/children"),
        )
        .body("{not json")
        .send()
        .expect("post");
    assert_eq!(resp.status().as_u16(), 400);
    assert_eq!(api.get("/api/v1/nope").0, 404);
}

#[test]
fn other_users_ids_are_not_found() {
    let server = Server::start();
    let alice = Api::user(&server.url(), "alice", PW);
    let bob = Api::user(&server.url(), "bob", PW);
    let root = alice.root();
    let file = alice.create(root, "secret", "file");
    alice.upload(file, b"alice's secret bytes");
    let ((s, state), _) = alice.begin_upload(file, b"more");
    assert_eq!(s, 201);
    let session = state["id"].as_str().expect("id").to_string();
    let bob_root = bob.root();
    // Read by version, ranged, as panfs reads: the server keeps for a moment
    // that alice may read it, which says nothing of bob.
    let version = alice.get(&format!("/api/v1/nodes/{file}")).1["content"]
        .as_str()
        .expect("a version")
        .to_string();
    let by_version = format!("/api/v1/nodes/{file}/content?version={version}");
    let read = alice.fetch(&by_version, Some("bytes=0-4"));
    assert_eq!(read.status().as_u16(), 206);
    assert_eq!(&read.bytes().expect("body")[..], b"alice");
    for range in [Some("bytes=0-4"), None] {
        let read = bob.fetch(&by_version, range);
        assert_eq!(read.status().as_u16(), 404, "{range:?}");
    }
    for path in [
        format!("/api/v1/nodes/{file}"),
        format!("/api/v1/nodes/{root}/children"),
        format!("/api/v1/nodes/{root}/children/secret"),
        format!("/api/v1/nodes/{file}/content"),
        format!("/api/v1/nodes/{file}/manifest"),
    ] {
        let (s, b) = bob.get(&path);
        assert_eq!((s, b["code"].as_str()), (404, Some("not_found")), "{path}");
    }
    // Another user's session answers as one that does not exist, and lives on.
    let (s, b) = bob.get(&format!("/api/v1/uploads/{session}"));
    assert_eq!((s, b["code"].as_str()), (404, Some("upload_gone")));
    let (s, b) = bob.delete(&format!("/api/v1/uploads/{session}"));
    assert_eq!((s, b["code"].as_str()), (404, Some("upload_gone")));
    assert_eq!(alice.get(&format!("/api/v1/uploads/{session}")).0, 200);
    assert_eq!(
        bob.delete(&format!("/api/v1/nodes/{root}/children/secret"))
            .0,
        404
    );
    assert_eq!(
        bob.patch(&format!("/api/v1/nodes/{file}"), &json!({"mode": 0o777}))
            .0,
        404
    );
    let (s, _) = bob.post(
        &format!("/api/v1/nodes/{bob_root}/links"),
        &json!({"ino": file, "name": "stolen"}),
    );
    assert_eq!(s, 404);
    let (s, _) = bob.post(
        "/api/v1/rename",
        &json!({"parent": root, "name": "secret", "new_parent": bob_root, "new_name": "x"}),
    );
    assert_eq!(s, 404);
    let (s, _) = bob.post("/api/v1/uploads", &json!({"ino": file, "chunks": []}));
    assert_eq!(s, 404);
    assert_eq!(bob.get("/api/v1/stat/secret").0, 404);
    // Alice still has everything.
    assert_eq!(alice.content(file), b"alice's secret bytes");
}

#[test]
fn chunked_upload_verifies_and_dedups() {
    let server = Server::start();
    let api = Api::user(&server.url(), "alice", PW);
    let root = api.root();
    let data = Noise::bytes(1, 9 << 20);
    let file = api.create(root, "big", "file");
    let ((s, state), chunks) = api.begin_upload(file, &data);
    assert_eq!(s, 201);
    assert!(chunks.len() >= 3);
    let id = state["id"].as_str().expect("id").to_string();
    assert_eq!(
        state["missing"].as_array().map(Vec::len),
        Some(chunks.len())
    );
    // A body that does not match its hash is refused and not stored.
    let first = chunks[0].sha256.clone().expect("sha");
    let (s, b) = api.put_chunk(&id, &first, vec![0u8; chunks[0].size as usize]);
    assert_eq!((s, b["code"].as_str()), (400, Some("hash_mismatch")));
    // A chunk the session does not list is refused.
    let (s, _) = api.put_chunk(&id, &sha(b"other"), b"other".to_vec());
    assert_eq!(s, 400);
    // Commit before all chunks arrived is refused.
    let (s, b) = api.post(&format!("/api/v1/uploads/{id}/commit"), &json!({}));
    assert_eq!((s, b["code"].as_str()), (409, Some("incomplete")));
    // Chunks in parallel, in reverse order.
    let mut offsets = Vec::new();
    let mut off = 0usize;
    for c in &chunks {
        offsets.push((off, c.size as usize, c.sha256.clone().expect("sha")));
        off += c.size as usize;
    }
    std::thread::scope(|scope| {
        for (off, len, sha) in offsets.iter().rev() {
            let (api, data, id) = (&api, &data, &id);
            scope.spawn(move || {
                let (s, b) = api.put_chunk(id, sha, data[*off..off + len].to_vec());
                assert_eq!(s, 204, "{b}");
            });
        }
    });
    let (s, st) = api.get(&format!("/api/v1/uploads/{id}"));
    assert_eq!(s, 200);
    assert_eq!(st["missing"].as_array().map(Vec::len), Some(0));
    let (s, node) = api.post(&format!("/api/v1/uploads/{id}/commit"), &json!({}));
    assert_eq!(s, 200, "{node}");
    assert_eq!(node["size"], data.len());
    assert_eq!(sha(&api.content(file)), sha(&data));
    // The same content again costs nothing: no chunk missing, no proof.
    let copy = api.create(root, "copy", "file");
    let (state, node) = api.upload(copy, &data);
    assert!(state.missing.is_empty());
    assert!(state.challenge.is_none());
    assert_eq!(
        node["content"],
        api.get(&format!("/api/v1/nodes/{file}")).1["content"]
    );
    assert_eq!(sha(&api.content(copy)), sha(&data));
    // An edit in the middle needs only the chunks near it.
    let mut edited = data.clone();
    edited[4 << 20..(4 << 20) + 1000].fill(7);
    let (state, _) = api.upload(file, &edited);
    assert!(
        !state.missing.is_empty() && state.missing.len() <= 3,
        "{} missing",
        state.missing.len()
    );
    assert_eq!(sha(&api.content(file)), sha(&edited));
}

#[test]
fn instant_upload_across_users_needs_proof() {
    let server = Server::start_with(&[("PAN_MAINTENANCE_SECS", "1")]);
    let alice = Api::user(&server.url(), "alice", PW);
    let bob = Api::user(&server.url(), "bob", PW);
    let data = Noise::bytes(2, 3 << 20);
    let a = alice.create(alice.root(), "a", "file");
    let (state, _) = alice.upload(a, &data);
    assert!(!state.missing.is_empty());
    let whole = sha(&data);
    // Wait until the server has recorded the whole-file hash of alice's content.
    let b = bob.create(bob.root(), "b", "file");
    wait_until("whole-file hashes", Duration::from_secs(30), || {
        let (s, st) = bob.post(
            "/api/v1/uploads",
            &json!({"ino": b, "chunks": [], "sha256": whole}),
        );
        s == 201 && st["challenge"].is_object()
    });
    // Knowing the hash alone gets nothing: a wrong answer is refused, and commit
    // without a proof is refused.
    let (_, st) = bob.post(
        "/api/v1/uploads",
        &json!({"ino": b, "chunks": [], "sha256": whole}),
    );
    let id = st["id"].as_str().expect("id").to_string();
    let (s, r) = bob.post(&format!("/api/v1/uploads/{id}/commit"), &json!({}));
    assert_eq!((s, r["code"].as_str()), (409, Some("incomplete")));
    let (s, r) = bob.post(
        &format!("/api/v1/uploads/{id}/proof"),
        &json!({"proof": sha(b"guess")}),
    );
    assert_eq!((s, r["code"].as_str()), (400, Some("bad_proof")));
    assert_eq!(bob.get(&format!("/api/v1/nodes/{b}")).1["size"], 0);
    // With the bytes, the proof passes and nothing is transferred.
    let (_, st) = bob.post(
        "/api/v1/uploads",
        &json!({"ino": b, "chunks": [], "sha256": whole}),
    );
    let id = st["id"].as_str().expect("id").to_string();
    assert_eq!(st["missing"].as_array().map(Vec::len), Some(0));
    let ch = &st["challenge"];
    let ranges: Vec<(u64, u64)> = serde_json::from_value(ch["ranges"].clone()).expect("ranges");
    let answer = prove(ch["nonce"].as_str().expect("nonce"), &ranges, &data);
    let (s, r) = bob.post(
        &format!("/api/v1/uploads/{id}/proof"),
        &json!({"proof": answer}),
    );
    assert_eq!(s, 200, "{r}");
    let (s, node) = bob.post(&format!("/api/v1/uploads/{id}/commit"), &json!({}));
    assert_eq!(s, 200, "{node}");
    assert_eq!(sha(&bob.content(b)), whole);
    // The chunk-list path needs the proof too.
    let b2 = bob.create(bob.root(), "b2", "file");
    let carol = Api::user(&server.url(), "carol", PW);
    let c = carol.create(carol.root(), "c", "file");
    let (state, _) = carol.upload(c, &data);
    assert!(state.challenge.is_some() && state.missing.is_empty());
    let (state, _) = bob.upload(b2, &data);
    assert!(state.challenge.is_none(), "bob owns the chunks now");
}

#[test]
fn concurrent_uploads_of_the_same_content_by_two_users() {
    let server = Server::start();
    let alice = Api::user(&server.url(), "alice", PW);
    let bob = Api::user(&server.url(), "bob", PW);
    let data = Noise::bytes(3, 12 << 20);
    let a = alice.create(alice.root(), "same", "file");
    let b = bob.create(bob.root(), "same", "file");
    std::thread::scope(|s| {
        s.spawn(|| alice.upload(a, &data));
        s.spawn(|| bob.upload(b, &data));
    });
    assert_eq!(sha(&alice.content(a)), sha(&data));
    assert_eq!(sha(&bob.content(b)), sha(&data));
}

#[test]
fn session_resumes_after_server_restart() {
    let mut server = Server::start();
    let api = Api::user(&server.url(), "alice", PW);
    let data = Noise::bytes(4, 8 << 20);
    let file = api.create(api.root(), "resume", "file");
    let ((_, state), chunks) = api.begin_upload(file, &data);
    let id = state["id"].as_str().expect("id").to_string();
    let first = &chunks[0];
    let first_sha = first.sha256.clone().expect("sha");
    assert_eq!(
        api.put_chunk(&id, &first_sha, data[..first.size as usize].to_vec())
            .0,
        204
    );
    server.restart();
    let (s, st) = api.get(&format!("/api/v1/uploads/{id}"));
    assert_eq!(s, 200, "{st}");
    let missing: Vec<String> = serde_json::from_value(st["missing"].clone()).expect("missing");
    assert_eq!(missing.len(), chunks.len() - 1);
    assert!(!missing.contains(&first_sha));
    let mut off = 0usize;
    for c in &chunks {
        let sha = c.sha256.clone().expect("sha");
        if missing.contains(&sha) {
            assert_eq!(
                api.put_chunk(&id, &sha, data[off..off + c.size as usize].to_vec())
                    .0,
                204
            );
        }
        off += c.size as usize;
    }
    assert_eq!(
        api.post(&format!("/api/v1/uploads/{id}/commit"), &json!({}))
            .0,
        200
    );
    assert_eq!(sha(&api.content(file)), sha(&data));
}

#[test]
fn ranged_downloads() {
    let server = Server::start();
    let api = Api::user(&server.url(), "alice", PW);
    let data = Noise::bytes(5, (6 << 20) + 123);
    let (s, node) = api.put_bytes("/api/v1/files/docs/r.bin", data.clone());
    assert_eq!(s, 201, "{node}");
    let whole = api.fetch("/api/v1/files/docs/r.bin", None);
    assert_eq!(whole.status().as_u16(), 200);
    let etag = whole.headers()["etag"].to_str().expect("etag").to_string();
    assert_eq!(
        whole.headers()["content-length"],
        data.len().to_string().as_str()
    );
    assert_eq!(sha(&whole.bytes().expect("body")), sha(&data));
    let cases: [(&str, usize, usize); 5] = [
        ("bytes=0-99", 0, 100),
        ("bytes=1048570-3145740", 1048570, 3145741),
        ("bytes=-5", data.len() - 5, data.len()),
        ("bytes=6291000-", 6291000, data.len()),
        ("bytes=6291000-99999999", 6291000, data.len()),
    ];
    // By path, and by number and version as panfs reads (the server then
    // looks the range's extents up beside the node).
    let (ino, content) = (node["ino"].as_i64().expect("ino"), &node["content"]);
    let by_version = format!(
        "/api/v1/nodes/{ino}/content?version={}",
        content.as_str().expect("content id")
    );
    let paths = ["/api/v1/files/docs/r.bin", by_version.as_str()];
    for ((range, start, end), path) in cases
        .into_iter()
        .flat_map(|case| paths.map(|path| (case, path)))
    {
        let resp = api.fetch(path, Some(range));
        assert_eq!(resp.status().as_u16(), 206, "{range} {path}");
        assert_eq!(resp.headers()["etag"].to_str().expect("etag"), etag);
        let cr = resp.headers()["content-range"]
            .to_str()
            .expect("cr")
            .to_string();
        assert_eq!(cr, format!("bytes {}-{}/{}", start, end - 1, data.len()));
        assert_eq!(
            resp.bytes().expect("body").as_ref(),
            &data[start..end],
            "{range} {path}"
        );
    }
    let resp = api.fetch(
        "/api/v1/files/docs/r.bin",
        Some(&format!("bytes={}-", data.len())),
    );
    assert_eq!(resp.status().as_u16(), 416);
    assert_eq!(
        resp.headers()["content-range"],
        format!("bytes */{}", data.len()).as_str()
    );
    // A directory lists; a missing path is 404; delete works by path.
    let (s, list) = api.get("/api/v1/files/docs");
    assert_eq!(s, 200);
    assert_eq!(list[0]["name"], "r.bin");
    assert_eq!(api.delete("/api/v1/files/docs/r.bin").0, 204);
    assert_eq!(api.get("/api/v1/files/docs/r.bin").0, 404);
    assert_eq!(api.delete("/api/v1/files/docs").0, 204);
}

/// A version replaced by a newer one stays readable by its id (a handle opened on
/// it reads on) until garbage collection; only by users who held its bytes.
#[test]
fn replaced_version_stays_readable_by_its_owner() {
    let server = Server::start();
    let alice = Api::user(&server.url(), "alice", PW);
    let old = Noise::bytes(41, (5 << 20) + 7);
    let new = Noise::bytes(42, 1 << 20);
    let (s, node) = alice.put_bytes("/api/v1/files/v.bin", old.clone());
    assert_eq!(s, 201, "{node}");
    let (ino, old_id) = (node["ino"].as_i64().expect("ino"), node["content"].clone());
    let old_id = old_id.as_str().expect("content id").to_string();
    let (s, node) = alice.put_bytes("/api/v1/files/v.bin", new.clone());
    assert_eq!(s, 201, "{node}");
    assert_ne!(node["content"].as_str(), Some(old_id.as_str()));
    let versioned = format!("/api/v1/nodes/{ino}/content?version={old_id}");

    let resp = alice.fetch(&versioned, None);
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["etag"], format!("\"{old_id}\"").as_str());
    assert_eq!(sha(&resp.bytes().expect("body")), sha(&old));
    let resp = alice.fetch(&versioned, Some("bytes=5242000-"));
    assert_eq!(resp.status().as_u16(), 206);
    assert_eq!(resp.bytes().expect("body").as_ref(), &old[5242000..]);
    // Without a version: the current one.
    assert_eq!(sha(&alice.content(ino)), sha(&new));

    // Another user with the id but not the bytes, and ids that name nothing: 412.
    let bob = Api::user(&server.url(), "bob", PW);
    let (_, theirs) = bob.put_bytes("/api/v1/files/b.bin", b"bob's".to_vec());
    let bob_ino = theirs["ino"].as_i64().expect("ino");
    let (s, b) = bob.get(&format!("/api/v1/nodes/{bob_ino}/content?version={old_id}"));
    assert_eq!((s, b["code"].as_str()), (412, Some("changed")));
    for id in ["0".repeat(64), "../../x".into(), String::new()] {
        let (s, b) = alice.get(&format!("/api/v1/nodes/{ino}/content?version={id}"));
        assert_eq!((s, b["code"].as_str()), (412, Some("changed")), "{id:?}");
    }
    // Alice's own id on Bob's file number is still Bob's file: not found for her.
    assert_eq!(
        alice
            .get(&format!("/api/v1/nodes/{bob_ino}/content?version={old_id}"))
            .0,
        404
    );

    // Garbage collection ends the old version's life.
    let out = server.command(&["gc", "--grace-secs", "0"], "");
    assert!(
        out.status.success(),
        "gc: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (s, b) = alice.get(&versioned);
    assert_eq!((s, b["code"].as_str()), (412, Some("changed")));
    assert_eq!(sha(&alice.content(ino)), sha(&new));
}

#[test]
fn truncate_up_and_down() {
    let server = Server::start();
    let api = Api::user(&server.url(), "alice", PW);
    let data = Noise::bytes(6, 3 << 20);
    let (_, node) = api.put_bytes("/api/v1/files/t.bin", data.clone());
    let ino = node["ino"].as_i64().expect("ino");
    let cut = 1_500_001usize;
    let (s, n) = api.patch(&format!("/api/v1/nodes/{ino}"), &json!({"size": cut}));
    assert_eq!(s, 200, "{n}");
    assert_eq!(n["size"], cut);
    assert_eq!(api.content(ino), &data[..cut]);
    let grown = 9 << 20;
    let (s, _) = api.patch(&format!("/api/v1/nodes/{ino}"), &json!({"size": grown}));
    assert_eq!(s, 200);
    let mut want = data[..cut].to_vec();
    want.resize(grown, 0);
    assert_eq!(sha(&api.content(ino)), sha(&want));
    let (s, _) = api.patch(&format!("/api/v1/nodes/{ino}"), &json!({"size": 0}));
    assert_eq!(s, 200);
    assert!(api.content(ino).is_empty());
    let (s, _) = api.patch(&format!("/api/v1/nodes/{ino}"), &json!({"size": -1}));
    assert_eq!(s, 400);
}

#[test]
fn limits_quota_and_body_size() {
    let server = Server::start_with(&[
        ("PAN_QUOTA_BYTES", "1000000"),
        ("PAN_QUOTA_FILES", "3"),
        ("PAN_MAX_UPLOAD_BYTES", "600000"),
    ]);
    let api = Api::user(&server.url(), "alice", PW);
    let (s, b) = api.put_bytes("/api/v1/files/big", vec![1u8; 700_000]);
    assert_eq!((s, b["code"].as_str()), (413, Some("too_large")));
    assert_eq!(api.put_bytes("/api/v1/files/a", vec![1u8; 500_000]).0, 201);
    let (s, b) = api.put_bytes("/api/v1/files/b", Noise::bytes(9, 550_000));
    assert_eq!((s, b["code"].as_str()), (507, Some("quota_exceeded")));
    let root = api.root();
    api.create(root, "c", "file");
    api.create(root, "d", "file");
    let (s, b) = api.post(
        &format!("/api/v1/nodes/{root}/children"),
        &json!({"name": "e", "kind": "file"}),
    );
    assert_eq!((s, b["code"].as_str()), (507, Some("quota_exceeded")));
    // A refused upload leaves no empty file behind; what was stored is intact.
    assert_eq!(api.get("/api/v1/stat/b").0, 404);
    let resp = api.fetch("/api/v1/files/a", None);
    assert_eq!(
        resp.bytes().expect("body").as_ref(),
        vec![1u8; 500_000].as_slice()
    );
}

#[test]
fn chunks_move_to_the_store_and_garbage_is_collected() {
    let server = Server::start_with(&[("PAN_GC_GRACE_SECS", "0"), ("PAN_MAINTENANCE_SECS", "1")]);
    let api = Api::user(&server.url(), "alice", PW);
    let data = Noise::bytes(7, 5 << 20);
    assert_eq!(api.put_bytes("/api/v1/files/g.bin", data.clone()).0, 201);
    wait_until("chunks to leave staging", Duration::from_secs(60), || {
        server.files_under("staging").is_empty() && server.stored_chunks() > 0
    });
    let resp = api.fetch("/api/v1/files/g.bin", None);
    assert_eq!(sha(&resp.bytes().expect("body")), sha(&data));
    // A session never committed (panfs sends chunks ahead in such) that lists
    // the same chunks keeps them after the file is gone, until it is ended.
    let spare = api.create(api.root(), "spare", "file");
    let ((s, state), _) = api.begin_upload(spare, &data);
    assert_eq!(s, 201);
    assert_eq!(state["missing"].as_array().map(Vec::len), Some(0));
    let session = state["id"].as_str().expect("id").to_string();
    assert_eq!(api.delete("/api/v1/files/g.bin").0, 204);
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        server.stored_chunks() > 0,
        "chunks a live session lists were collected"
    );
    assert_eq!(api.delete(&format!("/api/v1/uploads/{session}")).0, 204);
    let (s, b) = api.get(&format!("/api/v1/uploads/{session}"));
    assert_eq!((s, b["code"].as_str()), (404, Some("upload_gone")));
    wait_until("garbage collection", Duration::from_secs(60), || {
        server.stored_chunks() == 0
    });
}

#[test]
fn one_gib_upload_and_download() {
    let server = Server::start();
    let api = Api::user(&server.url(), "alice", PW);
    let dir = tempfile::tempdir().expect("tmp");
    let src = dir.path().join("big");
    let want = pantests::write_noise_file(&src, 8, 1 << 30);
    let file = std::fs::File::open(&src).expect("open");
    let resp = api
        .request(reqwest::Method::PUT, "/api/v1/files/big.bin")
        .body(reqwest::blocking::Body::sized(file, 1 << 30))
        .send()
        .expect("PUT");
    assert_eq!(resp.status().as_u16(), 201);
    let mut resp = api.fetch("/api/v1/files/big.bin", None);
    assert_eq!(resp.status().as_u16(), 200);
    let mut hasher = Sha256::new();
    let n = std::io::copy(&mut resp, &mut hasher).expect("download");
    assert_eq!(n, 1 << 30);
    assert_eq!(hex::encode(hasher.finalize()), want);
}
