//! The web page: its cookie session and CSRF rule over HTTP, and the page itself
//! driven end to end in headless Chromium (tests/browser/e2e.mjs).

use std::path::Path;
use std::process::Command;

use pantests::Server;
use pantests::api::client;
use serde_json::json;

const PW: &str = "a good password";

#[test]
fn page_in_headless_chromium() {
    let server = Server::start_with(&[("PAN_MAINTENANCE_SECS", "1")]);
    let browser = Path::new(env!("CARGO_MANIFEST_DIR")).join("browser");
    assert!(
        browser.join("node_modules/playwright-core").exists()
            && Path::new("/usr/bin/chromium").exists(),
        "the browser tests need Chromium and playwright-core: scripts/test.sh installs both"
    );
    let scratch = tempfile::tempdir().expect("scratch dir");
    let status = Command::new("node")
        .arg(browser.join("e2e.mjs"))
        .arg(server.url())
        .arg(scratch.path())
        .status()
        .expect("running node");
    assert!(status.success(), "the browser test failed: {status}");
}

#[test]
fn cookie_session_needs_csrf_to_change_anything() {
    let server = Server::start();
    let base = server.url();
    let http = client();
    let signup = http
        .post(format!("{base}/api/v1/signup"))
        .json(&json!({"username": "carol", "password": PW}))
        .send()
        .expect("signup");
    assert_eq!(signup.status(), 201);

    // A cross-site form cannot sign a victim in.
    let resp = http
        .post(format!("{base}/api/v1/web/signin"))
        .header("origin", "https://evil.example")
        .json(&json!({"username": "carol", "password": PW}))
        .send()
        .expect("signin");
    assert_eq!(resp.status(), 403);

    let resp = http
        .post(format!("{base}/api/v1/web/signin"))
        .json(&json!({"username": "carol", "password": PW}))
        .send()
        .expect("signin");
    assert_eq!(resp.status(), 200);
    let set_cookie = resp.headers()["set-cookie"]
        .to_str()
        .expect("ascii")
        .to_string();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set_cookie.contains(attr), "{attr} missing in {set_cookie}");
    }
    let body: serde_json::Value = resp.json().expect("json");
    assert!(body.get("token").is_none(), "the page never sees the token");
    let csrf = body["csrf"].as_str().expect("csrf").to_string();
    let cookie = set_cookie.split(';').next().expect("cookie").to_string();
    let root = body["user"]["root_ino"].as_i64().expect("root");

    // Reading with the cookie alone works; changing needs the CSRF header.
    let resp = http
        .get(format!("{base}/api/v1/nodes/{root}/children"))
        .header("cookie", &cookie)
        .send()
        .expect("list");
    assert_eq!(resp.status(), 200);
    let mkdir = |csrf: Option<&str>| {
        let mut req = http
            .post(format!("{base}/api/v1/nodes/{root}/children"))
            .header("cookie", &cookie)
            .json(&json!({"name": "d", "kind": "dir", "mode": 0o755}));
        if let Some(value) = csrf {
            req = req.header("x-pan-csrf", value);
        }
        req.send().expect("mkdir").status().as_u16()
    };
    assert_eq!(mkdir(None), 403);
    assert_eq!(mkdir(Some(&"0".repeat(64))), 403);
    assert_eq!(mkdir(Some(&csrf)), 201);

    // After a reload the page gets its CSRF value back from the cookie.
    let resp = http
        .get(format!("{base}/api/v1/web/session"))
        .header("cookie", &cookie)
        .send()
        .expect("session");
    let session: serde_json::Value = resp.json().expect("json");
    assert_eq!(session["csrf"], csrf);
    assert_eq!(session["user"]["username"], "carol");

    // Sign-out revokes the token behind the cookie.
    let resp = http
        .post(format!("{base}/api/v1/web/signout"))
        .header("cookie", &cookie)
        .header("x-pan-csrf", &csrf)
        .send()
        .expect("signout");
    assert_eq!(resp.status(), 204);
    let resp = http
        .get(format!("{base}/api/v1/web/session"))
        .header("cookie", &cookie)
        .send()
        .expect("session");
    assert_eq!(resp.status(), 401);
}

#[test]
fn page_is_served_with_a_strict_policy() {
    let server = Server::start();
    let base = server.url();
    let http = client();
    let resp = http.get(format!("{base}/")).send().expect("page");
    assert_eq!(resp.status(), 200);
    let csp = resp.headers()["content-security-policy"]
        .to_str()
        .expect("csp")
        .to_string();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert_eq!(resp.headers()["x-content-type-options"], "nosniff");
    let html = resp.text().expect("html");
    assert!(
        html.contains("/app.js") && !html.contains("http://") && !html.contains("https://"),
        "no CDN"
    );
    for asset in ["app.js", "hashes.js", "hash-worker.js", "app.css"] {
        assert_eq!(
            http.get(format!("{base}/{asset}"))
                .send()
                .expect("asset")
                .status(),
            200,
            "{asset}"
        );
    }
    assert_eq!(
        http.get(format!("{base}/secrets.txt"))
            .send()
            .expect("asset")
            .status(),
        404
    );
}
