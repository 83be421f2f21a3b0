//! `biomatch bench search`: per index kind, build time, memory per template, recall against exact
//! search, and latency / throughput both in process (the FAISS shard index alone) and through the
//! real gRPC path (search -> matcher -> audit), so the report shows the service overhead; the
//! matcher's shard search through gRPC on its own (one shard's node); then the time a restarting
//! matcher takes to load each shard from its snapshot.

use crate::cli::bench_cluster::{GALLERY, ScratchGallery};
use crate::synthetic::{self, FaceShape, Synthetic};
use anyhow::Context;
use biomatch_domain::{IndexKind, IndexSpec};
use biomatch_index::ShardIndex;
use biomatch_proto::v1::audit_service_client::AuditServiceClient;
use biomatch_proto::v1::matcher_service_client::MatcherServiceClient;
use biomatch_proto::v1::search_service_client::SearchServiceClient;
use biomatch_proto::v1::{
    Actor, AppendRequest, AuditEvent, Operation, QueryVector, ShardRef, ShardSearchRequest,
};
use clap::{Args, ValueEnum};
use std::time::{Duration, Instant};

#[derive(Debug, Args)]
pub struct SearchBenchArgs {
    /// Gallery sizes (templates, one per identity).
    #[arg(long, value_delimiter = ',', default_value = "100000")]
    sizes: Vec<usize>,
    /// Template dimensions.
    #[arg(long, value_delimiter = ',', default_value = "128,512")]
    dims: Vec<usize>,
    /// Index kinds: flat, hnsw, ivf_flat, ivf_sq8, ivf_pq, pq_rerank.
    #[arg(long, value_delimiter = ',', default_value = "flat,hnsw,ivf_sq8")]
    kinds: Vec<IndexKind>,
    /// Mated probes per measurement.
    #[arg(long, default_value_t = 400)]
    queries: usize,
    /// Concurrent gRPC clients for the throughput columns.
    #[arg(long, value_delimiter = ',', default_value = "1,8,64")]
    clients: Vec<usize>,
    /// IVF probes until the shard is tuned (0: the default, nlist/16). The matcher tunes a
    /// re-rank kind's shard itself once trained, and the in-process index then searches with the
    /// matcher's settings.
    #[arg(long, default_value_t = 0)]
    nprobe: u32,
    /// How long the matcher gathers concurrent searches into a batch (`matcher.batch_wait_us`).
    #[arg(long, default_value_t = 1_000)]
    batch_wait_us: u64,
    /// FAISS threads per batch, in process and in the matcher (`matcher.search_threads`; 0: one
    /// per core).
    #[arg(long, default_value_t = 0)]
    search_threads: usize,
    /// Skip the gRPC measurements (in process only).
    #[arg(long)]
    no_service: bool,
    /// Synthetic data. face-like (the default): low-rank identities whose scores match real face
    /// templates (the targets below), the data to choose an index on; uniform: random unit
    /// centres (impostors 0 ± 1/√d), where IVF partitions cannot find mates cheaply.
    #[arg(long, value_enum, default_value_t = DataShape::FaceLike)]
    data: DataShape,
    /// Face-like target: mean impostor cosine.
    #[arg(long, default_value_t = FaceShape::default().impostor_mean)]
    impostor_mean: f32,
    /// Face-like target: impostor cosine standard deviation.
    #[arg(long, default_value_t = FaceShape::default().impostor_sd)]
    impostor_sd: f32,
    /// Face-like target: mean genuine (mated) cosine.
    #[arg(long, default_value_t = FaceShape::default().genuine_mean)]
    genuine_mean: f32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum DataShape {
    Uniform,
    FaceLike,
}

impl SearchBenchArgs {
    fn shape(&self) -> synthetic::Data {
        match self.data {
            DataShape::Uniform => synthetic::Data::Uniform,
            DataShape::FaceLike => synthetic::Data::FaceLike(FaceShape {
                impostor_mean: self.impostor_mean,
                impostor_sd: self.impostor_sd,
                genuine_mean: self.genuine_mean,
            }),
        }
    }
}

/// The value at quantile `p` of sorted durations, in milliseconds.
pub(crate) fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).map_or(0.0, |d| d.as_secs_f64() * 1e3)
}

