//! Thresholds, error rates and their confidence intervals by bootstrap over identities.
//!
//! Every rate is a weighted count: a pair or probe weighs what its identities weigh. In the
//! sample itself every identity weighs 1; in a bootstrap resample an identity drawn k times
//! weighs k (an impostor pair weighs the product of its two identities' weights), so one
//! function computes the figure and each of its resamples. Resampling identities rather than
//! pairs keeps the pairs of one person together: they are not independent, and an interval from
//! resampled pairs would be too narrow.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

/// A rate and its 95 % confidence interval (2.5th and 97.5th percentiles of the resamples).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Estimate {
    pub value: f64,
    pub low: f64,
    pub high: f64,
}

/// Identity weights: one vector per bootstrap resample, each drawing as many identities as there
/// are, with replacement.
pub struct Resamples {
    pub weights: Vec<Vec<u64>>,
}

impl Resamples {
    pub fn draw(identities: usize, resamples: usize, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let weights = (0..resamples)
            .map(|_| {
                let mut w = vec![0u64; identities];
                for _ in 0..identities {
                    w[rng.random_range(0..identities)] += 1;
                }
                w
            })
            .collect();
        Self { weights }
    }

    /// `statistic` on the sample (every identity weighing 1) and its interval over the resamples;
    /// None when the sample cannot show it. A resample that cannot (too few pairs drawn) is left
    /// out; with more than half of them left out there is no interval to give.
    pub fn estimate(&self, identities: usize, statistic: impl Fn(&[u64]) -> Option<f64>) -> Option<Estimate> {
        let value = statistic(&vec![1; identities])?;
        let mut values: Vec<f64> = self.weights.iter().filter_map(|w| statistic(w)).collect();
        if values.len() * 2 < self.weights.len() || values.is_empty() {
            return Some(Estimate { value, low: f64::NAN, high: f64::NAN });
        }
        values.sort_by(f64::total_cmp);
        let at = |q: f64| values[((values.len() - 1) as f64 * q).round() as usize];
        Some(Estimate { value, low: at(0.025), high: at(0.975) })
    }
}

/// The lowest threshold at which at most `rate` of the negatives' weight reaches it, scanning
/// `scores` from the highest down (`weight(i)` is the weight of the i-th, `total` the sum of all);
/// None when the total is too small to show the rate (under 1 / `rate`).
pub fn threshold(scores_desc: &[f32], weight: impl Fn(usize) -> u64, total: u64, rate: f64) -> Option<f32> {
    if (total as f64) * rate < 1.0 {
        return None;
    }
    let allowed = ((total as f64) * rate).floor() as u64;
    let mut passed = 0;
    // Scores at or above the threshold count; the one that takes the weight past the allowance
    // must fall below it. Only the top of the list is read.
    for (i, score) in scores_desc.iter().enumerate() {
        passed += weight(i);
        if passed > allowed {
            return Some(score.next_up());
        }
    }
    None
}

/// The weighted share of `items` that `counted` picks; None without weight.
pub fn weighted_rate<T>(
    items: &[T],
    weight: impl Fn(&T) -> u64,
    counted: impl Fn(&T) -> bool,
) -> Option<f64> {
    let (mut picked, mut total) = (0u64, 0u64);
    for item in items {
        let w = weight(item);
        total += w;
        if counted(item) {
            picked += w;
        }
    }
    (total > 0).then(|| picked as f64 / total as f64)
}

/// Every pair's score, genuine and impostor, with the identities behind it.
pub struct Pairs {
    /// (score, identity, weaker photo quality) of each same-identity pair.
    pub genuine: Vec<(f32, usize, f32)>,
    /// Impostor scores from the highest down, and the two identities of each.
    pub impostor: Vec<f32>,
    pub impostor_identities: Vec<(u32, u32)>,
    /// Photos with a template, per identity.
    per_identity: Vec<u64>,
}

impl Pairs {
    /// `photos`: (identity, quality) of each photo that gave a template; `score(a, b)` compares two
    /// of them by index.
    pub fn new(photos: &[(usize, f32)], score: impl Fn(usize, usize) -> f32) -> Self {
        let (mut genuine, mut impostor) = (Vec::new(), Vec::new());
        for (a, &(ia, qa)) in photos.iter().enumerate() {
            for (b, &(ib, qb)) in photos.iter().enumerate().skip(a + 1) {
                let s = score(a, b);
                if ia == ib {
                    genuine.push((s, ia, qa.min(qb)));
                } else {
                    impostor.push((s, ia as u32, ib as u32));
                }
            }
        }
        impostor.sort_by(|x, y| y.0.total_cmp(&x.0));
        let mut per_identity = vec![0; photos.iter().map(|p| p.0 + 1).max().unwrap_or(0)];
        for &(identity, _) in photos {
            per_identity[identity] += 1;
        }
        Self {
            per_identity,
            genuine,
            impostor_identities: impostor.iter().map(|&(_, a, b)| (a, b)).collect(),
            impostor: impostor.into_iter().map(|(s, _, _)| s).collect(),
        }
    }

