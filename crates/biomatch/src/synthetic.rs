//! Synthetic templates for tests, demos and benchmarks, in two shapes; deterministic for a seed.
//!
//! **Uniform** ([`Synthetic::new`]): each identity is a random unit centre; each sample is
//! `normalise(centre + sigma * noise)` with `sigma = sqrt(0.667 / d)`. Genuine cosine is near 0.6
//! and impostors are `0 ± 1/sqrt(d)`: the uniform sphere, which no real face model produces. An
//! IVF partition cannot find a mate there without visiting much of the gallery, so index choices
//! made on it are wrong; the tests use it because its classes are far apart.
//!
//! **Face-like** ([`Synthetic::with_data`] with [`Data::FaceLike`]): identities come from a
//! population with a common direction and low-rank structure, like real face templates (SFace on ID
//! portraits: impostor cosine 0.10 ± 0.10, genuine 0.66; the [`FaceShape`] targets). A centre is
//!
//! ```text
//! u = a·m + (b/√r)·Q z + (s/√d)·e,   c = u / |u|,   a² + b² + s² = 1
//! ```
//!
//! with `m` a fixed unit direction, `Q` a fixed d×r orthonormal basis orthogonal to `m`
//! (Gram–Schmidt of Gaussian vectors drawn from the seed), `z ~ N(0, I_r)` and `e ~ N(0, I_d)`;
//! a sample is `x = normalise(c + (n/√d)·ε)`, `ε ~ N(0, I_d)`.
//!
//! The shares follow from the targets (genuine mean `g`, impostor mean `μ` and sd `σ`), to leading
//! order in `1/r` and `1/d`, where `|u| → 1` and `|c + noise|² → 1 + n²`:
//!
//! - genuine: `x1·x2 ≈ (1 + O(1/√d)) / (1 + n²)`, so `n² = 1/g − 1`;
//! - impostor mean: `c1·c2 ≈ a²·E[1/|u|]²` plus zero-mean terms, scaled by `g`; `|u|²` spreads
//!   by `2b⁴/r` (the chi-square `|z|²`), so by Jensen `a² = μ / (g·(1 + 1.5·b⁴/r))`;
//! - impostor variance: the zero-mean terms of `c1·c2` are `(b²/r) z1·z2` (variance `b⁴/r`),
//!   `e1·e2`, `z·e` and `m·e` cross terms (`(s⁴ + 2b²s² + 2a²s²)/d`), and the sample noise adds
//!   `(2n² + n⁴)/d`, all scaled by `g²`. With `p = 1 − a²` and `s² = p − b²`,
//!   `s⁴ + 2b²s² = p² − b⁴`, so `x = b²` solves the quadratic
//!   `(1/r − 1/d)·x² − (2a²/d)·x + (p² + 2a²p + 2n² + n⁴)/d − (σ/g)² = 0`.
//!
//! The two are solved alternately (a few fixed-point rounds; the correction is ~3%). The positive
//! root must lie in `[0, p]`. The rank starts at [`MAX_RANK`] and drops until it
//! does: the impostor spread fixes the between-identity covariance's effective rank,
//! `p²/(σ/g)² ≈ 35` at the default targets, so a flat rank-64 part cannot spread scores that
//! wide. A target spread narrower than the isotropic floor for `d` is refused. The neglected
//! terms are `O(1/d)` and `O(1/r)` of the targets; the unit tests measure all three targets within
//! ±0.02 at d = 128 and 512.
//!
//! Why IVF works on this shape and not on the uniform one: the coarse centroids live in the
//! `(1 + r)`-dimensional structured span, and a probe's noise reaches that span only with a share
//! `r/d` of its energy, so a probe falls in (or beside) its mate's list.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The largest rank of the identities' low-rank part; lower when the targets need it.
pub const MAX_RANK: usize = 32;

/// Target score distributions of face-like data (cosine similarity of unit templates).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaceShape {
    pub impostor_mean: f32,
    pub impostor_sd: f32,
    pub genuine_mean: f32,
}

impl Default for FaceShape {
    /// SFace on ID portraits, as `biomatch eval` reports it.
    fn default() -> Self {
        Self { impostor_mean: 0.10, impostor_sd: 0.10, genuine_mean: 0.66 }
    }
}

/// Which shape of synthetic data to generate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Data {
    Uniform,
    FaceLike(FaceShape),
}

impl std::fmt::Display for Data {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Data::Uniform => write!(f, "uniform (random unit centres + isotropic noise)"),
            Data::FaceLike(s) => write!(
                f,
                "face-like (low-rank identities + noise; targets impostor {:.2} ± {:.2}, genuine {:.2})",
                s.impostor_mean, s.impostor_sd, s.genuine_mean
            ),
        }
    }
}

