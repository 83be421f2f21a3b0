//! `biomatch bench ...`: measurements printed as tables. Speed goals are checked here, never by
//! timed unit tests.

use anyhow::Context;
use biomatch_auditlog::compact::CompactTree;
use biomatch_auditlog::merkle::{
    self, Hash, Subtrees, Tree, leaf_hash, verify_consistency, verify_inclusion,
};
use biomatch_config::{ProcessRole, ServeConfig};
use biomatch_proto::v1::audit_service_client::AuditServiceClient;
use biomatch_proto::v1::{
    Actor, AppendRequest, AuditEvent, GetCheckpointRequest, InclusionProofRequest, Operation,
};
use biomatch_store::{AuditStore, NewAuditLeaf, SqlStore};
use clap::{Args, Subcommand};
use std::time::{Duration, Instant};

#[path = "bench_enroll.rs"]
mod bench_enroll;

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Durable audit appends per second (group commit through gRPC vs one commit per append)
    /// and Merkle proof generation at a large tree size.
    Audit(AuditBenchArgs),
    /// Search per index kind: build, memory, recall vs exact, latency and QPS in process and
    /// through gRPC.
    Search(crate::cli::bench_search::SearchBenchArgs),
    /// The face pipeline on 1 MP photos: per-stage and end-to-end latency, photos per second.
    Embed(crate::cli::bench_embed::EmbedBenchArgs),
    /// Identify offered at ten times the sustainable rate, without and with admission bounds:
    /// answered within deadline, refused, latency of the answered, peak memory.
    Overload(crate::cli::bench_overload::OverloadBenchArgs),
    /// Bulk enrolment through `BatchEnroll`: templates per second, total seconds, peak memory.
    Enroll(bench_enroll::EnrollBenchArgs),
}

#[derive(Debug, Args)]
pub struct AuditBenchArgs {
    /// PostgreSQL URL (a scratch database: the benchmark appends to its audit log);
    /// default: a SQLite file in a temporary directory.
    #[arg(long, env = "BIOMATCH_BENCH_DATABASE_URL")]
    database_url: Option<String>,
    /// Appends per measurement.
    #[arg(long, default_value_t = 4000)]
    appends: usize,
    /// Concurrent clients for the gRPC measurement (comma-separated list).
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    clients: Vec<usize>,
    /// Tree size for the proof measurement.
    #[arg(long, default_value_t = 1_000_000)]
    proof_leaves: u64,
}

fn event(i: usize) -> AuditEvent {
    AuditEvent {
        actor: Some(Actor {
            subject: format!("kiosk-{}", i % 50),
            role: "kiosk".into(),
            device_id: "lane-1".into(),
        }),
        operation: Operation::Identify.into(),
        gallery: "travelers".into(),
        purpose: "border".into(),
        request_id: format!("bench-{i}"),
        outcome: "OK".into(),
        ..Default::default()
    }
}

/// A benchmark's own cluster: `roles` on a loopback port with state in `dir`, trusting a fresh
/// token key (its signer is returned for the benchmark's tokens) and a fresh master key.
pub(crate) fn scratch_config(
    dir: &std::path::Path,
    roles: Vec<ProcessRole>,
) -> anyhow::Result<(ServeConfig, biomatch_auth::TokenSigner)> {
    let (private, public) = biomatch_auth::keys::generate(&dir.join("jwt"), "bench")?;
    let service_kid = biomatch_auth::issuers::service_kid(biomatch_auth::issuers::ALL_ROLES);
    let (service_private, service_public) = biomatch_auth::keys::generate(&dir.join("jwt"), &service_kid)?;
    let master = dir.join("master.key");
    biomatch_crypto::MasterKey::load_or_create(&master)?;
    let mut config = ServeConfig {
        roles,
        data_dir: dir.to_path_buf(),
        grpc_addr: "127.0.0.1:0".parse()?,
        ..ServeConfig::default()
    };
    config.auth.public_keys = vec![public, service_public];
    config.auth.service_key_file = Some(service_private);
    config.crypto.master_key_file = Some(master);
    let signer = biomatch_auth::TokenSigner::from_file(&private, "biomatch", "biomatch")?;
    Ok((config, signer))
}

fn row(name: &str, n: usize, elapsed: Duration) {
    println!("| {name} | {n} | {:.2} | {:.0} |", elapsed.as_secs_f64(), n as f64 / elapsed.as_secs_f64());
}

pub async fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Audit(args) => audit(args).await,
        BenchCommand::Search(args) => crate::cli::bench_search::run(args).await,
        BenchCommand::Overload(args) => crate::cli::bench_overload::run(args).await,
        BenchCommand::Enroll(args) => bench_enroll::run(args).await,
        BenchCommand::Embed(args) => {
            tokio::task::spawn_blocking(|| crate::cli::bench_embed::run(args)).await?
        }
    }
}

