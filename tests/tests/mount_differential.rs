//! A randomized differential test: the same random sequence of operations runs
//! on the mount and on a local directory, and after every step the outcome
//! (success or errno) and the touched paths must agree; the whole trees are
//! compared every few steps and at the end.
//!
//! Replay a failure with PAN_DIFF_SEED=<seed>; PAN_DIFF_STEPS sets the length.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::PathBuf;

use pantests::tree::{describe, tree};
use pantests::{Mount, Server, posix};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const NAMES: [&str; 6] = ["a", "b", "c", "dir1", "dir2", "x.txt"];
const MAX_FILE: u64 = 2 << 20;

fn outcome<T>(r: std::io::Result<T>) -> Result<(), Option<i32>> {
    r.map(|_| ()).map_err(|e| e.raw_os_error())
}

struct Side {
    root: PathBuf,
    handles: Vec<Option<File>>,
}

impl Side {
    fn p(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }
}

/// A random relative path of depth 1 or 2 from a small name set, so operations collide.
fn random_path(rng: &mut StdRng) -> String {
    let first = NAMES[rng.gen_range(0..NAMES.len())];
    if rng.gen_bool(0.4) {
        format!(
            "{}/{}",
            ["dir1", "dir2"][rng.gen_range(0..2)],
            NAMES[rng.gen_range(0..NAMES.len())]
        )
    } else {
        first.to_string()
    }
}

#[derive(Debug, Clone)]
enum Op {
    Open {
        path: String,
        create: bool,
    },
    Write {
        handle: usize,
        offset: u64,
        len: usize,
        seed: u64,
    },
    Truncate {
        handle: usize,
        size: u64,
    },
    Fsync {
        handle: usize,
    },
    Close {
        handle: usize,
    },
    Read {
        handle: usize,
        offset: u64,
        len: usize,
    },
    Rename {
        from: String,
        to: String,
    },
    Unlink {
        path: String,
    },
    Link {
        from: String,
        to: String,
    },
    Mkdir {
        path: String,
    },
    Rmdir {
        path: String,
    },
    Chmod {
        path: String,
        mode: u32,
    },
    /// `mode` carries the type: FIFO, socket, character or block device.
    Mknod {
        path: String,
        mode: u32,
        rdev: u64,
    },
    /// A UNIX socket bound at `path` (and closed: its name stays).
    Bind {
        path: String,
    },
    SetXattr {
        path: String,
        name: String,
        len: usize,
        seed: u64,
        flags: i32,
    },
    RemoveXattr {
        path: String,
        name: String,
    },
    Fallocate {
        handle: usize,
        mode: i32,
        offset: u64,
        len: u64,
    },
}

const XATTR_NAMES: [&str; 3] = ["user.a", "user.b", "user.long.name"];

const FALLOCATE_MODES: [i32; 5] = [
    0,
    libc::FALLOC_FL_KEEP_SIZE,
    libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
    libc::FALLOC_FL_ZERO_RANGE,
    libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE,
];

