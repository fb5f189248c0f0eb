//! A tree as a user compares it: each path's type, mode, size, link count,
//! device number, bytes (by SHA-256) and extended attributes, or the errno that
//! reading it gave. Equal maps mean `diff -r` plus `getfattr -d` would agree.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use sha2::{Digest, Sha256};

/// One side's view of a path (its type, attributes, bytes and extended
/// attributes), or the errno reading it gave.
pub fn describe(path: &Path) -> String {
    let node = match std::fs::symlink_metadata(path) {
        Err(e) => return format!("err {:?}", e.raw_os_error()),
        Ok(m) if m.is_dir() => format!("dir {:o}", m.permissions().mode() & 0o7777),
        Ok(m) if m.file_type().is_symlink() => format!("link {:?}", std::fs::read_link(path).ok()),
        Ok(m) if !m.is_file() => format!("special {:o} {} rdev {}", m.mode(), m.nlink(), m.rdev()),
        Ok(m) => {
            let mut h = Sha256::new();
            let mut f = File::open(path).expect("open for compare");
            std::io::copy(&mut f, &mut h).expect("read for compare");
            format!(
                "file {:o} {} {} {}",
                m.permissions().mode() & 0o7777,
                m.len(),
                m.nlink(),
                hex::encode(h.finalize())
            )
        }
    };
    format!("{node} xattrs {:?}", xattrs(path))
}

/// Every extended attribute of a path: its name, its value's length and the
/// start of the value's SHA-256 (short enough to print in a failed assertion).
pub fn xattrs(path: &Path) -> Result<Vec<String>, Option<i32>> {
    let names = crate::posix::list_xattrs(path).map_err(|e| e.raw_os_error())?;
    names
        .into_iter()
        .map(|n| {
            let value = crate::posix::get_xattr(path, &n).map_err(|e| e.raw_os_error())?;
            let digest = hex::encode(Sha256::digest(&value));
            Ok(format!("{n}={}:{}", value.len(), &digest[..12]))
        })
        .collect()
}

pub fn tree(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).expect("readdir").flatten() {
            let rel = e
                .path()
                .strip_prefix(root)
                .expect("prefix")
                .to_string_lossy()
                .into_owned();
            out.insert(rel, describe(&e.path()));
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(e.path());
            }
        }
    }
    out
}

/// Panics unless the trees under `want` and `got`, their roots included, are
/// the same, naming the paths that differ (the first 20) and how.
pub fn assert_same(want: &Path, got: &Path, what: &str) {
    let view = |root: &Path| {
        let mut paths = tree(root);
        paths.insert(".".into(), describe(root));
        paths
    };
    let (want, got) = (view(want), view(got));
    let differing: Vec<String> = want
        .keys()
        .chain(got.keys())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .filter(|path| want.get(*path) != got.get(*path))
        .take(20)
        .map(|path| format!("{path}: {:?}, got {:?}", want.get(path), got.get(path)))
        .collect();
    assert!(
        differing.is_empty(),
        "{what} differs:\n{}",
        differing.join("\n")
    );
}
