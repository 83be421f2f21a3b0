//! Gallery settings and the matching vocabulary.

use sha2::{Digest, Sha256};
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IndexKind {
    Flat,
    Hnsw,
    IvfFlat,
    IvfSq8,
    IvfPq,
    /// 4-bit fast-scan PQ codes of every template scanned in full, then the best candidates
    /// re-scored exactly from the stored vectors.
    PqRerank,
    /// An IVF coarse quantizer over 4-bit fast-scan PQ codes: only the probed lists are scanned,
    /// then the best candidates are re-scored exactly from the stored vectors.
    IvfRerank,
}

impl IndexKind {
    /// Every kind, in the order they are documented.
    pub const ALL: [IndexKind; 7] = [
        IndexKind::Flat,
        IndexKind::Hnsw,
        IndexKind::IvfFlat,
        IndexKind::IvfSq8,
        IndexKind::IvfPq,
        IndexKind::PqRerank,
        IndexKind::IvfRerank,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            IndexKind::Flat => "flat",
            IndexKind::Hnsw => "hnsw",
            IndexKind::IvfFlat => "ivf_flat",
            IndexKind::IvfSq8 => "ivf_sq8",
            IndexKind::IvfPq => "ivf_pq",
            IndexKind::PqRerank => "pq_rerank",
            IndexKind::IvfRerank => "ivf_rerank",
        }
    }
}

impl fmt::Display for IndexKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for IndexKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        IndexKind::ALL.into_iter().find(|k| k.as_str() == s.to_ascii_lowercase()).ok_or_else(|| {
            format!("unknown index kind {s:?} (flat, hnsw, ivf_flat, ivf_sq8, ivf_pq, pq_rerank, ivf_rerank)")
        })
    }
}

/// Default HNSW graph degree and beam widths.
const HNSW_M: u32 = 32;
const HNSW_EF_CONSTRUCTION: u32 = 80;
const HNSW_EF_SEARCH: u32 = 128;
/// The most candidates a re-rank kind may re-score exactly per query.
const MAX_RERANK_DEPTH: u32 = 4096;
/// An IVF or PQ shard stays exact (Flat) until it holds this many templates, then trains on them.
pub const IVF_TRAIN_THRESHOLD: u32 = 20_000;

/// Index kind and its parameters; zero means "the default for the kind".
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IndexSpec {
    pub kind: IndexKind,
    #[serde(default)]
    pub hnsw_m: u32,
    #[serde(default)]
    pub hnsw_ef_construction: u32,
    #[serde(default)]
    pub hnsw_ef_search: u32,
    #[serde(default)]
    pub ivf_nlist: u32,
    #[serde(default)]
    pub ivf_nprobe: u32,
    #[serde(default)]
    pub pq_m: u32,
    #[serde(default)]
    pub train_threshold: u32,
    /// Candidates the re-rank kinds re-score exactly per query (0: max(64, 8 x the templates
    /// fetched)).
    #[serde(default)]
    pub rerank_depth: u32,
}

impl IndexSpec {
    pub fn flat() -> Self {
        Self::of(IndexKind::Flat)
    }

    pub fn of(kind: IndexKind) -> Self {
        Self {
            kind,
            hnsw_m: 0,
            hnsw_ef_construction: 0,
            hnsw_ef_search: 0,
            ivf_nlist: 0,
            ivf_nprobe: 0,
            pq_m: 0,
            train_threshold: 0,
            rerank_depth: 0,
        }
    }

    /// This spec with every zero ("the default for the kind") filled in and every value checked
    /// against the gallery's `dimension`.
    pub fn resolved(&self, dimension: usize) -> Result<Self, IndexSpecError> {
        let mut s = self.clone();
        let or = |v: u32, default: u32| if v == 0 { default } else { v };
        if s.rerank_depth > MAX_RERANK_DEPTH {
            return Err(IndexSpecError(format!(
                "rerank_depth must be 0 (the default) or 1..={MAX_RERANK_DEPTH}, not {}",
                s.rerank_depth
            )));
        }
        match s.kind {
            IndexKind::Flat => {}
            IndexKind::Hnsw => {
                s.hnsw_m = or(s.hnsw_m, HNSW_M);
                s.hnsw_ef_construction = or(s.hnsw_ef_construction, HNSW_EF_CONSTRUCTION);
                s.hnsw_ef_search = or(s.hnsw_ef_search, HNSW_EF_SEARCH);
                if !(4..=128).contains(&s.hnsw_m) {
                    return Err(IndexSpecError(format!("hnsw_m must be 4..=128, not {}", s.hnsw_m)));
                }
            }
            IndexKind::PqRerank | IndexKind::IvfRerank => {
                s.train_threshold = or(s.train_threshold, IVF_TRAIN_THRESHOLD);
                if s.kind == IndexKind::IvfRerank {
                    check_nlist(&s)?;
                }
                // 16 dimensions per 4-bit sub-quantizer: 16 bytes per template at d=512.
                s.pq_m = or(s.pq_m, (dimension / 16).max(1) as u32);
                if s.pq_m as usize > dimension || !dimension.is_multiple_of(s.pq_m as usize) {
                    return Err(IndexSpecError(format!(
                        "pq_m {} must divide the dimension {dimension}",
                        s.pq_m
                    )));
                }
            }
            IndexKind::IvfFlat | IndexKind::IvfSq8 | IndexKind::IvfPq => {
                s.train_threshold = or(s.train_threshold, IVF_TRAIN_THRESHOLD);
                check_nlist(&s)?;
                if s.kind == IndexKind::IvfPq {
                    s.pq_m = or(s.pq_m, (dimension / 8).max(1) as u32);
                    if !dimension.is_multiple_of(s.pq_m as usize) {
                        return Err(IndexSpecError(format!(
                            "pq_m {} must divide the dimension {dimension}",
                            s.pq_m
                        )));
                    }
                }
            }
        }
        Ok(s)
    }
}

