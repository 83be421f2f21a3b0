//! Helpers for cross-service scenarios: a real cluster started in process on port 0, on SQLite and
//! (when `BIOMATCH_TEST_DATABASE_URL` is set, and always under `CI=true`) on a fresh PostgreSQL
//! database, plus synthetic face-like galleries.

use biomatch::serve::Running;
use biomatch::synthetic::Synthetic;
use biomatch_config::{Role, ServeConfig};
use biomatch_domain::{Principal, Role as DomainRole};
use biomatch_proto::v1::audit_service_client::AuditServiceClient;
use biomatch_proto::v1::ingest_service_client::IngestServiceClient;
use biomatch_proto::v1::search_service_client::SearchServiceClient;
use biomatch_proto::v1::{
    CreateGalleryRequest, Embedding, EnrollMode, EnrollRequest, IdentifyRequest, IdentifyResponse, Probe,
    probe,
};
use std::path::{Path, PathBuf};
use tonic::transport::Channel;

/// Where a cluster keeps its state.
#[derive(Debug, Clone)]
pub enum Backend {
    Sqlite(PathBuf),
    Postgres(String),
}

/// SQLite in `dir`, and PostgreSQL when configured.
pub async fn backends(dir: &Path) -> Vec<Backend> {
    let mut all = vec![Backend::Sqlite(dir.join("data"))];
    if let Some(url) = biomatch_store::testing::fresh_postgres_url().await {
        all.push(Backend::Postgres(url));
    }
    all
}

/// A configuration for `roles` on loopback port 0 over `backend`; `data_dir` holds local state.
pub fn config(backend: &Backend, data_dir: &Path, roles: &[Role]) -> ServeConfig {
    let mut config = ServeConfig {
        roles: roles.to_vec(),
        data_dir: data_dir.to_path_buf(),
        grpc_addr: "127.0.0.1:0".parse().expect("address"),
        http_addr: "127.0.0.1:0".parse().expect("address"),
        ..ServeConfig::default()
    };
    match backend {
        Backend::Sqlite(dir) => config.data_dir = dir.clone(),
        Backend::Postgres(url) => config.database_url = Some(url.clone().into()),
    }
    config
}

pub struct TestCluster {
    pub running: Running,
    pub channel: Channel,
}

impl TestCluster {
    pub async fn start(config: ServeConfig) -> Self {
        let running = biomatch::serve::start(config).await.expect("cluster starts");
        let channel = biomatch_client_channel(&format!("http://{}", running.grpc_addr));
        Self { running, channel }
    }

    /// The whole cluster in one process, as `serve --role all` runs it.
    pub async fn all(backend: &Backend, data_dir: &Path) -> Self {
        Self::start(config(backend, data_dir, &[Role::All])).await
    }

    pub fn ingest(&self) -> IngestServiceClient<Channel> {
        IngestServiceClient::new(self.channel.clone())
    }

    pub fn search(&self) -> SearchServiceClient<Channel> {
        SearchServiceClient::new(self.channel.clone())
    }

    pub fn audit(&self) -> AuditServiceClient<Channel> {
        AuditServiceClient::new(self.channel.clone())
    }
}

fn biomatch_client_channel(url: &str) -> Channel {
    tonic::transport::Endpoint::from_shared(url.to_owned()).expect("endpoint").connect_lazy()
}

pub fn embedding(values: Vec<f32>) -> Option<Probe> {
    Some(Probe { kind: Some(probe::Kind::Embedding(Embedding { values, ..Default::default() })) })
}

/// A gallery of `subjects` synthetic identities (subject ids `s00000`...), enrolled in one
/// stream; returns the identity centres and the change-log position of the last enrolment.
pub async fn enrolled_gallery(
    cluster: &TestCluster,
    name: &str,
    dimension: u32,
    shards: u32,
    subjects: usize,
    seed: u64,
) -> (Synthetic, Vec<Vec<f32>>, u64) {
    let mut ingest = cluster.ingest();
    let create = CreateGalleryRequest {
        name: name.into(),
        dimension,
        shard_count: shards,
        threshold: Some(0.45),
        ..Default::default()
    };
    ingest.create_gallery(as_admin(create)).await.expect("gallery created");
    let mut synthetic = Synthetic::new(dimension as usize, seed);
    let centres: Vec<Vec<f32>> = (0..subjects).map(|_| synthetic.identity()).collect();
    let requests: Vec<EnrollRequest> = centres
        .iter()
        .enumerate()
        .map(|(i, c)| EnrollRequest {
            gallery: name.into(),
            subject_id: subject_id(i),
            samples: vec![embedding(synthetic.sample(c)).expect("probe")],
            mode: EnrollMode::Add.into(),
            idempotency_key: format!("{name}-{i}"),
        })
        .collect();
    let response =
        ingest.batch_enroll(as_admin(tokio_stream::iter(requests))).await.expect("enrolled").into_inner();
    assert_eq!(response.accepted as usize, subjects, "{:?}", response.failures.first());
    (synthetic, centres, response.last_change_seq)
}

/// A request from an administrator (needed outside demo mode).
pub fn as_admin<T>(message: T) -> tonic::Request<T> {
    let admin = Principal { subject: "ops-1".into(), role: DomainRole::Admin, device: String::new() };
    biomatch_client::request(message, &admin)
}

pub fn subject_id(i: usize) -> String {
    format!("s{i:05}")
}

pub async fn identify(
    cluster: &TestCluster,
    gallery: &str,
    probe: Vec<f32>,
    min_change_seq: u64,
) -> Result<IdentifyResponse, tonic::Status> {
    let request = IdentifyRequest {
        gallery: gallery.into(),
        probe: embedding(probe),
        k: 5,
        min_change_seq,
        ..Default::default()
    };
    let kiosk = Principal { subject: "kiosk-1".into(), role: DomainRole::Kiosk, device: "lane-1".into() };
    cluster
        .search()
        .identify(biomatch_client::request(request, &kiosk))
        .await
        .map(tonic::Response::into_inner)
}
