//! Choosing a shard's search settings from its own data: probes that look like a second photo of
//! an enrolled subject (noisy copies of stored templates at a genuine score), or an operator's
//! labelled probes, are searched exactly and with every candidate setting; the fastest setting
//! whose rank-1 answers agree with exact search often enough wins.

use crate::settings::SearchSettings;
use crate::shard::{IndexError, Layout, ScoredSubject, ShardIndex, factory};
use faiss::Index;
use faiss::index::IndexImpl;
use rand::{Rng, SeedableRng};
use std::sync::Arc;
use std::time::Instant;

/// What [`ShardIndex::tune`] measures with.
#[derive(Debug, Clone, PartialEq)]
pub struct TuneRequest {
    /// The share of probes whose rank-1 subject must match exact search's.
    pub target_recall: f64,
    /// The cosine between a drawn template and its noisy copy.
    pub genuine_score: f32,
    /// How many templates to draw probes from (at most the shard's template count).
    pub probes: usize,
    pub seed: u64,
    /// An operator's probe vectors with their true subject, used instead of drawn ones.
    pub labelled: Option<Vec<(Vec<f32>, String)>>,
}

/// The settings a measurement chose, with what was measured.
#[derive(Debug, Clone, PartialEq)]
pub struct TuneReport {
    /// As [`ShardIndex::search_settings`] reports them with the chosen settings.
    pub nprobe: u32,
    pub rerank_depth: u32,
    /// Share of probes whose rank-1 subject equals exact search's (drawn probes) or the probe's
    /// label (labelled probes), with the chosen settings.
    pub recall: f64,
    /// Share of probes whose exact rank-1 subject is their own.
    pub exact_recall: f64,
    /// Single-thread queries per second on the probe batch, with the chosen settings.
    pub queries_per_second: f64,
    pub exact_queries_per_second: f64,
    pub probes: usize,
    pub templates: usize,
    pub met_target: bool,
    /// Exact search is the choice: the shard searches exactly (an exact kind, or an IVF or re-rank
    /// kind not trained yet), or exact search was as fast and as accurate as the best setting.
    pub exact: bool,
}

/// The re-rank depths tried.
const RERANK_DEPTHS: [u32; 4] = [64, 128, 256, 512];
/// Each setting's batch is timed this often and the fastest run kept, to damp scheduling noise.
const TIMINGS: usize = 2;

/// A unit vector whose cosine with `template` is `genuine_score` (clamped to [-1, 1]):
/// g·t + √(1−g²)·u with `u` a random unit vector orthogonal to the normalised template. A zero
/// template, or one of dimension 1 (which has no orthogonal direction), comes back normalised.
pub fn noisy_copy(template: &[f32], genuine_score: f32, rng: &mut impl Rng) -> Vec<f32> {
    let g = f64::from(genuine_score).clamp(-1.0, 1.0);
    let norm = template.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    if norm == 0.0 {
        return template.to_vec();
    }
    let t: Vec<f64> = template.iter().map(|x| f64::from(*x) / norm).collect();
    // A draw almost parallel to the template leaves no direction; draw again (never in practice).
    let attempts = if t.len() < 2 { 0 } else { 16 };
    for _ in 0..attempts {
        // Box-Muller normals, so the direction is uniform on the sphere.
        let mut u: Vec<f64> = (0..t.len())
            .map(|_| {
                let (a, b): (f64, f64) = (rng.random(), rng.random());
                (-2.0 * (1.0 - a).ln()).sqrt() * (std::f64::consts::TAU * b).cos()
            })
            .collect();
        let along: f64 = u.iter().zip(&t).map(|(x, y)| x * y).sum();
        u.iter_mut().zip(&t).for_each(|(x, y)| *x -= along * y);
        let n = u.iter().map(|x| x * x).sum::<f64>().sqrt();
        if n > 1e-9 {
            let s = (1.0 - g * g).sqrt() / n;
            return t.iter().zip(&u).map(|(a, b)| (g * a + s * b) as f32).collect();
        }
    }
    t.into_iter().map(|x| x as f32).collect()
}

/// Probe vectors (`n * dimension` values) and each probe's own subject.
struct Probes {
    queries: Vec<f32>,
    own: Vec<Arc<str>>,
}

/// Each probe's rank-1 subject (none when the shard found nothing).
type Rank1 = Vec<Option<Arc<str>>>;

/// One measured setting.
struct Measured {
    settings: SearchSettings,
    recall: f64,
    qps: f64,
}

impl ShardIndex {
    /// Measures every candidate setting on probes (see [`ShardIndex::measure`]), applies the
    /// chosen one and counts the shard as tuned at its current size.
    pub fn tune(&mut self, request: &TuneRequest) -> Result<TuneReport, IndexError> {
        let report = self.measure(request)?;
        self.apply_tuned(&report)?;
        Ok(report)
    }

