//! `biomatch bench overload`: what the cluster does when offered ten times the identify rate it
//! can sustain. Each configuration gets its own in-process cluster on the same gallery: first a
//! lone client's latency (the unloaded p99), then the sustainable rate (closed loop, 64
//! clients), then an open loop offering `factor` times that rate, every call with a deadline.
//! Reported: what was answered within its deadline, what was refused and how fast, the latency of
//! the answered calls against the unloaded p99, and the process's peak resident memory. The
//! first row runs without admission bounds (the baseline), the second with them, offered the same
//! rate (ten times what the baseline sustained).
//!
//! On one machine the open loop's own calls take CPU from the cluster it measures: with
//! `--separate-cores` the clients run on a runtime of their own pinned to the last core and the
//! cluster's threads to the others, as if the load came from another machine.

use crate::cli::bench_cluster::ScratchGallery;
use crate::cli::bench_search::percentile;
use biomatch_config::AdmissionConfig;
use biomatch_domain::IndexSpec;
use biomatch_proto::v1::search_service_client::SearchServiceClient;
use clap::Args;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tonic::Code;

#[derive(Clone, Debug, Args)]
pub struct OverloadBenchArgs {
    /// Templates in the gallery (exact index, one shard).
    #[arg(long, default_value_t = 100_000)]
    size: usize,
    #[arg(long, default_value_t = 128)]
    dim: usize,
    /// Offered rate as a multiple of the sustainable one.
    #[arg(long, default_value_t = 10.0)]
    factor: f64,
    /// Length of the overload, in seconds.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Every call's deadline (sent as grpc-timeout).
    #[arg(long, default_value_t = 1_000)]
    deadline_ms: u64,
    /// Admission bounds of the second row (the front doors'; matcher and audit keep their defaults).
    #[arg(long, default_value_t = AdmissionConfig::default().max_in_flight)]
    max_in_flight: usize,
    #[arg(long, default_value_t = AdmissionConfig::default().max_waiting)]
    max_waiting: usize,
    #[arg(long, default_value_t = AdmissionConfig::default().max_wait_ms)]
    max_wait_ms: u64,
    /// The second row's in-flight bound follows latency, up to `--max-in-flight`.
    #[arg(long)]
    adaptive: bool,
    /// The clients on the last core and the cluster on the others (needs at least two).
    #[arg(long)]
    separate_cores: bool,
}

/// The resident set of this process, in MiB.
fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

struct Row {
    label: &'static str,
    unloaded_p99: f64,
    sustainable: f64,
    offered: f64,
    answered_per_s: f64,
    refused: usize,
    unavailable: usize,
    late: usize,
    other: usize,
    answered_p50: f64,
    answered_p99: f64,
    refusal_p99: f64,
    peak_rss: f64,
}

pub async fn run(args: OverloadBenchArgs) -> anyhow::Result<()> {
    let data = crate::cli::bench_search::data(args.size, args.dim, 1_000, &crate::synthetic::Data::Uniform)?;
    let data = Arc::new(data);
    let unbounded = AdmissionConfig {
        max_in_flight: 1 << 20,
        max_waiting: 1 << 20,
        max_wait_ms: 3_600_000,
        internal_max_in_flight: 1 << 20,
        internal_max_waiting: 1 << 20,
        internal_max_wait_ms: 3_600_000,
        adaptive: false,
    };
    let bounded = AdmissionConfig {
        max_in_flight: args.max_in_flight,
        max_waiting: args.max_waiting,
        max_wait_ms: args.max_wait_ms,
        adaptive: args.adaptive,
        ..AdmissionConfig::default()
    };
    let runtimes = if args.separate_cores { Some(cores::separate()?) } else { None };
    let (cluster, clients) = match &runtimes {
        Some((cluster, clients)) => (cluster.handle().clone(), clients.handle().clone()),
        None => (tokio::runtime::Handle::current(), tokio::runtime::Handle::current()),
    };
    let mut rows: Vec<Row> = Vec::new();
    for (label, admission) in [("no admission bounds (baseline)", unbounded), ("admission bounds", bounded)] {
        eprintln!("bench overload: {label}");
        // Both rows are offered the same rate: factor x what the unbounded cluster sustained.
        let offered = rows.first().map(|baseline| baseline.offered);
        let row = measure(label, admission, data.clone(), args.clone(), offered, clients.clone());
        rows.push(cluster.spawn(row).await??);
    }
    if let Some((cluster, clients)) = runtimes {
        cluster.shutdown_background();
        clients.shutdown_background();
    }
    let placement = if args.separate_cores {
        "the clients on the last core and every role on the others"
    } else {
        "every role and the clients sharing every core"
    };
    println!(
        "overload benchmark: identify, {} x {}-d templates (exact, one shard), in this process, {placement}; \
         offered {}x the sustainable rate for {} s, deadline {} ms; admission bounds: {} {} in flight, {} waiting, {} ms wait\n",
        args.size,
        args.dim,
        args.factor,
        args.seconds,
        args.deadline_ms,
        if args.adaptive { "following latency, at most" } else { "fixed at" },
        args.max_in_flight,
        args.max_waiting,
        args.max_wait_ms
    );
    println!(
        "| configuration | unloaded p99 ms | sustainable /s | offered /s | answered in deadline /s | refused RESOURCE_EXHAUSTED | \
         UNAVAILABLE | DEADLINE_EXCEEDED | other | answered p50 ms | answered p99 ms | answered p99 / unloaded p99 | \
         refusal p99 ms | peak RSS MiB |"
    );
    println!("|{}", "---|".repeat(14));
    for r in rows {
        println!(
            "| {} | {:.2} | {:.0} | {:.0} | {:.0} | {} | {} | {} | {} | {:.2} | {:.2} | {:.1} | {:.2} | {:.0} |",
            r.label,
            r.unloaded_p99,
            r.sustainable,
            r.offered,
            r.answered_per_s,
            r.refused,
            r.unavailable,
            r.late,
            r.other,
            r.answered_p50,
            r.answered_p99,
            r.answered_p99 / r.unloaded_p99.max(1e-6),
            r.refusal_p99,
            r.peak_rss
        );
    }
    Ok(())
}

