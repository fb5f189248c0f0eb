//! Any Range header against any size: never a panic, and a part always lies
//! inside the body and is not empty.
#![no_main]

use libfuzzer_sys::fuzz_target;
use panproto::{RangeRequest, parse_range};

fuzz_target!(|input: (&str, u64)| {
    let (header, size) = input;
    if let RangeRequest::Part { start, end } = parse_range(Some(header), size) {
        assert!(start < end, "empty part {start}..{end} of {header:?}");
        assert!(end <= size, "part {start}..{end} beyond {size} for {header:?}");
    }
});