    /// Measures every candidate setting on probes and chooses the fastest one meeting the target
    /// recall (or the most accurate, with `met_target` false), changing nothing: the settings and
    /// the template count at the last tuning stay as they were. IVF layouts try `nprobe` over the
    /// powers of two up to the list count, the re-rank kinds depths of 64 to 512; other layouts
    /// only measure their current settings. Layouts without stored vectors (the IVF kinds without
    /// re-rank) need labelled probes, and measure against a search of every list instead of
    /// exact search. Labelled probes of subjects this shard does not hold are left out, and the
    /// others count as found when their rank-1 subject is their label.
    pub fn measure(&mut self, request: &TuneRequest) -> Result<TuneReport, IndexError> {
        crate::pin_threads(1);
        if !(0.0..=1.0).contains(&request.target_recall) {
            return Err(IndexError::Spec(format!(
                "target recall {} is not in [0, 1]",
                request.target_recall
            )));
        }
        let original = self.settings;
        let measured = self.measure_with_settings_changed(request);
        // Every setting measured was applied on the way: put the shard's own back.
        self.settings = original;
        self.apply_settings()?;
        measured
    }

    /// Searches with what [`ShardIndex::measure`] chose (on this shard or on a copy of it) and
    /// counts the shard as tuned at the size measured.
    pub fn apply_tuned(&mut self, report: &TuneReport) -> Result<(), IndexError> {
        self.set_search_settings(SearchSettings {
            nprobe: report.nprobe,
            rerank_depth: report.rerank_depth,
        })?;
        self.tuned_at = Some(report.templates);
        Ok(())
    }

    /// [`ShardIndex::measure`], leaving the last setting measured in place.
    fn measure_with_settings_changed(&mut self, request: &TuneRequest) -> Result<TuneReport, IndexError> {
        let probes = self.tuning_probes(request)?;
        let n = probes.own.len();
        if n == 0 {
            return Err(IndexError::Spec("nothing to tune with: no probes and no templates".into()));
        }
        let (truth, exact_qps) = self.reference(&probes.queries)?;
        let own: Rank1 = probes.own.iter().cloned().map(Some).collect();
        let exact_recall = share(truth.iter().zip(&own).filter(|(t, o)| t == o).count(), n);
        // Labelled probes know their mate; drawn ones are judged against exact search.
        let (goal, exact_goal_recall) =
            if request.labelled.is_some() { (own, exact_recall) } else { (truth, 1.0) };

        let target = request.target_recall;
        let measured = self.sweep(&probes.queries, &goal, target)?;
        let best = measured
            .iter()
            .filter(|m| m.recall >= target)
            .max_by(|a, b| a.qps.total_cmp(&b.qps))
            .or_else(|| {
                measured.iter().max_by(|a, b| a.recall.total_cmp(&b.recall).then(a.qps.total_cmp(&b.qps)))
            })
            .ok_or_else(|| IndexError::Spec("no setting measured".into()))?;
        self.settings = best.settings;
        self.apply_settings()?;
        let chosen = self.search_settings();
        let exact = match self.layout {
            Layout::Exact | Layout::Staging => true,
            Layout::Rerank | Layout::IvfRerank { .. } => {
                exact_qps >= best.qps && exact_goal_recall >= best.recall
            }
            Layout::Ivf { .. } | Layout::Hnsw => false,
        };
        Ok(TuneReport {
            nprobe: chosen.nprobe,
            rerank_depth: chosen.rerank_depth,
            recall: best.recall,
            exact_recall,
            queries_per_second: best.qps,
            exact_queries_per_second: exact_qps,
            probes: n,
            templates: self.template_count(),
            met_target: best.recall >= target,
            exact,
        })
    }

    /// The candidate settings worth measuring. Probing more lists or re-scoring more candidates
    /// only costs more, so `nprobe` stops growing at the first that meets the target, and deeper
    /// re-ranks only try fewer lists than the fewest that met it so far.
    fn sweep(
        &mut self,
        queries: &[f32],
        truth: &[Option<Arc<str>>],
        target: f64,
    ) -> Result<Vec<Measured>, IndexError> {
        let nprobes: Vec<u32> = match self.layout.nlist() {
            Some(nlist) => {
                let mut powers: Vec<u32> = (0..32).map(|i| 1u32 << i).take_while(|p| *p < nlist).collect();
                powers.push(nlist);
                powers
            }
            None => vec![self.settings.nprobe],
        };
        let depths: Vec<u32> =
            if self.layout.reranks() { RERANK_DEPTHS.to_vec() } else { vec![self.settings.rerank_depth] };
        let mut measured = Vec::new();
        let mut fewest_meeting: Option<u32> = None;
        for rerank_depth in depths {
            for nprobe in nprobes.iter().take_while(|p| fewest_meeting.is_none_or(|f| **p < f)) {
                self.settings = SearchSettings { nprobe: *nprobe, rerank_depth };
                self.apply_settings()?;
                let mut fastest = f64::INFINITY;
                let mut hits = Vec::new();
                for _ in 0..TIMINGS {
                    let start = Instant::now();
                    hits = self.search(queries, 1)?;
                    fastest = fastest.min(start.elapsed().as_secs_f64());
                }
                let agree = rank1(&hits).iter().zip(truth).filter(|(a, b)| a == b).count();
                let recall = share(agree, truth.len());
                measured.push(Measured {
                    settings: self.settings,
                    recall,
                    qps: truth.len() as f64 / fastest.max(1e-9),
                });
                if recall >= target {
                    fewest_meeting = Some(*nprobe);
                    break;
                }
            }
        }
        Ok(measured)
    }

