//! Extended attributes, stored on the server per node. A node's attributes say
//! how many it has, so the common "none" (every write asks for
//! `security.capability`) is answered from the attribute cache without a request.

use bytes::Bytes;
use panproto::wire::XattrMode;
use panproto::{XattrNameError, validate_xattr_name};

use super::{FsError, FsResult, PanFs};

/// The errno ext4 gives for a name it cannot store.
fn check_xattr_name(name: &str) -> FsResult<()> {
    validate_xattr_name(name).map_err(|e| match e {
        XattrNameError::Unsupported => FsError::new(libc::ENOTSUP, "namespace not supported"),
        XattrNameError::BadLength => FsError::new(libc::ERANGE, "bad attribute name length"),
    })
}

/// `setxattr`'s flags.
fn xattr_mode(flags: i32) -> FsResult<XattrMode> {
    match flags {
        0 => Ok(XattrMode::Set),
        libc::XATTR_CREATE => Ok(XattrMode::Create),
        libc::XATTR_REPLACE => Ok(XattrMode::Replace),
        _ => Err(FsError::new(libc::EINVAL, "bad setxattr flags")),
    }
}

impl PanFs {
    pub fn getxattr(&self, ino: u64, name: &str) -> FsResult<Bytes> {
        check_xattr_name(name)?;
        let ino = self.to_server(ino);
        if self.node(ino, false)?.xattrs == 0 {
            return Err(FsError::new(libc::ENODATA, "no such attribute (cached)"));
        }
        Ok(self.block_on(self.remote.xattr(ino, name))?)
    }

    /// The names, each followed by a NUL, as `listxattr` returns them.
    pub fn listxattr(&self, ino: u64) -> FsResult<Vec<u8>> {
        let ino = self.to_server(ino);
        if self.node(ino, false)?.xattrs == 0 {
            return Ok(Vec::new());
        }
        let mut list = Vec::new();
        for name in self.block_on(self.remote.xattr_names(ino))? {
            list.extend_from_slice(name.as_bytes());
            list.push(0);
        }
        Ok(list)
    }

    pub fn setxattr(&self, ino: u64, name: &str, value: &[u8], flags: i32) -> FsResult<()> {
        check_xattr_name(name)?;
        let mode = xattr_mode(flags)?;
        let ino = self.to_server(ino);
        // Not journaled: the server must have the node first.
        self.settle_node(ino)?;
        let ticket = self.ticket();
        let node = self.block_on(self.remote.set_xattr(ino, name, value, mode))?;
        self.remember_without_content(&node, ticket);
        Ok(())
    }

    pub fn removexattr(&self, ino: u64, name: &str) -> FsResult<()> {
        check_xattr_name(name)?;
        let ino = self.to_server(ino);
        self.settle_node(ino)?;
        let ticket = self.ticket();
        let node = self.block_on(self.remote.remove_xattr(ino, name))?;
        self.remember_without_content(&node, ticket);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_flags_map_to_ext4_errnos() {
        let errno = |e: FsError| e.errno();
        assert_eq!(check_xattr_name("user.x").map_err(errno), Ok(()));
        assert_eq!(check_xattr_name("os2.x").map_err(errno), Err(libc::ENOTSUP));
        assert_eq!(check_xattr_name("user.").map_err(errno), Err(libc::ERANGE));
        assert_eq!(xattr_mode(0).map_err(errno), Ok(XattrMode::Set));
        assert_eq!(
            xattr_mode(libc::XATTR_CREATE).map_err(errno),
            Ok(XattrMode::Create)
        );
        assert_eq!(
            xattr_mode(libc::XATTR_REPLACE).map_err(errno),
            Ok(XattrMode::Replace)
        );
        assert_eq!(
            xattr_mode(libc::XATTR_CREATE | libc::XATTR_REPLACE).map_err(errno),
            Err(libc::EINVAL)
        );
    }
}
