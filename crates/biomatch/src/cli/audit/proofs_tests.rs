//! Fuzzing `biomatch audit verify-proof`'s parser: arbitrary files are refused, never panicked on;
//! a real proof holds; a proof file with any changed field is refused.

use super::*;
use biomatch_auditlog::merkle::{Tree, leaf_hash};
use ed25519_dalek::SigningKey;
use proptest::prelude::*;

const ORIGIN: &str = "biomatch.example/audit";

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn leaves(n: u64) -> Vec<Vec<u8>> {
    (0..n).map(|i| format!("{{\"leaf\":{i}}}").into_bytes()).collect()
}

/// The file `biomatch audit prove` writes for leaf `index` of a log of `size` leaves.
fn proof_file(size: u64, index: u64, signer: &SigningKey) -> ProofFile {
    let leaves = leaves(size);
    let tree = Tree::from_leaf_hashes(leaves.iter().map(|l| leaf_hash(l)));
    let root = tree.root(size).expect("root");
    let note = checkpoint::sign(&Checkpoint { origin: ORIGIN.into(), size, root }, signer);
    let proof = tree.inclusion_proof(index, size).expect("proof");
    ProofFile {
        leaf_index: index,
        leaf: B64.encode(&leaves[index as usize]),
        tree_size: size,
        proof: proof.iter().map(hex::encode).collect(),
        checkpoint: note,
    }
}

fn check(file: &ProofFile) -> Result<Proven, ProofFileError> {
    let text = serde_json::to_string_pretty(file).expect("serialise");
    check_proof_file(&text, &key(1).verifying_key())
}

#[test]
fn a_real_proof_holds() {
    let file = proof_file(11, 6, &key(1));
    let proven = check(&file).expect("valid");
    assert_eq!(proven.leaf_index, 6);
    assert_eq!((proven.checkpoint.size, proven.checkpoint.origin.as_str()), (11, ORIGIN));
    assert_eq!(proven.leaf_hash, leaf_hash(&leaves(11)[6]));
}

#[test]
fn refusals_say_what_failed() {
    let invalid = |file: &ProofFile| match check(file) {
        Err(ProofFileError::Invalid(m)) => m,
        other => panic!("expected an invalid proof, got {other:?}"),
    };
    let file = proof_file(11, 6, &key(1));
    assert_eq!(
        invalid(&ProofFile { tree_size: 12, ..proof_file(11, 6, &key(1)) }),
        "proof is for size 12, the checkpoint for 11"
    );
    assert_eq!(invalid(&ProofFile { leaf: "%%".into(), ..proof_file(11, 6, &key(1)) }), "leaf is not base64");
    let short = ProofFile { proof: vec!["abcd".into()], ..proof_file(11, 6, &key(1)) };
    assert_eq!(invalid(&short), "proof hashes must be 32-byte hex");
    assert!(invalid(&proof_file(11, 6, &key(2))).contains("not signed by the expected key"));
    assert!(invalid(&ProofFile { leaf_index: 5, ..file }).contains("does not lead to the expected root"));
    assert!(matches!(
        check_proof_file("{\"leaf_index\": 1}", &key(1).verifying_key()),
        Err(ProofFileError::Unreadable(_))
    ));
}

/// One field of a real proof file, changed.
fn changed(mut file: ProofFile, change: usize, pick: prop::sample::Index, other: u64) -> ProofFile {
    let size = file.tree_size;
    match change {
        // Another leaf of the tree, or one beyond it.
        0 => file.leaf_index += 1 + other % (2 * size),
        1 => file.tree_size = file.tree_size.wrapping_add(1 + other % 1000),
        2 => {
            let mut leaf = B64.decode(&file.leaf).expect("base64");
            let at = pick.index(leaf.len());
            leaf[at] ^= 1 << (other % 8);
            file.leaf = B64.encode(leaf);
        }
        3 if !file.proof.is_empty() => {
            let i = pick.index(file.proof.len());
            let mut hash = hex::decode(&file.proof[i]).expect("hex");
            hash[(other % 32) as usize] ^= 0x10;
            file.proof[i] = hex::encode(hash);
        }
        4 if !file.proof.is_empty() => {
            file.proof.remove(pick.index(file.proof.len()));
        }
        5 => file.proof.insert(pick.index(file.proof.len() + 1), hex::encode([other as u8; 32])),
        // The checkpoint of another state of the log, signed by the right key, and its size.
        _ => {
            let other_size = size + 1 + other % 8;
            file.checkpoint = proof_file(other_size, file.leaf_index, &key(1)).checkpoint;
            file.tree_size = other_size;
        }
    }
    file
}

// Fuzzing the proof file: whatever the file holds, `verify-proof` refuses it or proves the claim it
// was made for, and never panics.
proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_text_is_refused(text in "(?s).{0,400}") {
        prop_assert!(check_proof_file(&text, &key(1).verifying_key()).is_err());
    }

    #[test]
    fn arbitrary_fields_are_refused(
        leaf_index in any::<u64>(),
        tree_size in prop_oneof![Just(0u64), Just(u64::MAX), any::<u64>()],
        leaf in ".{0,60}",
        proof in prop::collection::vec("[0-9a-fA-F]{0,70}|.{0,10}", 0..70),
        checkpoint in prop_oneof![
            ".{0,200}".boxed(),
            (1u64..64).prop_map(|n| proof_file(n, 0, &key(1)).checkpoint).boxed(),
        ],
    ) {
        let file = ProofFile { leaf_index, leaf, tree_size, proof, checkpoint };
        prop_assert!(check(&file).is_err());
    }

    #[test]
    fn a_real_proof_with_any_field_changed_is_refused(
        size in 1u64..200,
        pick in any::<prop::sample::Index>(),
        change in 0usize..7,
        other in any::<u64>(),
    ) {
        let index = pick.index(size as usize) as u64;
        let file = proof_file(size, index, &key(1));
        prop_assert!(check(&file).is_ok());
        let file = changed(file, change, pick, other);
        prop_assert!(check(&file).is_err(), "change {} still verifies", change);
    }

    #[test]
    fn a_damaged_proof_file_is_refused_or_proves_the_same(
        size in 1u64..64,
        pick in any::<prop::sample::Index>(),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let index = pick.index(size as usize) as u64;
        let file = proof_file(size, index, &key(1));
        let text = serde_json::to_string(&file).expect("serialise");
        let expected = check_proof_file(&text, &key(1).verifying_key()).expect("valid");
        let mut bytes = text.into_bytes();
        let at = at.index(bytes.len());
        bytes[at] = byte;
        let damaged = String::from_utf8_lossy(&bytes);
        // An equivalent spelling (hex case, JSON whitespace) may still hold, for the same claim.
        if let Ok(proven) = check_proof_file(&damaged, &key(1).verifying_key()) {
            prop_assert_eq!(proven, expected);
        }
    }
}
