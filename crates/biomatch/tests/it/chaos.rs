//! The seeded fault-injection run (crate biomatch-chaos), short: every role as its own process on
//! a private PostgreSQL and Redis, clients working through kills, pauses, a PostgreSQL crash, a
//! PostgreSQL pause (storage that hangs mid-write) and a Redis outage, then the checker. The seed
//! is printed; `BIOMATCH_TEST_SEED` replays a run and `BIOMATCH_CHAOS_SECONDS` lengthens it (the
//! long run is `biomatch chaos`, docs/reliability.md).

use crate::common::BIN;
use std::time::Duration;

#[test]
fn the_cluster_keeps_its_promises_under_a_seeded_nemesis() {
    if biomatch_chaos::missing_tools().is_some() {
        let missing = biomatch_chaos::missing_tools().unwrap_or_default();
        assert!(std::env::var("CI").as_deref() != Ok("true"), "CI must run the chaos test: {missing}");
        eprintln!("skipped: {missing}");
        return;
    }
    let seed =
        std::env::var("BIOMATCH_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    let seconds = std::env::var("BIOMATCH_CHAOS_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(75);
    eprintln!("chaos seed {seed} ({seconds} s): BIOMATCH_TEST_SEED={seed} replays it");
    // Kept for reading when the test fails (the processes' logs are in it); removed when it passes.
    let work = tempfile::Builder::new().prefix("biomatch-chaos-").tempdir().expect("tempdir");
    eprintln!("work directory (logs): {}", work.path().display());
    let config = biomatch_chaos::Config {
        binary: BIN.into(),
        seed,
        duration: Duration::from_secs(seconds),
        clients: 4,
        work_dir: work.path().to_owned(),
    };
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt");
    let report = runtime.block_on(biomatch_chaos::run(&config));
    let report = match report {
        Ok(report) => report,
        Err(e) => panic!("the run failed: {e:#}; logs kept in {}", work.keep().display()),
    };
    eprintln!("{}", report.table());

    if !report.anomalies.is_empty() {
        panic!("seed {seed}: {:#?}; logs kept in {}", report.anomalies, work.keep().display());
    }
    assert_eq!(report.plan, biomatch_chaos::plan::plan(seed, config.duration), "the seed replays the plan");
    assert_eq!(report.applied.len(), report.plan.len(), "every planned fault was applied");
    assert_eq!(
        report.faults_by_kind.len(),
        5,
        "kill, pause, PostgreSQL restart, PostgreSQL pause, Redis stop: {:?}",
        report.faults_by_kind
    );
    for (kind, counts) in &report.operations {
        assert!(counts.acknowledged > 0, "{kind:?} was answered at least once: {counts:?}");
    }
    let calm = &report.availability["none"];
    assert!(calm.share > 0.95, "without a fault nearly everything is answered: {calm:?}");
    assert!(report.subjects_enrolled > 20 && report.subjects_deleted > 0, "{report:?}");
}
