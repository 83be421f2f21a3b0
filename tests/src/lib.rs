//! Helpers for cross-service scenarios: a real cluster started in process on port 0, on SQLite and
//! (when `BIOMATCH_TEST_DATABASE_URL` is set, and always under `CI=true`) on a fresh PostgreSQL
//! database, plus synthetic face-like galleries.
#![forbid(unsafe_code)]

use biomatch::serve::Running;
use biomatch::synthetic::Synthetic;
use biomatch_auth::{TokenSigner, TokenSpec};
use biomatch_config::{ProcessRole, ServeConfig};
use biomatch_domain::Role;
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

/// The test issuer's key pair in `data_dir/keys` (kid `test`, signs people's tokens), created on
/// first use.
fn test_keys(data_dir: &Path) -> (PathBuf, PathBuf) {
    biomatch_auth::keys::generate(&data_dir.join("keys"), "test").expect("test keys")
}

/// The service key pair every test process signs its calls with (kid `service-all`: it may sign
/// the service identity of any role), created on first use.
fn service_keys(data_dir: &Path) -> (PathBuf, PathBuf) {
    let kid = biomatch_auth::issuers::service_kid(biomatch_auth::issuers::ALL_ROLES);
    biomatch_auth::keys::generate(&data_dir.join("keys"), &kid).expect("service keys")
}

/// A configuration for `roles` on loopback port 0 over `backend`; `data_dir` holds local state.
/// Every process trusts the test issuer and the test service key, and signs its own calls with
/// the latter.
pub fn config(backend: &Backend, data_dir: &Path, roles: &[ProcessRole]) -> ServeConfig {
    let (_, public) = test_keys(data_dir);
    let (service_private, service_public) = service_keys(data_dir);
    let mut config = ServeConfig {
        roles: roles.to_vec(),
        data_dir: data_dir.to_path_buf(),
        grpc_addr: "127.0.0.1:0".parse().expect("address"),
        http_addr: "127.0.0.1:0".parse().expect("address"),
        // The operator port (`/metrics`), as every role in a deployment has one.
        metrics_addr: Some("127.0.0.1:0".parse().expect("address")),
        ..ServeConfig::default()
    };
    config.auth.public_keys = vec![public, service_public];
    config.auth.service_key_file = Some(service_private);
    let master = data_dir.join("keys/master.key");
    biomatch_crypto::MasterKey::load_or_create(&master).expect("master key");
    config.crypto.master_key_file = Some(master);
    // Scenarios run many searches a minute from one kiosk; the budget test sets its own limits.
    config.search.kiosk_per_minute = 100_000;
    config.search.analyst_per_minute = 100_000;
    match backend {
        Backend::Sqlite(dir) => config.data_dir = dir.clone(),
        Backend::Postgres(url) => config.database_url = Some(url.clone().into()),
    }
    config
}

/// Adds a bearer token to requests that carry none.
#[derive(Clone)]
pub struct WithToken(String);

impl tonic::service::Interceptor for WithToken {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if !request.metadata().contains_key(biomatch_auth::AUTHORIZATION) {
            let value = format!("Bearer {}", self.0).parse().map_err(|_| tonic::Status::internal("token"))?;
            request.metadata_mut().insert(biomatch_auth::AUTHORIZATION, value);
        }
        Ok(request)
    }
}

pub type Authed = tonic::service::interceptor::InterceptedService<Channel, WithToken>;

pub struct TestCluster {
    pub running: Running,
    pub channel: Channel,
    /// The test issuer: signs people's tokens.
    pub signer: TokenSigner,
    /// The processes' service key: signs service tokens.
    pub service_signer: TokenSigner,
}

impl TestCluster {
    pub async fn start(config: ServeConfig) -> Self {
        Self::start_with_clock(config, biomatch_domain::system_clock()).await
    }

    /// A cluster whose stores and audit log read time from `clock` (milliseconds).
    pub async fn start_with_clock(config: ServeConfig, clock: biomatch_domain::Clock) -> Self {
        let service = config.auth.service_key_file.clone().expect("test config names the service key");
        let service_signer = TokenSigner::from_file(&service, "biomatch", "biomatch").expect("signer");
        let issuer = service.with_file_name("test.key.pem");
        let signer = TokenSigner::from_file(&issuer, "biomatch", "biomatch").expect("signer");
        let running = biomatch::serve::start_with_clock(config, clock).await.expect("cluster starts");
        let channel = biomatch_client_channel(&format!("http://{}", running.grpc_addr));
        Self { running, channel, signer, service_signer }
    }

    /// A token of `role` for `subject`, valid ten minutes. Analysts' tokens carry the
    /// `vector-probes` scope: the scenarios search with synthetic vectors, as a trusted
    /// integration does.
    /// A `service` token is signed with the service key, and its subject must name roles
    /// (`biomatch-search`, `biomatch-all`).
    pub fn token(&self, role: Role, subject: &str) -> String {
        let mut spec = TokenSpec::new(subject, role, std::time::Duration::from_secs(600));
        spec.vector_probes = role == Role::Analyst;
        let signer = if role == Role::Service { &self.service_signer } else { &self.signer };
        signer.issue(&spec).expect("token")
    }

