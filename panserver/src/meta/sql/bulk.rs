//! A batch's fast path for new nodes. A client that copies a tree in sends
//! runs of operations that only make new nodes: create, then the new node's
//! attributes and first content. Each such operation on its own costs about
//! ten statements, and each statement a round trip to the database thread.
//! A run is checked with a few queries and written with multi-row
//! statements instead, with the same rows, outcomes and changes as the
//! operations one by one. Whatever the checks cannot show to be plain (a
//! number not reserved or used already, a parent that is not a directory, a
//! taken name, a quota, a missing chunk) sends the run the slow way, where
//! each operation gets its own outcome.

use std::collections::{HashMap, HashSet};

use panproto::wire::{ChangeKind, ChunkRef, Node, NodeKind};

use super::changes::{Edit, Write};
use super::contents::content_size;
use crate::meta::{MetaResult, TreeOp};

/// Runs shorter than this go the slow way: nothing to win.
pub(super) const RUN_MIN: usize = 4;

/// What a batch does with the operations at hand.
pub(super) enum Fast {
    /// The first operations were applied together: their nodes (None for a
    /// remove), in order.
    Applied(Vec<Option<Node>>),
    /// The first this many operations make new nodes, but the checks found
    /// something only the slow way answers exactly.
    Declined(usize),
    /// The next operation is not part of a run.
    NoRun,
}

/// The run at the head of a batch, as its operations name it.
#[derive(Default)]
pub(super) struct Scan {
    pub len: usize,
    /// Numbers the client reserved, in the order of their creates.
    pub reserved: Vec<i64>,
    /// Parents that exist already, with the names the run makes in them.
    pub names: HashMap<i64, Vec<String>>,
    pub files: i64,
    pub bytes: i64,
    /// Each content the run sets, by manifest id.
    pub contents: HashMap<String, Vec<ChunkRef>>,
}

/// The longest run at the head of `ops` that only makes new nodes.
fn scan(ops: &[TreeOp], server_inos: &[Option<i64>]) -> Scan {
    let mut s = Scan::default();
    // Nodes made so far: their kind, and whether their content was set.
    let mut made: HashMap<i64, (NodeKind, bool)> = HashMap::new();
    let mut taken: HashSet<(i64, &str)> = HashSet::new();
    for (op, server_ino) in ops.iter().zip(server_inos) {
        let plain = match op {
            TreeOp::Create { parent, req, ino } => {
                let number = ino.or(*server_ino);
                let parent_made = made.get(parent).map(|(kind, _)| *kind);
                let parent_ok = parent_made.is_none_or(|kind| kind == NodeKind::Dir);
                match number {
                    Some(n)
                        if parent_ok
                            && !made.contains_key(&n)
                            && taken.insert((*parent, req.name.as_str()))
                            && (req.kind != NodeKind::Symlink || req.target.is_some()) =>
                    {
                        made.insert(n, (req.kind, false));
                        if ino.is_some() {
                            s.reserved.push(n);
                        }
                        if parent_made.is_none() {
                            s.names.entry(*parent).or_default().push(req.name.clone());
                        }
                        s.files += 1;
                        true
                    }
                    _ => false,
                }
            }
            TreeOp::SetAttr { ino, .. } => made.contains_key(ino),
            TreeOp::SetContent {
                ino,
                chunks,
                if_content: None | Some(None),
                ..
            } => match made.get_mut(ino) {
                Some((NodeKind::File, set @ false)) => {
                    *set = true;
                    s.bytes += content_size(chunks);
                    if !chunks.is_empty() {
                        s.contents
                            .insert(panproto::manifest_id(chunks), chunks.clone());
                    }
                    true
                }
                _ => false,
            },
            _ => false,
        };
        if !plain {
            break;
        }
        s.len += 1;
    }
    s
}

/// A content the run refers to: its row, and the bytes a node of it stores.
pub(super) struct Content {
    pub file_id: Option<i64>,
    pub stored: i64,
    pub uses: i64,
    /// Times of the first and the last operation that set it.
    pub first_use: i64,
    pub last_use: i64,
}

/// A new node as the run leaves it, with its name.
pub(super) struct Made {
    pub node: Node,
    pub parent: i64,
    pub name: String,
}

/// Plays the run in memory: each operation's node and change, the new
/// nodes' final rows, and how the existing parents change.
pub(super) struct Played {
    pub nodes: Vec<Node>,
    /// Each operation's change, and when it happened.
    pub edits: Vec<(Edit, i64)>,
    pub made: Vec<Made>,
    /// Existing parents: link count added, time of the last change.
    pub parents: HashMap<i64, (i64, i64)>,
}

