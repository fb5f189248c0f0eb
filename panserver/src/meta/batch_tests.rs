//! A batch's runs of operations that only make new nodes, or only remove
//! names, take a fast path (multi-row statements). These tests apply the same
//! operations to two stores, as one batch and one by one, and compare every
//! row, outcome and change.

use panproto::batch::mint;
use panproto::wire::{ChunkRef, CreateRequest, NodeKind, SetAttrRequest};
use sqlx::Row;

use super::{
    Actor, BatchStore, ChangeStore, ContentStore, InoStore, NewChunk, SqlMeta, TreeOp, TreeStore,
    UserStore,
};

async fn store() -> (SqlMeta, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
    let meta = SqlMeta::connect(&url, 4).await.expect("connect");
    meta.migrate().await.expect("migrate");
    (meta, dir)
}

fn sha(tag: u8) -> String {
    format!("{tag:02x}").repeat(32)
}

fn chunks(tags: &[u8]) -> Vec<ChunkRef> {
    tags.iter()
        .map(|&t| ChunkRef {
            sha256: (t != 0).then(|| sha(t)),
            size: 100 + u64::from(t),
        })
        .collect()
}

fn create(parent: i64, name: &str, kind: NodeKind, ino: i64) -> TreeOp {
    let mut req = CreateRequest::plain(name, kind);
    req.mode = 0o640;
    req.uid = 1000;
    if kind == NodeKind::Symlink {
        req.target = Some("../somewhere".into());
    }
    if kind == NodeKind::CharDev {
        req.rdev = 0x0103;
    }
    TreeOp::Create {
        parent,
        req,
        ino: Some(ino),
    }
}

fn content(ino: i64, tags: &[u8], mtime: i64) -> TreeOp {
    TreeOp::SetContent {
        ino,
        chunks: chunks(tags),
        if_content: Some(None),
        mtime,
    }
}

fn remove(parent: i64, name: &str, dir: bool) -> TreeOp {
    TreeOp::Remove {
        parent,
        name: name.into(),
        dir,
        if_ino: None,
    }
}

/// A store with a user, chunks 1 to 6, a directory `old` holding `taken`
/// (content of chunks 1 and 2), and 40 reserved numbers: (store, user, root,
/// old, first reserved).
async fn prepared() -> (SqlMeta, tempfile::TempDir, i64, i64, i64, i64) {
    let (m, dir) = store().await;
    let u = m.create_user("ann", "h", (0, 0), 1).await.expect("user");
    let by = Actor::user(u.id);
    let all: Vec<NewChunk> = (1..=6)
        .map(|t| NewChunk {
            sha256: sha(t),
            size: 100 + i64::from(t),
            block_sums: Vec::new(),
            inline: None,
        })
        .collect();
    m.add_chunks(&all, 1).await.expect("chunks");
    let old = m
        .create(
            by,
            u.root_ino,
            &CreateRequest::plain("old", NodeKind::Dir),
            2,
        )
        .await
        .expect("old");
    let taken = m
        .create(
            by,
            old.ino,
            &CreateRequest::plain("taken", NodeKind::File),
            3,
        )
        .await
        .expect("taken");
    m.set_content(by, taken.ino, &chunks(&[1, 2]), None, None, 4, 4)
        .await
        .expect("content");
    let first = m.reserve_inos(u.id, 40, 5).await.expect("reserve");
    (m, dir, u.id, u.root_ino, old.ino, first)
}

