//! Every index kind finds, forgets and round-trips templates.

use super::*;
use rand::{Rng, SeedableRng};

fn unit(rng: &mut impl Rng, d: usize) -> Vec<f32> {
    let v: Vec<f32> = (0..d).map(|_| rng.random_range(-1.0..1.0)).collect();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x / n).collect()
}

/// A face-like sample: the identity's centre plus a little noise, normalised.
fn near(rng: &mut impl Rng, centre: &[f32], noise: f32) -> Vec<f32> {
    let v: Vec<f32> = centre.iter().map(|c| c + rng.random_range(-noise..noise)).collect();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x / n).collect()
}

fn spec(kind: IndexKind) -> IndexSpec {
    let mut spec = IndexSpec::of(kind);
    // Small enough to train in a unit test.
    spec.train_threshold = 1_000;
    spec.ivf_nlist = 16;
    spec.ivf_nprobe = 8;
    spec
}

#[test]
fn finds_subjects_and_forgets_removed_ones() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let d = 32;
    let mut index = ShardIndex::new(d, &IndexSpec::flat()).expect("flat");
    let vectors: Vec<Vec<f32>> = (0..100).map(|_| unit(&mut rng, d)).collect();
    for (i, v) in vectors.iter().enumerate() {
        index.replace_subject(&format!("s{i}"), &[(i as i64, v)]).expect("add");
    }
    let hits = index.search(&vectors[42], 3).expect("search");
    assert_eq!(&*hits[0][0].subject, "s42");
    assert!((hits[0][0].score - 1.0).abs() < 1e-4);
    assert_eq!(hits[0].len(), 3);

    assert_eq!(index.remove_subject("s42").expect("remove"), 1);
    let hits = index.search(&vectors[42], 100).expect("search");
    assert!(hits[0].iter().all(|h| &*h.subject != "s42"));
    assert_eq!(hits[0].len(), 99);
    assert_eq!(index.templates_of("s42"), None);
}

#[test]
fn subjects_are_distinct_and_replacing_keeps_only_new_templates() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(8);
    let d = 16;
    let mut index = ShardIndex::new(d, &IndexSpec::flat()).expect("flat");
    let a: Vec<Vec<f32>> = (0..5).map(|_| unit(&mut rng, d)).collect();
    let refs: Vec<(i64, &[f32])> = a.iter().enumerate().map(|(i, v)| (i as i64, v.as_slice())).collect();
    index.replace_subject("many", &refs).expect("add");
    let other = unit(&mut rng, d);
    index.replace_subject("one", &[(100, &other)]).expect("add");
    let hits = index.search(&a[3], 2).expect("search");
    assert_eq!(hits[0].len(), 2, "two distinct subjects despite five templates of one");
    assert_eq!(&*hits[0][0].subject, "many");
    index.replace_subject("many", &[(200, &a[0])]).expect("replace");
    assert_eq!(index.template_count(), 2);
    assert_eq!(index.templates_of("many"), Some(&[200][..]));
}

#[test]
fn refuses_wrong_dimension_and_bad_parameters() {
    let mut index = ShardIndex::new(8, &IndexSpec::flat()).expect("flat");
    assert!(matches!(
        index.replace_subject("x", &[(1, &[0.0; 7])]),
        Err(IndexError::Dimension { got: 7, want: 8 })
    ));
    assert!(matches!(index.search(&[0.0; 9], 1), Err(IndexError::Dimension { .. })));
    let mut pq = IndexSpec::of(IndexKind::IvfPq);
    pq.pq_m = 7;
    assert!(matches!(ShardIndex::new(64, &pq), Err(IndexError::Spec(_))), "7 does not divide 64");
    pq.kind = IndexKind::PqRerank;
    assert!(matches!(ShardIndex::new(64, &pq), Err(IndexError::Spec(_))), "nor for the re-rank kind");
    let mut ivf = IndexSpec::of(IndexKind::IvfFlat);
    ivf.ivf_nlist = 1024;
    ivf.train_threshold = 1000;
    assert!(matches!(ShardIndex::new(64, &ivf), Err(IndexError::Spec(_))), "too few to train");
}

