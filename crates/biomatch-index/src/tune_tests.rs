//! Noisy copies and tuning on a shard's own data.

use super::*;
use crate::test_data::{enrol, inner_product, unit};
use biomatch_domain::{IndexKind, IndexSpec};

fn request(target_recall: f64) -> TuneRequest {
    TuneRequest { target_recall, genuine_score: 0.66, probes: 100, seed: 5, labelled: None }
}

fn random_shard(kind: IndexKind, n: usize, d: usize, train_threshold: u32, pq_m: u32) -> ShardIndex {
    let mut rng = rand::rngs::StdRng::seed_from_u64(n as u64);
    let mut spec = IndexSpec::of(kind);
    (spec.train_threshold, spec.pq_m) = (train_threshold, pq_m);
    let mut index = ShardIndex::new(d, &spec).expect("index");
    let vectors: Vec<Vec<f32>> = (0..n).map(|_| unit(&mut rng, d)).collect();
    enrol(&mut index, 0, &vectors);
    index
}

#[test]
fn noisy_copies_have_the_asked_cosine() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    for d in [2, 64, 512] {
        let template: Vec<f32> = unit(&mut rng, d).iter().map(|x| x * 3.0).collect();
        for g in [0.66f32, 0.0, 0.99, -0.5, 1.0] {
            let copy = noisy_copy(&template, g, &mut rng);
            let norm = inner_product(&copy, &copy).sqrt();
            let cosine =
                inner_product(&copy, &template) / (norm * inner_product(&template, &template).sqrt());
            assert!((norm - 1.0).abs() < 1e-4, "d {d}: norm {norm}");
            assert!((cosine - g).abs() < 1e-4, "d {d}: cosine {cosine}, asked {g}");
        }
        if d > 2 {
            let (a, b) = (noisy_copy(&template, 0.5, &mut rng), noisy_copy(&template, 0.5, &mut rng));
            assert!(inner_product(&a, &b) < 0.99, "d {d}: copies differ");
        }
    }
    assert_eq!(noisy_copy(&[0.0; 4], 0.66, &mut rng), vec![0.0; 4]);
}

#[test]
fn tuning_an_ivf_rerank_shard_meets_a_reachable_target_and_applies_it() {
    let (n, d) = (20_000, 64);
    let mut index = random_shard(IndexKind::IvfRerank, n, d, 2_000, 16);
    let Layout::IvfRerank { nlist } = index.layout else { panic!("trained: {:?}", index.layout) };
    assert!(index.needs_tuning());
    let report = index.tune(&request(0.95)).expect("tune");
    assert!(report.met_target && report.recall >= 0.95, "{report:?}");
    assert!(report.exact_recall > 0.9, "a genuine score of 0.66 stands out at d=64: {report:?}");
    assert_eq!((report.probes, report.templates), (100, n));
    assert!(report.nprobe.is_power_of_two() && report.nprobe <= nlist, "{report:?}");
    assert!([64, 128, 256, 512].contains(&report.rerank_depth), "{report:?}");
    let applied = index.search_settings();
    assert_eq!((applied.nprobe, applied.rerank_depth), (report.nprobe, report.rerank_depth));
    assert_eq!(index.faiss_nprobe(), Some(report.nprobe as usize));
    assert!(report.queries_per_second > 0.0 && report.exact_queries_per_second > 0.0);
    assert!(!index.needs_tuning());
    assert_eq!(index.tuned_at(), Some(n));

    // The applied settings hold on probes the tuning never saw.
    let fresh = TuneRequest { seed: 99, ..request(0.0) };
    let probes = index.tuning_probes(&fresh).expect("probes");
    let (truth, _) = index.reference(&probes.queries).expect("exact");
    let hits = index.search(&probes.queries, 1).expect("search");
    let agree = rank1(&hits).iter().zip(&truth).filter(|(a, b)| a == b).count();
    assert!(agree >= 88, "{agree}/100 on fresh probes with {applied:?}");
}

#[test]
fn an_unreachable_target_reports_the_most_accurate_setting() {
    // One 4-bit code per template: 16 values for 2,000 templates, so the 512 best codes often
    // miss the exact answer whatever the settings.
    let mut index = random_shard(IndexKind::IvfRerank, 2_000, 64, 1_000, 1);
    let report = index.tune(&request(0.999)).expect("tune");
    assert!(!report.met_target && report.recall < 0.999, "{report:?}");
    assert_eq!(report.rerank_depth, 512, "the deepest re-rank is the most accurate: {report:?}");
    assert_eq!(index.search_settings().rerank_depth, 512);
}

