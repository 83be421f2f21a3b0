//! RFC 6962 test vectors (the inputs and expected values published with Certificate
//! Transparency's reference implementation), and property tests over random sizes.

use super::*;
use proptest::prelude::*;

fn h(s: &str) -> Hash {
    let bytes: Vec<u8> =
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex")).collect();
    bytes.try_into().expect("32 bytes")
}

fn inputs() -> Vec<Vec<u8>> {
    let hex =
        ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"];
    hex.iter()
        .map(|s| {
            (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex")).collect()
        })
        .collect()
}

fn reference_tree() -> Tree {
    Tree::from_leaf_hashes(inputs().iter().map(|l| leaf_hash(l)))
}

const ROOTS: [&str; 9] = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

#[test]
fn roots_match_rfc6962_vectors() {
    let tree = reference_tree();
    for (size, expected) in ROOTS.iter().enumerate() {
        assert_eq!(tree.root(size as u64), Some(h(expected)), "size {size}");
        let mut frontier = Frontier::default();
        inputs().iter().take(size).for_each(|l| frontier.push(leaf_hash(l)));
        assert_eq!(frontier.root(), h(expected), "frontier at size {size}");
    }
    assert_eq!(tree.root(9), None);
}

#[test]
fn inclusion_proofs_match_rfc6962_vectors() {
    let tree = reference_tree();
    let cases: [(u64, u64, &[&str]); 4] = [
        (
            0,
            8,
            &[
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            5,
            8,
            &[
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
        (2, 3, &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
        (
            1,
            5,
            &[
                "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ],
        ),
    ];
    for (index, size, expected) in cases {
        let proof = tree.inclusion_proof(index, size).expect("in range");
        assert_eq!(proof, expected.iter().map(|s| h(s)).collect::<Vec<_>>(), "leaf {index} of {size}");
        let root = tree.root(size).expect("root");
        let leaf = tree.leaf(index).expect("leaf");
        assert_eq!(verify_inclusion(index, size, &leaf, &proof, &root), Ok(()));
    }
}

#[test]
fn consistency_proofs_match_rfc6962_vectors() {
    let tree = reference_tree();
    let cases: [(u64, u64, &[&str]); 4] = [
        (1, 1, &[]),
        (
            1,
            8,
            &[
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            6,
            8,
            &[
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
        (
            2,
            5,
            &[
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ],
        ),
    ];
    for (first, second, expected) in cases {
        let proof = tree.consistency_proof(first, second).expect("in range");
        assert_eq!(proof, expected.iter().map(|s| h(s)).collect::<Vec<_>>(), "{first} -> {second}");
        let (r1, r2) = (tree.root(first).expect("root"), tree.root(second).expect("root"));
        assert_eq!(verify_consistency(first, second, &r1, &r2, &proof), Ok(()));
    }
}

fn random_tree(n: u64) -> Tree {
    Tree::from_leaf_hashes((0..n).map(|i| leaf_hash(&i.to_le_bytes())))
}

fn naive_root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            let k = split(n as u64) as usize;
            node_hash(&naive_root(&leaves[..k]), &naive_root(&leaves[k..]))
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn roots_agree_with_the_recursive_definition(n in 0u64..300) {
        let leaves: Vec<Hash> = (0..n).map(|i| leaf_hash(&i.to_le_bytes())).collect();
        let tree = Tree::from_leaf_hashes(leaves.iter().copied());
        prop_assert_eq!(tree.root(n), Some(naive_root(&leaves)));
        let mut frontier = Frontier::default();
        leaves.iter().for_each(|l| frontier.push(*l));
        prop_assert_eq!(frontier.root(), naive_root(&leaves));
    }

    #[test]
    fn every_inclusion_proof_verifies_and_every_mutation_fails(
        size in 1u64..200, pick in any::<prop::sample::Index>(), flip in any::<prop::sample::Index>()
    ) {
        let tree = random_tree(size);
        let index = pick.index(size as usize) as u64;
        let root = tree.root(size).expect("root");
        let leaf = tree.leaf(index).expect("leaf");
        let proof = tree.inclusion_proof(index, size).expect("proof");
        prop_assert_eq!(verify_inclusion(index, size, &leaf, &proof, &root), Ok(()));
        prop_assert!(verify_inclusion(index, size, &leaf_hash(b"other"), &proof, &root).is_err());
        if size > 1 {
            prop_assert!(verify_inclusion((index + 1) % size, size, &leaf, &proof, &root).is_err());
        }
        if !proof.is_empty() {
            let mut bad = proof.clone();
            let i = flip.index(bad.len());
            bad[i][0] ^= 1;
            prop_assert!(verify_inclusion(index, size, &leaf, &bad, &root).is_err());
            prop_assert!(verify_inclusion(index, size, &leaf, &proof[..proof.len() - 1], &root).is_err());
        }
        let mut longer = proof.clone();
        longer.push(leaf);
        prop_assert!(verify_inclusion(index, size, &leaf, &longer, &root).is_err());
    }

    #[test]
    fn every_consistency_proof_verifies_and_every_mutation_fails(
        second in 1u64..200, pick in any::<prop::sample::Index>(), flip in any::<prop::sample::Index>()
    ) {
        let tree = random_tree(second);
        let first = pick.index(second as usize) as u64 + 1;
        let (r1, r2) = (tree.root(first).expect("root"), tree.root(second).expect("root"));
        let proof = tree.consistency_proof(first, second).expect("proof");
        prop_assert_eq!(verify_consistency(first, second, &r1, &r2, &proof), Ok(()));
        prop_assert!(verify_consistency(first, second, &leaf_hash(b"forged"), &r2, &proof).is_err());
        if first < second {
            prop_assert!(verify_consistency(first, second, &r1, &leaf_hash(b"forged"), &proof).is_err());
        }
        if !proof.is_empty() {
            let mut bad = proof.clone();
            let i = flip.index(bad.len());
            bad[i][31] ^= 0x80;
            prop_assert!(verify_consistency(first, second, &r1, &r2, &bad).is_err());
            prop_assert!(verify_consistency(first, second, &r1, &r2, &proof[1..]).is_err());
        }
    }
}

/// Sizes and indices where off-by-one and overflow bugs live, and anything else.
fn edgy_u64() -> impl Strategy<Value = u64> {
    prop_oneof![
        prop::sample::select(vec![0, 1, 2, 3, 7, 8, 9, u64::MAX - 1, u64::MAX, 1 << 63, (1 << 63) + 1]),
        0u64..300,
        any::<u64>(),
    ]
}

fn hashes(max: usize) -> impl Strategy<Value = Vec<Hash>> {
    prop::collection::vec(any::<Hash>(), 0..max)
}

#[test]
fn a_size_is_bound_only_through_its_signed_root() {
    // RFC 9162 verification authenticates a size through the root it is checked against: leaf 0's
    // proof in the tree of 4 also leads to that root when the size is said to be 3. So callers
    // take the size and the root from one signed checkpoint (`biomatch audit verify-proof` and
    // the gateway do), never the size from the proof.
    let tree = random_tree(4);
    let (leaf, root4) = (tree.leaf(0).expect("leaf"), tree.root(4).expect("root"));
    let proof = tree.inclusion_proof(0, 4).expect("proof");
    assert_eq!(verify_inclusion(0, 3, &leaf, &proof, &root4), Ok(()));
    let root3 = tree.root(3).expect("root");
    assert_eq!(verify_inclusion(0, 3, &leaf, &proof, &root3), Err(ProofError::Mismatch));
}

// Fuzzing proof verification: whatever index, size, leaf, path or roots a caller sends, the
// answer is a refusal (a forged proof would need a SHA-256 preimage), never a panic; and a real
// proof stops verifying when any hash, the index or the sizes (with their roots) change.
proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_inclusion_proofs_are_refused(
        index in edgy_u64(),
        size in edgy_u64(),
        leaf in any::<Hash>(),
        proof in hashes(70),
        root in any::<Hash>(),
    ) {
        let result = verify_inclusion(index, size, &leaf, &proof, &root);
        prop_assert!(result.is_err());
        if index >= size {
            prop_assert_eq!(result, Err(ProofError::OutOfRange { index, size }));
        }
    }

    #[test]
    fn arbitrary_consistency_proofs_are_refused(
        first in edgy_u64(),
        second in edgy_u64(),
        first_root in any::<Hash>(),
        other_root in any::<Hash>(),
        same_roots in any::<bool>(),
        proof in hashes(70),
    ) {
        let second_root = if same_roots { first_root } else { other_root };
        let result = verify_consistency(first, second, &first_root, &second_root, &proof);
        // Only the proofs that need no hashes hold: the empty tree is a prefix of every tree,
        // and a tree is consistent with itself.
        let trivial = proof.is_empty() && (first == 0 || (first == second && first_root == second_root));
        prop_assert_eq!(result.is_ok(), trivial && first <= second, "{:?}", result);
    }

    #[test]
    fn proofs_are_asked_for_only_within_the_tree(n in 0u64..64, a in edgy_u64(), b in edgy_u64()) {
        let tree = random_tree(n);
        let inclusion = tree.inclusion_proof(a, b);
        prop_assert_eq!(inclusion.is_ok(), a < b && b <= n);
        let consistency = tree.consistency_proof(a, b);
        prop_assert_eq!(consistency.is_ok(), a <= b && b <= n);
        if let (Ok(proof), Some(root)) = (inclusion, tree.root(b)) {
            let leaf = tree.leaf(a).expect("leaf");
            prop_assert_eq!(verify_inclusion(a, b, &leaf, &proof, &root), Ok(()));
        }
    }

    #[test]
    fn an_inclusion_proof_holds_for_its_own_index_and_size_only(
        size in 1u64..150,
        pick in any::<prop::sample::Index>(),
        other in any::<prop::sample::Index>(),
        other_size in 1u64..150,
        at in any::<prop::sample::Index>(),
        byte in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let tree = random_tree(size.max(other_size));
        let index = pick.index(size as usize) as u64;
        let (leaf, root) = (tree.leaf(index).expect("leaf"), tree.root(size).expect("root"));
        let proof = tree.inclusion_proof(index, size).expect("proof");
        prop_assert_eq!(verify_inclusion(index, size, &leaf, &proof, &root), Ok(()));
        let j = other.index(size as usize) as u64;
        if j != index {
            let moved = verify_inclusion(j, size, &leaf, &proof, &root);
            prop_assert!(moved.is_err(), "index {} for {}", j, index);
        }
        // Another size, checked against that size's root (as another checkpoint would give it).
        if other_size != size && index < other_size {
            let other_root = tree.root(other_size).expect("root");
            prop_assert!(verify_inclusion(index, other_size, &leaf, &proof, &other_root).is_err());
        }
        if !proof.is_empty() {
            let mut bad = proof.clone();
            let i = at.index(bad.len());
            bad[i][byte.index(32)] ^= 1 << bit;
            prop_assert!(verify_inclusion(index, size, &leaf, &bad, &root).is_err());
        }
        let mut bad_root = root;
        bad_root[byte.index(32)] ^= 1 << bit;
        prop_assert!(verify_inclusion(index, size, &leaf, &proof, &bad_root).is_err());
    }

    #[test]
    fn a_consistency_proof_holds_for_its_own_sizes_only(
        second in 2u64..150,
        pick in any::<prop::sample::Index>(),
        other in any::<prop::sample::Index>(),
        at in any::<prop::sample::Index>(),
        byte in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let tree = random_tree(second + 1);
        let first = pick.index(second as usize - 1) as u64 + 1;
        let (r1, r2) = (tree.root(first).expect("root"), tree.root(second).expect("root"));
        let proof = tree.consistency_proof(first, second).expect("proof");
        prop_assert_eq!(verify_consistency(first, second, &r1, &r2, &proof), Ok(()));
        // Another first size, with its own root; another second size, with its own root.
        let f2 = other.index(second as usize - 1) as u64 + 1;
        if f2 != first {
            let r = tree.root(f2).expect("root");
            prop_assert!(verify_consistency(f2, second, &r, &r2, &proof).is_err(), "{} for {}", f2, first);
        }
        let r3 = tree.root(second + 1).expect("root");
        prop_assert!(verify_consistency(first, second + 1, &r1, &r3, &proof).is_err());
        let r0 = tree.root(second - 1).expect("root");
        prop_assert!(verify_consistency(first, second - 1, &r1, &r0, &proof).is_err());
        prop_assert!(!proof.is_empty(), "a strictly larger tree needs hashes");
        let mut bad = proof.clone();
        let i = at.index(bad.len());
        bad[i][byte.index(32)] ^= 1 << bit;
        prop_assert!(verify_consistency(first, second, &r1, &r2, &bad).is_err());
    }
}
