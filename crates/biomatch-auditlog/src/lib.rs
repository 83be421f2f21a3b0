//! The audit log's format: what a leaf records, how it is encoded and hashed, and how a log is
//! verified.
//!
//! A leaf is an [`AuditRecord`] encoded as canonical JSON (fields in declaration order, no
//! whitespace, floats in shortest round-trip form) and stored verbatim, so verification hashes
//! exactly the stored bytes. Leaves form an RFC 6962 Merkle tree ([`merkle`]) whose heads are
//! signed as C2SP checkpoints ([`checkpoint`]); every leaf is also chained to the one before
//! (`chain_i = SHA-256(chain_{i-1} || leaf_hash_i)`, empty `chain_{-1}`), so [`Verifier`] can name
//! the first leaf that was edited, dropped, inserted or reordered, while signed checkpoints catch
//! an editor who rewrote every later hash too.
#![forbid(unsafe_code)]

pub mod checkpoint;
pub mod compact;
pub mod intents;
pub mod merkle;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What one audit leaf records. Never an image or an embedding: only identifiers, scores and codes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Milliseconds since the Unix epoch, from the audit service's clock.
    pub time_ms: i64,
    pub actor_subject: String,
    pub actor_role: String,
    pub actor_device: String,
    pub operation: String,
    pub gallery: String,
    pub purpose: String,
    pub case_ref: String,
    pub model_id: String,
    pub model_version: String,
    pub threshold: Option<f32>,
    pub threshold_version: u32,
    pub candidates: Vec<ScoredSubject>,
    pub subject_ids: Vec<String>,
    pub decision: String,
    pub partial: bool,
    pub missing_shards: Vec<u32>,
    pub trace_id: String,
    pub request_id: String,
    pub outcome: String,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoredSubject {
    pub subject_id: String,
    pub score: f32,
}

impl AuditRecord {
    /// The canonical bytes that are stored and hashed.
    pub fn encode(&self) -> Vec<u8> {
        // Serialising plain structs, strings and finite numbers cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

pub use merkle::leaf_hash;

/// The next link of the hash chain.
pub fn chain_hash(previous: &[u8], leaf_hash: &[u8]) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(previous);
    h.update(leaf_hash);
    h.finalize().to_vec()
}

/// A stored leaf as verification reads it.
#[derive(Debug, Clone)]
pub struct StoredLeaf {
    pub index: u64,
    pub leaf: Vec<u8>,
    pub leaf_hash: Vec<u8>,
    pub chain_hash: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error(
        "leaf {index}: expected index {index}, found {found} (a leaf was dropped, inserted or reordered)"
    )]
    Sequence { index: u64, found: u64 },
    #[error("leaf {index}: contents do not match the leaf hash (the leaf was edited)")]
    LeafHash { index: u64 },
    #[error(
        "leaf {index}: chain hash does not follow from the previous leaf (a leaf was edited, dropped or reordered)"
    )]
    Chain { index: u64 },
    #[error("leaf {index}: not a valid audit record")]
    Encoding { index: u64 },
}

impl VerifyError {
    pub fn index(&self) -> u64 {
        match self {
            VerifyError::Sequence { index, .. }
            | VerifyError::LeafHash { index }
            | VerifyError::Chain { index }
            | VerifyError::Encoding { index } => *index,
        }
    }
}

/// Incremental verifier: feed leaves in order, starting at index 0.
#[derive(Debug, Default)]
pub struct Verifier {
    next: u64,
    chain: Vec<u8>,
}

impl Verifier {
    /// A verifier that continues after leaf `next - 1`, whose stored chain hash is `chain` (trusted
    /// as the starting point: the audit role anchors it at its latest signed checkpoint).
    pub fn resume(next: u64, chain: Vec<u8>) -> Self {
        Self { next, chain }
    }

    pub fn push(&mut self, leaf: &StoredLeaf) -> Result<(), VerifyError> {
        let index = self.next;
        if leaf.index != index {
            return Err(VerifyError::Sequence { index, found: leaf.index });
        }
        if leaf_hash(&leaf.leaf)[..] != leaf.leaf_hash[..] {
            return Err(VerifyError::LeafHash { index });
        }
        if AuditRecord::decode(&leaf.leaf).is_err() {
            return Err(VerifyError::Encoding { index });
        }
        let expected = chain_hash(&self.chain, &leaf.leaf_hash);
        if expected != leaf.chain_hash {
            return Err(VerifyError::Chain { index });
        }
        self.chain = expected;
        self.next += 1;
        Ok(())
    }

    /// How many leaves verified so far.
    pub fn verified(&self) -> u64 {
        self.next
    }

    /// The chain hash after the last verified leaf.
    pub fn head(&self) -> &[u8] {
        &self.chain
    }
}

