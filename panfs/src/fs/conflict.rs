//! Conflict copies. A commit is based on the version its working copy started
//! from; when another client stored a newer one meanwhile, that one stays, and
//! the local version is stored beside it under a name that says what it is:
//! `report (conflict on HOST 2026-11-30 054512).txt`. No edit is lost.

use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use panproto::wire::{CreateRequest, Node, NodeKind};

use super::files::{Body, Life, OpenFile};
use super::write::LiveCopy;
use super::{FsError, FsResult, PanFs, lock};
use crate::replica::Invalidations;
use crate::upload::{Committed, Snapshot, Target, upload};

/// How many numbered names to try when the conflict name is taken.
const NAME_TRIES: u32 = 20;

/// Year, month, day, hours, minutes and seconds (UTC) of a time.
fn civil(t: SystemTime) -> (i64, u32, u32, u64, u64, u64) {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = (secs / 86_400) as i64;
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    let s = secs % 86_400;
    (year, month, day, s / 3600, s / 60 % 60, s % 60)
}

pub(super) fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    match std::str::from_utf8(&buf[..len]) {
        Ok(name) if rc == 0 && !name.is_empty() => name.to_string(),
        _ => "this machine".to_string(),
    }
}

/// `name`'s conflict copy name: the mark goes before the extension, so the copy
/// opens with the same program, and the stem is cut to keep within NAME_MAX.
pub(super) fn conflict_name(name: &str, host: &str, at: SystemTime, try_no: u32) -> String {
    let (stem, ext) = match name.rfind('.') {
        Some(dot) if dot > 0 && name.len() - dot <= 16 => name.split_at(dot),
        _ => (name, ""),
    };
    let (y, mo, d, h, mi, s) = civil(at);
    let number = if try_no > 0 {
        format!(" {}", try_no + 1)
    } else {
        String::new()
    };
    let mark = format!(" (conflict on {host} {y:04}-{mo:02}-{d:02} {h:02}{mi:02}{s:02}{number})");
    let room = panproto::NAME_MAX.saturating_sub(mark.len() + ext.len());
    let mut cut = stem.len().min(room);
    while !stem.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{mark}{ext}", &stem[..cut])
}

/// A conflict-copy name for `name`, which may be one of this machine's
/// conflict names taken meanwhile (two mounts here in the same second): the
/// next number of the same mark, rather than a second mark.
pub(super) fn next_conflict_name(name: &str, host: &str, at: SystemTime) -> String {
    let opening = format!(" (conflict on {host} ");
    let marked = name.rfind(&opening).and_then(|start| {
        let close = start + name[start..].find(')')?;
        let words: Vec<&str> = name[start + opening.len()..close].split(' ').collect();
        let taken = match words[..] {
            [_day, _time] => 1,
            [_day, _time, number] => number.parse().ok()?,
            _ => return None,
        };
        Some((format!("{}{}", &name[..start], &name[close + 1..]), taken))
    });
    match marked {
        Some((original, taken)) => conflict_name(&original, host, at, taken),
        None => conflict_name(name, host, at, 0),
    }
}

/// Versions up to this size are compared byte for byte before a conflict copy.
const COMPARE_MAX: u64 = 64 << 20;
const COMPARE_BLOCK: u64 = 1 << 20;

impl PanFs {
    /// A new, empty file for a conflict copy of `name` in `parent`: its name,
    /// and its node.
    fn new_copy(&self, parent: i64, name: &str, mode: u32) -> FsResult<(String, Node)> {
        let (host, now) = (host_name(), SystemTime::now());
        for try_no in 0..NAME_TRIES {
            let req = CreateRequest {
                name: conflict_name(name, &host, now, try_no),
                kind: NodeKind::File,
                mode,
                uid: self.opts.uid,
                gid: self.opts.gid,
                target: None,
                rdev: 0,
            };
            match self.make(parent, req.clone()) {
                Ok(node) => return Ok((req.name, node)),
                Err(e) if e.errno() == libc::EEXIST => continue,
                Err(e) => return Err(e),
            }
        }
        Err(FsError::new(
            libc::EEXIST,
            "every conflict copy name is taken",
        ))
    }

    /// Whether the server's version holds exactly the snapshot's bytes (read
    /// back block by block; files over `COMPARE_MAX` count as different).
    fn server_has_these_bytes(&self, ino: i64, current: &Node, snap: &Snapshot) -> bool {
        let size = snap.record.size;
        if current.size != size as i64 || size > COMPARE_MAX {
            return false;
        }
        let Some(content) = current.content.as_deref() else {
            return size == 0;
        };
        let mut local = vec![0u8; COMPARE_BLOCK as usize];
        (0..size).step_by(COMPARE_BLOCK as usize).all(|start| {
            let end = (start + COMPARE_BLOCK).min(size);
            let buf = &mut local[..(end - start) as usize];
            snap.file.read_exact_at(buf, start).is_ok()
                && self
                    .block_on(self.remote.read(ino, content, start, end))
                    .is_ok_and(|theirs| theirs[..] == buf[..])
        })
    }

