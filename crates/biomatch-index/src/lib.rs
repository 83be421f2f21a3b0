//! One FAISS index per (gallery, shard), holding templates by their store id and answering top-k by
//! subject.
//!
//! A subject may have several templates; its score is its best template's score, so a search
//! over-fetches templates until it has `k` distinct subjects. Scores are inner products of
//! L2-normalised vectors (cosine). Kinds ([`biomatch_domain::IndexKind`]): exact `Flat`; `HNSW`
//! (graph; removals are skipped at search time and the graph is rebuilt when a quarter is stale);
//! `IVF` with `Flat`, `SQ8` or `PQ` codes, exact until the shard holds `train_threshold` templates,
//! then trained on them ([`kinds`]). A shard round-trips through bytes for snapshots
//! ([`ShardIndex::to_snapshot`]) without touching a file.

mod io;
pub mod kinds;
mod shard;
mod snapshot;

pub use shard::{IndexError, ScoredSubject, ShardIndex};
unsafe extern "C" {
    fn omp_set_num_threads(n: std::ffi::c_int);
}

/// Sets the number of OpenMP threads FAISS uses for one search. OpenBLAS's own pool is set by the
/// `OPENBLAS_NUM_THREADS` environment variable before the process starts threads; together they
/// keep OpenMP and OpenBLAS from oversubscribing the cores.
pub fn set_omp_threads(n: usize) {
    let n = std::ffi::c_int::try_from(n.max(1)).unwrap_or(1);
    // SAFETY: omp_set_num_threads only stores an integer in libgomp's global settings.
    unsafe { omp_set_num_threads(n) }
}
