//! A fault-injection run of the whole cluster (issue 19): every role as its own process on a
//! private PostgreSQL and Redis (2 shards x 2 matcher replicas, a gateway), several clients
//! enrolling, deleting, identifying and verifying with idempotency keys and retries, and a
//! nemesis that, at moments drawn from a seed, SIGKILLs and restarts any role, crashes and
//! restarts PostgreSQL, stops Redis and pauses processes (SIGSTOP/SIGCONT). Afterwards a
//! checker proves from the clients' records that every acknowledged enrolment is stored and
//! found, every acknowledged deletion is gone from the store, the change log and every matcher,
//! every answer's audit leaf is where the answer said, no leaf is missing or duplicated, and
//! `biomatch audit verify --strict` passes. Loopback only; bounded in time.
#![forbid(unsafe_code)]

mod checker;
mod cluster;
pub mod plan;
mod procs;
mod report;
pub mod soak;
mod workload;

pub use checker::Anomaly;
pub use report::Report;
pub use soak::SoakReport;

use biomatch_domain::Role;
use biomatch_proto::v1::CreateGalleryRequest;
use biomatch_proto::v1::ingest_service_client::IngestServiceClient;
use cluster::{Cluster, DIMENSION, GALLERY, PURPOSE, SHARDS};
use plan::Target;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// What to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// The `biomatch` binary whose `serve` the roles run.
    pub binary: PathBuf,
    pub seed: u64,
    pub duration: Duration,
    pub clients: usize,
    /// Where the run keeps its database, keys and logs (kept after the run for reading).
    pub work_dir: PathBuf,
}

/// A fault as it happened: when it was applied and when healed, in ms since the start.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Applied {
    pub fault: plan::Fault,
    pub struck_ms: u64,
    pub healed_ms: u64,
}

/// What a run needs from the machine and it lacks: PostgreSQL's server binaries (a private
/// cluster is made with them) and `redis-server`.
pub fn missing_tools() -> Option<String> {
    let mut missing = Vec::new();
    if procs::Postgres::find_bin().is_none() {
        missing.push("PostgreSQL server binaries under /usr/lib/postgresql (apt-get install postgresql)");
    }
    if procs::which("redis-server").is_none() {
        missing.push("redis-server (apt-get install redis-server)");
    }
    (!missing.is_empty()).then(|| missing.join("; "))
}

/// The cluster started, its gallery made, and where clients reach it as whom.
async fn start(config: &Config, started: Instant) -> anyhow::Result<(Cluster, workload::Endpoints)> {
    if let Some(missing) = missing_tools() {
        anyhow::bail!("a chaos run needs {missing}");
    }
    let postgres = procs::Postgres::find_bin().unwrap_or_default();
    std::fs::create_dir_all(&config.work_dir)?;
    let cluster = Cluster::start(&config.binary, postgres, &config.work_dir).await?;
    progress(started, "cluster started");
    let ttl = config.duration + Duration::from_secs(1800);
    let endpoints = workload::Endpoints {
        ingest: biomatch_client::channel(&cluster.url(Target::Ingest))?,
        search: biomatch_client::channel(&cluster.url(Target::Search))?,
        gateway: format!("http://127.0.0.1:{}", cluster.gateway_http),
        http: reqwest::Client::builder().timeout(Duration::from_secs(5)).build()?,
        enroller_token: cluster.token(Role::Enroller, "chaos-enroller", ttl)?,
        analyst_token: cluster.token(Role::Analyst, "chaos-analyst", ttl)?,
    };
    create_gallery(&cluster).await?;
    Ok((cluster, endpoints))
}

