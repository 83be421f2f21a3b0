//! The RFC 6962 / RFC 9162 Merkle tree: tree heads, inclusion and consistency proofs, and their
//! verification.
//!
//! The recursion reads complete (perfect, aligned) subtree hashes through [`Subtrees`], so the hash
//! of any range it asks for takes O(log n) lookups, and a proof or a root at any past size costs
//! O(log n). [`Tree`] keeps every such hash in memory; [`Frontier`] keeps only the O(log n) right
//! edge, for verifying a log as a stream.

use sha2::{Digest, Sha256};

pub type Hash = [u8; 32];

/// The root of the empty tree: SHA-256 of the empty string.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// `SHA-256(0x00 || leaf)`.
pub fn leaf_hash(leaf: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(leaf);
    h.finalize().into()
}

/// `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The largest power of two strictly smaller than `n` (n >= 2).
fn split(n: u64) -> u64 {
    1 << (63 - (n - 1).leading_zeros())
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("tree size {size} does not include index {index}")]
    OutOfRange { index: u64, size: u64 },
    #[error("proof has the wrong length")]
    Length,
    #[error("proof does not lead to the expected root")]
    Mismatch,
    /// The tree needs the leaf hashes of chunk `chunk` (see
    /// [`CompactTree`](crate::compact::CompactTree)) to answer.
    #[error("the leaf hashes of chunk {chunk} are not loaded")]
    NotLoaded { chunk: u64 },
}

/// Where the RFC recursion reads the hash of a complete, aligned subtree: `level` is its height
/// (it covers `2^level` leaves) and `index` its place among the subtrees of that height.
///
/// [`Tree`] holds every such hash; [`CompactTree`](crate::compact::CompactTree) holds only the
/// tall ones and answers [`ProofError::NotLoaded`] for a chunk of leaf hashes it must be given.
pub trait Subtrees {
    /// How many leaves the tree holds.
    fn size(&self) -> u64;
    /// The hash of leaves `index * 2^level .. (index + 1) * 2^level`, which the tree holds whole.
    fn subtree(&self, level: u32, index: u64) -> Result<Hash, ProofError>;
}

/// MTH(D[lo:hi]) for the ranges the RFC recursion produces: O(log n) subtree lookups.
fn range(tree: &(impl Subtrees + ?Sized), lo: u64, hi: u64) -> Result<Hash, ProofError> {
    let n = hi - lo;
    if n.is_power_of_two() && lo.is_multiple_of(n) {
        return tree.subtree(n.trailing_zeros(), lo / n);
    }
    let k = split(n);
    Ok(node_hash(&range(tree, lo, lo + k)?, &range(tree, lo + k, hi)?))
}

/// The tree head at `size`, any size up to the tree's own.
pub fn root_at(tree: &(impl Subtrees + ?Sized), size: u64) -> Result<Hash, ProofError> {
    match size {
        0 => Ok(empty_root()),
        s if s <= tree.size() => range(tree, 0, s),
        _ => Err(ProofError::OutOfRange { index: size, size: tree.size() }),
    }
}

/// Inclusion proof of leaf `index` in the tree of `size` leaves.
pub fn inclusion_proof(
    tree: &(impl Subtrees + ?Sized),
    index: u64,
    size: u64,
) -> Result<Vec<Hash>, ProofError> {
    if index >= size || size > tree.size() {
        return Err(ProofError::OutOfRange { index, size });
    }
    let mut proof = Vec::new();
    path(tree, index, 0, size, &mut proof)?;
    Ok(proof)
}

fn path(
    tree: &(impl Subtrees + ?Sized),
    m: u64,
    lo: u64,
    hi: u64,
    out: &mut Vec<Hash>,
) -> Result<(), ProofError> {
    let n = hi - lo;
    if n == 1 {
        return Ok(());
    }
    let k = split(n);
    if m < k {
        path(tree, m, lo, lo + k, out)?;
        out.push(range(tree, lo + k, hi)?);
    } else {
        path(tree, m - k, lo + k, hi, out)?;
        out.push(range(tree, lo, lo + k)?);
    }
    Ok(())
}

/// Consistency proof from the tree of `first` leaves to the tree of `second` leaves.
pub fn consistency_proof(
    tree: &(impl Subtrees + ?Sized),
    first: u64,
    second: u64,
) -> Result<Vec<Hash>, ProofError> {
    if first > second || second > tree.size() {
        return Err(ProofError::OutOfRange { index: first, size: second });
    }
    let mut proof = Vec::new();
    if first > 0 && first < second {
        subproof(tree, first, 0, second, true, &mut proof)?;
    }
    Ok(proof)
}

fn subproof(
    tree: &(impl Subtrees + ?Sized),
    m: u64,
    lo: u64,
    hi: u64,
    whole: bool,
    out: &mut Vec<Hash>,
) -> Result<(), ProofError> {
    let n = hi - lo;
    if m == n {
        if !whole {
            out.push(range(tree, lo, hi)?);
        }
        return Ok(());
    }
    let k = split(n);
    if m <= k {
        subproof(tree, m, lo, lo + k, whole, out)?;
        out.push(range(tree, lo + k, hi)?);
    } else {
        subproof(tree, m - k, lo + k, hi, false, out)?;
        out.push(range(tree, lo, lo + k)?);
    }
    Ok(())
}

