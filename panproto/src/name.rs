//! The rules for one path component, the same on both sides of the wire.

pub const NAME_MAX: usize = 255;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("name is empty")]
    Empty,
    #[error("name is '.' or '..'")]
    Dot,
    #[error("name contains '/' or NUL")]
    BadChar,
    #[error("name is longer than 255 bytes")]
    TooLong,
}

pub fn validate_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name == "." || name == ".." {
        return Err(NameError::Dot);
    }
    if name.bytes().any(|b| b == b'/' || b == 0) {
        return Err(NameError::BadChar);
    }
    if name.len() > NAME_MAX {
        return Err(NameError::TooLong);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules() {
        assert_eq!(validate_name("a.txt"), Ok(()));
        assert_eq!(validate_name(""), Err(NameError::Empty));
        assert_eq!(validate_name(".."), Err(NameError::Dot));
        assert_eq!(validate_name("a/b"), Err(NameError::BadChar));
        assert_eq!(validate_name("a\0b"), Err(NameError::BadChar));
        assert_eq!(validate_name(&"x".repeat(255)), Ok(()));
        assert_eq!(validate_name(&"x".repeat(256)), Err(NameError::TooLong));
    }
}