/// Runs the workload under the seeded nemesis, then the checker.
pub async fn run(config: &Config) -> anyhow::Result<Report> {
    let started = Instant::now();
    let (mut cluster, endpoints) = start(config, started).await?;
    let faults = plan::plan(config.seed, config.duration);
    let epoch = Instant::now();
    let stop = epoch + config.duration;
    let clients = spawn_clients(config, &endpoints, (epoch, stop), None);
    let mut applied = Vec::new();
    for fault in &faults {
        tokio::time::sleep_until((epoch + fault.at).into()).await;
        let struck_ms = millis(epoch);
        progress(started, &format!("fault {:?} for {} ms", fault.kind, fault.lasts.as_millis()));
        cluster.strike(&fault.kind).await?;
        tokio::time::sleep(fault.lasts).await;
        cluster.heal(&fault.kind).await?;
        applied.push(Applied { fault: fault.clone(), struck_ms, healed_ms: millis(epoch) });
    }
    let ops = join_clients(clients).await?;
    progress(started, &format!("workload done: {} operations; checking", ops.len()));
    let exited = cluster.exited();
    let checked = checker::check(&cluster, &endpoints, &ops).await?;
    progress(started, "checked");
    Ok(Report::new(config, faults, applied, ops, checked, exited))
}

/// The soak: the same workload with no faults, each client holding at most
/// `subjects_per_client` subjects, every process sampled every `interval` (module `soak`).
pub async fn soak(
    config: &Config,
    interval: Duration,
    subjects_per_client: usize,
) -> anyhow::Result<SoakReport> {
    let started = Instant::now();
    let (mut cluster, endpoints) = start(config, started).await?;
    let pool =
        sqlx::postgres::PgPoolOptions::new().max_connections(1).connect(&cluster.postgres.url()).await?;
    let epoch = Instant::now();
    let stop = epoch + config.duration;
    let clients = spawn_clients(config, &endpoints, (epoch, stop), Some(subjects_per_client));
    let mut samples = Vec::new();
    let mut next = epoch + interval;
    while next < stop {
        tokio::time::sleep_until(next.into()).await;
        samples.push(take_sample(&cluster, &pool, epoch, started).await);
        next += interval;
    }
    let ops = join_clients(clients).await?;
    // The last interval runs to the end of the workload, operations in flight at `stop` included.
    samples.push(take_sample(&cluster, &pool, epoch, started).await);
    progress(started, &format!("workload done: {} operations", ops.len()));
    let exited = cluster.exited();
    Ok(SoakReport::new(interval.as_secs(), config.clients, subjects_per_client, samples, &ops, exited))
}

async fn take_sample(
    cluster: &Cluster,
    pool: &sqlx::PgPool,
    epoch: Instant,
    started: Instant,
) -> soak::Sample {
    let sample = soak::sample(cluster, pool, epoch.elapsed().as_secs()).await;
    let rss: u64 = sample.procs.iter().map(|p| p.rss_kib).sum();
    let (procs, connections) = (sample.procs.len(), sample.postgres_connections);
    progress(
        started,
        &format!("sample: RSS {} MiB in {procs} processes, {connections} PG connections", rss / 1024),
    );
    sample
}

fn spawn_clients(
    config: &Config,
    endpoints: &workload::Endpoints,
    run: (Instant, Instant),
    cap: Option<usize>,
) -> Vec<tokio::task::JoinHandle<Vec<workload::Op>>> {
    (0..config.clients)
        .map(|id| tokio::spawn(workload::client(id, config.seed, endpoints.clone(), run, cap)))
        .collect()
}

async fn join_clients(
    clients: Vec<tokio::task::JoinHandle<Vec<workload::Op>>>,
) -> anyhow::Result<Vec<workload::Op>> {
    let mut ops = Vec::new();
    for client in clients {
        ops.extend(client.await?);
    }
    Ok(ops)
}

fn progress(started: Instant, what: &str) {
    eprintln!("chaos {:>6.1} s: {what}", started.elapsed().as_secs_f64());
}

fn millis(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

async fn create_gallery(cluster: &Cluster) -> anyhow::Result<()> {
    let token = cluster.token(Role::Admin, "chaos-admin", Duration::from_secs(600))?;
    let request = CreateGalleryRequest {
        name: GALLERY.into(),
        dimension: DIMENSION,
        shard_count: SHARDS,
        threshold: Some(0.5),
        allowed_purposes: vec![PURPOSE.into()],
        retention: Some(prost_types::Duration { seconds: 86_400, nanos: 0 }),
        idempotency_key: "chaos-gallery".into(),
        ..Default::default()
    };
    let channel = biomatch_client::channel(&cluster.url(Target::Ingest))?;
    IngestServiceClient::new(channel).create_gallery(biomatch_client::request(request, &token)).await?;
    Ok(())
}
