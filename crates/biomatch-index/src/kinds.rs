//! What the IVF kinds are in FAISS terms: the number of lists, how many to probe, and the
//! factory description. Defaults and checks of the parameters live with
//! [`IndexSpec::resolved`](biomatch_domain::IndexSpec::resolved).

use biomatch_domain::{IndexKind, IndexSpec};

/// The number of IVF lists for `n` training vectors: about 4·√n, a power of two, at least 39
/// training vectors per list.
pub(crate) fn nlist_for(spec: &IndexSpec, n: usize) -> u32 {
    if spec.ivf_nlist > 0 {
        return spec.ivf_nlist;
    }
    let wanted = ((4.0 * (n as f64).sqrt()) as u32).next_power_of_two();
    let most = u32::try_from(n / 39).unwrap_or(u32::MAX).max(1);
    let mut nlist = wanted.clamp(1, 65_536);
    while nlist > most && nlist > 1 {
        nlist /= 2;
    }
    nlist
}

pub(crate) fn nprobe_for(spec: &IndexSpec, nlist: u32) -> u32 {
    if spec.ivf_nprobe > 0 { spec.ivf_nprobe.min(nlist) } else { (nlist / 16).max(1) }
}

/// The FAISS description of the trained IVF index (ids stored in the lists, so no IDMap).
pub(crate) fn ivf_description(spec: &IndexSpec, nlist: u32) -> String {
    let codes = match spec.kind {
        IndexKind::IvfSq8 => "SQ8".to_owned(),
        // `np`: no polysemous training (a slow annealing for Hamming pre-filters we do not use).
        IndexKind::IvfPq => format!("PQ{}np", spec.pq_m),
        // 4-bit fast-scan codes of the vectors themselves, the same codes as the `PqRerank` kind.
        IndexKind::IvfRerank => format!("PQ{}x4fs", spec.pq_m),
        _ => "Flat".to_owned(),
    };
    format!("IVF{nlist},{codes}")
}
