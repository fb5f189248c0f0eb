//! What panfs relies on from a server, as one suite run against every `Remote`:
//! the in-memory one (panfs's unit tests) and the HTTP one against a real
//! panserver (the end-to-end tests). When both pass, tests of the file-system
//! logic on the in-memory remote say something about the real server.

use bytes::Bytes;
use panproto::proof::ProofHasher;
use panproto::wire::{
    ChunkRef, CommitRequest, CreateRequest, ErrorCode, NodeKind, RenameMode, RenameRequest,
    SetAttrRequest, UploadInit, XattrMode,
};

use super::{Remote, RemoteResult};

fn refused_with<T: std::fmt::Debug>(result: RemoteResult<T>, code: ErrorCode, what: &str) {
    match result {
        Err(e) if e.is(code) => {}
        other => panic!("{what}: expected {code}, got {other:?}"),
    }
}

fn create(name: &str, kind: NodeKind) -> CreateRequest {
    CreateRequest::plain(name, kind)
}

fn rename(
    parent: i64,
    name: &str,
    new_parent: i64,
    new_name: &str,
    mode: RenameMode,
) -> RenameRequest {
    RenameRequest {
        parent,
        name: name.to_string(),
        new_parent,
        new_name: new_name.to_string(),
        mode,
    }
}

/// Runs the whole contract in a new directory `contract` under `root`.
pub async fn run(remote: &dyn Remote, root: i64) {
    let mut req = create("contract", NodeKind::Dir);
    req.mode = 0o755;
    let dir = remote.create(root, &req).await.expect("mkdir contract").ino;
    namespace(remote, dir).await;
    contents(remote, dir).await;
    chunked_upload(remote, dir).await;
    extended_attributes(remote, dir).await;
}

async fn namespace(remote: &dyn Remote, root: i64) {
    let file = remote
        .create(root, &create("a", NodeKind::File))
        .await
        .expect("create a");
    let dir = remote
        .create(root, &create("d", NodeKind::Dir))
        .await
        .expect("create d");
    assert_eq!(
        remote.lookup(root, "a").await.expect("lookup a").ino,
        file.ino
    );
    refused_with(
        remote.create(root, &create("a", NodeKind::File)).await,
        ErrorCode::Exists,
        "create twice",
    );
    refused_with(
        remote.lookup(root, "missing").await,
        ErrorCode::NotFound,
        "lookup missing",
    );
    refused_with(
        remote.lookup(file.ino, "x").await,
        ErrorCode::NotDir,
        "lookup under a file",
    );
    refused_with(
        remote
            .create(root, &create(&"n".repeat(256), NodeKind::File))
            .await,
        ErrorCode::NameTooLong,
        "a 256-byte name",
    );
    let names: Vec<String> = remote
        .list(root)
        .await
        .expect("list")
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, ["a", "d"], "listing in name order");

    refused_with(
        remote.remove(root, "d", false).await,
        ErrorCode::IsDir,
        "unlink of a dir",
    );
    refused_with(
        remote.remove(root, "a", true).await,
        ErrorCode::NotDir,
        "rmdir of a file",
    );
    remote
        .create(dir.ino, &create("inner", NodeKind::Dir))
        .await
        .expect("create d/inner");
    refused_with(
        remote.remove(root, "d", true).await,
        ErrorCode::NotEmpty,
        "rmdir of a full dir",
    );
    assert_eq!(
        remote.node(dir.ino).await.expect("d").nlink,
        3,
        "a subdirectory links its parent"
    );

    let before = remote.node(file.ino).await.expect("a").ctime;
    refused_with(
        remote
            .rename(&rename(root, "a", root, "d", RenameMode::Replace))
            .await,
        ErrorCode::IsDir,
        "a file over a dir",
    );
    refused_with(
        remote
            .rename(&rename(root, "a", root, "d", RenameMode::NoReplace))
            .await,
        ErrorCode::Exists,
        "noreplace onto an existing name",
    );
    refused_with(
        remote
            .rename(&rename(root, "a", root, "nothing", RenameMode::Exchange))
            .await,
        ErrorCode::NotFound,
        "exchange with nothing",
    );
    refused_with(
        remote
            .rename(&rename(root, "d", dir.ino, "below", RenameMode::Replace))
            .await,
        ErrorCode::BadRequest,
        "a dir into itself",
    );
    remote
        .rename(&rename(root, "a", dir.ino, "moved", RenameMode::Replace))
        .await
        .expect("rename");
    let moved = remote.lookup(dir.ino, "moved").await.expect("lookup moved");
    assert_eq!(moved.ino, file.ino);
    assert!(moved.ctime > before, "a rename moves the ctime");
    refused_with(
        remote.lookup(root, "a").await,
        ErrorCode::NotFound,
        "the old name is gone",
    );

    let linked = remote.link(file.ino, root, "b").await.expect("link");
    assert_eq!(linked.nlink, 2);
    refused_with(
        remote.link(dir.ino, root, "dirlink").await,
        ErrorCode::NotPermitted,
        "link of a dir",
    );
    remote
        .remove(dir.ino, "moved", false)
        .await
        .expect("unlink one name");
    assert_eq!(remote.node(file.ino).await.expect("a").nlink, 1);
    remote
        .remove(root, "b", false)
        .await
        .expect("unlink the last name");
    let gone = remote
        .node(file.ino)
        .await
        .expect("a removed node stays readable for open handles");
    assert_eq!(gone.nlink, 0);
    refused_with(
        remote
            .put_content(file.ino, Bytes::from_static(b"late"), 1, None)
            .await,
        ErrorCode::NotFound,
        "writing a removed file",
    );
}

