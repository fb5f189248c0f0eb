//! Coalescing: changes that cancel out before they are sent are not sent. A
//! node created and removed again within one batch, which nothing else in
//! the batch names (a temporary file, `touch x; rm x`), never reaches the
//! server. Its content is never sent either: an unlinked file is not uploaded.
//! Which names and nodes an operation touches is worked out here once, for
//! this and for what the syncer invalidates when the server refuses one.

use std::collections::HashMap;

use panproto::batch::BatchOp;

/// The names and nodes an operation touches.
pub fn touched(op: &BatchOp) -> (Vec<(i64, String)>, Vec<i64>) {
    match op {
        BatchOp::Create {
            parent, name, ino, ..
        } => (vec![(*parent, name.clone())], ino.iter().copied().collect()),
        BatchOp::Link { ino, parent, name } => (vec![(*parent, name.clone())], vec![*ino]),
        BatchOp::Remove {
            parent,
            name,
            if_ino,
            ..
        } => (
            vec![(*parent, name.clone())],
            if_ino.iter().copied().collect(),
        ),
        BatchOp::Rename {
            parent,
            name,
            new_parent,
            new_name,
            if_ino,
            ..
        } => (
            vec![(*parent, name.clone()), (*new_parent, new_name.clone())],
            if_ino
                .iter()
                .copied()
                .chain([*parent, *new_parent])
                .collect(),
        ),
        BatchOp::SetAttr { ino, .. }
        | BatchOp::SetXattr { ino, .. }
        | BatchOp::RemoveXattr { ino, .. }
        | BatchOp::SetContent { ino, .. } => (Vec::new(), vec![*ino]),
    }
}

/// Every node number an operation names: what it makes, changes, moves or
/// removes (a rename also the node it replaces), and the directories it changes.
fn inos_named(op: &BatchOp) -> Vec<i64> {
    let (names, mut nodes) = touched(op);
    nodes.extend(names.into_iter().map(|(parent, _)| parent));
    if let BatchOp::Rename {
        if_target: Some(replaced),
        ..
    } = op
    {
        nodes.push(*replaced);
    }
    nodes
}

/// Which of `ops` to send: false for a creation and the removal that undoes
/// it when no other operation names the node, unless the creation may have
/// reached the server already (`sent_before`: a resend after a lost answer,
/// or a journal a previous panfs left), where only the removal undoes it.
pub fn worth_sending<'a>(
    ops: impl Iterator<Item = &'a BatchOp> + Clone,
    sent_before: impl Fn(usize) -> bool,
) -> Vec<bool> {
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
        if named.get(made) != Some(&2) || sent_before(i) {
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

/// For each node the operations of a batch name, the index of the last one
/// that names it. The server answers an operation with the node as that
/// operation left it, so a later operation that names the node makes that
/// answer stale: a link answered with two links, then a removal of one of
/// them, answered with nothing.
pub fn last_naming<'a>(ops: impl Iterator<Item = &'a BatchOp>) -> HashMap<i64, usize> {
    let mut last = HashMap::new();
    for (i, op) in ops.enumerate() {
        for ino in inos_named(op) {
            last.insert(ino, i);
        }
    }
    last
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
        assert_eq!(worth_sending(ops.iter(), |_| false), [false, true, false]);
    }

    #[test]
    fn a_node_whose_creation_may_have_been_sent_is_removed_on_the_server() {
        let ops = [create(1, "tmp", 10, NodeKind::File), remove(1, "tmp", 10)];
        assert_eq!(worth_sending(ops.iter(), |i| i == 0), [true, true]);
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
        assert_eq!(worth_sending(ops.iter(), |_| false), [true; 6]);
    }

    #[test]
    fn a_later_operation_on_a_node_outdates_an_earlier_answer() {
        let ops = [
            create(1, "a", 10, NodeKind::File),
            BatchOp::Link {
                ino: 10,
                parent: 1,
                name: "b".into(),
            },
            remove(1, "a", 10),
        ];
        let last = last_naming(ops.iter());
        assert_eq!(last.get(&10), Some(&2));
        assert_eq!(last.get(&1), Some(&2));
        assert_eq!(last.get(&99), None);
    }
}
