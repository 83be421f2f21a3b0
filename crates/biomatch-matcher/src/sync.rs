//! Loading shards from the store and applying the change log.

use crate::batch::Batching;
use crate::shards::{Assignment, Shard, Shards};
use crate::snapshot::SnapshotStore;
use biomatch_crypto::KeyStore;
use biomatch_domain::{Classified, ErrorClass, Template};
use biomatch_proto::{status_from, status_with};
use biomatch_store::{Change, ChangeOp, GalleryRecord, GalleryStore, StoreError, TemplateRow};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{Notify, watch};
use tonic::Status;

const PAGE: u32 = 4096;

/// Why a matcher could not load or update a shard. Each keeps its own class, so a missing data
/// key is `UNAVAILABLE` here as at ingest, and a template that does not open is `INTERNAL`.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("gallery data key: {0}")]
    Key(#[from] biomatch_crypto::CryptoError),
    #[error("template {id} does not open: {source}")]
    Template { id: i64, source: biomatch_crypto::CryptoError },
    #[error("template {0} has the wrong length")]
    Length(i64),
    #[error("index update failed: {0}")]
    Index(#[from] biomatch_index::IndexError),
    #[error("snapshot task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl Classified for SyncError {
    fn class(&self) -> ErrorClass {
        match self {
            SyncError::Store(e) => e.class(),
            SyncError::Key(e) => e.class(),
            SyncError::Template { .. } | SyncError::Length(_) | SyncError::Task(_) => ErrorClass::Internal,
            SyncError::Index(e) => e.class(),
        }
    }
}

/// What a matcher holds and how it serves and persists it.
#[derive(Debug, Clone)]
pub struct MatcherOptions {
    pub assignment: Assignment,
    pub batching: Batching,
    /// Where encrypted shard snapshots are kept; `None`: none (restart rebuilds from the store).
    pub snapshot_dir: Option<PathBuf>,
}

/// Keeps a matcher's shards equal to the store as of `applied()`.
pub struct Syncer {
    store: Arc<dyn GalleryStore>,
    keys: Arc<dyn KeyStore>,
    assignment: Assignment,
    shards: Shards,
    snapshots: Option<Arc<SnapshotStore>>,
    applied: AtomicU64,
    ready: AtomicBool,
    /// Galleries of the store whose data key was destroyed (by id): not served, and searching
    /// them is refused as such. Only a store restored from before a gallery's deletion has one.
    shredded: std::sync::Mutex<HashMap<i64, String>>,
    /// One catch-up at a time, so changes apply in order.
    catching_up: tokio::sync::Mutex<()>,
}

impl Syncer {
    /// Loads every assigned shard, from its snapshot when there is a good one, otherwise from the
    /// store; then replays the change log from the oldest position loaded. The matcher is ready
    /// when this returns.
    pub async fn start(
        store: Arc<dyn GalleryStore>,
        keys: Arc<dyn KeyStore>,
        options: MatcherOptions,
    ) -> Result<Arc<Self>, SyncError> {
        let snapshots = options.snapshot_dir.map(|dir| Arc::new(SnapshotStore::new(dir, keys.clone())));
        let syncer = Arc::new(Self {
            store,
            keys,
            assignment: options.assignment,
            shards: Shards::new(options.batching),
            snapshots,
            applied: AtomicU64::new(0),
            ready: AtomicBool::new(false),
            shredded: std::sync::Mutex::new(HashMap::new()),
            catching_up: tokio::sync::Mutex::new(()),
        });
        // Everything committed up to `head` is in what we load next; later changes are replayed
        // by the tail, which is harmless for those already loaded.
        let head = syncer.store.head_seq().await?;
        let (mut templates, mut from) = (0usize, head);
        for gallery in syncer.store.galleries().await? {
            let (loaded, oldest) = syncer.load_gallery(&gallery, Some(head), head).await?;
            templates += loaded;
            from = from.min(oldest);
        }
        // Replaying entries a shard already holds is harmless (entries name subjects).
        syncer.applied.store(from, Ordering::SeqCst);
        syncer.catch_up().await?;
        syncer.record_metrics(syncer.applied());
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

    /// Whether `gallery` is in the store but its data key was destroyed (crypto-shredded).
    pub fn is_shredded(&self, gallery: &str) -> bool {
        self.shredded().values().any(|name| name == gallery)
    }

    fn shredded(&self) -> std::sync::MutexGuard<'_, HashMap<i64, String>> {
        self.shredded.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
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

    /// Applies every committed change after `applied()`. While it works, the gauge
    /// `biomatch_matcher_change_lag` holds how many changes it is behind the store (one change log
    /// for all the shards of the process); it is 0 once caught up.
    pub async fn catch_up(&self) -> Result<u64, SyncError> {
        let _one = self.catching_up.lock().await;
        // The store's head is asked for once, and only when there is something to apply (not on
        // every idle poll).
        let mut head = None;
        loop {
            let changes = self.store.changes_after(self.applied(), 512).await?;
            if changes.is_empty() {
                metrics::gauge!("biomatch_matcher_change_lag").set(0.0);
                return Ok(self.applied());
            }
            let head = match head {
                Some(head) => head,
                None => {
                    let seq = self.store.head_seq().await?;
                    let behind = seq.saturating_sub(self.applied());
                    metrics::gauge!("biomatch_matcher_change_lag").set(behind as f64);
                    *head.insert(seq)
                }
            };
            // The batch's last position is published only after the gauges describe it, so a
            // reader that sees it applied also sees the metrics of it.
            let last = changes.last().map_or(0, |c| c.seq);
            for change in changes {
                self.apply(&change).await?;
                if change.seq != last {
                    self.applied.store(change.seq, Ordering::SeqCst);
                }
            }
            metrics::gauge!("biomatch_matcher_change_lag").set(head.saturating_sub(last) as f64);
            self.record_metrics(last);
            self.applied.store(last, Ordering::SeqCst);
        }
    }

    async fn apply(&self, change: &Change) -> Result<(), SyncError> {
        match change.op {
            ChangeOp::CreateGallery | ChangeOp::Upsert if !self.shards.knows(change.gallery_id) => {
                // Unknown gallery: created after we loaded. If it is gone again, a later
                // DropGallery entry follows and there is nothing to do.
                if let Some(gallery) = self.store.gallery_by_id(change.gallery_id).await? {
                    self.load_gallery(&gallery, None, change.seq).await?;
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
                shard.replace_subject(&change.subject_id, &refs)?;
                shard.tune_if_due();
            }
            ChangeOp::Delete => {
                if let Some(shard) = self.shards.get_by_id(change.gallery_id, change.shard) {
                    shard.remove_subject(&change.subject_id)?;
                }
            }
            ChangeOp::Settings => {
                if let Some(gallery) = self.store.gallery_by_id(change.gallery_id).await? {
                    self.apply_tuning(&gallery)?;
                }
                self.shards.settings_changed(change.gallery_id, change.seq);
            }
            ChangeOp::DropGallery => {
                self.shards.drop_gallery(change.gallery_id);
                self.shredded().remove(&change.gallery_id);
                if let Some(snapshots) = &self.snapshots {
                    snapshots.remove_gallery(change.gallery_id);
                }
            }
        }
        Ok(())
    }

    /// Creates the assigned shards of a gallery and fills them, from snapshots no newer than
    /// `snapshots_up_to` when given, otherwise from the store. `settings_seq`: a change position
    /// at or after the gallery's last settings change. Returns the templates loaded and the oldest
    /// change position among the snapshots used (`u64::MAX` if none).
    async fn load_gallery(
        &self,
        gallery: &GalleryRecord,
        snapshots_up_to: Option<u64>,
        settings_seq: u64,
    ) -> Result<(usize, u64), SyncError> {
        // A gallery whose key was destroyed is in the store only when the store was restored
        // from before its deletion: its templates cannot open, so it is left out (and searching
        // it refused) rather than stopping every other gallery from loading. A key that is
        // merely missing is not skipped: that key store is incomplete, and decoding fails below.
        if let Err(e @ biomatch_crypto::CryptoError::Destroyed(_)) = self.keys.get(&gallery.key_ref) {
            let name = &gallery.settings.name;
            tracing::warn!(gallery = %name, error = %e, "gallery not served: its data key was destroyed; delete it again");
            self.shredded().insert(gallery.id, name.to_string());
            return Ok((0, u64::MAX));
        }
        let dimension = gallery.settings.dimension as usize;
        let shards = self.shards.add_gallery(gallery, &self.assignment, settings_seq)?;
        let (mut loaded, mut oldest) = (0, u64::MAX);
        for shard in shards {
            if let (Some(snapshots), Some(head)) = (&self.snapshots, snapshots_up_to) {
                let (snapshots, record, number) = (snapshots.clone(), gallery.clone(), shard.number());
                let restored =
                    tokio::task::spawn_blocking(move || snapshots.load(&record, number, head)).await?;
                if let Some((index, seq)) = restored {
                    loaded += index.template_count();
                    oldest = oldest.min(seq);
                    shard.restore(index, seq);
                    continue;
                }
            }
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
                shard.replace_subject(subject, &refs)?;
                loaded += refs.len();
            }
        }
        self.apply_tuning(gallery)?;
        for shard in self.shards.of_gallery(gallery.id) {
            shard.tune_if_due();
        }
        Ok((loaded, oldest))
    }

    /// Searches the gallery's shards with its recorded settings, if it has any.
    fn apply_tuning(&self, gallery: &GalleryRecord) -> Result<(), SyncError> {
        if let Some(tuning) = &gallery.tuning {
            for shard in self.shards.of_gallery(gallery.id) {
                shard.apply_tuning(tuning)?;
            }
        }
        Ok(())
    }

    /// Gauges an alert can watch: the change position applied and each shard's size (labels are
    /// gallery names and shard numbers, never subject ids).
    fn record_metrics(&self, applied: u64) {
        metrics::gauge!("biomatch_matcher_applied_change_seq").set(applied as f64);
        for shard in self.shards.all() {
            let (templates, subjects) = shard.counts();
            let labels = [("gallery", shard.gallery().to_owned()), ("shard", shard.number().to_string())];
            metrics::gauge!("biomatch_matcher_shard_templates", &labels).set(templates as f64);
            metrics::gauge!("biomatch_matcher_shard_subjects", &labels).set(subjects as f64);
        }
    }

    /// Writes an encrypted snapshot of every shard, all at one change position (changes wait
    /// meanwhile). Returns that position.
    pub async fn snapshot_all(&self) -> std::io::Result<u64> {
        let Some(snapshots) = &self.snapshots else { return Ok(self.applied()) };
        let _one = self.catching_up.lock().await;
        let seq = self.applied();
        for shard in self.shards.all() {
            let Some((_, key_ref)) = self.shards.gallery_of(shard.gallery_id()) else { continue };
            let snapshots = snapshots.clone();
            tokio::task::spawn_blocking(move || {
                let bytes = shard.snapshot_bytes().map_err(std::io::Error::other)?;
                snapshots.write((shard.gallery_id(), &key_ref), shard.number(), seq, bytes)
            })
            .await
            .map_err(std::io::Error::other)??;
        }
        Ok(seq)
    }

    /// Snapshots every `interval` when something changed, and once more when `stopped` fires.
    pub async fn snapshot_loop(self: Arc<Self>, interval: Duration, mut stopped: watch::Receiver<bool>) {
        let mut written = None;
        loop {
            let stop = tokio::select! {
                () = tokio::time::sleep(interval) => false,
                _ = stopped.wait_for(|s| *s) => true,
            };
            if stop {
                // A snapshot at shutdown holds everything committed, so the restart replays nothing.
                if let Err(e) = self.catch_up().await {
                    tracing::warn!(error = %e, "change log catch-up before the final snapshot failed");
                }
            }
            if written != Some(self.applied()) {
                match self.snapshot_all().await {
                    Ok(seq) => {
                        tracing::debug!(seq, "shard snapshots written");
                        written = Some(seq);
                    }
                    Err(e) => tracing::warn!(error = %e, "shard snapshots failed"),
                }
            }
            if stop {
                return;
            }
        }
    }
}

impl Syncer {
    /// The probe's best cosine against the subject's enrolled templates, read from the store and
    /// compared exactly whatever the shard's index kind (an IVF-PQ shard holds only codes);
    /// `None` when the subject has no templates. Returns (score, templates).
    pub async fn score(
        &self,
        shard: &Shard,
        subject: &str,
        probe: &[f32],
    ) -> Result<Option<(f32, usize)>, Status> {
        let Some((dimension, key_ref)) = self.shards.gallery_of(shard.gallery_id()) else {
            return Ok(None);
        };
        let rows =
            self.store.subject_templates(shard.gallery_id(), subject).await.map_err(|e| status_from(&e))?;
        let templates = self.decode(&rows, &key_ref, dimension).map_err(|e| status_from(&e))?;
        let best = templates
            .iter()
            .map(|(_, t)| t.values().iter().zip(probe).map(|(a, b)| a * b).sum::<f32>())
            .fold(None, |best: Option<f32>, s| Some(best.map_or(s, |b| b.max(s))));
        Ok(best.map(|score| (score, templates.len())))
    }

    /// Opens sealed template rows with the gallery's data key (the context binds each row to its
    /// gallery and subject) and decodes them.
    fn decode(
        &self,
        rows: &[TemplateRow],
        key_ref: &str,
        dimension: usize,
    ) -> Result<Vec<(i64, Template)>, SyncError> {
        // A subject deleted with its gallery has no rows, and its key may be destroyed already.
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let key = self.keys.get(key_ref)?;
        rows.iter()
            .map(|row| {
                let context = biomatch_crypto::template_context(key_ref, &row.subject_id);
                let plain = key
                    .open(&row.vector, &context)
                    .map_err(|source| SyncError::Template { id: row.id, source })?;
                Template::from_le_bytes(&plain, dimension)
                    .map(|t| (row.id, t))
                    .ok_or(SyncError::Length(row.id))
            })
            .collect()
    }
}