    /// A trusted integration's token (an analyst with the `vector-probes` scope) on device
    /// `lane-1`, scoped to `gallery` for purpose `border`: what [`identify`] searches with.
    pub fn integration_token(&self, gallery: &str) -> String {
        let mut spec = TokenSpec::new("integration-1", Role::Analyst, std::time::Duration::from_secs(600));
        spec.device = "lane-1".into();
        spec.galleries = Some(vec![gallery.to_owned()]);
        spec.purposes = Some(vec![PURPOSE.to_owned()]);
        spec.vector_probes = true;
        self.signer.issue(&spec).expect("token")
    }

    /// A kiosk token scoped to `gallery` for purpose `border`.
    pub fn kiosk_token(&self, gallery: &str) -> String {
        let mut spec = TokenSpec::new("kiosk-1", Role::Kiosk, std::time::Duration::from_secs(600));
        spec.device = "lane-1".into();
        spec.galleries = Some(vec![gallery.to_owned()]);
        spec.purposes = Some(vec![PURPOSE.to_owned()]);
        self.signer.issue(&spec).expect("token")
    }

    fn as_role(&self, role: Role, subject: &str) -> WithToken {
        WithToken(self.token(role, subject))
    }

    /// The whole cluster in one process, as `serve --role all` runs it.
    pub async fn all(backend: &Backend, data_dir: &Path) -> Self {
        Self::start(config(backend, data_dir, &[ProcessRole::All])).await
    }

    /// Clients acting in the role each service is for, unless a request carries its own token:
    /// galleries as an administrator, subjects as an enroller, searches as an analyst, the log
    /// as an auditor.
    pub fn galleries(&self) -> IngestServiceClient<Authed> {
        IngestServiceClient::with_interceptor(self.channel.clone(), self.as_role(Role::Admin, "ops-1"))
    }

    pub fn ingest(&self) -> IngestServiceClient<Authed> {
        IngestServiceClient::with_interceptor(self.channel.clone(), self.as_role(Role::Enroller, "loader-1"))
    }

    pub fn search(&self) -> SearchServiceClient<Authed> {
        SearchServiceClient::with_interceptor(self.channel.clone(), self.as_role(Role::Analyst, "analyst-1"))
    }

    pub fn audit(&self) -> AuditServiceClient<Authed> {
        AuditServiceClient::with_interceptor(self.channel.clone(), self.as_role(Role::Auditor, "auditor-1"))
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
        allowed_purposes: vec![PURPOSE.into()],
        retention: Some(prost_types::Duration { seconds: RETENTION_SECS, nanos: 0 }),
        ..Default::default()
    };
    cluster.galleries().create_gallery(create).await.expect("gallery created");
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
    let response = ingest.batch_enroll(tokio_stream::iter(requests)).await.expect("enrolled").into_inner();
    assert_eq!(response.accepted as usize, subjects, "{:?}", response.failures.first());
    (synthetic, centres, response.last_change_seq)
}

/// The whole cluster with the face models in `models` (photos up to 3 MB are embedded), and an
/// SFace gallery `gallery` (threshold 0.363, purpose [`PURPOSE`]).
pub async fn photo_cluster(
    backend: &Backend,
    data_dir: &Path,
    models: PathBuf,
    gallery: &str,
) -> TestCluster {
    let mut c = config(backend, data_dir, &[ProcessRole::All]);
    c.embed.model_dir = Some(models);
    c.embed.max_image_bytes = 3 * 1024 * 1024;
    let cluster = TestCluster::start(c).await;
    let create = CreateGalleryRequest {
        name: gallery.into(),
        dimension: 128,
        model_id: "sface".into(),
        threshold: Some(0.363),
        allowed_purposes: vec![PURPOSE.into()],
        retention: Some(prost_types::Duration { seconds: RETENTION_SECS, nanos: 0 }),
        ..Default::default()
    };
    cluster.galleries().create_gallery(create).await.expect("photo gallery created");
    cluster
}

/// The purpose every test gallery allows.
pub const PURPOSE: &str = "border";
/// How long test galleries keep their subjects.
pub const RETENTION_SECS: i64 = 3600;

pub fn subject_id(i: usize) -> String {
    format!("s{i:05}")
}

/// Identifies `probe` in `gallery` as a trusted integration (candidates with scores).
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
        purpose: PURPOSE.into(),
        ..Default::default()
    };
    let integration = cluster.integration_token(gallery);
    cluster
        .search()
        .identify(biomatch_client::request(request, &integration))
        .await
        .map(tonic::Response::into_inner)
}