/// What the clients saw of one configuration.
struct Observed {
    lone: Vec<Duration>,
    sustainable: f64,
    offered: f64,
    outcomes: Vec<(Code, Duration)>,
    elapsed: f64,
}

async fn measure(
    label: &'static str,
    admission: AdmissionConfig,
    data: Arc<crate::cli::bench_search::Data>,
    args: OverloadBenchArgs,
    offered: Option<f64>,
    clients: tokio::runtime::Handle,
) -> anyhow::Result<Row> {
    let scratch = Arc::new(
        ScratchGallery::start(|c| c.admission = admission, &IndexSpec::flat(), &data.enrolled).await?,
    );
    let running = Arc::new(AtomicBool::new(true));
    let sampler = {
        let running = running.clone();
        tokio::spawn(async move {
            let mut peak = rss_mib();
            while running.load(Ordering::Relaxed) {
                peak = peak.max(rss_mib());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            peak
        })
    };
    let load = drive(scratch.clone(), Arc::new(data.probes.clone()), args, offered);
    let observed = clients.spawn(load).await?;
    running.store(false, Ordering::Relaxed);
    let peak_rss = sampler.await?;
    if let Some(scratch) = Arc::into_inner(scratch) {
        scratch.running.shutdown().await;
    }
    let Observed { lone, sustainable, offered, outcomes, elapsed } = observed?;
    let latencies = |wanted: &dyn Fn(Code) -> bool| {
        let mut l: Vec<Duration> = outcomes.iter().filter(|(c, _)| wanted(*c)).map(|(_, d)| *d).collect();
        l.sort_unstable();
        l
    };
    let count = |code: Code| outcomes.iter().filter(|(c, _)| *c == code).count();
    let answered = latencies(&|c| c == Code::Ok);
    let refused = latencies(&|c| c == Code::ResourceExhausted);
    let known =
        [Code::Ok, Code::ResourceExhausted, Code::Unavailable, Code::DeadlineExceeded, Code::Cancelled];
    let mut others: std::collections::BTreeMap<String, usize> = std::collections::BTreeMap::new();
    for (code, _) in outcomes.iter().filter(|(c, _)| !known.contains(c)) {
        *others.entry(format!("{code:?}")).or_default() += 1;
    }
    eprintln!("bench overload: {label}: other outcomes {others:?}");
    let row = Row {
        label,
        unloaded_p99: percentile(&lone, 0.99),
        sustainable,
        offered,
        answered_per_s: answered.len() as f64 / elapsed,
        refused: refused.len(),
        unavailable: count(Code::Unavailable),
        late: count(Code::DeadlineExceeded) + count(Code::Cancelled),
        other: outcomes.iter().filter(|(c, _)| !known.contains(c)).count(),
        answered_p50: percentile(&answered, 0.5),
        answered_p99: percentile(&answered, 0.99),
        refusal_p99: percentile(&refused, 0.99),
        peak_rss,
    };
    Ok(row)
}

/// The clients' side, on `clients`' runtime with a connection of its own: a lone caller, the
/// closed loop that finds the sustainable rate, then the open loop.
async fn drive(
    scratch: Arc<ScratchGallery>,
    probes: Arc<Vec<Vec<f32>>>,
    args: OverloadBenchArgs,
    offered: Option<f64>,
) -> anyhow::Result<Observed> {
    let channel = biomatch_client::channel(&format!("http://{}", scratch.running.grpc_addr))?;
    let search = SearchServiceClient::new(channel);

    let mut lone = Vec::new();
    for i in 0..500 {
        let started = Instant::now();
        search.clone().identify(scratch.identify(probes[i % probes.len()].clone(), 0)).await?;
        lone.push(started.elapsed());
    }
    lone.sort_unstable();
    // Sustainable: 64 clients, closed loop, for a third of the overload's length.
    let answered = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs(args.seconds.div_ceil(3).max(3));
    let clients: Vec<_> = (0..64)
        .map(|c| {
            let (scratch, probes, search, answered) =
                (scratch.clone(), probes.clone(), search.clone(), answered.clone());
            tokio::spawn(async move {
                let mut i = c;
                while Instant::now() < until {
                    // Past tight admission bounds some of the 64 are refused: only answers count.
                    match search.clone().identify(scratch.identify(probes[i % probes.len()].clone(), 0)).await
                    {
                        Ok(_) => {
                            answered.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(status) if status.code() == Code::ResourceExhausted => {}
                        Err(status) => return Err(status),
                    }
                    i += 64;
                }
                Ok::<(), tonic::Status>(())
            })
        })
        .collect();
    let started = Instant::now();
    for c in clients {
        c.await??;
    }
    let sustainable = answered.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();

    // Overload: an open loop at `factor` x sustainable; each call's outcome and latency.
    let offered = offered.unwrap_or(sustainable * args.factor);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Code, Duration)>();
    let deadline = Duration::from_millis(args.deadline_ms);
    let started = Instant::now();
    let total = (offered * args.seconds as f64) as u64;
    for n in 0..total {
        tokio::time::sleep_until((started + Duration::from_secs_f64(n as f64 / offered)).into()).await;
        let mut request = scratch.identify(probes[n as usize % probes.len()].clone(), 0);
        request.set_timeout(deadline);
        let (mut search, tx) = (search.clone(), tx.clone());
        tokio::spawn(async move {
            let sent = Instant::now();
            let code = match tokio::time::timeout(deadline, search.identify(request)).await {
                Ok(Ok(_)) => Code::Ok,
                Ok(Err(status)) => status.code(),
                Err(_) => Code::DeadlineExceeded,
            };
            let _ = tx.send((code, sent.elapsed()));
        });
    }
    drop(tx);
    let mut outcomes = Vec::with_capacity(total as usize);
    while let Some(outcome) = rx.recv().await {
        outcomes.push(outcome);
    }
    let elapsed = started.elapsed().as_secs_f64();
    Ok(Observed { lone, sustainable, offered, outcomes, elapsed })
}

/// Threads pinned to cores, so that the clients and the cluster they measure do not share one.
mod cores {
    use anyhow::Context;
    use rustix::thread::{CpuSet, Pid, sched_getaffinity, sched_setaffinity};

    /// Pins every thread of this process to all of its cores but the last (threads started later
    /// inherit that), and returns two runtimes: one for the cluster on those cores, with a worker
    /// per core as a process started on them would have (the process's own runtime was sized
    /// for every core, and two workers time-sliced on one core stall each other's tasks for a
    /// scheduler slice), and a one-worker runtime whose threads run on the last core only.
    pub(super) fn separate() -> anyhow::Result<(tokio::runtime::Runtime, tokio::runtime::Runtime)> {
        let allowed = sched_getaffinity(None).context("this process's cores")?;
        let mut cores: Vec<usize> = (0..CpuSet::MAX_CPU).filter(|&c| allowed.is_set(c)).collect();
        let last = cores.pop().context("no core")?;
        anyhow::ensure!(!cores.is_empty(), "--separate-cores needs at least two cores; this process has one");
        let mut cluster = CpuSet::new();
        cores.iter().for_each(|&c| cluster.set(c));
        for task in std::fs::read_dir("/proc/self/task")? {
            let name = task?.file_name();
            let tid = name.to_str().and_then(|t| t.parse().ok()).and_then(Pid::from_raw);
            let tid = tid.with_context(|| format!("thread id {name:?}"))?;
            sched_setaffinity(Some(tid), &cluster).context("pinning the cluster's threads")?;
        }
        let mut clients = CpuSet::new();
        clients.set(last);
        // Named, so that a profile tells the two apart.
        let cluster_runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cores.len())
            .thread_name("cluster")
            .enable_all()
            .build()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("clients")
            .enable_all()
            .on_thread_start(move || {
                if let Err(e) = sched_setaffinity(None, &clients) {
                    eprintln!("bench overload: cannot pin a client thread to core {last}: {e}");
                }
            })
            .build()?;
        eprintln!("bench overload: the cluster on cores {cores:?}, the clients on core {last}");
        Ok((cluster_runtime, runtime))
    }
}
