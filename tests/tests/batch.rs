//! Batches over HTTP on a real server: ordered operations in one transaction,
//! each with its own outcome and feed entry; inode numbers reserved ahead;
//! chunks only the caller holds; limits; and a server killed mid-batch keeps
//! all of it or none.

use std::io::{BufRead, BufReader, Write};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use pantests::{Api, PASSWORD, Server};
use serde_json::{Value, json};

fn reserve(api: &Api, count: i64) -> i64 {
    let (status, body) = api.post("/api/v1/inodes", &json!({"count": count}));
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["count"], count);
    body["first"].as_i64().expect("first")
}

fn batch(api: &Api, ops: Value) -> Value {
    let (status, body) = api.post("/api/v1/batch", &json!({"ops": ops}));
    assert_eq!(status, 200, "{body}");
    body
}

/// Each result's error code, or "ok".
fn outcomes(body: &Value) -> Vec<String> {
    body["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["error"]["code"].as_str().unwrap_or("ok").to_string())
        .collect()
}

fn b64(data: &[u8]) -> String {
    BASE64.encode(data)
}

fn entries(api: &Api, dir: i64) -> Vec<Value> {
    let (status, body) = api.get(&format!("/api/v1/nodes/{dir}/children"));
    assert_eq!(status, 200, "{body}");
    body["entries"].as_array().expect("entries").clone()
}

fn names(api: &Api, dir: i64) -> Vec<String> {
    entries(api, dir)
        .iter()
        .map(|e| e["name"].as_str().expect("name").to_string())
        .collect()
}

fn ino_of(api: &Api, dir: i64, name: &str) -> i64 {
    entries(api, dir)
        .iter()
        .find(|e| e["name"] == name)
        .and_then(|e| e["node"]["ino"].as_i64())
        .unwrap_or_else(|| panic!("no {name} in {dir}"))
}

#[test]
fn a_batch_applies_in_order_with_one_outcome_and_one_change_each() {
    let server = Server::start();
    let api = Api::user(&server.url(), "alice", PASSWORD);
    let root = api.root();
    let (_, feed) = api.get("/api/v1/changes");
    let since = feed["seq"].as_i64().expect("seq");
    let first = reserve(&api, 10);
    let (dir, file) = (first, first + 1);
    let body = batch(
        &api,
        json!([
            {"op": "create", "parent": root, "name": "d", "kind": "dir", "mode": 0o755, "ino": dir},
            {"op": "create", "parent": dir, "name": "a", "kind": "file", "mode": 0o644, "ino": file},
            {"op": "set_content", "ino": file, "data": b64(b"hello, batch"), "mtime": 7, "if_content": null},
            {"op": "create", "parent": root, "name": "numbered by the server", "kind": "file", "mode": 0o600},
            {"op": "rename", "parent": dir, "name": "a", "new_parent": dir, "new_name": "c", "if_ino": file},
            {"op": "remove", "parent": root, "name": "missing"},
            {"op": "set_xattr", "ino": file, "name": "user.tag", "value": b64(b"blue")},
            {"op": "set_attr", "ino": file, "mode": 0o600},
            {"op": "link", "ino": file, "parent": root, "name": "hard"},
            {"op": "create", "parent": root, "name": "a/b", "kind": "file", "mode": 0o644},
            {"op": "create", "parent": root, "name": "l", "kind": "symlink", "mode": 0o777, "target": "d/c"},
        ]),
    );
    assert_eq!(
        outcomes(&body),
        [
            "ok",
            "ok",
            "ok",
            "ok",
            "ok",
            "not_found",
            "ok",
            "ok",
            "ok",
            "bad_name",
            "ok"
        ]
    );
    let results = body["results"].as_array().expect("results");
    assert_eq!(results[0]["node"]["ino"], dir);
    assert_eq!(results[1]["node"]["ino"], file);
    assert_eq!(results[2]["node"]["size"], 12);
    assert_eq!(results[2]["node"]["mtime"], 7);
    assert!(results[3]["node"]["ino"].as_i64().expect("ino") > 0);
    assert_eq!(results[8]["node"]["nlink"], 2);
    assert_eq!(api.content(file), b"hello, batch");
    assert_eq!(names(&api, dir), ["c"]);
    let (_, node) = api.get(&format!("/api/v1/nodes/{file}"));
    assert_eq!(node["mode"], 0o600);
    assert_eq!(node["xattrs"], 1);
    // One change per operation that took effect, in the batch's order.
    let (_, feed) = api.get(&format!("/api/v1/changes?since={since}"));
    let kinds: Vec<&str> = feed["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .map(|c| c["kind"].as_str().expect("kind"))
        .collect();
    assert_eq!(
        kinds,
        [
            "create", "create", "content", "create", "rename", "xattr", "attr", "link", "create"
        ]
    );
    assert_eq!(body["seq"], feed["seq"]);
    server.assert_consistent("after a batch");
}

#[test]
fn reserved_numbers_belong_to_their_user_and_are_used_once() {
    let server = Server::start();
    let alice = Api::user(&server.url(), "alice", PASSWORD);
    let bob = Api::user(&server.url(), "bob", PASSWORD);
    let first = reserve(&alice, 4);
    // Ranges never overlap, whoever asks.
    let bobs = reserve(&bob, 4);
    assert!(bobs >= first + 4 || bobs + 4 <= first, "{first} and {bobs}");
    let file = |parent: i64, name: &str, ino: i64| json!({"op": "create", "parent": parent, "name": name, "kind": "file", "mode": 0o644, "ino": ino});
    let body = batch(&bob, json!([file(bob.root(), "stolen", first)]));
    assert_eq!(outcomes(&body), ["not_permitted"]);
    let root = alice.root();
    let body = batch(
        &alice,
        json!([
            file(root, "one", first),
            file(root, "two", first),
            file(root, "beyond", first + 4)
        ]),
    );
    // A number is used once: a second create with it is taken for a resend
    // of the first (whose answer was lost) and answers with that node.
    assert_eq!(outcomes(&body), ["ok", "ok", "not_permitted"]);
    assert_eq!(body["results"][1]["node"]["ino"], first);
    assert_eq!(names(&alice, root), ["one"]);
    // The number is the node's for good.
    let (_, node) = alice.get(&format!("/api/v1/nodes/{root}/children/one"));
    assert_eq!(node["ino"], first);
    // Numbers minted from a block (offline, past the reserved ones) are the
    // block's user's alone, and kept as well.
    let minted = |block: i64, n: i64| panproto::batch::mint(block, n).expect("mintable");
    let body = batch(&bob, json!([file(bob.root(), "minted", minted(first, 0))]));
    assert_eq!(outcomes(&body), ["not_permitted"]);
    let body = batch(
        &alice,
        json!([
            file(root, "minted", minted(first, 0)),
            file(root, "unlicensed", minted(first + 1, 0))
        ]),
    );
    assert_eq!(outcomes(&body), ["ok", "not_permitted"]);
    let (_, node) = alice.get(&format!("/api/v1/nodes/{root}/children/minted"));
    assert_eq!(node["ino"], minted(first, 0));
    for count in [0, -1, 100_001] {
        let (status, body) = alice.post("/api/v1/inodes", &json!({"count": count}));
        assert_eq!((status, body["code"].as_str()), (400, Some("bad_request")));
    }
}

#[test]
fn a_refused_operation_changes_nothing_and_the_others_go_on() {
    let server = Server::start();
    let api = Api::user(&server.url(), "alice", PASSWORD);
    let root = api.root();
    let a = api.create(root, "a", "file");
    let b = api.create(root, "b", "file");
    let body = batch(
        &api,
        json!([
            // Another client replaced "a" since this one saw it: refused.
            {"op": "rename", "parent": root, "name": "a", "new_parent": root, "new_name": "z", "if_ino": b},
            {"op": "remove", "parent": root, "name": "b", "if_ino": a},
            {"op": "set_content", "ino": a, "data": b64(b"x"), "if_content": "not the content"},
            {"op": "create", "parent": root, "name": "new", "kind": "dir", "mode": 0o755},
            {"op": "create", "parent": root, "name": "new", "kind": "dir", "mode": 0o755},
            {"op": "remove", "parent": root, "name": "b", "if_ino": b},
        ]),
    );
    assert_eq!(
        outcomes(&body),
        ["conflict", "conflict", "conflict", "ok", "exists", "ok"]
    );
    assert_eq!(names(&api, root), ["a", "new"]);
    assert_eq!(api.content(a), b"");
}

/// `if_target`: a rename replaces only what its client saw at the new name
/// (0: nothing); a node made there elsewhere meanwhile is never replaced.
#[test]
fn a_rename_never_replaces_a_node_its_client_did_not_see() {
    let server = Server::start();
    let api = Api::user(&server.url(), "alice", PASSWORD);
    let root = api.root();
    let mine = api.create(root, "mine", "file");
    let theirs = api.create(root, "taken", "file");
    let old = api.create(root, "old", "file");
    let body = batch(
        &api,
        json!([
            // The client saw "taken" free: refused, both stay.
            {"op": "rename", "parent": root, "name": "mine", "new_parent": root, "new_name": "taken", "if_target": 0},
            // The client saw "old" lead to another node: refused.
            {"op": "rename", "parent": root, "name": "mine", "new_parent": root, "new_name": "old", "if_target": theirs},
            // What it saw: the rename replaces it.
            {"op": "rename", "parent": root, "name": "mine", "new_parent": root, "new_name": "old", "if_target": old},
        ]),
    );
    assert_eq!(outcomes(&body), ["exists", "exists", "ok"]);
    assert_eq!(names(&api, root), ["old", "taken"]);
    assert_eq!(ino_of(&api, root, "taken"), theirs);
    assert_eq!(ino_of(&api, root, "old"), mine);
}

#[test]
fn a_chunk_list_needs_chunks_the_caller_holds() {
    let server = Server::start();
    let alice = Api::user(&server.url(), "alice", PASSWORD);
    let bob = Api::user(&server.url(), "bob", PASSWORD);
    let data = pantests::Noise::bytes(3, 3 << 20);
    let original = alice.create(alice.root(), "big", "file");
    alice.upload(original, &data);
    let (_, manifest) = alice.get(&format!("/api/v1/nodes/{original}/manifest"));
    let chunks = manifest["chunks"].clone();
    // Alice's second copy shares the chunks and sends no data.
    let copy = alice.create(alice.root(), "copy", "file");
    let body = batch(
        &alice,
        json!([{"op": "set_content", "ino": copy, "chunks": chunks}]),
    );
    assert_eq!(outcomes(&body), ["ok"]);
    assert!(alice.content(copy) == data);
    // Bob knows the hashes but not the bytes.
    let theirs = bob.create(bob.root(), "theirs", "file");
    let body = batch(
        &bob,
        json!([{"op": "set_content", "ino": theirs, "chunks": chunks}]),
    );
    assert_eq!(outcomes(&body), ["incomplete"]);
    assert_eq!(bob.content(theirs), b"");
    let body = batch(
        &bob,
        json!([{"op": "set_content", "ino": theirs, "chunks": [{"sha256": "zz", "size": 1}]}]),
    );
    assert_eq!(outcomes(&body), ["bad_request"]);
    let body = batch(&bob, json!([{"op": "set_content", "ino": theirs}]));
    assert_eq!(outcomes(&body), ["bad_request"]);
}

#[test]
fn batches_beyond_the_limits_answer_413() {
    let server = Server::start();
    let api = Api::user(&server.url(), "alice", PASSWORD);
    let root = api.root();
    let ops: Vec<Value> = (0..panproto::batch::BATCH_OPS_MAX + 1)
        .map(|i| json!({"op": "remove", "parent": root, "name": format!("n{i}")}))
        .collect();
    let (status, body) = api.post("/api/v1/batch", &json!({"ops": ops}));
    assert_eq!((status, body["code"].as_str()), (413, Some("too_large")));
    // A body over the limit is refused on its Content-Length, before it is
    // read. Sent by hand: an HTTP client still writing the body when the
    // answer comes may see the connection close instead of the answer.
    let head = format!(
        "POST /api/v1/batch HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        api.token.as_deref().expect("signed in"),
        panproto::batch::BATCH_BYTES_MAX + 1
    );
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", server.port)).expect("connect");
    // A server that waited for the body instead fails the test, not hangs it.
    conn.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .expect("timeout");
    conn.write_all(head.as_bytes()).expect("send the head");
    let mut answer = String::new();
    BufReader::new(conn)
        .read_line(&mut answer)
        .expect("status line");
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert_eq!(names(&api, root), Vec::<String>::new());
}

/// SIGKILL of the server while batches commit: each batch is in whole or not
/// at all, and sending it again completes it.
#[test]
fn a_server_killed_during_a_batch_keeps_all_of_it_or_none() {
    let mut server = Server::start();
    let api = Api::user(&server.url(), "alice", PASSWORD);
    let root = api.root();
    const FILES: usize = 400;
    let creates = |dir: i64| -> Vec<Value> {
        (0..FILES)
            .map(|i| {
                json!({"op": "create", "parent": dir, "name": format!("f{i}"), "kind": "file", "mode": 0o644})
            })
            .collect()
    };
    // How long a whole batch takes here: the kills land before, during and after.
    let start = std::time::Instant::now();
    batch(&api, json!(creates(api.create(root, "warm-up", "dir"))));
    let whole = start.elapsed();
    for round in 0..6u32 {
        let dir = api.create(root, &format!("round{round}"), "dir");
        let ops = creates(dir);
        let sender = {
            let other = Api::user(&server.url(), "alice", PASSWORD);
            let ops = ops.clone();
            // Its answer may never come: the server dies under it.
            std::thread::spawn(move || {
                other
                    .request(reqwest::Method::POST, "/api/v1/batch")
                    .json(&json!({"ops": ops}))
                    .send()
                    .is_ok()
            })
        };
        // A server just restarted answers its first batch more slowly.
        let pause = whole * round * 4 / 5;
        std::thread::sleep(pause);
        server.kill();
        let _ = sender.join();
        server.restart();
        let present = names(&api, dir).len();
        assert!(
            present == 0 || present == FILES,
            "round {round}: {present} of {FILES} names after the kill"
        );
        let body = batch(&api, json!(ops));
        let expected = if present == 0 { "ok" } else { "exists" };
        assert!(
            outcomes(&body).iter().all(|o| o == expected),
            "round {round}"
        );
        assert_eq!(names(&api, dir).len(), FILES);
        println!(
            "round {round}: killed {pause:?} after a {whole:?} batch was sent; it was {}",
            if present == 0 { "not in" } else { "in" }
        );
    }
    server.assert_consistent("after batches cut by kills");
}
