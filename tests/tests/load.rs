//! Load: 16 concurrent clients (14 on the HTTP API, 2 mounts) upload, download,
//! rename and delete overlapping names for PAN_LOAD_SECS seconds (default 30).
//! On the full stack the API clients switch between two panserver instances.
//! Afterwards: no request failed but with the errors the spec defines, every
//! download was one whole version that some client wrote (never a mix),
//! `panserver check` finds nothing, and the servers' peak RSS is reported.

use std::collections::HashSet;
use std::io::ErrorKind;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pantests::mount::Mount;
use pantests::{Api, Noise, PASSWORD, Server, peak_rss_kib, profile};
use rand::{Rng, SeedableRng};
use reqwest::Method;
use serde_json::json;
use sha2::{Digest, Sha256};

const API_CLIENTS: usize = 14;
const NAMES: usize = 12;
/// Error codes the spec defines for races between clients on the same names.
const RACE_CODES: &[&str] = &[
    "not_found",
    "exists",
    "not_empty",
    "conflict",
    "changed",
    "is_dir",
    "not_dir",
];

fn sha(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

#[derive(Default)]
struct Tally {
    ops: AtomicU64,
    race_errors: AtomicU64,
    failures: Mutex<Vec<String>>,
    /// Every content any client wrote, by SHA-256 (recorded before the write).
    written: Mutex<HashSet<String>>,
}

impl Tally {
    fn fail(&self, what: String) {
        let mut f = self.failures.lock().expect("lock");
        if f.len() < 50 {
            f.push(what);
        }
    }

    fn check_http(&self, op: &str, status: u16, body: &serde_json::Value) {
        self.ops.fetch_add(1, Ordering::Relaxed);
        if status < 300 {
            return;
        }
        match body["code"].as_str() {
            Some(code) if RACE_CODES.contains(&code) => {
                self.race_errors.fetch_add(1, Ordering::Relaxed);
            }
            _ => self.fail(format!("{op}: {status} {body}")),
        }
    }

    /// `what`: the operation and the name, for the report (with the time,
    /// to find it in the panfs logs).
    fn check_content(&self, what: &str, data: &[u8]) {
        if !self.written.lock().expect("lock").contains(&sha(data)) {
            let at = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            self.fail(format!(
                "{what}: {} bytes that no client wrote (at {:.3} s since the epoch)",
                data.len(),
                at.as_secs_f64()
            ));
        }
    }
}

fn name(rng: &mut impl Rng) -> String {
    format!("d{}/f{}", rng.gen_range(0..2), rng.gen_range(0..NAMES))
}

fn api_client(apis: Vec<Api>, seed: u64, tally: Arc<Tally>, stop: Arc<AtomicBool>) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    while !stop.load(Ordering::Relaxed) {
        // A client may switch servers between any two requests.
        let api = &apis[rng.gen_range(0..apis.len())];
        let path = name(&mut rng);
        match rng.gen_range(0..10) {
            0..=3 => {
                let len = if rng.gen_bool(0.1) {
                    2 << 20
                } else {
                    rng.gen_range(1..200_000)
                };
                let data = Noise::bytes(rng.r#gen(), len);
                tally.written.lock().expect("lock").insert(sha(&data));
                let (s, b) = api.put_bytes(&format!("/api/v1/files/{path}"), data);
                tally.check_http("upload", s, &b);
            }
            4..=6 => {
                let resp = api.fetch(&format!("/api/v1/files/{path}"), None);
                let status = resp.status().as_u16();
                let body = resp.bytes().map(|b| b.to_vec()).unwrap_or_default();
                if status == 200 {
                    tally.ops.fetch_add(1, Ordering::Relaxed);
                    tally.check_content(&format!("download {path}"), &body);
                } else {
                    let json = serde_json::from_slice(&body).unwrap_or_default();
                    tally.check_http("download", status, &json);
                }
            }
            7..=8 => {
                let (s, dir) = api.get("/api/v1/stat/d0");
                let (s2, dir2) = api.get("/api/v1/stat/d1");
                if s != 200 || s2 != 200 {
                    tally.check_http("stat", s.max(s2), if s != 200 { &dir } else { &dir2 });
                    continue;
                }
                let parents = [dir["ino"].clone(), dir2["ino"].clone()];
                let req = json!({
                    "parent": parents[rng.gen_range(0..2)],
                    "name": format!("f{}", rng.gen_range(0..NAMES)),
                    "new_parent": parents[rng.gen_range(0..2)],
                    "new_name": format!("f{}", rng.gen_range(0..NAMES)),
                    "mode": if rng.gen_bool(0.5) { "replace" } else { "noreplace" },
                });
                let (s, b) = api.post("/api/v1/rename", &req);
                tally.check_http("rename", s, &b);
            }
            _ => {
                let resp = api
                    .request(Method::DELETE, &format!("/api/v1/files/{path}"))
                    .send()
                    .expect("DELETE");
                let status = resp.status().as_u16();
                let body = resp.json().unwrap_or_default();
                tally.check_http("delete", status, &body);
            }
        }
    }
}

fn mount_client(mount: &Mount, seed: u64, tally: Arc<Tally>, stop: Arc<AtomicBool>) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    while !stop.load(Ordering::Relaxed) {
        let path = mount.p(&name(&mut rng));
        let op = rng.gen_range(0..10);
        let result = match op {
            0..=3 => {
                let data = Noise::bytes(rng.r#gen(), rng.gen_range(1..300_000));
                tally.written.lock().expect("lock").insert(sha(&data));
                std::fs::write(&path, &data)
            }
            4..=6 => std::fs::read(&path)
                .map(|data| tally.check_content(&format!("read {}", path.display()), &data)),
            7..=8 => std::fs::rename(&path, mount.p(&name(&mut rng))),
            _ => std::fs::remove_file(&path),
        };
        tally.ops.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(()) => {}
            // Another client removed or replaced the name meanwhile (ESTALE: the
            // version an open handle was reading is gone from the server).
            Err(e)
                if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::AlreadyExists)
                    || e.raw_os_error() == Some(libc::ESTALE) =>
            {
                tally.race_errors.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => tally.fail(format!("mount op {op} on {}: {e}", path.display())),
        }
    }
}

