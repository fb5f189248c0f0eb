//! The wire types of batches (`POST /api/v1/batch`) and of inode numbers
//! reserved for a client (`POST /api/v1/inodes`).

use serde::{Deserialize, Serialize};

use crate::wire::{
    ChunkRef, CreateRequest, ErrorBody, Node, NodeKind, RenameMode, SetAttrRequest, XattrMode,
    present,
};

/// Operations one batch may carry; more answer 413.
pub const BATCH_OPS_MAX: usize = 1000;
/// Bytes one batch request may carry (inline contents included); more answer 413.
pub const BATCH_BYTES_MAX: u64 = 16 << 20;
/// Inode numbers one reservation may ask for.
pub const RESERVE_MAX: i64 = 100_000;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReserveRequest {
    pub count: i64,
}

/// Numbers `first` to `first + count - 1`, for this user's new nodes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reserved {
    pub first: i64,
    pub count: i64,
}

/// Where minted inode numbers start. A client that has used up its reserved
/// numbers while it cannot reach the server mints its own: each block it
/// reserved (first number `first`) licenses `1 << MINT_BITS` more,
/// `MINTED_FIRST + (first << MINT_BITS) + n`. The server never hands out
/// numbers this high, takes a minted number at a create as it takes a
/// reserved one (from the user who reserved its block), and so the node
/// keeps it for good. Everything stays below 2^53, which JavaScript (the web
/// page) still counts exactly.
pub const MINTED_FIRST: i64 = 1 << 52;
/// Numbers each reserved block licenses to mint.
pub const MINT_BITS: u32 = 20;

/// The `n`-th number minted from the block reserved at `first`, if there is one.
pub fn mint(first: i64, n: i64) -> Option<i64> {
    let fits = (0..1 << (52 - MINT_BITS)).contains(&first) && (0..1 << MINT_BITS).contains(&n);
    fits.then(|| MINTED_FIRST + (first << MINT_BITS) + n)
}

/// The first number of the reserved block a minted number came from; None
/// for a number that was not minted.
pub fn minted_from(ino: i64) -> Option<i64> {
    (MINTED_FIRST..MINTED_FIRST << 1)
        .contains(&ino)
        .then(|| (ino - MINTED_FIRST) >> MINT_BITS)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BatchRequest {
    pub ops: Vec<BatchOp>,
    /// When each operation was made (ns since the epoch, the client's clock),
    /// one per operation, or none: the times the operation sets, so a change
    /// journaled offline keeps its time. The server never takes a later time
    /// than its own clock.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub at: Vec<i64>,
}

/// One operation; each answers as its own request would.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum BatchOp {
    /// `ino`: a number reserved for this user; absent, the server numbers it.
    Create {
        parent: i64,
        name: String,
        kind: NodeKind,
        mode: u32,
        #[serde(default)]
        uid: u32,
        #[serde(default)]
        gid: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        target: Option<String>,
        #[serde(default)]
        rdev: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ino: Option<i64>,
    },
    Link {
        ino: i64,
        parent: i64,
        name: String,
    },
    /// `if_ino`: only while the name still leads to that node (else `conflict`).
    Remove {
        parent: i64,
        name: String,
        #[serde(default)]
        dir: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        if_ino: Option<i64>,
    },
    /// `if_ino`: only while the source name still leads to that node.
    Rename {
        parent: i64,
        name: String,
        new_parent: i64,
        new_name: String,
        #[serde(default)]
        mode: RenameMode,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        if_ino: Option<i64>,
        /// What `new_name` led to when the client renamed: a node's number,
        /// or 0 for a free name. A rename over anything else (a node made or
        /// moved there elsewhere) is refused with `exists`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        if_target: Option<i64>,
    },
    /// The size is set with `set_content`.
    SetAttr {
        ino: i64,
        #[serde(default)]
        mode: Option<u32>,
        #[serde(default)]
        uid: Option<u32>,
        #[serde(default)]
        gid: Option<u32>,
        #[serde(default)]
        atime: Option<i64>,
        #[serde(default)]
        mtime: Option<i64>,
    },
    SetXattr {
        ino: i64,
        name: String,
        /// Base64.
        value: String,
        #[serde(default)]
        mode: XattrMode,
    },
    RemoveXattr {
        ino: i64,
        name: String,
    },
    /// New content: `data` (base64, small files) or `chunks` (each already on
    /// the server and this user's, as after an upload session). `if_content`
    /// as for a commit: the content the file must still hold, `null` for none.
    SetContent {
        ino: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        data: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        chunks: Option<Vec<ChunkRef>>,
        #[serde(default)]
        mtime: Option<i64>,
        #[serde(
            default,
            deserialize_with = "present",
            skip_serializing_if = "Option::is_none"
        )]
        if_content: Option<Option<String>>,
    },
}

impl BatchOp {
    /// A creation, as the single route's request and an optional reserved number.
    pub fn create(parent: i64, req: CreateRequest, ino: Option<i64>) -> Self {
        let CreateRequest {
            name,
            kind,
            mode,
            uid,
            gid,
            target,
            rdev,
        } = req;
        BatchOp::Create {
            parent,
            name,
            kind,
            mode,
            uid,
            gid,
            target,
            rdev,
            ino,
        }
    }

    /// A creation's parent, request and reserved number (None for other operations).
    pub fn as_create(&self) -> Option<(i64, CreateRequest, Option<i64>)> {
        let BatchOp::Create {
            parent,
            name,
            kind,
            mode,
            uid,
            gid,
            target,
            rdev,
            ino,
        } = self
        else {
            return None;
        };
        let req = CreateRequest {
            name: name.clone(),
            kind: *kind,
            mode: *mode,
            uid: *uid,
            gid: *gid,
            target: target.clone(),
            rdev: *rdev,
        };
        Some((*parent, req, *ino))
    }

    /// An attribute change's node and request (the size is not part of it).
    pub fn as_set_attr(&self) -> Option<(i64, SetAttrRequest)> {
        let BatchOp::SetAttr {
            ino,
            mode,
            uid,
            gid,
            atime,
            mtime,
        } = self
        else {
            return None;
        };
        let req = SetAttrRequest {
            mode: *mode,
            uid: *uid,
            gid: *gid,
            size: None,
            atime: *atime,
            mtime: *mtime,
        };
        Some((*ino, req))
    }
}

/// One operation's outcome: the node it made or changed, or its error.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct OpResult {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<Node>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BatchResponse {
    /// The user's change sequence number after the batch.
    pub seq: i64,
    /// One per operation, in order.
    pub results: Vec<OpResult>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minted_number_names_its_block_and_stays_exact_in_javascript() {
        let ino = mint(4097, 5).expect("mint");
        assert_eq!(minted_from(ino), Some(4097));
        assert!(ino < 1 << 53);
        assert_eq!(mint(4097, 1 << MINT_BITS), None, "past the block's licence");
        assert_eq!(mint(1 << 32, 0), None, "a block too high to mint from");
        let highest = mint((1 << 32) - 1, (1 << MINT_BITS) - 1).expect("the highest");
        assert_eq!(highest, (1 << 53) - 1);
        assert_eq!(minted_from(4097), None, "a reserved number");
        assert_eq!(minted_from(1 << 53), None);
    }
}
