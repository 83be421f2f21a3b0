//! The shards a matcher holds.

use crate::batch::{Batcher, Batching};
use biomatch_domain::IndexKind;
use biomatch_index::{IndexError, ScoredSubject, ShardIndex};
use biomatch_store::GalleryRecord;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

/// Which shards a matcher holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Assignment {
    /// Every shard of every gallery (the single-process default).
    All,
    /// Only these (gallery name, shard) pairs; gallery `*` means every gallery (how a
    /// StatefulSet pod takes "shard N of everything").
    Only(Vec<(String, u32)>),
}

impl Assignment {
    pub fn holds(&self, gallery: &str, shard: u32) -> bool {
        match self {
            Assignment::All => true,
            Assignment::Only(list) => list.iter().any(|(g, s)| (g == gallery || g == "*") && *s == shard),
        }
    }
}

/// One shard: its index behind a lock (FAISS's Rust binding searches through `&mut`).
pub struct Shard {
    gallery_id: i64,
    gallery: String,
    number: u32,
    dimension: usize,
    kind: IndexKind,
    index: Arc<Mutex<ShardIndex>>,
    batcher: Batcher,
    restored_from: AtomicU64,
    /// The change position of the gallery's last settings change seen (or a later one).
    settings_seq: AtomicU64,
    /// A [`crate::tuning::SettingsSource`].
    pub(crate) settings_source: AtomicU8,
    /// The gallery's settings are pinned: no automatic tuning.
    pub(crate) pinned: AtomicBool,
    /// The gallery's recorded target recall (`f64` bits; 0: none recorded).
    pub(crate) target_recall: AtomicU64,
    /// A measurement (automatic tuning or `Tune`) is running on this matcher: shared by every
    /// shard it holds, so that at most one runs at a time.
    pub(crate) measuring: Arc<AtomicBool>,
    /// The version of the gallery's recorded tuning applied last (0: none).
    pub(crate) tuning_version: AtomicU64,
}

impl Shard {
    pub(crate) fn lock(&self) -> MutexGuard<'_, ShardIndex> {
        // A panic while holding the lock cannot leave FAISS half-updated in a way we could repair;
        // keep serving what is there.
        self.index.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn gallery_id(&self) -> i64 {
        self.gallery_id
    }

    pub fn gallery(&self) -> &str {
        &self.gallery
    }

    pub fn number(&self) -> u32 {
        self.number
    }

    pub fn dimension(&self) -> usize {
        self.dimension
    }

    pub fn kind(&self) -> IndexKind {
        self.kind
    }

    /// (templates, subjects)
    pub fn counts(&self) -> (usize, usize) {
        let index = self.lock();
        (index.template_count(), index.subject_count())
    }

    /// Top `k` subjects per query, batched with concurrent searches of this shard.
    pub async fn search(
        &self,
        queries: Vec<f32>,
        k: usize,
    ) -> Result<Vec<Vec<ScoredSubject>>, tonic::Status> {
        self.batcher.search(queries, k).await
    }

    pub(crate) fn replace_subject(
        &self,
        subject: &str,
        templates: &[(i64, &[f32])],
    ) -> Result<(), IndexError> {
        self.lock().replace_subject(subject, templates)
    }

    /// Puts a shard restored from a snapshot at change `seq` in place of the empty index.
    pub(crate) fn restore(&self, index: ShardIndex, seq: u64) {
        *self.lock() = index;
        self.restored_from.store(seq, Ordering::SeqCst);
    }

    /// The change position of the gallery's last settings change this matcher applied, or a later
    /// position where it cannot tell (the store's head when it loaded the gallery).
    pub fn settings_seq(&self) -> u64 {
        self.settings_seq.load(Ordering::SeqCst)
    }

    /// The change position of the snapshot this shard was restored from; 0 if none.
    pub fn restored_from(&self) -> u64 {
        self.restored_from.load(Ordering::SeqCst)
    }

    pub(crate) fn snapshot_bytes(&self) -> Result<Vec<u8>, IndexError> {
        self.lock().to_snapshot()
    }

    pub(crate) fn remove_subject(&self, subject: &str) -> Result<usize, IndexError> {
        self.lock().remove_subject(subject)
    }
}

#[cfg(test)]
impl Shard {
    /// Shard 0 of gallery `g` holding `index`, measuring under `measuring` (needs a Tokio runtime).
    pub(crate) fn for_tests(index: ShardIndex, measuring: Arc<AtomicBool>) -> Arc<Self> {
        let (dimension, kind) = (index.dimension(), index.kind());
        let index = Arc::new(Mutex::new(index));
        Arc::new(Shard {
            batcher: Batcher::start(
                index.clone(),
                dimension,
                Batching { wait: std::time::Duration::from_millis(1), max_queries: 16, threads: 1 },
            ),
            gallery_id: 1,
            gallery: "g".into(),
            number: 0,
            dimension,
            kind,
            index,
            restored_from: AtomicU64::new(0),
            settings_seq: AtomicU64::new(0),
            settings_source: AtomicU8::new(0),
            pinned: AtomicBool::new(false),
            target_recall: AtomicU64::new(0),
            measuring,
            tuning_version: AtomicU64::new(0),
        })
    }
}

