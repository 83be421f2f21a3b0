//! The shard index.

use biomatch_domain::{IndexKind, IndexSpec};
use faiss::index::IndexImpl;
use faiss::selector::IdSelector;
use faiss::{Idx, Index, MetricType};
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("index kind {0} is not implemented yet")]
    Unsupported(IndexKind),
    #[error("vector has {got} values, the shard's dimension is {want}")]
    Dimension { got: usize, want: usize },
    #[error("faiss: {0}")]
    Faiss(#[from] faiss::error::Error),
}

impl biomatch_domain::Classified for IndexError {
    fn class(&self) -> biomatch_domain::ErrorClass {
        match self {
            IndexError::Unsupported(_) => biomatch_domain::ErrorClass::Unimplemented,
            IndexError::Dimension { .. } => biomatch_domain::ErrorClass::InvalidArgument,
            IndexError::Faiss(_) => biomatch_domain::ErrorClass::Internal,
        }
    }
}

/// A subject and its best score for one query.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoredSubject {
    pub subject: Arc<str>,
    pub score: f32,
}

/// Templates of one shard. Not thread-safe by itself: the matcher wraps it in a lock.
pub struct ShardIndex {
    index: IndexImpl,
    dimension: usize,
    kind: IndexKind,
    subject_of: HashMap<i64, Arc<str>>,
    templates_of: HashMap<Arc<str>, Vec<i64>>,
}

impl std::fmt::Debug for ShardIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardIndex")
            .field("dimension", &self.dimension)
            .field("kind", &self.kind)
            .field("templates", &self.subject_of.len())
            .finish()
    }
}

impl ShardIndex {
    pub fn new(dimension: usize, spec: &IndexSpec) -> Result<Self, IndexError> {
        let description = match spec.kind {
            IndexKind::Flat => "IDMap2,Flat",
            other => return Err(IndexError::Unsupported(other)),
        };
        let d = u32::try_from(dimension).map_err(|_| IndexError::Dimension { got: dimension, want: 0 })?;
        let index = faiss::index_factory(d, description, MetricType::InnerProduct)?;
        Ok(Self {
            index,
            dimension,
            kind: spec.kind,
            subject_of: HashMap::new(),
            templates_of: HashMap::new(),
        })
    }

    pub fn kind(&self) -> IndexKind {
        self.kind
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
        let subject: Arc<str> = Arc::from(subject);
        for (id, _) in templates {
            self.subject_of.insert(*id, subject.clone());
        }
        self.templates_of.insert(subject, templates.iter().map(|(id, _)| *id).collect());
        Ok(())
    }

    /// Removes every template of the subject; returns how many there were.
    pub fn remove_subject(&mut self, subject: &str) -> Result<usize, IndexError> {
        let Some(ids) = self.templates_of.remove(subject) else {
            return Ok(0);
        };
        let idx: Vec<Idx> = ids.iter().map(|id| Idx::new(*id as u64)).collect();
        let selector = IdSelector::batch(&idx)?;
        self.index.remove_ids(&selector)?;
        for id in &ids {
            self.subject_of.remove(id);
        }
        Ok(ids.len())
    }

