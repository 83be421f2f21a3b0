//! Storage of biomatch: the gallery store (galleries, subjects, templates, change log, idempotency
//! keys) and the audit store (append-only leaves), behind the [`GalleryStore`] and [`AuditStore`]
//! traits.
//!
//! One implementation, [`SqlStore`], serves both backends through sqlx's `Any` driver: SQLite files
//! in the embedded default, PostgreSQL in a cluster. The SQL is shared; the backends differ only in
//! their migrations and in how a writer is serialised (one writer connection for SQLite, a
//! transaction-scoped advisory lock for PostgreSQL), which keeps change-log sequence numbers and
//! audit leaf indexes gap-free and committed in order. The same test suite runs against both.
#![forbid(unsafe_code)]

mod attempts;
mod audit;
mod bounded;
mod error;
mod gallery;
mod model;
mod sql;
pub mod testing;
mod wal;

pub use attempts::{AttemptFate, KEPT_FOR_MS as ATTEMPTS_KEPT_FOR_MS, as_attempt};
pub use bounded::Bounded;
pub use error::{StoreError, fate_unknown};
pub use model::{
    AuditLeafRow, AuditQuery, Change, ChangeOp, CheckpointRow, DeletedGallery, EnrollResult, EnrollWrite,
    ExpiredSubject, GalleryCounts, GalleryRecord, Idempotency, NewAuditLeaf, PurgedSubject, SubjectRecord,
    TemplateRow, Written,
};
pub use sql::{Backend, SqlStore};

use async_trait::async_trait;
use biomatch_domain::{Gallery, GalleryName, SubjectId};

/// Galleries and their templates. Only the ingest role writes; matchers read the change log.
#[async_trait]
pub trait GalleryStore: Send + Sync + 'static {
    /// Creates a gallery with `spec`'s settings (the store stamps `created_at_ms` and
    /// `threshold_version` 1) whose data key the key store knows as `key_ref`. With an idempotency
    /// key, a repeat of the same request answers the gallery it made (`replayed`, `key_ref`
    /// unused; [`StoreError::GalleryNotFound`] when it was deleted since); the same key with
    /// another hash is [`StoreError::IdempotencyConflict`].
    async fn create_gallery(
        &self,
        spec: &Gallery,
        threshold_policy: Option<&biomatch_domain::ThresholdPolicy>,
        key_ref: &str,
        idempotency: Option<&Idempotency>,
        now_ms: i64,
    ) -> Result<Written<GalleryRecord>, StoreError>;
    async fn gallery(&self, name: &GalleryName) -> Result<GalleryRecord, StoreError>;
    async fn gallery_by_id(&self, id: i64) -> Result<Option<GalleryRecord>, StoreError>;
    /// Counts the gallery's subjects and templates (reads the whole gallery: not for hot paths).
    async fn gallery_counts(&self, gallery_id: i64) -> Result<GalleryCounts, StoreError>;
    async fn galleries(&self) -> Result<Vec<GalleryRecord>, StoreError>;
    /// Sets the gallery's threshold and its policy (`None`: a fixed threshold), raising its
    /// threshold version and appending a [`ChangeOp::Settings`] change when the value changes.
    /// With `only_if`, only while the stored policy is still that one
    /// ([`StoreError::ThresholdChanged`] otherwise): a re-derivation never undoes a change
    /// another process made meanwhile.
    async fn set_threshold(
        &self,
        name: &GalleryName,
        threshold: f32,
        threshold_policy: Option<&biomatch_domain::ThresholdPolicy>,
        only_if: Option<&biomatch_domain::ThresholdPolicy>,
        now_ms: i64,
    ) -> Result<GalleryRecord, StoreError>;
    /// Records the gallery's search settings, one version above the last, and appends a
    /// [`ChangeOp::Settings`] change so matchers apply them.
    async fn set_search_tuning(
        &self,
        name: &GalleryName,
        tuning: &biomatch_domain::SearchTuning,
        now_ms: i64,
    ) -> Result<GalleryRecord, StoreError>;
    /// Deletes the gallery with every subject and template. With an idempotency key, a repeat of
    /// the same request (same key, same request hash) answers the first result again, even though
    /// the gallery is gone; the same key with another hash is [`StoreError::IdempotencyConflict`].
    async fn delete_gallery(
        &self,
        name: &GalleryName,
        idempotency: Option<&Idempotency>,
        now_ms: i64,
    ) -> Result<Written<DeletedGallery>, StoreError>;
    /// Reads an idempotency key without writing: `Some(response)` when the same request used it
    /// before, `None` when unused, [`StoreError::IdempotencyConflict`] when another request did.
    /// Lets a writer refuse a reused key before it appends an intent leaf; the write itself
    /// checks again in its transaction.
    async fn idempotent_response(&self, idempotency: &Idempotency) -> Result<Option<String>, StoreError>;
    /// [`GalleryStore::idempotent_response`] for a batch in one read: the keys of those of
    /// `items` that another request (another hash) used.
    async fn conflicting_keys(
        &self,
        items: &[Idempotency],
    ) -> Result<std::collections::HashSet<String>, StoreError>;
    /// Writes enrolments in one transaction; each item succeeds or fails on its own.
    async fn enroll(
        &self,
        gallery: &GalleryRecord,
        items: &[EnrollWrite],
        now_ms: i64,
    ) -> Result<Vec<Result<Written<EnrollResult>, StoreError>>, StoreError>;
    async fn delete_subject(
        &self,
        gallery: &GalleryRecord,
        subject: &SubjectId,
        idempotency: Option<&Idempotency>,
        now_ms: i64,
    ) -> Result<Written<u64>, StoreError>;
    async fn subject(
        &self,
        gallery: &GalleryRecord,
        subject: &SubjectId,
    ) -> Result<SubjectRecord, StoreError>;
    /// Up to `limit` subjects whose retention ended at or before `now_ms` (read only: the purge
    /// names them in an audit intent leaf before [`GalleryStore::purge`] removes them).
    async fn expired(&self, now_ms: i64, limit: u32) -> Result<Vec<ExpiredSubject>, StoreError>;
    /// Deletes those of `subjects` whose retention still ends at or before `now_ms` (one re-enrolled
    /// meanwhile is kept), with their templates, appending a change-log entry for each; returns
    /// what was removed.
    async fn purge(&self, subjects: &[ExpiredSubject], now_ms: i64)
    -> Result<Vec<PurgedSubject>, StoreError>;
    /// Whether the change written as attempt `id` (see [`as_attempt`]) of a request with
    /// `idempotency_keys` was made, by it or by an earlier attempt that used every key; after this
    /// it never will be if it was not. Settle within [`ATTEMPTS_KEPT_FOR_MS`].
    async fn settle_attempt(&self, id: &str, idempotency_keys: &[String]) -> Result<AttemptFate, StoreError>;
    /// Forgets the attempts older than [`ATTEMPTS_KEPT_FOR_MS`]; returns how many.
    async fn forget_old_attempts(&self) -> Result<u64, StoreError>;
    /// The highest change-log sequence number committed.
    async fn head_seq(&self) -> Result<u64, StoreError>;
    async fn changes_after(&self, seq: u64, limit: u32) -> Result<Vec<Change>, StoreError>;
    async fn subject_templates(&self, gallery_id: i64, subject: &str)
    -> Result<Vec<TemplateRow>, StoreError>;
    /// One page of a shard's templates in id order, for loading a matcher shard.
    async fn shard_templates(
        &self,
        gallery_id: i64,
        shard: u32,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<TemplateRow>, StoreError>;
}

