//! The audit log for auditors: filtered reads a page at a time, one leaf with its inclusion
//! proof and the signed checkpoint it verifies against (checked here too, and re-checkable by
//! anyone from the hashes), consistency proofs between tree sizes, the latest checkpoint and the
//! log's public key. Every read of leaves is itself a leaf, appended by the audit role first.

use crate::error::{ApiError, ErrorBody, bad_request};
use crate::{Caller, Gateway, PageQuery};
use axum::Json;
use axum::extract::{Path, Query, State};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use biomatch_auditlog::merkle::{Hash, leaf_hash, verify_inclusion};
use biomatch_proto::v1::{
    self, ConsistencyProofRequest, GetCheckpointRequest, GetPublicKeyRequest, InclusionProofRequest,
    ListLeavesRequest, Operation, QueryAuditRequest,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ScoredJson {
    pub subject_id: String,
    pub score: f32,
}

/// What a leaf records (never an image or a template).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EventJson {
    pub actor_subject: String,
    pub actor_role: String,
    pub actor_device: String,
    /// e.g. `identify`, `verify`, `enroll`, `review`, `audit_read`, `access_denied`.
    pub operation: String,
    pub gallery: String,
    pub purpose: String,
    pub case_ref: String,
    pub model_id: String,
    pub model_version: String,
    pub threshold: Option<f32>,
    pub threshold_version: u32,
    pub candidates: Vec<ScoredJson>,
    pub subject_ids: Vec<String>,
    pub decision: String,
    pub partial: bool,
    pub missing_shards: Vec<u32>,
    pub trace_id: String,
    pub request_id: String,
    /// `OK`, `INTENT`, or the status code name of a refusal.
    pub outcome: String,
    pub detail: String,
}

/// The name of an operation as leaves and filters spell it, e.g. `identify`.
fn operation_name(op: Operation) -> String {
    crate::enum_name(op.as_str_name(), "OPERATION_")
}

