//! Inode numbers offline: past the numbers the server reserved, new nodes
//! take provisional ones, which the server takes at sync, so a node keeps
//! the number it was made with.

use std::sync::Arc;

use panproto::batch::minted_from;

use super::local::{server_names, warm_then_offline};
use super::{OWNER, written};
use crate::fs::ROOT;
use crate::remote::Remote;
use crate::remote::memory::MemoryRemote;

/// More creates than two reserved blocks hold.
const CREATES_MAX: usize = 10_000;

#[test]
fn nodes_made_offline_past_the_reserved_numbers_keep_their_provisional_numbers() {
    let home = tempfile::tempdir().expect("home");
    let server = Arc::new(MemoryRemote::default());
    let rig = warm_then_offline(&server, home.path());
    let dir = rig.fs.mkdir(ROOT, "many", 0o755, OWNER).expect("mkdir").ino;
    let mut made = Vec::new();
    while made.len() < CREATES_MAX {
        let name = format!("f{}", made.len());
        let node = rig.fs.mknod(dir, &name, libc::S_IFREG | 0o644, 0, OWNER);
        made.push((name, node.expect("a create offline never runs out").ino));
        if rig.fs.sync_status().expect("status").provisional_inos == 3 {
            break;
        }
    }
    let provisional: Vec<_> = made
        .iter()
        .filter(|(_, ino)| minted_from(*ino as i64).is_some())
        .cloned()
        .collect();
    assert_eq!(provisional.len(), 3, "after {} creates offline", made.len());
    // One more, with bytes, under the root.
    let (file, fh) = written(&rig.fs, "data", b"made offline");
    rig.fs.release(fh);
    assert!(minted_from(file as i64).is_some());
    assert_eq!(rig.fs.lookup(ROOT, "data").expect("lookup").ino, file);

    rig.faults.set_offline(false);
    rig.fs.sync_all().expect("sync once the server is back");
    let status = rig.fs.sync_status().expect("status");
    assert_eq!((status.provisional_inos, status.conflicts), (0, 0));
    // The server holds each node under the number this mount gave it.
    let rt = tokio::runtime::Runtime::new().expect("rt");
    let listed = rt.block_on(server.list(dir as i64)).expect("list");
    for (name, ino) in &provisional {
        let entry = listed
            .iter()
            .find(|e| &e.name == name)
            .expect("on the server");
        assert_eq!(entry.node.ino, *ino as i64, "{name}");
    }
    assert_eq!(listed.len(), made.len());
    assert!(server_names(&server, server.root()).contains(&"data".to_string()));
    super::wait_until("the content made offline", || {
        server.bytes(file as i64).as_deref() == Some(&b"made offline"[..])
    });
}