    /// The copy matches the server's `current` version: clean against it.
    fn already_committed(
        &self,
        file: &Arc<OpenFile>,
        current: &Node,
        generation: u64,
    ) -> FsResult<()> {
        let chunks = self.block_on(self.remote.manifest(current.ino))?.chunks;
        let mut f = lock(&file.state);
        if let Body::Local {
            shadow,
            synced_ctime,
        } = &mut f.body
        {
            *synced_ctime = current.ctime;
            if shadow.generation() == generation {
                shadow.committed(current.content.clone(), chunks);
            } else {
                shadow
                    .rebase(current.content.clone(), chunks)
                    .map_err(|e| FsError::local("journaling a commit", e))?;
            }
        }
        drop(f);
        self.remember(current);
        Ok(())
    }

    /// Where the file is, or was when the snapshot was taken.
    fn copy_place(&self, ino: i64, snap: &Snapshot) -> (i64, String) {
        self.place_of(ino)
            .or_else(|| snap.record.place.clone())
            .unwrap_or_else(|| (self.root, format!("file {ino}")))
    }

    /// Stores the snapshot as a new file beside `name` in `parent` (at the
    /// top when that directory went away): its name, and what was stored.
    fn store_copy(
        &self,
        parent: i64,
        name: &str,
        mode: u32,
        file: &Arc<OpenFile>,
        snap: &Snapshot,
    ) -> FsResult<(String, Committed)> {
        let (parent, (copy_name, node)) = match self.new_copy(parent, name, mode) {
            // The directory went away meanwhile: the copy goes to the top.
            Err(e) if parent != self.root && matches!(e.errno(), libc::ENOENT | libc::ENOTDIR) => {
                (self.root, self.new_copy(self.root, name, mode)?)
            }
            made => (parent, made?),
        };
        // Local-first, the copy's node reaches the server through the journal.
        self.settle_node(node.ino)?;
        let target = Target {
            ino: node.ino,
            if_content: Some(None),
        };
        let live = LiveCopy { file };
        let sent = self.block_on(upload(
            self.remote.as_ref(),
            snap,
            &live,
            target,
            &self.stats,
        ));
        match sent {
            Ok(mut stored) => {
                self.end_sessions_sent_ahead(std::mem::take(&mut stored.ahead));
                self.remember(&stored.node);
                self.stats.conflict_copies.fetch_add(1, Ordering::Relaxed);
                Ok((copy_name, stored))
            }
            Err(e) => {
                // No empty copy is left behind: the next try makes a new one.
                // The name may lead to another node by now (the copy was made
                // again under another name): only the copy goes.
                let fuse_parent = self.to_fuse(parent);
                if self
                    .lookup(fuse_parent, &copy_name)
                    .is_ok_and(|a| a.ino == self.to_fuse(node.ino))
                {
                    let _ = self.unlink(fuse_parent, &copy_name, false);
                }
                Err(e.into())
            }
        }
    }

    /// A file another client removed while it was edited here: the edit is
    /// stored as a conflict copy where the file was (at the top if its
    /// directory went too), and the file is gone here as well, as that client
    /// asked. Open handles keep reading and writing it until their close.
    pub(super) fn keep_removed_edit(
        &self,
        ino: i64,
        file: &Arc<OpenFile>,
        snap: &Snapshot,
    ) -> FsResult<()> {
        let (parent, name) = self.copy_place(ino, snap);
        let mode = lock(&self.tables)
            .replica
            .last_seen(ino)
            .map_or(0o644, |n| n.mode);
        let (copy_name, _) = self.store_copy(parent, &name, mode, file, snap)?;
        tracing::warn!(
            ino,
            name,
            copy = copy_name,
            "another client removed the file while it was edited here; the edit is kept as a conflict copy"
        );
        let mut f = lock(&file.state);
        f.life = Life::Orphaned;
        if let Body::Local { shadow, .. } = &mut f.body {
            shadow.forget_journal();
        }
        Ok(())
    }

    /// The conflict copy that already holds exactly the snapshot's bytes:
    /// the one made from this file while it stayed open, if nothing was
    /// written since. (A passthrough writer's close marks the whole file
    /// written, as panfs cannot see its writes.)
    fn copy_kept_already(&self, file: &Arc<OpenFile>, snap: &Snapshot) -> Option<Node> {
        let copy = lock(&file.state).kept_as.clone()?;
        self.server_has_these_bytes(copy.ino, &copy, snap)
            .then_some(copy)
    }