fn random_op(rng: &mut StdRng, handles: usize) -> Op {
    let handle = if handles > 0 {
        rng.gen_range(0..handles)
    } else {
        0
    };
    match rng.gen_range(0..122) {
        0..=14 => Op::Open {
            path: random_path(rng),
            create: rng.gen_bool(0.7),
        },
        15..=39 if handles > 0 => Op::Write {
            handle,
            offset: rng.gen_range(0..MAX_FILE),
            len: rng.gen_range(1..300_000),
            seed: rng.r#gen(),
        },
        40..=44 if handles > 0 => Op::Truncate {
            handle,
            size: rng.gen_range(0..MAX_FILE),
        },
        45..=49 if handles > 0 => Op::Fsync { handle },
        50..=57 if handles > 0 => Op::Close { handle },
        58..=64 if handles > 0 => Op::Read {
            handle,
            offset: rng.gen_range(0..MAX_FILE),
            len: rng.gen_range(1..200_000),
        },
        65..=72 => Op::Rename {
            from: random_path(rng),
            to: random_path(rng),
        },
        73..=78 => Op::Unlink {
            path: random_path(rng),
        },
        79..=82 => Op::Link {
            from: random_path(rng),
            to: random_path(rng),
        },
        83..=90 => Op::Mkdir {
            path: random_path(rng),
        },
        91..=95 => Op::Rmdir {
            path: random_path(rng),
        },
        96..=99 => Op::Chmod {
            path: random_path(rng),
            mode: [0o600, 0o644, 0o755, 0o700][rng.gen_range(0..4)],
        },
        100..=103 => Op::Mknod {
            path: random_path(rng),
            mode: [libc::S_IFIFO, libc::S_IFSOCK, libc::S_IFCHR, libc::S_IFBLK]
                [rng.gen_range(0..4)]
                | [0o600, 0o644][rng.gen_range(0..2)],
            // Majors 120-127 are for local and experimental use: no real device.
            rdev: libc::makedev(rng.gen_range(120..128), rng.gen_range(0..300)),
        },
        104..=105 => Op::Bind {
            path: random_path(rng),
        },
        106..=111 => Op::SetXattr {
            path: random_path(rng),
            name: XATTR_NAMES[rng.gen_range(0..XATTR_NAMES.len())].to_string(),
            // Three values this long fit ext4's one block of attributes per inode.
            len: rng.gen_range(0..1000),
            seed: rng.r#gen(),
            flags: [0, libc::XATTR_CREATE, libc::XATTR_REPLACE][rng.gen_range(0..3)],
        },
        112..=114 => Op::RemoveXattr {
            path: random_path(rng),
            name: XATTR_NAMES[rng.gen_range(0..XATTR_NAMES.len())].to_string(),
        },
        115..=121 if handles > 0 => Op::Fallocate {
            handle,
            mode: FALLOCATE_MODES[rng.gen_range(0..FALLOCATE_MODES.len())],
            offset: rng.gen_range(0..MAX_FILE),
            len: rng.gen_range(1..600_000),
        },
        _ => Op::Mkdir {
            path: random_path(rng),
        },
    }
}

/// Applies `op` to one side; returns the outcome and what it read.
fn apply(side: &mut Side, op: &Op) -> (Result<(), Option<i32>>, Vec<u8>) {
    let none = Vec::new();
    match op {
        Op::Open { path, create } => {
            // FIFOs, sockets and device nodes are never opened: a device node
            // here could name a real device, and the mount is `nodev`.
            if std::fs::metadata(side.p(path)).is_ok_and(|m| !m.is_file() && !m.is_dir()) {
                return (Err(None), none);
            }
            let r = OpenOptions::new()
                .read(true)
                .write(true)
                .create(*create)
                .open(side.p(path));
            let res = outcome(
                r.as_ref()
                    .map(|_| ())
                    .map_err(|e| std::io::Error::from_raw_os_error(e.raw_os_error().unwrap_or(0))),
            );
            if let Ok(f) = r {
                side.handles.push(Some(f));
            }
            (res, none)
        }
        Op::Write {
            handle,
            offset,
            len,
            seed,
        } => match side.handles.get_mut(*handle).and_then(Option::as_mut) {
            Some(f) => {
                let data = pantests::Noise::bytes(*seed, *len);
                (outcome(f.write_all_at(&data, *offset)), none)
            }
            None => (Ok(()), none),
        },
        Op::Truncate { handle, size } => {
            match side.handles.get_mut(*handle).and_then(Option::as_mut) {
                Some(f) => (outcome(f.set_len(*size)), none),
                None => (Ok(()), none),
            }
        }
        Op::Fsync { handle } => match side.handles.get_mut(*handle).and_then(Option::as_mut) {
            Some(f) => (outcome(f.sync_all()), none),
            None => (Ok(()), none),
        },
        Op::Close { handle } => {
            if let Some(slot) = side.handles.get_mut(*handle) {
                slot.take();
            }
            (Ok(()), none)
        }
        Op::Read {
            handle,
            offset,
            len,
        } => match side.handles.get_mut(*handle).and_then(Option::as_mut) {
            Some(f) => {
                let mut buf = Vec::new();
                let r = f
                    .seek(SeekFrom::Start(*offset))
                    .and_then(|_| f.take(*len as u64).read_to_end(&mut buf));
                (outcome(r), buf)
            }
            None => (Ok(()), none),
        },
        Op::Rename { from, to } => (outcome(std::fs::rename(side.p(from), side.p(to))), none),
        Op::Unlink { path } => (outcome(std::fs::remove_file(side.p(path))), none),
        Op::Link { from, to } => (outcome(std::fs::hard_link(side.p(from), side.p(to))), none),
        Op::Mkdir { path } => (outcome(std::fs::create_dir(side.p(path))), none),
        Op::Rmdir { path } => (outcome(std::fs::remove_dir(side.p(path))), none),
        Op::Chmod { path, mode } => (
            outcome(std::fs::set_permissions(
                side.p(path),
                std::fs::Permissions::from_mode(*mode),
            )),
            none,
        ),
        Op::Mknod { path, mode, rdev } => {
            (outcome(posix::mknod(&side.p(path), *mode, *rdev)), none)
        }
        Op::Bind { path } => (
            outcome(std::os::unix::net::UnixListener::bind(side.p(path))),
            none,
        ),
        Op::SetXattr {
            path,
            name,
            len,
            seed,
            flags,
        } => {
            let value = pantests::Noise::bytes(*seed, *len);
            (
                outcome(posix::set_xattr(&side.p(path), name, &value, *flags)),
                none,
            )
        }
        Op::RemoveXattr { path, name } => (outcome(posix::remove_xattr(&side.p(path), name)), none),
        Op::Fallocate {
            handle,
            mode,
            offset,
            len,
        } => match side.handles.get_mut(*handle).and_then(Option::as_mut) {
            Some(f) => (outcome(posix::fallocate(f, *mode, *offset, *len)), none),
            None => (Ok(()), none),
        },
    }
}