async fn contents(remote: &dyn Remote, root: i64) {
    let file = remote
        .create(root, &create("c", NodeKind::File))
        .await
        .expect("create c");
    let first = remote
        .put_content(file.ino, Bytes::from_static(b"hello"), 123, Some(None))
        .await
        .expect("first content, based on none");
    assert_eq!((first.size, first.mtime), (5, 123));
    let v1 = first.content.clone().expect("a content id");
    assert_eq!(
        &remote.read(file.ino, &v1, 1, 3).await.expect("range")[..],
        b"el"
    );
    refused_with(
        remote
            .put_content(file.ino, Bytes::from_static(b"zz"), 1, Some(None))
            .await,
        ErrorCode::Conflict,
        "based on none, but it has content",
    );
    let second = remote
        .put_content(
            file.ino,
            Bytes::from_static(b"world!"),
            124,
            Some(Some(&v1)),
        )
        .await
        .expect("based on the current content");
    refused_with(
        remote
            .put_content(file.ino, Bytes::from_static(b"late"), 125, Some(Some(&v1)))
            .await,
        ErrorCode::Conflict,
        "based on a replaced content",
    );
    let v2 = second.content.clone().expect("a content id");
    assert_eq!(
        &remote.read(file.ino, &v2, 0, 6).await.expect("read")[..],
        b"world!"
    );
    assert_eq!(
        &remote
            .read(file.ino, &v1, 0, 5)
            .await
            .expect("past version")[..],
        b"hello",
        "a replaced version stays readable"
    );
    refused_with(
        remote.read(file.ino, &v2, 6, 10).await,
        ErrorCode::RangeNotSatisfiable,
        "past the end",
    );
    let cut = SetAttrRequest {
        size: Some(3),
        ..SetAttrRequest::default()
    };
    let cut = remote.set_attr(file.ino, &cut).await.expect("truncate");
    let v3 = cut.content.clone().expect("a content id");
    assert_eq!(
        &remote.read(file.ino, &v3, 0, 3).await.expect("read")[..],
        b"wor"
    );
    // Read in blocks: cut where blocks end, counted from the range's start,
    // and the last one short where the content ends.
    let block = crate::cache::bufs::SIZE;
    let big: Vec<u8> = (0..2 * block + 1000).map(|i| (i % 253) as u8).collect();
    let big_node = remote
        .put_content(file.ino, Bytes::from(big.clone()), 126, None)
        .await
        .expect("a content of more than two blocks");
    let v4 = big_node.content.clone().expect("a content id");
    let blocks = remote
        .read_blocks(file.ino, &v4, 100, 3 * block as u64)
        .await
        .expect("read in blocks");
    let sizes: Vec<usize> = blocks.iter().map(Bytes::len).collect();
    assert_eq!(sizes, [block, block, 900], "blocks of a range");
    assert!(blocks.concat() == big[100..], "the bytes read in blocks");
    let fifo = remote
        .create(root, &create("p", NodeKind::Fifo))
        .await
        .expect("mkfifo");
    refused_with(
        remote
            .put_content(fifo.ino, Bytes::from_static(b"x"), 1, None)
            .await,
        ErrorCode::NotRegularFile,
        "content of a fifo",
    );
}

