//! The search settings of a matcher's shards: the gallery's recorded tuning (or pinned settings)
//! applied when the gallery loads and whenever its settings change, measurement for
//! `MatcherService/Tune`, and automatic tuning of a shard of its own after it trains or doubles
//! (unless the gallery's settings are pinned).
//!
//! One measurement runs at a time per matcher (a second `Tune` is refused with
//! `RESOURCE_EXHAUSTED`; automatic tuning waits for the next change). It runs on a copy of the
//! shard, so searches wait only while the copy is made, at the cost of the shard's memory twice
//! over meanwhile: at 1e5 templates of 512 values (a debug build on two busy cores) the slowest
//! search during a measurement took 1.0 s, against 32 s when measuring under the lock. Where FAISS cannot copy the index it measures the shard itself, under its lock.
//! A gallery's recorded tuning counts as the shard's own tuning at the recorded size, so that a
//! matcher rebuilding a shard does not tune it again before it has doubled beyond that.

use crate::shards::Shard;
use biomatch_domain::{Classified, ErrorClass, SearchTuning};
use biomatch_index::{IndexError, SearchSettings, ShardIndex, TuneReport, TuneRequest};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Why a measurement did not run or failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MeasureError {
    #[error("another measurement is running on this matcher; try again when it has finished")]
    Busy,
    #[error(transparent)]
    Index(#[from] IndexError),
}

impl Classified for MeasureError {
    fn class(&self) -> ErrorClass {
        match self {
            MeasureError::Busy => ErrorClass::ResourceExhausted,
            MeasureError::Index(e) => e.class(),
        }
    }
}

/// The matcher's one measurement slot, freed when dropped.
pub(crate) struct MeasuringSlot<'a>(&'a AtomicBool);

impl<'a> MeasuringSlot<'a> {
    fn take(flag: &'a AtomicBool) -> Option<Self> {
        // `then`, not `then_some`: a slot built and dropped would free the flag it did not take.
        (!flag.swap(true, Ordering::SeqCst)).then(|| Self(flag))
    }
}

impl Drop for MeasuringSlot<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

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

/// The measurement automatic tuning runs, for `target_recall`.
pub fn automatic_request(target_recall: f64) -> TuneRequest {
    TuneRequest {
        target_recall,
        genuine_score: AUTOMATIC_GENUINE_SCORE,
        probes: AUTOMATIC_PROBES,
        seed: 1,
        labelled: None,
    }
}

impl Shard {
    /// Searches with the gallery's recorded settings from now on, and counts the shard as tuned
    /// at the size they were measured at. A version already applied is left alone, so that a
    /// settings change that is not a tuning (a threshold) keeps what automatic tuning chose since.
    pub(crate) fn apply_tuning(&self, tuning: &SearchTuning) -> Result<(), IndexError> {
        let version = u64::from(tuning.version);
        if version != 0 && self.tuning_version.load(Ordering::SeqCst) == version {
            return Ok(());
        }
        let settings = SearchSettings { nprobe: tuning.nprobe, rerank_depth: tuning.rerank_depth };
        // All under the shard's lock: an automatic tuning checks the version and pinning under it
        // before applying its own settings, so it never overwrites these.
        let mut index = self.lock();
        index.set_search_settings(settings)?;
        if tuning.templates > 0 {
            index.set_tuned_at(usize::try_from(tuning.templates).unwrap_or(usize::MAX));
        }
        self.pinned.store(tuning.pinned, Ordering::SeqCst);
        self.target_recall.store(tuning.target_recall.to_bits(), Ordering::SeqCst);
        self.settings_source.store(SettingsSource::Gallery as u8, Ordering::SeqCst);
        self.tuning_version.store(version, Ordering::SeqCst);
        Ok(())
    }

    pub fn settings_source(&self) -> SettingsSource {
        SettingsSource::from_u8(self.settings_source.load(Ordering::SeqCst))
    }

    pub fn search_settings(&self) -> SearchSettings {
        self.lock().search_settings()
    }

    /// Measures the settings that meet `request`'s target, changing nothing on the shard; refused
    /// while another measurement runs on this matcher. Blocking: run it off the async threads.
    pub(crate) fn measure(&self, request: &TuneRequest) -> Result<TuneReport, MeasureError> {
        let _slot = MeasuringSlot::take(&self.measuring).ok_or(MeasureError::Busy)?;
        Ok(self.measure_unlocked(request)?)
    }

