//! The soak (issue 19): the chaos run's cluster and clients for a long while with no faults,
//! each client holding a bounded number of subjects so the workload reaches a steady state.
//! Every interval it reads each process's resident memory, open files and sockets from /proc and
//! PostgreSQL's client connections; afterwards each interval's latency is joined in. A leak shows
//! as a column that keeps growing while the workload stays the same.

use crate::cluster::Cluster;
use crate::workload::{Op, Outcome};
use serde::Serialize;
use std::fmt::Write;

/// One process at one moment.
#[derive(Debug, Clone, Serialize)]
pub struct ProcSample {
    pub name: String,
    pub rss_kib: u64,
    pub open_files: u64,
    pub sockets: u64,
}

/// Every process at one moment.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// Seconds since the workload began.
    pub at_s: u64,
    pub procs: Vec<ProcSample>,
    /// Processes that could not be read (gone): a soak's failure, not a drop in memory.
    pub missing: Vec<String>,
    /// PostgreSQL's client backends (every role's pool together); -1 when the count failed.
    pub postgres_connections: i64,
}

/// One interval: the operations that ended in it, and the sample taken at its end.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub at_s: u64,
    pub operations: usize,
    pub acknowledged: usize,
    /// Latency of the acknowledged; none in an interval with none.
    pub p50_ms: Option<u64>,
    pub p99_ms: Option<u64>,
    pub rss_mib: f64,
    /// Open file descriptors, sockets included.
    pub open_files: u64,
    pub sockets: u64,
    pub postgres_connections: i64,
}

#[derive(Debug, Serialize)]
pub struct SoakReport {
    pub interval_s: u64,
    pub clients: usize,
    pub subjects_per_client: usize,
    pub rows: Vec<Row>,
    pub samples: Vec<Sample>,
    /// Role processes that exited by themselves during the run (a sound soak has none).
    pub exited: Vec<String>,
}

/// `/proc/PID`'s resident memory, open files and sockets; `None` once the process is gone.
pub fn read_proc(name: &str, pid: u32) -> Option<ProcSample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())?;
    let (mut open_files, mut sockets) = (0, 0);
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.flatten() {
        open_files += 1;
        let target = std::fs::read_link(entry.path()).unwrap_or_default();
        sockets += u64::from(target.to_string_lossy().starts_with("socket:"));
    }
    Some(ProcSample { name: name.to_owned(), rss_kib, open_files, sockets })
}

/// Every role process and Redis now, with PostgreSQL's connection count.
pub async fn sample(cluster: &Cluster, pool: &sqlx::PgPool, at_s: u64) -> Sample {
    let (mut procs, mut missing) = (Vec::new(), Vec::new());
    for (name, pid) in cluster.pids() {
        match read_proc(&name, pid) {
            Some(p) => procs.push(p),
            None => missing.push(name),
        }
    }
    let count = "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'";
    // The sampler's own connection is one of them.
    let postgres_connections =
        sqlx::query_scalar::<_, i64>(count).fetch_one(pool).await.map_or(-1, |n| n - 1);
    Sample { at_s, procs, missing, postgres_connections }
}

fn ms(value: Option<u64>) -> String {
    value.map_or_else(|| "-".into(), |v| v.to_string())
}

/// Nearest rank; none of nothing.
fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    let rank = ((sorted.len() as f64) * p).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len().max(1)) - 1).copied()
}

impl SoakReport {
    pub fn new(
        interval_s: u64,
        clients: usize,
        subjects_per_client: usize,
        samples: Vec<Sample>,
        ops: &[Op],
        exited: Vec<String>,
    ) -> Self {
        let mut start = 0;
        let rows = samples
            .iter()
            .enumerate()
            .map(|(i, s)| {
                // The last interval is open: it holds what ended after its sample was due.
                let end = if i + 1 == samples.len() { u64::MAX } else { s.at_s * 1000 };
                let in_interval: Vec<&Op> =
                    ops.iter().filter(|o| o.ended_ms >= start && o.ended_ms < end).collect();
                start = end;
                let mut latencies: Vec<u64> = in_interval
                    .iter()
                    .filter(|o| o.outcome == Outcome::Acked)
                    .map(|o| o.ended_ms.saturating_sub(o.started_ms))
                    .collect();
                latencies.sort_unstable();
                Row {
                    at_s: s.at_s,
                    operations: in_interval.len(),
                    acknowledged: latencies.len(),
                    p50_ms: percentile(&latencies, 0.5),
                    p99_ms: percentile(&latencies, 0.99),
                    rss_mib: s.procs.iter().map(|p| p.rss_kib).sum::<u64>() as f64 / 1024.0,
                    open_files: s.procs.iter().map(|p| p.open_files).sum(),
                    sockets: s.procs.iter().map(|p| p.sockets).sum(),
                    postgres_connections: s.postgres_connections,
                }
            })
            .collect();
        Self { interval_s, clients, subjects_per_client, rows, samples, exited }
    }