fn play(
    ops: &[TreeOp],
    server_inos: &[Option<i64>],
    times: &[i64],
    contents: &mut HashMap<String, Content>,
) -> Played {
    let mut p = Played {
        nodes: Vec::with_capacity(ops.len()),
        edits: Vec::with_capacity(ops.len()),
        made: Vec::new(),
        parents: HashMap::new(),
    };
    let mut index: HashMap<i64, usize> = HashMap::new();
    for ((op, server_ino), &now) in ops.iter().zip(server_inos).zip(times) {
        let (ino, edit) = match op {
            TreeOp::Create { parent, req, ino } => {
                let ino = ino.or(*server_ino).unwrap_or_default();
                let dir = req.kind == NodeKind::Dir;
                let target = req.target.clone().filter(|_| req.kind == NodeKind::Symlink);
                let node = Node {
                    ino,
                    kind: req.kind,
                    mode: req.mode & 0o7777,
                    uid: req.uid,
                    gid: req.gid,
                    size: target.as_ref().map_or(0, |t| t.len() as i64),
                    atime: now,
                    mtime: now,
                    ctime: now,
                    nlink: if dir { 2 } else { 1 },
                    content: None,
                    target,
                    rdev: match req.kind {
                        NodeKind::CharDev | NodeKind::BlockDev => req.rdev,
                        _ => 0,
                    },
                    xattrs: 0,
                    stored_bytes: 0,
                };
                let links = i64::from(dir);
                match index.get(parent) {
                    Some(&at) => {
                        let up = &mut p.made[at].node;
                        (up.mtime, up.ctime) = (now, now);
                        up.nlink += links as u32;
                    }
                    None => {
                        let e = p.parents.entry(*parent).or_default();
                        *e = (e.0 + links, now);
                    }
                }
                index.insert(ino, p.made.len());
                p.made.push(Made {
                    node,
                    parent: *parent,
                    name: req.name.clone(),
                });
                let edit = Edit::new(ChangeKind::Create, ino).entry(*parent, &req.name);
                (ino, edit)
            }
            TreeOp::SetAttr { ino, req } => {
                let n = &mut p.made[index[ino]].node;
                n.mode = req.mode.unwrap_or(n.mode) & 0o7777;
                n.uid = req.uid.unwrap_or(n.uid);
                n.gid = req.gid.unwrap_or(n.gid);
                n.atime = req.atime.unwrap_or(n.atime);
                n.mtime = req.mtime.unwrap_or(n.mtime);
                n.ctime = now;
                (*ino, Edit::new(ChangeKind::Attr, *ino))
            }
            TreeOp::SetContent {
                ino, chunks, mtime, ..
            } => {
                let n = &mut p.made[index[ino]].node;
                n.size = content_size(chunks);
                (n.mtime, n.ctime) = (*mtime, now);
                n.content = (!chunks.is_empty()).then(|| panproto::manifest_id(chunks));
                n.stored_bytes = 0;
                if let Some(c) = n.content.as_ref().and_then(|id| contents.get_mut(id)) {
                    n.stored_bytes = c.stored;
                    if c.uses == 0 {
                        c.first_use = now;
                    }
                    c.uses += 1;
                    c.last_use = now;
                }
                (*ino, Edit::new(ChangeKind::Content, *ino))
            }
            // `scan` took none other.
            _ => continue,
        };
        let node = p.made[index[&ino]].node.clone();
        p.edits.push((edit.node(Some(node.clone())), now));
        p.nodes.push(node);
    }
    p
}

impl Write {
    /// Applies the run of new-node operations at the head of `ops`, if there
    /// is one and every check passes.
    pub(super) async fn apply_new_nodes(
        &mut self,
        ops: &[TreeOp],
        server_inos: &[Option<i64>],
        times: &[i64],
    ) -> MetaResult<Fast> {
        let scan = scan(ops, server_inos);
        if scan.len < RUN_MIN {
            return Ok(Fast::NoRun);
        }
        let Some(mut contents) = self.check_run(&scan).await? else {
            return Ok(Fast::Declined(scan.len));
        };
        let run = ..scan.len;
        let played = play(&ops[run], &server_inos[run], &times[run], &mut contents);
        self.write_contents(&scan, &mut contents).await?;
        self.write_nodes(&played, &contents, scan.bytes).await?;
        for (edit, at) in played.edits {
            self.now = at;
            self.record(edit).await?;
        }
        Ok(Fast::Applied(played.nodes.into_iter().map(Some).collect()))
    }
}
