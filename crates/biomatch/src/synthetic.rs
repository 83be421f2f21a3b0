//! Face-like synthetic templates for tests, demos and benchmarks.
//!
//! Each identity has a random unit centre; each sample is `normalise(centre + sigma * noise)` with
//! `sigma = sqrt(0.667 / d)`, which puts genuine cosine similarity near 0.6 and impostors near
//! 0 with a spread of about `1 / sqrt(d)`, roughly like ArcFace-style embeddings. Deterministic
//! for a seed.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub struct Synthetic {
    rng: StdRng,
    pub dimension: usize,
    sigma: f32,
}

impl Synthetic {
    pub fn new(dimension: usize, seed: u64) -> Self {
        Self { rng: StdRng::seed_from_u64(seed), dimension, sigma: (0.667 / dimension as f32).sqrt() }
    }

    fn gaussian(&mut self) -> f32 {
        // Box-Muller.
        let u1: f32 = self.rng.random_range(f32::EPSILON..1.0);
        let u2: f32 = self.rng.random();
        (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
    }

    fn normalise(mut v: Vec<f32>) -> Vec<f32> {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter_mut().for_each(|x| *x /= n);
        v
    }

    /// A new identity's centre.
    pub fn identity(&mut self) -> Vec<f32> {
        let v = (0..self.dimension).map(|_| self.gaussian()).collect();
        Self::normalise(v)
    }

    /// One capture of an identity: its centre plus fresh noise.
    pub fn sample(&mut self, centre: &[f32]) -> Vec<f32> {
        let sigma = self.sigma;
        let v = centre.iter().map(|c| c + sigma * self.gaussian()).collect();
        Self::normalise(v)
    }
}

pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn genuine_and_impostor_scores_look_like_faces() {
        let mut s = Synthetic::new(128, 1);
        let a = s.identity();
        let b = s.identity();
        let (a1, a2, b1) = (s.sample(&a), s.sample(&a), s.sample(&b));
        let genuine = cosine(&a1, &a2);
        let impostor = cosine(&a1, &b1);
        assert!((0.45..0.75).contains(&genuine), "genuine {genuine}");
        assert!(impostor.abs() < 0.4, "impostor {impostor}");
    }
}
