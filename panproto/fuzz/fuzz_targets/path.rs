//! Any URL path: an accepted one splits into valid names only (no '/', NUL,
//! '.', '..', nothing over 255 bytes), so it can never step outside the tree.
#![no_main]

use libfuzzer_sys::fuzz_target;
use panproto::{NAME_MAX, parse_path};

fuzz_target!(|raw: &str| {
    if let Ok(names) = parse_path(raw, 16) {
        assert!(names.len() <= 16);
        for name in &names {
            assert!(!name.is_empty() && name != "." && name != "..", "{raw:?} gave {name:?}");
            assert!(!name.contains('/') && !name.contains('\0'), "{raw:?} gave {name:?}");
            assert!(name.len() <= NAME_MAX);
        }
    }
});
