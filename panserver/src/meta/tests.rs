//! The metadata store on a real SQLite file: the tree's rules, reference counts
//! and garbage collection.

use std::collections::HashSet;

use panproto::wire::{
    ChangeKind, ChunkRef, CreateRequest, NodeKind, RenameMode, RenameRequest, XattrMode,
};

use super::{
    Actor, ChangeStore, ChunkLocation, ContentStore, MetaError, NewChunk, SqlMeta, TreeStore,
    Upkeep, UserStore, XattrStore,
};

async fn store() -> (SqlMeta, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
    let meta = SqlMeta::connect(&url, 4).await.expect("connect");
    meta.check_schema()
        .await
        .expect_err("an empty database is not migrated");
    meta.migrate().await.expect("migrate");
    meta.check_schema().await.expect("schema");
    (meta, dir)
}

fn req(name: &str, kind: NodeKind) -> CreateRequest {
    CreateRequest::plain(name, kind)
}

fn chunk(sha: &str, size: u64) -> ChunkRef {
    ChunkRef {
        sha256: Some(sha.repeat(64 / sha.len())),
        size,
    }
}

#[tokio::test]
async fn tree_rules() {
    let (m, _dir) = store().await;
    let u = m.create_user("alice", "h", (0, 0), 1).await.expect("user");
    let root = u.root_ino;
    let a = m
        .create(Actor::user(u.id), root, &req("a", NodeKind::Dir), 2)
        .await
        .expect("a");
    let f = m
        .create(Actor::user(u.id), a.ino, &req("f", NodeKind::File), 3)
        .await
        .expect("f");
    assert!(matches!(
        m.create(Actor::user(u.id), a.ino, &req("f", NodeKind::File), 3)
            .await,
        Err(MetaError::Exists)
    ));
    assert!(matches!(
        m.create(Actor::user(u.id), f.ino, &req("x", NodeKind::File), 3)
            .await,
        Err(MetaError::NotDir)
    ));
    assert_eq!(m.node(u.id, root).await.expect("root").nlink, 3);
    // Hard link, then unlink both names: the inode is gone from the tree.
    m.link(Actor::user(u.id), f.ino, root, "g", 4)
        .await
        .expect("link");
    assert_eq!(m.node(u.id, f.ino).await.expect("f").nlink, 2);
    m.remove(Actor::user(u.id), a.ino, "f", false, 5)
        .await
        .expect("unlink f");
    assert_eq!(m.lookup(u.id, root, "g").await.expect("g").nlink, 1);
    // Rename a directory into its own child is refused; exchange swaps.
    let b = m
        .create(Actor::user(u.id), a.ino, &req("b", NodeKind::Dir), 6)
        .await
        .expect("b");
    let into_self = RenameRequest {
        parent: root,
        name: "a".into(),
        new_parent: b.ino,
        new_name: "a".into(),
        mode: RenameMode::Replace,
    };
    assert!(matches!(
        m.rename(Actor::user(u.id), &into_self, 7).await,
        Err(MetaError::Invalid(_))
    ));
    let swap = RenameRequest {
        parent: root,
        name: "a".into(),
        new_parent: root,
        new_name: "g".into(),
        mode: RenameMode::Exchange,
    };
    m.rename(Actor::user(u.id), &swap, 8)
        .await
        .expect("exchange");
    assert_eq!(
        m.lookup(u.id, root, "g").await.expect("g").kind,
        NodeKind::Dir
    );
    assert_eq!(
        m.lookup(u.id, root, "a").await.expect("a").kind,
        NodeKind::File
    );
    assert!(matches!(
        m.remove(Actor::user(u.id), root, "g", true, 9).await,
        Err(MetaError::NotEmpty)
    ));
    // Another user sees none of it.
    let v = m.create_user("bob", "h", (0, 0), 1).await.expect("bob");
    assert!(matches!(
        m.node(v.id, a.ino).await,
        Err(MetaError::NotFound)
    ));
    assert!(matches!(
        m.list(v.id, root, None, 10).await,
        Err(MetaError::NotFound)
    ));
}

