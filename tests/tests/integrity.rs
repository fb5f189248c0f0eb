//! Content integrity on the embedded profile: `panserver check` finds a clean
//! state clean, and a chunk corrupted in the store is detected on read (the
//! read fails instead of returning wrong bytes, over HTTP and with EIO on a
//! mount) and by `panserver check`.

use pantests::{Api, Noise, Server, wait_until};
use std::time::Duration;

const PW: &str = pantests::PASSWORD;

/// The file under the server's `sub` directory that holds chunk `sha`, if any.
fn chunk_file(server: &Server, sub: &str, sha: &str) -> Option<std::path::PathBuf> {
    server
        .files_under(sub)
        .into_iter()
        .find(|p| p.file_name().and_then(|n| n.to_str()) == Some(sha))
}

fn check(server: &Server, repair: bool) -> (bool, String) {
    let mut args = vec!["check"];
    if repair {
        args.push("--repair");
    }
    let out = server.command(&args, "");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn check_finds_a_clean_state_clean_and_a_corrupt_chunk_on_read() {
    let server = Server::start();
    let api = Api::user(&server.url(), "alice", PW);
    let data = Noise::bytes(41, 6 << 20);
    assert_eq!(api.put_bytes("/api/v1/files/a.bin", data.clone()).0, 201);
    assert_eq!(
        api.put_bytes("/api/v1/files/b.bin", Noise::bytes(42, 300_000))
            .0,
        201
    );
    assert_eq!(api.delete("/api/v1/files/b.bin").0, 204);
    wait_until("transfers", Duration::from_secs(60), || {
        server.files_under("staging").is_empty()
    });
    let (ok, out) = check(&server, false);
    assert!(ok, "check of a clean state: {out}");
    assert!(out.contains(" 0 problems"), "{out}");

    // Flip one byte of one stored chunk.
    let victim = server
        .files_under("store")
        .into_iter()
        .next()
        .expect("a stored chunk");
    let mut bytes = std::fs::read(&victim).expect("read chunk");
    bytes[100] ^= 0xff;
    std::fs::write(&victim, bytes).expect("corrupt chunk");
    // Reading the file fails; it never yields wrong bytes.
    let resp = api.fetch("/api/v1/files/a.bin", None);
    let body = if resp.status().is_success() {
        resp.bytes().ok()
    } else {
        None
    };
    assert!(
        body.as_ref().is_none_or(|b| b.as_ref() == data.as_slice()),
        "a corrupt chunk was served as data"
    );
    assert!(body.is_none(), "the read of a corrupt chunk must fail");
    // Through a mount too: the read fails with EIO.
    let mount = pantests::Mount::new(&server, "alice");
    let err = std::fs::read(mount.p("a.bin")).expect_err("reading a corrupt chunk through a mount");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    let (ok, out) = check(&server, false);
    assert!(!ok, "check must fail on a corrupt chunk: {out}");
    let name = victim.file_name().and_then(|n| n.to_str()).expect("name");
    assert!(
        out.contains(name) && out.contains("does not match"),
        "{out}"
    );
}

/// A ranged read checks only the 64 KiB blocks it reads: a corrupt block fails
/// every read that touches it, and the chunk's other blocks still read right.
#[test]
fn a_ranged_read_fails_on_a_corrupt_block_and_serves_the_others() {
    let server = Server::start();
    let api = Api::user(&server.url(), "alice", PW);
    // Below the smallest chunk: one chunk of four blocks, the last one short.
    let data = Noise::bytes(43, 200_000);
    assert_eq!(api.put_bytes("/api/v1/files/c.bin", data.clone()).0, 201);
    wait_until("transfers", Duration::from_secs(60), || {
        server.files_under("staging").is_empty()
    });
    let victim =
        chunk_file(&server, "store", &panproto::sha256_hex(&data)).expect("the chunk in the store");
    let mut bytes = std::fs::read(&victim).expect("read chunk");
    bytes[150_000] ^= 0xff; // in the third block, [131072, 196608)
    std::fs::write(&victim, bytes).expect("corrupt chunk");
    // (status, body). A read that fails closes the connection: before the
    // headers went out (no status: 0) or after (a body cut short: None).
    let range = |first: usize, last: usize| {
        let sent = api
            .request(reqwest::Method::GET, "/api/v1/files/c.bin")
            .header("Range", format!("bytes={first}-{last}"))
            .send();
        match sent {
            Ok(resp) => (
                resp.status().as_u16(),
                resp.bytes().ok().map(|b| b.to_vec()),
            ),
            Err(_) => (0, None),
        }
    };
    for (first, last) in [(0, 65_535), (10, 131_071), (196_608, 199_999)] {
        let (status, body) = range(first, last);
        assert_eq!(status, 206, "bytes {first}-{last}");
        assert_eq!(
            body.as_deref(),
            Some(&data[first..=last]),
            "bytes {first}-{last} of intact blocks"
        );
    }
    for (first, last) in [(140_000, 140_099), (131_072, 131_072), (100_000, 199_999)] {
        let (status, body) = range(first, last);
        assert!(
            status != 206 || body.is_none(),
            "bytes {first}-{last} hold the corrupt block: the read must fail, got {status}"
        );
    }
}

/// A small file sent in a batch is kept in its chunk's row: no file in staging
/// or the store, no transfer. It reads back, `check` finds it sound, and
/// garbage collection removes the row once the file is gone.
#[test]
fn a_small_file_from_a_batch_is_kept_in_its_row() {
    use base64::Engine;
    use serde_json::json;
    let server = Server::start();
    let api = Api::user(&server.url(), "alice", PW);
    let data = Noise::bytes(44, 3000);
    let sha = panproto::sha256_hex(&data);
    let ops = json!([
        {"op": "create", "parent": api.root(), "name": "small", "kind": "file", "mode": 0o644},
    ]);
    let (status, body) = api.post("/api/v1/batch", &json!({"ops": ops}));
    assert_eq!(status, 200, "{body}");
    let ino = body["results"][0]["node"]["ino"].as_i64().expect("ino");
    let content = base64::engine::general_purpose::STANDARD.encode(&data);
    let ops = json!([{"op": "set_content", "ino": ino, "data": content, "if_content": null}]);
    let (status, body) = api.post("/api/v1/batch", &json!({"ops": ops}));
    assert_eq!(status, 200, "{body}");
    assert!(body["results"][0]["error"].is_null(), "{body}");
    let named = |sub: &str| chunk_file(&server, sub, &sha).is_some();
    assert!(
        !named("staging") && !named("store"),
        "no file for a small chunk"
    );
    let resp = api.fetch("/api/v1/files/small", None);
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.bytes().expect("body").as_ref(), data.as_slice());
    let (ok, out) = check(&server, false);
    assert!(ok && out.contains(" 0 problems"), "{out}");

    assert_eq!(api.delete("/api/v1/files/small").0, 204);
    let out = server.command(&["gc", "--grace-secs", "0"], "");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("removed 1 chunks"), "{said}");
    let (ok, out) = check(&server, false);
    assert!(ok && out.contains(" 0 problems"), "{out}");
    // Sent again, it is whole again: the row went with the file.
    let ops = json!([
        {"op": "create", "parent": api.root(), "name": "again", "kind": "file", "mode": 0o644},
    ]);
    let (_, body) = api.post("/api/v1/batch", &json!({"ops": ops}));
    let ino = body["results"][0]["node"]["ino"].as_i64().expect("ino");
    let ops = json!([{"op": "set_content", "ino": ino, "data": content, "if_content": null}]);
    let (status, body) = api.post("/api/v1/batch", &json!({"ops": ops}));
    assert!(
        status == 200 && body["results"][0]["error"].is_null(),
        "{body}"
    );
    let resp = api.fetch("/api/v1/files/again", None);
    assert_eq!(resp.bytes().expect("body").as_ref(), data.as_slice());
}

