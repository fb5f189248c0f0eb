//! Two mounts of one account and the HTTP API make random changes: creates,
//! renames, removes, chmod and new content. After each step, every mount must
//! show what the server has (names, kinds, modes, sizes, link counts), with
//! the kernel's long cache times: changes made elsewhere arrive through the
//! change feed. The time each change took to show is printed (the bench
//! measures it properly).
//!
//! Replay a failure with PAN_FEED_SEED=<seed>; PAN_FEED_STEPS sets the length.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use pantests::{Api, Mount, PASSWORD, Server, wait_until};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

const NAMES: [&str; 5] = ["a", "b", "c", "d.txt", "e.txt"];

/// What a user sees of the top directory: name -> (kind, mode, size, links).
type View = BTreeMap<String, (String, u32, u64, u64)>;

fn mount_view(root: &Path) -> View {
    let mut view = View::new();
    for entry in std::fs::read_dir(root).expect("read_dir").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        // A name listed a moment ago may be gone by now: the next look decides.
        let Ok(meta) = std::fs::symlink_metadata(entry.path()) else {
            continue;
        };
        let kind = if meta.is_dir() { "dir" } else { "file" };
        let size = if meta.is_dir() { 0 } else { meta.len() };
        let mode = meta.permissions().mode() & 0o7777;
        view.insert(name, (kind.to_string(), mode, size, meta.nlink()));
    }
    view
}

fn server_view(api: &Api, root: i64) -> View {
    let (status, body) = api.get(&format!("/api/v1/nodes/{root}/children"));
    assert_eq!(status, 200, "{body}");
    let mut view = View::new();
    for e in body["entries"].as_array().expect("entries") {
        let node = &e["node"];
        let kind = node["kind"].as_str().unwrap_or_default().to_string();
        let size = if kind == "dir" {
            0
        } else {
            node["size"].as_u64().unwrap_or_default()
        };
        let mode = node["mode"].as_u64().unwrap_or_default() as u32 & 0o7777;
        let links = node["nlink"].as_u64().unwrap_or_default();
        view.insert(
            e["name"].as_str().unwrap_or_default().to_string(),
            (kind, mode, size, links),
        );
    }
    view
}

/// One random change by one of the three clients (it may fail, as on a disk); what it was.
fn step(rng: &mut StdRng, who: usize, mounts: &[&Mount], api: &Api, root: i64) -> String {
    let name = NAMES[rng.gen_range(0..NAMES.len())];
    let other = NAMES[rng.gen_range(0..NAMES.len())];
    let len = rng.gen_range(0..5000usize);
    let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    let mode = [0o600, 0o640, 0o644, 0o755][rng.gen_range(0..4)];
    let op = rng.gen_range(0..5);
    let what = match op {
        0 => "write",
        1 => "rename",
        2 => "remove",
        3 => "chmod",
        _ => "mkdir",
    };
    if who < mounts.len() {
        let m = mounts[who];
        let _ = match op {
            0 => std::fs::write(m.p(name), &data),
            1 => std::fs::rename(m.p(name), m.p(other)),
            2 => std::fs::remove_file(m.p(name)).or_else(|_| std::fs::remove_dir(m.p(name))),
            3 => std::fs::set_permissions(m.p(name), std::fs::Permissions::from_mode(mode)),
            _ => std::fs::create_dir(m.p(name)),
        };
        // A local-first mount has the change on its own disk when the call
        // returns; the test's truth is the server's, once the mount synced.
        m.sync();
    } else {
        let _ = match op {
            0 => api.put_bytes(&format!("/api/v1/files/{name}"), data),
            1 => api.post(
                "/api/v1/rename",
                &json!({"parent": root, "name": name, "new_parent": root, "new_name": other}),
            ),
            2 => api.delete(&format!("/api/v1/files/{name}")),
            3 => {
                let (_, node) = api.get(&format!("/api/v1/stat/{name}"));
                match node["ino"].as_i64() {
                    Some(ino) => api.patch(&format!("/api/v1/nodes/{ino}"), &json!({"mode": mode})),
                    None => (404, node),
                }
            }
            _ => api.post(
                &format!("/api/v1/nodes/{root}/children"),
                &json!({"name": name, "kind": "dir", "mode": 0o755}),
            ),
        };
    }
    let by = ["mount a", "mount b", "the API"][who];
    format!("{by}: {what} {name} {other}")
}

