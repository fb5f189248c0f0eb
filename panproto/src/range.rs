//! The HTTP `Range` header, one byte range (`bytes=a-b`, `bytes=a-`, `bytes=-n`).

/// What to send: the whole body, a satisfiable part [start, end), or a 416.
#[derive(Debug, PartialEq, Eq)]
pub enum RangeRequest {
    Whole,
    Part { start: u64, end: u64 },
    Unsatisfiable,
}

/// Interprets a Range header against a body of `size` bytes. Anything that is not
/// a single byte range is ignored (the whole body is sent), as RFC 9110 allows.
pub fn parse_range(header: Option<&str>, size: u64) -> RangeRequest {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return RangeRequest::Whole;
    };
    if spec.contains(',') {
        return RangeRequest::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeRequest::Whole;
    };
    let number = |s: &str| -> Option<u64> {
        let s = s.trim();
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            None
        } else {
            s.parse().ok()
        }
    };
    match (first.trim().is_empty(), last.trim().is_empty()) {
        (true, true) => RangeRequest::Whole,
        (true, false) => match number(last) {
            Some(0) => RangeRequest::Unsatisfiable,
            Some(_) if size == 0 => RangeRequest::Unsatisfiable,
            Some(n) => RangeRequest::Part {
                start: size.saturating_sub(n),
                end: size,
            },
            None => RangeRequest::Whole,
        },
        (false, open_end) => {
            let Some(start) = number(first) else {
                return RangeRequest::Whole;
            };
            let end = if open_end {
                Some(size)
            } else {
                match number(last) {
                    Some(l) if l >= start => Some(l.saturating_add(1).min(size)),
                    Some(_) => return RangeRequest::Whole,
                    None => return RangeRequest::Whole,
                }
            };
            match end {
                Some(end) if start < size => RangeRequest::Part { start, end },
                _ => RangeRequest::Unsatisfiable,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::RangeRequest::*;
    use super::*;

    #[test]
    fn forms() {
        assert_eq!(parse_range(None, 10), Whole);
        assert_eq!(
            parse_range(Some("bytes=0-4"), 10),
            Part { start: 0, end: 5 }
        );
        assert_eq!(
            parse_range(Some("bytes=5-"), 10),
            Part { start: 5, end: 10 }
        );
        assert_eq!(
            parse_range(Some("bytes=-3"), 10),
            Part { start: 7, end: 10 }
        );
        assert_eq!(
            parse_range(Some("bytes=-30"), 10),
            Part { start: 0, end: 10 }
        );
        assert_eq!(
            parse_range(Some("bytes=8-100"), 10),
            Part { start: 8, end: 10 }
        );
        assert_eq!(parse_range(Some("bytes=10-"), 10), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=-0"), 10), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=0-0"), 0), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=5-2"), 10), Whole);
        assert_eq!(parse_range(Some("bytes=0-1,3-4"), 10), Whole);
        assert_eq!(parse_range(Some("items=0-1"), 10), Whole);
        assert_eq!(parse_range(Some("bytes=x-y"), 10), Whole);
        assert_eq!(
            parse_range(Some("bytes=99999999999999999999999-"), 10),
            Whole
        );
    }
}
