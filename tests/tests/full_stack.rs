//! Tests of the full stack only (MariaDB, Redis, RabbitMQ, Ceph): they need the
//! services `scripts/services.sh up` starts, so they are `#[ignore]`d in the
//! embedded run and run by `scripts/test.sh` with `--ignored` on the full stack.

use std::process::Command;
use std::time::{Duration, Instant};

use pantests::{Api, Mount, Noise, Server, profile, services, wait_until};
use serde_json::json;
use sha2::{Digest, Sha256};

const PW: &str = pantests::PASSWORD;

fn sha(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

#[test]
#[ignore = "needs the full stack: scripts/test.sh runs it"]
fn chunks_reach_the_bucket_and_leave_staging() {
    assert!(profile::is_full());
    let server = Server::start();
    let api = Api::user(&server.url(), "alice", PW);
    let data = Noise::bytes(31, 12 << 20);
    assert_eq!(api.put_bytes("/api/v1/files/c.bin", data.clone()).0, 201);
    wait_until(
        "chunks in the bucket, none in staging",
        Duration::from_secs(60),
        || server.files_under("staging").is_empty() && server.stored_chunks() >= 3,
    );
    let resp = api.fetch("/api/v1/files/c.bin", None);
    assert_eq!(sha(&resp.bytes().expect("body")), sha(&data));
}

#[test]
#[ignore = "needs the full stack: scripts/test.sh runs it"]
fn worker_killed_mid_transfer_then_job_redelivered() {
    let server = Server::start_with(&[("PAN_TRANSFER_WORKERS", "0")]);
    let api = Api::user(&server.url(), "alice", PW);
    let data = Noise::bytes(32, 60 << 20);
    let (status, node) = api.put_bytes("/api/v1/files/w.bin", data.clone());
    assert_eq!(status, 201, "{node}");
    let staged = server.files_under("staging").len();
    assert!(staged >= 10, "{staged} staged chunks");
    // Read by version while every chunk is staged: the server keeps the
    // extents it read, with where each chunk was then.
    let by_version = format!(
        "/api/v1/nodes/{}/content?version={}",
        node["ino"].as_i64().expect("ino"),
        node["content"].as_str().expect("content")
    );
    let ranges = [
        (0, 1 << 20),
        (30 << 20, (31 << 20) + 7),
        ((59 << 20) + 1, 60 << 20),
    ];
    let read_ranges = |when: &str| {
        for (start, end) in ranges {
            let resp = api.fetch(&by_version, Some(&format!("bytes={start}-{}", end - 1)));
            assert_eq!(resp.status().as_u16(), 206, "{when}");
            let body = resp.bytes().expect("body");
            assert_eq!(sha(&body), sha(&data[start..end]), "{when}: {start}-{end}");
        }
    };
    read_ranges("staged");
    let logs = tempfile::tempdir().expect("tmp");
    let mut first = server.spawn_transfer_worker(&logs.path().join("w1.log"));
    // Kill the worker while it is moving chunks.
    wait_until("the first transfers", Duration::from_secs(60), || {
        server.files_under("staging").len() < staged
    });
    first.kill().expect("kill");
    first.wait().expect("reap");
    assert!(
        !server.files_under("staging").is_empty(),
        "the worker finished before it was killed"
    );
    let mut second = server.spawn_transfer_worker(&logs.path().join("w2.log"));
    wait_until("every chunk to be moved", Duration::from_secs(120), || {
        server.files_under("staging").is_empty()
    });
    second.kill().expect("kill");
    second.wait().expect("reap");
    assert!(server.stored_chunks() >= staged);
    read_ranges("moved to the store after the server kept where they were");
    let resp = api.fetch("/api/v1/files/w.bin", None);
    assert_eq!(sha(&resp.bytes().expect("body")), sha(&data));
}

#[test]
#[ignore = "needs the full stack: scripts/test.sh runs it"]
fn scale_out_two_servers_two_workers() {
    let a = Server::start_with(&[("PAN_TRANSFER_WORKERS", "0")]);
    let b = Server::start_sharing(&a, &[("PAN_TRANSFER_WORKERS", "0")]);
    let on_a = Api::user(&a.url(), "alice", PW);
    let mut on_b = Api::new(&b.url());
    on_b.token = on_a.token.clone();
    // Two workers, ready before any chunk is queued, share the transfers.
    let logs = tempfile::tempdir().expect("tmp");
    let mut w1 = a.spawn_transfer_worker(&logs.path().join("w1.log"));
    let mut w2 = b.spawn_transfer_worker(&logs.path().join("w2.log"));
    let log = |name: &str| std::fs::read_to_string(logs.path().join(name)).unwrap_or_default();
    wait_until("both workers", Duration::from_secs(60), || {
        log("w1.log").contains("transfer workers ready")
            && log("w2.log").contains("transfer workers ready")
    });
    // A session begun on one server continues on the other.
    let data = Noise::bytes(33, 40 << 20);
    let file = on_a.create(on_a.root(), "moved.bin", "file");
    let ((s, state), chunks) = on_a.begin_upload(file, &data);
    assert_eq!(s, 201);
    let id = state["id"].as_str().expect("id").to_string();
    let mut offset = 0usize;
    for (i, c) in chunks.iter().enumerate() {
        let via = if i % 2 == 0 { &on_a } else { &on_b };
        let sha = c.sha256.clone().expect("sha");
        assert_eq!(
            via.put_chunk(&id, &sha, data[offset..offset + c.size as usize].to_vec())
                .0,
            204
        );
        offset += c.size as usize;
    }
    let (s, st) = on_b.get(&format!("/api/v1/uploads/{id}"));
    assert_eq!((s, st["missing"].as_array().map(Vec::len)), (200, Some(0)));
    assert_eq!(
        on_b.post(&format!("/api/v1/uploads/{id}/commit"), &json!({}))
            .0,
        200
    );
    wait_until("transfers", Duration::from_secs(120), || {
        a.files_under("staging").is_empty()
    });
    for w in [&mut w1, &mut w2] {
        w.kill().expect("kill");
        w.wait().expect("reap");
    }
    let moved = |name: &str| log(name).matches("chunk moved to the store").count();
    assert!(
        moved("w1.log") > 0 && moved("w2.log") > 0,
        "both workers moved chunks: {} and {}\n{}",
        moved("w1.log"),
        moved("w2.log"),
        log("w2.log")
    );
    // A file uploaded through one server reads through the other, and through a mount of either.
    assert_eq!(sha(&on_a.content(file)), sha(&data));
    let m = Mount::new(&b, "alice");
    assert_eq!(
        sha(&std::fs::read(m.p("moved.bin")).expect("via the mount")),
        sha(&data)
    );
}

/// Clients of two servers race on the same names: MariaDB's snapshot reads must not
/// let two transactions both add one name (a 500 from the duplicate key), or both
/// drop one link (counts `check` finds wrong).
#[test]
#[ignore = "needs the full stack: scripts/test.sh runs it"]
fn racing_clients_on_one_name_through_two_servers() {
    let a = Server::start();
    let b = Server::start_sharing(&a, &[]);
    let on_a = Api::user(&a.url(), "alice", PW);
    let mut on_b = Api::new(&b.url());
    on_b.token = on_a.token.clone();
    let root = on_a.root();
    const RACERS: usize = 8;
    for round in 0..10 {
        let answers: Vec<(&str, u16, String)> = std::thread::scope(|scope| {
            let racers: Vec<_> = (0..RACERS)
                .map(|i| {
                    let api = if i % 2 == 0 { &on_a } else { &on_b };
                    scope.spawn(move || {
                        let (s, b) = match i % 4 {
                            0 | 1 => api.put_bytes(
                                &format!("/api/v1/files/r{round}/same.txt"),
                                format!("racer {i}").into_bytes(),
                            ),
                            2 => api.post(
                                &format!("/api/v1/nodes/{root}/children"),
                                &json!({"name": format!("r{round}"), "kind": "dir", "mode": 0o755}),
                            ),
                            _ => api.delete(&format!("/api/v1/files/r{round}/same.txt")),
                        };
                        let op = ["put", "put", "mkdir", "delete"][i % 4];
                        (op, s, b["code"].as_str().unwrap_or_default().to_string())
                    })
                })
                .collect();
            racers
                .into_iter()
                .map(|r| r.join().expect("racer"))
                .collect()
        });
        for (op, status, code) in &answers {
            let allowed = match *op {
                "put" => *status == 201 || *status == 200 || code == "not_found",
                "mkdir" => *status == 201 || code == "exists",
                _ => *status == 204 || code == "not_found" || code == "changed",
            };
            assert!(allowed, "round {round}: {op} answered {status} {code}");
        }
    }
    a.assert_consistent("after the races");
}

type Answer = (u16, serde_json::Value);

/// A chunked upload (database, sessions and queue all take part); an error answer is returned.
fn session_upload(api: &Api, parent: i64, name: &str, data: &[u8]) -> Result<(), Answer> {
    let (s, node) = api.post(
        &format!("/api/v1/nodes/{parent}/children"),
        &json!({"name": name, "kind": "file"}),
    );
    if s != 201 {
        return Err((s, node));
    }
    let ino = node["ino"].as_i64().unwrap_or_default();
    let ((s, st), chunks) = api.begin_upload(ino, data);
    if s != 201 {
        return Err((s, st));
    }
    let id = st["id"].as_str().unwrap_or_default().to_string();
    let mut offset = 0usize;
    for c in &chunks {
        let sha = c.sha256.clone().unwrap_or_default();
        let (s, b) = api.put_chunk(&id, &sha, data[offset..offset + c.size as usize].to_vec());
        if s != 204 {
            return Err((s, b));
        }
        offset += c.size as usize;
    }
    let (s, b) = api.post(&format!("/api/v1/uploads/{id}/commit"), &json!({}));
    if s != 200 {
        return Err((s, b));
    }
    Ok(())
}

/// Uploads files in a loop (one-request and chunked, alternately) while `service`
/// restarts. The only failure allowed meanwhile is a clear 503; every upload that
/// succeeded reads back intact, and uploads work again once the service is back.
fn keeps_working_through(service: &str) {
    let server = Server::start();
    let api = Api::user(&server.url(), "alice", PW);
    let root = api.root();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let stored = std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            let mut stored = Vec::new();
            let mut i = 0u64;
            let deadline = Instant::now() + Duration::from_secs(150);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < deadline {
                let data = Noise::bytes(1000 + i, 300_000 + (i as usize % 7) * 300_000);
                let name = format!("{service}-{i}");
                let result = if i.is_multiple_of(2) {
                    match api.put_bytes(&format!("/api/v1/files/{name}"), data.clone()) {
                        (201, _) => Ok(()),
                        other => Err(other),
                    }
                } else {
                    session_upload(&api, root, &name, &data)
                };
                match result {
                    Ok(()) => stored.push((name, sha(&data))),
                    Err((503, b)) => assert_eq!(b["code"], "unavailable"),
                    // A name left behind by an upload refused halfway.
                    Err((409, b)) if b["code"] == "exists" => {}
                    Err((s, b)) => panic!("unexpected answer {s} while {service} restarts: {b}"),
                }
                i += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            stored
        });
        std::thread::sleep(Duration::from_secs(2));
        services(&["restart", service]);
        // Once the service is back, new uploads succeed again on their own.
        let data = Noise::bytes(99, 2_000_000);
        let mut n = 0;
        wait_until(
            &format!("uploads to work after {service} restarted"),
            Duration::from_secs(90),
            || {
                n += 1;
                session_upload(&api, root, &format!("{service}-after-{n}"), &data).is_ok()
            },
        );
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        writer.join().expect("writer")
    });
    assert!(stored.len() > 5, "only {} uploads succeeded", stored.len());
    for (name, want) in stored {
        let resp = api.fetch(&format!("/api/v1/files/{name}"), None);
        assert_eq!(resp.status().as_u16(), 200, "{name}");
        assert_eq!(sha(&resp.bytes().expect("body")), want, "{name}");
    }
}