#[test]
fn two_mounts_and_the_api_see_each_others_changes() {
    let seed: u64 = pantests::setting("PAN_FEED_SEED", rand::random);
    let steps: usize = pantests::setting("PAN_FEED_STEPS", || 60);
    println!("feed test: seed {seed}, {steps} steps (replay with PAN_FEED_SEED={seed})");
    let server = Server::start();
    let a = Mount::new(&server, "alice");
    let b = Mount::new(&server, "alice");
    let api = Api::user(&server.url(), "alice", PASSWORD);
    let root = api.root();
    let mounts = [&a, &b];
    let mut rng = StdRng::seed_from_u64(seed);
    let mut delays = Vec::new();
    for i in 0..steps {
        // Every mount has the names cached before the change.
        for m in mounts {
            mount_view(m.root());
        }
        let who = rng.gen_range(0..3);
        let did = step(&mut rng, who, &mounts, &api, root);
        let started = Instant::now();
        let truth = server_view(&api, root);
        for (k, m) in mounts.iter().enumerate() {
            wait_until(
                &format!("step {i} ({did}) on mount {k}, seed {seed}"),
                Duration::from_secs(10),
                || mount_view(m.root()) == truth,
            );
            if k != who {
                delays.push(started.elapsed());
            }
        }
    }
    delays.sort();
    let at = |q: f64| delays[((delays.len() - 1) as f64 * q) as usize];
    println!(
        "a change made elsewhere showed after p50 {:?}, p99 {:?}, max {:?}",
        at(0.5),
        at(0.99),
        at(1.0)
    );
}

/// A mount whose saved cursor the server has pruned starts over at the next
/// mount: nothing it had cached survives as stale, and `panfs status` says so.
#[test]
fn a_remount_after_the_cursor_expired_starts_over_with_nothing_stale() {
    let server = Server::start_with(&[
        ("PAN_CHANGE_RETENTION_COUNT", "2"),
        ("PAN_MAINTENANCE_SECS", "1"),
    ]);
    let mut m = Mount::new(&server, "alice");
    let api = Api::user(&server.url(), "alice", PASSWORD);
    m.sh("mkdir -p d && echo one > d/one && echo two > d/two && chmod 600 d/two");
    let before = mount_view(&m.p("d"));
    assert_eq!(before.len(), 2);
    m.umount();
    // Where the mount's saved replica is current to.
    let saved = api.get("/api/v1/changes").1["seq"].as_i64().expect("seq");
    // Changes the mount misses: more than the feed keeps.
    assert_eq!(api.delete("/api/v1/files/d/one").0, 204);
    for i in 0..4 {
        let path = format!("/api/v1/files/d/new{i}");
        assert_eq!(api.put_bytes(&path, vec![b'x'; i + 1]).0, 201);
    }
    wait_until("the feed pruned", Duration::from_secs(30), || {
        api.get(&format!("/api/v1/changes?since={saved}")).0 == 410
    });
    m.mount();
    let (_, d) = api.get("/api/v1/stat/d");
    let dir = d["ino"].as_i64().expect("dir ino");
    wait_until(
        "the mount to match the server",
        Duration::from_secs(10),
        || mount_view(&m.p("d")) == server_view(&api, dir),
    );
    assert!(!m.p("d/one").exists(), "a removed file must not linger");
    assert_eq!(std::fs::read(m.p("d/new3")).expect("read"), b"xxxx");
    // The daemon rewrites its status every second.
    let started = Instant::now();
    loop {
        let text = String::from_utf8_lossy(&m.panfs(&["status"], "").stdout).into_owned();
        if text.contains("following at change") && text.contains("1 restarts") {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{text}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
