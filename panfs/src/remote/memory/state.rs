//! The in-memory server's state and its rules: names, link counts, removed
//! nodes that stay readable, and conditional contents.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use panproto::wire::{Change, ChangeKind, ChunkRef, ErrorCode, Node, NodeKind, UploadState};

use super::super::{IfContent, RemoteError, RemoteResult};

/// A file version: its chunk list, and its bytes (holes included as zeros).
pub(super) struct Content {
    pub chunks: Vec<ChunkRef>,
    pub bytes: Vec<u8>,
}

pub(super) struct Session {
    pub ino: i64,
    pub chunks: Vec<ChunkRef>,
}

#[derive(Default)]
pub(super) struct State {
    pub clock: i64,
    pub next_ino: i64,
    pub nodes: HashMap<i64, Node>,
    pub entries: BTreeMap<(i64, String), i64>,
    pub contents: HashMap<String, Content>,
    pub chunks: HashMap<String, Bytes>,
    pub sessions: HashMap<String, Session>,
    pub xattrs: HashMap<i64, Vec<(String, Vec<u8>)>>,
    /// The change feed: changes after `feed_floor`, in order.
    pub feed: Vec<Change>,
    pub feed_floor: i64,
}

/// A directory entry a change touched.
pub(super) type Entry<'a> = Option<(i64, &'a str)>;

pub(super) fn refused(code: ErrorCode) -> RemoteError {
    RemoteError::Refused {
        status: 400,
        code,
        message: code.to_string(),
    }
}

pub(super) fn check_name(name: &str) -> RemoteResult<()> {
    panproto::validate_name(name).map_err(|e| match e {
        panproto::NameError::TooLong => refused(ErrorCode::NameTooLong),
        _ => refused(ErrorCode::BadName),
    })
}

pub(super) fn blank(ino: i64, kind: NodeKind, mode: u32, now: i64) -> Node {
    Node {
        ino,
        kind,
        mode,
        uid: 0,
        gid: 0,
        size: 0,
        atime: now,
        mtime: now,
        ctime: now,
        nlink: if kind == NodeKind::Dir { 2 } else { 1 },
        content: None,
        target: None,
        rdev: 0,
        xattrs: 0,
        stored_bytes: 0,
    }
}