#[tokio::test]
async fn contents_are_counted_and_collected() {
    let (m, _dir) = store().await;
    let u = m.create_user("alice", "h", (0, 0), 1).await.expect("user");
    let f = m
        .create(Actor::user(u.id), u.root_ino, &req("f", NodeKind::File), 2)
        .await
        .expect("f");
    let g = m
        .create(Actor::user(u.id), u.root_ino, &req("g", NodeKind::File), 2)
        .await
        .expect("g");
    let list = vec![chunk("a", 10), chunk("b", 20), chunk("a", 10)];
    // Committing a chunk the store has not verified fails.
    assert!(
        m.set_content(Actor::user(u.id), f.ino, &list, None, None, 3, 3)
            .await
            .is_err()
    );
    let verified: Vec<NewChunk> = list
        .iter()
        .map(|c| NewChunk {
            sha256: c.sha256.clone().expect("sha"),
            size: c.size as i64,
            block_sums: vec![c.size as u8; 4],
            // "a" is small enough to keep in its row; "b" is staged.
            inline: (c.size == 10).then(|| vec![7; 10]),
        })
        .collect();
    m.add_chunks(&verified, 3).await.expect("chunks");
    let n = m
        .set_content(Actor::user(u.id), f.ino, &list, None, None, 3, 3)
        .await
        .expect("commit");
    assert_eq!(n.size, 40);
    // Each extent carries its chunk's block checksums, as recorded.
    let (_, extents) = m.extents(u.id, f.ino).await.expect("extents");
    let sums: Vec<_> = extents.iter().map(|e| e.block_sums.clone()).collect();
    assert_eq!(
        sums,
        [Some(vec![10; 4]), Some(vec![20; 4]), Some(vec![10; 4])]
    );
    let inline: Vec<_> = extents.iter().map(|e| e.inline.clone()).collect();
    assert_eq!(inline, [Some(vec![7; 10]), None, Some(vec![7; 10])]);
    let (a, b) = (
        list[0].sha256.clone().expect("a"),
        list[1].sha256.clone().expect("b"),
    );
    assert_eq!(
        m.chunk_location(&a).await.expect("a"),
        Some(ChunkLocation::Inline)
    );
    assert_eq!(m.inline_chunk(&a).await.expect("a"), Some(vec![7; 10]));
    assert_eq!(m.inline_chunk(&b).await.expect("b"), None, "b is staged");
    assert_eq!(m.block_sums(&b).await.expect("b"), Some(vec![20; 4]));
    m.set_block_sums(&b, &[1, 2, 3, 4]).await.expect("set");
    assert_eq!(m.block_sums(&b).await.expect("b"), Some(vec![1, 2, 3, 4]));
    let needs_no_file = m.stored_chunks(&[a.clone(), b]).await.expect("stored");
    assert_eq!(needs_no_file, [a].into());
    // A range's extents are those it overlaps.
    let content = n.content.clone().expect("content");
    let part = m.extents_in(&content, 15, 31).await.expect("range");
    let offsets: Vec<i64> = part.iter().map(|e| e.offset).collect();
    assert_eq!(offsets, [10, 30]);
    m.set_content(Actor::user(u.id), g.ino, &list, None, None, 3, 3)
        .await
        .expect("same content");
    assert_eq!(m.user_by_id(u.id).await.expect("user").used_bytes, 80);
    // A stale conditional commit is refused.
    assert!(matches!(
        m.set_content(Actor::user(u.id), f.ino, &[], None, Some(None), 4, 4)
            .await,
        Err(MetaError::Conflict)
    ));
    // Nothing is collected while referenced.
    let none = HashSet::new();
    let report = m.collect_garbage(i64::MAX, &none).await.expect("gc");
    assert!(report.chunks_removed.is_empty());
    m.set_content(Actor::user(u.id), f.ino, &[], None, None, 5, 5)
        .await
        .expect("empty f");
    m.remove(Actor::user(u.id), u.root_ino, "g", false, 5)
        .await
        .expect("unlink g");
    // Pinned chunks (an open session) survive; the rest goes.
    let pinned: HashSet<String> = [chunk("b", 1).sha256.expect("sha")].into();
    let report = m.collect_garbage(i64::MAX, &pinned).await.expect("gc");
    let removed: Vec<&str> = report
        .chunks_removed
        .iter()
        .map(|(s, _)| s.as_str())
        .collect();
    assert_eq!(removed, vec![chunk("a", 1).sha256.expect("sha").as_str()]);
    assert_eq!(report.contents_removed, 1);
    assert_eq!(m.user_by_id(u.id).await.expect("user").used_bytes, 0);
}

