//! Coalescing: changes that cancel out before they are sent are not sent. A
//! node created and removed again within one batch, which nothing else in
//! the batch names (a temporary file, `touch x; rm x`), never reaches the
//! server. Its content is never sent either: an unlinked file is not uploaded.

use std::collections::HashMap;

use panproto::batch::BatchOp;

/// Every node number an operation names: what it makes, changes, moves or
/// removes, and the directories it changes.
fn inos_named(op: &BatchOp) -> Vec<i64> {
    match op {
        BatchOp::Create { parent, ino, .. } => {
            [Some(*parent), *ino].into_iter().flatten().collect()
        }
        BatchOp::Link { ino, parent, .. } => vec![*ino, *parent],
        BatchOp::Remove { parent, if_ino, .. } => {
            [Some(*parent), *if_ino].into_iter().flatten().collect()
        }
        BatchOp::Rename {
            parent,
            new_parent,
            if_ino,
            if_target,
            ..
        } => [Some(*parent), Some(*new_parent), *if_ino, *if_target]
            .into_iter()
            .flatten()
            .collect(),
        BatchOp::SetAttr { ino, .. }
        | BatchOp::SetXattr { ino, .. }
        | BatchOp::RemoveXattr { ino, .. }
        | BatchOp::SetContent { ino, .. } => vec![*ino],
    }
}

/// Which of `ops` to send: false for a creation and the removal that undoes
/// it when no other operation names the node.
pub fn worth_sending<'a>(ops: impl Iterator<Item = &'a BatchOp> + Clone) -> Vec<bool> {
    let mut named: HashMap<i64, usize> = HashMap::new();
    for ino in ops.clone().flat_map(inos_named) {
        *named.entry(ino).or_default() += 1;
    }
    let ops: Vec<&BatchOp> = ops.collect();
    let mut send = vec![true; ops.len()];
    for (i, op) in ops.iter().enumerate() {
        let BatchOp::Create {
            ino: Some(made), ..
        } = op
        else {
            continue;
        };
        if named.get(made) != Some(&2) {
            continue;
        }
        let undone = ops[i + 1..].iter().position(
            |later| matches!(later, BatchOp::Remove { if_ino: Some(gone), .. } if gone == made),
        );
        if let Some(j) = undone {
            send[i] = false;
            send[i + 1 + j] = false;
        }
    }
    send
}

#[cfg(test)]
mod tests {
    use super::*;
    use panproto::wire::{CreateRequest, NodeKind};

    fn create(parent: i64, name: &str, ino: i64, kind: NodeKind) -> BatchOp {
        BatchOp::create(parent, CreateRequest::plain(name, kind), Some(ino))
    }

    fn remove(parent: i64, name: &str, ino: i64) -> BatchOp {
        BatchOp::Remove {
            parent,
            name: name.into(),
            dir: false,
            if_ino: Some(ino),
        }
    }

    #[test]
    fn a_node_made_and_removed_in_one_batch_is_not_sent() {
        let ops = [
            create(1, "tmp", 10, NodeKind::File),
            create(1, "kept", 11, NodeKind::File),
            remove(1, "tmp", 10),
        ];
        assert_eq!(worth_sending(ops.iter()), [false, true, false]);
    }

    #[test]
    fn a_node_something_else_names_is_sent() {
        let ops = [
            create(1, "d", 10, NodeKind::Dir),
            create(10, "inside", 11, NodeKind::File),
            remove(1, "d", 10),
            create(1, "moved", 12, NodeKind::File),
            BatchOp::SetAttr {
                ino: 12,
                mode: Some(0o600),
                uid: None,
                gid: None,
                atime: None,
                mtime: None,
            },
            remove(1, "moved", 12),
        ];
        assert_eq!(worth_sending(ops.iter()), [true; 6]);
    }
}