impl From<v1::AuditEvent> for EventJson {
    fn from(event: v1::AuditEvent) -> Self {
        let operation = operation_name(event.operation());
        let v1::AuditEvent {
            actor,
            operation: _,
            gallery,
            purpose,
            case_ref,
            model_id,
            model_version,
            threshold,
            threshold_version,
            candidates,
            subject_ids,
            decision,
            partial,
            missing_shards,
            trace_id,
            request_id,
            outcome,
            detail,
        } = event;
        let actor = actor.unwrap_or_default();
        Self {
            actor_subject: actor.subject,
            actor_role: actor.role,
            actor_device: actor.device_id,
            operation,
            gallery,
            purpose,
            case_ref,
            model_id,
            model_version,
            threshold,
            threshold_version,
            candidates: candidates
                .into_iter()
                .map(|c| ScoredJson { subject_id: c.subject_id, score: c.score })
                .collect(),
            subject_ids,
            decision,
            partial,
            missing_shards,
            trace_id,
            request_id,
            outcome,
            detail,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LeafJson {
    pub index: u64,
    /// The canonical bytes that were hashed, base64.
    pub leaf: String,
    /// Hex of SHA-256(0x00 || leaf).
    pub leaf_hash: String,
    /// Hex of SHA-256(previous chain hash || leaf hash).
    pub chain_hash: String,
    pub appended_at: Option<String>,
    pub event: EventJson,
}

impl From<v1::AuditLeaf> for LeafJson {
    fn from(leaf: v1::AuditLeaf) -> Self {
        let v1::AuditLeaf { index, leaf, leaf_hash, chain_hash, appended_at, event } = leaf;
        Self {
            index,
            leaf: BASE64.encode(leaf),
            leaf_hash: hex::encode(leaf_hash),
            chain_hash: hex::encode(chain_hash),
            appended_at: appended_at.as_ref().map(crate::rfc3339),
            event: event.unwrap_or_default().into(),
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LeafPage {
    pub items: Vec<LeafJson>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LeafFilters {
    /// Who acted (token subject).
    pub actor: Option<String>,
    /// An operation name, e.g. `identify`, `review`, `access_denied`.
    pub operation: Option<String>,
    pub gallery: Option<String>,
    /// Leaves naming this subject (enrolled, deleted, reviewed or returned as a candidate).
    pub subject_id: Option<String>,
    pub case_ref: Option<String>,
    /// RFC 3339: leaves appended at or after.
    pub from: Option<String>,
    /// RFC 3339: leaves appended at or before.
    pub to: Option<String>,
    /// `asc` (default, oldest first) or `desc`.
    pub order: Option<String>,
}

fn timestamp(field: &str, text: Option<String>) -> Result<Option<prost_types::Timestamp>, ApiError> {
    let Some(text) = text.filter(|t| !t.is_empty()) else { return Ok(None) };
    let parsed = time::OffsetDateTime::parse(&text, &time::format_description::well_known::Rfc3339)
        .map_err(|_| bad_request(format!("{field} must be an RFC 3339 time")))?;
    let nanos = parsed.unix_timestamp_nanos();
    Ok(Some(prost_types::Timestamp {
        seconds: i64::try_from(nanos.div_euclid(1_000_000_000))
            .map_err(|_| bad_request(format!("{field} is out of range")))?,
        nanos: nanos.rem_euclid(1_000_000_000) as i32,
    }))
}

/// Leaves matching the filters, a page at a time. The read is itself recorded.
#[utoipa::path(get, path = "/v1/audit/leaves", tag = "audit", params(LeafFilters, PageQuery),
    responses((status = 200, body = LeafPage), (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
pub async fn query_leaves(
    State(gateway): State<Gateway>,
    caller: Caller,
    Query(filters): Query<LeafFilters>,
    Query(page): Query<PageQuery>,
) -> Result<Json<LeafPage>, ApiError> {
    let operation = match filters.operation.as_deref().unwrap_or_default() {
        "" => Operation::Unspecified,
        name => Operation::from_str_name(&format!("OPERATION_{}", name.to_ascii_uppercase()))
            .filter(|op| *op != Operation::Unspecified)
            .ok_or_else(|| bad_request(format!("unknown operation {name:?}")))?,
    };
    let descending = match filters.order.as_deref().unwrap_or("asc") {
        "asc" => false,
        "desc" => true,
        other => return Err(bad_request(format!("order must be asc or desc, not {other:?}"))),
    };
    let message = QueryAuditRequest {
        actor_subject: filters.actor.unwrap_or_default(),
        operation: operation.into(),
        gallery: filters.gallery.unwrap_or_default(),
        subject_id: filters.subject_id.unwrap_or_default(),
        from: timestamp("from", filters.from)?,
        to: timestamp("to", filters.to)?,
        page_size: page.limit()?,
        page_token: page.numeric_cursor()?,
        descending,
        case_ref: filters.case_ref.unwrap_or_default(),
    };
    let mut audit = gateway.audit.clone();
    let answer = audit.query(caller.request(message)).await?.into_inner();
    Ok(Json(LeafPage {
        items: answer.leaves.into_iter().map(LeafJson::from).collect(),
        next_cursor: crate::next_cursor(answer.next_page_token),
    }))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CheckpointJson {
    pub origin: String,
    pub tree_size: u64,
    /// Hex.
    pub root_hash: String,
    pub signed_at: Option<String>,
    /// Seconds since it was signed.
    pub age_seconds: i64,
    /// The whole signed note (C2SP tlog-checkpoint), as a verifier checks it.
    pub note: String,
}

impl From<v1::Checkpoint> for CheckpointJson {
    fn from(checkpoint: v1::Checkpoint) -> Self {
        let v1::Checkpoint { origin, tree_size, root_hash, signature: _, signed_at, note } = checkpoint;
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        Self {
            origin,
            tree_size,
            root_hash: hex::encode(root_hash),
            age_seconds: signed_at.as_ref().map_or(0, |t| now - t.seconds),
            signed_at: signed_at.as_ref().map(crate::rfc3339),
            note,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ProofJson {
    pub leaf_index: u64,
    pub tree_size: u64,
    /// Hex, in RFC 9162 order.
    pub hashes: Vec<String>,
}

/// One leaf, its inclusion proof, the checkpoint it verifies against, and whether it does.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LeafProofJson {
    pub leaf: LeafJson,
    pub proof: ProofJson,
    pub checkpoint: CheckpointJson,
    /// The leaf's bytes hash to its leaf hash, the proof leads from it to the checkpoint's root,
    /// and the checkpoint's signature is the log's key's.
    pub verified: bool,
    /// Why not, when not verified.
    pub problem: Option<String>,
}

fn hash(bytes: &[u8]) -> Option<Hash> {
    bytes.try_into().ok()
}

/// Checks the leaf, the proof and the signed checkpoint; the problem found, if any.
fn check(
    leaf: &v1::AuditLeaf,
    proof: &v1::InclusionProof,
    checkpoint: &v1::Checkpoint,
    key: &v1::PublicKey,
) -> Option<String> {
    if leaf_hash(&leaf.leaf).as_slice() != leaf.leaf_hash.as_slice() {
        return Some("the leaf's bytes do not hash to its leaf hash".into());
    }
    let Ok(key) = ed25519_dalek::VerifyingKey::try_from(key.key.as_slice()) else {
        return Some("the log's public key is malformed".into());
    };
    let signed = match biomatch_auditlog::checkpoint::open(&checkpoint.note, &key) {
        Ok(signed) => signed,
        Err(e) => return Some(format!("the checkpoint does not verify: {e}")),
    };
    let (Some(leaf_hash), Some(path)) =
        (hash(&leaf.leaf_hash), proof.hashes.iter().map(|h| hash(h)).collect::<Option<Vec<_>>>())
    else {
        return Some("a hash has the wrong length".into());
    };
    match verify_inclusion(leaf.index, signed.size, &leaf_hash, &path, &signed.root) {
        Ok(()) => None,
        Err(e) => Some(format!("the inclusion proof does not verify: {e}")),
    }
}

/// One leaf with its inclusion proof in the latest signed checkpoint (one is signed now if the
/// leaf is newer than the latest).
#[utoipa::path(get, path = "/v1/audit/leaves/{index}", tag = "audit", params(("index" = u64, Path)),
    responses((status = 200, body = LeafProofJson), (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
pub async fn get_leaf(
    State(gateway): State<Gateway>,
    caller: Caller,
    Path(index): Path<u64>,
) -> Result<Json<LeafProofJson>, ApiError> {
    let mut audit = gateway.audit.clone();
    let leaves =
        audit.list_leaves(caller.request(ListLeavesRequest { start: index, count: 1 })).await?.into_inner();
    let leaf = leaves.leaves.into_iter().find(|l| l.index == index).ok_or_else(|| {
        ApiError::Status(biomatch_proto::status_with(
            biomatch_domain::ErrorClass::NotFound,
            format!("no leaf {index}"),
        ))
    })?;
    let mut checkpoint = audit.get_checkpoint(caller.request(GetCheckpointRequest { sign_now: false })).await;
    if checkpoint.as_ref().map_or(true, |c| c.get_ref().tree_size <= index) {
        checkpoint = audit.get_checkpoint(caller.request(GetCheckpointRequest { sign_now: true })).await;
    }
    let checkpoint = checkpoint?.into_inner();
    let message = InclusionProofRequest { leaf_index: index, tree_size: checkpoint.tree_size };
    let proof = audit.get_inclusion_proof(caller.request(message)).await?.into_inner();
    let key = audit.get_public_key(caller.request(GetPublicKeyRequest {})).await?.into_inner();
    let problem = check(&leaf, &proof, &checkpoint, &key);
    Ok(Json(LeafProofJson {
        proof: ProofJson {
            leaf_index: proof.leaf_index,
            tree_size: proof.tree_size,
            hashes: proof.hashes.iter().map(hex::encode).collect(),
        },
        leaf: leaf.into(),
        checkpoint: checkpoint.into(),
        verified: problem.is_none(),
        problem,
    }))
}

/// The latest signed checkpoint.
#[utoipa::path(get, path = "/v1/audit/checkpoint", tag = "audit",
    responses((status = 200, body = CheckpointJson), (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
pub async fn checkpoint(
    State(gateway): State<Gateway>,
    caller: Caller,
) -> Result<Json<CheckpointJson>, ApiError> {
    let mut audit = gateway.audit.clone();
    let checkpoint = audit.get_checkpoint(caller.request(GetCheckpointRequest { sign_now: false })).await?;
    Ok(Json(checkpoint.into_inner().into()))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ConsistencyQuery {
    pub from_size: u64,
    /// 0 or absent: the latest checkpoint's size.
    #[serde(default)]
    pub to_size: u64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ConsistencyJson {
    pub from_size: u64,
    pub to_size: u64,
    /// Hex, in RFC 9162 order.
    pub hashes: Vec<String>,
}

/// A proof that the tree of `to_size` leaves extends the tree of `from_size` leaves.
#[utoipa::path(get, path = "/v1/audit/consistency", tag = "audit", params(ConsistencyQuery),
    responses((status = 200, body = ConsistencyJson), (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
pub async fn consistency(
    State(gateway): State<Gateway>,
    caller: Caller,
    Query(sizes): Query<ConsistencyQuery>,
) -> Result<Json<ConsistencyJson>, ApiError> {
    let mut audit = gateway.audit.clone();
    let message = ConsistencyProofRequest { from_size: sizes.from_size, to_size: sizes.to_size };
    let proof = audit.get_consistency_proof(caller.request(message)).await?.into_inner();
    Ok(Json(ConsistencyJson {
        from_size: proof.from_size,
        to_size: proof.to_size,
        hashes: proof.hashes.iter().map(hex::encode).collect(),
    }))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PublicKeyJson {
    /// `Ed25519`.
    pub algorithm: String,
    /// Base64 of the raw 32-byte key.
    pub key: String,
    /// Hex of the signed-note key id.
    pub key_id: String,
    pub origin: String,
}

/// The key that signs the log's checkpoints.
#[utoipa::path(get, path = "/v1/audit/public-key", tag = "audit",
    responses((status = 200, body = PublicKeyJson), (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
pub async fn public_key(
    State(gateway): State<Gateway>,
    caller: Caller,
) -> Result<Json<PublicKeyJson>, ApiError> {
    let mut audit = gateway.audit.clone();
    let v1::PublicKey { algorithm, key, key_id, origin } =
        audit.get_public_key(caller.request(GetPublicKeyRequest {})).await?.into_inner();
    Ok(Json(PublicKeyJson { algorithm, key: BASE64.encode(key), key_id, origin }))
}

#[cfg(test)]
#[path = "audit_tests.rs"]
mod tests;
