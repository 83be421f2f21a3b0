//! The shard index.

use crate::kinds::{ivf_description, nlist_for};
use crate::settings::SearchSettings;
use biomatch_domain::{IndexKind, IndexSpec};
use faiss::index::autotune::ParameterSpace;
use faiss::index::{IndexImpl, TryClone};
use faiss::selector::IdSelector;
use faiss::{Idx, Index, MetricType};
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("invalid index parameters: {0}")]
    Spec(String),
    #[error("vector has {got} values, the shard's dimension is {want}")]
    Dimension { got: usize, want: usize },
    #[error("snapshot refused: {0}")]
    Snapshot(String),
    #[error("faiss: {0}")]
    Faiss(#[from] faiss::error::Error),
}

impl biomatch_domain::Classified for IndexError {
    fn class(&self) -> biomatch_domain::ErrorClass {
        match self {
            IndexError::Spec(_) | IndexError::Dimension { .. } => {
                biomatch_domain::ErrorClass::InvalidArgument
            }
            IndexError::Snapshot(_) | IndexError::Faiss(_) => biomatch_domain::ErrorClass::Internal,
        }
    }
}

/// A subject and its best score for one query.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoredSubject {
    pub subject: Arc<str>,
    pub score: f32,
}

/// How the FAISS index of a shard is organised right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layout {
    /// `IDMap2,Flat`: the exact kind.
    Exact,
    /// An IVF kind not trained yet: exact `IDMap2,Flat` until the shard reaches its training size.
    Staging,
    /// A trained IVF index (ids live in the inverted lists).
    Ivf { nlist: u32 },
    /// `IDMap2,HNSW`: removal leaves stale graph entries that searches skip; rebuilt when many.
    Hnsw,
    /// `IDMap2,PQ{m}x4fs` scanned in full, its best candidates re-scored from the exact
    /// `IDMap2,Flat` kept beside it ([`ShardIndex::exact`]).
    Rerank,
    /// `IVF{nlist},PQ{m}x4fs`: the probed lists' codes scanned, the best candidates re-scored
    /// like `Rerank`. Removal leaves stale codes (FAISS 1.12's block inverted lists remove
    /// entries but never lower `ntotal`), which searches skip; rebuilt when many.
    IvfRerank { nlist: u32 },
}

impl Layout {
    /// The IVF list count of a trained IVF layout.
    pub(crate) fn nlist(self) -> Option<u32> {
        match self {
            Layout::Ivf { nlist } | Layout::IvfRerank { nlist } => Some(nlist),
            _ => None,
        }
    }

    /// Whether candidates are re-scored from the exact store.
    pub(crate) fn reranks(self) -> bool {
        matches!(self, Layout::Rerank | Layout::IvfRerank { .. })
    }

    /// Whether removal leaves stale entries behind.
    fn keeps_stale(self) -> bool {
        matches!(self, Layout::Hnsw | Layout::IvfRerank { .. })
    }
}

/// Templates of one shard. Not thread-safe by itself: the matcher wraps it in a lock.
pub struct ShardIndex {
    pub(crate) index: IndexImpl,
    /// The full vectors the re-rank layouts re-score their candidates with.
    pub(crate) exact: Option<IndexImpl>,
    pub(crate) dimension: usize,
    pub(crate) spec: IndexSpec,
    pub(crate) layout: Layout,
    pub(crate) subject_of: HashMap<i64, Arc<str>>,
    pub(crate) templates_of: HashMap<Arc<str>, Vec<i64>>,
    /// Entries of removed templates still in the HNSW graph or the IVF re-rank codes.
    pub(crate) stale: usize,
    /// The HNSW `efSearch` currently set.
    ef_search: u32,
    /// Search settings set at run time (0: the spec's value or the kind's default).
    pub(crate) settings: SearchSettings,
    /// The template count at the last tuning since the last training.
    pub(crate) tuned_at: Option<usize>,
}

impl std::fmt::Debug for ShardIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardIndex")
            .field("dimension", &self.dimension)
            .field("kind", &self.spec.kind)
            .field("layout", &self.layout)
            .field("templates", &self.subject_of.len())
            .finish()
    }
}

pub(crate) fn factory(dimension: usize, description: &str) -> Result<IndexImpl, IndexError> {
    let d = u32::try_from(dimension).map_err(|_| IndexError::Spec(format!("dimension {dimension}")))?;
    Ok(faiss::index_factory(d, description, MetricType::InnerProduct)?)
}

pub(crate) fn set_parameter(index: &IndexImpl, name: &str, value: u32) -> Result<(), IndexError> {
    Ok(ParameterSpace::new()?.set_index_parameter(index, name, value)?)
}

/// Stale HNSW or IVF re-rank entries tolerated before a rebuild: a quarter of all entries, and at
/// least this many.
const STALE_MIN: usize = 1024;