/// Every row a batch can touch, as text, in a stable order (contents by
/// manifest, not by row id: the two paths number new contents differently).
async fn dump(m: &SqlMeta) -> Vec<String> {
    let queries = [
        "SELECT i.id, i.user_id, i.kind, i.mode, i.uid, i.gid, i.size, i.atime, i.mtime, i.ctime, \
         i.nlink, COALESCE(i.target, ''), i.rdev, COALESCE(f.manifest_sha256, ''), i.status \
         FROM tbl_inode i LEFT JOIN tbl_file f ON f.id = i.file_id ORDER BY i.id",
        "SELECT user_id, parent_ino, file_name, ino FROM tbl_user_file ORDER BY parent_ino, file_name",
        "SELECT manifest_sha256, file_size, COALESCE(data_bytes, -1), refcount, status, updated_at \
         FROM tbl_file ORDER BY manifest_sha256",
        "SELECT f.manifest_sha256, c.seq, COALESCE(c.chunk_sha256, ''), c.chunk_offset, c.size \
         FROM tbl_file_chunk c JOIN tbl_file f ON f.id = c.file_id ORDER BY f.manifest_sha256, c.seq",
        "SELECT sha256, refcount, updated_at FROM tbl_chunk ORDER BY sha256",
        "SELECT id, used_files, used_bytes, change_seq FROM tbl_user ORDER BY id",
    ];
    let mut out = Vec::new();
    for sql in queries {
        for row in sqlx::query(sql).fetch_all(&m.pool()).await.expect(sql) {
            let cells: Vec<String> = (0..row.len())
                .map(|i| {
                    row.try_get::<i64, _>(i)
                        .map(|v| v.to_string())
                        .or_else(|_| row.try_get::<String, _>(i))
                        .expect("an integer or text column")
                })
                .collect();
            out.push(cells.join("|"));
        }
    }
    out
}

