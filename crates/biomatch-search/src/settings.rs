//! Gallery settings as the search role last read them from the ingest role, so an identify does
//! not cost a `GetGallery` hop.
//!
//! Every entry carries the change-log position its settings were read at (`settings_seq` on the
//! wire: the ingest role reads the log's head before the settings). Matchers follow the change
//! log and report, with every answer, the position of the last settings change of the gallery they
//! applied. An answer reporting a later position than the entry's means the settings changed
//! after they were read: the search drops the entry, reads the settings again and repeats the
//! steps that depend on them. So a cached threshold, purpose list or shard count is never used
//! once a matcher has seen it change, and a caller that waits for a change position with
//! `min_change_seq` sees the settings as of that position. A gallery that is gone shows as
//! shards that do not answer; a search from a cached entry then reads the settings again too.
//! Checks made before any matcher is asked (the probe's dimension, the purpose) can only use
//! what is cached, so entries also expire after [`TTL_MS`]: a gallery deleted and created again
//! under its name with another model or purposes is refused under its old settings for at most
//! that long.

use biomatch_domain::{ErrorClass, Gallery};
use biomatch_proto::status_with;
use std::collections::HashMap;
use std::sync::RwLock;
use tonic::Status;

/// At most this many galleries are remembered; past it the cache starts over (a gallery is only
/// cached after the ingest role found it, so only existing galleries fill it).
const MAX_ENTRIES: usize = 4096;
/// How long an entry is used before the settings are read again regardless.
pub(crate) const TTL_MS: i64 = 2_000;

/// A gallery's settings and the change position they are current at.
#[derive(Debug)]
pub(crate) struct Settings {
    pub gallery: Gallery,
    /// The change-log position the settings were read at.
    pub as_of: u64,
    /// Whether they came from the cache (not read for this request).
    pub cached: bool,
}

impl Settings {
    /// Whether a matcher's `settings_seq` shows a settings change after these were read.
    pub fn outdated_by(&self, settings_seq: u64) -> bool {
        settings_seq > self.as_of
    }
}

#[derive(Default)]
pub(crate) struct SettingsCache {
    /// name -> (settings, the change position they were read at, when they were read in ms).
    entries: RwLock<HashMap<String, (Gallery, u64, i64)>>,
}

impl SettingsCache {
    /// The settings cached for `name`, unless they are older than [`TTL_MS`] at `now_ms`.
    pub fn get(&self, name: &str, now_ms: i64) -> Option<Settings> {
        let entries = self.entries.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (gallery, as_of, read_at) = entries.get(name)?;
        let fresh = (0..TTL_MS).contains(&now_ms.saturating_sub(*read_at));
        fresh.then(|| Settings { gallery: gallery.clone(), as_of: *as_of, cached: true })
    }

    /// Remembers settings read at change position `as_of` (at `now_ms`), unless newer ones are
    /// already there.
    pub fn put(&self, gallery: &Gallery, as_of: u64, now_ms: i64) {
        let mut entries = self.entries.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if entries.len() >= MAX_ENTRIES && !entries.contains_key(gallery.name.as_str()) {
            entries.clear();
        }
        let entry =
            entries.entry(gallery.name.to_string()).or_insert_with(|| (gallery.clone(), as_of, now_ms));
        if entry.1 <= as_of {
            *entry = (gallery.clone(), as_of, now_ms);
        }
    }

    pub fn forget(&self, name: &str) {
        self.entries.write().unwrap_or_else(std::sync::PoisonError::into_inner).remove(name);
    }
}

/// The answer when the settings changed twice under one search: the caller may simply retry.
pub(crate) fn changed_meanwhile(gallery: &str) -> Status {
    status_with(
        ErrorClass::Unavailable,
        format!("the settings of gallery {gallery} changed during the search; retry it"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use biomatch_domain::{GalleryName, IndexSpec};

    fn gallery(threshold: f32) -> Gallery {
        Gallery {
            name: GalleryName::parse("g").expect("valid"),
            dimension: 4,
            shard_count: 1,
            index: IndexSpec::flat(),
            model_id: "m".into(),
            model_version: "1".into(),
            threshold,
            allowed_purposes: vec!["border".into()],
            threshold_version: 1,
            retention_seconds: 0,
            default_k: 5,
            created_at_ms: 0,
        }
    }

    #[test]
    fn newer_settings_replace_older_ones_and_never_the_reverse() {
        let cache = SettingsCache::default();
        assert!(cache.get("g", 0).is_none());
        cache.put(&gallery(0.5), 10, 0);
        let got = cache.get("g", 5).expect("cached");
        assert!(got.cached && got.as_of == 10 && got.gallery.threshold == 0.5);
        cache.put(&gallery(0.4), 7, 6);
        assert_eq!(cache.get("g", 7).expect("cached").gallery.threshold, 0.5, "an older read loses");
        cache.put(&gallery(0.6), 12, 8);
        assert_eq!(cache.get("g", 9).expect("cached").gallery.threshold, 0.6);
        assert!(cache.get("g", 9).expect("cached").outdated_by(13));
        assert!(!cache.get("g", 9).expect("cached").outdated_by(12));
        cache.forget("g");
        assert!(cache.get("g", 9).is_none());
    }

    #[test]
    fn entries_expire() {
        let cache = SettingsCache::default();
        cache.put(&gallery(0.5), 10, 1_000);
        assert!(cache.get("g", 1_000 + TTL_MS - 1).is_some());
        assert!(cache.get("g", 1_000 + TTL_MS).is_none(), "read again after the TTL");
        assert!(cache.get("g", 999).is_none(), "a clock that went back does not extend it");
    }
}
