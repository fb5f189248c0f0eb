//! Uploads while writing: a file written sequentially is sent while it grows,
//! and the upload at its close sends little more.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{OWNER, noise, rig, wait_until};
use crate::fs::ROOT;

const MIB: usize = 1 << 20;

/// Writes [from, to) of `data` through handle `fh`, a MiB at a time.
fn write_mibs(fs: &crate::fs::PanFs, fh: u64, data: &[u8], (from, to): (usize, usize)) {
    for at in (from..to).step_by(MIB) {
        fs.write(fh, at as u64, &data[at..at + MIB]).expect("write");
    }
}

#[test]
fn a_file_written_sequentially_is_sent_while_it_grows() {
    let home = tempfile::tempdir().expect("tmp");
    let r = rig(Arc::default(), home.path(), false);
    r.fs.start_streamer();
    let data = noise(96 * MIB, 9);
    let (attr, fh, _) =
        r.fs.create(ROOT, "big", 0o644, OWNER, libc::O_WRONLY)
            .expect("create");
    write_mibs(&r.fs, fh, &data, (0, 80 * MIB));
    let ahead = || r.fs.stats.bytes_sent_ahead.load(Ordering::Relaxed);
    wait_until("chunks sent while the file is written", || ahead() > 0);
    write_mibs(&r.fs, fh, &data, (80 * MIB, 96 * MIB));
    r.fs.flush(fh).expect("close");
    r.fs.release(fh);
    assert!(
        r.server.bytes(attr.ino as i64) == Some(data.clone()),
        "the server holds other bytes"
    );
    // What was sent ahead was not sent again at the close.
    let sent = r.fs.stats.bytes_sent.load(Ordering::Relaxed);
    assert!(
        ahead() >= 16 * MIB as u64,
        "only {} bytes sent ahead",
        ahead()
    );
    assert!(
        sent < (data.len() + 8 * MIB) as u64,
        "{sent} bytes sent for a {} byte file",
        data.len()
    );
    // The sessions the chunks were sent ahead in end once the file committed.
    wait_until("the sessions sent ahead in ended", || {
        r.server.live_sessions() == 0
    });
}

#[test]
fn a_close_while_chunks_are_sent_ahead_sends_no_chunk_twice() {
    let home = tempfile::tempdir().expect("tmp");
    let r = rig(Arc::default(), home.path(), false);
    r.fs.start_streamer();
    let data = noise(96 * MIB, 13);
    let (attr, fh, _) =
        r.fs.create(ROOT, "big", 0o644, OWNER, libc::O_WRONLY)
            .expect("create");
    let ino = attr.ino as i64;
    // The streamer's send of the first 80 MiB is held on its way.
    r.faults.hold_uploads(true);
    write_mibs(&r.fs, fh, &data, (0, 80 * MIB));
    wait_until("a send ahead to start", || {
        r.faults.upload_attempts(ino) > 0
    });
    write_mibs(&r.fs, fh, &data, (80 * MIB, 96 * MIB));
    // The close comes while that send is under way.
    let closing = {
        let fs = r.fs.clone();
        std::thread::spawn(move || {
            fs.flush(fh).expect("close");
            fs.release(fh);
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(300));
    r.faults.hold_uploads(false);
    closing.join().expect("close thread");
    assert!(
        r.server.bytes(ino) == Some(data.clone()),
        "the server holds other bytes"
    );
    let sent = r.fs.stats.bytes_sent.load(Ordering::Relaxed);
    assert!(
        sent < (data.len() + 8 * MIB) as u64,
        "{sent} bytes sent for a {} byte file",
        data.len()
    );
}

#[test]
fn a_large_upload_sends_chunks_while_it_cuts_the_rest_and_each_byte_once() {
    let home = tempfile::tempdir().expect("tmp");
    let r = rig(Arc::default(), home.path(), false);
    // Written whole before any upload (no streamer): the close's upload cuts
    // 96 MiB, past the size from which it sends what it has cut meanwhile.
    let data = noise(96 * MIB, 11);
    let (attr, fh, _) =
        r.fs.create(ROOT, "big", 0o644, OWNER, libc::O_WRONLY)
            .expect("create");
    write_mibs(&r.fs, fh, &data, (0, data.len()));
    r.fs.flush(fh).expect("close");
    r.fs.release(fh);
    assert!(
        r.server.bytes(attr.ino as i64) == Some(data.clone()),
        "the server holds other bytes"
    );
    let sent = r.fs.stats.bytes_sent.load(Ordering::Relaxed);
    assert_eq!(sent, data.len() as u64, "each byte goes once");
    // Sessions opened for the chunks sent ahead (32 a session), beside the
    // one committed.
    let sessions = r.faults.upload_attempts(attr.ino as i64);
    assert!(sessions >= 3, "{sessions} upload sessions");
    wait_until("the sessions sent ahead in ended", || {
        r.server.live_sessions() == 0
    });
}
