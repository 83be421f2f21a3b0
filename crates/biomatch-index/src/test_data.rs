//! Synthetic templates for the unit tests: random unit vectors, face-like samples around an
//! identity's centre, and shards filled with one template per subject.

use crate::ShardIndex;
use rand::Rng;

pub(crate) fn unit(rng: &mut impl Rng, d: usize) -> Vec<f32> {
    let v: Vec<f32> = (0..d).map(|_| rng.random_range(-1.0..1.0)).collect();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x / n).collect()
}

/// The identity's centre plus a little noise, normalised.
pub(crate) fn near(rng: &mut impl Rng, centre: &[f32], noise: f32) -> Vec<f32> {
    let v: Vec<f32> = centre.iter().map(|c| c + rng.random_range(-noise..noise)).collect();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x / n).collect()
}

/// Enrols `vectors[i]` as subject `s{first + i}` with template id `first + i`.
pub(crate) fn enrol(index: &mut ShardIndex, first: usize, vectors: &[Vec<f32>]) {
    for (i, v) in vectors.iter().enumerate() {
        let n = first + i;
        index.replace_subject(&format!("s{n}"), &[(n as i64, v)]).expect("add");
    }
}

pub(crate) fn inner_product(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}
