//! The shard index.

use crate::kinds::{ivf_description, nlist_for, nprobe_for};
use biomatch_domain::{IndexKind, IndexSpec};
use faiss::index::IndexImpl;
use faiss::index::autotune::ParameterSpace;
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
}

/// Templates of one shard. Not thread-safe by itself: the matcher wraps it in a lock.
pub struct ShardIndex {
    pub(crate) index: IndexImpl,
    /// The full vectors the `Rerank` layout re-scores its candidates with.
    pub(crate) exact: Option<IndexImpl>,
    pub(crate) dimension: usize,
    pub(crate) spec: IndexSpec,
    pub(crate) layout: Layout,
    pub(crate) subject_of: HashMap<i64, Arc<str>>,
    pub(crate) templates_of: HashMap<Arc<str>, Vec<i64>>,
    /// HNSW entries of removed templates still in the graph.
    pub(crate) stale: usize,
    /// The HNSW `efSearch` currently set.
    ef_search: u32,
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

fn factory(dimension: usize, description: &str) -> Result<IndexImpl, IndexError> {
    let d = u32::try_from(dimension).map_err(|_| IndexError::Spec(format!("dimension {dimension}")))?;
    Ok(faiss::index_factory(d, description, MetricType::InnerProduct)?)
}

fn set_parameter(index: &IndexImpl, name: &str, value: u32) -> Result<(), IndexError> {
    Ok(ParameterSpace::new()?.set_index_parameter(index, name, value)?)
}

/// Stale HNSW entries tolerated before a rebuild: a quarter of the graph, and at least this many.
const STALE_MIN: usize = 1024;

/// The fewest PQ candidates per query the `Rerank` layout re-scores exactly. A mate's PQ score
/// is noisy but far above the impostors' (cosine ~0.6 against ~0 +- 1/sqrt(d)), so it is almost
/// always among them: recall@1 0.999 at 1e6 x 512 with PQ32x4fs (docs/benchmarks.md).
const RERANK_CANDIDATES: usize = 64;

/// `labels` re-scored exactly against the stored vectors, best first.
fn rescore(exact: &IndexImpl, query: &[f32], labels: &[Idx]) -> Result<(Vec<Idx>, Vec<f32>), IndexError> {
    let mut vector = vec![0.0f32; query.len()];
    let mut scored = Vec::with_capacity(labels.len());
    for label in labels.iter().filter(|l| l.get().is_some()) {
        exact.reconstruct(*label, &mut vector)?;
        scored.push((*label, inner_product(query, &vector)));
    }
    scored.sort_unstable_by(|a, b| b.1.total_cmp(&a.1));
    Ok(scored.into_iter().unzip())
}

/// In eight lanes, so the compiler vectorises it.
fn inner_product(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a8.remainder().iter().zip(b8.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in a8.zip(b8) {
        for (lane, (p, q)) in lanes.iter_mut().zip(x.iter().zip(y)) {
            *lane += p * q;
        }
    }
    lanes.iter().sum::<f32>() + tail
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
        Self { index, exact, dimension, spec, layout, subject_of, templates_of, stale, ef_search }
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
            IndexKind::IvfFlat | IndexKind::IvfSq8 | IndexKind::IvfPq | IndexKind::PqRerank => {
                (factory(dimension, "IDMap2,Flat")?, Layout::Staging)
            }
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
        if self.layout == Layout::Hnsw {
            // HNSW cannot remove: the entries stay in the graph, unnamed, and searches skip them.
            self.stale += ids.len();
            if self.stale >= STALE_MIN && self.stale * 4 >= self.stale + self.template_count() {
                self.rebuild()?;
            }
        } else {
            let idx: Vec<Idx> = ids.iter().map(|id| Idx::new(*id as u64)).collect();
            self.index.remove_ids(&IdSelector::batch(&idx)?)?;
            if let Some(exact) = &mut self.exact {
                exact.remove_ids(&IdSelector::batch(&idx)?)?;
            }
        }
        Ok(ids.len())
    }

    /// Every live template's id and vector (exact for the kinds that are read back: Flat,
    /// staging, HNSW and the re-rank store).
    fn live_vectors(&self) -> Result<(Vec<Idx>, Vec<f32>), IndexError> {
        let mut ids: Vec<i64> = self.subject_of.keys().copied().collect();
        ids.sort_unstable();
        let mut data = vec![0.0f32; ids.len() * self.dimension];
        let source = self.exact.as_ref().unwrap_or(&self.index);
        for (id, out) in ids.iter().zip(data.chunks_mut(self.dimension)) {
            source.reconstruct(Idx::new(*id as u64), out)?;
        }
        Ok((ids.into_iter().map(|id| Idx::new(id as u64)).collect(), data))
    }

    /// Trains the IVF or PQ index on the staged templates and moves them into it.
    fn train(&mut self) -> Result<(), IndexError> {
        let (ids, data) = self.live_vectors()?;
        if self.spec.kind == IndexKind::PqRerank {
            let mut codes = factory(self.dimension, &format!("IDMap2,PQ{}x4fs", self.spec.pq_m))?;
            codes.train(&data)?;
            codes.add_with_ids(&data, &ids)?;
            // The staged exact index stays, as the vectors candidates are re-scored with.
            self.exact = Some(std::mem::replace(&mut self.index, codes));
            self.layout = Layout::Rerank;
            return Ok(());
        }
        let nlist = nlist_for(&self.spec, ids.len());
        let mut ivf = factory(self.dimension, &ivf_description(&self.spec, nlist))?;
        ivf.train(&data)?;
        ivf.add_with_ids(&data, &ids)?;
        set_parameter(&ivf, "nprobe", nprobe_for(&self.spec, nlist))?;
        self.index = ivf;
        self.layout = Layout::Ivf { nlist };
        Ok(())
    }

    /// A fresh HNSW graph of the live templates only.
    fn rebuild(&mut self) -> Result<(), IndexError> {
        let (ids, data) = self.live_vectors()?;
        let (mut index, _) = Self::empty(self.dimension, &self.spec)?;
        if !ids.is_empty() {
            index.add_with_ids(&data, &ids)?;
        }
        self.index = index;
        self.stale = 0;
        self.ef_search = self.spec.hnsw_ef_search;
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
        loop {
            self.widen_hnsw_beam(fetch)?;
            // Only the `Rerank` layout holds the exact store (set where it trains or is read back).
            let per_query: Vec<Vec<ScoredSubject>> = match &self.exact {
                Some(exact) => {
                    let candidates = (fetch * 4).max(RERANK_CANDIDATES).min(total);
                    let result = self.index.search(queries, candidates)?;
                    let rescored = queries
                        .chunks(self.dimension)
                        .zip(result.labels.chunks(candidates))
                        .map(|(query, labels)| rescore(exact, query, labels))
                        .collect::<Result<Vec<_>, _>>()?;
                    rescored
                        .iter()
                        .map(|(labels, scores)| self.distinct_subjects(labels, scores, k))
                        .collect()
                }
                _ => {
                    let result = self.index.search(queries, fetch)?;
                    result
                        .labels
                        .chunks(fetch)
                        .zip(result.distances.chunks(fetch))
                        .map(|(labels, scores)| self.distinct_subjects(labels, scores, k))
                        .collect()
                }
            };
            let short = per_query.iter().any(|r| r.len() < k.min(self.subject_count()));
            if !short || fetch >= total {
                return Ok(per_query);
            }
            fetch = (fetch * 4).min(total);
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