    /// The labelled probes (normalised), or noisy copies of templates drawn from the stored
    /// vectors.
    fn tuning_probes(&self, request: &TuneRequest) -> Result<Probes, IndexError> {
        if let Some(labelled) = &request.labelled {
            let mut probes =
                Probes { queries: Vec::with_capacity(labelled.len() * self.dimension), own: Vec::new() };
            for (vector, subject) in labelled {
                if vector.len() != self.dimension {
                    return Err(IndexError::Dimension { got: vector.len(), want: self.dimension });
                }
                if vector.iter().any(|x| !x.is_finite()) {
                    return Err(IndexError::Spec("a labelled probe holds a value that is not finite".into()));
                }
                // Only a held subject's probe can be found here.
                let Some((own, _)) = self.templates_of.get_key_value(subject.as_str()) else { continue };
                let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
                probes.queries.extend(vector.iter().map(|x| if norm > 0.0 { x / norm } else { *x }));
                probes.own.push(own.clone());
            }
            if probes.own.is_empty() {
                return Err(IndexError::Spec("no labelled probe is of a subject this shard holds".into()));
            }
            return Ok(probes);
        }
        let Some(stored) = self.stored_vectors() else {
            return Err(IndexError::Spec(format!(
                "a trained {} shard keeps no exact vectors to draw probes from: give labelled probes",
                self.spec.kind
            )));
        };
        let mut ids: Vec<i64> = self.subject_of.keys().copied().collect();
        ids.sort_unstable();
        let mut rng = rand::rngs::StdRng::seed_from_u64(request.seed);
        let drawn = rand::seq::index::sample(&mut rng, ids.len(), request.probes.min(ids.len()));
        let mut template = vec![0.0f32; self.dimension];
        let mut probes =
            Probes { queries: Vec::with_capacity(drawn.len() * self.dimension), own: Vec::new() };
        for i in drawn {
            stored.reconstruct(faiss::Idx::new(ids[i] as u64), &mut template)?;
            probes.queries.extend(noisy_copy(&template, request.genuine_score, &mut rng));
            probes.own.push(self.subject_of[&ids[i]].clone());
        }
        Ok(probes)
    }

    /// The index holding every live template's exact vector, if any.
    fn stored_vectors(&self) -> Option<&IndexImpl> {
        match self.layout {
            Layout::Ivf { .. } => None,
            _ => Some(self.exact.as_ref().unwrap_or(&self.index)),
        }
    }

    /// Exact search's rank-1 subject of each probe, and its single-thread queries per second.
    /// Without stored vectors, a search of every IVF list stands in for exact search.
    fn reference(&mut self, queries: &[f32]) -> Result<(Rank1, f64), IndexError> {
        let nq = queries.len() / self.dimension;
        if let Some(nlist) = self.layout.nlist().filter(|_| self.stored_vectors().is_none()) {
            let before = self.settings;
            self.settings.nprobe = nlist;
            self.apply_settings()?;
            let start = Instant::now();
            let hits = self.search(queries, 1);
            let seconds = start.elapsed().as_secs_f64();
            self.settings = before;
            self.apply_settings()?;
            return Ok((rank1(&hits?), nq as f64 / seconds.max(1e-9)));
        }
        // HNSW's graph holds stale entries and answers approximately: search a flat copy.
        let mut copy = if self.layout == Layout::Hnsw {
            let (ids, data) = self.live_vectors()?;
            let mut flat = factory(self.dimension, "IDMap2,Flat")?;
            flat.add_with_ids(&data, &ids)?;
            Some(flat)
        } else {
            None
        };
        let exact = match copy.as_mut() {
            Some(copy) => copy,
            None => self.exact.as_mut().unwrap_or(&mut self.index),
        };
        let start = Instant::now();
        let result = exact.search(queries, 1)?;
        let seconds = start.elapsed().as_secs_f64();
        let truth = result
            .labels
            .iter()
            .map(|label| label.get().and_then(|id| self.subject_of.get(&(id as i64)).cloned()))
            .collect();
        Ok((truth, nq as f64 / seconds.max(1e-9)))
    }
}

fn rank1(hits: &[Vec<ScoredSubject>]) -> Rank1 {
    hits.iter().map(|h| h.first().map(|c| c.subject.clone())).collect()
}

fn share(count: usize, total: usize) -> f64 {
    if total == 0 { 0.0 } else { count as f64 / total as f64 }
}

#[cfg(test)]
#[path = "tune_tests.rs"]
mod tests;