#[tokio::test]
async fn special_nodes_keep_their_type_and_device_number() {
    let (m, _dir) = store().await;
    let u = m.create_user("alice", "h", (0, 0), 1).await.expect("user");
    for kind in [
        NodeKind::Fifo,
        NodeKind::Socket,
        NodeKind::CharDev,
        NodeKind::BlockDev,
    ] {
        let mut r = req(kind.as_str(), kind);
        r.rdev = 0x7801;
        r.target = Some("ignored".into());
        let n = m
            .create(Actor::user(u.id), u.root_ino, &r, 2)
            .await
            .expect("create");
        let want_rdev = if matches!(kind, NodeKind::CharDev | NodeKind::BlockDev) {
            0x7801
        } else {
            0
        };
        assert_eq!((n.kind, n.rdev, n.size, n.nlink), (kind, want_rdev, 0, 1));
        assert_eq!(n.target, None, "only symlinks have a target");
        let found = m
            .lookup(u.id, u.root_ino, kind.as_str())
            .await
            .expect("lookup");
        assert_eq!(found, n);
        // No content can be set on a node that is not a regular file.
        assert!(
            m.set_content(Actor::user(u.id), n.ino, &[], None, None, 3, 3)
                .await
                .is_err()
        );
    }
    assert_eq!(
        m.audit(false).await.expect("audit").problems,
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn extended_attributes_follow_their_flags_and_limits() {
    let (m, _dir) = store().await;
    let u = m.create_user("alice", "h", (0, 0), 1).await.expect("user");
    let f = m
        .create(Actor::user(u.id), u.root_ino, &req("f", NodeKind::File), 2)
        .await
        .expect("f");
    assert_eq!(f.xattrs, 0);
    let n = m
        .set_xattr(
            Actor::user(u.id),
            f.ino,
            "user.a",
            b"1",
            XattrMode::Create,
            5,
        )
        .await
        .expect("create");
    assert_eq!((n.xattrs, n.ctime), (1, 5));
    assert!(matches!(
        m.set_xattr(
            Actor::user(u.id),
            f.ino,
            "user.a",
            b"2",
            XattrMode::Create,
            6
        )
        .await,
        Err(MetaError::Exists)
    ));
    assert!(matches!(
        m.set_xattr(
            Actor::user(u.id),
            f.ino,
            "user.b",
            b"2",
            XattrMode::Replace,
            6
        )
        .await,
        Err(MetaError::NoAttribute)
    ));
    m.set_xattr(
        Actor::user(u.id),
        f.ino,
        "user.a",
        b"22",
        XattrMode::Replace,
        7,
    )
    .await
    .expect("replace");
    m.set_xattr(
        Actor::user(u.id),
        f.ino,
        "user.b",
        &[0, 255, 1],
        XattrMode::Set,
        7,
    )
    .await
    .expect("binary value");
    assert_eq!(m.xattr(u.id, f.ino, "user.a").await.expect("get"), b"22");
    assert_eq!(
        m.xattr(u.id, f.ino, "user.b").await.expect("get"),
        [0, 255, 1]
    );
    assert_eq!(
        m.xattr_names(u.id, f.ino).await.expect("names"),
        ["user.a", "user.b"]
    );
    // A node holds at most XATTR_NODE_MAX bytes of names and values.
    let big = vec![1u8; panproto::XATTR_VALUE_MAX];
    let mut full = false;
    for i in 0..8 {
        match m
            .set_xattr(
                Actor::user(u.id),
                f.ino,
                &format!("user.big{i}"),
                &big,
                XattrMode::Set,
                8,
            )
            .await
        {
            Ok(_) => {}
            Err(MetaError::XattrFull) => {
                full = true;
                break;
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert!(full, "the per-node limit applies");
    // Another user cannot see or change them.
    let v = m.create_user("bob", "h", (0, 0), 1).await.expect("bob");
    assert!(matches!(
        m.xattr(v.id, f.ino, "user.a").await,
        Err(MetaError::NotFound)
    ));
    assert!(matches!(
        m.set_xattr(Actor::user(v.id), f.ino, "user.x", b"", XattrMode::Set, 9)
            .await,
        Err(MetaError::NotFound)
    ));
    let n = m
        .remove_xattr(Actor::user(u.id), f.ino, "user.a", 10)
        .await
        .expect("remove");
    assert_eq!(n.ctime, 10);
    assert!(matches!(
        m.remove_xattr(Actor::user(u.id), f.ino, "user.a", 11).await,
        Err(MetaError::NoAttribute)
    ));
    // They go with the last link.
    m.remove(Actor::user(u.id), u.root_ino, "f", false, 12)
        .await
        .expect("unlink");
    assert!(matches!(
        m.xattr(u.id, f.ino, "user.b").await,
        Err(MetaError::NoAttribute)
    ));
}

/// A database that cannot be reached makes every call `Unavailable` (503), plain
/// reads included, not a bare database error (500).
#[tokio::test]
async fn an_unreachable_database_is_unavailable_for_reads_too() {
    let (m, _dir) = store().await;
    let u = m.create_user("alice", "h", (0, 0), 1).await.expect("user");
    m.pool().close().await;
    let unavailable = |r: Result<(), MetaError>| matches!(r, Err(MetaError::Unavailable(_)));
    assert!(unavailable(m.node(u.id, u.root_ino).await.map(drop)));
    assert!(unavailable(m.lookup(u.id, u.root_ino, "x").await.map(drop)));
    assert!(unavailable(
        m.list(u.id, u.root_ino, None, 10).await.map(drop)
    ));
    assert!(unavailable(m.token_owner("t", 1).await.map(drop)));
    assert!(unavailable(
        m.create(Actor::user(u.id), u.root_ino, &req("f", NodeKind::File), 2)
            .await
            .map(drop)
    ));
}

#[tokio::test]
async fn every_change_is_numbered_in_order_and_pruning_expires_old_cursors() {
    let (m, _dir) = store().await;
    let u = m.create_user("alice", "h", (0, 0), 1).await.expect("user");
    let v = m.create_user("bob", "h", (0, 0), 1).await.expect("user");
    let (root, me) = (
        u.root_ino,
        Actor {
            user: u.id,
            origin: Some(7),
        },
    );
    let f = m
        .create(me, root, &req("f", NodeKind::File), 2)
        .await
        .expect("create");
    m.create(
        Actor::user(v.id),
        v.root_ino,
        &req("other", NodeKind::File),
        2,
    )
    .await
    .expect("bob's create");
    m.link(me, f.ino, root, "g", 3).await.expect("link");
    let rename = RenameRequest {
        parent: root,
        name: "g".into(),
        new_parent: root,
        new_name: "h".into(),
        mode: RenameMode::Replace,
    };
    m.rename(me, &rename, 4).await.expect("rename");
    m.set_xattr(me, f.ino, "user.a", b"1", XattrMode::Set, 5)
        .await
        .expect("xattr");
    m.set_content(me, f.ino, &[], None, None, 6, 6)
        .await
        .expect("content");
    m.remove(me, root, "f", false, 7).await.expect("remove");
    // A refused change records nothing.
    assert!(m.remove(me, root, "f", false, 8).await.is_err());

    let page = m.changes(u.id, 0, 100).await.expect("changes");
    assert!(page.complete);
    assert_eq!(page.current, 6);
    let kinds: Vec<_> = page.changes.iter().map(|c| (c.seq, c.kind)).collect();
    assert_eq!(
        kinds,
        [
            (1, ChangeKind::Create),
            (2, ChangeKind::Link),
            (3, ChangeKind::Rename),
            (4, ChangeKind::Xattr),
            (5, ChangeKind::Content),
            (6, ChangeKind::Remove),
        ]
    );
    let renamed = &page.changes[2];
    assert_eq!(
        (renamed.name.as_deref(), renamed.new_name.as_deref()),
        (Some("g"), Some("h"))
    );
    assert!(
        page.changes
            .iter()
            .all(|c| c.origin == Some(7) && c.ino == f.ino)
    );
    // The removal of one of two names leaves the node, with one link.
    assert_eq!(page.changes[5].node.as_ref().map(|n| n.nlink), Some(1));
    // Bob's feed is his own.
    assert_eq!(m.changes(v.id, 0, 100).await.expect("bob").changes.len(), 1);

    // Keep the newest two: a cursor at 3 still has 4.., one at 2 has lost 3.
    assert_eq!(m.prune_changes(0, 2).await.expect("prune"), 4);
    assert!(!m.changes(u.id, 2, 100).await.expect("old cursor").complete);
    let recent = m.changes(u.id, 4, 100).await.expect("recent cursor");
    assert!(recent.complete);
    assert_eq!(recent.changes.len(), 2);
    assert!(m.changes(u.id, 6, 100).await.expect("current").complete);
    // A cursor from the future (a restored database) is not whole either.
    assert!(!m.changes(u.id, 9, 100).await.expect("future").complete);
}