/// The fewest PQ candidates per query the `Rerank` layout re-scores exactly. A mate's PQ score
/// is noisy but far above the impostors' (cosine ~0.6 against ~0 +- 1/sqrt(d)), so it is almost
/// always among them: recall@1 0.999 at 1e6 x 512 with PQ32x4fs (docs/benchmarks.md).
const RERANK_CANDIDATES: usize = 64;

/// `labels` re-scored exactly against the stored vectors, best first; labels of templates no
/// longer held (stale codes) are left out.
fn rescore(
    exact: &IndexImpl,
    live: &HashMap<i64, Arc<str>>,
    query: &[f32],
    labels: &[Idx],
) -> Result<(Vec<Idx>, Vec<f32>), IndexError> {
    let d = query.len();
    let kept: Vec<Idx> = labels
        .iter()
        .copied()
        .filter(|l| l.get().is_some_and(|id| live.contains_key(&(id as i64))))
        .collect();
    let mut vectors = vec![0.0f32; kept.len() * d];
    for (label, out) in kept.iter().zip(vectors.chunks_mut(d.max(1))) {
        exact.reconstruct(*label, out)?;
    }
    let mut scores = vec![0.0f32; kept.len()];
    if !kept.is_empty() {
        // SAFETY: `scores` has room for one value per kept label, `vectors` holds that many
        // vectors of `d` values, and `query` holds `d` values; FAISS only reads and writes those.
        unsafe {
            faiss_sys::faiss_fvec_inner_products_ny(
                scores.as_mut_ptr(),
                query.as_ptr(),
                vectors.as_ptr(),
                d,
                kept.len(),
            );
        }
    }
    let mut scored: Vec<(Idx, f32)> = kept.into_iter().zip(scores).collect();
    scored.sort_unstable_by(|a, b| b.1.total_cmp(&a.1));
    Ok(scored.into_iter().unzip())
}

impl ShardIndex {
    pub fn new(dimension: usize, spec: &IndexSpec) -> Result<Self, IndexError> {
        let spec = spec.resolved(dimension).map_err(|e| IndexError::Spec(e.0))?;
        let (index, layout) = Self::empty(dimension, &spec)?;
        Ok(Self::assemble((index, None), dimension, spec, layout, HashMap::new(), 0))
    }

    pub(crate) fn assemble(
        (index, exact): (IndexImpl, Option<IndexImpl>),
        dimension: usize,
        spec: IndexSpec,
        layout: Layout,
        templates_of: HashMap<Arc<str>, Vec<i64>>,
        stale: usize,
    ) -> Self {
        let subject_of = templates_of
            .iter()
            .flat_map(|(subject, ids)| ids.iter().map(|id| (*id, subject.clone())))
            .collect();
        let ef_search = spec.hnsw_ef_search;
        Self {
            index,
            exact,
            dimension,
            spec,
            layout,
            subject_of,
            templates_of,
            stale,
            ef_search,
            settings: SearchSettings::default(),
            tuned_at: None,
        }
    }

    /// An independent copy, for measuring without holding the shard (FAISS copies its indexes;
    /// the shard's memory is needed twice meanwhile).
    pub fn try_clone(&self) -> Result<Self, IndexError> {
        Ok(Self {
            index: self.index.try_clone()?,
            exact: self.exact.as_ref().map(TryClone::try_clone).transpose()?,
            dimension: self.dimension,
            spec: self.spec.clone(),
            layout: self.layout,
            subject_of: self.subject_of.clone(),
            templates_of: self.templates_of.clone(),
            stale: self.stale,
            ef_search: self.ef_search,
            settings: self.settings,
            tuned_at: self.tuned_at,
        })
    }

    /// A new empty FAISS index for the spec (resolved).
    fn empty(dimension: usize, spec: &IndexSpec) -> Result<(IndexImpl, Layout), IndexError> {
        Ok(match spec.kind {
            IndexKind::Flat => (factory(dimension, "IDMap2,Flat")?, Layout::Exact),
            IndexKind::Hnsw => {
                let index = factory(dimension, &format!("IDMap2,HNSW{}", spec.hnsw_m))?;
                set_parameter(&index, "efConstruction", spec.hnsw_ef_construction)?;
                set_parameter(&index, "efSearch", spec.hnsw_ef_search)?;
                (index, Layout::Hnsw)
            }
            IndexKind::IvfFlat
            | IndexKind::IvfSq8
            | IndexKind::IvfPq
            | IndexKind::PqRerank
            | IndexKind::IvfRerank => (factory(dimension, "IDMap2,Flat")?, Layout::Staging),
        })
    }

    pub fn kind(&self) -> IndexKind {
        self.spec.kind
    }