/// A Merkle tree over leaf hashes held whole in memory, with every complete subtree's hash kept:
/// 64 bytes a leaf. The audit role holds a [`CompactTree`](crate::compact::CompactTree) instead;
/// this one serves tools, tests and the compact tree's own chunks.
#[derive(Debug, Default, Clone)]
pub struct Tree {
    /// `levels[l][i]` is the hash of leaves `i * 2^l .. (i + 1) * 2^l`.
    levels: Vec<Vec<Hash>>,
}

impl Subtrees for Tree {
    fn size(&self) -> u64 {
        Tree::size(self)
    }

    fn subtree(&self, level: u32, index: u64) -> Result<Hash, ProofError> {
        self.levels
            .get(level as usize)
            .and_then(|l| l.get(usize::try_from(index).ok()?))
            .copied()
            .ok_or(ProofError::OutOfRange { index, size: self.size() })
    }
}

impl Tree {
    pub fn from_leaf_hashes(hashes: impl IntoIterator<Item = Hash>) -> Self {
        let mut tree = Self::default();
        for h in hashes {
            tree.push(h);
        }
        tree
    }

    pub fn size(&self) -> u64 {
        self.levels.first().map_or(0, |l| l.len() as u64)
    }

    pub fn push(&mut self, leaf_hash: Hash) {
        let mut hash = leaf_hash;
        let mut level = 0;
        loop {
            if self.levels.len() == level {
                self.levels.push(Vec::new());
            }
            self.levels[level].push(hash);
            let n = self.levels[level].len();
            if !n.is_multiple_of(2) {
                return;
            }
            hash = node_hash(&self.levels[level][n - 2], &self.levels[level][n - 1]);
            level += 1;
        }
    }

    /// How many hashes the tree holds: every complete subtree's.
    pub fn held_hashes(&self) -> u64 {
        self.levels.iter().map(|l| l.len() as u64).sum()
    }

    pub fn leaf(&self, index: u64) -> Option<Hash> {
        self.levels.first().and_then(|l| l.get(index as usize)).copied()
    }

    /// The tree head at `size` (any size up to the current one).
    pub fn root(&self, size: u64) -> Option<Hash> {
        root_at(self, size).ok()
    }

    /// Inclusion proof of leaf `index` in the tree of `size` leaves.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, ProofError> {
        inclusion_proof(self, index, size)
    }

    /// Consistency proof from the tree of `first` leaves to the tree of `second` leaves.
    pub fn consistency_proof(&self, first: u64, second: u64) -> Result<Vec<Hash>, ProofError> {
        consistency_proof(self, first, second)
    }
}

/// RFC 9162 section 2.1.3.2.
pub fn verify_inclusion(
    index: u64,
    size: u64,
    leaf: &Hash,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::OutOfRange { index, size });
    }
    let (mut f, mut s) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if s == 0 {
            return Err(ProofError::Length);
        }
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return Err(ProofError::Length);
    }
    if r == *root { Ok(()) } else { Err(ProofError::Mismatch) }
}

/// RFC 9162 section 2.1.4.2.
pub fn verify_consistency(
    first: u64,
    second: u64,
    first_root: &Hash,
    second_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if first > second {
        return Err(ProofError::OutOfRange { index: first, size: second });
    }
    if first == second {
        return if !proof.is_empty() {
            Err(ProofError::Length)
        } else if first_root == second_root {
            Ok(())
        } else {
            Err(ProofError::Mismatch)
        };
    }
    if first == 0 {
        return if proof.is_empty() { Ok(()) } else { Err(ProofError::Length) };
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if first.is_power_of_two() {
        path.push(*first_root);
    }
    path.extend_from_slice(proof);
    let Some((head, rest)) = path.split_first() else {
        return Err(ProofError::Length);
    };
    let (mut f, mut s) = (first - 1, second - 1);
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    let (mut fr, mut sr) = (*head, *head);
    for c in rest {
        if s == 0 {
            return Err(ProofError::Length);
        }
        if f & 1 == 1 || f == s {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return Err(ProofError::Length);
    }
    if fr == *first_root && sr == *second_root { Ok(()) } else { Err(ProofError::Mismatch) }
}

/// The right edge of a growing tree: O(log n) hashes, enough to give the root at the current size.
#[derive(Debug, Default, Clone)]
pub struct Frontier {
    /// (height, hash) of the complete subtrees covering the leaves so far, left to right.
    stack: Vec<(u32, Hash)>,
    size: u64,
}

impl Frontier {
    pub fn push(&mut self, leaf_hash: Hash) {
        let mut entry = (0u32, leaf_hash);
        while let Some(&(height, left)) = self.stack.last() {
            if height != entry.0 {
                break;
            }
            self.stack.pop();
            entry = (height + 1, node_hash(&left, &entry.1));
        }
        self.stack.push(entry);
        self.size += 1;
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn root(&self) -> Hash {
        let mut iter = self.stack.iter().rev();
        let Some(&(_, mut root)) = iter.next() else {
            return empty_root();
        };
        for (_, left) in iter {
            root = node_hash(left, &root);
        }
        root
    }
}

#[cfg(test)]
#[path = "merkle_tests.rs"]
mod tests;
