//! A benchmark's own cluster in process (audit, embed, ingest, matcher, search on one loopback
//! port) holding one gallery of given templates, and the tokens to search it.

use anyhow::Context;
use biomatch_config::{ProcessRole, ServeConfig};
use biomatch_domain::{IndexSpec, Role};
use biomatch_index::SearchSettings;
use biomatch_proto::v1::ingest_service_client::IngestServiceClient;
use biomatch_proto::v1::matcher_service_client::MatcherServiceClient;
use biomatch_proto::v1::{
    CreateGalleryRequest, DescribeMatcherRequest, EnrollMode, EnrollRequest, IdentifyRequest,
};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

pub(crate) const GALLERY: &str = "bench";

/// The settings a shard searches with, and where they came from (`ShardStatus.settings_source`).
pub(crate) struct ShardSettings {
    pub search: SearchSettings,
    pub source: String,
}

pub(crate) struct ScratchGallery {
    pub running: crate::serve::Running,
    pub channel: Channel,
    /// An analyst allowed vector probes, as a trusted integration.
    pub analyst: String,
    /// The search role's identity, for calling a matcher directly.
    pub service: String,
    pub enrol_s: f64,
    _dir: tempfile::TempDir,
}

impl ScratchGallery {
    /// Starts the cluster (`tune` adjusts its configuration), creates the gallery with `spec`
    /// and enrols `templates` (subject `s{i}`) through `BatchEnroll`.
    pub async fn start(
        tune: impl FnOnce(&mut ServeConfig),
        spec: &IndexSpec,
        templates: &[Vec<f32>],
    ) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let roles = vec![
            ProcessRole::Audit,
            ProcessRole::Embed,
            ProcessRole::Ingest,
            ProcessRole::Matcher,
            ProcessRole::Search,
        ];
        let (mut config, signer) = crate::cli::bench::scratch_config(dir.path(), roles)?;
        config.matcher.snapshot_interval_ms = 0;
        config.search.analyst_per_minute = u32::MAX;
        config.search.analyst_per_day = u32::MAX;
        tune(&mut config);
        let service_key =
            config.auth.service_key_file.clone().context("the scratch cluster has a service key")?;
        let running = crate::serve::start(config).await?;
        let channel = biomatch_client::channel(&format!("http://{}", running.grpc_addr))?;
        let token = |role, name: &str| {
            let mut spec = biomatch_auth::TokenSpec::new(name, role, Duration::from_secs(3600));
            spec.vector_probes = true;
            signer.issue(&spec).context("token")
        };
        let (admin, enroller, analyst) = (
            token(Role::Admin, "bench-admin")?,
            token(Role::Enroller, "bench-enroller")?,
            token(Role::Analyst, "bench-analyst")?,
        );
        let service = {
            let signer = biomatch_auth::TokenSigner::from_file(&service_key, "biomatch", "biomatch")?;
            signer.issue(&biomatch_auth::TokenSpec::new(
                "biomatch-search",
                Role::Service,
                Duration::from_secs(600),
            ))?
        };
        let mut ingest = IngestServiceClient::new(channel.clone());
        let create = CreateGalleryRequest {
            name: GALLERY.into(),
            dimension: templates[0].len() as u32,
            shard_count: 1,
            index: Some(biomatch_proto::index_spec_to_proto(spec)),
            threshold: Some(0.3),
            allowed_purposes: vec!["bench".into()],
            retention: Some(prost_types::Duration { seconds: 86_400, nanos: 0 }),
            ..Default::default()
        };
        ingest.create_gallery(biomatch_client::request(create, &admin)).await?;
        let requests: Vec<EnrollRequest> = templates
            .iter()
            .enumerate()
            .map(|(i, v)| EnrollRequest {
                gallery: GALLERY.into(),
                subject_id: format!("s{i}"),
                samples: vec![biomatch_proto::embedding_probe(v.clone())],
                mode: EnrollMode::Add.into(),
                idempotency_key: format!("bench-{i}"),
            })
            .collect();
        let enrolling = Instant::now();
        let stream = biomatch_client::request(tokio_stream::iter(requests), &enroller);
        let seq = ingest.batch_enroll(stream).await?.into_inner().last_change_seq;
        let scratch = Self { running, channel, analyst, service, enrol_s: 0.0, _dir: dir };
        // The first search waits for the matcher to apply every enrolment.
        let mut search =
            biomatch_proto::v1::search_service_client::SearchServiceClient::new(scratch.channel.clone());
        search.identify(scratch.identify(templates[0].clone(), seq)).await?;
        Ok(Self { enrol_s: enrolling.elapsed().as_secs_f64(), ..scratch })
    }

    /// An identify of `probe` (k = 10) as the benchmark's analyst.
    pub fn identify(&self, probe: Vec<f32>, min_change_seq: u64) -> tonic::Request<IdentifyRequest> {
        let request = IdentifyRequest {
            gallery: GALLERY.into(),
            probe: Some(biomatch_proto::embedding_probe(probe)),
            k: 10,
            min_change_seq,
            purpose: "bench".into(),
            ..Default::default()
        };
        biomatch_client::request(request, &self.analyst)
    }

    /// The search settings the matcher's shard settled on: it tunes itself after training and each
    /// time it doubles, on a copy and in the background, so measuring before that ends would measure
    /// the tuning's CPU and then settings that change midway. Waits for at most an hour.
    pub async fn settled_settings(&self) -> anyhow::Result<ShardSettings> {
        let mut matcher = MatcherServiceClient::new(self.channel.clone());
        let started = Instant::now();
        loop {
            let described = matcher
                .describe(biomatch_client::request(DescribeMatcherRequest {}, &self.service))
                .await?
                .into_inner();
            let shard = described
                .shards
                .into_iter()
                .find(|s| s.shard.as_ref().is_some_and(|r| r.gallery == GALLERY))
                .context("the matcher holds no shard of the benchmark's gallery")?;
            if !shard.tuning {
                eprintln!(
                    "bench search: the matcher's shard searches with nprobe {} and re-rank depth {} ({}; 0: not \
                     used by this kind)",
                    shard.nprobe, shard.rerank_depth, shard.settings_source
                );
                return Ok(ShardSettings {
                    search: SearchSettings { nprobe: shard.nprobe, rerank_depth: shard.rerank_depth },
                    source: shard.settings_source,
                });
            }
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(3600),
                "the matcher's shard never settled its tuning"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}