impl State {
    /// Nanoseconds, strictly increasing: every change gets its own time.
    pub(super) fn tick(&mut self) -> i64 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64);
        self.clock = now.max(self.clock + 1);
        self.clock
    }

    pub(super) fn node(&self, ino: i64) -> RemoteResult<&Node> {
        self.nodes
            .get(&ino)
            .ok_or_else(|| refused(ErrorCode::NotFound))
    }

    /// A node that still has a name: only those can change. A removed one
    /// stays readable (with no links) for the handles still open on it.
    pub(super) fn live(&self, ino: i64) -> RemoteResult<&Node> {
        self.node(ino)
            .ok()
            .filter(|n| n.nlink > 0)
            .ok_or_else(|| refused(ErrorCode::NotFound))
    }

    pub(super) fn node_mut(&mut self, ino: i64) -> RemoteResult<&mut Node> {
        self.nodes
            .get_mut(&ino)
            .filter(|n| n.nlink > 0)
            .ok_or_else(|| refused(ErrorCode::NotFound))
    }

    pub(super) fn dir(&self, ino: i64) -> RemoteResult<&Node> {
        let node = self.live(ino)?;
        if node.kind != NodeKind::Dir {
            return Err(refused(ErrorCode::NotDir));
        }
        Ok(node)
    }

    pub(super) fn child(&self, parent: i64, name: &str) -> RemoteResult<i64> {
        self.dir(parent)?;
        self.entries
            .get(&(parent, name.to_string()))
            .copied()
            .ok_or_else(|| refused(ErrorCode::NotFound))
    }

    pub(super) fn is_empty_dir(&self, dir: i64) -> bool {
        !self.entries.keys().any(|(p, _)| *p == dir)
    }

    pub(super) fn feed_seq(&self) -> i64 {
        self.feed_floor + self.feed.len() as i64
    }

    /// Appends a change to the feed, with the node as it is now.
    pub(super) fn record(
        &mut self,
        origin: u64,
        kind: ChangeKind,
        ino: i64,
        entry: Entry<'_>,
        to: Entry<'_>,
    ) {
        let change = Change {
            seq: self.feed_seq() + 1,
            kind,
            ino,
            parent: entry.map(|(p, _)| p),
            name: entry.map(|(_, n)| n.to_string()),
            new_parent: to.map(|(p, _)| p),
            new_name: to.map(|(_, n)| n.to_string()),
            node: self.nodes.get(&ino).filter(|n| n.nlink > 0).cloned(),
            origin: Some(origin),
            at: self.clock,
        };
        self.feed.push(change);
    }

    /// A directory's entries changed: its times move.
    pub(super) fn touch_dir(&mut self, dir: i64, now: i64) {
        if let Some(d) = self.nodes.get_mut(&dir) {
            d.mtime = now;
            d.ctime = now;
        }
    }

    /// One link of `ino` is gone; with its last, the node is removed.
    pub(super) fn unlink(&mut self, ino: i64, now: i64) {
        let Some(node) = self.nodes.get_mut(&ino) else {
            return;
        };
        let dir = node.kind == NodeKind::Dir;
        node.nlink = if dir { 0 } else { node.nlink.saturating_sub(1) };
        node.ctime = now;
    }

    pub(super) fn file(&self, ino: i64) -> RemoteResult<&Node> {
        let node = self.live(ino)?;
        match node.kind {
            NodeKind::File => Ok(node),
            NodeKind::Dir => Err(refused(ErrorCode::IsDir)),
            _ => Err(refused(ErrorCode::NotRegularFile)),
        }
    }

    /// Stores a new version of a file, if it is still based on `if_content`.
    pub(super) fn set_content(
        &mut self,
        ino: i64,
        chunks: Vec<ChunkRef>,
        bytes: Vec<u8>,
        mtime: Option<i64>,
        if_content: IfContent<'_>,
    ) -> RemoteResult<Node> {
        let current = self.file(ino)?.content.clone();
        let id = panproto::manifest_id(&chunks);
        if let Some(expected) = if_content
            && current.as_deref() != expected
        {
            // Already this content (a resend whose answer was lost): as the
            // real server, nothing to change.
            if current.as_deref() == Some(id.as_str()) {
                return self.node(ino).cloned();
            }
            return Err(refused(ErrorCode::Conflict));
        }
        let stored = chunks
            .iter()
            .filter(|c| c.sha256.is_some())
            .map(|c| c.size)
            .sum::<u64>();
        let size = bytes.len() as i64;
        self.contents.insert(id.clone(), Content { chunks, bytes });
        let now = self.tick();
        let node = self.node_mut(ino)?;
        node.content = Some(id);
        node.size = size;
        node.stored_bytes = stored as i64;
        node.mtime = mtime.unwrap_or(now);
        node.ctime = now;
        Ok(node.clone())
    }

    /// Cuts `bytes` into chunks as the server does, keeps them, and lists them.
    pub(super) fn store(&mut self, bytes: &[u8]) -> Vec<ChunkRef> {
        // Reading from memory cannot fail.
        panproto::Chunker::new(bytes)
            .filter_map(Result::ok)
            .map(|c| {
                let sha = panproto::sha256_hex(&c.data);
                let size = c.data.len() as u64;
                self.chunks.insert(sha.clone(), Bytes::from(c.data));
                ChunkRef {
                    sha256: Some(sha),
                    size,
                }
            })
            .collect()
    }

    pub(super) fn bytes_of(&self, chunks: &[ChunkRef]) -> RemoteResult<Vec<u8>> {
        let mut bytes = Vec::new();
        for c in chunks {
            match &c.sha256 {
                Some(sha) => {
                    let data = self
                        .chunks
                        .get(sha)
                        .ok_or_else(|| refused(ErrorCode::Incomplete))?;
                    bytes.extend_from_slice(data);
                }
                None => bytes.resize(bytes.len() + c.size as usize, 0),
            }
        }
        Ok(bytes)
    }

    pub(super) fn upload_state(&self, id: &str) -> RemoteResult<UploadState> {
        let session = self
            .sessions
            .get(id)
            .ok_or_else(|| refused(ErrorCode::UploadGone))?;
        let missing = session
            .chunks
            .iter()
            .filter_map(|c| c.sha256.clone())
            .filter(|sha| !self.chunks.contains_key(sha))
            .collect();
        Ok(UploadState {
            id: id.to_string(),
            ino: session.ino,
            expires_at: i64::MAX,
            missing,
            challenge: None,
        })
    }
}
