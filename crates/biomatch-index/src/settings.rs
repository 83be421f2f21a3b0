//! Search settings that change at run time without rebuilding a shard: the IVF lists probed per
//! query and the candidates the re-rank kinds re-score exactly. Zero means "the spec's value, or
//! the kind's default"; settings set before a shard trains apply once it has, and after every
//! retraining.

use crate::kinds::nprobe_for;
use crate::shard::{IndexError, ShardIndex, set_parameter};

/// How a trained shard searches (0: the spec's value, or the kind's default).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SearchSettings {
    /// IVF lists probed per query (trained IVF layouts; at most the list count).
    pub nprobe: u32,
    /// Candidates re-scored exactly per query (the re-rank kinds; at most 4096). The default,
    /// reported as 0, is max(64, 8 x the subjects asked for).
    pub rerank_depth: u32,
}

impl ShardIndex {
    /// Sets the search settings (0: the spec's value or the kind's default) and applies them to
    /// the trained index, if any. Kinds a setting does not apply to keep it for nothing.
    pub fn set_search_settings(&mut self, settings: SearchSettings) -> Result<(), IndexError> {
        let mut check = self.spec.clone();
        check.rerank_depth = settings.rerank_depth;
        check.resolved(self.dimension).map_err(|e| IndexError::Spec(e.0))?;
        self.settings = settings;
        self.apply_settings()
    }

    /// The settings in effect: `nprobe` of a trained IVF layout (0 for the others) and the
    /// re-rank depth of a trained re-rank layout (0 for the others, and for the default depth).
    pub fn search_settings(&self) -> SearchSettings {
        SearchSettings {
            nprobe: self.layout.nlist().map_or(0, |nlist| self.nprobe(nlist)),
            rerank_depth: if self.layout.reranks() { self.rerank_depth() } else { 0 },
        }
    }

    /// The settings as last set (0: the spec's value or the kind's default), whether or not the
    /// shard is trained: what to pass back to [`ShardIndex::set_search_settings`] to restore them
    /// exactly ([`ShardIndex::search_settings`] turns defaults into numbers and reports nothing for
    /// an untrained shard).
    pub fn requested_search_settings(&self) -> SearchSettings {
        self.settings
    }

    /// Whether [`ShardIndex::tune`] should run: a trained layout with settings to tune that keeps
    /// the vectors to draw probes from (the re-rank kinds), never tuned since it trained, or grown
    /// to twice its size at the last tuning.
    pub fn needs_tuning(&self) -> bool {
        if !self.layout.reranks() {
            return false;
        }
        match self.tuned_at {
            None => true,
            Some(templates) => self.template_count() >= templates.max(1) * 2,
        }
    }

    /// The template count at the last tuning since the shard trained (kept in snapshots).
    pub fn tuned_at(&self) -> Option<usize> {
        self.tuned_at
    }

    /// Counts a trained shard as tuned at `templates` (a gallery's recorded tuning measured at
    /// that size), so that [`ShardIndex::needs_tuning`] waits until it has doubled beyond it. An
    /// untrained shard keeps "never tuned": its training resets the count anyway.
    pub fn set_tuned_at(&mut self, templates: usize) {
        if self.is_trained() {
            self.tuned_at = Some(templates);
        }
    }

    /// The `nprobe` for a trained IVF layout of `nlist` lists.
    pub(crate) fn nprobe(&self, nlist: u32) -> u32 {
        match self.settings.nprobe {
            0 => nprobe_for(&self.spec, nlist),
            nprobe => nprobe.min(nlist),
        }
    }

    /// The explicit re-rank depth, or 0 for the default.
    pub(crate) fn rerank_depth(&self) -> u32 {
        match self.settings.rerank_depth {
            0 => self.spec.rerank_depth,
            depth => depth,
        }
    }

    /// Sets the trained IVF index's `nprobe` (FAISS's ParameterSpace reaches every IndexIVF,
    /// fast-scan included).
    pub(crate) fn apply_settings(&mut self) -> Result<(), IndexError> {
        if let Some(nlist) = self.layout.nlist() {
            set_parameter(&self.index, "nprobe", self.nprobe(nlist))?;
        }
        Ok(())
    }

    /// The `nprobe` FAISS holds for the IVF index, read back from FAISS itself.
    #[cfg(test)]
    pub(crate) fn faiss_nprobe(&self) -> Option<usize> {
        // SAFETY: the cast is FAISS's dynamic_cast (null when not an IndexIVF); the getter only
        // reads a field of the index, which lives as long as `self`.
        unsafe {
            let ivf = faiss_sys::faiss_IndexIVF_cast(self.index.inner_ptr());
            (!ivf.is_null()).then(|| faiss_sys::faiss_IndexIVF_nprobe(ivf))
        }
    }
}