fn spec(kind: IndexKind, nprobe: u32) -> IndexSpec {
    let mut spec = IndexSpec::of(kind);
    spec.ivf_nprobe = nprobe;
    spec
}

pub(crate) struct Data {
    pub enrolled: Vec<Vec<f32>>,
    pub probes: Vec<Vec<f32>>,
}

/// `size` identities of `shape` with one template each, and a mated probe of each of the first
/// `queries`. Galleries of one `dim` and shape share their prefix: the first n identities of a
/// larger gallery are those of a gallery of n (with `queries.min(n)` probes).
pub(crate) fn data(size: usize, dim: usize, queries: usize, shape: &synthetic::Data) -> anyhow::Result<Data> {
    let mut synthetic = Synthetic::with_data(dim, 17, shape)?;
    let mut enrolled = Vec::with_capacity(size);
    let mut probes = Vec::with_capacity(queries);
    for i in 0..size {
        let centre = synthetic.identity();
        enrolled.push(synthetic.sample(&centre));
        if i < queries {
            probes.push(synthetic.sample(&centre));
        }
    }
    Ok(Data { enrolled, probes })
}

/// Identities whose scores the report header measures, per dimension.
const MEASURED_PREFIX: usize = 2_000;

/// The header's account of the data: its shape, and per dimension the population's parameters
/// and the scores measured on the prefix every gallery of that dimension shares.
fn describe_data(args: &SearchBenchArgs) -> anyhow::Result<()> {
    let shape = args.shape();
    println!("data: {shape}, one template per identity, plus a mated probe of each of the first --queries");
    let smallest = args.sizes.iter().copied().min().unwrap_or(0);
    let prefix = MEASURED_PREFIX.min(smallest);
    for &dim in &args.dims {
        let sample = data(prefix, dim, args.queries.min(prefix), &shape)?;
        let scores = synthetic::measure(&sample.enrolled, &sample.probes, 20_000);
        let population = Synthetic::with_data(dim, 17, &shape)?.population;
        println!("  d={dim}: {population}; measured on the first {prefix} identities: {scores}");
    }
    Ok(())
}

fn build(data: &Data, spec: &IndexSpec) -> anyhow::Result<ShardIndex> {
    let dim = data.enrolled[0].len();
    let mut index = ShardIndex::new(dim, spec)?;
    for (i, v) in data.enrolled.iter().enumerate() {
        index.replace_subject(&format!("s{i}"), &[(i as i64, v)])?;
    }
    Ok(index)
}

/// Top-10 subject lists for every probe, searched as one batch on `threads`.
fn top10(index: &mut ShardIndex, probes: &[Vec<f32>], threads: usize) -> anyhow::Result<Vec<Vec<String>>> {
    let flat: Vec<f32> = probes.iter().flatten().copied().collect();
    Ok(index
        .search_threaded(&flat, 10, threads)?
        .into_iter()
        .map(|l| l.into_iter().map(|s| s.subject.to_string()).collect())
        .collect())
}

fn recall(found: &[Vec<String>], truth: &[Vec<String>]) -> (f64, f64) {
    let n = truth.len().max(1) as f64;
    let at1 = found.iter().zip(truth).filter(|(f, t)| f.first() == t.first()).count() as f64 / n;
    let at10 = found
        .iter()
        .zip(truth)
        .map(|(f, t)| f.iter().filter(|s| t.contains(s)).count() as f64 / t.len().max(1) as f64)
        .sum::<f64>()
        / n;
    (at1, at10)
}

/// Header cells of the throughput columns, one per client count.
fn qps_columns(clients: &[usize]) -> String {
    clients.iter().map(|c| format!("QPS@{c}")).collect::<Vec<_>>().join(" | ")
}

