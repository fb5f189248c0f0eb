//! Conversions between fuser's types and the file-system logic's.

use std::ffi::OsStr;
use std::time::SystemTime;

use fuser::{Errno as FuseErrno, FileAttr, FileType, INodeNo, Request, TimeOrNow};
use panproto::wire::NodeKind;

use crate::fs::{Attr, FsError, Owner};

/// The kernel's errno for a failed call; faults are logged with their causes.
pub(super) fn errno(e: FsError) -> FuseErrno {
    if e.is_fault() {
        tracing::warn!(errno = e.errno(), error = e.chain(), "call failed");
    } else {
        tracing::debug!(errno = e.errno(), error = e.chain(), "call refused");
    }
    FuseErrno::from_i32(e.errno())
}

pub(super) fn file_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.blocks,
        atime: a.atime,
        mtime: a.mtime,
        ctime: a.ctime,
        crtime: a.ctime,
        kind: file_type(a.kind),
        perm: a.perm,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev,
        blksize: 4096,
        flags: 0,
    }
}

pub(super) fn file_type(k: NodeKind) -> FileType {
    match k {
        NodeKind::File => FileType::RegularFile,
        NodeKind::Dir => FileType::Directory,
        NodeKind::Symlink => FileType::Symlink,
        NodeKind::Fifo => FileType::NamedPipe,
        NodeKind::Socket => FileType::Socket,
        NodeKind::CharDev => FileType::CharDevice,
        NodeKind::BlockDev => FileType::BlockDevice,
    }
}

/// Names are bytes on Linux; pan stores UTF-8 and refuses anything else.
pub(super) fn name_str(name: &OsStr) -> Result<&str, FuseErrno> {
    name.to_str().ok_or(FuseErrno::EINVAL)
}

pub(super) fn owner(req: &Request) -> Owner {
    Owner {
        uid: req.uid(),
        gid: req.gid(),
    }
}

pub(super) fn time(t: Option<TimeOrNow>) -> Option<SystemTime> {
    t.map(|t| match t {
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => SystemTime::now(),
    })
}