#[test]
fn check_repairs_counts() {
    let server = Server::start();
    let api = Api::user(&server.url(), "alice", PW);
    assert_eq!(
        api.put_bytes("/api/v1/files/c.bin", Noise::bytes(43, 2 << 20))
            .0,
        201
    );
    // Damage a usage counter behind the server's back.
    let db = server.data.join("pan.db");
    let status = std::process::Command::new("python3")
        .arg("-c")
        .arg("import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute('UPDATE tbl_user SET used_bytes = used_bytes + 12345'); c.commit()")
        .arg(&db)
        .status()
        .expect("python3");
    assert!(status.success());
    let (ok, out) = check(&server, false);
    assert!(!ok && out.contains("byte count"), "{out}");
    let (ok, out) = check(&server, true);
    assert!(ok, "repair: {out}");
    let (ok, out) = check(&server, false);
    assert!(ok && out.contains(" 0 problems"), "after repair: {out}");
}

/// A panserver killed between recording a chunk's move to the store and removing
/// its staging file leaves the chunk in both places; the next start removes it.
#[test]
fn a_staging_leftover_of_a_stored_chunk_goes_at_the_next_start() {
    let mut server = Server::start();
    let api = Api::user(&server.url(), "alice", PW);
    let data = Noise::bytes(43, 3 << 20);
    assert_eq!(api.put_bytes("/api/v1/files/a.bin", data.clone()).0, 201);
    wait_until("transfers", Duration::from_secs(60), || {
        server.files_under("staging").is_empty()
    });
    // Put one stored chunk's bytes back where the transfer found them.
    let (s, file) = api.get("/api/v1/stat/a.bin");
    assert_eq!(s, 200, "{file}");
    let (s, manifest) = api.get(&format!("/api/v1/nodes/{}/manifest", file["ino"]));
    assert_eq!(s, 200, "{manifest}");
    let first = &manifest["chunks"][0];
    let sha = first["sha256"].as_str().expect("a chunk");
    let len = first["size"].as_u64().expect("size") as usize;
    let leftover = server.data.join("staging").join(&sha[..2]).join(sha);
    std::fs::create_dir_all(leftover.parent().expect("dir")).expect("mkdir");
    std::fs::write(&leftover, &data[..len]).expect("leftover");
    let (ok, out) = check(&server, false);
    assert!(!ok && out.contains("still in staging"), "{out}");
    server.restart();
    assert!(!leftover.exists(), "the leftover was removed at start");
    server.assert_consistent("after the restart");
    assert_eq!(api.content_at("/api/v1/files/a.bin"), data);
}