    /// Measures on a copy of the shard, holding its lock only while copying (or, where FAISS
    /// cannot copy the index, on the shard itself under its lock).
    fn measure_unlocked(&self, request: &TuneRequest) -> Result<TuneReport, IndexError> {
        let copy = {
            let index = self.lock();
            let started = std::time::Instant::now();
            let copy = index.try_clone();
            let labels = [("gallery", self.gallery().to_owned()), ("shard", self.number().to_string())];
            metrics::histogram!("biomatch_matcher_tune_copy_seconds", &labels)
                .record(started.elapsed().as_secs_f64());
            match copy {
                Ok(copy) => copy,
                Err(e) => {
                    tracing::warn!(gallery = self.gallery(), shard = self.number(), error = %e, "cannot copy the shard; measuring it under its lock");
                    return Self::measure_in_place(index, request);
                }
            }
        };
        let mut copy: ShardIndex = copy;
        copy.measure(request)
    }

    fn measure_in_place(
        mut index: std::sync::MutexGuard<'_, ShardIndex>,
        request: &TuneRequest,
    ) -> Result<TuneReport, IndexError> {
        index.measure(request)
    }

    /// Whether automatic tuning is due: the shard trained or doubled since it was last tuned and
    /// the gallery's settings are not pinned.
    fn tuning_due(&self) -> bool {
        !self.pinned.load(Ordering::SeqCst) && self.lock().needs_tuning()
    }

    /// Whether the shard's search settings may still change on their own: automatic tuning is due,
    /// or a measurement is running on this matcher. `Describe` reports it, so that a benchmark
    /// measures settled settings.
    pub fn tuning(&self) -> bool {
        self.measuring.load(Ordering::SeqCst) || self.tuning_due()
    }

    /// Tunes the shard on its own data when it is due ([`Self::tuning_due`]), on a blocking
    /// thread, again if it doubled once more while it was measured. Skipped while another
    /// measurement runs on this matcher (the next change applied tries again). Returns whether it
    /// started.
    pub(crate) fn tune_if_due(self: &Arc<Self>) -> bool {
        if !self.tuning_due() || self.measuring.load(Ordering::SeqCst) {
            return false;
        }
        let shard = self.clone();
        tokio::task::spawn_blocking(move || while shard.tune_now() && shard.tuning_due() {});
        true
    }

    /// The automatic tuning itself: measured on a copy, then applied unless the gallery's
    /// settings were pinned or recorded meanwhile. Returns whether it applied new settings.
    fn tune_now(&self) -> bool {
        let Some(_slot) = MeasuringSlot::take(&self.measuring) else { return false };
        let target_recall = match f64::from_bits(self.target_recall.load(Ordering::SeqCst)) {
            t if t > 0.0 => t,
            _ => AUTOMATIC_TARGET_RECALL,
        };
        let request = automatic_request(target_recall);
        let version = self.tuning_version.load(Ordering::SeqCst);
        let tuned = self.measure_unlocked(&request).and_then(|report| {
            let mut index = self.lock();
            if self.pinned.load(Ordering::SeqCst) || self.tuning_version.load(Ordering::SeqCst) != version {
                return Ok(None);
            }
            index.apply_tuned(&report)?;
            self.settings_source.store(SettingsSource::Automatic as u8, Ordering::SeqCst);
            Ok(Some(report))
        });
        let report = match tuned {
            Ok(Some(report)) => report,
            Ok(None) => return false,
            Err(e) => {
                tracing::warn!(gallery = self.gallery(), shard = self.number(), error = %e, "automatic tuning failed");
                return false;
            }
        };
        tracing::info!(
            gallery = self.gallery(),
            shard = self.number(),
            nprobe = report.nprobe,
            rerank_depth = report.rerank_depth,
            recall = report.recall,
            met_target = report.met_target,
            exact_is_as_fast = report.exact,
            templates = report.templates,
            "shard tuned on its own data"
        );
        let labels = [("gallery", self.gallery().to_owned()), ("shard", self.number().to_string())];
        metrics::gauge!("biomatch_matcher_shard_tuned_recall", &labels).set(report.recall);
        true
    }
}

#[cfg(test)]
#[path = "tuning_tests.rs"]
mod tests;