/// Targets no population of this dimension can hit.
#[derive(Debug, Clone, PartialEq)]
pub struct ShapeError(pub String);

impl std::fmt::Display for ShapeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "face shape: {}", self.0)
    }
}

impl std::error::Error for ShapeError {}

/// The population model's parameters (see the module documentation for the symbols).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Population {
    /// `a`: the common direction's share of a centre.
    pub common: f32,
    /// `b`: the low-rank part's share.
    pub low_rank: f32,
    /// `r`: the low-rank part's rank.
    pub rank: usize,
    /// `s`: the isotropic part's share.
    pub isotropic: f32,
    /// `n`: the sample noise's norm against a unit centre.
    pub noise: f32,
}

impl Population {
    /// The uniform sphere with the historical noise (`n² = 0.667`).
    pub fn uniform() -> Self {
        Self { common: 0.0, low_rank: 0.0, rank: 0, isotropic: 1.0, noise: 0.667f32.sqrt() }
    }

    /// Solves the shares for `shape` at `dimension` (derivation in the module documentation).
    pub fn face_like(dimension: usize, shape: FaceShape) -> Result<Self, ShapeError> {
        let FaceShape { impostor_mean: mu, impostor_sd: sigma, genuine_mean: g } = shape;
        let (mu, sigma, g, d) = (f64::from(mu), f64::from(sigma), f64::from(g), dimension as f64);
        if !(g > 0.0 && g < 1.0) {
            return Err(ShapeError(format!("genuine mean {g} must lie in (0, 1)")));
        }
        if !(mu >= 0.0 && mu < g) {
            return Err(ShapeError(format!("impostor mean {mu} must lie in [0, genuine mean {g})")));
        }
        if sigma.is_nan() || sigma <= 0.0 || dimension < 2 {
            return Err(ShapeError(format!(
                "impostor sd {sigma} and dimension {dimension} must be positive"
            )));
        }
        let n2 = 1.0 / g - 1.0;
        let target = (sigma / g).powi(2);
        // The low-rank share `b2` for the common share `a2`, at the highest rank that fits.
        let low_rank = |a2: f64| -> Result<(usize, f64), ShapeError> {
            let p = 1.0 - a2;
            let floor = (p * p + 2.0 * a2 * p + 2.0 * n2 + n2 * n2) / d;
            if floor >= target {
                let floor = g * floor.sqrt();
                return Err(ShapeError(format!(
                    "impostor sd {sigma} is below the isotropic floor {floor:.3} at dimension {dimension}"
                )));
            }
            for rank in (1..=MAX_RANK.min(dimension - 1)).rev() {
                let (qa, qb) = (1.0 / rank as f64 - 1.0 / d, -2.0 * a2 / d);
                let b2 = (-qb + (qb * qb - 4.0 * qa * (floor - target)).sqrt()) / (2.0 * qa);
                if b2 <= p {
                    return Ok((rank, b2));
                }
            }
            Err(ShapeError(format!(
                "impostor sd {sigma} is too wide for impostor mean {mu} at dimension {dimension}"
            )))
        };
        // Jensen: `|u|²`'s chi-square spread `2b⁴/r` raises `E[1/(|u1||u2|)]` to `1 + 1.5·b⁴/r`,
        // so the common share shrinks by that factor; a fixed point, settled in a few rounds.
        let mut a2 = mu / g;
        let (mut rank, mut b2) = low_rank(a2)?;
        for _ in 0..4 {
            a2 = mu / g / (1.0 + 1.5 * b2 * b2 / rank as f64);
            (rank, b2) = low_rank(a2)?;
        }
        Ok(Self {
            common: a2.sqrt() as f32,
            low_rank: b2.sqrt() as f32,
            rank,
            isotropic: (1.0 - a2 - b2).max(0.0).sqrt() as f32,
            noise: n2.sqrt() as f32,
        })
    }
}

impl std::fmt::Display for Population {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "shares² common {:.3}, low-rank {:.3} (rank {}), isotropic {:.3}; noise² {:.3}",
            self.common.powi(2),
            self.low_rank.powi(2),
            self.rank,
            self.isotropic.powi(2),
            self.noise.powi(2)
        )
    }
}

pub struct Synthetic {
    rng: StdRng,
    pub dimension: usize,
    pub population: Population,
    /// `m`, empty for the uniform shape.
    mean_direction: Vec<f32>,
    /// `Q`'s columns, `rank × dimension`, row-major.
    basis: Vec<f32>,
    /// Per coordinate: `s/√d` (1 for the uniform shape, where only the direction counts; that
    /// keeps its historical stream bit for bit).
    isotropic_scale: f32,
    sigma: f32,
}