/// A gallery as a matcher knows it.
struct GalleryShards {
    name: String,
    key_ref: String,
    dimension: usize,
    shards: HashMap<u32, Arc<Shard>>,
}

/// All shards held, by gallery id and by name.
pub struct Shards {
    galleries: RwLock<HashMap<i64, GalleryShards>>,
    batching: Batching,
    /// See [`Shard::measuring`].
    measuring: Arc<AtomicBool>,
}

impl Shards {
    pub fn new(batching: Batching) -> Self {
        Self { galleries: RwLock::default(), batching, measuring: Arc::default() }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<i64, GalleryShards>> {
        self.galleries.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<i64, GalleryShards>> {
        self.galleries.write().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn get(&self, gallery: &str, shard: u32) -> Option<Arc<Shard>> {
        self.read().values().find(|g| g.name == gallery).and_then(|g| g.shards.get(&shard).cloned())
    }

    pub(crate) fn get_by_id(&self, gallery_id: i64, shard: u32) -> Option<Arc<Shard>> {
        self.read().get(&gallery_id).and_then(|g| g.shards.get(&shard).cloned())
    }

    pub(crate) fn knows(&self, gallery_id: i64) -> bool {
        self.read().contains_key(&gallery_id)
    }

    pub fn all(&self) -> Vec<Arc<Shard>> {
        let mut all: Vec<Arc<Shard>> =
            self.read().values().flat_map(|g| g.shards.values().cloned()).collect();
        all.sort_by(|a, b| (a.gallery(), a.number()).cmp(&(b.gallery(), b.number())));
        all
    }

    /// Creates empty shards for the assigned part of a gallery whose settings are current as of
    /// change `settings_seq`.
    pub(crate) fn add_gallery(
        &self,
        gallery: &GalleryRecord,
        assignment: &Assignment,
        settings_seq: u64,
    ) -> Result<Vec<Arc<Shard>>, IndexError> {
        let dimension = gallery.settings.dimension as usize;
        let mut shards = HashMap::new();
        for number in
            (0..gallery.settings.shard_count).filter(|s| assignment.holds(gallery.settings.name.as_str(), *s))
        {
            let index = Arc::new(Mutex::new(ShardIndex::new(dimension, &gallery.settings.index)?));
            let shard = Shard {
                batcher: Batcher::start(index.clone(), dimension, self.batching),
                gallery_id: gallery.id,
                gallery: gallery.settings.name.to_string(),
                number,
                dimension,
                kind: gallery.settings.index.kind,
                index,
                restored_from: AtomicU64::new(0),
                settings_seq: AtomicU64::new(settings_seq),
                settings_source: AtomicU8::new(0),
                pinned: AtomicBool::new(false),
                target_recall: AtomicU64::new(0),
                measuring: self.measuring.clone(),
                tuning_version: AtomicU64::new(0),
            };
            shards.insert(number, Arc::new(shard));
        }
        let created = shards.values().cloned().collect();
        let entry = GalleryShards {
            name: gallery.settings.name.to_string(),
            key_ref: gallery.key_ref.clone(),
            dimension,
            shards,
        };
        self.write().insert(gallery.id, entry);
        Ok(created)
    }

    /// Records a settings change of a gallery at change `seq`.
    pub(crate) fn settings_changed(&self, id: i64, seq: u64) {
        if let Some(gallery) = self.read().get(&id) {
            for shard in gallery.shards.values() {
                shard.settings_seq.fetch_max(seq, Ordering::SeqCst);
            }
        }
    }

    /// The shards held of a gallery.
    pub(crate) fn of_gallery(&self, id: i64) -> Vec<Arc<Shard>> {
        self.read().get(&id).map(|g| g.shards.values().cloned().collect()).unwrap_or_default()
    }

    pub(crate) fn drop_gallery(&self, id: i64) {
        self.write().remove(&id);
    }

    /// (dimension, data key reference) of a gallery held here.
    pub(crate) fn gallery_of(&self, id: i64) -> Option<(usize, String)> {
        self.read().get(&id).map(|g| (g.dimension, g.key_ref.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::Assignment;

    #[test]
    fn assignments_name_shards_of_one_gallery_or_of_every_gallery() {
        let only = Assignment::Only(vec![("g".into(), 1), ("*".into(), 0)]);
        assert!(only.holds("g", 1) && only.holds("g", 0) && only.holds("other", 0));
        assert!(!only.holds("other", 1) && !only.holds("g", 2));
        assert!(Assignment::All.holds("anything", 7));
    }
}
