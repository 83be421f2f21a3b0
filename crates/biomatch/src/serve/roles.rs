//! One function per role: what it opens, the background work it starts, and the gRPC service it
//! adds to the process. [`super::start_with_clock`] decides which run and wires them together.

use anyhow::Context;
use biomatch_audit::{AuditServer, Log};
use biomatch_auth::ServiceCredentials;
use biomatch_client::Transport;
use biomatch_config::ServeConfig;
use biomatch_crypto::KeyStore;
use biomatch_domain::Clock;
use biomatch_embed::EmbedServer;
use biomatch_face::FacePipeline;
use biomatch_ingest::IngestServer;
use biomatch_matcher::{Assignment, Batching, MatcherOptions, MatcherServer, Syncer};
use biomatch_proto::v1::audit_service_client::AuditServiceClient;
use biomatch_proto::v1::audit_service_server::AuditServiceServer;
use biomatch_proto::v1::embed_service_client::EmbedServiceClient;
use biomatch_proto::v1::embed_service_server::EmbedServiceServer;
use biomatch_proto::v1::ingest_service_client::IngestServiceClient;
use biomatch_proto::v1::ingest_service_server::IngestServiceServer;
use biomatch_proto::v1::matcher_service_client::MatcherServiceClient;
use biomatch_proto::v1::matcher_service_server::MatcherServiceServer;
use biomatch_proto::v1::search_service_server::SearchServiceServer;
use biomatch_search::{Budgets, DisclosurePolicy, Peers, Router, SearchServer};
use biomatch_store::SqlStore;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

/// What the roles of one process share.
pub(super) struct Process<'a> {
    pub config: &'a ServeConfig,
    pub clock: Clock,
    pub creds: Arc<ServiceCredentials>,
    pub audit: AuditServiceClient<Transport>,
    pub embed: EmbedServiceClient<Transport>,
    pub ingest: IngestServiceClient<Transport>,
    /// The matchers the search role asks (this process's own when none is configured).
    pub matchers: Vec<MatcherServiceClient<Transport>>,
    pub health: tonic_health::server::HealthReporter,
    pub stopped: watch::Receiver<bool>,
    pub tasks: Vec<JoinHandle<()>>,
    /// Ingest tells a matcher in the same process that the change log moved.
    pub changed: Arc<Notify>,
}

impl Process<'_> {
    /// Requests that may carry a photo: up to the embed role's limit (refused there with the
    /// reason), plus the rest of the message; tonic's default is 4 MiB.
    fn photo_message(&self) -> usize {
        self.config.embed.max_image_bytes + 1024 * 1024
    }

    fn until_stopped(&mut self, work: impl std::future::Future<Output = ()> + Send + 'static) {
        self.tasks.push(super::spawn_until_stopped(work, self.stopped.clone()));
    }
}

/// Shards from snapshots or the store, kept current from the change log, snapshotted on a timer.
pub(super) async fn matcher(
    p: &mut Process<'_>,
    store: Arc<SqlStore>,
    keys: Arc<dyn KeyStore>,
) -> anyhow::Result<MatcherServiceServer<MatcherServer>> {
    let config: &ServeConfig = p.config;
    let m = &config.matcher;
    let options = MatcherOptions {
        assignment: match config.matcher_shards()? {
            list if list.is_empty() => Assignment::All,
            list => Assignment::Only(list),
        },
        batching: Batching {
            wait: Duration::from_micros(m.batch_wait_us),
            max_queries: m.batch_max_queries.max(1),
            threads: biomatch_config::threads_or_cores(m.search_threads),
        },
        snapshot_dir: (m.snapshot_interval_ms > 0)
            .then(|| m.snapshot_dir.clone().unwrap_or_else(|| config.data_dir.join("snapshots"))),
    };
    let syncer = Syncer::start(store, keys, options).await.context("cannot load matcher shards")?;
    p.until_stopped(syncer.clone().tail(p.changed.clone(), Duration::from_millis(m.poll_interval_ms)));
    if m.snapshot_interval_ms > 0 {
        let interval = Duration::from_millis(m.snapshot_interval_ms);
        p.tasks.push(tokio::spawn(syncer.clone().snapshot_loop(interval, p.stopped.clone())));
    }
    p.health.set_serving::<MatcherServiceServer<MatcherServer>>().await;
    Ok(MatcherServiceServer::new(MatcherServer::new(syncer)))
}

