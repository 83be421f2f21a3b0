//! Starting the roles of one process: what they share (listeners, stores, keys, clients, the
//! authentication layer) here, each role in [`roles`].

mod roles;

use anyhow::Context;
use biomatch_audit::AuditServer;
use biomatch_auth::{AuthLayer, ReplayStore};
use biomatch_client::{LocalServer, Transport};
use biomatch_config::{ProcessRole, ServeConfig};
use biomatch_domain::{Clock, system_clock};
use biomatch_embed::EmbedServer;
use biomatch_gateway::{Gateway, Ops, Services, ops_router};
use biomatch_ingest::IngestServer;
use biomatch_matcher::MatcherServer;
use biomatch_proto::v1::audit_service_client::AuditServiceClient;
use biomatch_proto::v1::audit_service_server::AuditServiceServer;
use biomatch_proto::v1::embed_service_client::EmbedServiceClient;
use biomatch_proto::v1::embed_service_server::EmbedServiceServer;
use biomatch_proto::v1::ingest_service_client::IngestServiceClient;
use biomatch_proto::v1::ingest_service_server::IngestServiceServer;
use biomatch_proto::v1::matcher_service_client::MatcherServiceClient;
use biomatch_proto::v1::matcher_service_server::MatcherServiceServer;
use biomatch_proto::v1::search_service_client::SearchServiceClient;
use biomatch_proto::v1::search_service_server::SearchServiceServer;
use biomatch_search::{BudgetPolicy, Budgets, Limits, SearchServer};
use biomatch_store::SqlStore;
use biomatch_telemetry::{AdmissionLayer, AdmissionLimits, CatchPanicLayer, RpcTelemetryLayer};
use secrecy::{ExposeSecret, SecretString};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

/// A running process: its addresses, and a handle to stop it.
pub struct Running {
    pub grpc_addr: SocketAddr,
    /// The gateway's public REST port (with `/healthz` and `/readyz`, never `/metrics`).
    pub http_addr: Option<SocketAddr>,
    /// The operator port: `/metrics`, `/healthz` and `/readyz`, when `metrics_addr` is set.
    pub metrics_addr: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    stores: Vec<SqlStore>,
    ready: Arc<AtomicBool>,
    health: tonic_health::server::HealthReporter,
    grace: Duration,
}

/// Every service a process may report health for.
const SERVICES: [&str; 5] = [
    <AuditServiceServer<AuditServer> as tonic::server::NamedService>::NAME,
    <EmbedServiceServer<EmbedServer> as tonic::server::NamedService>::NAME,
    <IngestServiceServer<IngestServer> as tonic::server::NamedService>::NAME,
    <MatcherServiceServer<MatcherServer> as tonic::server::NamedService>::NAME,
    <SearchServiceServer<SearchServer> as tonic::server::NamedService>::NAME,
];

impl Running {
    /// Tells load balancers to send no more traffic: `/readyz` answers 503 and every gRPC health
    /// check NOT_SERVING, while requests still arriving are served.
    pub async fn drain(&self) {
        self.ready.store(false, Ordering::SeqCst);
        for name in SERVICES {
            self.health.set_service_status(name, tonic_health::ServingStatus::NotServing).await;
        }
        self.health.set_service_status("", tonic_health::ServingStatus::NotServing).await;
    }

    /// Drains, stops accepting, lets in-flight requests finish within the grace period (then
    /// abandons them), writes final matcher snapshots, and closes the stores.
    pub async fn shutdown(self) {
        self.drain().await;
        let _ = self.stop.send(true);
        let deadline = tokio::time::Instant::now() + self.grace;
        for task in self.tasks {
            let abort = task.abort_handle();
            if tokio::time::timeout_at(deadline, task).await.is_err() {
                tracing::warn!("shutdown grace period over; abandoning in-flight work");
                abort.abort();
            }
        }
        for store in &self.stores {
            store.close().await;
        }
        tracing::info!("stopped");
    }
}

/// Database URLs: PostgreSQL when configured, otherwise SQLite files in the data directory
/// (the gallery store and the audit store in separate files).
/// Kept secret (a URL may hold a password) until the store connects.
fn store_urls(config: &ServeConfig) -> anyhow::Result<(SecretString, SecretString)> {
    if let Some(url) = &config.database_url {
        return Ok((url.clone(), url.clone()));
    }
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data directory {}", config.data_dir.display()))?;
    let file = |name: &str| SecretString::from(format!("sqlite://{}", config.data_dir.join(name).display()));
    Ok((file("gallery.db"), file("audit.db")))
}

