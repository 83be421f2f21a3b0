//! One FAISS index per (gallery, shard), holding templates by their store id and answering top-k by
//! subject.
//!
//! A subject may have several templates; its score is its best template's score, so a search
//! over-fetches templates until it has `k` distinct subjects. Scores are inner products of
//! L2-normalised vectors (cosine). Kinds ([`biomatch_domain::IndexKind`]): exact `Flat`; `HNSW`
//! (graph; removals are skipped at search time and the graph is rebuilt when a quarter is stale);
//! `IVF` with `Flat`, `SQ8` or `PQ` codes, exact until the shard holds `train_threshold` templates,
//! then trained on them ([`kinds`]); `PqRerank`: 4-bit fast-scan PQ codes of every template
//! scanned in full, the best candidates re-scored exactly from the stored vectors (also exact until
//! trained); `IvfRerank`: the same codes in IVF lists, only the probed lists scanned, then
//! re-scored the same way. The IVF probe count and re-rank depth change at run time
//! ([`SearchSettings`]) and are chosen from the shard's own data by [`ShardIndex::tune`]. A shard
//! round-trips through bytes for snapshots ([`ShardIndex::to_snapshot`]) without touching a file.

mod io;
pub mod kinds;
mod settings;
mod shard;
mod snapshot;
#[cfg(test)]
mod test_data;
mod tune;

pub use settings::SearchSettings;
pub use shard::{IndexError, ScoredSubject, ShardIndex};
pub use tune::{TuneReport, TuneRequest, noisy_copy};
unsafe extern "C" {
    fn omp_set_num_threads(n: std::ffi::c_int);
}

/// Sets the number of OpenMP threads FAISS uses for work started on the calling thread (OpenMP
/// keeps this per thread, so every [`ShardIndex`] method that calls FAISS sets it), and, once per process,
/// OpenBLAS's own pool to one thread. Both libraries read their environment variables when they
/// are loaded, before `main`, so setting variables at run time changes nothing; unpinned, their
/// pools fight over the cores (a 20-query batch over 100k x 512 took 1.9 s instead of 66 ms).
///
/// Also once: exact search of two or more queries goes through BLAS (one pass over the vectors
/// for the whole batch) instead of FAISS's default of 20, below which every query scans the
/// vectors on its own, so a micro-batch of a few queries cost as much as that many searches.
pub fn pin_threads(omp_threads: usize) {
    static OPENBLAS: std::sync::Once = std::sync::Once::new();
    OPENBLAS.call_once(|| {
        // SAFETY: stores an integer in a FAISS global, before any search of this process reads it.
        unsafe { faiss_sys::faiss_set_distance_compute_blas_threshold(2) };
        // SAFETY: dlsym with RTLD_DEFAULT only looks a symbol up; the symbol, when OpenBLAS
        // provides BLAS, has the signature `void openblas_set_num_threads(int)`.
        unsafe {
            let symbol = libc::dlsym(libc::RTLD_DEFAULT, c"openblas_set_num_threads".as_ptr());
            if !symbol.is_null() {
                let set: extern "C" fn(std::ffi::c_int) = std::mem::transmute(symbol);
                set(1);
            }
        }
    });
    let n = std::ffi::c_int::try_from(omp_threads.max(1)).unwrap_or(1);
    // SAFETY: omp_set_num_threads only stores an integer in libgomp's settings for this thread.
    unsafe { omp_set_num_threads(n) }
}