/// Verifies a whole log held in memory.
pub fn verify(leaves: &[StoredLeaf]) -> Result<u64, VerifyError> {
    let mut v = Verifier::default();
    for leaf in leaves {
        v.push(leaf)?;
    }
    Ok(v.verified())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn record(n: usize) -> AuditRecord {
        AuditRecord {
            time_ms: n as i64,
            actor_subject: format!("kiosk-{n}"),
            actor_role: "kiosk".into(),
            actor_device: "lane-3".into(),
            operation: "identify".into(),
            gallery: "travelers".into(),
            purpose: "border".into(),
            case_ref: "trip-1".into(),
            model_id: "external".into(),
            model_version: "1".into(),
            threshold: Some(0.5),
            threshold_version: 1,
            candidates: vec![ScoredSubject { subject_id: "s1".into(), score: 0.87 }],
            subject_ids: vec![],
            decision: "mate".into(),
            partial: false,
            missing_shards: vec![],
            trace_id: String::new(),
            request_id: format!("r{n}"),
            outcome: "OK".into(),
            detail: String::new(),
        }
    }

    fn log(n: usize) -> Vec<StoredLeaf> {
        let mut chain = Vec::new();
        (0..n)
            .map(|i| {
                let leaf = record(i).encode();
                let lh = leaf_hash(&leaf).to_vec();
                chain = chain_hash(&chain, &lh);
                StoredLeaf { index: i as u64, leaf, leaf_hash: lh, chain_hash: chain.clone() }
            })
            .collect()
    }

    #[test]
    fn leaf_hash_has_rfc6962_domain_separation() {
        // SHA-256 of the single byte 0x00: RFC 6962's hash of an empty leaf.
        assert_eq!(
            leaf_hash(b"").iter().map(|b| format!("{b:02x}")).collect::<String>(),
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
        );
    }

    #[test]
    fn encoding_is_stable() {
        let bytes = record(1).encode();
        assert_eq!(AuditRecord::decode(&bytes).expect("decodes").encode(), bytes);
        let text = String::from_utf8(bytes).expect("utf-8");
        assert!(text.starts_with(r#"{"time_ms":1,"actor_subject":"kiosk-1""#), "{text}");
        assert!(text.contains(r#""score":0.87"#));
    }

    #[test]
    fn intact_log_verifies() {
        assert_eq!(verify(&log(10)), Ok(10));
    }

    #[test]
    fn a_resumed_verifier_checks_from_its_anchor() {
        let leaves = log(10);
        let mut v = Verifier::resume(6, leaves[5].chain_hash.clone());
        for leaf in &leaves[6..] {
            v.push(leaf).expect("intact");
        }
        assert_eq!(v.verified(), 10);
        let mut edited = leaves.clone();
        edited[8].leaf = record(99).encode();
        edited[8].leaf_hash = leaf_hash(&edited[8].leaf).to_vec();
        let mut v = Verifier::resume(6, leaves[5].chain_hash.clone());
        let err = edited[6..].iter().try_for_each(|l| v.push(l)).expect_err("caught");
        assert_eq!(err, VerifyError::Chain { index: 8 });
    }

    #[test]
    fn edits_drops_and_reorders_name_the_first_bad_leaf() {
        let mut edited = log(10);
        edited[4].leaf = record(99).encode();
        assert_eq!(verify(&edited), Err(VerifyError::LeafHash { index: 4 }));

        // An editor who also fixes the leaf hash still breaks the chain.
        edited[4].leaf_hash = leaf_hash(&edited[4].leaf).to_vec();
        assert_eq!(verify(&edited), Err(VerifyError::Chain { index: 4 }));

        let mut dropped = log(10);
        dropped.remove(6);
        assert_eq!(verify(&dropped), Err(VerifyError::Sequence { index: 6, found: 7 }));

        // Renumbering after a drop is caught by the chain.
        for (i, l) in dropped.iter_mut().enumerate() {
            l.index = i as u64;
        }
        assert_eq!(verify(&dropped), Err(VerifyError::Chain { index: 6 }));

        let mut swapped = log(10);
        swapped.swap(2, 3);
        swapped[2].index = 2;
        swapped[3].index = 3;
        assert_eq!(verify(&swapped), Err(VerifyError::Chain { index: 2 }));
    }

    proptest! {
        #[test]
        fn any_single_byte_flip_is_detected(n in 1usize..20, pick in any::<prop::sample::Index>(), byte in any::<prop::sample::Index>()) {
            let mut leaves = log(n);
            let i = pick.index(n);
            let b = byte.index(leaves[i].leaf.len());
            leaves[i].leaf[b] ^= 0x01;
            let err = verify(&leaves).expect_err("tampering detected");
            prop_assert_eq!(err.index(), i as u64);
        }
    }
}
