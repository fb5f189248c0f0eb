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

/// A 96 MiB file of `seed`'s noise, created with the streamer running and
/// nothing written yet.
struct BigFile {
    r: super::Rig,
    _home: tempfile::TempDir,
    data: Vec<u8>,
    ino: i64,
    fh: u64,
}

impl BigFile {
    fn create(seed: u64) -> Self {
        let home = tempfile::tempdir().expect("tmp");
        let r = rig(Arc::default(), home.path(), false);
        r.fs.start_streamer();
        let (attr, fh, _) =
            r.fs.create(ROOT, "big", 0o644, OWNER, libc::O_WRONLY)
                .expect("create");
        Self {
            r,
            _home: home,
            data: noise(96 * MIB, seed),
            ino: attr.ino as i64,
            fh,
        }
    }

    fn write(&self, range: (usize, usize)) {
        write_mibs(&self.r.fs, self.fh, &self.data, range);
    }

    fn sent_ahead(&self) -> u64 {
        self.r.fs.stats.bytes_sent_ahead.load(Ordering::Relaxed)
    }

    /// Asserts the server holds the file's bytes, and that about each byte
    /// was sent once.
    fn assert_sent_once(&self) {
        assert!(
            self.r.server.bytes(self.ino) == Some(self.data.clone()),
            "the server holds other bytes"
        );
        let sent = self.r.fs.stats.bytes_sent.load(Ordering::Relaxed);
        assert!(
            sent < (self.data.len() + 8 * MIB) as u64,
            "{sent} bytes sent for a {} byte file",
            self.data.len()
        );
    }
}

#[test]
fn a_file_written_sequentially_is_sent_while_it_grows() {
    let big = BigFile::create(9);
    big.write((0, 80 * MIB));
    wait_until("chunks sent while the file is written", || {
        big.sent_ahead() > 0
    });
    big.write((80 * MIB, 96 * MIB));
    big.r.fs.flush(big.fh).expect("close");
    big.r.fs.release(big.fh);
    // What was sent ahead was not sent again at the close.
    big.assert_sent_once();
    assert!(
        big.sent_ahead() >= 16 * MIB as u64,
        "only {} bytes sent ahead",
        big.sent_ahead()
    );
    // The sessions the chunks were sent ahead in end once the file committed.
    wait_until("the sessions sent ahead in ended", || {
        big.r.server.live_sessions() == 0
    });
}

#[test]
fn bytes_changed_after_their_chunks_were_sent_ahead_reach_the_server() {
    let mut big = BigFile::create(17);
    big.write((0, 80 * MIB));
    wait_until("chunks sent while the file is written", || {
        big.sent_ahead() > 0
    });
    // A header rewritten after its chunks went, as tar and zip writers do.
    big.data[10 * MIB..11 * MIB].copy_from_slice(&noise(MIB, 18));
    big.write((10 * MIB, 11 * MIB));
    big.write((80 * MIB, 96 * MIB));
    big.r.fs.flush(big.fh).expect("close");
    big.r.fs.release(big.fh);
    // Only the chunks around the change go again.
    big.assert_sent_once();
}

#[test]
fn a_close_while_chunks_are_sent_ahead_sends_no_chunk_twice() {
    let big = BigFile::create(13);
    // The streamer's send of the first 80 MiB is held on its way.
    big.r.faults.hold_uploads(true);
    big.write((0, 80 * MIB));
    wait_until("a send ahead to start", || {
        big.r.faults.upload_attempts(big.ino) > 0
    });
    big.write((80 * MIB, 96 * MIB));
    // The close comes while that send is under way.
    let closing = {
        let (fs, fh) = (big.r.fs.clone(), big.fh);
        std::thread::spawn(move || {
            fs.flush(fh).expect("close");
            fs.release(fh);
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(300));
    big.r.faults.hold_uploads(false);
    closing.join().expect("close thread");
    big.assert_sent_once();
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