    /// Whether the index is trained (IVF kinds) or needs no training.
    pub fn is_trained(&self) -> bool {
        self.layout != Layout::Staging
    }

    pub fn dimension(&self) -> usize {
        self.dimension
    }

    pub fn template_count(&self) -> usize {
        self.subject_of.len()
    }

    pub fn subject_count(&self) -> usize {
        self.templates_of.len()
    }

    /// Makes `templates` (store id, normalised vector) the subject's only templates.
    pub fn replace_subject(&mut self, subject: &str, templates: &[(i64, &[f32])]) -> Result<(), IndexError> {
        crate::pin_threads(1);
        for (_, v) in templates {
            self.check_dimension(v.len())?;
        }
        self.remove_subject(subject)?;
        if templates.is_empty() {
            return Ok(());
        }
        let ids: Vec<Idx> = templates.iter().map(|(id, _)| Idx::new(*id as u64)).collect();
        let data: Vec<f32> = templates.iter().flat_map(|(_, v)| v.iter().copied()).collect();
        self.index.add_with_ids(&data, &ids)?;
        if let Some(exact) = &mut self.exact {
            exact.add_with_ids(&data, &ids)?;
        }
        let subject: Arc<str> = Arc::from(subject);
        for (id, _) in templates {
            self.subject_of.insert(*id, subject.clone());
        }
        self.templates_of.insert(subject, templates.iter().map(|(id, _)| *id).collect());
        if self.layout == Layout::Staging && self.template_count() >= self.spec.train_threshold as usize {
            self.train()?;
        }
        Ok(())
    }

    /// Removes every template of the subject; returns how many there were.
    pub fn remove_subject(&mut self, subject: &str) -> Result<usize, IndexError> {
        crate::pin_threads(1);
        let Some(ids) = self.templates_of.remove(subject) else {
            return Ok(0);
        };
        for id in &ids {
            self.subject_of.remove(id);
        }
        let idx: Vec<Idx> = ids.iter().map(|id| Idx::new(*id as u64)).collect();
        if let Some(exact) = &mut self.exact {
            exact.remove_ids(&IdSelector::batch(&idx)?)?;
        }
        if self.layout.keeps_stale() {
            // HNSW cannot remove, and IVF fast-scan lists miscount removals: the entries stay,
            // unnamed, and searches skip them.
            self.stale += ids.len();
            if self.stale >= STALE_MIN && self.stale * 4 >= self.stale + self.template_count() {
                self.rebuild()?;
            }
        } else {
            self.index.remove_ids(&IdSelector::batch(&idx)?)?;
        }
        Ok(ids.len())
    }

    /// Every live template's id and vector (exact for the kinds that are read back: Flat,
    /// staging, HNSW and the re-rank store).
    pub(crate) fn live_vectors(&self) -> Result<(Vec<Idx>, Vec<f32>), IndexError> {
        let mut ids: Vec<i64> = self.subject_of.keys().copied().collect();
        ids.sort_unstable();
        let mut data = vec![0.0f32; ids.len() * self.dimension];
        let source = self.exact.as_ref().unwrap_or(&self.index);
        for (id, out) in ids.iter().zip(data.chunks_mut(self.dimension)) {
            source.reconstruct(Idx::new(*id as u64), out)?;
        }
        Ok((ids.into_iter().map(|id| Idx::new(id as u64)).collect(), data))
    }

    /// Trains the IVF or PQ index on the staged templates and moves them into it; the search
    /// settings set at run time apply to it, and it counts as never tuned.
    fn train(&mut self) -> Result<(), IndexError> {
        let (ids, data) = self.live_vectors()?;
        let nlist = nlist_for(&self.spec, ids.len());
        let (description, layout) = match self.spec.kind {
            IndexKind::PqRerank => (format!("IDMap2,PQ{}x4fs", self.spec.pq_m), Layout::Rerank),
            IndexKind::IvfRerank => (ivf_description(&self.spec, nlist), Layout::IvfRerank { nlist }),
            _ => (ivf_description(&self.spec, nlist), Layout::Ivf { nlist }),
        };
        let mut trained = factory(self.dimension, &description)?;
        trained.train(&data)?;
        trained.add_with_ids(&data, &ids)?;
        let staged = std::mem::replace(&mut self.index, trained);
        if layout.reranks() {
            // The staged exact index stays, as the vectors candidates are re-scored with.
            self.exact = Some(staged);
        }
        self.layout = layout;
        self.tuned_at = None;
        self.apply_settings()
    }

    /// The live templates only: a fresh HNSW graph, or the IVF re-rank codes emptied (keeping
    /// their trained quantizers) and filled again.
    fn rebuild(&mut self) -> Result<(), IndexError> {
        let (ids, data) = self.live_vectors()?;
        if self.layout == Layout::Hnsw {
            self.index = Self::empty(self.dimension, &self.spec)?.0;
            self.ef_search = self.spec.hnsw_ef_search;
        } else {
            self.index.reset()?;
        }
        if !ids.is_empty() {
            self.index.add_with_ids(&data, &ids)?;
        }
        self.stale = 0;
        Ok(())
    }

