//! A Merkle tree whose memory grows by 64 bytes per chunk of leaves, not per leaf.
//!
//! The audit role serves proofs for a log that only grows. Holding every subtree hash ([`Tree`])
//! costs 64 bytes a leaf: a gigabyte every sixteen million leaves, without bound over the log's
//! life. [`CompactTree`] keeps only the subtrees of at least one chunk (`2^chunk_bits` leaves)
//! and the leaves after the last complete chunk. The root at the current size needs nothing else.
//! A proof or a past root that reaches inside a complete chunk answers
//! [`ProofError::NotLoaded`]; the caller reads that chunk's leaf hashes from its store, checks them
//! with [`CompactTree::check_chunk`] against the hash the tree was built from, and asks again
//! with the chunk at hand. A proof touches at most a few chunks (the one holding the leaf and
//! those at the sizes' right edges).

use crate::merkle::{Hash, ProofError, Subtrees, Tree};
use std::sync::Arc;

/// The audit role's chunk: 1,024 leaves, so the tree holds 64 bytes per 1,024 leaves (64 MiB for
/// a billion) and a proof reads at most a few thousand leaf hashes.
pub const CHUNK_BITS: u32 = 10;

#[derive(Debug, Clone)]
pub struct CompactTree {
    chunk_bits: u32,
    /// A tree whose leaves are the complete chunks' hashes: its subtree of height `j` at `i` is
    /// this tree's of height `chunk_bits + j` at `i`.
    upper: Tree,
    /// The leaves after the last complete chunk, with their subtree hashes.
    tail: Tree,
}

/// A chunk's leaf hashes differ from those the tree was built from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("leaf hashes {first}..{end} differ from the ones the tree was built from")]
pub struct ChunkMismatch {
    pub first: u64,
    pub end: u64,
}

impl Default for CompactTree {
    fn default() -> Self {
        Self::new(CHUNK_BITS)
    }
}

impl CompactTree {
    /// An empty tree that keeps subtrees of `2^chunk_bits` leaves and taller (`chunk_bits` below 32).
    pub fn new(chunk_bits: u32) -> Self {
        Self { chunk_bits: chunk_bits.min(31), upper: Tree::default(), tail: Tree::default() }
    }

    fn chunk_len(&self) -> u64 {
        1 << self.chunk_bits
    }

    fn complete_chunks(&self) -> u64 {
        self.upper.size()
    }

    pub fn size(&self) -> u64 {
        (self.complete_chunks() << self.chunk_bits) + self.tail.size()
    }

    pub fn push(&mut self, leaf_hash: Hash) {
        self.tail.push(leaf_hash);
        if self.tail.size() < self.chunk_len() {
            return;
        }
        let Some(hash) = self.tail.root(self.chunk_len()) else { return };
        self.tail = Tree::default();
        self.upper.push(hash);
    }

    /// How many hashes the tree holds: about two per chunk, plus up to two per leaf of the
    /// incomplete last chunk.
    pub fn held_hashes(&self) -> u64 {
        self.upper.held_hashes() + self.tail.held_hashes()
    }

    /// The head at the current size, which never reaches inside a complete chunk (so an error
    /// here is a broken invariant, not a missing chunk).
    pub fn root(&self) -> Result<Hash, ProofError> {
        crate::merkle::root_at(&self.view(&|_| None), self.size())
    }

    /// The first leaf and the number of leaves of chunk `chunk`, to read from the store.
    pub fn chunk_span(&self, chunk: u64) -> (u64, u64) {
        (chunk << self.chunk_bits, self.chunk_len())
    }

    /// Builds chunk `chunk` from its leaf hashes, refusing them unless they hash to the chunk's
    /// hash in this tree: a store edited after the tree was loaded cannot change a proof.
    pub fn check_chunk(&self, chunk: u64, hashes: Vec<Hash>) -> Result<Tree, ChunkMismatch> {
        let (first, len) = self.chunk_span(chunk);
        let mismatch = ChunkMismatch { first, end: first + len };
        let expected = self.upper.leaf(chunk);
        let tree = Tree::from_leaf_hashes(hashes);
        match (expected, tree.root(len)) {
            (Some(expected), Some(root)) if tree.size() == len && root == expected => Ok(tree),
            _ => Err(mismatch),
        }
    }

    /// The tree as the proof functions in [`merkle`](crate::merkle) read it, with the complete
    /// chunks that `chunks` has at hand.
    pub fn view<'a>(&'a self, chunks: &'a dyn Fn(u64) -> Option<Arc<Tree>>) -> View<'a> {
        View { tree: self, chunks }
    }
}

/// A [`CompactTree`] with the chunks its caller has loaded; see [`CompactTree::view`].
pub struct View<'a> {
    tree: &'a CompactTree,
    chunks: &'a dyn Fn(u64) -> Option<Arc<Tree>>,
}

impl Subtrees for View<'_> {
    fn size(&self) -> u64 {
        self.tree.size()
    }

    fn subtree(&self, level: u32, index: u64) -> Result<Hash, ProofError> {
        let bits = self.tree.chunk_bits;
        let missing = ProofError::OutOfRange { index, size: self.tree.size() };
        if level >= bits {
            return self.tree.upper.subtree(level - bits, index).map_err(|_| missing);
        }
        let per_chunk = bits - level;
        let chunk = index >> per_chunk;
        let within = index & ((1 << per_chunk) - 1);
        let complete = self.tree.complete_chunks();
        if chunk == complete {
            return self.tree.tail.subtree(level, within);
        }
        if chunk > complete {
            return Err(missing);
        }
        (self.chunks)(chunk).ok_or(ProofError::NotLoaded { chunk })?.subtree(level, within)
    }
}

#[cfg(test)]
#[path = "compact_tests.rs"]
mod tests;