/// Applies `ops` as one batch to one store and one by one to another, and
/// asserts that both end alike; returns the outcomes (as `Debug` text).
/// `setup`: SQL run on both stores first.
async fn both_ways(setup: &str, ops: impl Fn(i64, i64, i64) -> Vec<TreeOp>) -> Vec<String> {
    let (fast, _a, user, root, old, first) = prepared().await;
    let (slow, _b, user_b, root_b, old_b, first_b) = prepared().await;
    for m in [&fast, &slow] {
        sqlx::query(sqlx::AssertSqlSafe(setup))
            .execute(&m.pool())
            .await
            .expect("setup");
    }
    assert_eq!((user, root, old, first), (user_b, root_b, old_b, first_b));
    let ops = ops(root, old, first);
    let times: Vec<i64> = (0..ops.len() as i64).map(|i| 100 + i).collect();
    let together = fast
        .apply_batch(Actor::user(user), &ops, &times)
        .await
        .expect("batch");
    let mut alone = Vec::new();
    for (op, at) in ops.iter().zip(&times) {
        let one = slow
            .apply_batch(Actor::user(user), std::slice::from_ref(op), &[*at])
            .await
            .expect("one operation");
        alone.extend(one);
    }
    let outcomes: Vec<String> = together.iter().map(|r| format!("{r:?}")).collect();
    let expected: Vec<String> = alone.iter().map(|r| format!("{r:?}")).collect();
    assert_eq!(outcomes, expected, "outcomes");
    assert_eq!(dump(&fast).await, dump(&slow).await, "rows");
    let feed = |m: &SqlMeta| {
        let m = m.pool();
        async move {
            sqlx::query("SELECT seq, at, body FROM tbl_change ORDER BY seq")
                .fetch_all(&m)
                .await
                .expect("changes")
                .iter()
                .map(|r| {
                    let (seq, at): (i64, i64) = (r.get(0), r.get(1));
                    format!("{seq} {at} {}", r.get::<String, _>(2))
                })
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(feed(&fast).await, feed(&slow).await, "changes");
    assert!(fast.changes(user, 0, 1000).await.expect("feed").complete);
    outcomes
}

#[tokio::test]
async fn a_tree_copied_in_as_one_batch_ends_as_if_sent_one_operation_at_a_time() {
    let outcomes = both_ways("SELECT 1", |root, old, n| {
        let touch = SetAttrRequest {
            mode: Some(0o755),
            uid: None,
            gid: Some(7),
            size: None,
            atime: Some(11),
            mtime: Some(12),
        };
        vec![
            create(root, "d", NodeKind::Dir, n),
            create(n, "sub", NodeKind::Dir, n + 1),
            create(n + 1, "a", NodeKind::File, n + 2),
            create(n + 1, "b", NodeKind::File, n + 3),
            create(n, "link", NodeKind::Symlink, n + 4),
            create(old, "dev", NodeKind::CharDev, n + 5),
            create(old, "c", NodeKind::File, n + 6),
            create(root, "empty", NodeKind::File, n + 7),
            TreeOp::SetAttr {
                ino: n + 2,
                req: touch.clone(),
            },
            TreeOp::SetAttr { ino: n, req: touch },
            // New content, shared by two files of the batch.
            content(n + 2, &[3, 4, 3], 50),
            content(n + 3, &[3, 4, 3], 51),
            // The content `taken` has already; one with a hole.
            content(n + 6, &[1, 2], 52),
            content(n + 7, &[5, 0, 6], 53),
        ]
    })
    .await;
    assert!(
        outcomes.iter().all(|o| o.starts_with("Ok(Some(")),
        "{outcomes:?}"
    );
}

#[tokio::test]
async fn a_run_with_a_taken_name_or_a_used_number_gives_each_operation_its_own_outcome() {
    let outcomes = both_ways("SELECT 1", |root, old, n| {
        vec![
            create(root, "x1", NodeKind::File, n),
            create(root, "x2", NodeKind::File, n + 1),
            create(old, "taken", NodeKind::File, n + 2),
            create(root, "x3", NodeKind::File, n + 3),
            // The number of x1 again, and one never reserved.
            create(root, "x4", NodeKind::File, n),
            create(root, "x5", NodeKind::File, n + 1000),
            content(n + 3, &[4], 60),
        ]
    })
    .await;
    let ok: Vec<bool> = outcomes.iter().map(|o| o.starts_with("Ok")).collect();
    assert_eq!(
        ok,
        [true, true, false, true, true, false, true],
        "{outcomes:?}"
    );
    assert_eq!(
        outcomes[4], outcomes[0],
        "a resent create answers with its node"
    );
}

#[tokio::test]
async fn a_run_past_the_quota_or_with_a_missing_chunk_is_refused_as_alone() {
    // Two files count (old, taken): room for three more; and for 300 more
    // bytes (taken holds 203).
    let quota = "UPDATE tbl_user SET quota_files = 5, quota_bytes = 503";
    let outcomes = both_ways(quota, |root, _old, n| {
        vec![
            create(root, "y1", NodeKind::File, n),
            create(root, "y2", NodeKind::File, n + 1),
            create(root, "y3", NodeKind::File, n + 2),
            create(root, "y4", NodeKind::File, n + 3),
            content(n, &[9], 70),
            content(n + 1, &[5, 6], 71),
            content(n, &[5], 72),
            content(n + 2, &[], 73),
        ]
    })
    .await;
    let ok: Vec<bool> = outcomes.iter().map(|o| o.starts_with("Ok")).collect();
    assert_eq!(
        ok,
        [true, true, true, false, false, true, false, true],
        "{outcomes:?}"
    );
}

#[tokio::test]
async fn minted_numbers_are_taken_from_the_users_own_blocks_only() {
    let at = |n: i64, k: i64| mint(n, k).expect("a block low enough to mint from");
    let outcomes = both_ways("SELECT 1", |root, _old, n| {
        vec![
            create(root, "m1", NodeKind::File, at(n, 0)),
            create(root, "m2", NodeKind::Dir, at(n, 1)),
            // A number minted from no block's first number, and a resend.
            create(root, "m3", NodeKind::File, at(n + 1, 0)),
            create(root, "m1", NodeKind::File, at(n, 0)),
            create(at(n, 1), "inside", NodeKind::File, n),
            content(at(n, 0), &[3], 80),
        ]
    })
    .await;
    let ok: Vec<bool> = outcomes.iter().map(|o| o.starts_with("Ok")).collect();
    assert_eq!(ok, [true, true, false, true, true, true], "{outcomes:?}");
    assert_eq!(
        outcomes[3], outcomes[0],
        "a resent create answers with its node"
    );

    // Another user may not mint from ann's block.
    let (m, _dir, _ann, _root, _old, first) = prepared().await;
    assert!(
        outcomes[0].contains(&format!("ino: {}", at(first, 0))),
        "{outcomes:?}"
    );
    let bob = m.create_user("bob", "h", (0, 0), 1).await.expect("bob");
    let theirs = create(bob.root_ino, "x", NodeKind::File, at(first, 0));
    let refused = m
        .apply_batch(Actor::user(bob.id), &[theirs], &[90])
        .await
        .expect("batch");
    assert!(format!("{refused:?}").starts_with("[Err("), "{refused:?}");
}

#[tokio::test]
async fn a_tree_removed_as_one_batch_ends_as_if_removed_one_operation_at_a_time() {
    let outcomes = both_ways("SELECT 1", |root, old, n| {
        let mut ops = vec![
            create(root, "d", NodeKind::Dir, n),
            create(n, "sub", NodeKind::Dir, n + 1),
            create(n, "link", NodeKind::Symlink, n + 2),
            create(old, "dev", NodeKind::CharDev, n + 3),
        ];
        for i in 0..5 {
            ops.push(create(n + 1, &format!("f{i}"), NodeKind::File, n + 4 + i));
            // One content shared by the five, released five times at once.
            ops.push(content(n + 4 + i, &[3, 4], 50 + i));
        }
        // As `rm -rf d old` sends them: what is in a directory first.
        for i in 0..5 {
            ops.push(remove(n + 1, &format!("f{i}"), false));
        }
        ops.extend([
            remove(n, "sub", true),
            remove(n, "link", false),
            remove(root, "d", true),
            remove(old, "taken", false),
            remove(old, "dev", false),
            remove(root, "old", true),
        ]);
        ops
    })
    .await;
    let removes = &outcomes[outcomes.len() - 11..];
    assert!(removes.iter().all(|o| o == "Ok(None)"), "{outcomes:?}");
}

/// `e` holding `a` and `b`, and `c1` and `c2` at the top.
fn tree_to_remove(root: i64, n: i64) -> Vec<TreeOp> {
    vec![
        create(root, "e", NodeKind::Dir, n),
        create(n, "a", NodeKind::File, n + 1),
        create(n, "b", NodeKind::File, n + 2),
        create(root, "c1", NodeKind::File, n + 3),
        create(root, "c2", NodeKind::File, n + 4),
    ]
}

/// Runs of removes the fast path must decline, each for one reason only:
/// taken together, they would end otherwise than one by one.
#[tokio::test]
async fn a_run_of_removes_with_one_refusal_or_a_hard_link_ends_as_one_by_one() {
    type Case = (&'static str, fn(i64, i64) -> Vec<TreeOp>, [bool; 4]);
    let cases: [Case; 5] = [
        (
            "a remove inside a directory removed before",
            |root, n| {
                vec![
                    remove(n, "a", false),
                    remove(root, "e", true),
                    remove(n, "b", false),
                    remove(root, "c1", false),
                ]
            },
            [true, false, true, true],
        ),
        (
            "a directory not emptied first",
            |root, n| {
                vec![
                    remove(n, "a", false),
                    remove(root, "e", true),
                    remove(root, "c1", false),
                    remove(root, "c2", false),
                ]
            },
            [true, false, true, true],
        ),
        (
            "a precondition naming another node",
            |root, n| {
                let a = TreeOp::Remove {
                    parent: n,
                    name: "a".into(),
                    dir: false,
                    if_ino: Some(n + 2),
                };
                vec![
                    remove(root, "c1", false),
                    a,
                    remove(root, "c2", false),
                    remove(n, "b", false),
                ]
            },
            [true, false, true, true],
        ),
        (
            "a file removed as a directory",
            |root, n| {
                vec![
                    remove(root, "c1", false),
                    remove(n, "a", true),
                    remove(root, "c2", false),
                    remove(n, "b", false),
                ]
            },
            [true, false, true, true],
        ),
        (
            "a file with another name",
            |root, n| {
                let link = TreeOp::Link {
                    ino: n + 1,
                    parent: root,
                    name: "a2".into(),
                };
                vec![
                    link,
                    remove(n, "a", false),
                    remove(root, "c1", false),
                    remove(root, "c2", false),
                    remove(n, "b", false),
                ]
            },
            [true, true, true, true],
        ),
    ];
    for (what, removes, ok) in cases {
        let outcomes = both_ways("SELECT 1", |root, _old, n| {
            let mut ops = tree_to_remove(root, n);
            ops.extend(removes(root, n));
            ops
        })
        .await;
        let got: Vec<bool> = outcomes[outcomes.len() - 4..]
            .iter()
            .map(|o| o.starts_with("Ok"))
            .collect();
        assert_eq!(got, ok, "{what}: {outcomes:?}");
    }
}
