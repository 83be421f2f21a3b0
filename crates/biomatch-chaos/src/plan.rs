//! The nemesis's schedule: which fault happens when, drawn from a seed, so that a run's faults
//! can be replayed exactly by giving the same seed and duration.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use std::time::Duration;

/// A process of the cluster the nemesis can strike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    Audit,
    Ingest,
    Search,
    /// Matcher `n`: shard `n / 2`, replica `n % 2`.
    Matcher(usize),
    Gateway,
}

impl Target {
    /// Every role process, in start order (audit first: the others append to it).
    pub const ALL: [Target; 8] = [
        Target::Audit,
        Target::Ingest,
        Target::Matcher(0),
        Target::Matcher(1),
        Target::Matcher(2),
        Target::Matcher(3),
        Target::Search,
        Target::Gateway,
    ];

    pub fn name(self) -> String {
        match self {
            Target::Audit => "audit".into(),
            Target::Ingest => "ingest".into(),
            Target::Search => "search".into(),
            Target::Matcher(n) => format!("matcher-{}-{}", n / 2, n % 2),
            Target::Gateway => "gateway".into(),
        }
    }
}

/// One fault, applied at `at` after the start and healed after `lasts`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Fault {
    #[serde(serialize_with = "millis")]
    pub at: Duration,
    pub kind: FaultKind,
    /// How long the process stays dead, paused or unreachable before it is healed.
    #[serde(serialize_with = "millis")]
    pub lasts: Duration,
}

/// What the nemesis does.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "target")]
pub enum FaultKind {
    /// SIGKILL, then start the same process again.
    Kill(Target),
    /// SIGSTOP, then SIGCONT.
    Pause(Target),
    /// An immediate (crash) shutdown of PostgreSQL, then start it again.
    RestartPostgres,
    /// SIGSTOP to PostgreSQL's server and every backend, then SIGCONT: to the roles, storage that
    /// stops answering in the middle of a write (a hung disk), connections open.
    PausePostgres,
    /// Redis is killed and started again, empty.
    StopRedis,
}

impl FaultKind {
    /// The bucket availability is reported under.
    pub fn label(&self) -> &'static str {
        match self {
            FaultKind::Kill(_) => "kill",
            FaultKind::Pause(_) => "pause",
            FaultKind::RestartPostgres => "postgres_restart",
            FaultKind::PausePostgres => "postgres_pause",
            FaultKind::StopRedis => "redis_stop",
        }
    }
}

fn millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Faults drawn from `seed` for a run of `duration`: none in the first and last tenth (the
/// workload warms up, and the checker starts from a healed cluster), one at a time, with quiet
/// gaps between them. The same seed and duration always give the same plan.
pub fn plan(seed: u64, duration: Duration) -> Vec<Fault> {
    let mut rng = StdRng::seed_from_u64(seed);
    let end = duration.mul_f64(0.9);
    let mut at = duration.mul_f64(0.1).max(Duration::from_secs(2));
    let mut faults = Vec::new();
    // The first five faults are the five kinds in a drawn order, so even a short run has each.
    let mut first = [0, 5, 7, 9, 10];
    first.shuffle(&mut rng);
    loop {
        at += Duration::from_millis(rng.random_range(1_000..4_000));
        let roll = first.get(faults.len()).copied().unwrap_or_else(|| rng.random_range(0..11));
        let kind = match roll {
            0..=4 => FaultKind::Kill(Target::ALL[rng.random_range(0..Target::ALL.len())]),
            5 | 6 => FaultKind::Pause(Target::ALL[rng.random_range(0..Target::ALL.len())]),
            7 | 8 => FaultKind::RestartPostgres,
            9 => FaultKind::PausePostgres,
            _ => FaultKind::StopRedis,
        };
        let lasts = Duration::from_millis(rng.random_range(500..4_000));
        if at + lasts >= end {
            return faults;
        }
        faults.push(Fault { at, kind, lasts });
        at += lasts;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_replays_the_same_plan_and_another_seed_does_not() {
        let minutes = Duration::from_secs(180);
        let first = plan(7, minutes);
        assert_eq!(first, plan(7, minutes));
        assert_ne!(first, plan(8, minutes));
        assert!(first.len() >= 20, "a three-minute run strikes often: {}", first.len());
        for seed in 0..50 {
            let short = plan(seed, Duration::from_secs(60));
            let kinds: std::collections::HashSet<&str> =
                short.iter().take(5).map(|f| f.kind.label()).collect();
            assert_eq!(kinds.len(), 5, "a one-minute run of seed {seed} has every kind of fault: {short:?}");
        }
    }

    #[test]
    fn faults_do_not_overlap_and_leave_the_ends_quiet() {
        let duration = Duration::from_secs(120);
        let faults = plan(1, duration);
        for pair in faults.windows(2) {
            assert!(pair[0].at + pair[0].lasts <= pair[1].at, "{pair:?}");
        }
        assert!(faults.first().is_some_and(|f| f.at >= duration / 10));
        assert!(faults.last().is_some_and(|f| f.at + f.lasts < duration.mul_f64(0.9)));
    }
}
