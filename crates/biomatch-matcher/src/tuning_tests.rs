//! Recorded tuning, measurement and automatic tuning of one shard.

use super::*;
use biomatch_domain::{IndexKind, IndexSpec};
use rand::{Rng, SeedableRng};
use std::time::{Duration, Instant};

const D: usize = 32;

fn unit(rng: &mut impl Rng) -> Vec<f32> {
    let v: Vec<f32> = (0..D).map(|_| rng.random_range(-1.0..1.0)).collect();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x / n).collect()
}

/// Enrols templates `first..first + n`, one per subject `s{i}`.
fn enrol(index: &mut ShardIndex, first: usize, n: usize) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(first as u64);
    for i in first..first + n {
        index.replace_subject(&format!("s{i}"), &[(i as i64, &unit(&mut rng))]).expect("add");
    }
}

/// An `ivf_rerank` shard of 2,000 templates, trained at 1,000 and never tuned since.
fn trained() -> ShardIndex {
    let spec = IndexSpec { train_threshold: 1_000, pq_m: 8, ..IndexSpec::of(IndexKind::IvfRerank) };
    let mut index = ShardIndex::new(D, &spec).expect("index");
    enrol(&mut index, 0, 2_000);
    assert!(index.is_trained() && index.needs_tuning());
    index
}

fn request() -> TuneRequest {
    TuneRequest { target_recall: 0.9, genuine_score: 0.8, probes: 50, seed: 3, labelled: None }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_tuning_counts_as_the_shards_own_until_the_shard_doubles() {
    // A matcher without a snapshot rebuilds the shard: trained again, never tuned since.
    let shard = Shard::for_tests(trained(), Arc::default());
    let recorded = SearchTuning {
        nprobe: 2,
        rerank_depth: 128,
        target_recall: 0.9,
        templates: 2_000,
        version: 1,
        ..Default::default()
    };
    shard.apply_tuning(&recorded).expect("applied");
    assert_eq!(shard.lock().tuned_at(), Some(2_000));
    assert!(!shard.tune_if_due(), "the gallery's tuning stands until the shard doubles");
    assert_eq!(shard.settings_source(), SettingsSource::Gallery);
    assert_eq!(shard.search_settings(), SearchSettings { nprobe: 2, rerank_depth: 128 });

    enrol(&mut shard.lock(), 2_000, 1_999);
    assert!(!shard.lock().needs_tuning());
    enrol(&mut shard.lock(), 3_999, 1);
    assert!(shard.lock().needs_tuning(), "twice the recorded size");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_measurement_changes_nothing_and_one_runs_at_a_time() {
    let measuring = Arc::new(AtomicBool::new(false));
    let shard = Shard::for_tests(trained(), measuring.clone());
    let own = SearchSettings { nprobe: 3, rerank_depth: 100 };
    shard.lock().set_search_settings(own).expect("set");
    let report = shard.measure(&request()).expect("measured");
    assert!(report.rerank_depth >= 64 && report.probes == 50, "{report:?}");
    {
        let index = shard.lock();
        assert_eq!(index.requested_search_settings(), own, "settings as they were");
        assert_eq!(index.tuned_at(), None, "a measurement is not a tuning");
        assert!(index.needs_tuning(), "automatic tuning is still due");
    }

    assert!(shard.tuning(), "due: Describe reports the settings as not settled");

    // Another measurement is running: refused at once, and automatic tuning waits.
    measuring.store(true, Ordering::SeqCst);
    let started = Instant::now();
    let busy = shard.measure(&request()).expect_err("busy");
    assert!(matches!(busy, MeasureError::Busy) && started.elapsed() < Duration::from_secs(1));
    assert_eq!(biomatch_proto::status_from(&busy).code(), tonic::Code::ResourceExhausted);
    assert!(!shard.tune_if_due());
    measuring.store(false, Ordering::SeqCst);

    assert!(shard.tune_if_due(), "due once the other measurement ends");
    let deadline = Instant::now() + Duration::from_secs(120);
    while shard.lock().tuned_at().is_none() {
        assert!(Instant::now() < deadline, "automatic tuning never finished");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(shard.settings_source(), SettingsSource::Automatic);
    while measuring.load(Ordering::SeqCst) {
        assert!(Instant::now() < deadline, "the slot was never freed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!shard.tuning(), "tuned and nothing measuring: settled");
    measuring.store(true, Ordering::SeqCst);
    assert!(shard.tuning(), "a measurement running on this matcher is reported");
    measuring.store(false, Ordering::SeqCst);
}

/// How long searches of a shard of 1e5 templates of 512 values wait while it is measured:
/// `cargo test -p biomatch-matcher --release -- --ignored --nocapture searches_wait`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "builds a shard of 1e5 x 512; a measurement, not a check"]
async fn searches_wait_only_for_the_copy() {
    let d = 512;
    let spec = IndexSpec { train_threshold: 100_000, ivf_nlist: 512, ..IndexSpec::of(IndexKind::IvfRerank) };
    let mut index = ShardIndex::new(d, &spec).expect("index");
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let unit_d = |rng: &mut rand::rngs::StdRng| {
        let v: Vec<f32> = (0..d).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.into_iter().map(|x| x / n).collect::<Vec<f32>>()
    };
    let built = Instant::now();
    for i in 0..100_000usize {
        index.replace_subject(&format!("s{i}"), &[(i as i64, &unit_d(&mut rng))]).expect("add");
    }
    assert!(index.is_trained());
    eprintln!("built and trained in {:?}", built.elapsed());
    let copy = Instant::now();
    drop(index.try_clone().expect("copy"));
    eprintln!("a copy takes {:?}", copy.elapsed());
    let shard = Shard::for_tests(index, Arc::default());
    let request =
        TuneRequest { target_recall: 0.995, genuine_score: 0.66, probes: 200, seed: 1, labelled: None };

    let in_place = Instant::now();
    let report = Shard::measure_in_place(shard.lock(), &request).expect("measured in place");
    let locked = in_place.elapsed();
    eprintln!("measured under the lock: searches blocked {locked:?} ({report:?})");

    let probe = unit_d(&mut rng);
    let measuring = {
        let shard = shard.clone();
        std::thread::spawn(move || {
            let started = Instant::now();
            shard.measure(&request).expect("measured on a copy");
            started.elapsed()
        })
    };
    let mut worst = Duration::ZERO;
    while !measuring.is_finished() {
        let started = Instant::now();
        shard.search(probe.clone(), 10).await.expect("search");
        worst = worst.max(started.elapsed());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let total = measuring.join().expect("thread");
    eprintln!("measured on a copy in {total:?}: the slowest search meanwhile took {worst:?}");
    assert!(worst < locked / 2, "searches waited {worst:?} (in place: {locked:?})");
}