impl Synthetic {
    /// The uniform shape (what tests use: its classes are far apart).
    pub fn new(dimension: usize, seed: u64) -> Self {
        let population = Population::uniform();
        Self {
            rng: StdRng::seed_from_u64(seed),
            dimension,
            population,
            mean_direction: Vec::new(),
            basis: Vec::new(),
            isotropic_scale: 1.0,
            sigma: (0.667 / dimension as f32).sqrt(),
        }
    }

    /// A generator of `data`'s shape; the face-like population's fixed directions come from `seed`.
    pub fn with_data(dimension: usize, seed: u64, data: &Data) -> Result<Self, ShapeError> {
        let shape = match data {
            Data::Uniform => return Ok(Self::new(dimension, seed)),
            Data::FaceLike(shape) => *shape,
        };
        let population = Population::face_like(dimension, shape)?;
        let mut s = Self::new(dimension, seed);
        let d = dimension;
        let mut directions: Vec<Vec<f64>> = Vec::with_capacity(population.rank + 1);
        while directions.len() <= population.rank {
            // Modified Gram–Schmidt; a draw (nearly) inside the span so far is redrawn.
            let mut v: Vec<f64> = (0..d).map(|_| f64::from(s.gaussian())).collect();
            for q in &directions {
                let dot: f64 = v.iter().zip(q).map(|(x, y)| x * y).sum();
                v.iter_mut().zip(q).for_each(|(x, y)| *x -= dot * y);
            }
            let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
            if norm > 1e-6 {
                directions.push(v.into_iter().map(|x| x / norm).collect());
            }
        }
        let to_f32 = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
        s.mean_direction = to_f32(&directions[0]);
        s.basis = directions[1..].iter().flat_map(|q| to_f32(q)).collect();
        s.isotropic_scale = population.isotropic / (d as f32).sqrt();
        s.sigma = population.noise / (d as f32).sqrt();
        s.population = population;
        Ok(s)
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
        let rank = self.population.rank;
        let z: Vec<f32> = (0..rank).map(|_| self.gaussian()).collect();
        let scale = self.isotropic_scale;
        let mut v: Vec<f32> = (0..self.dimension).map(|_| scale * self.gaussian()).collect();
        if !self.mean_direction.is_empty() {
            let a = self.population.common;
            v.iter_mut().zip(&self.mean_direction).for_each(|(x, m)| *x += a * m);
        }
        let per_direction = self.population.low_rank / (rank.max(1) as f32).sqrt();
        for (zj, q) in z.iter().zip(self.basis.chunks_exact(self.dimension)) {
            let c = per_direction * zj;
            v.iter_mut().zip(q).for_each(|(x, qk)| *x += c * qk);
        }
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

/// Measured score distributions of a set of templates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scores {
    pub impostor_mean: f64,
    pub impostor_sd: f64,
    pub impostor_pairs: usize,
    pub genuine_mean: f64,
    pub genuine_sd: f64,
    pub genuine_pairs: usize,
}

impl std::fmt::Display for Scores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "impostor {:.3} ± {:.3} ({} pairs), genuine {:.3} ± {:.3} ({} pairs)",
            self.impostor_mean,
            self.impostor_sd,
            self.impostor_pairs,
            self.genuine_mean,
            self.genuine_sd,
            self.genuine_pairs
        )
    }
}

fn mean_sd(values: &[f64]) -> (f64, f64) {
    let n = values.len().max(1) as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    (mean, var.sqrt())
}