fn touched(op: &Op) -> Vec<String> {
    match op {
        Op::Open { path, .. }
        | Op::Unlink { path }
        | Op::Mkdir { path }
        | Op::Rmdir { path }
        | Op::Chmod { path, .. }
        | Op::Mknod { path, .. }
        | Op::Bind { path }
        | Op::SetXattr { path, .. }
        | Op::RemoveXattr { path, .. } => vec![path.clone()],
        Op::Rename { from, to } | Op::Link { from, to } => vec![from.clone(), to.clone()],
        _ => Vec::new(),
    }
}

#[test]
fn random_operations_match_a_local_directory() {
    let seed: u64 = pantests::setting("PAN_DIFF_SEED", rand::random);
    let steps: usize = pantests::setting("PAN_DIFF_STEPS", || 3000);
    println!("differential test: seed {seed}, {steps} steps (replay with PAN_DIFF_SEED={seed})");
    let server = Server::start();
    let m = Mount::new(&server, "alice");
    let local_dir = tempfile::tempdir().expect("tmp");
    let mut mount = Side {
        root: m.root().to_path_buf(),
        handles: Vec::new(),
    };
    let mut local = Side {
        root: local_dir.path().to_path_buf(),
        handles: Vec::new(),
    };
    let mut rng = StdRng::seed_from_u64(seed);
    for step in 0..steps {
        let op = random_op(&mut rng, local.handles.len());
        let want = apply(&mut local, &op);
        if std::env::var_os("PAN_DIFF_TRACE").is_some() {
            println!("{step}: {op:?} -> {:?}", want.0);
        }
        let got = apply(&mut mount, &op);
        assert_eq!(
            got.0, want.0,
            "seed {seed} step {step}: {op:?} outcome differs"
        );
        assert!(
            got.1 == want.1,
            "seed {seed} step {step}: {op:?} read different bytes"
        );
        for path in touched(&op) {
            assert_eq!(
                describe(&mount.p(&path)),
                describe(&local.p(&path)),
                "seed {seed} step {step}: {op:?}: {path} differs"
            );
        }
        if step % 100 == 99 {
            assert_eq!(
                tree(&mount.root),
                tree(&local.root),
                "seed {seed} step {step}: trees differ"
            );
        }
    }
    mount.handles.clear();
    local.handles.clear();
    assert_eq!(
        tree(&mount.root),
        tree(&local.root),
        "seed {seed}: trees differ at the end"
    );
}
