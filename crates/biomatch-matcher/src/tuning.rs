//! The search settings of a matcher's shards: the gallery's recorded tuning (or pinned settings)
//! applied when the gallery loads and whenever its settings change, measurement for
//! `MatcherService/Tune`, and automatic tuning of a shard of its own after it trains or doubles
//! (unless the gallery's settings are pinned).
//!
//! A measurement holds the shard's lock while it runs (it changes the settings it measures and
//! puts them back), so that replica's searches of the shard wait meanwhile; at 1e6 templates
//! that is a few seconds. The other replicas keep answering.

use crate::shards::Shard;
use biomatch_domain::SearchTuning;
use biomatch_index::{SearchSettings, TuneReport, TuneRequest};
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// Where a shard's settings came from, as `Describe` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettingsSource {
    /// The index kind's defaults.
    Default = 0,
    /// The gallery's recorded tuning or pinned settings.
    Gallery = 1,
    /// The matcher tuned the shard itself after it trained or grew.
    Automatic = 2,
}

impl SettingsSource {
    pub fn as_str(self) -> &'static str {
        match self {
            SettingsSource::Default => "default",
            SettingsSource::Gallery => "gallery",
            SettingsSource::Automatic => "automatic",
        }
    }

    pub(crate) fn from_u8(v: u8) -> Self {
        match v {
            1 => SettingsSource::Gallery,
            2 => SettingsSource::Automatic,
            _ => SettingsSource::Default,
        }
    }
}

/// What automatic tuning aims for when the gallery has no recorded target.
pub const AUTOMATIC_TARGET_RECALL: f64 = 0.995;
/// SFace's genuine mean on ID portraits (what `biomatch eval` reports).
pub const AUTOMATIC_GENUINE_SCORE: f32 = 0.66;
pub const AUTOMATIC_PROBES: usize = 200;

impl Shard {
    /// Searches with the gallery's recorded settings from now on.
    pub(crate) fn apply_tuning(&self, tuning: &SearchTuning) -> Result<(), biomatch_index::IndexError> {
        let settings = SearchSettings { nprobe: tuning.nprobe, rerank_depth: tuning.rerank_depth };
        self.lock().set_search_settings(settings)?;
        self.pinned.store(tuning.pinned, Ordering::SeqCst);
        self.target_recall.store(tuning.target_recall.to_bits(), Ordering::SeqCst);
        self.settings_source.store(SettingsSource::Gallery as u8, Ordering::SeqCst);
        Ok(())
    }

    pub fn settings_source(&self) -> SettingsSource {
        SettingsSource::from_u8(self.settings_source.load(Ordering::SeqCst))
    }

    pub fn search_settings(&self) -> SearchSettings {
        self.lock().search_settings()
    }

    /// Measures the settings that meet `request`'s target, leaving the shard's own as they were.
    pub(crate) fn measure(&self, request: &TuneRequest) -> Result<TuneReport, biomatch_index::IndexError> {
        let mut index = self.lock();
        // As set (0: defaults), so that defaults stay defaults and an untrained shard keeps them.
        let before = index.requested_search_settings();
        let report = index.tune(request);
        index.set_search_settings(before)?;
        report
    }

    /// Tunes the shard on its own data when it trained or doubled since it was last tuned and the
    /// gallery's settings are not pinned; at most one at a time per shard, on a blocking thread.
    pub(crate) fn tune_if_due(self: &Arc<Self>) {
        if self.pinned.load(Ordering::SeqCst) || !self.lock().needs_tuning() {
            return;
        }
        if self.tuning.swap(true, Ordering::SeqCst) {
            return;
        }
        let shard = self.clone();
        tokio::task::spawn_blocking(move || {
            let target_recall = match f64::from_bits(shard.target_recall.load(Ordering::SeqCst)) {
                t if t > 0.0 => t,
                _ => AUTOMATIC_TARGET_RECALL,
            };
            let request = TuneRequest {
                target_recall,
                genuine_score: AUTOMATIC_GENUINE_SCORE,
                probes: AUTOMATIC_PROBES,
                seed: 1,
                labelled: None,
            };
            let tuned = shard.lock().tune(&request);
            match tuned {
                Ok(report) => {
                    shard.settings_source.store(SettingsSource::Automatic as u8, Ordering::SeqCst);
                    tracing::info!(
                        gallery = shard.gallery(),
                        shard = shard.number(),
                        nprobe = report.nprobe,
                        rerank_depth = report.rerank_depth,
                        recall = report.recall,
                        met_target = report.met_target,
                        templates = report.templates,
                        "shard tuned on its own data"
                    );
                    let labels =
                        [("gallery", shard.gallery().to_owned()), ("shard", shard.number().to_string())];
                    metrics::gauge!("biomatch_matcher_shard_tuned_recall", &labels).set(report.recall);
                }
                Err(e) => {
                    tracing::warn!(gallery = shard.gallery(), shard = shard.number(), error = %e, "automatic tuning failed")
                }
            }
            shard.tuning.store(false, Ordering::SeqCst);
        });
    }
}
