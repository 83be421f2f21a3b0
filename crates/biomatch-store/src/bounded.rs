//! [`Bounded`]: a gallery store whose calls give up after a time limit, so storage that stops
//! answering (a hung disk, a stopped database, a network partition with connections left open)
//! refuses a request with [`StoreError::Stalled`] in bounded time instead of holding it, and the
//! role's other work, until the caller's deadline, or for ever when it set none.
//!
//! A write given up on may still land once the storage answers again: that is what the client is
//! told (retry with the same idempotency key, which finds it), and what the change's intent leaf
//! already covers. Calls whose time grows with a gallery's size are not bounded: deleting a
//! gallery, counting it, finding expired subjects (the scheduled purge, no caller waiting), and
//! the matchers' reads of the change log and of whole shards.

use crate::{
    AttemptFate, Change, DeletedGallery, EnrollResult, EnrollWrite, ExpiredSubject, GalleryCounts,
    GalleryRecord, GalleryStore, Idempotency, PurgedSubject, StoreError, SubjectRecord, TemplateRow, Written,
};
use async_trait::async_trait;
use biomatch_domain::{Gallery, GalleryName, SearchTuning, SubjectId, ThresholdPolicy};
use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// `inner`, with each per-request call bounded by `limit`.
pub struct Bounded {
    inner: Arc<dyn GalleryStore>,
    limit: Duration,
}

impl Bounded {
    pub fn new(inner: Arc<dyn GalleryStore>, limit: Duration) -> Self {
        Self { inner, limit }
    }

    async fn within<T>(&self, call: impl Future<Output = Result<T, StoreError>>) -> Result<T, StoreError> {
        match tokio::time::timeout(self.limit, call).await {
            Ok(answer) => answer,
            Err(_) => {
                metrics::counter!("biomatch_storage_stalled_total", "store" => "gallery").increment(1);
                tracing::error!(
                    after_ms = self.limit.as_millis() as u64,
                    "the gallery store is not answering: the request is refused"
                );
                Err(StoreError::Stalled { after_ms: self.limit.as_millis() as u64 })
            }
        }
    }
}

#[async_trait]
impl GalleryStore for Bounded {
    async fn create_gallery(
        &self,
        spec: &Gallery,
        threshold_policy: Option<&ThresholdPolicy>,
        key_ref: &str,
        idempotency: Option<&Idempotency>,
        now_ms: i64,
    ) -> Result<Written<GalleryRecord>, StoreError> {
        self.within(self.inner.create_gallery(spec, threshold_policy, key_ref, idempotency, now_ms)).await
    }

    async fn gallery(&self, name: &GalleryName) -> Result<GalleryRecord, StoreError> {
        self.within(self.inner.gallery(name)).await
    }

    async fn gallery_by_id(&self, id: i64) -> Result<Option<GalleryRecord>, StoreError> {
        self.within(self.inner.gallery_by_id(id)).await
    }

    async fn gallery_counts(&self, gallery_id: i64) -> Result<GalleryCounts, StoreError> {
        self.inner.gallery_counts(gallery_id).await
    }

    async fn galleries(&self) -> Result<Vec<GalleryRecord>, StoreError> {
        self.within(self.inner.galleries()).await
    }

    async fn set_threshold(
        &self,
        name: &GalleryName,
        threshold: f32,
        threshold_policy: Option<&ThresholdPolicy>,
        only_if: Option<&ThresholdPolicy>,
        now_ms: i64,
    ) -> Result<GalleryRecord, StoreError> {
        self.within(self.inner.set_threshold(name, threshold, threshold_policy, only_if, now_ms)).await
    }

    async fn set_search_tuning(
        &self,
        name: &GalleryName,
        tuning: &SearchTuning,
        now_ms: i64,
    ) -> Result<GalleryRecord, StoreError> {
        self.within(self.inner.set_search_tuning(name, tuning, now_ms)).await
    }

    async fn delete_gallery(
        &self,
        name: &GalleryName,
        idempotency: Option<&Idempotency>,
        now_ms: i64,
    ) -> Result<Written<DeletedGallery>, StoreError> {
        self.inner.delete_gallery(name, idempotency, now_ms).await
    }

    async fn idempotent_response(&self, idempotency: &Idempotency) -> Result<Option<String>, StoreError> {
        self.within(self.inner.idempotent_response(idempotency)).await
    }

    async fn conflicting_keys(&self, items: &[Idempotency]) -> Result<HashSet<String>, StoreError> {
        self.within(self.inner.conflicting_keys(items)).await
    }

    async fn enroll(
        &self,
        gallery: &GalleryRecord,
        items: &[EnrollWrite],
        now_ms: i64,
    ) -> Result<Vec<Result<Written<EnrollResult>, StoreError>>, StoreError> {
        self.within(self.inner.enroll(gallery, items, now_ms)).await
    }

    async fn delete_subject(
        &self,
        gallery: &GalleryRecord,
        subject: &SubjectId,
        idempotency: Option<&Idempotency>,
        now_ms: i64,
    ) -> Result<Written<u64>, StoreError> {
        self.within(self.inner.delete_subject(gallery, subject, idempotency, now_ms)).await
    }

    async fn subject(
        &self,
        gallery: &GalleryRecord,
        subject: &SubjectId,
    ) -> Result<SubjectRecord, StoreError> {
        self.within(self.inner.subject(gallery, subject)).await
    }

    async fn expired(&self, now_ms: i64, limit: u32) -> Result<Vec<ExpiredSubject>, StoreError> {
        self.inner.expired(now_ms, limit).await
    }

    async fn purge(
        &self,
        subjects: &[ExpiredSubject],
        now_ms: i64,
    ) -> Result<Vec<PurgedSubject>, StoreError> {
        self.within(self.inner.purge(subjects, now_ms)).await
    }

    async fn settle_attempt(&self, id: &str, idempotency_keys: &[String]) -> Result<AttemptFate, StoreError> {
        self.within(self.inner.settle_attempt(id, idempotency_keys)).await
    }

    async fn forget_old_attempts(&self) -> Result<u64, StoreError> {
        self.inner.forget_old_attempts().await
    }

    async fn head_seq(&self) -> Result<u64, StoreError> {
        self.within(self.inner.head_seq()).await
    }

    async fn changes_after(&self, seq: u64, limit: u32) -> Result<Vec<Change>, StoreError> {
        self.inner.changes_after(seq, limit).await
    }

    async fn subject_templates(
        &self,
        gallery_id: i64,
        subject: &str,
    ) -> Result<Vec<TemplateRow>, StoreError> {
        self.inner.subject_templates(gallery_id, subject).await
    }

    async fn shard_templates(
        &self,
        gallery_id: i64,
        shard: u32,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<TemplateRow>, StoreError> {
        self.inner.shard_templates(gallery_id, shard, after_id, limit).await
    }
}