#[test]
#[ignore = "needs the full stack: scripts/test.sh runs it"]
fn mariadb_restarted_during_activity() {
    keeps_working_through("mariadb");
}

#[test]
#[ignore = "needs the full stack: scripts/test.sh runs it"]
fn redis_restarted_during_activity() {
    keeps_working_through("redis");
}

#[test]
#[ignore = "needs the full stack: scripts/test.sh runs it"]
fn rabbitmq_restarted_during_activity() {
    keeps_working_through("rabbitmq");
}

#[test]
#[ignore = "needs the full stack: scripts/test.sh runs it"]
fn services_accept_no_default_credentials() {
    assert!(profile::is_full());
    // Redis wants its generated password.
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", "16379", "ping"])
        .output()
        .expect("redis-cli");
    let said =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("NOAUTH"), "redis without a password: {said}");
    // MariaDB: neither root nor pan without a password, over TCP.
    for user in ["root", "pan"] {
        let out = Command::new("mariadb")
            .args([
                "-h",
                "127.0.0.1",
                "-P",
                "13306",
                "-u",
                user,
                "-e",
                "SELECT 1",
            ])
            .output()
            .expect("mariadb client");
        assert!(
            !out.status.success(),
            "MariaDB let {user} in without a password"
        );
    }
    // The bucket is private: anonymous reads are refused.
    let server = Server::start();
    let api = Api::user(&server.url(), "alice", PW);
    assert_eq!(
        api.put_bytes("/api/v1/files/p.bin", Noise::bytes(9, 1 << 20))
            .0,
        201
    );
    wait_until("a chunk in the bucket", Duration::from_secs(60), || {
        server.stored_chunks() > 0
    });
    let store = server
        .settings()
        .iter()
        .find(|(k, _)| k == "PAN_STORE")
        .map(|(_, v)| v.clone())
        .expect("the deployment's store");
    let bucket = store
        .trim_start_matches("s3://")
        .split('?')
        .next()
        .expect("bucket")
        .to_string();
    let endpoint = store
        .split("endpoint=")
        .nth(1)
        .and_then(|s| s.split('&').next())
        .expect("endpoint");
    for url in [
        format!("{endpoint}/{bucket}/"),
        format!("{endpoint}/{bucket}/?list-type=2"),
    ] {
        let resp = pantests::api::client()
            .get(&url)
            .send()
            .expect("anonymous GET");
        assert_eq!(resp.status(), 403, "anonymous {url}");
    }
}

