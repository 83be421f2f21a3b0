//! The compact tree answers exactly what the whole tree answers, loading only the chunks it
//! names, and refuses a chunk that was edited.

use super::*;
use crate::merkle::{self, leaf_hash};
use proptest::prelude::*;

fn leaves(n: u64) -> Vec<Hash> {
    (0..n).map(|i| leaf_hash(&i.to_le_bytes())).collect()
}

/// Asks `ask` of the compact tree, loading each chunk it names from `all` (checked), as the audit
/// role does from its store. Returns the answer and the chunks it loaded.
fn answer<T>(
    tree: &CompactTree,
    all: &[Hash],
    ask: impl Fn(&View<'_>) -> Result<T, ProofError>,
) -> (Result<T, ProofError>, Vec<u64>) {
    let mut loaded: Vec<(u64, Arc<Tree>)> = Vec::new();
    loop {
        let lookup = |c: u64| loaded.iter().find(|(i, _)| *i == c).map(|(_, t)| t.clone());
        match ask(&tree.view(&lookup)) {
            Err(ProofError::NotLoaded { chunk }) => {
                assert!(loaded.iter().all(|(c, _)| *c != chunk), "chunk {chunk} asked for twice");
                let (first, len) = tree.chunk_span(chunk);
                let hashes = all[first as usize..(first + len) as usize].to_vec();
                loaded.push((chunk, Arc::new(tree.check_chunk(chunk, hashes).expect("intact chunk"))));
            }
            other => return (other, loaded.into_iter().map(|(c, _)| c).collect()),
        }
    }
}

fn compact(bits: u32, all: &[Hash]) -> CompactTree {
    let mut tree = CompactTree::new(bits);
    all.iter().for_each(|h| tree.push(*h));
    tree
}

#[test]
fn the_current_root_needs_no_chunk() {
    for n in [0u64, 1, 3, 4, 5, 16, 17, 1000, 1024, 1025, 5000] {
        let all = leaves(n);
        let full = Tree::from_leaf_hashes(all.clone());
        let tree = compact(2, &all);
        assert_eq!(tree.size(), n);
        assert_eq!(tree.root().ok(), full.root(n), "size {n}");
        let (root, loaded) = answer(&tree, &all, |v| merkle::root_at(v, n));
        assert_eq!(root.ok(), full.root(n));
        assert!(loaded.is_empty(), "size {n} loaded {loaded:?}");
    }
}

#[test]
fn memory_grows_by_chunks_not_leaves() {
    let all = leaves(100_000);
    let tree = compact(CHUNK_BITS, &all);
    // 97 complete chunks (about 2 hashes each) and 672 leaves in the incomplete one.
    assert!(tree.held_hashes() <= 2 * 97 + 2 * 672, "{}", tree.held_hashes());
    assert_eq!(tree.root().ok(), Tree::from_leaf_hashes(all).root(100_000));
}

#[test]
fn an_edited_chunk_is_refused() {
    let all = leaves(40);
    let tree = compact(3, &all);
    let mut edited = all[8..16].to_vec();
    edited[3] = leaf_hash(b"forged");
    assert_eq!(tree.check_chunk(1, edited).err(), Some(ChunkMismatch { first: 8, end: 16 }));
    assert!(tree.check_chunk(1, all[8..15].to_vec()).is_err(), "a short chunk is refused");
    assert!(tree.check_chunk(5, all[32..40].to_vec()).is_err(), "the incomplete chunk is not a chunk");
    assert!(tree.check_chunk(1, all[8..16].to_vec()).is_ok());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn proofs_and_roots_match_the_whole_tree(
        bits in 0u32..4,
        n in 0u64..200,
        a in any::<prop::sample::Index>(),
        b in any::<prop::sample::Index>(),
    ) {
        let all = leaves(n);
        let full = Tree::from_leaf_hashes(all.clone());
        let tree = compact(bits, &all);
        let size = b.index(n as usize + 1) as u64;
        let index = a.index(n as usize + 1) as u64;

        let (root, loaded) = answer(&tree, &all, |v| merkle::root_at(v, size));
        prop_assert_eq!(root.ok(), full.root(size));
        prop_assert!(loaded.len() <= 1, "a root loads at most its right edge: {:?}", loaded);

        let (proof, loaded) = answer(&tree, &all, |v| merkle::inclusion_proof(v, index, size));
        prop_assert_eq!(proof, full.inclusion_proof(index, size));
        prop_assert!(loaded.len() <= 2, "{:?}", loaded);

        let (first, second) = (index.min(size), index.max(size));
        let (proof, loaded) = answer(&tree, &all, |v| merkle::consistency_proof(v, first, second));
        prop_assert_eq!(proof, full.consistency_proof(first, second));
        prop_assert!(loaded.len() <= 2, "{:?}", loaded);
    }
}
