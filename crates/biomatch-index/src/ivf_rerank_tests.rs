//! The `IvfRerank` kind (exact until trained, stale codes after removal, snapshots) and the
//! search settings that change at run time.

use super::*;
use crate::test_data::{enrol, inner_product, near, unit};
use rand::SeedableRng;

fn spec(kind: IndexKind, train_threshold: u32) -> IndexSpec {
    let mut spec = IndexSpec::of(kind);
    spec.train_threshold = train_threshold;
    spec
}

/// `n` identities with one template each, and a fresh sample of each of the first `probes`.
fn clustered(n: usize, probes: usize, d: usize, seed: u64) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let centres: Vec<Vec<f32>> = (0..n).map(|_| unit(&mut rng, d)).collect();
    let enrolled = centres.iter().map(|c| near(&mut rng, c, 0.05)).collect();
    let fresh = centres[..probes].iter().map(|c| near(&mut rng, c, 0.05)).collect();
    (enrolled, fresh)
}

/// How many probes `i` find `s{i}` first.
fn rank1(index: &mut ShardIndex, probes: &[Vec<f32>]) -> usize {
    let flat: Vec<f32> = probes.iter().flatten().copied().collect();
    let hits = index.search(&flat, 5).expect("search");
    hits.iter().enumerate().filter(|(i, h)| h.first().is_some_and(|c| *c.subject == *format!("s{i}"))).count()
}

fn absent(index: &mut ShardIndex, probe: &[f32], subject: &str) -> bool {
    let hits = index.search(probe, 20).expect("search");
    hits[0].len() == 20 && hits[0].iter().all(|c| &*c.subject != subject)
}

#[test]
fn ivf_rerank_is_exact_until_trained_then_finds_mates_and_forgets_removed_ones() {
    let d = 64;
    let (enrolled, probes) = clustered(1_500, 200, d, 21);
    let mut kind_spec = spec(IndexKind::IvfRerank, 1_000);
    kind_spec.ivf_nprobe = 4;
    let mut index = ShardIndex::new(d, &kind_spec).expect("index");
    let mut flat = ShardIndex::new(d, &IndexSpec::flat()).expect("flat");
    enrol(&mut index, 0, &enrolled[..999]);
    enrol(&mut flat, 0, &enrolled[..999]);
    assert!(!index.is_trained());
    let all: Vec<f32> = probes.iter().flatten().copied().collect();
    assert_eq!(index.search(&all, 5).expect("a"), flat.search(&all, 5).expect("b"), "exact while staging");
    assert_eq!(index.remove_subject("s5").expect("remove"), 1);
    assert!(absent(&mut index, &probes[5], "s5"), "removed before training");

    enrol(&mut index, 999, &enrolled[999..]);
    assert!(index.is_trained());
    assert!(matches!(index.layout, Layout::IvfRerank { nlist: 16 }), "{:?}", index.layout);
    let found = rank1(&mut index, &probes);
    assert!(found >= 196, "rank-1 {found}/199");
    // Scores come from the stored vectors, not the 4-bit codes.
    let hits = index.search(&probes[7], 1).expect("search");
    assert_eq!(&*hits[0][0].subject, "s7");
    assert!((hits[0][0].score - inner_product(&probes[7], &enrolled[7])).abs() < 1e-5);

    assert!(absent(&mut index, &probes[5], "s5"), "removed before training, after training");
    assert_eq!(index.remove_subject("s6").expect("remove"), 1);
    assert!(absent(&mut index, &probes[6], "s6"), "removed after training");
    assert_eq!((index.stale, index.template_count()), (1, 1_498));
    use faiss::Index;
    assert_eq!(index.index.ntotal(), 1_499, "the removed code stays, skipped");
    assert_eq!(index.exact.as_ref().map(|e| e.ntotal()), Some(1_498));
}

#[test]
fn ivf_rerank_rebuilds_its_codes_when_a_quarter_is_stale() {
    let d = 32;
    let mut rng = rand::rngs::StdRng::seed_from_u64(4);
    let vectors: Vec<Vec<f32>> = (0..4_000).map(|_| unit(&mut rng, d)).collect();
    let mut index = ShardIndex::new(d, &spec(IndexKind::IvfRerank, 1_000)).expect("index");
    enrol(&mut index, 0, &vectors);
    index.set_search_settings(SearchSettings { nprobe: 3, rerank_depth: 0 }).expect("settings");
    for i in 0..1_023 {
        index.remove_subject(&format!("s{i}")).expect("remove");
    }
    assert_eq!(index.stale, 1_023);
    index.remove_subject("s1023").expect("remove");
    assert_eq!(index.stale, 0, "rebuilt without the removed entries");
    use faiss::Index;
    assert_eq!(index.index.ntotal(), 2_976);
    assert_eq!(index.faiss_nprobe(), Some(3), "settings survive the rebuild");
    let hits = index.search(&vectors[3_999], 1).expect("search");
    assert_eq!(&*hits[0][0].subject, "s3999");
    assert!((hits[0][0].score - 1.0).abs() < 1e-5);
}