    /// Stores the snapshot as a new file beside `ino`, and lets the file show the
    /// version the server has.
    pub(super) fn keep_conflict_copy(
        &self,
        ino: i64,
        file: &Arc<OpenFile>,
        snap: &Snapshot,
        generation: u64,
    ) -> FsResult<()> {
        let (parent, name) = self.copy_place(ino, snap);
        // The version that won: the copy takes its mode, and the file shows it after.
        let current = self.block_on(self.remote.node(ino))?;
        if self.server_has_these_bytes(ino, &current, snap) {
            // Sent before a crash, its commit not recorded here: no conflict.
            tracing::info!(ino, name, "the server has this version already");
            return self.already_committed(file, &current, generation);
        }
        let copy = match self.copy_kept_already(file, snap) {
            Some(copy) => {
                tracing::info!(ino, name, "this version is kept as a conflict copy already");
                copy
            }
            None => {
                let (copy_name, stored) =
                    self.store_copy(parent, &name, current.mode, file, snap)?;
                tracing::warn!(
                    ino,
                    name,
                    copy = copy_name,
                    "another client changed the file first; the local version is kept as a conflict copy"
                );
                stored.node
            }
        };
        // The file shows the server's version now, unless it was written to
        // while the copy was made: then its next upload meets the same newer
        // version and is kept as a conflict copy too, with those writes.
        self.remember(&current);
        let switched = {
            // Under the tables' lock, no open comes between the look at the
            // handles and the switch.
            let _tables = lock(&self.tables);
            let mut f = lock(&file.state);
            if let Body::Local { shadow, .. } = &f.body
                && shadow.generation() != generation
            {
                return Ok(());
            }
            let unopened = file.opens.load(Ordering::SeqCst) == 0;
            if unopened {
                let server = Body::Remote {
                    content: current.content.clone(),
                    size: current.size.max(0) as u64,
                };
                if let Body::Local { shadow, .. } = std::mem::replace(&mut f.body, server) {
                    shadow.discard();
                }
            }
            unopened
        };
        if !switched {
            return self.show_after_last_close(ino, file, &current, &copy, generation);
        }
        // The kernel still holds this mount's version (its pages, and its size
        // for the attribute TTL, which would cut reads of the other one short).
        self.tell_kernel(Invalidations {
            data: vec![ino],
            ..Invalidations::default()
        });
        Ok(())
    }

    /// A file still open here after its version went to a conflict copy: its
    /// handles read on from that version to their close, never a mix of two,
    /// as when another client's version arrives while a file is open
    /// (follow.rs). The working copy counts as the copy's content, clean; the
    /// next open takes the server's version, and the kernel forgets the old
    /// pages at the last close.
    fn show_after_last_close(
        &self,
        ino: i64,
        file: &Arc<OpenFile>,
        current: &Node,
        copy: &Node,
        generation: u64,
    ) -> FsResult<()> {
        let chunks = self.block_on(self.remote.manifest(copy.ino))?.chunks;
        let mut t = lock(&self.tables);
        let mut f = lock(&file.state);
        let Body::Local {
            shadow,
            synced_ctime,
        } = &mut f.body
        else {
            return Ok(());
        };
        if shadow.generation() != generation {
            return Ok(());
        }
        shadow.committed(copy.content.clone(), chunks);
        *synced_ctime = 0;
        f.kept_as = Some(copy.clone());
        // What the kernel holds: this version, not the server's.
        let mut held = current.clone();
        held.take_content_of(copy);
        t.deferred.insert(ino, held);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn conflict_names_keep_the_extension_and_fit_name_max() {
        let at = UNIX_EPOCH + Duration::from_secs(1_796_017_512); // 2026-11-30 05:45:12 UTC
        assert_eq!(
            conflict_name("report.txt", "box", at, 0),
            "report (conflict on box 2026-11-30 054512).txt"
        );
        assert_eq!(
            conflict_name("Makefile", "box", at, 1),
            "Makefile (conflict on box 2026-11-30 054512 2)"
        );
        assert_eq!(
            conflict_name(".bashrc", "box", at, 0),
            ".bashrc (conflict on box 2026-11-30 054512)"
        );
        let long = format!("{}.tar.gz", "é".repeat(200));
        let name = conflict_name(&long, "box", at, 0);
        assert!(name.len() <= panproto::NAME_MAX, "{}", name.len());
        assert!(name.ends_with("054512).gz"));
    }

    #[test]
    fn a_conflict_name_taken_meanwhile_is_numbered_not_marked_twice() {
        let at = UNIX_EPOCH + Duration::from_secs(1_796_017_512);
        let first = next_conflict_name("report.txt", "box", at);
        assert_eq!(first, "report (conflict on box 2026-11-30 054512).txt");
        let second = next_conflict_name(&first, "box", at);
        assert_eq!(second, "report (conflict on box 2026-11-30 054512 2).txt");
        assert_eq!(
            next_conflict_name(&second, "box", at),
            "report (conflict on box 2026-11-30 054512 3).txt"
        );
        // Another machine's mark is part of the name this machine keeps.
        assert_eq!(
            next_conflict_name("a (conflict on other 2026-11-30 054512)", "box", at),
            "a (conflict on other 2026-11-30 054512) (conflict on box 2026-11-30 054512)"
        );
    }
}