/// An explicit IVF list count needs at least 39 training templates per list.
fn check_nlist(s: &IndexSpec) -> Result<(), IndexSpecError> {
    if s.ivf_nlist > 0 && u64::from(s.train_threshold) < u64::from(s.ivf_nlist) * 39 {
        return Err(IndexSpecError(format!(
            "train_threshold {} is too small to train {} lists (at least 39 per list)",
            s.train_threshold, s.ivf_nlist
        )));
    }
    Ok(())
}

/// An index spec that does not fit its kind or the gallery's dimension.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("index: {0}")]
pub struct IndexSpecError(pub String);

impl crate::Classified for IndexSpecError {
    fn class(&self) -> crate::ErrorClass {
        crate::ErrorClass::InvalidArgument
    }
}

/// A gallery's settings, the one type every role uses for them (the wire's `Gallery` and the
/// store's row convert to and from it at the edges). A new gallery is described with
/// `threshold_version` 1 and `created_at_ms` 0: the store stamps the time it is created, and
/// every threshold change raises the version.
#[derive(Debug, Clone, PartialEq)]
pub struct Gallery {
    pub name: crate::GalleryName,
    pub dimension: u32,
    pub shard_count: u32,
    pub index: IndexSpec,
    pub model_id: String,
    pub model_version: String,
    pub threshold: f32,
    pub allowed_purposes: Vec<String>,
    /// Version of `threshold`, recorded in every audit leaf that used it.
    pub threshold_version: u32,
    /// Time to live of enrolled subjects in seconds; 0 = no retention policy.
    pub retention_seconds: i64,
    pub default_k: u32,
    pub created_at_ms: i64,
}

/// Identify's and verify's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Mate,
    NoMate,
}

impl Decision {
    pub fn from_score(best: Option<f32>, threshold: f32) -> Self {
        match best {
            Some(score) if score >= threshold => Decision::Mate,
            _ => Decision::NoMate,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Mate => "mate",
            Decision::NoMate => "no_mate",
        }
    }
}

/// The shard a subject lives in: the first 8 bytes of SHA-256 of its id, modulo the shard count.
/// Stable across versions, platforms and processes (never `std`'s randomised hasher).
pub fn shard_of(subject: &crate::SubjectId, shard_count: u32) -> u32 {
    let digest = Sha256::digest(subject.as_str().as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(first) % u64::from(shard_count.max(1))) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SubjectId;

    #[test]
    fn shard_is_stable_and_spread() {
        let id = SubjectId::parse("subject-42").expect("valid");
        // Pinned: changing the hash would move every enrolled subject to another shard.
        assert_eq!(shard_of(&id, 4), shard_of(&id, 4));
        let expected = {
            let d = Sha256::digest(b"subject-42");
            (u64::from_be_bytes(d[..8].try_into().expect("8 bytes")) % 4) as u32
        };
        assert_eq!(shard_of(&id, 4), expected);
        let mut counts = [0u32; 4];
        for i in 0..4000 {
            let s = SubjectId::parse(&format!("s{i}")).expect("valid");
            counts[shard_of(&s, 4) as usize] += 1;
        }
        assert!(counts.iter().all(|c| (800..1200).contains(c)), "{counts:?}");
    }

    #[test]
    fn decision_threshold_is_inclusive() {
        assert_eq!(Decision::from_score(Some(0.5), 0.5), Decision::Mate);
        assert_eq!(Decision::from_score(Some(0.49), 0.5), Decision::NoMate);
        assert_eq!(Decision::from_score(None, 0.5), Decision::NoMate);
    }

    #[test]
    fn index_kind_parses() {
        assert_eq!("FLAT".parse::<IndexKind>(), Ok(IndexKind::Flat));
        assert!("annoy".parse::<IndexKind>().is_err());
        for kind in IndexKind::ALL {
            assert_eq!(kind.as_str().parse::<IndexKind>(), Ok(kind));
        }
        assert_eq!("ivf_rerank".parse::<IndexKind>(), Ok(IndexKind::IvfRerank));
    }

    #[test]
    fn ivf_rerank_resolves_like_the_other_trained_kinds() {
        let spec = IndexSpec::of(IndexKind::IvfRerank).resolved(512).expect("defaults");
        assert_eq!((spec.pq_m, spec.train_threshold, spec.rerank_depth), (32, IVF_TRAIN_THRESHOLD, 0));
        let mut bad = IndexSpec::of(IndexKind::IvfRerank);
        bad.pq_m = 7;
        assert!(bad.resolved(512).is_err(), "7 does not divide 512");
        let mut small = IndexSpec::of(IndexKind::IvfRerank);
        (small.ivf_nlist, small.train_threshold) = (1024, 1000);
        assert!(small.resolved(512).is_err(), "too few to train 1024 lists");
    }

    #[test]
    fn rerank_depth_is_zero_or_bounded() {
        let mut spec = IndexSpec::of(IndexKind::PqRerank);
        for (depth, ok) in [(0, true), (1, true), (MAX_RERANK_DEPTH, true), (MAX_RERANK_DEPTH + 1, false)] {
            spec.rerank_depth = depth;
            assert_eq!(spec.resolved(64).is_ok(), ok, "depth {depth}");
        }
    }
}