pub async fn run(args: SearchBenchArgs) -> anyhow::Result<()> {
    println!("search benchmark on synthetic templates");
    describe_data(&args)?;
    println!("in process = the FAISS shard index alone; gRPC = identify through search, matcher and audit");
    let threads = biomatch_config::threads_or_cores(args.search_threads);
    println!("FAISS threads per batch, in process and in the matcher: {threads}\n");
    println!(
        "| d | N | kind | nprobe / re-rank depth | build s | bytes/template | recall@1 | recall@10 | in-proc p50 ms | p99 ms | \
         in-proc batch QPS | gRPC p50 ms | p99 ms | {} | gRPC/in-proc p50 | in-proc batch/gRPC QPS@{} |",
        qps_columns(&args.clients),
        args.clients.last().copied().unwrap_or(0)
    );
    println!("|{}", "---|".repeat(15 + args.clients.len()));
    let mut restarts = Vec::new();
    let mut shards = Vec::new();
    let mut lone_paths = Vec::new();
    for &size in &args.sizes {
        for &dim in &args.dims {
            let data = data(size, dim, args.queries.min(size), &args.shape())?;
            let mut exact = build(&data, &IndexSpec::flat())?;
            let truth = top10(&mut exact, &data.probes, threads)?;
            drop(exact);
            for &kind in &args.kinds {
                let spec = spec(kind, args.nprobe);
                let started = Instant::now();
                let mut index = build(&data, &spec)?;
                let build_s = started.elapsed().as_secs_f64();
                // The serialised shard (FAISS structure + id maps) is what the index holds; the
                // process's RSS is no measure once earlier indexes were freed.
                let per_template = index.to_snapshot()?.len() as f64 / size as f64;
                // In process, the index searches with the settings the matcher's shard settled
                // on, so both sides of the comparison do the same work; without the service, it
                // tunes itself as the matcher would.
                let served = if args.no_service { None } else { Some(service(&data, &spec, &args).await?) };
                let settings = match &served {
                    Some(served) => {
                        index.set_search_settings(served.settings.search)?;
                        served.settings.source.clone()
                    }
                    None if index.needs_tuning() => {
                        index.tune(&biomatch_matcher::automatic_request(
                            biomatch_matcher::AUTOMATIC_TARGET_RECALL,
                        ))?;
                        "automatic".to_owned()
                    }
                    None => "default".to_owned(),
                };
                let in_effect = index.search_settings();
                let settings = format!("{} / {} ({settings})", in_effect.nprobe, in_effect.rerank_depth);
                let (r1, r10) = recall(&top10(&mut index, &data.probes, threads)?, &truth);
                let mut single: Vec<Duration> = Vec::with_capacity(data.probes.len());
                for p in &data.probes {
                    let t = Instant::now();
                    index.search_threaded(p, 10, threads)?;
                    single.push(t.elapsed());
                }
                single.sort_unstable();
                let t = Instant::now();
                top10(&mut index, &data.probes, threads)?;
                let batch_qps = data.probes.len() as f64 / t.elapsed().as_secs_f64();
                let restart = crate::cli::bench_restart::measure(&mut index, &spec, &data.probes[0])?;
                restarts.push(format!(
                    "| {dim} | {size} | {kind} | {:.0} | {:.2} | {:.2} | {:.2} |",
                    restart.snapshot_mib, restart.write_s, restart.read_s, restart.load_s
                ));
                drop(index);
                let raw_p50 = percentile(&single, 0.5);
                let mut row = format!(
                    "| {dim} | {size} | {kind} | {settings} | {build_s:.1} | {per_template:.0} | {r1:.3} | \
                     {r10:.3} | {raw_p50:.2} | {:.2} | {batch_qps:.0} |",
                    percentile(&single, 0.99)
                );
                match served {
                    None => row.push_str(&" – |".repeat(4 + args.clients.len())),
                    Some(Served { identified, shard_searched, appended, .. }) => {
                        lone_paths.push(format!(
                            "| {dim} | {size} | {kind} | {raw_p50:.2} | {:.2} |{}{} {:.2} | {:.2} |",
                            percentile(&single, 0.99),
                            latency_cells(&shard_searched),
                            latency_cells(&appended),
                            identified.p50,
                            identified.p99
                        ));
                        row.push_str(&format!(
                            "{} {:.1} | {:.2} |",
                            identified.cells(),
                            identified.p50 / raw_p50.max(1e-6),
                            identified.overhead(batch_qps)
                        ));
                        shards.push(format!(
                            "| {dim} | {size} | {kind} |{} {:.2} |",
                            shard_searched.cells(),
                            shard_searched.overhead(batch_qps)
                        ));
                    }
                }
                println!("{row}");
            }
        }
    }
    if !shards.is_empty() {
        println!(
            "\nthe shard alone through gRPC: MatcherService/Search as the search role calls it \
             (no client hop to search, gallery lookup or audit append)\n"
        );
        println!(
            "| d | N | kind | shard p50 ms | p99 ms | {} | in-proc batch/shard QPS@{} |",
            qps_columns(&args.clients),
            args.clients.last().copied().unwrap_or(0)
        );
        println!("|{}", "---|".repeat(6 + args.clients.len()));
        for row in shards {
            println!("{row}");
        }
        println!(
            "\na lone caller, hop by hop: the index in process, the shard through gRPC, one audit append \
             (the leaf an identify commits before it answers), and the whole identify\n"
        );
        println!(
            "| d | N | kind | in-proc p50 ms | p99 ms | shard p50 ms | p99 ms | audit append p50 ms | p99 ms | \
             identify p50 ms | p99 ms |\n|{}",
            "---|".repeat(11)
        );
        for row in lone_paths {
            println!("{row}");
        }
    }
    println!(
        "\nrestart from an encrypted snapshot (matcher's SnapshotStore; the change log since is replayed after)\n"
    );
    println!(
        "| d | N | kind | snapshot MiB | write s | file read s | load s |\n|---|---|---|---|---|---|---|"
    );
    for row in restarts {
        println!("{row}");
    }
    Ok(())
}

