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

/// The most labelled probes one measurement takes.
pub const MAX_LABELLED_PROBES: usize = 10_000;
/// The fewest distinct subjects an operator's labelled probes must name, and the most probes of
/// any one of them: a labelled measurement compares probes with named subjects, and a recall over
/// few subjects (or one subject's many copies) would say whether one probe matched its subject.
pub const MIN_LABELLED_SUBJECTS: usize = 50;
pub const MAX_PROBES_PER_SUBJECT: usize = 10;

/// Refuses a labelled probe set by its subjects: more than [`MAX_LABELLED_PROBES`] probes, fewer
/// than [`MIN_LABELLED_SUBJECTS`] distinct subjects or more than [`MAX_PROBES_PER_SUBJECT`] of
/// one. Answers the distinct subjects, sorted. The messages name no subject.
pub fn check_labelled_subjects<'a>(
    subjects: impl ExactSizeIterator<Item = &'a str>,
) -> Result<Vec<String>, crate::IndexSpecError> {
    let total = subjects.len();
    if total > MAX_LABELLED_PROBES {
        return Err(crate::IndexSpecError(format!(
            "at most {MAX_LABELLED_PROBES} labelled probes, not {total}"
        )));
    }
    let mut counts = std::collections::BTreeMap::<&str, usize>::new();
    for subject in subjects {
        *counts.entry(subject).or_default() += 1;
    }
    if counts.len() < MIN_LABELLED_SUBJECTS {
        return Err(crate::IndexSpecError(format!(
            "labelled probes must name at least {MIN_LABELLED_SUBJECTS} distinct subjects, not {}",
            counts.len()
        )));
    }
    if let Some(most) = counts.values().copied().max().filter(|&n| n > MAX_PROBES_PER_SUBJECT) {
        return Err(crate::IndexSpecError(format!(
            "at most {MAX_PROBES_PER_SUBJECT} labelled probes of one subject, not {most}"
        )));
    }
    Ok(counts.into_keys().map(str::to_owned).collect())
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labelled_probes_must_name_many_subjects_few_times_each() {
        let ids: Vec<String> = (0..MIN_LABELLED_SUBJECTS).map(|i| format!("s{i}")).collect();
        let twice: Vec<&str> = ids.iter().chain(&ids).map(String::as_str).collect();
        let named = check_labelled_subjects(twice.iter().copied()).expect("enough");
        assert_eq!(named.len(), MIN_LABELLED_SUBJECTS, "distinct and sorted");
        assert!(named.windows(2).all(|w| w[0] < w[1]));

        let too_few = check_labelled_subjects(ids[1..].iter().map(String::as_str)).expect_err("49");
        assert!(too_few.0.contains("at least 50 distinct subjects, not 49"), "{too_few}");
        // One subject's copies padded with others: refused however many others there are.
        let padded: Vec<&str> =
            ids.iter().map(String::as_str).chain(std::iter::repeat_n("s7", MAX_PROBES_PER_SUBJECT)).collect();
        let err = check_labelled_subjects(padded.into_iter()).expect_err("11 of s7");
        assert!(err.0.contains("of one subject, not 11") && !err.0.contains("s7"), "{err}");
        let many = vec!["s"; MAX_LABELLED_PROBES + 1];
        assert!(check_labelled_subjects(many.into_iter()).is_err());
    }
}
