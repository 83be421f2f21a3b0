//! Identification (1:N search) over the labelled photos.
//!
//! Every identity is enrolled with its first `per_subject` photos that gave a template, and a
//! subject scores against a probe by its best template. Mated probes: every other photo of an
//! enrolled identity. Non-mated probes: every photo, searched against the gallery without its
//! own identity (leave one identity out), so that each identity serves both as enrolled and as
//! never seen and a set of 40 people gives 400 non-mated searches rather than the few photos of
//! a held-out fifth.

use super::metrics::{threshold, weighted_rate};

pub struct Searches {
    pub subjects: usize,
    pub templates: usize,
    /// (identity, whether the top subject was the right one, its score) per mated probe.
    pub mated: Vec<(usize, bool, f32)>,
    /// Top scores of the non-mated searches from the highest down, and the probe's identity.
    pub non_mated: Vec<f32>,
    pub non_mated_identities: Vec<usize>,
}

/// `photos`: the identity of each photo that gave a template, in name order; `score(a, b)`
/// compares two of them by index.
pub fn search(photos: &[usize], per_subject: usize, score: impl Fn(usize, usize) -> f32) -> Searches {
    let identities = photos.iter().max().map_or(0, |&m| m + 1);
    let mut gallery: Vec<Vec<usize>> = vec![Vec::new(); identities];
    let mut mated_probes = Vec::new();
    for (photo, &identity) in photos.iter().enumerate() {
        if gallery[identity].len() < per_subject.max(1) {
            gallery[identity].push(photo);
        } else {
            mated_probes.push(photo);
        }
    }
    // The best subject for a probe, leaving out `excluded`: (identity, score).
    let top = |probe: usize, excluded: Option<usize>| {
        gallery
            .iter()
            .enumerate()
            .filter(|(identity, templates)| !templates.is_empty() && Some(*identity) != excluded)
            .map(|(identity, templates)| {
                let best = templates.iter().map(|&t| score(probe, t)).fold(f32::NEG_INFINITY, f32::max);
                (identity, best)
            })
            .max_by(|a, b| a.1.total_cmp(&b.1))
    };
    let mated = mated_probes
        .iter()
        .filter_map(|&p| top(p, None).map(|(id, s)| (photos[p], id == photos[p], s)))
        .collect();
    let mut non_mated: Vec<(f32, usize)> =
        (0..photos.len()).filter_map(|p| top(p, Some(photos[p])).map(|(_, s)| (s, photos[p]))).collect();
    non_mated.sort_by(|a, b| b.0.total_cmp(&a.0));
    Searches {
        subjects: gallery.iter().filter(|g| !g.is_empty()).count(),
        templates: gallery.iter().map(Vec::len).sum(),
        mated,
        non_mated_identities: non_mated.iter().map(|n| n.1).collect(),
        non_mated: non_mated.into_iter().map(|n| n.0).collect(),
    }
}

impl Searches {
    /// The share of mated searches whose top subject is the right one.
    pub fn rank1(&self, w: &[u64]) -> Option<f64> {
        weighted_rate(&self.mated, |m| w[m.0], |m| m.1)
    }

    pub fn threshold(&self, w: &[u64], fpir: f64) -> Option<f32> {
        let total = self.non_mated_identities.iter().map(|&i| w[i]).sum();
        threshold(&self.non_mated, |i| w[self.non_mated_identities[i]], total, fpir)
    }

    /// FNIR at the threshold for `fpir`: a mated search misses when its top subject is not the
    /// right one or scores below the threshold.
    pub fn fnir_at(&self, w: &[u64], fpir: f64) -> Option<f64> {
        let t = self.threshold(w, fpir)?;
        weighted_rate(&self.mated, |m| w[m.0], |m| !m.1 || m.2 < t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Photos on a line: a photo's "template" is a number and two photos score closer to 1 the
    /// nearer their numbers are.
    fn line(values: &[f32]) -> impl Fn(usize, usize) -> f32 + '_ {
        move |a, b| 1.0 - (values[a] - values[b]).abs()
    }

    #[test]
    fn a_subject_scores_by_its_best_template() {
        // Identity 0 at 0.0 and 0.5, identity 1 at 0.3; the probe of 0 sits at 0.45.
        let photos = [0, 0, 1, 0];
        let values = [0.0, 0.5, 0.3, 0.45];
        let one = search(&photos, 1, line(&values));
        // One template each: 0 at 0.0, 1 at 0.3; probes 0.5 and 0.45 are nearer to 1.
        assert_eq!((one.subjects, one.templates, one.mated.len()), (2, 2, 2));
        assert_eq!(one.rank1(&[1, 1]), Some(0.0));
        let two = search(&photos, 2, line(&values));
        // 0 enrolled at 0.0 and 0.5: the probe at 0.45 finds it.
        assert_eq!((two.templates, two.mated.len()), (3, 1));
        assert_eq!(two.rank1(&[1, 1]), Some(1.0));
    }

    #[test]
    fn non_mated_searches_leave_the_probes_identity_out() {
        let photos = [0, 0, 1, 1, 2];
        let values = [0.0, 0.01, 0.5, 0.51, 0.9];
        let s = search(&photos, 1, line(&values));
        assert_eq!(s.non_mated.len(), 5, "every photo searches as never seen");
        // Photo 1 (0.01) against 1 and 2 only: its best is 0.5 away.
        assert!(s.non_mated.iter().all(|&score| score <= 1.0 - 0.39), "{:?}", s.non_mated);
        assert_eq!(s.rank1(&[1, 1, 1]), Some(1.0));
        assert_eq!(s.fnir_at(&[1, 1, 1], 0.2), Some(0.0), "mated scores ~0.99 beat every non-mated one");
    }
}
