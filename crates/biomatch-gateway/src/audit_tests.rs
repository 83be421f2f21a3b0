//! Fuzzing the gateway's check of a leaf, its inclusion proof and the signed checkpoint (the
//! `verified` flag of `GET /v1/audit/leaves/{index}`): a real proof verifies; a changed leaf, hash,
//! index, checkpoint or key, and arbitrary messages, are reported as a problem, never a panic.

use super::*;
use biomatch_auditlog::checkpoint::{self, Checkpoint};
use biomatch_auditlog::merkle::Tree;
use ed25519_dalek::SigningKey;
use proptest::prelude::*;

const ORIGIN: &str = "biomatch.example/audit";

fn signer(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

/// What the audit role answers for leaf `index` of a log of `size` leaves.
struct Answer {
    leaf: v1::AuditLeaf,
    proof: v1::InclusionProof,
    checkpoint: v1::Checkpoint,
    key: v1::PublicKey,
}

fn answer(size: u64, index: u64) -> Answer {
    let leaves: Vec<Vec<u8>> = (0..size).map(|i| format!("{{\"leaf\":{i}}}").into_bytes()).collect();
    let tree = Tree::from_leaf_hashes(leaves.iter().map(|l| leaf_hash(l)));
    let root = tree.root(size).expect("root");
    let note = checkpoint::sign(&Checkpoint { origin: ORIGIN.into(), size, root }, &signer(1));
    let bytes = leaves[index as usize].clone();
    Answer {
        leaf: v1::AuditLeaf {
            index,
            leaf_hash: leaf_hash(&bytes).to_vec(),
            leaf: bytes,
            ..Default::default()
        },
        proof: v1::InclusionProof {
            leaf_index: index,
            tree_size: size,
            hashes: tree.inclusion_proof(index, size).expect("proof").iter().map(|h| h.to_vec()).collect(),
        },
        checkpoint: v1::Checkpoint { tree_size: size, note, ..Default::default() },
        key: v1::PublicKey { key: signer(1).verifying_key().to_bytes().to_vec(), ..Default::default() },
    }
}

fn problem(a: &Answer) -> Option<String> {
    check(&a.leaf, &a.proof, &a.checkpoint, &a.key)
}

#[test]
fn a_real_proof_verifies_and_problems_are_named() {
    let a = answer(11, 6);
    assert_eq!(problem(&a), None);
    let mut b = answer(11, 6);
    b.leaf.leaf.push(b' ');
    assert_eq!(problem(&b).as_deref(), Some("the leaf's bytes do not hash to its leaf hash"));
    let mut b = answer(11, 6);
    b.key.key.pop();
    assert_eq!(problem(&b).as_deref(), Some("the log's public key is malformed"));
    let mut b = answer(11, 6);
    b.proof.hashes[0].pop();
    assert_eq!(problem(&b).as_deref(), Some("a hash has the wrong length"));
    let mut b = answer(11, 6);
    b.key.key = signer(2).verifying_key().to_bytes().to_vec();
    assert!(problem(&b).is_some_and(|p| p.starts_with("the checkpoint does not verify")));
    let mut b = answer(11, 6);
    b.leaf.index = 5;
    assert!(problem(&b).is_some_and(|p| p.starts_with("the inclusion proof does not verify")));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn a_real_answer_with_anything_changed_is_not_verified(
        size in 1u64..150,
        pick in any::<prop::sample::Index>(),
        change in 0usize..8,
        other in any::<u64>(),
    ) {
        let index = pick.index(size as usize) as u64;
        let mut a = answer(size, index);
        prop_assert_eq!(problem(&a), None);
        match change {
            0 => {
                let at = pick.index(a.leaf.leaf.len());
                a.leaf.leaf[at] ^= 1 << (other % 8);
            }
            // Another leaf's bytes with their own hash, at this index.
            1 => {
                a.leaf.leaf = format!("{{\"leaf\":{}}}", index + 1 + other % 1000).into_bytes();
                a.leaf.leaf_hash = leaf_hash(&a.leaf.leaf).to_vec();
            }
            2 => a.leaf.index = index + 1 + other % (2 * size),
            3 if !a.proof.hashes.is_empty() => {
                let i = pick.index(a.proof.hashes.len());
                a.proof.hashes[i][(other % 32) as usize] ^= 0x01;
            }
            4 if !a.proof.hashes.is_empty() => {
                a.proof.hashes.remove(pick.index(a.proof.hashes.len()));
            }
            5 => a.proof.hashes.push(vec![other as u8; 32]),
            // The signed checkpoint of another size of the same log.
            6 => a.checkpoint = answer(size + 1 + other % 8, index).checkpoint,
            _ => a.key.key = signer(2 + (other % 200) as u8).verifying_key().to_bytes().to_vec(),
        }
        prop_assert!(problem(&a).is_some(), "change {} still verifies", change);
    }

    #[test]
    fn arbitrary_answers_are_not_verified(
        index in any::<u64>(),
        leaf in prop::collection::vec(any::<u8>(), 0..64),
        leaf_hash_bytes in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..40),
            any::<[u8; 32]>().prop_map(|h| h.to_vec()),
        ],
        hashes in prop::collection::vec(prop::collection::vec(any::<u8>(), 30..34), 0..70),
        note in prop_oneof![
            "(?s).{0,200}".boxed(),
            (1u64..64).prop_map(|n| answer(n, 0).checkpoint.note).boxed(),
        ],
        key in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..40),
            Just(signer(1).verifying_key().to_bytes().to_vec()),
        ],
    ) {
        let a = Answer {
            leaf: v1::AuditLeaf { index, leaf, leaf_hash: leaf_hash_bytes, ..Default::default() },
            proof: v1::InclusionProof { leaf_index: index, tree_size: 0, hashes },
            checkpoint: v1::Checkpoint { note, ..Default::default() },
            key: v1::PublicKey { key, ..Default::default() },
        };
        prop_assert!(problem(&a).is_some());
    }
}
