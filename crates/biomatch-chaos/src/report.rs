//! What a run reports: the plan it followed, the operations by kind and outcome, availability
//! under each kind of fault, and the anomalies the checker found (a sound run has none).

use crate::checker::{Anomaly, Checked};
use crate::plan::Fault;
use crate::workload::{Op, OpKind, Outcome};
use crate::{Applied, Config};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write;

/// Operations of one kind by outcome.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Counts {
    pub attempted: usize,
    pub acknowledged: usize,
    /// Refused with a definite error.
    pub failed_cleanly: usize,
    /// Given up on after retries (writes settled afterwards by replay).
    pub indeterminate: usize,
    pub p50_ms: u64,
    pub p99_ms: u64,
}

/// Operations begun while a kind of fault was in effect (or within a second of its healing).
#[derive(Debug, Default, Clone, Serialize)]
pub struct Availability {
    pub operations: usize,
    pub acknowledged: usize,
    pub share: f64,
    /// Acknowledged at the first attempt, without a retry.
    pub first_attempt: usize,
    pub first_attempt_share: f64,
    /// Latency of the acknowledged, retries included.
    pub p99_ms: u64,
    #[serde(skip)]
    latencies: Vec<u64>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub seed: u64,
    pub duration_s: u64,
    pub clients: usize,
    /// The nemesis's plan, as drawn from the seed (the same seed draws it again).
    pub plan: Vec<Fault>,
    pub applied: Vec<Applied>,
    pub faults_by_kind: BTreeMap<&'static str, usize>,
    pub operations: BTreeMap<OpKind, Counts>,
    pub availability: BTreeMap<&'static str, Availability>,
    pub replayed_writes: usize,
    pub subjects_enrolled: usize,
    pub subjects_deleted: usize,
    pub audit_leaves: u64,
    /// Role processes that exited by themselves (not by the nemesis).
    pub exited_by_themselves: Vec<String>,
    pub anomalies: Vec<Anomaly>,
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((sorted.len() as f64) * p).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

impl Report {
    pub(crate) fn new(
        config: &Config,
        plan: Vec<Fault>,
        applied: Vec<Applied>,
        ops: Vec<Op>,
        checked: Checked,
        exited: Vec<String>,
    ) -> Self {
        let mut operations: BTreeMap<OpKind, Counts> = BTreeMap::new();
        let mut latencies: BTreeMap<OpKind, Vec<u64>> = BTreeMap::new();
        let mut availability: BTreeMap<&'static str, Availability> = BTreeMap::new();
        for op in &ops {
            let counts = operations.entry(op.kind).or_default();
            counts.attempted += 1;
            match op.outcome {
                Outcome::Acked => {
                    counts.acknowledged += 1;
                    latencies.entry(op.kind).or_default().push(op.ended_ms - op.started_ms);
                }
                Outcome::Refused => counts.failed_cleanly += 1,
                Outcome::Indeterminate => counts.indeterminate += 1,
            }
            let bucket = applied
                .iter()
                .find(|a| a.struck_ms <= op.started_ms && op.started_ms <= a.healed_ms + 1000)
                .map_or("none", |a| a.fault.kind.label());
            let entry = availability.entry(bucket).or_default();
            entry.operations += 1;
            if op.outcome == Outcome::Acked {
                entry.acknowledged += 1;
                entry.first_attempt += usize::from(op.attempts == 1);
                entry.latencies.push(op.ended_ms - op.started_ms);
            }
        }
        for (kind, mut times) in latencies {
            times.sort_unstable();
            let counts = operations.entry(kind).or_default();
            counts.p50_ms = percentile(&times, 0.50);
            counts.p99_ms = percentile(&times, 0.99);
        }
        for entry in availability.values_mut() {
            entry.share = entry.acknowledged as f64 / entry.operations.max(1) as f64;
            entry.first_attempt_share = entry.first_attempt as f64 / entry.operations.max(1) as f64;
            entry.latencies.sort_unstable();
            entry.p99_ms = percentile(&entry.latencies, 0.99);
        }
        let mut faults_by_kind = BTreeMap::new();
        for a in &applied {
            *faults_by_kind.entry(a.fault.kind.label()).or_default() += 1;
        }
        let mut anomalies = checked.anomalies;
        if applied.len() != plan.len() {
            anomalies.push(Anomaly {
                kind: "plan_not_followed",
                detail: format!("{} of {} faults applied", applied.len(), plan.len()),
            });
        }
        for name in &exited {
            anomalies.push(Anomaly { kind: "process_exited", detail: format!("{name} exited by itself") });
        }
        Self {
            seed: config.seed,
            duration_s: config.duration.as_secs(),
            clients: config.clients,
            plan,
            applied,
            faults_by_kind,
            operations,
            availability,
            replayed_writes: checked.replayed.len(),
            subjects_enrolled: checked.subjects_enrolled,
            subjects_deleted: checked.subjects_deleted,
            audit_leaves: checked.leaves,
            exited_by_themselves: exited,
            anomalies,
        }
    }

    /// The figures as a plain-text table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ =
            writeln!(out, "chaos run: seed {}, {} s, {} clients", self.seed, self.duration_s, self.clients);
        let faults: Vec<String> = self.faults_by_kind.iter().map(|(k, n)| format!("{k} {n}")).collect();
        let _ = writeln!(out, "faults injected: {} ({})", self.applied.len(), faults.join(", "));
        let _ = writeln!(
            out,
            "\n{:<14} {:>9} {:>6} {:>14} {:>13} {:>7} {:>7}",
            "operation", "attempted", "acked", "failed cleanly", "indeterminate", "p50 ms", "p99 ms"
        );
        for (kind, c) in &self.operations {
            let _ = writeln!(
                out,
                "{:<14} {:>9} {:>6} {:>14} {:>13} {:>7} {:>7}",
                format!("{kind:?}").to_lowercase(),
                c.attempted,
                c.acknowledged,
                c.failed_cleanly,
                c.indeterminate,
                c.p50_ms,
                c.p99_ms
            );
        }
        let _ = writeln!(
            out,
            "\n{:<17} {:>10} {:>6} {:>13} {:>14} {:>7}",
            "during", "operations", "acked", "availability", "first attempt", "p99 ms"
        );
        for (bucket, a) in &self.availability {
            let _ = writeln!(
                out,
                "{:<17} {:>10} {:>6} {:>12.1}% {:>13.1}% {:>7}",
                bucket,
                a.operations,
                a.acknowledged,
                a.share * 100.0,
                a.first_attempt_share * 100.0,
                a.p99_ms
            );
        }
        let _ = writeln!(
            out,
            "\nwrites settled by replay: {}; subjects enrolled {}, deleted {}; audit leaves {}",
            self.replayed_writes, self.subjects_enrolled, self.subjects_deleted, self.audit_leaves
        );
        if !self.exited_by_themselves.is_empty() {
            let _ = writeln!(
                out,
                "processes that exited by themselves: {}",
                self.exited_by_themselves.join(", ")
            );
        }
        let _ = writeln!(out, "anomalies: {}", self.anomalies.len());
        for a in &self.anomalies {
            let _ = writeln!(out, "  {}: {}", a.kind, a.detail);
        }
        out
    }
}