/// 1,500 identities with one template each; probes are fresh samples of 200 of them.
fn gallery(d: usize) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let centres: Vec<Vec<f32>> = (0..1_500).map(|_| unit(&mut rng, d)).collect();
    let enrolled = centres.iter().map(|c| near(&mut rng, c, 0.05)).collect();
    let probes = centres[..200].iter().map(|c| near(&mut rng, c, 0.05)).collect();
    (enrolled, probes)
}

#[test]
fn every_kind_finds_mates_removes_and_round_trips_through_a_snapshot() {
    let d = 64;
    let (enrolled, probes) = gallery(d);
    for kind in IndexKind::ALL {
        let mut index = ShardIndex::new(d, &spec(kind)).expect("index");
        for (i, v) in enrolled.iter().enumerate() {
            index.replace_subject(&format!("s{i}"), &[(i as i64, v)]).expect("add");
        }
        assert!(index.is_trained(), "{kind}: trained once past the threshold");
        let rank1 = |index: &mut ShardIndex| {
            let flat: Vec<f32> = probes.iter().flatten().copied().collect();
            let hits = index.search(&flat, 10).expect("search");
            hits.iter()
                .enumerate()
                .filter(|(i, h)| h.first().is_some_and(|c| *c.subject == *format!("s{i}")))
                .count()
        };
        let found = rank1(&mut index);
        assert!(found >= 196, "{kind}: rank-1 {found}/200");

        // Remove the first 50 mates: they are never returned again.
        for i in 0..50 {
            assert_eq!(index.remove_subject(&format!("s{i}")).expect("remove"), 1);
        }
        let flat: Vec<f32> = probes[..50].iter().flatten().copied().collect();
        let hits = index.search(&flat, 10).expect("search");
        for (i, list) in hits.iter().enumerate() {
            assert_eq!(list.len(), 10, "{kind}: still k subjects");
            assert!(list.iter().all(|c| *c.subject != *format!("s{i}")), "{kind}: removed s{i} returned");
        }

        // A snapshot restores the same answers; corrupted or foreign bytes are refused.
        let bytes = index.to_snapshot().expect("snapshot");
        let mut restored = ShardIndex::from_snapshot(d, &spec(kind), &bytes).expect("restore");
        assert_eq!(restored.template_count(), index.template_count());
        let all: Vec<f32> = probes.iter().flatten().copied().collect();
        assert_eq!(restored.search(&all, 5).expect("a"), index.search(&all, 5).expect("b"), "{kind}");
        assert!(ShardIndex::from_snapshot(d, &spec(kind), &bytes[..bytes.len() - 9]).is_err());
        assert!(ShardIndex::from_snapshot(d + 1, &spec(kind), &bytes).is_err(), "{kind}: other dimension");
        let other = if kind == IndexKind::Hnsw { IndexKind::Flat } else { IndexKind::Hnsw };
        assert!(ShardIndex::from_snapshot(d, &spec(other), &bytes).is_err(), "{kind}: other kind");
    }
}

#[test]
fn hnsw_rebuilds_when_a_quarter_is_stale() {
    let d = 16;
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let mut index = ShardIndex::new(d, &IndexSpec::of(IndexKind::Hnsw)).expect("hnsw");
    let vectors: Vec<Vec<f32>> = (0..4_000).map(|_| unit(&mut rng, d)).collect();
    for (i, v) in vectors.iter().enumerate() {
        index.replace_subject(&format!("s{i}"), &[(i as i64, v)]).expect("add");
    }
    for i in 0..1_023 {
        index.remove_subject(&format!("s{i}")).expect("remove");
    }
    assert_eq!(index.stale, 1_023);
    index.remove_subject("s1023").expect("remove");
    assert_eq!(index.stale, 0, "rebuilt without the removed entries");
    use faiss::Index;
    assert_eq!(index.index.ntotal(), 2_976);
    let hits = index.search(&vectors[3_999], 1).expect("search");
    assert_eq!(&*hits[0][0].subject, "s3999");
}