/// Scores of `probes[i]` against its mate `enrolled[i]` (genuine) and against about
/// `impostors / probes.len()` others each, spread over the gallery (impostor).
pub fn measure(enrolled: &[Vec<f32>], probes: &[Vec<f32>], impostors: usize) -> Scores {
    let n = enrolled.len();
    let genuine: Vec<f64> = probes.iter().zip(enrolled).map(|(p, e)| f64::from(cosine(p, e))).collect();
    let per_probe = impostors.div_ceil(probes.len().max(1)).min(n.saturating_sub(1));
    let step = (n.saturating_sub(1) / per_probe.max(1)).max(1);
    let mut impostor = Vec::with_capacity(per_probe * probes.len());
    for (i, p) in probes.iter().enumerate() {
        for k in 0..per_probe {
            let j = (i + 1 + k * step) % n;
            impostor.push(f64::from(cosine(p, &enrolled[j])));
        }
    }
    let (impostor_mean, impostor_sd) = mean_sd(&impostor);
    let (genuine_mean, genuine_sd) = mean_sd(&genuine);
    Scores {
        impostor_mean,
        impostor_sd,
        impostor_pairs: impostor.len(),
        genuine_mean,
        genuine_sd,
        genuine_pairs: genuine.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` identities of `data`'s shape, an enrolled sample and a probe of each.
    fn pairs(dimension: usize, data: &Data, n: usize, seed: u64) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
        let mut s = Synthetic::with_data(dimension, seed, data).expect("feasible shape");
        (0..n)
            .map(|_| {
                let c = s.identity();
                (s.sample(&c), s.sample(&c))
            })
            .unzip()
    }

    fn assert_near(what: &str, measured: f64, target: f32, tolerance: f64) {
        let target = f64::from(target);
        assert!((measured - target).abs() <= tolerance, "{what}: measured {measured:.4}, target {target}");
    }

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

    #[test]
    fn face_like_scores_hit_their_targets() {
        let other = FaceShape { impostor_mean: 0.05, impostor_sd: 0.12, genuine_mean: 0.72 };
        for shape in [FaceShape::default(), other] {
            for dimension in [128, 512] {
                let (enrolled, probes) = pairs(dimension, &Data::FaceLike(shape), 3_000, 9);
                let m = measure(&enrolled, &probes, 6_000);
                let at = format!("d={dimension} {shape:?}: {m}");
                assert_near(&format!("impostor mean, {at}"), m.impostor_mean, shape.impostor_mean, 0.01);
                assert_near(&format!("impostor sd, {at}"), m.impostor_sd, shape.impostor_sd, 0.01);
                assert_near(&format!("genuine mean, {at}"), m.genuine_mean, shape.genuine_mean, 0.01);
            }
        }
    }

    #[test]
    fn uniform_keeps_its_sphere_and_its_stream() {
        for dimension in [128, 512] {
            let (enrolled, probes) = pairs(dimension, &Data::Uniform, 3_000, 9);
            let m = measure(&enrolled, &probes, 6_000);
            let spread = 1.0 / (dimension as f64).sqrt();
            assert!(m.impostor_mean.abs() < 0.01, "d={dimension}: {m}");
            assert!((m.impostor_sd - spread).abs() < 0.15 * spread, "d={dimension}: {m}");
            assert_near(&format!("genuine, d={dimension}: {m}"), m.genuine_mean, 0.6, 0.02);
        }
        // `with_data(Uniform)` is the historical generator, draw for draw.
        let (mut old, mut new) =
            (Synthetic::new(64, 3), Synthetic::with_data(64, 3, &Data::Uniform).expect("uniform"));
        let (c_old, c_new) = (old.identity(), new.identity());
        assert_eq!(c_old, c_new);
        assert_eq!(old.sample(&c_old), new.sample(&c_new));
    }

    #[test]
    fn face_like_is_deterministic_for_a_seed() {
        let data = Data::FaceLike(FaceShape::default());
        let (a, _) = pairs(128, &data, 5, 4);
        let (b, _) = pairs(128, &data, 5, 4);
        let (c, _) = pairs(128, &data, 5, 5);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a.iter().all(|v| (cosine(v, v) - 1.0).abs() < 1e-4), "unit templates");
    }

    #[test]
    fn the_default_shape_needs_a_low_rank_part() {
        let p = Population::face_like(512, FaceShape::default()).expect("default shape");
        // Effective rank of the between-identity covariance is about 35 at these targets.
        assert!(p.rank <= MAX_RANK && p.rank >= 16, "{p}");
        assert!(p.low_rank.powi(2) > 0.5, "{p}");
        let total = p.common.powi(2) + p.low_rank.powi(2) + p.isotropic.powi(2);
        assert!((total - 1.0).abs() < 1e-5, "{p}");
    }

    #[test]
    fn unreachable_targets_are_refused() {
        let shape =
            |impostor_mean, impostor_sd, genuine_mean| FaceShape { impostor_mean, impostor_sd, genuine_mean };
        // Narrower than isotropic noise alone spreads impostors at d=128.
        assert!(Population::face_like(128, shape(0.1, 0.02, 0.66)).is_err());
        assert!(Population::face_like(512, shape(0.1, 0.10, 1.2)).is_err());
        assert!(Population::face_like(512, shape(0.7, 0.10, 0.66)).is_err());
        // Wider than a population with this common share can spread.
        assert!(Population::face_like(512, shape(0.1, 0.6, 0.66)).is_err());
        assert!(Synthetic::with_data(512, 1, &Data::FaceLike(shape(0.1, 0.02, 0.3))).is_err());
    }
}
