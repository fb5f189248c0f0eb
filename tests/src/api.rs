//! A small blocking HTTP client of the API, for tests.

use std::sync::Once;

use panproto::proof::ProofHasher;
use panproto::wire::{ChunkRef, UploadState};
use reqwest::Method;
use reqwest::blocking::{Client, RequestBuilder, Response};
use serde_json::{Value, json};

static TLS: Once = Once::new();

pub fn client() -> Client {
    TLS.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    Client::builder()
        .timeout(std::time::Duration::from_secs(600))
        .build()
        .expect("http client")
}

#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub token: Option<String>,
    http: Client,
}

/// Sends a request. A connection the server closed just as the client reused it
/// from the pool (a race of HTTP keep-alive, before any answer) is retried once
/// on a new connection, as HTTP clients do; any other failure panics.
fn send(req: RequestBuilder) -> Response {
    let again = req.try_clone();
    match req.send() {
        Ok(resp) => resp,
        Err(e) if e.is_request() && again.is_some() => {
            let again = again.expect("cloned above");
            again
                .send()
                .unwrap_or_else(|e2| panic!("request failed twice: {} / {}", chain(&e), chain(&e2)))
        }
        Err(e) => panic!("request failed: {}", chain(&e)),
    }
}

/// The error with its causes ("connection refused", "closed before message completed"…).
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Status and JSON body (Null when the body is empty or not JSON).
pub type Answer = (u16, Value);

fn answer(resp: Response) -> Answer {
    let status = resp.status().as_u16();
    let body = resp.bytes().unwrap_or_default();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

impl Api {
    pub fn new(base: &str) -> Self {
        Self {
            base: base.to_string(),
            token: None,
            http: client(),
        }
    }

    /// Signs up (if needed) and signs in.
    pub fn user(base: &str, name: &str, password: &str) -> Self {
        let mut api = Self::new(base);
        let (status, body) = api.post(
            "/api/v1/signup",
            &json!({"username": name, "password": password}),
        );
        assert!(
            status == 201 || body["code"] == "exists",
            "signup: {status} {body}"
        );
        api.signin(name, password).expect("signin");
        api
    }

    pub fn signin(&mut self, name: &str, password: &str) -> Result<(), Answer> {
        let (status, body) = self.post(
            "/api/v1/signin",
            &json!({"username": name, "password": password}),
        );
        if status != 200 {
            return Err((status, body));
        }
        self.token = body["token"].as_str().map(String::from);
        Ok(())
    }

    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let mut req = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        req
    }

    pub fn get(&self, path: &str) -> Answer {
        answer(send(self.request(Method::GET, path)))
    }

    pub fn post(&self, path: &str, body: &Value) -> Answer {
        answer(send(self.request(Method::POST, path).json(body)))
    }

    pub fn patch(&self, path: &str, body: &Value) -> Answer {
        answer(send(self.request(Method::PATCH, path).json(body)))
    }

    pub fn delete(&self, path: &str) -> Answer {
        answer(send(self.request(Method::DELETE, path)))
    }

    pub fn put_bytes(&self, path: &str, body: Vec<u8>) -> Answer {
        answer(send(self.request(Method::PUT, path).body(body)))
    }

    /// Raw response of a GET, for downloads.
    pub fn fetch(&self, path: &str, range: Option<&str>) -> Response {
        let mut req = self.request(Method::GET, path);
        if let Some(r) = range {
            req = req.header("Range", r);
        }
        send(req)
    }

    pub fn root(&self) -> i64 {
        let (status, info) = self.get("/api/v1/user");
        assert_eq!(status, 200, "{info}");
        info["root_ino"].as_i64().expect("root_ino")
    }

    /// Creates a node under `parent`; returns its inode number.
    pub fn create(&self, parent: i64, name: &str, kind: &str) -> i64 {
        let (status, node) = self.post(
            &format!("/api/v1/nodes/{parent}/children"),
            &json!({"name": name, "kind": kind, "mode": if kind == "dir" { 0o755 } else { 0o644 }}),
        );
        assert_eq!(status, 201, "create {name}: {node}");
        node["ino"].as_i64().expect("ino")
    }

    pub fn content(&self, ino: i64) -> Vec<u8> {
        self.content_at(&format!("/api/v1/nodes/{ino}/content"))
    }

    /// The whole body of a download route (a node's content or a file by path).
    pub fn content_at(&self, path: &str) -> Vec<u8> {
        let resp = self.fetch(path, None);
        assert_eq!(resp.status().as_u16(), 200, "GET {path}");
        resp.bytes().expect("body").to_vec()
    }

    /// Opens an upload session for `data` cut into chunks.
    pub fn begin_upload(&self, ino: i64, data: &[u8]) -> (Answer, Vec<ChunkRef>) {
        let chunks: Vec<ChunkRef> = panproto::Chunker::new(data)
            .map(|c| {
                let c = c.expect("chunk");
                ChunkRef {
                    sha256: Some(panproto::sha256_hex(&c.data)),
                    size: c.data.len() as u64,
                }
            })
            .collect();
        let ans = self.post("/api/v1/uploads", &json!({"ino": ino, "chunks": chunks}));
        (ans, chunks)
    }

    /// Sends a chunk's bytes to a session.
    pub fn put_chunk(&self, session: &str, sha: &str, bytes: Vec<u8>) -> Answer {
        self.put_bytes(&format!("/api/v1/uploads/{session}/chunks/{sha}"), bytes)
    }

    /// The whole protocol: begin, send what is missing, prove if asked, commit.
    /// Returns the first state the server answered and the committed node.
    pub fn upload(&self, ino: i64, data: &[u8]) -> (UploadState, Value) {
        let ((status, state), chunks) = self.begin_upload(ino, data);
        assert_eq!(status, 201, "begin: {state}");
        let state: UploadState = serde_json::from_value(state).expect("state");
        let mut offset = 0usize;
        for c in &chunks {
            let sha = c.sha256.as_deref().expect("sha");
            if state.missing.iter().any(|m| m == sha) {
                let (s, b) = self.put_chunk(
                    &state.id,
                    sha,
                    data[offset..offset + c.size as usize].to_vec(),
                );
                assert_eq!(s, 204, "chunk: {b}");
            }
            offset += c.size as usize;
        }
        if let Some(ch) = &state.challenge {
            let (s, b) = self.post(
                &format!("/api/v1/uploads/{}/proof", state.id),
                &json!({"proof": prove(&ch.nonce, &ch.ranges, data)}),
            );
            assert_eq!(s, 200, "proof: {b}");
        }
        let (s, node) = self.post(&format!("/api/v1/uploads/{}/commit", state.id), &json!({}));
        assert_eq!(s, 200, "commit: {node}");
        (state, node)
    }
}

/// The answer to a proof-of-possession challenge over `data`.
pub fn prove(nonce: &str, ranges: &[(u64, u64)], data: &[u8]) -> String {
    let mut h = ProofHasher::new(nonce);
    for (start, len) in ranges {
        h.update(&data[*start as usize..(*start + *len) as usize]);
    }
    h.finish()
}
