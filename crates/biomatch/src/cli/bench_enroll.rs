//! `biomatch bench enroll`: bulk enrolment through `BatchEnroll` into an in-process cluster
//! (audit, embed, ingest on one loopback port) on SQLite or PostgreSQL. Vectors come from a pool
//! of synthetic identities drawn before the clock starts, so the generator's cost is not
//! measured; each item is its own subject with its own idempotency key, as a bulk load sends
//! them. A second row writes the same number of rows straight through the store (no gRPC, no
//! validation, no sealing, no audit), which says how much of the total the SQL takes.

use anyhow::Context;
use biomatch_config::ProcessRole;
use biomatch_domain::{Gallery, GalleryName, IndexSpec, Role, SubjectId};
use biomatch_proto::v1::ingest_service_client::IngestServiceClient;
use biomatch_proto::v1::{CreateGalleryRequest, EnrollMode, EnrollRequest};
use biomatch_store::{EnrollWrite, GalleryStore, Idempotency, SqlStore};
use clap::{Args, ValueEnum};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchBackend {
    Sqlite,
    Postgres,
}

#[derive(Debug, Args)]
pub struct EnrollBenchArgs {
    /// Templates to enrol (one subject each).
    #[arg(long, default_value_t = 100_000)]
    count: usize,
    #[arg(long, default_value_t = 512)]
    dim: usize,
    #[arg(long, value_enum, default_value_t = BenchBackend::Sqlite)]
    backend: BenchBackend,
    /// PostgreSQL URL for `--backend postgres`: an empty scratch database (the benchmark leaves
    /// its galleries there).
    #[arg(long, env = "BIOMATCH_BENCH_DATABASE_URL")]
    database_url: Option<String>,
    /// Items per store transaction in the direct-store row (the ingest role picks its own).
    #[arg(long, default_value_t = 256)]
    batch: usize,
    /// Skip the direct-store row.
    #[arg(long)]
    grpc_only: bool,
}

/// The peak resident set of this process (cluster included), in MiB.
fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

/// The database for the measurements: both rows share it, each with its own gallery and keys.
fn database(args: &EnrollBenchArgs, dir: &std::path::Path) -> anyhow::Result<String> {
    match args.backend {
        BenchBackend::Sqlite => Ok(format!("sqlite://{}", dir.join("bench.db").display())),
        BenchBackend::Postgres => {
            args.database_url.clone().context("--backend postgres needs --database-url")
        }
    }
}

fn pool(dim: usize) -> Vec<Vec<f32>> {
    let mut synthetic = crate::synthetic::Synthetic::new(dim, 7);
    (0..4096).map(|_| synthetic.identity()).collect()
}

fn row(path: &str, count: usize, elapsed: Duration) {
    let s = elapsed.as_secs_f64();
    println!("| {path} | {count} | {:.0} | {s:.1} | {:.0} |", count as f64 / s, peak_rss_mib());
}

pub async fn run(args: EnrollBenchArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let backend = match args.backend {
        BenchBackend::Sqlite => "SQLite (WAL, synchronous=FULL)",
        BenchBackend::Postgres => "PostgreSQL (synchronous_commit=on)",
    };
    println!("bulk enrolment, {backend}, {} templates of {} dimensions\n", args.count, args.dim);
    println!("| path | templates | templates/s | seconds | peak RSS MiB |");
    println!("|---|---|---|---|---|");
    let vectors = pool(args.dim);
    let elapsed = through_grpc(&args, dir.path(), &vectors).await?;
    row("BatchEnroll (gRPC, sealed, audited)", args.count, elapsed);
    if !args.grpc_only {
        let elapsed = direct(&args, dir.path(), &vectors).await?;
        row(&format!("GalleryStore::enroll, {} per call", args.batch), args.count, elapsed);
    }
    Ok(())
}