/// How this process reaches a role: at its configured endpoint over the network; otherwise the
/// role is one of this process's own, reached in process when there is no TLS
/// ([`biomatch_client::Transport`]), or through the process's own listener.
fn transport(
    url: Option<&str>,
    own: &str,
    tls: Option<&biomatch_client::MutualTls>,
    local: Option<&LocalServer>,
) -> anyhow::Result<Transport> {
    match (url, local) {
        (None, Some(local)) => Ok(local.transport()),
        (url, _) => Ok(biomatch_client::channel_with(url.unwrap_or(own), tls)?.into()),
    }
}

/// Starts the configured roles. Returns once every role is ready to answer.
pub async fn start(config: ServeConfig) -> anyhow::Result<Running> {
    start_with_clock(config, system_clock()).await
}

pub async fn start_with_clock(config: ServeConfig, clock: Clock) -> anyhow::Result<Running> {
    config.validate()?;
    // Counters accumulate from the start, whichever roles run; served only at `metrics_addr`
    // (the operator port), never on the gateway's public port.
    let ops = Ops { metrics: metrics_handle(), ready: Arc::new(AtomicBool::new(false)) };
    let listener = tokio::net::TcpListener::bind(config.grpc_addr)
        .await
        .with_context(|| format!("cannot listen on {}", config.grpc_addr))?;
    let grpc_addr = listener.local_addr()?;
    let tls = match (&config.tls.ca_file, &config.tls.cert_file, &config.tls.key_file) {
        (Some(ca), Some(cert), Some(key)) => Some(biomatch_client::MutualTls::from_files(ca, cert, key)?),
        _ => None,
    };
    let own = format!("http://{grpc_addr}");
    // Calls between this process's roles skip the network unless TLS is configured (a call that
    // never left the process presents no client certificate).
    let local = tls.is_none().then(LocalServer::default);
    let e = &config.endpoints;
    let connect = |url: Option<&str>| transport(url, &own, tls.as_ref(), local.as_ref());
    let audit_client = AuditServiceClient::new(connect(e.audit.as_deref())?);

    // Only ingest, matcher and audit open a store (and need a database URL or a data directory);
    // only ingest and matcher read the master key.
    let mut stores = Vec::new();
    let gallery_store = if config.seals_templates() {
        let (gallery_url, _) = store_urls(&config)?;
        let store =
            SqlStore::connect(gallery_url.expose_secret()).await.context("cannot open the gallery store")?;
        stores.push(store.clone());
        Some(Arc::new(store))
    } else {
        None
    };
    let audit_store = if config.keeps_audit_log() {
        let (_, audit_url) = store_urls(&config)?;
        let store =
            SqlStore::connect(audit_url.expose_secret()).await.context("cannot open the audit store")?;
        stores.push(store.clone());
        Some(Arc::new(store))
    } else {
        None
    };
    // One key store per process, shared by ingest and matcher.
    let keys: Option<Arc<dyn biomatch_crypto::KeyStore>> = match gallery_store {
        Some(_) => Some(Arc::new(crate::identity::key_store(&config)?)),
        None => None,
    };

    let (stop, stopped) = watch::channel(false);
    let identity = crate::identity::load(&config)?;
    let auth = match &config.redis_url {
        // Replicas share spent single-use tokens, as they share query budgets.
        Some(url) => identity.auth.clone().with_replay_store(
            ReplayStore::shared(url.expose_secret(), &config.redis_key_prefix)
                .await
                .context("cannot connect to Redis for single-use tokens")?,
        ),
        None => identity.auth.clone(),
    };
    // Every refused call is on the record: denials one leaf each, failed authentications per
    // source and minute.
    let refusals: Arc<dyn biomatch_auth::RefusalLog> = Arc::new(biomatch_client::AuditRefusals::new(
        audit_client.clone(),
        identity.creds.clone(),
        clock.clone(),
    ));
    // The gateway's REST API calls search, ingest and audit with each caller's own token.
    let gateway_services = if config.runs(ProcessRole::Gateway) {
        Some(Services {
            search: SearchServiceClient::new(connect(e.search.as_deref())?),
            ingest: IngestServiceClient::new(connect(e.ingest.as_deref())?),
            audit: AuditServiceClient::new(connect(e.audit.as_deref())?),
        })
    } else {
        None
    };
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    let mut process = roles::Process {
        config: &config,
        clock: clock.clone(),
        creds: identity.creds.clone(),
        audit: audit_client,
        embed: EmbedServiceClient::new(connect(e.embed.as_deref())?),
        ingest: IngestServiceClient::new(connect(e.ingest.as_deref())?),
        matchers: match e.matchers.as_slice() {
            [] => vec![MatcherServiceClient::new(connect(None)?)],
            urls => urls
                .iter()
                .map(|url| Ok(MatcherServiceClient::new(connect(Some(url))?)))
                .collect::<anyhow::Result<_>>()?,
        },
        health: health_reporter.clone(),
        stopped: stopped.clone(),
        tasks: Vec::new(),
        changed: Arc::new(Notify::new()),
    };
    let p = &mut process;
    // One budget per principal for its searches and its subject reads, in this process and (with
    // Redis) across replicas.
    let budgets = if config.runs(ProcessRole::Search) || config.runs(ProcessRole::Ingest) {
        Some(Arc::new(query_budgets(&config).await?))
    } else {
        None
    };
    let stored = gallery_store.zip(keys);
    let matcher = match &stored {
        Some((store, keys)) if config.runs(ProcessRole::Matcher) => {
            Some(roles::matcher(p, store.clone(), keys.clone()).await?)
        }
        _ => None,
    };
    let ingest = match (&stored, &budgets) {
        (Some((store, keys)), Some(budgets)) if config.runs(ProcessRole::Ingest) => {
            Some(roles::ingest(p, store.clone(), keys.clone(), budgets.clone()).await?)
        }
        _ => None,
    };
    let audit = match audit_store {
        Some(store) => Some(roles::audit(p, store).await?),
        None => None,
    };
    let search = match &budgets {
        Some(budgets) if config.runs(ProcessRole::Search) => Some(roles::search(p, budgets.clone()).await?),
        _ => None,
    };
    let embed = if config.runs(ProcessRole::Embed) { Some(roles::embed(p).await?) } else { None };
    let roles::Process { mut tasks, .. } = process;

    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = &tls {
        builder = builder.tls_config(tls.server()).context("invalid TLS configuration")?;
        tracing::info!("mutual TLS: only clients with a certificate from the configured CA are accepted");
    }
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(biomatch_proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("gRPC reflection")?;
    // What every call meets, from the network or from this process's own roles.
    let layers = tower::ServiceBuilder::new()
        // Outermost: a call refused for overload costs as little as can be (no span, no request
        // metrics, no authentication); refusals are counted in `biomatch_shed_total`.
        .layer(admission_layer(&config))
        .layer(RpcTelemetryLayer::grpc(biomatch_proto::rpc_paths()))
        // Inside the telemetry layer, so a caught panic is counted as the INTERNAL it answers.
        .layer(CatchPanicLayer)
        .layer(
            AuthLayer::new(auth.clone())
                .with_refusal_log(refusals)
                .with_client_certificates_required(tls.is_some()),
        );
    let mut routes = tonic::service::Routes::builder();
    routes.add_service(health_service).add_service(reflection);
    if let Some(service) = embed {
        routes.add_service(service);
    }
    if let Some(service) = ingest {
        routes.add_service(service);
    }
    if let Some(service) = matcher {
        routes.add_service(service);
    }
    if let Some(service) = search {
        routes.add_service(service);
    }
    if let Some(service) = audit {
        routes.add_service(service);
    }
    let routes = routes.routes().prepare();
    if let Some(local) = &local {
        local.serve(layers.service(routes.clone()));
    }
    // TCP_NODELAY on every accepted connection: without it, a response written in more than one
    // segment waits for the peer's delayed ACK (40 ms on Linux), which was the p99 of identify.
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let mut grpc_stopped = stopped.clone();
    tasks.push(tokio::spawn(async move {
        let stop = async move {
            let _ = grpc_stopped.wait_for(|s| *s).await;
        };
        let served = builder.layer(layers).serve_with_incoming_shutdown(routes, incoming, stop);
        if let Err(e) = served.await {
            tracing::error!(error = %e, "grpc server failed");
        }
    }));
    tracing::info!(addr = %grpc_addr, roles = %config.role_names(","), "grpc listening");

    let http_addr = if let Some(services) = gateway_services {
        // A photo at the embed role's limit, plus the form around it.
        let body_limit = config.embed.max_image_bytes + 1024 * 1024;
        let app = Gateway::new(services, auth, ops.ready.clone()).with_body_limit(body_limit).router();
        Some(serve_http(config.http_addr, app, stopped.clone(), &mut tasks).await?)
    } else {
        None
    };
    let metrics_addr = match config.metrics_addr {
        Some(addr) => Some(serve_http(addr, ops_router(ops.clone()), stopped.clone(), &mut tasks).await?),
        None => None,
    };

    ops.ready.store(true, Ordering::SeqCst);
    let grace = Duration::from_millis(config.shutdown_grace_ms);
    Ok(Running {
        grpc_addr,
        http_addr,
        metrics_addr,
        stop,
        tasks,
        stores,
        ready: ops.ready,
        health: health_reporter,
        grace,
    })
}

fn admission_layer(config: &ServeConfig) -> AdmissionLayer {
    let a = &config.admission;
    let limits = |max_in_flight, max_waiting, wait_ms, adaptive| AdmissionLimits {
        max_in_flight,
        max_waiting,
        max_wait: Duration::from_millis(wait_ms),
        adaptive,
    };
    AdmissionLayer::with_internal(
        limits(a.max_in_flight, a.max_waiting, a.max_wait_ms, a.adaptive),
        limits(a.internal_max_in_flight, a.internal_max_waiting, a.internal_max_wait_ms, false),
    )
}

/// Serves `app` on `addr` until stopped; returns the bound address.
async fn serve_http(
    addr: SocketAddr,
    app: axum::Router,
    mut stopped: watch::Receiver<bool>,
    tasks: &mut Vec<JoinHandle<()>>,
) -> anyhow::Result<SocketAddr> {
    let listener =
        tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
    let addr = listener.local_addr()?;
    tasks.push(tokio::spawn(async move {
        let stop = async move {
            let _ = stopped.wait_for(|s| *s).await;
        };
        // As for gRPC: no response waits for a delayed ACK.
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::warn!(error = %e, "cannot set TCP_NODELAY");
            }
        });
        if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(stop).await {
            tracing::error!(error = %e, "http server failed");
        }
    }));
    tracing::info!(addr = %addr, "http listening");
    Ok(addr)
}