#[test]
fn tuning_needs_doubling_or_retraining_and_covers_every_layout() {
    let d = 32;
    let mut index = random_shard(IndexKind::PqRerank, 2_000, d, 1_000, 0);
    assert!(index.needs_tuning());
    let report = index.tune(&request(0.9)).expect("tune");
    assert_eq!(report.nprobe, 0, "no lists to probe");
    assert!(!index.needs_tuning());
    let mut rng = rand::rngs::StdRng::seed_from_u64(77);
    let more: Vec<Vec<f32>> = (0..2_000).map(|_| unit(&mut rng, d)).collect();
    enrol(&mut index, 2_000, &more[..1_999]);
    assert!(!index.needs_tuning(), "not yet twice the size");
    enrol(&mut index, 3_999, &more[1_999..]);
    assert!(index.needs_tuning(), "twice the size at the last tuning");

    // Exact, graph and untrained shards only measure; nothing to tune, never needed.
    for (kind, threshold) in [(IndexKind::Flat, 0), (IndexKind::Hnsw, 0), (IndexKind::IvfRerank, 5_000)] {
        let mut index = random_shard(kind, 1_000, d, threshold, 0);
        if kind == IndexKind::Hnsw {
            index.remove_subject("s1").expect("stale entry");
        }
        assert!(!index.needs_tuning(), "{kind}");
        let report = index.tune(&request(0.9)).expect("tune");
        assert!(report.met_target && report.recall >= 0.9, "{kind}: {report:?}");
        assert_eq!((report.nprobe, report.rerank_depth), (0, 0), "{kind}");
        assert_eq!(report.exact, kind != IndexKind::Hnsw, "{kind}: exact search is the choice");
    }

    // Without stored vectors, an IVF shard needs labelled probes, and tunes nprobe with them.
    let mut ivf = random_shard(IndexKind::IvfFlat, 2_000, d, 1_000, 0);
    assert!(matches!(ivf.tune(&request(0.9)), Err(IndexError::Spec(_))));
    let mut rng = rand::rngs::StdRng::seed_from_u64(78);
    let labelled = shard_vectors(2_000, d)[..100]
        .iter()
        .enumerate()
        .map(|(i, template)| (noisy_copy(template, 0.9, &mut rng), format!("s{i}")))
        .collect();
    let report = ivf.tune(&TuneRequest { labelled: Some(labelled), ..request(0.95) }).expect("labelled");
    assert!(report.met_target && report.exact_recall >= 0.95, "{report:?}");
    assert!(report.nprobe >= 1 && report.nprobe <= 32, "{report:?}");
}

/// The vectors [`random_shard`] enrols for `n` templates.
fn shard_vectors(n: usize, d: usize) -> Vec<Vec<f32>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(n as u64);
    (0..n).map(|_| unit(&mut rng, d)).collect()
}

#[test]
fn a_measurement_changes_neither_the_settings_nor_the_last_tuning() {
    let (n, d) = (4_000, 32);
    let mut index = random_shard(IndexKind::IvfRerank, n, d, 1_000, 8);
    let own = SearchSettings { nprobe: 3, rerank_depth: 100 };
    index.set_search_settings(own).expect("set");
    let report = index.measure(&request(0.9)).expect("measure");
    assert_eq!(index.requested_search_settings(), own);
    assert_eq!(index.faiss_nprobe(), Some(3));
    assert_eq!(index.tuned_at(), None, "measured, not tuned");
    assert!(index.needs_tuning());

    // Applied (as the matcher does after measuring a copy), it is a tuning at the size measured.
    index.apply_tuned(&report).expect("applied");
    let applied = index.search_settings();
    assert_eq!((applied.nprobe, applied.rerank_depth), (report.nprobe, report.rerank_depth));
    assert_eq!(index.tuned_at(), Some(n));
    index.set_tuned_at(n / 4);
    assert!(index.needs_tuning(), "four times the size given");
    let mut untrained = random_shard(IndexKind::IvfRerank, 10, d, 1_000, 8);
    untrained.set_tuned_at(10);
    assert_eq!(untrained.tuned_at(), None, "its training resets it anyway");

    // A copy measures like the shard and leaves it alone.
    let mut copy = index.try_clone().expect("copy");
    assert_eq!((copy.template_count(), copy.search_settings()), (n, applied));
    copy.tune(&request(0.5)).expect("tuned copy");
    assert_eq!((index.search_settings(), index.tuned_at()), (applied, Some(n / 4)));
}

#[test]
fn labelled_probes_count_against_their_labels_where_their_subject_is_held() {
    let (n, d) = (2_000, 32);
    let mut index = random_shard(IndexKind::IvfRerank, n, d, 1_000, 8);
    let vectors = shard_vectors(n, d);
    let mut rng = rand::rngs::StdRng::seed_from_u64(79);
    let mut probes = |label: &dyn Fn(usize) -> String| -> Vec<(Vec<f32>, String)> {
        (0..50).map(|i| (noisy_copy(&vectors[i], 0.9, &mut rng), label(i))).collect()
    };
    let mut labelled = probes(&|i| format!("s{i}"));
    labelled.extend(probes(&|i| format!("elsewhere{i}")));
    let report = index.measure(&TuneRequest { labelled: Some(labelled), ..request(0.9) }).expect("labelled");
    assert_eq!(report.probes, 50, "only probes of held subjects: {report:?}");
    assert!(report.met_target && report.recall >= 0.9 && report.exact_recall >= 0.9, "{report:?}");

    // Mislabelled, no setting finds the label: recall is against the labels, not exact search.
    let wrong = probes(&|i| format!("s{}", i + 1));
    let report = index.measure(&TuneRequest { labelled: Some(wrong), ..request(0.9) }).expect("mislabelled");
    assert!(!report.met_target && report.recall < 0.1 && report.exact_recall < 0.1, "{report:?}");

    let elsewhere = probes(&|i| format!("elsewhere{i}"));
    let none = index.measure(&TuneRequest { labelled: Some(elsewhere), ..request(0.9) });
    assert!(matches!(none, Err(IndexError::Spec(_))), "{none:?}");
    let mut nan = probes(&|i| format!("s{i}"));
    nan[3].0[1] = f32::NAN;
    let refused = index.measure(&TuneRequest { labelled: Some(nan), ..request(0.9) });
    assert!(matches!(refused, Err(IndexError::Spec(_))), "{refused:?}");
}

#[test]
fn exact_search_is_the_choice_of_a_tiny_trained_shard() {
    // 300 templates: scanning them all costs less than scanning codes and re-scoring candidates.
    let mut index = random_shard(IndexKind::IvfRerank, 300, 32, 256, 8);
    assert!(index.is_trained());
    let report = index.measure(&request(0.9)).expect("measure");
    assert!(report.exact, "{report:?}");
    assert!(report.exact_queries_per_second >= report.queries_per_second, "{report:?}");
}
