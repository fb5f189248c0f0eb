//! The change feed over HTTP on a real server: every change in order with its
//! origin, a long poll that a commit wakes, a cursor that outlives a restart,
//! and an expired cursor that says where to start over.

use std::time::{Duration, Instant};

use pantests::{Api, PASSWORD, Server, wait_until};
use serde_json::{Value, json};

/// The feed after `since`, waiting up to `wait` seconds.
fn changes(api: &Api, since: i64, wait: u64) -> (u16, Value) {
    api.get(&format!("/api/v1/changes?since={since}&wait={wait}"))
}

fn cursor(api: &Api) -> i64 {
    let (status, body) = api.get("/api/v1/changes");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["changes"], json!([]));
    body["seq"].as_i64().expect("seq")
}

fn kinds(body: &Value) -> Vec<(String, String)> {
    body["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .map(|c| {
            (
                c["kind"].as_str().unwrap_or_default().to_string(),
                c["name"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[test]
fn the_feed_lists_changes_in_order_with_their_origin() {
    let server = Server::start();
    let api = Api::user(&server.url(), "alice", PASSWORD);
    let root = api.root();
    let start = cursor(&api);
    let answer = api
        .request(
            reqwest::Method::POST,
            &format!("/api/v1/nodes/{root}/children"),
        )
        .header("x-pan-origin", "42")
        .json(&json!({"name": "d", "kind": "dir", "mode": 0o755}))
        .send()
        .expect("mkdir");
    assert_eq!(answer.status().as_u16(), 201);
    assert_eq!(
        api.put_bytes("/api/v1/files/d/f.txt", b"one".to_vec()).0,
        201
    );
    let (status, body) = api.patch(&format!("/api/v1/nodes/{root}"), &json!({"mode": 0o700}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        api.post(
            "/api/v1/rename",
            &json!({"parent": root, "name": "d", "new_parent": root, "new_name": "e"})
        )
        .0,
        204
    );
    assert_eq!(api.delete("/api/v1/files/e/f.txt").0, 204);

    let (status, body) = changes(&api, start, 0);
    assert_eq!(status, 200, "{body}");
    let expected: Vec<(String, String)> = [
        ("create", "d"),
        ("create", "f.txt"),
        ("content", ""),
        ("attr", ""),
        ("rename", "d"),
        ("remove", "f.txt"),
    ]
    .iter()
    .map(|(k, n)| (k.to_string(), n.to_string()))
    .collect();
    assert_eq!(kinds(&body), expected);
    let list = body["changes"].as_array().expect("changes");
    let seqs: Vec<i64> = list
        .iter()
        .map(|c| c["seq"].as_i64().expect("seq"))
        .collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    assert_eq!(body["seq"].as_i64(), seqs.last().copied());
    assert_eq!(list[0]["origin"], 42);
    assert!(list[1].get("origin").is_none());
    assert_eq!(list[3]["node"]["mode"], 0o700);
    assert_eq!(list[4]["new_name"], "e");
    // Removing the last name leaves no attributes to report.
    assert!(list[5].get("node").is_none());

    // Another user's feed holds none of it.
    let bob = Api::user(&server.url(), "bob", PASSWORD);
    let (_, theirs) = changes(&bob, 0, 0);
    assert_eq!(theirs["changes"], json!([]));
    // A page stops at `limit` and says more are waiting.
    let (_, page) = api.get(&format!("/api/v1/changes?since={start}&limit=2"));
    assert_eq!(page["changes"].as_array().map(Vec::len), Some(2));
    assert_eq!(page["more"], true);
    assert_eq!(page["seq"].as_i64(), Some(start + 2));
}

#[test]
fn a_long_poll_returns_as_soon_as_a_change_commits() {
    let server = Server::start();
    let api = Api::user(&server.url(), "alice", PASSWORD);
    let start = cursor(&api);
    let waiter = {
        let api = api.clone();
        std::thread::spawn(move || {
            let began = Instant::now();
            let answer = changes(&api, start, 50);
            (answer, began.elapsed())
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(api.put_bytes("/api/v1/files/new.txt", b"x".to_vec()).0, 201);
    let ((status, body), waited) = waiter.join().expect("waiter");
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        kinds(&body)[0],
        ("create".to_string(), "new.txt".to_string())
    );
    // Woken by the commit, not by the end of the wait.
    assert!(waited < Duration::from_secs(40), "waited {waited:?}");
    // With nothing new, a poll ends empty at the same cursor.
    let now = cursor(&api);
    let (status, idle) = changes(&api, now, 1);
    assert_eq!(status, 200, "{idle}");
    assert_eq!(
        (&idle["changes"], idle["seq"].as_i64()),
        (&json!([]), Some(now))
    );
    // A cursor ahead of the feed (a restored server) must start over too.
    let (status, ahead) = changes(&api, now + 1, 0);
    assert_eq!(
        (status, ahead["code"].as_str()),
        (410, Some("cursor_expired"))
    );
}

#[test]
fn a_cursor_survives_a_server_restart() {
    let mut server = Server::start();
    let api = Api::user(&server.url(), "alice", PASSWORD);
    assert_eq!(api.put_bytes("/api/v1/files/a.txt", b"a".to_vec()).0, 201);
    let before = cursor(&api);
    server.restart();
    assert_eq!(api.put_bytes("/api/v1/files/b.txt", b"b".to_vec()).0, 201);
    let (status, body) = changes(&api, before, 0);
    assert_eq!(status, 200, "{body}");
    let names: Vec<_> = kinds(&body).into_iter().map(|(_, n)| n).collect();
    assert_eq!(names, ["b.txt", ""], "only what came after the cursor");
}

#[test]
fn an_expired_cursor_answers_410_with_where_to_start_over() {
    let server = Server::start_with(&[
        ("PAN_CHANGE_RETENTION_COUNT", "2"),
        ("PAN_MAINTENANCE_SECS", "1"),
    ]);
    let api = Api::user(&server.url(), "alice", PASSWORD);
    let start = cursor(&api);
    for i in 0..4 {
        let path = format!("/api/v1/files/f{i}.txt");
        assert_eq!(api.put_bytes(&path, b"x".to_vec()).0, 201);
    }
    wait_until("old changes pruned", Duration::from_secs(30), || {
        changes(&api, start, 0).0 == 410
    });
    let (status, body) = changes(&api, start, 0);
    assert_eq!(status, 410);
    assert_eq!(body["code"], "cursor_expired");
    let current = body["seq"].as_i64().expect("current seq");
    assert_eq!(current, cursor(&api));
    let (status, body) = changes(&api, current, 0);
    assert_eq!((status, &body["changes"]), (200, &json!([])));
}
