//! pan.go's routes (`/user/*`, `/file/*`) against a real panserver: the envelope,
//! the token check, scoping to the user, and the places pan refuses pan.go's
//! unsafe behaviour (instant upload by a bare hash, completing unverified uploads).

use pantests::api::{client, prove};
use pantests::{Noise, Server};
use reqwest::blocking::Client;
use serde_json::Value;
use sha1::Sha1;
use sha2::{Digest, Sha256};

const PW: &str = "a good password";

struct GoClient {
    base: String,
    http: Client,
    username: String,
    token: String,
}

fn encode(pairs: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

fn answer(resp: reqwest::blocking::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let body = resp.bytes().unwrap_or_default();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

fn post_form(base: &str, path: &str, pairs: &[(&str, &str)]) -> (u16, Value) {
    answer(
        client()
            .post(format!("{base}{path}"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(encode(pairs))
            .send()
            .expect("request"),
    )
}

fn sha1_hex(data: &[u8]) -> String {
    hex::encode(Sha1::digest(data))
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

impl GoClient {
    /// Signs up and in through pan.go's own routes.
    fn new(base: &str, username: &str) -> Self {
        let (s, body) = post_form(
            base,
            "/user/signup",
            &[("username", username), ("password", PW)],
        );
        assert_eq!((s, &body["code"]), (200, &Value::from(0)), "signup: {body}");
        let (s, body) = post_form(
            base,
            "/user/signin",
            &[("username", username), ("password", PW)],
        );
        assert_eq!((s, &body["code"]), (200, &Value::from(0)), "signin: {body}");
        assert_eq!(body["data"]["Username"], username);
        Self {
            base: base.into(),
            http: client(),
            username: username.into(),
            token: body["data"]["Token"].as_str().expect("token").into(),
        }
    }

    fn auth<'a>(&'a self, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
        let mut pairs = vec![
            ("username", self.username.as_str()),
            ("token", self.token.as_str()),
        ];
        pairs.extend_from_slice(extra);
        pairs
    }

    fn post(&self, path: &str, extra: &[(&str, &str)]) -> (u16, Value) {
        post_form(&self.base, path, &self.auth(extra))
    }

    /// Asserts that the user's top folder is empty.
    fn assert_no_files(&self, why: &str) {
        let (s, body) = self.post("/file/query", &[]);
        assert_eq!(
            (s, body["data"].as_array().map(Vec::len)),
            (200, Some(0)),
            "{why}: {body}"
        );
    }

    /// A GET with the parameters in the query string, as pan.go's page sent them.
    fn get(&self, path: &str, extra: &[(&str, &str)]) -> reqwest::blocking::Response {
        self.http
            .get(format!("{}{path}?{}", self.base, encode(&self.auth(extra))))
            .send()
            .expect("request")
    }

    fn upload(&self, name: &str, data: &[u8]) -> (u16, Value) {
        let boundary = "pan-test-boundary-7d91";
        let mut body = Vec::new();
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n\
                 Content-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(data);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        answer(
            self.http
                .post(format!(
                    "{}/file/upload?{}",
                    self.base,
                    encode(&self.auth(&[]))
                ))
                .header(
                    "content-type",
                    format!("multipart/form-data; boundary={boundary}"),
                )
                .body(body)
                .send()
                .expect("upload"),
        )
    }

    fn put_part(&self, upload_id: &str, index: usize, data: Vec<u8>) -> (u16, Value) {
        let index = index.to_string();
        let query = encode(&self.auth(&[("uploadid", upload_id), ("index", &index)]));
        answer(
            self.http
                .post(format!("{}/file/mpupload/uppart?{query}", self.base))
                .body(data)
                .send()
                .expect("part"),
        )
    }
}

#[test]
fn accounts_and_token_checks() {
    let server = Server::start();
    let base = server.url();
    let alice = GoClient::new(&base, "alice");
    let bob = GoClient::new(&base, "bob");

    let (s, body) = post_form(
        &base,
        "/user/signup",
        &[("username", "alice"), ("password", PW)],
    );
    assert_eq!(
        (s, body["code"].as_i64()),
        (409, Some(-1)),
        "duplicate signup: {body}"
    );
    let (s, body) = post_form(
        &base,
        "/user/signin",
        &[("username", "alice"), ("password", "wrong password")],
    );
    assert_eq!((s, body["code"].as_i64()), (401, Some(-1)));
    assert!(body["data"].get("Token").is_none());
    // pan.go served its pages on GET; pan sends the browser to its own page.
    let resp = client()
        .get(format!("{base}/user/signin"))
        .send()
        .expect("get");
    assert!(
        resp.url().path() == "/" && resp.status() == 200,
        "GET /user/signin -> {}",
        resp.url()
    );

    let (s, body) = answer(alice.get("/user/info", &[]));
    assert_eq!((s, body["code"].as_i64()), (200, Some(0)), "{body}");
    assert_eq!(body["data"]["Username"], "alice");
    assert_eq!(body["data"]["SignupAt"].as_str().map(str::len), Some(19));

    // pan.go accepted any 40-character token; pan checks it.
    let fake = "0123456789abcdef0123456789abcdef01234567";
    let (s, body) = post_form(
        &base,
        "/user/info",
        &[("username", "alice"), ("token", fake)],
    );
    assert_eq!((s, body["code"].as_i64()), (403, Some(-2)));
    let (s, body) = post_form(&base, "/user/info", &[("username", "alice")]);
    assert_eq!((s, body["code"].as_i64()), (403, Some(-2)));
    // Bob's valid token with Alice's name is refused.
    let (s, body) = post_form(
        &base,
        "/user/info",
        &[("username", "alice"), ("token", &bob.token)],
    );
    assert_eq!((s, body["code"].as_i64()), (403, Some(-2)));
    // A bearer header works too, and keeps the token out of the URL.
    let (s, body) = answer(
        client()
            .get(format!("{base}/user/info"))
            .bearer_auth(&bob.token)
            .send()
            .expect("info"),
    );
    assert_eq!((s, body["data"]["Username"].as_str()), (200, Some("bob")));
}

#[test]
fn upload_query_meta_download_update_delete() {
    let server = Server::start();
    let base = server.url();
    let alice = GoClient::new(&base, "alice");
    let bob = GoClient::new(&base, "bob");
    let data = Noise::bytes(1, 3 << 20);
    let sha1 = sha1_hex(&data);

    let (s, body) = alice.upload("report.bin", &data);
    assert_eq!((s, body["code"].as_i64()), (200, Some(0)), "{body}");
    assert_eq!(body["data"]["FileSha1"], sha1);
    assert_eq!(body["data"]["FileSize"], data.len());

    let (s, body) = alice.post("/file/query", &[("limit", "10")]);
    assert_eq!(s, 200, "{body}");
    let files = body["data"].as_array().expect("list");
    assert_eq!(files.len(), 1);
    assert_eq!(files[0]["FileHash"], sha1);
    assert_eq!(files[0]["FileName"], "report.bin");
    assert_eq!(files[0]["UserName"], "alice");

    let (s, body) = alice.post("/file/meta", &[("filehash", &sha1)]);
    assert_eq!(
        (s, body["data"]["FileName"].as_str()),
        (200, Some("report.bin"))
    );

    let resp = alice.get("/file/download", &[("filehash", &sha1)]);
    assert_eq!(resp.status(), 200);
    let disposition = resp.headers()["content-disposition"]
        .to_str()
        .unwrap_or("")
        .to_string();
    assert!(disposition.starts_with("attachment"), "{disposition}");
    assert_eq!(sha256_hex(&resp.bytes().expect("bytes")), sha256_hex(&data));
    let resp = alice
        .http
        .get(format!(
            "{base}/file/download?{}",
            encode(&alice.auth(&[("filehash", &sha1)]))
        ))
        .header("range", "bytes=100-199")
        .send()
        .expect("range");
    assert_eq!(resp.status(), 206);
    assert_eq!(&resp.bytes().expect("bytes")[..], &data[100..200]);

    // Bob knows the hash but gets nothing: every lookup is scoped to the caller.
    for path in ["/file/meta", "/file/download", "/file/delete"] {
        let (s, body) = bob.post(path, &[("filehash", &sha1)]);
        assert_eq!(
            (s, body["code"].as_i64()),
            (404, Some(-1)),
            "{path}: {body}"
        );
    }
    let (s, body) = bob.post(
        "/file/update",
        &[("op", "0"), ("filehash", &sha1), ("filename", "mine")],
    );
    assert_eq!(s, 404, "{body}");

    let (s, body) = alice.post(
        "/file/update",
        &[("op", "0"), ("filehash", &sha1), ("filename", "final.bin")],
    );
    assert_eq!(
        (s, body["data"]["FileName"].as_str()),
        (200, Some("final.bin")),
        "{body}"
    );
    let (s, _) = alice.post(
        "/file/update",
        &[("op", "1"), ("filehash", &sha1), ("filename", "x")],
    );
    assert_eq!(s, 403);
    let (s, _) = alice.post(
        "/file/update",
        &[("op", "0"), ("filehash", &sha1), ("filename", "../etc")],
    );
    assert_eq!(s, 400);
    let (s, body) = alice.post("/file/meta", &[("filehash", "not-a-hash")]);
    assert_eq!((s, body["code"].as_i64()), (400, Some(-1)));

    let (s, body) = alice.post("/file/delete", &[("filehash", &sha1)]);
    assert_eq!((s, body["code"].as_i64()), (200, Some(0)));
    let (s, _) = alice.post("/file/meta", &[("filehash", &sha1)]);
    assert_eq!(s, 404);
}

#[test]
fn fast_upload_needs_sha256_and_a_proof() {
    let server = Server::start();
    let base = server.url();
    let alice = GoClient::new(&base, "alice");
    let bob = GoClient::new(&base, "bob");
    let data = Noise::bytes(2, 2 << 20);
    let (sha1, sha256) = (sha1_hex(&data), sha256_hex(&data));
    let (s, _) = alice.upload("shared.bin", &data);
    assert_eq!(s, 200);
    let size = data.len().to_string();

    // pan.go's client sends only the SHA-1: the answer is its "use the normal upload".
    let (s, body) = bob.post(
        "/file/fastupload",
        &[
            ("filehash", &sha1),
            ("filename", "got.bin"),
            ("filesize", &size),
        ],
    );
    assert_eq!((s, body["code"].as_i64()), (200, Some(-1)), "{body}");
    bob.assert_no_files("no file appeared");

    // With the SHA-256, a challenge; a wrong answer gets nothing.
    let first = &[
        ("filehash", sha1.as_str()),
        ("sha256", &sha256),
        ("filename", "got.bin"),
        ("filesize", &size),
    ];
    let (s, body) = bob.post("/file/fastupload", first);
    assert_eq!((s, body["code"].as_i64()), (200, Some(1)), "{body}");
    let id = body["data"]["UploadID"].as_str().expect("id").to_string();
    let (s, body) = bob.post(
        "/file/fastupload",
        &[
            ("uploadid", &id),
            ("proof", &"0".repeat(64)),
            ("filename", "got.bin"),
        ],
    );
    assert_eq!((s, body["code"].as_i64()), (400, Some(-1)), "{body}");
    bob.assert_no_files("an instant upload not proven leaves no file");

    // A right answer, computed from the bytes, gets the file.
    let (_, body) = bob.post("/file/fastupload", first);
    let id = body["data"]["UploadID"].as_str().expect("id").to_string();
    let challenge = &body["data"]["Challenge"];
    let ranges: Vec<(u64, u64)> =
        serde_json::from_value(challenge["ranges"].clone()).expect("ranges");
    let proof = prove(challenge["nonce"].as_str().expect("nonce"), &ranges, &data);
    let (s, body) = bob.post(
        "/file/fastupload",
        &[
            ("uploadid", &id),
            ("proof", &proof),
            ("filename", "got.bin"),
        ],
    );
    assert_eq!((s, body["code"].as_i64()), (200, Some(0)), "{body}");
    let resp = bob.get("/file/download", &[("filehash", &sha1)]);
    assert_eq!(sha256_hex(&resp.bytes().expect("bytes")), sha256);

    // The owner of the bytes needs no proof; a size that does not match is refused.
    let (s, body) = alice.post(
        "/file/fastupload",
        &[
            ("filehash", &sha1),
            ("sha256", &sha256),
            ("filename", "again.bin"),
        ],
    );
    assert_eq!((s, body["code"].as_i64()), (200, Some(0)), "{body}");
    let (s, body) = alice.post(
        "/file/fastupload",
        &[
            ("filehash", &sha1),
            ("sha256", &sha256),
            ("filename", "x"),
            ("filesize", "5"),
        ],
    );
    assert_eq!((s, body["code"].as_i64()), (200, Some(-1)), "{body}");
}

#[test]
fn multipart_upload_is_verified_before_it_completes() {
    let server = Server::start();
    let base = server.url();
    let alice = GoClient::new(&base, "alice");
    let bob = GoClient::new(&base, "bob");
    let part = 5 << 20;
    let data = Noise::bytes(3, 2 * part + 12345);
    let sha1 = sha1_hex(&data);
    let size = data.len().to_string();

    let (s, body) = alice.post(
        "/file/mpupload/init",
        &[("filehash", &sha1), ("filesize", &size)],
    );
    assert_eq!((s, body["code"].as_i64()), (200, Some(0)), "{body}");
    assert_eq!(body["data"]["ChunkSize"], part);
    assert_eq!(body["data"]["ChunkCount"], 3);
    let id = body["data"]["UploadID"].as_str().expect("id").to_string();

    assert_eq!(alice.put_part(&id, 0, data[..part].to_vec()).0, 200);
    assert_eq!(alice.put_part(&id, 2, data[2 * part..].to_vec()).0, 200);
    // pan.go completed uploads it never received.
    let done = [
        ("uploadid", id.as_str()),
        ("filehash", &sha1),
        ("filesize", &size),
        ("filename", "big.bin"),
    ];
    let (s, body) = alice.post("/file/mpupload/complete", &done);
    assert_eq!((s, body["code"].as_i64()), (409, Some(-1)), "{body}");
    // Wrong sizes, indexes out of range and other users' ids are refused.
    assert_eq!(alice.put_part(&id, 1, vec![0; 10]).0, 400);
    assert_eq!(alice.put_part(&id, 3, vec![0; 10]).0, 400);
    assert_eq!(alice.put_part("../../etc", 1, vec![0; 10]).0, 404);
    assert_eq!(bob.put_part(&id, 1, vec![0; 10]).0, 404);
    assert_eq!(alice.put_part(&id, 1, data[part..2 * part].to_vec()).0, 200);
    let (s, body) = alice.post("/file/mpupload/complete", &done);
    assert_eq!((s, body["code"].as_i64()), (200, Some(0)), "{body}");
    let resp = alice.get("/file/download", &[("filehash", &sha1)]);
    assert_eq!(sha256_hex(&resp.bytes().expect("bytes")), sha256_hex(&data));

    // Parts that do not hash to the declared SHA-1 store nothing.
    let small = Noise::bytes(4, 1000);
    let (_, body) = alice.post(
        "/file/mpupload/init",
        &[("filehash", &sha1_hex(b"other")), ("filesize", "1000")],
    );
    let id = body["data"]["UploadID"].as_str().expect("id").to_string();
    assert_eq!(alice.put_part(&id, 0, small).0, 200);
    let (s, body) = alice.post(
        "/file/mpupload/complete",
        &[("uploadid", &id), ("filename", "bad.bin")],
    );
    assert_eq!(
        (s, body["data"]["error"].as_str()),
        (400, Some("hash_mismatch")),
        "{body}"
    );
    let (_, body) = alice.post("/file/query", &[]);
    let names: Vec<&str> = body["data"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|f| f["FileName"].as_str())
        .collect();
    assert_eq!(names, vec!["big.bin"]);
}

#[test]
fn special_files_are_not_listed() {
    let server = Server::start();
    let go = GoClient::new(&server.url(), "carol");
    let mut api = pantests::Api::new(&server.url());
    api.signin("carol", PW).expect("signin");
    let root = api.root();
    for (name, kind) in [("pipe", "fifo"), ("sock", "socket"), ("dir", "dir")] {
        api.create(root, name, kind);
    }
    go.assert_no_files("FIFOs, sockets and folders are not pan.go files");
}