async fn audit(args: AuditBenchArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let url = args
        .database_url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("audit.db").display()));
    let backend = if url.starts_with("sqlite") {
        "SQLite (WAL, synchronous=FULL)"
    } else {
        "PostgreSQL (synchronous_commit=on)"
    };
    println!("audit appends, {backend}, {} appends each\n", args.appends);
    println!("| path | appends | seconds | appends/s |");
    println!("|---|---|---|---|");

    // Baseline: one transaction (one durable commit) per append, straight to the store.
    let store = SqlStore::connect(&url).await.context("cannot open the benchmark database")?;
    let started = Instant::now();
    for i in 0..args.appends {
        let record =
            biomatch_audit::event_to_record(event(i), 0).map_err(|s| anyhow::anyhow!("{}", s.message()))?;
        let new = NewAuditLeaf {
            appended_at_ms: 0,
            subject_ids: Vec::new(),
            ..biomatch_audit::new_leaf(&record, Some(format!("baseline-{i}")))
        };
        store.append_leaves(vec![new], biomatch_auditlog::chain_hash).await?;
    }
    row("store, 1 commit per append (baseline)", args.appends, started.elapsed());
    store.close().await;

    // The service: gRPC appends from concurrent clients, group-committed.
    let (mut config, _) = scratch_config(dir.path(), vec![ProcessRole::Audit])?;
    config.database_url = Some(url.clone().into());
    let service_key = config.auth.service_key_file.clone().context("scratch config has a service key")?;
    let running = crate::serve::start(config).await?;
    let channel = biomatch_client::channel(&format!("http://{}", running.grpc_addr))?;
    // The search role's identity: it may append identify leaves.
    let signer = biomatch_auth::TokenSigner::from_file(&service_key, "biomatch", "biomatch")?;
    let me = biomatch_auth::ServiceCredentials::new(signer, "search").token();
    for (round, clients) in args.clients.iter().copied().enumerate() {
        let per_client = args.appends.div_ceil(clients.max(1));
        let started = Instant::now();
        let tasks: Vec<_> = (0..clients)
            .map(|c| {
                let client = AuditServiceClient::new(channel.clone());
                let me = me.clone();
                tokio::spawn(async move {
                    for j in 0..per_client {
                        let i = (round * 1_000_000) + c * per_client + j;
                        let request =
                            AppendRequest { event: Some(event(i)), idempotency_key: format!("svc-{i}") };
                        client.clone().append(biomatch_client::request(request, &me)).await?;
                    }
                    Ok::<(), tonic::Status>(())
                })
            })
            .collect();
        for t in tasks {
            t.await?.map_err(|s| anyhow::anyhow!("append failed: {}", s.message()))?;
        }
        row(
            &format!("gRPC Append, {clients} clients, group commit"),
            per_client * clients,
            started.elapsed(),
        );
    }
    // Proofs through the service, at random leaves: most read their chunk from the store.
    let size = AuditServiceClient::new(channel.clone())
        .get_checkpoint(biomatch_client::request(GetCheckpointRequest { sign_now: true }, &me))
        .await?
        .into_inner()
        .tree_size;
    let samples = 1_000u64;
    let mut latencies = Vec::with_capacity(samples as usize);
    for s in 0..samples {
        let request = InclusionProofRequest { leaf_index: (s * 7919) % size, tree_size: size };
        let started = Instant::now();
        AuditServiceClient::new(channel.clone())
            .get_inclusion_proof(biomatch_client::request(request, &me))
            .await?;
        latencies.push(started.elapsed());
    }
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e3;
    println!(
        "\ngRPC GetInclusionProof at random leaves of {size}: p50 {:.2} ms, p99 {:.2} ms",
        at(0.5),
        at(0.99)
    );
    running.shutdown().await;

    proofs_in_memory(args.proof_leaves)
}

/// Proofs at a large tree size: the whole tree in memory (the baseline) against the compact tree
/// the audit role holds, its chunks read here from memory (the service reads them from its store).
fn proofs_in_memory(n: u64) -> anyhow::Result<()> {
    let hashes: Vec<_> = (0..n).map(|i| leaf_hash(&i.to_le_bytes())).collect();
    println!("\nMerkle tree of {n} leaves\n");
    println!(
        "| tree | held in memory | build | inclusion proof + verify | root at old size + consistency proof + verify |"
    );
    println!("|---|---|---|---|---|");
    let started = Instant::now();
    let whole = Tree::from_leaf_hashes(hashes.iter().copied());
    let build = started.elapsed();
    let (inclusion, consistency) = time_proofs(&whole, n, &hashes)?;
    proof_row("whole (baseline)", 2 * n, build, inclusion, consistency);
    let started = Instant::now();
    let mut compact = CompactTree::default();
    hashes.iter().for_each(|h| compact.push(*h));
    let build = started.elapsed();
    let load = |chunk: u64| {
        let (first, len) = compact.chunk_span(chunk);
        let chunk_hashes = hashes[first as usize..(first + len) as usize].to_vec();
        compact.check_chunk(chunk, chunk_hashes).ok().map(std::sync::Arc::new)
    };
    let (inclusion, consistency) = time_proofs(&compact.view(&load), n, &hashes)?;
    proof_row("compact, each proof loads its chunks", compact.held_hashes(), build, inclusion, consistency);
    Ok(())
}

fn time_proofs(tree: &impl Subtrees, n: u64, hashes: &[Hash]) -> anyhow::Result<(Duration, Duration)> {
    let root = merkle::root_at(tree, n)?;
    let samples = 10_000u64;
    let started = Instant::now();
    for s in 0..samples {
        let index = (s * 7919) % n;
        let proof = merkle::inclusion_proof(tree, index, n)?;
        verify_inclusion(index, n, &hashes[index as usize], &proof, &root)?;
    }
    let inclusion = started.elapsed() / samples as u32;
    let started = Instant::now();
    for s in 0..samples {
        let first = 1 + (s * 104_729) % (n - 1);
        let proof = merkle::consistency_proof(tree, first, n)?;
        verify_consistency(first, n, &merkle::root_at(tree, first)?, &root, &proof)?;
    }
    Ok((inclusion, started.elapsed() / samples as u32))
}

fn proof_row(name: &str, held: u64, build: Duration, inclusion: Duration, consistency: Duration) {
    println!(
        "| {name} | {:.2} MiB | {:.2} s | {:.1} µs | {:.1} µs |",
        (held * 32) as f64 / (1u64 << 20) as f64,
        build.as_secs_f64(),
        inclusion.as_secs_f64() * 1e6,
        consistency.as_secs_f64() * 1e6
    );
}