    /// Top `k` distinct subjects for each query (`queries` holds `nq * dimension` values), on the
    /// calling thread.
    pub fn search(&mut self, queries: &[f32], k: usize) -> Result<Vec<Vec<ScoredSubject>>, IndexError> {
        self.search_threaded(queries, k, 1)
    }

    /// [`Self::search`] with FAISS using up to `threads` OpenMP threads (it splits a batch by
    /// query, so a lone query gains little).
    pub fn search_threaded(
        &mut self,
        queries: &[f32],
        k: usize,
        threads: usize,
    ) -> Result<Vec<Vec<ScoredSubject>>, IndexError> {
        if !queries.len().is_multiple_of(self.dimension) {
            return Err(IndexError::Dimension { got: queries.len(), want: self.dimension });
        }
        crate::pin_threads(threads);
        let nq = queries.len() / self.dimension;
        let total = self.template_count() + self.stale;
        if nq == 0 || k == 0 || self.template_count() == 0 {
            return Ok(vec![Vec::new(); nq]);
        }
        // Templates per subject vary (and HNSW holds stale entries); fetch more until every query
        // has k subjects or everything was fetched.
        let mut fetch = (k * 2 + self.stale.min(k * 8)).min(total);
        let mut depth = match self.rerank_depth() {
            0 => (fetch * 4).max(RERANK_CANDIDATES),
            depth => (depth as usize).max(fetch),
        };
        loop {
            self.widen_hnsw_beam(fetch)?;
            // Only the re-rank layouts hold the exact store (set where they train or are read back).
            let (per_query, searched): (Vec<Vec<ScoredSubject>>, usize) = match &self.exact {
                Some(exact) => {
                    let candidates = depth.min(total);
                    let result = self.index.search(queries, candidates)?;
                    let rescored = queries
                        .chunks(self.dimension)
                        .zip(result.labels.chunks(candidates))
                        .map(|(query, labels)| rescore(exact, &self.subject_of, query, labels))
                        .collect::<Result<Vec<_>, _>>()?;
                    let found = rescored
                        .iter()
                        .map(|(labels, scores)| self.distinct_subjects(labels, scores, k))
                        .collect();
                    (found, candidates)
                }
                _ => {
                    let result = self.index.search(queries, fetch)?;
                    let found = result
                        .labels
                        .chunks(fetch)
                        .zip(result.distances.chunks(fetch))
                        .map(|(labels, scores)| self.distinct_subjects(labels, scores, k))
                        .collect();
                    (found, fetch)
                }
            };
            let short = per_query.iter().any(|r| r.len() < k.min(self.subject_count()));
            if !short || searched >= total {
                return Ok(per_query);
            }
            fetch = (fetch * 4).min(total);
            depth = depth.saturating_mul(4);
        }
    }

    /// HNSW returns at most `efSearch` results: keep it at least as wide as the fetch.
    fn widen_hnsw_beam(&mut self, fetch: usize) -> Result<(), IndexError> {
        if self.layout != Layout::Hnsw {
            return Ok(());
        }
        let wanted = self.spec.hnsw_ef_search.max(u32::try_from(fetch).unwrap_or(u32::MAX));
        if wanted != self.ef_search {
            set_parameter(&self.index, "efSearch", wanted)?;
            self.ef_search = wanted;
        }
        Ok(())
    }

    fn distinct_subjects(&self, labels: &[Idx], scores: &[f32], k: usize) -> Vec<ScoredSubject> {
        let mut out: Vec<ScoredSubject> = Vec::with_capacity(k);
        for (label, score) in labels.iter().zip(scores) {
            let Some(id) = label.get() else { continue };
            let Some(subject) = self.subject_of.get(&(id as i64)) else { continue };
            // Results arrive best first, so the first hit of a subject is its best template.
            if out.iter().any(|s| Arc::ptr_eq(&s.subject, subject)) {
                continue;
            }
            out.push(ScoredSubject { subject: subject.clone(), score: *score });
            if out.len() == k {
                break;
            }
        }
        out
    }

    /// Store ids of the subject's templates held here.
    pub fn templates_of(&self, subject: &str) -> Option<&[i64]> {
        self.templates_of.get(subject).map(Vec::as_slice)
    }

    fn check_dimension(&self, got: usize) -> Result<(), IndexError> {
        if got == self.dimension { Ok(()) } else { Err(IndexError::Dimension { got, want: self.dimension }) }
    }
}

#[cfg(test)]
#[path = "shard_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "ivf_rerank_tests.rs"]
mod ivf_rerank_tests;