#[test]
fn sixteen_clients_on_overlapping_names() {
    let secs: u64 = pantests::setting("PAN_LOAD_SECS", || 30);
    let first = Server::start();
    // The embedded profile allows one server per data directory; the full stack scales out.
    let second = profile::is_full().then(|| Server::start_sharing(&first, &[]));
    let setup = Api::user(&first.url(), "load", PASSWORD);
    for dir in ["d0", "d1"] {
        setup.create(setup.root(), dir, "dir");
    }
    let mut urls = vec![first.url()];
    urls.extend(second.as_ref().map(Server::url));
    let mounts: Vec<Mount> = urls
        .iter()
        .cycle()
        .take(2)
        .enumerate()
        .map(|(i, _)| {
            let server = if i == 1 {
                second.as_ref().unwrap_or(&first)
            } else {
                &first
            };
            Mount::new(server, "load")
        })
        .collect();

    let tally = Arc::new(Tally::default());
    // A file is empty between its creation and its first content, on a mount as on a
    // local disk (`open(O_CREAT|O_TRUNC)` then `write`), and via `PUT /files`.
    tally.written.lock().expect("lock").insert(sha(b""));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    std::thread::scope(|scope| {
        for client in 0..API_CLIENTS {
            let apis: Vec<Api> = urls
                .iter()
                .map(|u| {
                    let mut api = setup.clone();
                    api.base = u.clone();
                    api
                })
                .collect();
            let (tally, stop) = (tally.clone(), stop.clone());
            scope.spawn(move || api_client(apis, client as u64, tally, stop));
        }
        for (i, mount) in mounts.iter().enumerate() {
            let (tally, stop) = (tally.clone(), stop.clone());
            scope.spawn(move || mount_client(mount, 1000 + i as u64, tally, stop));
        }
        std::thread::sleep(Duration::from_secs(secs));
        stop.store(true, Ordering::Relaxed);
    });
    let elapsed = started.elapsed().as_secs_f64();
    let ops = tally.ops.load(Ordering::Relaxed);
    let rss: Vec<String> = [Some(&first), second.as_ref()]
        .into_iter()
        .flatten()
        .map(|s| match s.pid().and_then(peak_rss_kib) {
            Some(kib) => format!("{} MiB", kib / 1024),
            None => "unknown".into(),
        })
        .collect();
    println!(
        "load: {} clients, {ops} operations in {elapsed:.0} s ({:.0}/s), {} ended in race errors; server peak RSS {}",
        API_CLIENTS + mounts.len(),
        ops as f64 / elapsed,
        tally.race_errors.load(Ordering::Relaxed),
        rss.join(" / ")
    );
    let failures = tally.failures.lock().expect("lock");
    if !failures.is_empty() {
        for m in &mounts {
            let log =
                std::fs::read_to_string(m.cache_dir().join("pan/load.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            println!(
                "panfs log {}:\n{}",
                m.path.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
    }
    assert!(
        failures.is_empty(),
        "failures under load:\n{}",
        failures.join("\n")
    );
    assert!(ops > 100, "the clients made progress");
    drop(mounts);
    first.assert_consistent("after the load");
}