/// Histogram buckets: seconds for latencies, queries for batch sizes.
const BATCH_BUCKETS: [f64; 8] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0];
const LATENCY_BUCKETS: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Query budgets as configured, in Redis when a URL is set: every search replica and every
/// ingest replica counts one principal's searches and subject reads together.
async fn query_budgets(config: &ServeConfig) -> anyhow::Result<Budgets> {
    let s = &config.search;
    let policy = BudgetPolicy {
        kiosk: Limits { per_minute: s.kiosk_per_minute, per_day: s.kiosk_per_day },
        analyst: Limits { per_minute: s.analyst_per_minute, per_day: s.analyst_per_day },
        enroller: Limits { per_minute: s.enroller_per_minute, per_day: s.enroller_per_day },
    };
    Ok(match &config.redis_url {
        Some(url) => Budgets::shared(policy, url.expose_secret(), &config.redis_key_prefix)
            .await
            .context("cannot connect to Redis for the query budgets")?,
        None => Budgets::new(policy),
    })
}

/// The process-wide Prometheus recorder (installed once, shared by every role in the process).
fn metrics_handle() -> Option<metrics_exporter_prometheus::PrometheusHandle> {
    static HANDLE: std::sync::OnceLock<Option<metrics_exporter_prometheus::PrometheusHandle>> =
        std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            match metrics_exporter_prometheus::PrometheusBuilder::new()
                .set_buckets(&LATENCY_BUCKETS)
                .and_then(|b| {
                    let batch =
                        metrics_exporter_prometheus::Matcher::Full("biomatch_matcher_batch_queries".into());
                    b.set_buckets_for_metric(batch, &BATCH_BUCKETS)
                })
                .and_then(|b| b.install_recorder())
            {
                Ok(handle) => {
                    spawn_metrics_upkeep(handle.clone());
                    Some(handle)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "metrics recorder not installed");
                    None
                }
            }
        })
        .clone()
}

/// Histograms keep every sample until upkeep folds it into their buckets (or a scrape renders
/// them): without it, a process nobody scrapes grows by ~16 bytes per recorded request. One
/// thread for the process, as the recorder is.
fn spawn_metrics_upkeep(handle: metrics_exporter_prometheus::PrometheusHandle) {
    let upkeep = move || {
        loop {
            std::thread::sleep(METRICS_UPKEEP);
            handle.run_upkeep();
        }
    };
    if let Err(e) = std::thread::Builder::new().name("metrics-upkeep".into()).spawn(upkeep) {
        tracing::warn!(error = %e, "metrics upkeep not started: histograms grow until scraped");
    }
}

/// How often histogram samples are folded into their buckets.
const METRICS_UPKEEP: std::time::Duration = std::time::Duration::from_secs(5);

fn spawn_until_stopped(
    work: impl std::future::Future<Output = ()> + Send + 'static,
    mut stopped: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        tokio::select! {
            () = work => {}
            _ = stopped.wait_for(|s| *s) => {}
        }
    })
}
