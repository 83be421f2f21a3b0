//! The JSON form of search answers, for the REST API and the CLI's `--json` alike. Each
//! conversion destructures its proto message, so a field added to the contract does not compile
//! until it is shown here (or deliberately left out).

use biomatch_proto::v1::{Candidate, IdentifyResponse, Quality};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CandidateJson {
    pub subject_id: String,
    pub score: f32,
    pub rank: u32,
}

impl From<Candidate> for CandidateJson {
    fn from(candidate: Candidate) -> Self {
        // The shard is how the cluster is laid out, not part of the answer.
        let Candidate { subject_id, score, rank, shard: _ } = candidate;
        Self { subject_id, score, rank }
    }
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct IdentifyJson {
    pub search_id: String,
    /// `mate` or `no_mate`.
    pub decision: String,
    /// On a mate, the best candidate's subject id (the only id a kiosk is told).
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub mate_subject_id: String,
    /// Candidates at or above `candidate_floor` (none for a kiosk).
    pub candidates: Vec<CandidateJson>,
    pub candidate_floor: f32,
    pub threshold: f32,
    pub model_id: String,
    pub model_version: String,
    pub partial: bool,
    pub missing_shards: Vec<u32>,
    pub audit_leaf_index: u64,
    /// When the probe was a photo.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub probe_quality: Option<QualityJson>,
}

impl From<IdentifyResponse> for IdentifyJson {
    fn from(response: IdentifyResponse) -> Self {
        let decision = biomatch_proto::decision_from_proto(response.decision()).as_str().to_owned();
        let IdentifyResponse {
            search_id,
            decision: _,
            candidates,
            threshold,
            model_id,
            model_version,
            partial,
            missing_shards,
            audit_leaf_index,
            probe_quality,
            mate_subject_id,
            candidate_floor,
        } = response;
        Self {
            search_id,
            decision,
            mate_subject_id,
            candidates: candidates.into_iter().map(CandidateJson::from).collect(),
            candidate_floor,
            threshold,
            model_id,
            model_version,
            partial,
            missing_shards,
            audit_leaf_index,
            probe_quality: probe_quality.map(QualityJson::from),
        }
    }
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct QualityJson {
    pub overall: f32,
    pub size: f32,
    pub sharpness: f32,
    pub pose: f32,
    pub exposure: f32,
    pub issues: Vec<String>,
}

impl From<Quality> for QualityJson {
    fn from(quality: Quality) -> Self {
        let Quality { overall, size, sharpness, pose, exposure, issues } = quality;
        Self { overall, size, sharpness, pose, exposure, issues }
    }
}
