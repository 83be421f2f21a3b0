//! Rows and write requests of the stores.

use biomatch_domain::{Gallery, SubjectId};
use serde::{Deserialize, Serialize};

/// A stored gallery: its settings, its row id and the reference of its data key.
#[derive(Debug, Clone, PartialEq)]
pub struct GalleryRecord {
    pub id: i64,
    /// Names the gallery's data key in the key store.
    pub key_ref: String,
    pub settings: Gallery,
    /// Search settings chosen by tuning or pinned; `None` until first tuned.
    pub tuning: Option<biomatch_domain::SearchTuning>,
    /// Set when the threshold follows the gallery's size to keep a target FPIR.
    pub threshold_policy: Option<biomatch_domain::ThresholdPolicy>,
}

/// How much a gallery holds: a count over the whole gallery, so asked for only where shown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GalleryCounts {
    pub subjects: u64,
    pub templates: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SubjectRecord {
    pub subject_id: String,
    pub shard: u32,
    pub model_id: String,
    pub template_count: u32,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub expires_at_ms: Option<i64>,
}

/// An idempotency key and the hash of the request that first used it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idempotency {
    pub key: String,
    pub request_hash: String,
}

/// One subject's enrolment.
#[derive(Debug, Clone)]
pub struct EnrollWrite {
    pub subject: SubjectId,
    pub shard: u32,
    pub model_id: String,
    /// Templates sealed under the gallery's data key; the store never sees a plaintext vector.
    pub sealed_templates: Vec<Vec<u8>>,
    /// Replace the subject's templates instead of adding to them.
    pub replace: bool,
    pub idempotency: Option<Idempotency>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnrollResult {
    pub subject_id: String,
    pub templates_added: u32,
    pub template_count: u32,
    pub change_seq: u64,
}

/// A write's result, or the first result of an earlier request with the same idempotency key.
#[derive(Debug, Clone, PartialEq)]
pub struct Written<T> {
    pub value: T,
    pub replayed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeOp {
    /// A gallery was created: matchers set up its shards.
    CreateGallery,
    /// The subject's templates changed: reload them.
    Upsert,
    /// The subject is gone.
    Delete,
    /// The whole gallery is gone.
    DropGallery,
    /// The gallery's settings changed (its threshold): roles caching them read them again.
    Settings,
}

impl ChangeOp {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ChangeOp::CreateGallery => "create_gallery",
            ChangeOp::Upsert => "upsert",
            ChangeOp::Delete => "delete",
            ChangeOp::DropGallery => "drop_gallery",
            ChangeOp::Settings => "settings",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "create_gallery" => Some(ChangeOp::CreateGallery),
            "upsert" => Some(ChangeOp::Upsert),
            "delete" => Some(ChangeOp::Delete),
            "drop_gallery" => Some(ChangeOp::DropGallery),
            "settings" => Some(ChangeOp::Settings),
            _ => None,
        }
    }
}

/// One change-log entry. It carries no template: a matcher reads the subject's current templates.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub seq: u64,
    pub gallery_id: i64,
    pub shard: u32,
    pub subject_id: String,
    pub op: ChangeOp,
}

#[derive(Clone, PartialEq)]
pub struct TemplateRow {
    pub id: i64,
    pub subject_id: String,
    pub shard: u32,
    pub vector: Vec<u8>,
}

impl std::fmt::Debug for TemplateRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TemplateRow")
            .field("id", &self.id)
            .field("shard", &self.shard)
            .finish_non_exhaustive()
    }
}

/// A leaf to append: its canonical bytes, their hash, and the columns queries filter on.
#[derive(Debug, Clone)]
pub struct NewAuditLeaf {
    pub leaf: Vec<u8>,
    pub leaf_hash: Vec<u8>,
    pub idempotency_key: Option<String>,
    pub appended_at_ms: i64,
    pub actor_subject: String,
    pub operation: String,
    pub gallery: String,
    pub subject_ids: Vec<String>,
    pub case_ref: String,
    /// The search, verification or change the leaf is about (a review names its search).
    pub request_id: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AuditLeafRow {
    pub index: u64,
    pub leaf: Vec<u8>,
    pub leaf_hash: Vec<u8>,
    pub chain_hash: Vec<u8>,
    pub appended_at_ms: i64,
}

/// Filters of an audit read; empty strings and `None` match everything.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub actor_subject: String,
    pub operation: String,
    pub gallery: String,
    pub subject_id: String,
    pub case_ref: String,
    pub request_id: String,
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    /// Exclusive bound on the leaf index to continue from.
    pub after: Option<u64>,
    pub descending: bool,
    pub limit: u32,
}

/// A subject whose retention has ended, not yet removed.
#[derive(Debug, Clone, PartialEq)]
pub struct ExpiredSubject {
    pub gallery_id: i64,
    pub gallery: String,
    pub subject_id: String,
}

/// A deleted gallery: its change-log position and the data key that is to be destroyed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeletedGallery {
    pub change_seq: u64,
    pub key_ref: String,
}

/// A subject removed because its retention ended.
#[derive(Debug, Clone, PartialEq)]
pub struct PurgedSubject {
    pub gallery: String,
    pub subject_id: String,
    pub change_seq: u64,
}

/// A signed checkpoint as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointRow {
    pub tree_size: u64,
    pub root_hash: Vec<u8>,
    /// The signed note.
    pub note: String,
    pub signed_at_ms: i64,
}
