//! The HTTP API's special files and extended attributes against a real
//! panserver (on both profiles, so the schema migration runs on MariaDB too).

use pantests::{Api, Server};
use serde_json::json;

const PW: &str = "a good password";

#[test]
fn special_files_are_listed_but_have_no_content() {
    let server = Server::start();
    let api = Api::user(&server.url(), "alice", PW);
    let root = api.root();
    let mut made = Vec::new();
    for (name, kind, rdev) in [
        ("pipe", "fifo", 0),
        ("sock", "socket", 0),
        ("tty", "chardev", 0x7805),
        ("disk", "blockdev", 0x7901),
    ] {
        let (s, node) = api.post(
            &format!("/api/v1/nodes/{root}/children"),
            &json!({"name": name, "kind": kind, "mode": 0o640, "rdev": rdev}),
        );
        assert_eq!(s, 201, "{node}");
        assert_eq!(
            (
                node["kind"].as_str(),
                node["rdev"].as_u64(),
                node["size"].as_i64()
            ),
            (Some(kind), Some(rdev), Some(0))
        );
        made.push((name, kind, node["ino"].as_i64().expect("ino")));
    }
    let (s, listing) = api.get(&format!("/api/v1/nodes/{root}/children"));
    assert_eq!(s, 200);
    for (name, kind, ino) in &made {
        let entry = listing["entries"]
            .as_array()
            .expect("entries")
            .iter()
            .find(|e| e["name"] == *name)
            .expect("listed");
        assert_eq!(entry["node"]["kind"], *kind);
        // Content requests get a clear 409, never bytes.
        let (s, body) = api.get(&format!("/api/v1/nodes/{ino}/content"));
        assert_eq!((s, body["code"].as_str()), (409, Some("not_regular_file")));
        let (s, body) = api.put_bytes(&format!("/api/v1/nodes/{ino}/content"), b"x".to_vec());
        assert_eq!((s, body["code"].as_str()), (409, Some("not_regular_file")));
        let (s, body) = api.get(&format!("/api/v1/files/{name}"));
        assert_eq!((s, body["code"].as_str()), (409, Some("not_regular_file")));
        let (s, body) = api.patch(&format!("/api/v1/nodes/{ino}"), &json!({"size": 5}));
        assert_eq!((s, body["code"].as_str()), (409, Some("not_regular_file")));
    }
}

#[test]
fn extended_attributes_over_http() {
    let server = Server::start();
    let api = Api::user(&server.url(), "alice", PW);
    let bob = Api::user(&server.url(), "bob", PW);
    let root = api.root();
    let ino = api.create(root, "f", "file");
    let base = format!("/api/v1/nodes/{ino}/xattrs");
    let put = |api: &Api, name: &str, mode: &str, value: &[u8]| {
        api.put_bytes(&format!("{base}/{name}?mode={mode}"), value.to_vec())
    };
    let (s, node) = put(&api, "user.color", "create", b"blue");
    assert_eq!((s, node["xattrs"].as_u64()), (200, Some(1)), "{node}");
    let value = api.fetch(&format!("{base}/user.color"), None);
    assert_eq!(value.status().as_u16(), 200);
    assert_eq!(value.bytes().expect("body").as_ref(), b"blue");
    assert_eq!(
        put(&api, "user.color", "create", b"red").1["code"],
        "exists"
    );
    assert_eq!(
        put(&api, "user.size", "replace", b"1").1["code"],
        "no_attribute"
    );
    let (s, body) = put(&api, "os2.x", "set", b"1");
    assert_eq!(
        (s, body["code"].as_str()),
        (400, Some("xattr_not_supported"))
    );
    let (s, body) = put(&api, "user.big", "set", &vec![0u8; 65_537]);
    assert_eq!((s, body["code"].as_str()), (413, Some("too_large")));
    // Names are percent-encoded path segments.
    let (s, _) = put(&api, "user.with%2Fslash%20and%20space", "set", b"");
    assert_eq!(s, 200);
    let (s, names) = api.get(&base);
    assert_eq!(s, 200);
    assert_eq!(
        names["names"],
        json!(["user.color", "user.with/slash and space"])
    );
    // Another user's node answers 404 whatever the attribute.
    assert_eq!(bob.get(&base).0, 404);
    assert_eq!(put(&bob, "user.color", "set", b"x").0, 404);
    assert_eq!(bob.delete(&format!("{base}/user.color")).0, 404);
    // Removal, then the attribute is gone.
    let (s, node) = api.delete(&format!("{base}/user.color"));
    assert_eq!((s, node["xattrs"].as_u64()), (200, Some(1)));
    let (s, body) = api.get(&format!("{base}/user.color"));
    assert_eq!((s, body["code"].as_str()), (404, Some("no_attribute")));
    server.assert_consistent("after xattrs");
}