/// Markdown cells: a lone caller's p50 and p99.
fn latency_cells(load: &Load) -> String {
    format!(" {:.2} | {:.2} |", load.p50, load.p99)
}

/// One kind of call through gRPC: a lone client's latency, and throughput per client count.
struct Load {
    p50: f64,
    p99: f64,
    qps: Vec<f64>,
}

impl Load {
    /// Markdown cells: p50 and p99, then QPS per client count.
    fn cells(&self) -> String {
        let mut cells = latency_cells(self);
        for q in &self.qps {
            cells.push_str(&format!(" {q:.0} |"));
        }
        cells
    }

    /// The service overhead under load: the index's own batched throughput over this call's
    /// throughput from the most concurrent clients.
    fn overhead(&self, batch_qps: f64) -> f64 {
        batch_qps / self.qps.last().copied().unwrap_or(0.0).max(1e-6)
    }
}

/// Measures `call(i)` (the i-th probe's request): `lone` calls one after another, then
/// `2 * lone` calls spread over each count of concurrent clients.
async fn load<F, Fut>(what: &str, lone: usize, clients: &[usize], call: F) -> anyhow::Result<Load>
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<(), tonic::Status>> + Send,
{
    let mut single = Vec::with_capacity(lone);
    for i in 0..lone {
        let t = Instant::now();
        call(i).await?;
        single.push(t.elapsed());
    }
    single.sort_unstable();
    let mut qps = Vec::new();
    for &n in clients {
        eprintln!("bench search: gRPC {what} from {n} concurrent clients");
        let per_client = (lone * 2).div_ceil(n.max(1)).max(4);
        let started = Instant::now();
        let tasks: Vec<_> = (0..n)
            .map(|c| {
                let call = call.clone();
                tokio::spawn(async move {
                    for j in 0..per_client {
                        call(c * per_client + j).await?;
                    }
                    Ok::<(), tonic::Status>(())
                })
            })
            .collect();
        for t in tasks {
            t.await?.map_err(|s| anyhow::anyhow!("{what} failed: {}", s.message()))?;
        }
        qps.push((n * per_client) as f64 / started.elapsed().as_secs_f64());
    }
    Ok(Load { p50: percentile(&single, 0.5), p99: percentile(&single, 0.99), qps })
}

