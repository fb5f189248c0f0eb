//! The fuser adapter: turns kernel requests into calls on `PanFs` and its
//! results into replies. No file-system logic lives here.

use std::ffi::OsStr;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use fuser::{
    AccessFlags, CopyFileRangeFlags, Errno as FuseErrno, FileHandle, Filesystem, FopenFlags,
    Generation, INodeNo, IoctlFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyIoctl,
    ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use panproto::wire::RenameMode;

use crate::backing::Backings;
use crate::fs::{Attr, AttrChange, Fallocate, FsError, KernelCache, PanFs, StatFs};
use convert::{errno, file_attr, file_type, name_str, owner, time};

mod convert;

pub struct FuseAdapter {
    pub fs: Arc<PanFs>,
    pub backings: Backings,
}

/// The kernel's caches through fuser's notifier. A notification about something
/// the kernel does not hold fails harmlessly (ENOENT).
pub struct Notifications(pub fuser::Notifier);

impl KernelCache for Notifications {
    fn forget_entry(&self, parent: u64, name: &str) {
        let _ = self.0.inval_entry(INodeNo(parent), OsStr::new(name));
    }

    fn forget_attrs(&self, ino: u64) {
        // A negative offset: attributes only, the cached pages stay.
        let _ = self.0.inval_inode(INodeNo(ino), -1, 0);
    }

    fn forget_data(&self, ino: u64) {
        let _ = self.0.inval_inode(INodeNo(ino), 0, 0);
    }
}

impl FuseAdapter {
    fn entry(&self, reply: ReplyEntry, result: Result<Attr, FsError>) {
        match result {
            Ok(a) => reply.entry(&self.fs.ttls_for(&a).1, &file_attr(&a), Generation(0)),
            Err(e) => reply.error(errno(e)),
        }
    }
}

macro_rules! name_or_reply {
    ($name:expr, $reply:expr) => {
        match name_str($name) {
            Ok(n) => n,
            Err(e) => return $reply.error(e),
        }
    };
}

fn empty(reply: ReplyEmpty, result: Result<(), FsError>) {
    match result {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(errno(e)),
    }
}

/// An attribute value or name list: its size when asked with 0, ERANGE when it
/// does not fit the caller's buffer.
fn xattr_reply(reply: ReplyXattr, size: u32, result: Result<impl AsRef<[u8]>, FsError>) {
    match result {
        Ok(bytes) => {
            let bytes = bytes.as_ref();
            if size == 0 {
                reply.size(bytes.len() as u32)
            } else if bytes.len() > size as usize {
                reply.error(FuseErrno::from_i32(libc::ERANGE))
            } else {
                reply.data(bytes)
            }
        }
        Err(e) => reply.error(errno(e)),
    }
}

impl Filesystem for FuseAdapter {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.set_max_write(1 << 20);
        let _ = config.set_max_readahead(1 << 20);
        // Listings carry attributes, so `ls -l` needs no lookup per entry.
        if config
            .add_capabilities(fuser::InitFlags::FUSE_DO_READDIRPLUS)
            .is_err()
        {
            tracing::info!("the kernel has no readdirplus: listings take a lookup per entry");
        }
        // Passthrough backing files may sit on a stacked file system (an
        // overlay): two levels, the most the kernel allows.
        let passthrough = config
            .add_capabilities(fuser::InitFlags::FUSE_PASSTHROUGH)
            .is_ok()
            && config.set_max_stack_depth(2).is_ok();
        self.fs
            .set_passthrough(passthrough, "the kernel has no FUSE passthrough");
        Ok(())
    }

    fn destroy(&mut self) {
        let failed = self.fs.flush_all();
        if failed > 0 {
            tracing::error!(
                failed,
                "files still have unsent writes at unmount; they stay journaled"
            );
        }
        self.fs.close_caches();
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let name = name_or_reply!(name, reply);
        self.entry(reply, self.fs.lookup(parent.0, name));
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.fs.getattr(ino.0) {
            Ok(a) => reply.attr(&self.fs.ttls_for(&a).0, &file_attr(&a)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        match self.fs.setattr(
            ino.0,
            AttrChange {
                mode,
                uid,
                gid,
                size,
                atime: time(atime),
                mtime: time(mtime),
            },
        ) {
            Ok(a) => reply.attr(&self.fs.ttls_for(&a).0, &file_attr(&a)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.fs.readlink(ino.0) {
            Ok(t) => reply.data(t.as_bytes()),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let name = name_or_reply!(name, reply);
        self.entry(
            reply,
            self.fs.mkdir(parent.0, name, mode & !umask, owner(req)),
        );
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = name_or_reply!(name, reply);
        empty(reply, self.fs.unlink(parent.0, name, false));
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = name_or_reply!(name, reply);
        empty(reply, self.fs.unlink(parent.0, name, true));
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let name = name_or_reply!(link_name, reply);
        let target = name_or_reply!(target.as_os_str(), reply);
        self.entry(reply, self.fs.symlink(parent.0, name, target, owner(req)));
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let name = name_or_reply!(name, reply);
        let newname = name_or_reply!(newname, reply);
        let mode = if flags.contains(RenameFlags::RENAME_EXCHANGE) {
            RenameMode::Exchange
        } else if flags.contains(RenameFlags::RENAME_NOREPLACE) {
            RenameMode::NoReplace
        } else if flags.is_empty() {
            RenameMode::Replace
        } else {
            return reply.error(FuseErrno::EINVAL);
        };
        empty(
            reply,
            self.fs.rename(parent.0, name, newparent.0, newname, mode),
        );
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let name = name_or_reply!(newname, reply);
        self.entry(reply, self.fs.link(ino.0, newparent.0, name));
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match self.fs.open(ino.0, flags.0) {
            Ok((fh, io)) => {
                let read_only = flags.0 & libc::O_ACCMODE == libc::O_RDONLY;
                self.backings
                    .reply_open(&self.fs, (ino.0, fh), read_only, io, reply)
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.fs.read(fh.0, offset, size) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.fs.write(fh.0, offset, data) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        empty(reply, self.fs.flush(fh.0));
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.backings.release(fh.0);
        self.fs.release(fh.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        empty(reply, self.fs.fsync(fh.0));
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.fs.opendir(ino.0) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        match self.fs.readdir(ino.0, fh.0, offset) {
            Ok(entries) => {
                for (next, name, attr) in entries {
                    if reply.add(INodeNo(attr.ino), next, file_type(attr.kind), name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        match self.fs.readdir(ino.0, fh.0, offset) {
            Ok(entries) => {
                for (next, name, attr) in entries {
                    if reply.add(
                        INodeNo(attr.ino),
                        next,
                        name,
                        &self.fs.ttls_for(&attr).1,
                        &file_attr(&attr),
                        Generation(0),
                    ) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.fs.releasedir(fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        empty(reply, self.fs.fsync_dir(ino.0));
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        const BSIZE: u32 = StatFs::BLOCK as u32;
        match self.fs.statfs() {
            Ok(s) => reply.statfs(
                s.blocks,
                s.free_blocks,
                s.free_blocks,
                s.files,
                s.free_files,
                BSIZE,
                255,
                BSIZE,
            ),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let name = name_or_reply!(name, reply);
        empty(reply, self.fs.setxattr(ino.0, name, value, flags));
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let name = name_or_reply!(name, reply);
        xattr_reply(reply, size, self.fs.getxattr(ino.0, name));
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        xattr_reply(reply, size, self.fs.listxattr(ino.0));
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = name_or_reply!(name, reply);
        empty(reply, self.fs.removexattr(ino.0, name));
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let name = name_or_reply!(name, reply);
        let mode = (mode & libc::S_IFMT) | (mode & 0o7777 & !umask);
        self.entry(reply, self.fs.mknod(parent.0, name, mode, rdev, owner(req)));
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let result =
            Fallocate::from_mode(mode).and_then(|how| self.fs.fallocate(fh.0, offset, length, how));
        empty(reply, result);
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        _ino_in: INodeNo,
        fh_in: FileHandle,
        offset_in: u64,
        _ino_out: INodeNo,
        fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        _flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        match self
            .fs
            .copy_range(fh_in.0, offset_in, fh_out.0, offset_out, len)
        {
            // `copy_range` copies at most what its answer can report.
            Ok(copied) => reply.written(copied as u32),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        // Permissions are checked by the kernel (default_permissions).
        reply.ok();
    }

    /// No file here takes a device's requests, as a regular file on ext4
    /// takes none of a terminal's: the kernel sends one for every `isatty`
    /// (Python's on each open), and fuser's default logged a warning each time.
    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: ReplyIoctl,
    ) {
        reply.error(FuseErrno::ENOTTY);
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let name = name_or_reply!(name, reply);
        match self
            .fs
            .create(parent.0, name, mode & !umask, owner(req), flags)
        {
            Ok((a, fh, io)) => {
                let ttl = self.fs.ttls_for(&a).1;
                let attr = file_attr(&a);
                self.backings
                    .reply_create(&self.fs, (&ttl, &attr), fh, io, reply)
            }
            Err(e) => reply.error(errno(e)),
        }
    }
}
