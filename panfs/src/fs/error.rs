//! A failed file-system call: the errno the kernel gets, and the chain of causes
//! behind it, which the fuser adapter logs (after mountpoint-s3's `fs/error.rs`).

use crate::remote::RemoteError;
use crate::upload::UploadError;

#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct FsError {
    errno: i32,
    message: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

pub type FsResult<T> = Result<T, FsError>;

impl FsError {
    /// A refusal decided here, with no cause further down.
    pub fn new(errno: i32, message: impl Into<String>) -> Self {
        Self {
            errno,
            message: message.into(),
            source: None,
        }
    }

    /// Reading or writing this machine's disk (a working copy, the journal) failed.
    pub fn local(what: &str, e: std::io::Error) -> Self {
        Self {
            errno: e.raw_os_error().unwrap_or(libc::EIO),
            message: format!("local disk: {what}"),
            source: Some(Box::new(e)),
        }
    }

    pub fn errno(&self) -> i32 {
        self.errno
    }

    /// Whether this is a fault worth a warning (I/O, space) rather than an
    /// answer a program expects now and then (ENOENT, EEXIST, ...).
    pub fn is_fault(&self) -> bool {
        matches!(
            self.errno,
            libc::EIO | libc::ENOSPC | libc::EFBIG | libc::ESTALE | libc::EACCES
        )
    }

    /// The message and every cause, for the log.
    pub fn chain(&self) -> String {
        let mut out = self.message.clone();
        let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(self);
        while let Some(e) = cause {
            out.push_str(": ");
            out.push_str(&e.to_string());
            cause = e.source();
        }
        out
    }
}

impl From<RemoteError> for FsError {
    fn from(e: RemoteError) -> Self {
        Self {
            errno: e.errno(),
            message: "server request".into(),
            source: Some(Box::new(e)),
        }
    }
}

impl From<UploadError> for FsError {
    fn from(e: UploadError) -> Self {
        match e {
            UploadError::Remote(e) => e.into(),
            UploadError::Local(e) => Self::local("reading the working copy", e),
            other => Self {
                errno: libc::EIO,
                message: "upload".into(),
                source: Some(Box::new(other)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use panproto::wire::ErrorCode;

    #[test]
    fn a_local_disk_fault_keeps_its_errno_and_cause() {
        let e = FsError::local("writing", std::io::Error::from_raw_os_error(libc::ENOSPC));
        assert_eq!(e.errno(), libc::ENOSPC);
        assert!(
            e.chain().starts_with("local disk: writing: "),
            "{}",
            e.chain()
        );
        let refused = RemoteError::Refused {
            status: 404,
            code: ErrorCode::NotFound,
            message: "gone".into(),
        };
        let e = FsError::from(refused);
        assert_eq!(e.errno(), libc::ENOENT);
        assert!(!e.is_fault());
        assert!(e.chain().contains("not_found"), "{}", e.chain());
    }
}