/// The only writer of the gallery store, with its scheduled purge of expired subjects.
pub(super) async fn ingest(
    p: &mut Process<'_>,
    store: Arc<SqlStore>,
    keys: Arc<dyn KeyStore>,
    budgets: Arc<Budgets>,
) -> anyhow::Result<IngestServiceServer<IngestServer>> {
    let bound = Duration::from_millis(p.config.ingest.store_timeout_ms);
    let server = IngestServer::new(
        Arc::new(biomatch_store::Bounded::new(store, bound)),
        p.audit.clone(),
        p.embed.clone(),
        p.changed.clone(),
        p.clock.clone(),
        p.creds.clone(),
        keys,
    )
    .with_min_enroll_quality(p.config.ingest.min_enroll_quality)
    .with_subject_read_budget(budgets);
    let server = Arc::new(server);
    p.until_stopped(server.clone().purge_loop(Duration::from_millis(p.config.ingest.purge_interval_ms)));
    let review = Duration::from_millis(p.config.ingest.threshold_review_interval_ms);
    p.until_stopped(server.clone().threshold_review_loop(review));
    p.until_stopped(server.clone().settle_loop());
    p.health.set_serving::<IngestServiceServer<IngestServer>>().await;
    Ok(IngestServiceServer::from_arc(server).max_decoding_message_size(p.photo_message()))
}

/// The audit log: its signing key, the tree rebuilt and checked at start, the checkpoint worker.
pub(super) async fn audit(
    p: &mut Process<'_>,
    store: Arc<SqlStore>,
) -> anyhow::Result<AuditServiceServer<AuditServer>> {
    let config = p.config;
    let key_file =
        config.audit.signing_key_file.clone().unwrap_or_else(|| config.data_dir.join("audit-signing.key"));
    let key = biomatch_audit::keys::load_or_create(&key_file)?;
    let interval = Duration::from_millis(config.audit.checkpoint_interval_ms);
    let timing = biomatch_audit::Timing {
        checkpoint_interval: interval,
        commit_timeout: Duration::from_millis(config.audit.commit_timeout_ms),
    };
    let (log, worker) = Log::open(store, key, config.audit.origin.clone(), p.clock.clone(), timing)
        .await
        .context("cannot open the audit log")?;
    p.until_stopped(worker);
    p.health.set_serving::<AuditServiceServer<AuditServer>>().await;
    Ok(AuditServiceServer::new(AuditServer::new(log, p.clock.clone())))
}

/// Identify, verify and review: fans out to the matchers, audits before answering.
pub(super) async fn search(
    p: &mut Process<'_>,
    budgets: Arc<Budgets>,
) -> anyhow::Result<SearchServiceServer<SearchServer>> {
    let config = p.config;
    let peers = Peers {
        ingest: p.ingest.clone(),
        audit: p.audit.clone(),
        embed: p.embed.clone(),
        matchers: Router::new(p.matchers.clone()),
        shard_timeout: Duration::from_millis(config.search.shard_timeout_ms),
        creds: p.creds.clone(),
    };
    let disclosure = DisclosurePolicy { candidate_margin: config.search.candidate_margin };
    let server = SearchServer::new(peers, budgets, p.clock.clone()).with_disclosure(disclosure);
    p.health.set_serving::<SearchServiceServer<SearchServer>>().await;
    Ok(SearchServiceServer::new(server).max_decoding_message_size(p.photo_message()))
}

/// Photos to faces and templates, when a model directory is configured.
pub(super) async fn embed(p: &mut Process<'_>) -> anyhow::Result<EmbedServiceServer<EmbedServer>> {
    let pipeline = match biomatch_embed::face_config(&p.config.embed) {
        Some(face) => {
            let pipeline = tokio::task::spawn_blocking(move || FacePipeline::load(&face))
                .await?
                .context("cannot load the face models (embed.model_dir)")?;
            let model = pipeline.model();
            let others: Vec<&str> = pipeline.models().skip(1).map(|m| m.model_id.as_str()).collect();
            tracing::info!(
                model = %model.model_id,
                version = %model.model_version,
                also = %others.join(","),
                "face models loaded"
            );
            Some(Arc::new(pipeline))
        }
        None => {
            tracing::info!("no face model configured (embed.model_dir): photos are refused");
            None
        }
    };
    let server = EmbedServer::new(pipeline, &p.config.embed);
    p.health.set_serving::<EmbedServiceServer<EmbedServer>>().await;
    Ok(EmbedServiceServer::new(server).max_decoding_message_size(p.photo_message()))
}
