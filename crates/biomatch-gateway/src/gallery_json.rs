//! The JSON shapes of galleries on the REST API: settings, search tuning, threshold policy, and
//! the bodies that create a gallery or set its threshold.

use crate::error::{ApiError, bad_request};
use biomatch_proto::v1;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct IndexJson {
    /// `flat`, `hnsw`, `ivf_flat`, `ivf_sq8`, `ivf_pq`, `pq_rerank` or `ivf_rerank`.
    pub kind: String,
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
    /// Candidates the re-rank kinds re-score exactly (0: the kind's default).
    #[serde(default)]
    pub rerank_depth: u32,
}

impl From<v1::IndexSpec> for IndexJson {
    fn from(spec: v1::IndexSpec) -> Self {
        let kind = biomatch_proto::index_kind_from_proto(spec.kind()).as_str().to_owned();
        let v1::IndexSpec {
            kind: _,
            hnsw_m,
            hnsw_ef_construction,
            hnsw_ef_search,
            ivf_nlist,
            ivf_nprobe,
            pq_m,
            train_threshold,
            rerank_depth,
        } = spec;
        Self {
            kind,
            hnsw_m,
            hnsw_ef_construction,
            hnsw_ef_search,
            ivf_nlist,
            ivf_nprobe,
            pq_m,
            train_threshold,
            rerank_depth,
        }
    }
}

impl IndexJson {
    pub(crate) fn into_proto(self) -> Result<v1::IndexSpec, ApiError> {
        let kind =
            self.kind.parse().map_err(|_| bad_request(format!("unknown index kind {:?}", self.kind)))?;
        let Self {
            kind: _,
            hnsw_m,
            hnsw_ef_construction,
            hnsw_ef_search,
            ivf_nlist,
            ivf_nprobe,
            pq_m,
            train_threshold,
            rerank_depth,
        } = self;
        Ok(v1::IndexSpec {
            kind: biomatch_proto::index_kind_to_proto(kind).into(),
            hnsw_m,
            hnsw_ef_construction,
            hnsw_ef_search,
            ivf_nlist,
            ivf_nprobe,
            pq_m,
            train_threshold,
            rerank_depth,
        })
    }
}

/// A gallery: its settings, size, and threshold with its version.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct GalleryJson {
    pub name: String,
    pub dimension: u32,
    pub shard_count: u32,
    pub index: Option<IndexJson>,
    pub model_id: String,
    pub model_version: String,
    /// Score at or above which a candidate is a mate.
    pub threshold: f32,
    /// Goes up by one each time the threshold changes; every search's leaf records it.
    pub threshold_version: u32,
    pub allowed_purposes: Vec<String>,
    /// How long a subject stays enrolled; 0: no retention limit.
    pub retention_seconds: i64,
    pub default_k: u32,
    pub subject_count: u64,
    pub template_count: u64,
    /// RFC 3339.
    pub created_at: Option<String>,
    /// How the gallery's trained shards search, chosen by `biomatch gallery tune`; absent until
    /// first tuned.
    pub search_tuning: Option<SearchTuningJson>,
    /// Set when the threshold is kept at a target FPIR as the gallery grows.
    pub threshold_policy: Option<ThresholdPolicyJson>,
}

/// A threshold kept at a target false-positive identification rate, and the evidence of its
/// last derivation.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ThresholdPolicyJson {
    pub target_fpir: f64,
    /// Templates it was derived for (the gallery's size then, at least 1024); derived again when
    /// the gallery has doubled.
    pub templates: u64,
    /// The false match rate per comparison that keeps the target at that size.
    pub required_fmr: f64,
    /// That rate lies beyond the measured impostor scores (read from the fitted tail).
    pub extrapolated: bool,
    /// The model cannot keep the target at this size: the threshold is capped at 1.0.
    pub unattainable: bool,
    /// RFC 3339.
    pub derived_at: Option<String>,
    /// Impostor comparisons the model's distribution was measured on, and where.
    pub impostor_pairs: u64,
    pub impostor_source: String,
}

