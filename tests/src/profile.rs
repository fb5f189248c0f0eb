//! Which services a test server runs on: the embedded default, or the full
//! stack (MariaDB, Redis, RabbitMQ, Ceph) when `PAN_TEST_PROFILE=full`, with the
//! services' `PAN_*` settings in the environment (as `scripts/services.sh up` prints them).

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

pub fn is_full() -> bool {
    std::env::var("PAN_TEST_PROFILE").is_ok_and(|p| p == "full")
}

fn required(var: &str) -> String {
    std::env::var(var)
        .unwrap_or_else(|_| panic!("PAN_TEST_PROFILE=full needs {var} (see scripts/services.sh)"))
}

/// (user, password, host, port, database) of a mysql:// URL.
fn mysql_parts(url: &str) -> (String, String, String, String, String) {
    let rest = url.strip_prefix("mysql://").expect("a mysql:// URL");
    let (auth, place) = rest.rsplit_once('@').expect("credentials in the URL");
    let (user, password) = auth.split_once(':').expect("user:password");
    let (hostport, db) = place.split_once('/').expect("a database name");
    let (host, port) = hostport.split_once(':').unwrap_or((hostport, "3306"));
    (
        user.into(),
        password.into(),
        host.into(),
        port.into(),
        db.split('?').next().unwrap_or(db).into(),
    )
}

fn mysql(url: &str, sql: &str) {
    let (user, password, host, port, _) = mysql_parts(url);
    let out = Command::new("mariadb")
        .args(["-h", &host, "-P", &port, "-u", &user, "-e", sql])
        .env("MYSQL_PWD", password)
        .output()
        .expect("running the mariadb client");
    assert!(
        out.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A deployment of its own on the shared services: a fresh database, a Redis and
/// queue namespace, and a prefix in the bucket. Returns the settings to pass on.
pub fn fresh_deployment() -> Vec<(String, String)> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let id = format!(
        "pan_t{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let base = required("PAN_DATABASE_URL");
    required("PAN_REDIS_URL");
    required("PAN_AMQP_URL");
    let store = required("PAN_STORE");
    mysql(
        &base,
        &format!("CREATE DATABASE `{id}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"),
    );
    let (head, _) = base.rsplit_once('/').expect("a database in the URL");
    let url = format!("{head}/{id}");
    // A bucket of its own, so that dropping the deployment frees its objects
    // (the test Ceph keeps them in memory).
    let (_, query) = store.split_once('?').expect("an S3 URL with settings");
    let bucket = id.replace('_', "-");
    vec![
        ("PAN_DATABASE_URL".into(), url),
        ("PAN_NAMESPACE".into(), id.clone()),
        (
            "PAN_STORE".into(),
            format!("s3://{bucket}?{query}&prefix={id}/"),
        ),
    ]
}

/// Drops a deployment's database (best effort, when a test server goes away).
pub fn drop_deployment(env: &[(String, String)]) {
    if let Some((_, store)) = env.iter().find(|(k, _)| k == "PAN_STORE")
        && let Ok(conf) = std::env::var("PAN_TEST_CEPH_CONF")
    {
        let bucket = bucket_of(store);
        if bucket.starts_with("pan-t") {
            let _ = radosgw_admin(&conf)
                .args(["bucket", "rm"])
                .args(["--bucket", &bucket, "--purge-objects", "--bypass-gc"])
                .output();
        }
    }
    if let Some((_, url)) = env.iter().find(|(k, _)| k == "PAN_DATABASE_URL") {
        let (_, _, _, _, db) = mysql_parts(url);
        if db.starts_with("pan_t") {
            let _ =
                std::panic::catch_unwind(|| mysql(url, &format!("DROP DATABASE IF EXISTS `{db}`")));
        }
    }
}

/// The gateway's admin tool, bounded in time: it waits for ever on a cluster
/// that blocks writes (an OSD that takes itself for full), and a test's
/// teardown must never hang the run.
fn radosgw_admin(conf: &str) -> Command {
    let mut cmd = Command::new("timeout");
    cmd.args([
        "120",
        "radosgw-admin",
        "-c",
        conf,
        "--client-mount-timeout=30",
    ]);
    cmd
}

fn bucket_of(store: &str) -> String {
    store
        .trim_start_matches("s3://")
        .split(['?', '/'])
        .next()
        .unwrap_or("pan")
        .to_string()
}

/// Names of the objects under `prefix` in the deployment's bucket (full stack),
/// listed with the gateway's admin tool.
pub fn bucket_objects(store: &str, prefix: &str) -> Vec<String> {
    let bucket = bucket_of(store);
    let conf = required("PAN_TEST_CEPH_CONF");
    let out = radosgw_admin(&conf)
        .args([
            "bucket",
            "list",
            "--bucket",
            &bucket,
            "--max-entries=1000000",
        ])
        .output()
        .expect("running radosgw-admin");
    assert!(
        out.status.success(),
        "radosgw-admin: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).expect("bucket list JSON");
    list.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|o| o["name"].as_str())
                .filter(|n| n.starts_with(prefix))
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}