    /// Top `k` distinct subjects for each query (`queries` holds `nq * dimension` values).
    pub fn search(&mut self, queries: &[f32], k: usize) -> Result<Vec<Vec<ScoredSubject>>, IndexError> {
        if !queries.len().is_multiple_of(self.dimension) {
            return Err(IndexError::Dimension { got: queries.len(), want: self.dimension });
        }
        let nq = queries.len() / self.dimension;
        let total = self.template_count();
        if nq == 0 || k == 0 || total == 0 {
            return Ok(vec![Vec::new(); nq]);
        }
        // Templates per subject vary; fetch more until every query has k subjects or all templates.
        let mut fetch = (k * 2).min(total);
        loop {
            let result = self.index.search(queries, fetch)?;
            let per_query: Vec<Vec<ScoredSubject>> = result
                .labels
                .chunks(fetch)
                .zip(result.distances.chunks(fetch))
                .map(|(labels, scores)| self.distinct_subjects(labels, scores, k))
                .collect();
            let short = per_query.iter().any(|r| r.len() < k.min(self.subject_count()));
            if !short || fetch >= total {
                return Ok(per_query);
            }
            fetch = (fetch * 4).min(total);
        }
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

    /// Best score of the probe against the subject's templates; `None` if the subject is absent.
    pub fn score(&self, subject: &str, probe: &[f32]) -> Result<Option<(f32, usize)>, IndexError> {
        self.check_dimension(probe.len())?;
        let Some(ids) = self.templates_of.get(subject) else {
            return Ok(None);
        };
        let mut buf = vec![0.0f32; self.dimension];
        let mut best = f32::NEG_INFINITY;
        for id in ids {
            self.index.reconstruct(Idx::new(*id as u64), &mut buf)?;
            best = best.max(buf.iter().zip(probe).map(|(a, b)| a * b).sum());
        }
        Ok(Some((best, ids.len())))
    }

    fn check_dimension(&self, got: usize) -> Result<(), IndexError> {
        if got == self.dimension { Ok(()) } else { Err(IndexError::Dimension { got, want: self.dimension }) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn unit(rng: &mut impl Rng, d: usize) -> Vec<f32> {
        let v: Vec<f32> = (0..d).map(|_| rng.random_range(-1.0..1.0)).collect();
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.into_iter().map(|x| x / n).collect()
    }

    #[test]
    fn finds_subjects_and_forgets_removed_ones() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let d = 32;
        let mut index = ShardIndex::new(d, &IndexSpec::flat()).expect("flat");
        let vectors: Vec<Vec<f32>> = (0..100).map(|_| unit(&mut rng, d)).collect();
        for (i, v) in vectors.iter().enumerate() {
            index.replace_subject(&format!("s{i}"), &[(i as i64, v)]).expect("add");
        }
        let hits = index.search(&vectors[42], 3).expect("search");
        assert_eq!(&*hits[0][0].subject, "s42");
        assert!((hits[0][0].score - 1.0).abs() < 1e-4);
        assert_eq!(hits[0].len(), 3);

        assert_eq!(index.remove_subject("s42").expect("remove"), 1);
        let hits = index.search(&vectors[42], 100).expect("search");
        assert!(hits[0].iter().all(|h| &*h.subject != "s42"));
        assert_eq!(hits[0].len(), 99);
        assert_eq!(index.score("s42", &vectors[42]).expect("score"), None);
    }

    #[test]
    fn subject_score_is_best_template_and_subjects_are_distinct() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(8);
        let d = 16;
        let mut index = ShardIndex::new(d, &IndexSpec::flat()).expect("flat");
        let a: Vec<Vec<f32>> = (0..5).map(|_| unit(&mut rng, d)).collect();
        let refs: Vec<(i64, &[f32])> = a.iter().enumerate().map(|(i, v)| (i as i64, v.as_slice())).collect();
        index.replace_subject("many", &refs).expect("add");
        let other = unit(&mut rng, d);
        index.replace_subject("one", &[(100, &other)]).expect("add");
        let hits = index.search(&a[3], 2).expect("search");
        assert_eq!(hits[0].len(), 2, "two distinct subjects despite five templates of one");
        assert_eq!(&*hits[0][0].subject, "many");
        let (score, n) = index.score("many", &a[3]).expect("score").expect("present");
        assert!((score - 1.0).abs() < 1e-4);
        assert_eq!(n, 5);

        // Replacing keeps only the new templates.
        index.replace_subject("many", &[(200, &a[0])]).expect("replace");
        assert_eq!(index.template_count(), 2);
        let (score, _) = index.score("many", &a[3]).expect("score").expect("present");
        assert!(score < 0.99);
    }

    #[test]
    fn refuses_wrong_dimension_and_unsupported_kinds() {
        let mut index = ShardIndex::new(8, &IndexSpec::flat()).expect("flat");
        assert!(matches!(
            index.replace_subject("x", &[(1, &[0.0; 7])]),
            Err(IndexError::Dimension { got: 7, want: 8 })
        ));
        assert!(matches!(index.search(&[0.0; 9], 1), Err(IndexError::Dimension { .. })));
        assert!(matches!(
            ShardIndex::new(8, &IndexSpec::of(IndexKind::Hnsw)),
            Err(IndexError::Unsupported(IndexKind::Hnsw))
        ));
    }
}
