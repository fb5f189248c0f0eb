//! The journal's promises: what returned survives a reopen, in order; a torn
//! last line is dropped and any other damage reported; many callers at once
//! share syncs; acknowledged records go.

use std::sync::Arc;

use super::{Journal, JournalError, Record};

fn ops(j: &Journal<String>) -> Vec<(u64, String)> {
    j.pending(usize::MAX)
        .into_iter()
        .map(|Record { seq, op }| (seq, op))
        .collect()
}

#[test]
fn what_returned_survives_a_reopen_in_order() {
    let dir = tempfile::tempdir().expect("dir");
    {
        let j = Journal::open(dir.path()).expect("open");
        for op in ["mkdir a", "create a/b", "rename a/b a/c"] {
            j.append(op.to_string()).expect("append");
        }
        j.acknowledge(1).expect("ack");
    }
    let j: Journal<String> = Journal::open(dir.path()).expect("reopen");
    assert_eq!(
        ops(&j),
        [
            (2, "create a/b".to_string()),
            (3, "rename a/b a/c".to_string())
        ]
    );
    // Numbers go on from where they were.
    assert_eq!(j.append("remove a/c".into()).expect("append"), 4);
}

#[test]
fn a_torn_last_line_is_dropped_and_other_damage_reported() {
    let dir = tempfile::tempdir().expect("dir");
    let log = dir.path().join("journal.log");
    {
        let j = Journal::open(dir.path()).expect("open");
        j.append("kept".to_string()).expect("append");
    }
    // A crash in the middle of writing the next record.
    let mut text = std::fs::read_to_string(&log).expect("read");
    text.push_str("{\"seq\":2,\"op\":\"half");
    std::fs::write(&log, &text).expect("write");
    let j: Journal<String> = Journal::open(dir.path()).expect("reopen");
    assert_eq!(ops(&j), [(1, "kept".to_string())]);
    assert_eq!(j.append("next".into()).expect("append"), 2);
    drop(j);
    let reopened: Journal<String> = Journal::open(dir.path()).expect("reopen");
    assert_eq!(ops(&reopened).len(), 2, "the torn line is gone for good");
    drop(reopened);
    // Damage before the last line is never skipped silently.
    let text = std::fs::read_to_string(&log).expect("read");
    std::fs::write(&log, text.replacen("\"seq\":1", "\"seq\":\"x\"", 1)).expect("write");
    assert!(matches!(
        Journal::<String>::open(dir.path()),
        Err(JournalError::Corrupt { .. })
    ));
}

#[test]
fn callers_at_once_share_syncs() {
    let dir = tempfile::tempdir().expect("dir");
    let j = Arc::new(Journal::open(dir.path()).expect("open"));
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let j = j.clone();
            std::thread::spawn(move || {
                (0..200)
                    .map(|i| j.append(format!("t{t} op{i}")).expect("append"))
                    .collect::<Vec<u64>>()
            })
        })
        .collect();
    let mut seqs: Vec<u64> = threads
        .into_iter()
        .flat_map(|t| t.join().expect("thread"))
        .collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=1600).collect::<Vec<u64>>());
    assert!(
        j.syncs() < 1600,
        "{} syncs for 1,600 records from 8 threads",
        j.syncs()
    );
    // Each thread's records are in its own order.
    let all = ops(&j);
    for t in 0..8 {
        let mine: Vec<&String> = all
            .iter()
            .map(|(_, op)| op)
            .filter(|op| op.starts_with(&format!("t{t} ")))
            .collect();
        let expected: Vec<String> = (0..200).map(|i| format!("t{t} op{i}")).collect();
        assert_eq!(mine, expected.iter().collect::<Vec<_>>());
    }
}

#[test]
fn an_acknowledgement_of_a_short_log_only_appends_a_line() {
    let dir = tempfile::tempdir().expect("dir");
    let j = Journal::open(dir.path()).expect("open");
    for i in 0..100 {
        j.append(format!("op {i}")).expect("append");
    }
    let log = dir.path().join("journal.log");
    let before = std::fs::metadata(&log).expect("log").len();
    j.acknowledge(100).expect("ack");
    let after = std::fs::metadata(&log).expect("log").len();
    assert_eq!(after, before + "{\"ack\":100}\n".len() as u64);
    drop(j);
    let j: Journal<String> = Journal::open(dir.path()).expect("reopen");
    assert_eq!(
        j.backlog(),
        0,
        "the acknowledged records are not sent again"
    );
    assert_eq!(j.append("after".into()).expect("append"), 101);
}

#[test]
fn when_all_is_acknowledged_the_log_starts_afresh() {
    let dir = tempfile::tempdir().expect("dir");
    let j = Journal::open(dir.path()).expect("open");
    // Past the size at which an acknowledgement of everything compacts it.
    let body = "x".repeat(8 << 10);
    for i in 0..1000 {
        j.append(format!("op {i} {body}")).expect("append");
    }
    j.acknowledge(600).expect("ack");
    assert_eq!(j.backlog(), 400);
    j.acknowledge(1000).expect("ack");
    assert_eq!(j.backlog(), 0);
    let size = std::fs::metadata(dir.path().join("journal.log"))
        .expect("log")
        .len();
    assert!(size < 32, "an emptied log still holds {size} bytes");
    drop(j);
    let j: Journal<String> = Journal::open(dir.path()).expect("reopen");
    assert_eq!(j.backlog(), 0);
    assert_eq!(j.append("after".into()).expect("append"), 1001);
}
