//! Caches of file contents: recent blocks in memory, and working copies of
//! files being written on local disk.

pub mod blocks;
pub mod bufs;
pub mod direct;
pub mod disk;
pub mod records;
pub mod shadow;
pub mod spares;
