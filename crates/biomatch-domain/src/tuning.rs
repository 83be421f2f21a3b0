//! How a gallery's shards search once their index is trained: the IVF probe count and the exact
//! re-rank depth, chosen by measuring recall on the gallery's own data (`biomatch gallery tune`)
//! or pinned by an operator, with the evidence they were chosen on.

/// A gallery's search settings and the measurement behind them. Zero settings mean "the index
/// kind's default".
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct SearchTuning {
    /// IVF lists probed per query (0: the kind's default).
    pub nprobe: u32,
    /// Candidates re-scored exactly by the re-rank kinds (0: the kind's default).
    pub rerank_depth: u32,
    /// Set by an operator: automatic tuning leaves the gallery alone.
    pub pinned: bool,
    /// The mated rank-1 recall (against exact search) the settings were chosen for.
    pub target_recall: f64,
    /// The recall measured with them, on the worst shard.
    pub recall: f64,
    /// Whether every shard met the target.
    pub met_target: bool,
    /// Single-thread queries per second measured with them, on the slowest shard.
    pub queries_per_second: f64,
    /// Exact search's single-thread queries per second on the same probes.
    pub exact_queries_per_second: f64,
    /// Probes measured per shard.
    pub probes: u32,
    /// Templates in the largest shard measured.
    pub templates: u64,
    /// When the settings were chosen (ms since the epoch).
    pub tuned_at_ms: i64,
    /// Raised by one with every change of the settings, like a threshold version.
    pub version: u32,
}

/// The most probes one shard's measurement may draw.
pub const MAX_TUNE_PROBES: u32 = 2000;

/// Refuses measurement parameters a shard cannot use: a target recall outside (0, 1], a genuine
/// score outside (0, 1), or no probes or more than [`MAX_TUNE_PROBES`].
pub fn check_tune_request(
    target_recall: f64,
    genuine_score: f32,
    probes: u32,
) -> Result<(), crate::IndexSpecError> {
    if !(target_recall > 0.0 && target_recall <= 1.0) {
        return Err(crate::IndexSpecError("target_recall must be in (0, 1]".into()));
    }
    if !(genuine_score > 0.0 && genuine_score < 1.0) {
        return Err(crate::IndexSpecError("genuine_score must be in (0, 1)".into()));
    }
    if probes == 0 || probes > MAX_TUNE_PROBES {
        return Err(crate::IndexSpecError(format!("probes must be 1..={MAX_TUNE_PROBES}")));
    }
    Ok(())
}

impl SearchTuning {
    /// Refuses settings outside what an index accepts.
    pub fn check(&self) -> Result<(), crate::IndexSpecError> {
        if self.nprobe > 65_536 {
            return Err(crate::IndexSpecError(format!("nprobe must be at most 65536, not {}", self.nprobe)));
        }
        if self.rerank_depth > 4096 {
            return Err(crate::IndexSpecError(format!(
                "rerank_depth must be at most 4096, not {}",
                self.rerank_depth
            )));
        }
        if !(0.0..=1.0).contains(&self.target_recall) || !(0.0..=1.0).contains(&self.recall) {
            return Err(crate::IndexSpecError("recall must be within [0, 1]".into()));
        }
        Ok(())
    }
}