async fn chunked_upload(remote: &dyn Remote, root: i64) {
    let file = remote
        .create(root, &create("u", NodeKind::File))
        .await
        .expect("create u");
    let data = Bytes::from(vec![7u8; 1000]);
    let sha = panproto::sha256_hex(&data);
    let chunks = vec![
        ChunkRef {
            sha256: Some(sha.clone()),
            size: 1000,
        },
        ChunkRef {
            sha256: None,
            size: 500,
        },
    ];
    let init = UploadInit {
        ino: file.ino,
        chunks,
        sha256: None,
        sha1: None,
    };
    let state = remote.begin_upload(&init).await.expect("begin");
    assert_eq!(
        state.missing,
        std::slice::from_ref(&sha),
        "only the new chunk is missing; holes never are"
    );
    refused_with(
        remote
            .put_chunk(&state.id, &sha, Bytes::from(vec![8u8; 1000]))
            .await,
        ErrorCode::HashMismatch,
        "a chunk that is not its hash",
    );
    remote
        .put_chunk(&state.id, &sha, data.clone())
        .await
        .expect("put chunk");
    if let Some(challenge) = &state.challenge {
        let mut proof = ProofHasher::new(&challenge.nonce);
        for &(start, len) in &challenge.ranges {
            let all = [&data[..], &[0u8; 500][..]].concat();
            proof.update(&all[start as usize..(start + len) as usize]);
        }
        remote
            .prove(&state.id, &proof.finish())
            .await
            .expect("prove");
    }
    let commit = CommitRequest {
        if_content: Some(None),
        mtime: Some(42),
    };
    let node = remote.commit(&state.id, &commit).await.expect("commit");
    assert_eq!((node.size, node.mtime, node.stored_bytes), (1500, 42, 1000));
    let content = node.content.expect("content");
    let tail = remote
        .read(file.ino, &content, 990, 1010)
        .await
        .expect("read");
    assert_eq!(
        &tail[..],
        [[7u8; 10], [0u8; 10]].concat(),
        "a hole reads as zeros"
    );
    let manifest = remote.manifest(file.ino).await.expect("manifest");
    assert_eq!(manifest.chunks, init.chunks);

    let again = remote.begin_upload(&init).await.expect("begin again");
    assert!(
        again.missing.is_empty(),
        "a chunk the user has is not sent twice"
    );
    // The same chunks, based on what the file held before the first commit:
    // a resend whose answer was lost. It finds the content in place and
    // answers with it (a different content based on that is refused, above).
    let resent = remote
        .commit(&again.id, &commit)
        .await
        .expect("a resent commit");
    assert_eq!(resent.content.as_deref(), Some(content.as_str()));
    // A session the server no longer has (expired, or lost with a restart) is
    // told apart from a missing file, so an upload opens a new one.
    refused_with(
        remote.commit(&"0".repeat(32), &commit).await,
        ErrorCode::UploadGone,
        "a commit of a session that is gone",
    );
    // A session ended (chunks sent ahead in it are committed elsewhere) is
    // gone: it can be neither committed nor ended again.
    let ahead = remote.begin_upload(&init).await.expect("begin ahead");
    remote.end_upload(&ahead.id).await.expect("end");
    refused_with(
        remote.commit(&ahead.id, &commit).await,
        ErrorCode::UploadGone,
        "a commit of an ended session",
    );
    refused_with(
        remote.end_upload(&ahead.id).await,
        ErrorCode::UploadGone,
        "a session ended twice",
    );
}

async fn extended_attributes(remote: &dyn Remote, root: i64) {
    let file = remote
        .create(root, &create("x", NodeKind::File))
        .await
        .expect("create x");
    let set = remote
        .set_xattr(file.ino, "user.k", b"v", XattrMode::Create)
        .await
        .expect("set");
    assert_eq!(set.xattrs, 1);
    assert!(
        set.ctime > file.ctime,
        "setting an attribute moves the ctime"
    );
    refused_with(
        remote
            .set_xattr(file.ino, "user.k", b"w", XattrMode::Create)
            .await,
        ErrorCode::Exists,
        "create over an existing attribute",
    );
    refused_with(
        remote
            .set_xattr(file.ino, "user.none", b"w", XattrMode::Replace)
            .await,
        ErrorCode::NoAttribute,
        "replace of a missing attribute",
    );
    refused_with(
        remote
            .set_xattr(file.ino, "other.k", b"w", XattrMode::Set)
            .await,
        ErrorCode::XattrNotSupported,
        "a namespace pan does not keep",
    );
    assert_eq!(
        &remote.xattr(file.ino, "user.k").await.expect("get")[..],
        b"v"
    );
    assert_eq!(
        remote.xattr_names(file.ino).await.expect("names"),
        ["user.k"]
    );
    remote
        .remove_xattr(file.ino, "user.k")
        .await
        .expect("remove");
    refused_with(
        remote.xattr(file.ino, "user.k").await,
        ErrorCode::NoAttribute,
        "a removed attribute",
    );
}