async fn through_grpc(
    args: &EnrollBenchArgs,
    dir: &std::path::Path,
    vectors: &[Vec<f32>],
) -> anyhow::Result<Duration> {
    let roles = vec![ProcessRole::Audit, ProcessRole::Embed, ProcessRole::Ingest];
    let (mut config, signer) = crate::cli::bench::scratch_config(dir, roles)?;
    config.database_url = Some(database(args, dir)?.into());
    let running = crate::serve::start(config).await?;
    let channel = biomatch_client::channel(&format!("http://{}", running.grpc_addr))?;
    let token = |role, name: &str| {
        signer.issue(&biomatch_auth::TokenSpec::new(name, role, Duration::from_secs(3600))).context("token")
    };
    let (admin, enroller) = (token(Role::Admin, "bench-admin")?, token(Role::Enroller, "bench-enroller")?);
    let mut ingest = IngestServiceClient::new(channel);
    let create = CreateGalleryRequest {
        name: "bench".into(),
        dimension: u32::try_from(args.dim)?,
        shard_count: 1,
        index: Some(biomatch_proto::index_spec_to_proto(&IndexSpec::flat())),
        threshold: Some(0.3),
        allowed_purposes: vec!["bench".into()],
        retention: Some(prost_types::Duration { seconds: 86_400, nanos: 0 }),
        ..Default::default()
    };
    ingest.create_gallery(biomatch_client::request(create, &admin)).await?;
    // Built as the stream is sent: a million 512-d requests held at once would be gigabytes.
    let vectors = std::sync::Arc::new(vectors.to_vec());
    let requests = (0..args.count).map(move |i| EnrollRequest {
        gallery: "bench".into(),
        subject_id: format!("s{i}"),
        samples: vec![biomatch_proto::embedding_probe(vectors[i % vectors.len()].clone())],
        mode: EnrollMode::Add.into(),
        idempotency_key: format!("bench-{i}"),
    });
    let started = Instant::now();
    let response = ingest
        .batch_enroll(biomatch_client::request(tokio_stream::iter(requests), &enroller))
        .await?
        .into_inner();
    let elapsed = started.elapsed();
    anyhow::ensure!(
        response.accepted as usize == args.count,
        "{} of {} accepted: {:?}",
        response.accepted,
        args.count,
        response.failures.first()
    );
    running.shutdown().await;
    Ok(elapsed)
}

async fn direct(
    args: &EnrollBenchArgs,
    dir: &std::path::Path,
    vectors: &[Vec<f32>],
) -> anyhow::Result<Duration> {
    // The cluster's store is closed by now; this one is the only writer.
    let store = SqlStore::connect(&database(args, dir)?).await?;
    let spec = Gallery {
        name: GalleryName::parse("bench-direct").map_err(|e| anyhow::anyhow!("{e}"))?,
        dimension: u32::try_from(args.dim)?,
        shard_count: 1,
        index: IndexSpec::flat(),
        model_id: "external".into(),
        model_version: "1".into(),
        threshold: 0.3,
        threshold_version: 1,
        allowed_purposes: vec!["bench".into()],
        retention_seconds: 86_400,
        default_k: 10,
        created_at_ms: 0,
    };
    let gallery = store.create_gallery(&spec, None, "k", None, 0).await?.value;
    // A sealed template is the little-endian vector plus nonce and tag.
    let bytes: Vec<Vec<u8>> =
        vectors.iter().map(|v| v.iter().flat_map(|x| x.to_le_bytes()).chain([0u8; 28]).collect()).collect();
    let started = Instant::now();
    for start in (0..args.count).step_by(args.batch.max(1)) {
        let writes: Vec<EnrollWrite> = (start..(start + args.batch).min(args.count))
            .map(|i| {
                Ok(EnrollWrite {
                    subject: SubjectId::parse(&format!("s{i}")).map_err(|e| anyhow::anyhow!("{e}"))?,
                    shard: 0,
                    model_id: "external".into(),
                    sealed_templates: vec![bytes[i % bytes.len()].clone()],
                    replace: false,
                    idempotency: Some(Idempotency { key: format!("direct:{i}"), request_hash: "h".into() }),
                })
            })
            .collect::<anyhow::Result<_>>()?;
        for result in store.enroll(&gallery, &writes, 1).await? {
            result?;
        }
    }
    let elapsed = started.elapsed();
    store.close().await;
    Ok(elapsed)
}