/// The audit log's leaves and signed checkpoints. Append-only: there is no update or delete
/// (and the database refuses them too).
#[async_trait]
pub trait AuditStore: Send + Sync + 'static {
    /// Appends leaves at the next indexes in one transaction (one durable commit for the batch).
    /// Each leaf's chain hash is computed by `chain` from the previous leaf's chain hash (empty
    /// before the first leaf) and its own hash. A leaf whose idempotency key was used before,
    /// in an earlier batch or earlier in this one, is not appended: the existing leaf is returned.
    async fn append_leaves(
        &self,
        leaves: Vec<NewAuditLeaf>,
        chain: for<'h> fn(previous: &'h [u8], leaf_hash: &'h [u8]) -> Vec<u8>,
    ) -> Result<Vec<Written<AuditLeafRow>>, StoreError>;
    async fn leaves(&self, start: u64, count: u32) -> Result<Vec<AuditLeafRow>, StoreError>;
    /// Only the leaf hashes, for rebuilding the Merkle tree.
    async fn leaf_hashes(&self, start: u64, count: u32) -> Result<Vec<Vec<u8>>, StoreError>;
    async fn leaf_count(&self) -> Result<u64, StoreError>;
    /// The leaf appended under `idempotency_key`, if any.
    async fn leaf_by_key(&self, idempotency_key: &str) -> Result<Option<AuditLeafRow>, StoreError>;
    async fn query_leaves(&self, query: &AuditQuery) -> Result<Vec<AuditLeafRow>, StoreError>;
    async fn add_checkpoint(&self, checkpoint: &CheckpointRow) -> Result<(), StoreError>;
    /// Checkpoints with a tree size above `after_size`, smallest first.
    async fn checkpoints(&self, after_size: u64, limit: u32) -> Result<Vec<CheckpointRow>, StoreError>;
    async fn latest_checkpoint(&self) -> Result<Option<CheckpointRow>, StoreError>;
}