impl From<v1::ThresholdPolicy> for ThresholdPolicyJson {
    fn from(p: v1::ThresholdPolicy) -> Self {
        let (impostor_pairs, impostor_source) =
            p.impostor.map_or((0, String::new()), |t| (t.impostor_pairs, t.source));
        Self {
            target_fpir: p.target_fpir,
            templates: p.templates,
            required_fmr: p.required_fmr,
            extrapolated: p.extrapolated,
            unattainable: p.unattainable,
            derived_at: p.derived_at.as_ref().map(crate::rfc3339),
            impostor_pairs,
            impostor_source,
        }
    }
}

/// A gallery's search settings and the measurement they were chosen on (0: the kind's default).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SearchTuningJson {
    pub nprobe: u32,
    pub rerank_depth: u32,
    /// Set by an operator: automatic tuning leaves the gallery alone.
    pub pinned: bool,
    pub target_recall: f64,
    /// Mated rank-1 recall against exact search, measured on the gallery's own data.
    pub recall: f64,
    pub met_target: bool,
    pub queries_per_second: f64,
    pub exact_queries_per_second: f64,
    pub probes: u32,
    pub templates: u64,
    pub version: u32,
}

impl From<v1::SearchTuning> for SearchTuningJson {
    fn from(t: v1::SearchTuning) -> Self {
        Self {
            nprobe: t.nprobe,
            rerank_depth: t.rerank_depth,
            pinned: t.pinned,
            target_recall: t.target_recall,
            recall: t.recall,
            met_target: t.met_target,
            queries_per_second: t.queries_per_second,
            exact_queries_per_second: t.exact_queries_per_second,
            probes: t.probes,
            templates: t.templates,
            version: t.version,
        }
    }
}

impl From<v1::Gallery> for GalleryJson {
    fn from(gallery: v1::Gallery) -> Self {
        let v1::Gallery {
            name,
            dimension,
            shard_count,
            index,
            model_id,
            model_version,
            threshold,
            allowed_purposes,
            retention,
            default_k,
            subject_count,
            template_count,
            created_at,
            threshold_version,
            settings_seq: _,
            tuning,
            threshold_policy,
        } = gallery;
        Self {
            name,
            dimension,
            shard_count,
            index: index.map(IndexJson::from),
            model_id,
            model_version,
            threshold,
            threshold_version,
            allowed_purposes,
            retention_seconds: retention.map_or(0, |d| d.seconds),
            default_k,
            subject_count,
            template_count,
            created_at: created_at.as_ref().map(crate::rfc3339),
            search_tuning: tuning.map(SearchTuningJson::from),
            threshold_policy: threshold_policy.map(ThresholdPolicyJson::from),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateGalleryBody {
    pub name: String,
    pub dimension: u32,
    #[serde(default)]
    pub shard_count: u32,
    pub index: Option<IndexJson>,
    #[serde(default)]
    pub model_id: String,
    #[serde(default)]
    pub model_version: String,
    pub threshold: Option<f32>,
    /// Instead of `threshold`: keep this false-positive identification rate as the gallery
    /// grows, reading the threshold from the impostor distribution the cluster ships for the
    /// model.
    pub target_fpir: Option<f64>,
    pub allowed_purposes: Vec<String>,
    #[serde(default)]
    pub retention_seconds: u32,
    #[serde(default)]
    pub default_k: u32,
    /// Makes a retry safe: the same key with the same body answers the gallery made first.
    #[serde(default)]
    pub idempotency_key: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ThresholdBody {
    /// Cosine similarity in [-1, 1]; ends a threshold policy. Give this or `target_fpir`.
    pub threshold: Option<f32>,
    /// Keep this false-positive identification rate as the gallery grows (the threshold is
    /// derived from the model's shipped impostor distribution now and whenever it has doubled).
    pub target_fpir: Option<f64>,
    /// Why, for the audit record.
    pub reason: String,
}
