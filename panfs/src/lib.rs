//! panfs: mounts one pan account's drive with FUSE.

pub mod backing;
pub mod cache;
pub mod config;
pub mod fs;
pub mod fuse;
pub mod journal;
pub mod mount;
pub mod ranges;
pub mod remote;
pub mod replica;
pub mod sync;
pub mod upload;
