//! Loading shards from the store and applying the change log.

use crate::shards::{Assignment, Shards};
use biomatch_crypto::KeyStore;
use biomatch_domain::{ErrorClass, Template};
use biomatch_proto::{status_from, status_with};
use biomatch_store::{Change, ChangeOp, GalleryRecord, GalleryStore, StoreError, TemplateRow};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::Notify;
use tonic::Status;

const PAGE: u32 = 4096;

/// Keeps a matcher's shards equal to the store as of `applied()`.
pub struct Syncer {
    store: Arc<dyn GalleryStore>,
    keys: Arc<dyn KeyStore>,
    assignment: Assignment,
    shards: Shards,
    applied: AtomicU64,
    ready: AtomicBool,
    /// One catch-up at a time, so changes apply in order.
    catching_up: tokio::sync::Mutex<()>,
}

impl Syncer {
    /// Loads every assigned shard from the store; the matcher is ready when this returns.
    pub async fn start(
        store: Arc<dyn GalleryStore>,
        keys: Arc<dyn KeyStore>,
        assignment: Assignment,
    ) -> Result<Arc<Self>, StoreError> {
        let syncer = Arc::new(Self {
            store,
            keys,
            assignment,
            shards: Shards::default(),
            applied: AtomicU64::new(0),
            ready: AtomicBool::new(false),
            catching_up: tokio::sync::Mutex::new(()),
        });
        // Everything committed up to `head` is in what we load next; later changes are replayed
        // by the tail, which is harmless for those already loaded.
        let head = syncer.store.head_seq().await?;
        let mut templates = 0usize;
        for gallery in syncer.store.galleries().await? {
            templates += syncer.load_gallery(&gallery).await?;
        }
        syncer.applied.store(head, Ordering::SeqCst);
        syncer.catch_up().await?;
        syncer.ready.store(true, Ordering::SeqCst);
        tracing::info!(applied = syncer.applied(), templates, "matcher shards loaded");
        Ok(syncer)
    }

    /// Applies new changes whenever `changed` fires, and every `poll` regardless.
    pub async fn tail(self: Arc<Self>, changed: Arc<Notify>, poll: Duration) {
        loop {
            tokio::select! {
                () = changed.notified() => {}
                () = tokio::time::sleep(poll) => {}
            }
            if let Err(e) = self.catch_up().await {
                tracing::warn!(error = %e, "change log catch-up failed, retrying");
            }
        }
    }

    pub fn shards(&self) -> &Shards {
        &self.shards
    }

    pub fn applied(&self) -> u64 {
        self.applied.load(Ordering::SeqCst)
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// Catches up until at least `min` is applied (0: no wait); returns the applied position.
    pub async fn catch_up_to(&self, min: u64) -> Result<u64, Status> {
        if self.applied() >= min {
            return Ok(self.applied());
        }
        let applied = self.catch_up().await.map_err(|e| status_from(&e))?;
        if applied < min {
            return Err(status_with(
                ErrorClass::FailedPrecondition,
                format!("change {min} is not in the gallery store (latest is {applied})"),
            ));
        }
        Ok(applied)
    }

    /// Applies every committed change after `applied()`.
    pub async fn catch_up(&self) -> Result<u64, StoreError> {
        let _one = self.catching_up.lock().await;
        loop {
            let changes = self.store.changes_after(self.applied(), 512).await?;
            if changes.is_empty() {
                return Ok(self.applied());
            }
            for change in changes {
                self.apply(&change).await?;
                self.applied.store(change.seq, Ordering::SeqCst);
            }
        }
    }

    async fn apply(&self, change: &Change) -> Result<(), StoreError> {
        match change.op {
            ChangeOp::CreateGallery | ChangeOp::Upsert if !self.shards.knows(change.gallery_id) => {
                // Unknown gallery: created after we loaded. If it is gone again, a later
                // DropGallery entry follows and there is nothing to do.
                if let Some(gallery) = self.store.gallery_by_id(change.gallery_id).await? {
                    self.load_gallery(&gallery).await?;
                }
            }
            ChangeOp::CreateGallery => {}
            ChangeOp::Upsert => {
                let (Some(shard), Some((dimension, key_ref))) = (
                    self.shards.get_by_id(change.gallery_id, change.shard),
                    self.shards.gallery_of(change.gallery_id),
                ) else {
                    return Ok(());
                };
                let rows = self.store.subject_templates(change.gallery_id, &change.subject_id).await?;
                let decoded = self.decode(&rows, &key_ref, dimension)?;
                let refs: Vec<(i64, &[f32])> = decoded.iter().map(|(id, t)| (*id, t.values())).collect();
                shard.replace_subject(&change.subject_id, &refs).map_err(index_failed)?;
            }
            ChangeOp::Delete => {
                if let Some(shard) = self.shards.get_by_id(change.gallery_id, change.shard) {
                    shard.remove_subject(&change.subject_id).map_err(index_failed)?;
                }
            }
            ChangeOp::DropGallery => self.shards.drop_gallery(change.gallery_id),
        }
        Ok(())
    }

    /// Creates the assigned shards of a gallery and fills them from the store.
    async fn load_gallery(&self, gallery: &GalleryRecord) -> Result<usize, StoreError> {
        let dimension = gallery.dimension as usize;
        let shards = self.shards.add_gallery(gallery, &self.assignment).map_err(index_failed)?;
        let mut loaded = 0;
        for shard in shards {
            let mut by_subject: HashMap<String, Vec<(i64, Template)>> = HashMap::new();
            let mut after = 0;
            loop {
                let page = self.store.shard_templates(gallery.id, shard.number(), after, PAGE).await?;
                let Some(last) = page.last() else { break };
                after = last.id;
                for (row, (id, template)) in
                    page.iter().zip(self.decode(&page, &gallery.key_ref, dimension)?)
                {
                    by_subject.entry(row.subject_id.clone()).or_default().push((id, template));
                }
            }
            for (subject, templates) in &by_subject {
                let refs: Vec<(i64, &[f32])> = templates.iter().map(|(id, t)| (*id, t.values())).collect();
                shard.replace_subject(subject, &refs).map_err(index_failed)?;
                loaded += refs.len();
            }
        }
        Ok(loaded)
    }
}

impl Syncer {
    /// Opens sealed template rows with the gallery's data key (the context binds each row to its
    /// gallery and subject) and decodes them.
    fn decode(
        &self,
        rows: &[TemplateRow],
        key_ref: &str,
        dimension: usize,
    ) -> Result<Vec<(i64, Template)>, StoreError> {
        // A subject deleted with its gallery has no rows, and its key may be destroyed already.
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let key = self.keys.get(key_ref).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        rows.iter()
            .map(|row| {
                let context = biomatch_crypto::template_context(key_ref, &row.subject_id);
                let plain = key
                    .open(&row.vector, &context)
                    .map_err(|e| StoreError::Corrupt(format!("template {}: {e}", row.id)))?;
                Template::from_le_bytes(&plain, dimension)
                    .map(|t| (row.id, t))
                    .ok_or_else(|| StoreError::Corrupt(format!("template {} has the wrong length", row.id)))
            })
            .collect()
    }
}

fn index_failed(e: biomatch_index::IndexError) -> StoreError {
    StoreError::Corrupt(format!("index update failed: {e}"))
}
