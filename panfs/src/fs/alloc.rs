//! `fallocate`: reserve (grow the file), keep-size, punch-hole and zero-range,
//! applied to the file's working copy. Punched and zeroed ranges are recorded as
//! zeros, so the upload sends them as holes: no bytes sent, none stored.

use super::attr::now_ns;
use super::{FsError, FsResult, PanFs};

/// What an `fallocate` mode asks for, checked as Linux checks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fallocate {
    pub keep_size: bool,
    pub punch_hole: bool,
    pub zero_range: bool,
}

impl Fallocate {
    /// Modes other than these (collapse, insert, unshare) answer EOPNOTSUPP, as
    /// on a file system without them; so does a punch without keep-size.
    pub fn from_mode(mode: i32) -> FsResult<Self> {
        let known =
            libc::FALLOC_FL_KEEP_SIZE | libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_ZERO_RANGE;
        let how = Fallocate {
            keep_size: mode & libc::FALLOC_FL_KEEP_SIZE != 0,
            punch_hole: mode & libc::FALLOC_FL_PUNCH_HOLE != 0,
            zero_range: mode & libc::FALLOC_FL_ZERO_RANGE != 0,
        };
        let punch_ok = !how.punch_hole || (how.keep_size && !how.zero_range);
        if mode & !known != 0 || !punch_ok {
            return Err(FsError::new(
                libc::EOPNOTSUPP,
                "fallocate mode not supported",
            ));
        }
        Ok(how)
    }
}

impl PanFs {
    pub fn fallocate(&self, fh: u64, offset: u64, len: u64, how: Fallocate) -> FsResult<()> {
        let end = offset
            .checked_add(len)
            .ok_or_else(|| FsError::new(libc::EFBIG, "range past the largest offset"))?;
        let handle = self.handle(fh)?;
        let local = |e| FsError::local("changing the working copy", e);
        self.with_copy(handle.ino, &handle.file, true, |shadow| {
            let now = now_ns();
            if !how.keep_size && end > shadow.size() {
                // Grown bytes are zeros: a hole in the working copy, and in the upload.
                shadow.set_size(end, now).map_err(local)?;
            }
            if how.punch_hole || how.zero_range {
                shadow.zero(offset, end, now).map_err(local)?;
            } else {
                shadow.touch(now);
            }
            if shadow.is_dirty() {
                shadow.save(self.copies_synced()).map_err(local)?;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_are_checked_as_linux_checks_them() {
        let plain = Fallocate::from_mode(0).map_err(|e| e.errno());
        assert_eq!(
            plain,
            Ok(Fallocate {
                keep_size: false,
                punch_hole: false,
                zero_range: false
            })
        );
        let punch = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
        assert!(Fallocate::from_mode(punch).is_ok_and(|h| h.punch_hole && h.keep_size));
        assert!(Fallocate::from_mode(libc::FALLOC_FL_ZERO_RANGE).is_ok_and(|h| h.zero_range));
        for refused in [
            libc::FALLOC_FL_PUNCH_HOLE,
            libc::FALLOC_FL_COLLAPSE_RANGE,
            libc::FALLOC_FL_INSERT_RANGE,
            punch | libc::FALLOC_FL_ZERO_RANGE,
        ] {
            assert_eq!(
                Fallocate::from_mode(refused).map_err(|e| e.errno()),
                Err(libc::EOPNOTSUPP)
            );
        }
    }
}