/// What the gRPC measurements found, and the settings the matcher searched with.
struct Served {
    identified: Load,
    shard_searched: Load,
    /// A lone caller's audit appends, as the search role makes them (no throughput measured).
    appended: Load,
    settings: crate::cli::bench_cluster::ShardSettings,
}

/// Through gRPC, once the matcher's own tuning of the shard has settled: identify (search ->
/// matcher -> audit), then the matcher's shard search alone, then a lone caller's audit appends.
async fn service(data: &Data, spec: &IndexSpec, args: &SearchBenchArgs) -> anyhow::Result<Served> {
    let tune = |config: &mut biomatch_config::ServeConfig| {
        config.matcher.search_threads = args.search_threads;
        config.matcher.batch_wait_us = args.batch_wait_us;
        // Throughput, not shedding, is measured here (`bench overload` measures shedding): the
        // front door admits every client at once.
        config.admission.max_in_flight = 1024;
        config.admission.max_waiting = 1024;
        config.admission.max_wait_ms = 60_000;
        // The first search waits for the matcher to index every enrolment (minutes for HNSW at
        // 1e5); measured searches never come near this.
        config.search.shard_timeout_ms = 3_600_000;
    };
    let scratch = std::sync::Arc::new(ScratchGallery::start(tune, spec, &data.enrolled).await?);
    eprintln!(
        "bench search: {} templates enrolled through gRPC and indexed in {:.0} s",
        data.enrolled.len(),
        scratch.enrol_s
    );
    let settings = scratch.settled_settings().await?;
    let search = SearchServiceClient::new(scratch.channel.clone());
    let probes = std::sync::Arc::new(data.probes.clone());
    let lone = probes.len();
    let identified = {
        let (probes, scratch) = (probes.clone(), scratch.clone());
        load("identify", lone, &args.clients, move |i| {
            let (mut search, request) =
                (search.clone(), scratch.identify(probes[i % probes.len()].clone(), 0));
            async move { search.identify(request).await.map(drop) }
        })
        .await?
    };
    // What one shard's node answers: the search role's own calls to the matcher, without the
    // client's hop to search, the gallery lookup and the audit append.
    let matcher = MatcherServiceClient::new(scratch.channel.clone());
    let service_token = scratch.service.clone();
    let shard_searched = load("shard search", lone, &args.clients, move |i| {
        let message = ShardSearchRequest {
            shard: Some(ShardRef { gallery: GALLERY.into(), shard: 0 }),
            queries: vec![QueryVector { values: probes[i % probes.len()].clone() }],
            k: 10,
            min_change_seq: 0,
        };
        let (mut matcher, request) = (matcher.clone(), biomatch_client::request(message, &service_token));
        async move { matcher.search(request).await.map(drop) }
    })
    .await?;
    // The last hop of an identify: its audit leaf, committed before the answer leaves.
    let audit = AuditServiceClient::new(scratch.channel.clone());
    let service_token = scratch.service.clone();
    let appended = load("audit append", lone, &[], move |i| {
        let event = AuditEvent {
            actor: Some(Actor {
                subject: "bench-analyst".into(),
                role: "analyst".into(),
                ..Default::default()
            }),
            operation: Operation::Identify.into(),
            gallery: GALLERY.into(),
            outcome: "OK".into(),
            ..Default::default()
        };
        let append = AppendRequest { event: Some(event), idempotency_key: format!("bench-append-{i}") };
        let (mut audit, request) = (audit.clone(), biomatch_client::request(append, &service_token));
        async move { audit.append(request).await.map(drop) }
    })
    .await?;
    let scratch = std::sync::Arc::into_inner(scratch).context("no call holds the cluster any more")?;
    scratch.running.shutdown().await;
    Ok(Served { identified, shard_searched, appended, settings })
}
