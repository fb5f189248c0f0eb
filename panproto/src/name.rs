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

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("names must be UTF-8")]
    NotUtf8,
    #[error("path too deep")]
    TooDeep,
    #[error("invalid name: {0}")]
    Name(#[from] NameError),
}

/// Decodes one percent-encoded URL path segment into a valid name.
pub fn decode_name(segment: &str) -> Result<String, PathError> {
    let name = percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .map_err(|_| PathError::NotUtf8)?
        .into_owned();
    validate_name(&name)?;
    Ok(name)
}

/// Splits a percent-encoded path (`a/b%20c/d`, a trailing `/` allowed) into
/// valid names, at most `max_depth` of them; the empty path is the top folder.
pub fn parse_path(raw: &str, max_depth: usize) -> Result<Vec<String>, PathError> {
    if raw.is_empty() {
        return Ok(Vec::new());
    }
    let trimmed = raw.strip_suffix('/').unwrap_or(raw);
    if trimmed.split('/').nth(max_depth).is_some() {
        return Err(PathError::TooDeep);
    }
    trimmed.split('/').map(decode_name).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(parse_path("", 8), Ok(vec![]));
        assert_eq!(
            parse_path("a/b%20c/", 8),
            Ok(vec!["a".into(), "b c".into()])
        );
        assert_eq!(
            parse_path("a/%2E%2E/b", 8),
            Err(PathError::Name(NameError::Dot))
        );
        assert_eq!(
            parse_path("a%2Fb", 8),
            Err(PathError::Name(NameError::BadChar))
        );
        assert_eq!(
            parse_path("a//b", 8),
            Err(PathError::Name(NameError::Empty))
        );
        assert_eq!(parse_path("%FF", 8), Err(PathError::NotUtf8));
        assert_eq!(parse_path("a/b/c", 2), Err(PathError::TooDeep));
    }

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