/// A long poll on one API server is woken by a change committed through another
/// (Redis pub/sub), well before the waiter's own periodic look at the database.
#[test]
#[ignore = "needs the full stack: scripts/test.sh runs it"]
fn a_change_through_one_server_wakes_a_follower_of_the_other() {
    let a = Server::start();
    let b = Server::start_sharing(&a, &[]);
    let on_a = Api::user(&a.url(), "alice", PW);
    let mut on_b = Api::new(&b.url());
    on_b.token = on_a.token.clone();
    let (_, body) = on_b.get("/api/v1/changes");
    let start = body["seq"].as_i64().expect("seq");
    for round in 0..3 {
        let follower = {
            let on_b = on_b.clone();
            let since = start + 2 * round;
            std::thread::spawn(move || {
                let began = Instant::now();
                // Shorter than the servers' 10 s fallback look at the database.
                let answer = on_b.get(&format!("/api/v1/changes?since={since}&wait=8"));
                (answer, began.elapsed())
            })
        };
        std::thread::sleep(Duration::from_millis(300));
        let path = format!("/api/v1/files/through-a-{round}.txt");
        assert_eq!(on_a.put_bytes(&path, b"x".to_vec()).0, 201);
        let ((status, body), waited) = follower.join().expect("follower");
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            body["changes"][0]["name"],
            format!("through-a-{round}.txt"),
            "woken after {waited:?}: {body}"
        );
    }
}