    /// The impostor pairs' total weight with identities weighing `w`: every photo of a pairs
    /// with every photo of b, each pair weighing w(a) w(b), summed over a < b.
    pub fn impostor_weight(&self, w: &[u64]) -> u64 {
        let weighed = self.per_identity.iter().zip(w).map(|(&c, &w)| c * w);
        let (sum, squares) = weighed.fold((0, 0), |(s, q), x| (s + x, q + x * x));
        (sum * sum - squares) / 2
    }

    /// The threshold for `fmr` with identities weighing `w`.
    pub fn threshold(&self, w: &[u64], fmr: f64) -> Option<f32> {
        let weight = |i: usize| {
            let (a, b) = self.impostor_identities[i];
            w[a as usize] * w[b as usize]
        };
        threshold(&self.impostor, weight, self.impostor_weight(w), fmr)
    }

    /// FNMR at the threshold for `fmr`, both found with identities weighing `w`.
    pub fn fnmr_at(&self, w: &[u64], fmr: f64) -> Option<f64> {
        let t = self.threshold(w, fmr)?;
        weighted_rate(&self.genuine, |g| w[g.1], |g| g.0 < t)
    }
}

/// The score at quantile `q` of sorted scores.
pub fn quantile(sorted: &[f32], q: f64) -> f32 {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted.get(i).copied().unwrap_or(f32::NAN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_threshold_lets_through_at_most_the_rate() {
        let negatives: Vec<f32> = (0..1000).rev().map(|i| i as f32 / 1000.0).collect();
        let t = threshold(&negatives, |_| 1, 1000, 1e-2).expect("enough");
        let passing = negatives.iter().filter(|&&n| n >= t).count();
        assert_eq!(passing, 10, "1 % of 1000 pass, no more");
        assert!(threshold(&negatives, |_| 1, 1000, 1e-4).is_none(), "1000 pairs cannot show 1e-4");
    }

    #[test]
    fn weights_count_as_repeated_scores() {
        // Ten scores, the top one weighing 5: at a rate of 0.3 of the total weight 14, 4 may pass,
        // and the top score alone weighs more, so the threshold must sit above it.
        let scores: Vec<f32> = (0..10).rev().map(|i| i as f32).collect();
        let t = threshold(&scores, |i| if i == 0 { 5 } else { 1 }, 14, 0.3).expect("enough");
        assert!(t > 9.0);
        let t = threshold(&scores, |_| 1, 10, 0.3).expect("enough");
        assert!(t > 6.0 && t <= 7.0, "three of ten pass: 9, 8, 7");
    }

    #[test]
    fn fnmr_counts_genuine_pairs_below_the_threshold() {
        // Identities 0 and 1, two photos each, 0's genuine pair scoring low.
        let photos = [(0, 1.0), (0, 1.0), (1, 1.0), (1, 1.0)];
        let templates = [0.0f32, 0.1, 1.0, 1.0];
        let pairs =
            Pairs::new(
                &photos,
                |a, b| if photos[a].0 == photos[b].0 { templates[a] + templates[b] } else { 0.5 },
            );
        assert_eq!(pairs.genuine.len(), 2);
        assert_eq!(pairs.impostor.len(), 4);
        assert_eq!(pairs.impostor_weight(&[1, 1]), 4);
        assert_eq!(pairs.impostor_weight(&[2, 1]), 8, "0 drawn twice: its pairs count twice");
        assert_eq!(pairs.fnmr_at(&[1, 1], 0.25), Some(0.5), "threshold above 0.5: the 0.1 pair misses");
        assert_eq!(pairs.fnmr_at(&[0, 2], 0.25), None, "no impostor pairs when one identity is drawn");
        assert_eq!(weighted_rate(&pairs.genuine, |g| [3, 1][g.1], |g| g.0 < 1.0), Some(0.75));
    }

    #[test]
    fn the_interval_is_seeded_and_holds_the_value() {
        let per_identity: Vec<f64> = (0..50).map(|i| f64::from(i % 2)).collect();
        let mean = |w: &[u64]| {
            let total: u64 = w.iter().sum();
            Some(w.iter().zip(&per_identity).map(|(&w, v)| w as f64 * v).sum::<f64>() / total as f64)
        };
        let a = Resamples::draw(50, 500, 7).estimate(50, mean).expect("estimate");
        let b = Resamples::draw(50, 500, 7).estimate(50, mean).expect("estimate");
        assert_eq!(a, b, "same seed, same interval");
        assert_eq!(a.value, 0.5);
        assert!(a.low < 0.5 && a.high > 0.5, "{a:?}");
        // A binomial share of 50 has a standard error of ~0.07: the interval spans ~0.28.
        assert!(a.high - a.low > 0.15 && a.high - a.low < 0.4, "{a:?}");
    }
}
