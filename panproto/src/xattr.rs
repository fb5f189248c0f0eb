//! Extended attributes: which names are stored and how large they may be. The
//! server enforces these limits and the client maps them to the errno ext4 gives.

/// Longest attribute name, namespace prefix included (Linux's `XATTR_NAME_MAX`).
pub const XATTR_NAME_MAX: usize = 255;
/// Largest single value (Linux's `XATTR_SIZE_MAX`; the kernel refuses more with E2BIG).
pub const XATTR_VALUE_MAX: usize = 65_536;
/// Names plus values of one node together: a bound on what one inode carries
/// (ext4 holds about one block; this holds more, and says ENOSPC beyond it).
pub const XATTR_NODE_MAX: usize = 256 * 1024;

/// The namespaces stored. `system.` (ACLs) is not: POSIX ACLs are not supported.
/// `trusted.` is root's only: the kernel checks that before the file system is asked.
pub const XATTR_NAMESPACES: [&str; 3] = ["user.", "trusted.", "security."];

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum XattrNameError {
    #[error("an attribute name is 1 to 255 bytes without NUL")]
    BadLength,
    #[error("only the user., trusted. and security. namespaces are supported")]
    Unsupported,
}

/// Checks an attribute name: a supported namespace, a non-empty rest, at most
/// `XATTR_NAME_MAX` bytes, no NUL.
pub fn validate_xattr_name(name: &str) -> Result<(), XattrNameError> {
    if name.is_empty() || name.len() > XATTR_NAME_MAX || name.contains('\0') {
        return Err(XattrNameError::BadLength);
    }
    match XATTR_NAMESPACES.iter().find(|ns| name.starts_with(*ns)) {
        Some(ns) if name.len() > ns.len() => Ok(()),
        Some(_) => Err(XattrNameError::BadLength),
        None => Err(XattrNameError::Unsupported),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_need_a_known_namespace_and_a_rest() {
        assert_eq!(validate_xattr_name("user.a"), Ok(()));
        assert_eq!(validate_xattr_name("security.selinux"), Ok(()));
        assert_eq!(validate_xattr_name("trusted.x"), Ok(()));
        assert_eq!(
            validate_xattr_name("system.posix_acl_access"),
            Err(XattrNameError::Unsupported)
        );
        assert_eq!(validate_xattr_name("foo"), Err(XattrNameError::Unsupported));
        assert_eq!(validate_xattr_name("user."), Err(XattrNameError::BadLength));
        assert_eq!(validate_xattr_name(""), Err(XattrNameError::BadLength));
        let long = format!("user.{}", "a".repeat(251));
        assert_eq!(validate_xattr_name(&long), Err(XattrNameError::BadLength));
        assert_eq!(validate_xattr_name(&long[..255]), Ok(()));
        assert_eq!(
            validate_xattr_name("user.a\0b"),
            Err(XattrNameError::BadLength)
        );
    }
}