    /// The rows as a Markdown table, then each process's memory at the first and last sample.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "| minute | ops | acked | p50 ms | p99 ms | RSS MiB (all) | open files | sockets | PG connections |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
        for r in &self.rows {
            let _ = writeln!(
                out,
                "| {:.1} | {} | {} | {} | {} | {:.1} | {} | {} | {} |",
                r.at_s as f64 / 60.0,
                r.operations,
                r.acknowledged,
                ms(r.p50_ms),
                ms(r.p99_ms),
                r.rss_mib,
                r.open_files,
                r.sockets,
                r.postgres_connections
            );
        }
        for s in self.samples.iter().filter(|s| !s.missing.is_empty()) {
            let _ = writeln!(
                out,
                "\nat {} s these processes could not be read: {}",
                s.at_s,
                s.missing.join(", ")
            );
        }
        if !self.exited.is_empty() {
            let _ = writeln!(out, "\nexited by themselves: {}", self.exited.join(", "));
        }
        if let (Some(first), Some(last)) = (self.samples.first(), self.samples.last()) {
            let _ = writeln!(
                out,
                "\n| process | RSS MiB at {} s | at {} s |\n|---|---|---|",
                first.at_s, last.at_s
            );
            for p in &first.procs {
                let later = last.procs.iter().find(|q| q.name == p.name).map_or(0, |q| q.rss_kib);
                let _ = writeln!(
                    out,
                    "| {} | {:.1} | {:.1} |",
                    p.name,
                    p.rss_kib as f64 / 1024.0,
                    later as f64 / 1024.0
                );
            }
        }
        out
    }

    /// One line per sample and process, for plotting (`scripts/plot-soak.py`).
    pub fn csv(&self) -> String {
        let mut out = String::from("at_s,process,rss_kib,open_files,sockets,postgres_connections,p99_ms\n");
        for (s, r) in self.samples.iter().zip(&self.rows) {
            for p in &s.procs {
                let _ = writeln!(
                    out,
                    "{},{},{},{},{},{},{}",
                    s.at_s,
                    p.name,
                    p.rss_kib,
                    p.open_files,
                    p.sockets,
                    s.postgres_connections,
                    r.p99_ms.map_or_else(String::new, |v| v.to_string())
                );
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_read_from_proc() {
        let me = read_proc("me", std::process::id()).expect("our own /proc entry");
        assert!(me.rss_kib > 0 && me.open_files >= 3, "{me:?}");
        assert!(read_proc("gone", u32::MAX).is_none());
    }

    #[test]
    fn each_interval_counts_the_operations_that_ended_in_it() {
        let op = |ended_ms, outcome| Op {
            ended_ms,
            outcome,
            ..crate::workload::blank(0, crate::workload::OpKind::Identify, "s")
        };
        let ops = [
            op(10, Outcome::Acked),
            op(59_999, Outcome::Acked),
            op(60_000, Outcome::Refused),
            op(70_000, Outcome::Acked),
            // Ended after the last sample was due: still counted, in the last interval.
            op(125_000, Outcome::Refused),
        ];
        let at = |at_s| Sample {
            at_s,
            procs: vec![ProcSample { name: "x".into(), rss_kib: 2048, open_files: 5, sockets: 2 }],
            missing: Vec::new(),
            postgres_connections: 3,
        };
        let mut later = at(180);
        later.missing.push("matcher-0-1".into());
        let report =
            SoakReport::new(60, 1, 10, vec![at(60), at(120), later], &ops, vec!["matcher-0-1".into()]);
        assert_eq!((report.rows[0].operations, report.rows[0].acknowledged), (2, 2));
        assert_eq!((report.rows[1].operations, report.rows[1].acknowledged), (2, 1));
        assert_eq!((report.rows[2].operations, report.rows[2].p99_ms), (1, None));
        assert_eq!(report.rows[0].rss_mib, 2.0);
        let table = report.table();
        assert!(table.contains("| 2.0 | 2 | 1 |") && table.contains("| 3.0 | 1 | 0 | - | - |"), "{table}");
        assert!(table.contains("could not be read: matcher-0-1") && table.contains("exited by themselves"));
        assert_eq!(report.csv().lines().count(), 4);
    }
}