#[test]
fn trained_ivf_rerank_round_trips_with_removals_and_settings() {
    let d = 64;
    let (enrolled, probes) = clustered(1_500, 100, d, 22);
    let kind_spec = spec(IndexKind::IvfRerank, 1_000);
    let mut index = ShardIndex::new(d, &kind_spec).expect("index");
    enrol(&mut index, 0, &enrolled);
    for i in 0..30 {
        index.remove_subject(&format!("s{i}")).expect("remove");
    }
    let settings = SearchSettings { nprobe: 4, rerank_depth: 100 };
    index.set_search_settings(settings).expect("settings");
    let bytes = index.to_snapshot().expect("snapshot");
    let mut restored = ShardIndex::from_snapshot(d, &kind_spec, &bytes).expect("restore");
    assert_eq!((restored.template_count(), restored.stale), (1_470, 30));
    assert_eq!(restored.search_settings(), settings);
    assert_eq!(restored.faiss_nprobe(), Some(4));
    let all: Vec<f32> = probes.iter().flatten().copied().collect();
    assert_eq!(restored.search(&all, 5).expect("a"), index.search(&all, 5).expect("b"));
    assert!(absent(&mut restored, &probes[3], "s3"), "removed before the snapshot");
    restored.remove_subject("s40").expect("remove");
    assert!(absent(&mut restored, &probes[40], "s40"), "removed after restoring");
    assert!(restored.to_snapshot().is_ok());

    // A version 1 snapshot (no settings) still reads, with the spec's settings.
    let mut v1 = bytes[..26].to_vec();
    v1[4] = 1;
    v1.extend_from_slice(&bytes[42..]);
    let old = ShardIndex::from_snapshot(d, &kind_spec, &v1).expect("version 1");
    assert_eq!(old.search_settings(), SearchSettings { nprobe: 1, rerank_depth: 0 });
    assert_eq!((old.template_count(), old.tuned_at()), (1_470, None));
    let mut future = bytes.clone();
    future[4] = 3;
    assert!(ShardIndex::from_snapshot(d, &kind_spec, &future).is_err(), "unknown version");
    let mut ivf_flat = kind_spec.clone();
    ivf_flat.kind = IndexKind::IvfFlat;
    assert!(ShardIndex::from_snapshot(d, &ivf_flat, &bytes).is_err(), "another IVF kind");
}

#[test]
fn search_settings_change_nprobe_and_depth_and_survive_training() {
    let d = 64;
    let (enrolled, probes) = clustered(1_500, 200, d, 23);
    for kind in [IndexKind::IvfRerank, IndexKind::IvfFlat] {
        let mut index = ShardIndex::new(d, &spec(kind, 1_000)).expect("index");
        enrol(&mut index, 0, &enrolled[..500]);
        index.set_search_settings(SearchSettings { nprobe: 4, rerank_depth: 0 }).expect("settings");
        assert_eq!(index.search_settings().nprobe, 0, "{kind}: no lists before training");
        assert_eq!(index.requested_search_settings().nprobe, 4, "{kind}: kept for training");
        enrol(&mut index, 500, &enrolled[500..]);
        assert_eq!(index.search_settings().nprobe, 4, "{kind}: applied once trained");
        assert_eq!(index.faiss_nprobe(), Some(4), "{kind}");
        index.set_search_settings(SearchSettings { nprobe: 0, rerank_depth: 0 }).expect("default");
        assert_eq!(index.search_settings().nprobe, 1, "{kind}: 16 lists / 16");
        assert_eq!(index.requested_search_settings(), SearchSettings::default(), "{kind}");
        assert_eq!(index.faiss_nprobe(), Some(1), "{kind}");
        let one = rank1(&mut index, &probes);
        index.set_search_settings(SearchSettings { nprobe: 1_000, rerank_depth: 0 }).expect("all");
        assert_eq!(index.search_settings().nprobe, 16, "{kind}: at most the list count");
        assert_eq!(index.faiss_nprobe(), Some(16), "{kind}");
        let every = rank1(&mut index, &probes);
        assert!(every >= 198 && every > one, "{kind}: {one} with 1 list, {every} with all");
    }

    let mut index = ShardIndex::new(d, &spec(IndexKind::PqRerank, 1_000)).expect("index");
    enrol(&mut index, 0, &enrolled);
    assert_eq!(index.search_settings(), SearchSettings::default(), "no lists, default depth");
    index.set_search_settings(SearchSettings { nprobe: 8, rerank_depth: 300 }).expect("depth");
    assert_eq!(index.search_settings(), SearchSettings { nprobe: 0, rerank_depth: 300 });
    let refused = index.set_search_settings(SearchSettings { nprobe: 0, rerank_depth: 5_000 });
    assert!(matches!(refused, Err(IndexError::Spec(_))));
    assert_eq!(index.search_settings().rerank_depth, 300, "a refused setting changes nothing");
    assert!(rank1(&mut index, &probes) >= 196);
}
