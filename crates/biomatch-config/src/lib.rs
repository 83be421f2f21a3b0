//! Configuration of a biomatch process, loaded in layers: built-in defaults, then an optional TOML
//! file, then `BIOMATCH__SECTION__KEY` environment variables, then command-line flags. The result
//! is validated before anything starts; an invalid configuration stops start-up with a clear
//! message. Database URLs, which may hold passwords, are [`secrecy::SecretString`]s.
#![forbid(unsafe_code)]

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

mod admission;
mod embed;
pub use admission::AdmissionConfig;
pub use embed::{
    ChannelOrder, DEFAULT_MODEL, EmbedConfig, FusionConfig, RecognizerConfig, RuntimeKind, SHIPPED_MODELS,
};

/// The roles a process can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProcessRole {
    All,
    Embed,
    Ingest,
    Matcher,
    Search,
    Audit,
    Gateway,
}

impl ProcessRole {
    pub const SERVICES: [ProcessRole; 6] = [
        ProcessRole::Embed,
        ProcessRole::Ingest,
        ProcessRole::Matcher,
        ProcessRole::Search,
        ProcessRole::Audit,
        ProcessRole::Gateway,
    ];

    pub fn parse(s: &str) -> Result<Self, ConfigError> {
        match s.trim() {
            "all" => Ok(ProcessRole::All),
            "embed" => Ok(ProcessRole::Embed),
            "ingest" => Ok(ProcessRole::Ingest),
            "matcher" => Ok(ProcessRole::Matcher),
            "search" => Ok(ProcessRole::Search),
            "audit" => Ok(ProcessRole::Audit),
            "gateway" => Ok(ProcessRole::Gateway),
            other => Err(ConfigError::Invalid(format!(
                "unknown role {other:?} (all, embed, ingest, matcher, search, audit, gateway)"
            ))),
        }
    }
}

/// Where the other roles are; unset means "this process" (its own gRPC address).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Endpoints {
    pub ingest: Option<String>,
    pub audit: Option<String>,
    pub embed: Option<String>,
    pub search: Option<String>,
    pub matchers: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MatcherConfig {
    /// `gallery:shard` pairs this matcher holds; empty means every shard of every gallery.
    pub shards: Vec<String>,
    /// How often to look for new change-log entries when no notification arrives.
    pub poll_interval_ms: u64,
    /// Concurrent searches of a shard are gathered for at most this long into one batch, and
    /// only while fewer are queued than recent batches held (a lone search never waits); 0: a
    /// batch is whatever queued while the previous one ran (see docs/benchmarks.md).
    pub batch_wait_us: u64,
    /// ... or until this many queries are waiting.
    pub batch_max_queries: usize,
    /// Threads FAISS may use for one batch of one shard (it splits a batch by query); 0: one per
    /// core (the default). The binary runs OpenMP with `OMP_WAIT_POLICY=PASSIVE` unless told
    /// otherwise, so idle threads sleep between batches instead of spinning against the other
    /// roles (measurements in docs/benchmarks.md).
    pub search_threads: usize,
    /// How often changed shards are written as encrypted snapshots (and once at shutdown);
    /// 0: never (a restart rebuilds every shard from the store).
    pub snapshot_interval_ms: u64,
    /// Where snapshots go [default: DATA_DIR/snapshots].
    pub snapshot_dir: Option<PathBuf>,
}

/// A thread count where 0 means one per core (of the cgroup's CPU quota, where one is set).
pub fn threads_or_cores(threads: usize) -> usize {
    match threads {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        n => n,
    }
}

impl Default for MatcherConfig {
    fn default() -> Self {
        Self {
            shards: Vec::new(),
            poll_interval_ms: 500,
            batch_wait_us: 1_000,
            batch_max_queries: 64,
            search_threads: 0,
            snapshot_interval_ms: 60_000,
            snapshot_dir: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    /// How often subjects whose retention ended are purged.
    pub purge_interval_ms: u64,
    /// Enrolment by photo refuses faces whose overall quality (0..1) is below this.
    pub min_enroll_quality: f32,
    /// How often galleries whose threshold keeps a target FPIR are checked for having doubled
    /// (their threshold is then derived again).
    pub threshold_review_interval_ms: u64,
    /// How long one gallery-store call of a request may take before the request is refused
    /// `UNAVAILABLE`: a store that stops answering (a hung disk, a stopped database) refuses
    /// changes in bounded time, whatever deadline their callers set.
    pub store_timeout_ms: u64,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            purge_interval_ms: 60_000,
            min_enroll_quality: 0.5,
            threshold_review_interval_ms: 300_000,
            store_timeout_ms: 10_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SearchConfig {
    /// Deadline of one shard's answer before another replica is tried.
    pub shard_timeout_ms: u64,
    /// Query budgets per principal (identify and verify count alike).
    pub kiosk_per_minute: u32,
    pub kiosk_per_day: u32,
    pub analyst_per_minute: u32,
    pub analyst_per_day: u32,
    /// Enrollers' subject reads (`GetSubject` answers whether someone is enrolled).
    pub enroller_per_minute: u32,
    pub enroller_per_day: u32,
    /// Analysts see candidates and scores at or above a gallery's threshold minus this (0 to 1);
    /// below it nothing is disclosed, so probes far from every template learn nothing. Raising it
    /// towards 1 turns search answers back into a template oracle (docs/security.md).
    pub candidate_margin: f32,
}

impl Default for SearchConfig {
    fn default() -> Self {
        Self {
            shard_timeout_ms: 2000,
            kiosk_per_minute: 120,
            kiosk_per_day: 20_000,
            analyst_per_minute: 60,
            analyst_per_day: 2_000,
            enroller_per_minute: 600,
            enroller_per_day: 20_000,
            candidate_margin: 0.10,
        }
    }
}

/// Encryption at rest. Outside demo mode the master key must be given, as a file or as
/// `BIOMATCH_MASTER_KEY` (64 hex characters); demo mode creates `DATA_DIR/master.key`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CryptoConfig {
    pub master_key_file: Option<PathBuf>,
    /// The master key being rotated out (or `BIOMATCH_PREVIOUS_MASTER_KEY`): data keys wrapped
    /// under it still open until `biomatch master-key rewrap` has re-wrapped them.
    pub previous_master_key_file: Option<PathBuf>,
    /// Where wrapped gallery data keys are kept; default `DATA_DIR/keys`. Keep it out of
    /// database backups: deleting a gallery destroys its key here.
    pub key_dir: Option<PathBuf>,
}

/// Mutual TLS between roles (and for clients). All three files or none: with them, every role
/// serves TLS and accepts only clients whose certificate chains to `ca_file`, and calls the other
/// roles over TLS with its own certificate.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

impl TlsConfig {
    pub fn enabled(&self) -> bool {
        self.ca_file.is_some() || self.cert_file.is_some() || self.key_file.is_some()
    }
}

/// Token validation. Outside `--role all` demo mode, `public_keys` or `jwks_file`, and
/// `service_key_file`, are required: there is no default key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    pub issuer: String,
    pub audience: String,
    /// Trusted Ed25519 public keys (PEM); each file's name is its key id (`KID.pub.pem`).
    pub public_keys: Vec<PathBuf>,
    /// Trusted keys as a JWKS file (OKP / Ed25519 keys with a `kid`).
    pub jwks_file: Option<PathBuf>,
    /// This process's private key (`KID.key.pem`) for the service tokens it sends to other roles;
    /// its public key must be among the trusted keys, and its kid must be `service-ROLES` for the
    /// roles this process runs (e.g. `service-search`): a process key signs only its own
    /// service identity.
    pub service_key_file: Option<PathBuf>,
    /// Clock skew allowed on `exp`, at most 30 s.
    pub leeway_secs: u64,
    /// Operators' issuers narrowed to some people's roles, by kid (e.g. `lanes = ["kiosk"]`).
    pub key_roles: std::collections::BTreeMap<String, Vec<String>>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            issuer: "biomatch".into(),
            audience: "biomatch".into(),
            public_keys: Vec::new(),
            jwks_file: None,
            service_key_file: None,
            leeway_secs: 30,
            key_roles: Default::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// The log's name: the first line of every checkpoint and the signing key's name.
    pub origin: String,
    /// Ed25519 signing key (hex seed); default `DATA_DIR/audit-signing.key`, created if absent.
    pub signing_key_file: Option<PathBuf>,
    /// How often to sign a checkpoint when new leaves exist.
    pub checkpoint_interval_ms: u64,
    /// How long one group commit may take before its appends are refused `UNAVAILABLE`: a store
    /// that stops answering (a hung disk, a stopped database) refuses searches in bounded time,
    /// whatever deadline their callers set.
    pub commit_timeout_ms: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            origin: "biomatch/audit".into(),
            signing_key_file: None,
            checkpoint_interval_ms: 10_000,
            commit_timeout_ms: 10_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServeConfig {
    pub roles: Vec<ProcessRole>,
    pub data_dir: PathBuf,
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    /// The operator port, where every process (the gateway included) serves `/metrics`,
    /// `/healthz` and `/readyz`; unset: `/metrics` is not served. The gateway's public
    /// `http_addr` serves `/healthz` and `/readyz` only.
    pub metrics_addr: Option<SocketAddr>,
    /// On SIGTERM, how long in-flight requests may take to finish before they are abandoned.
    pub shutdown_grace_ms: u64,
    /// PostgreSQL for the gallery and audit stores; unset means SQLite files in `data_dir`.
    /// Never serialised, so it cannot end up in a dump of the configuration.
    #[serde(skip_serializing)]
    pub database_url: Option<SecretString>,
    /// Redis for state shared between replicas (query budgets); unset keeps it in process.
    /// Never serialised (it may hold a password).
    #[serde(skip_serializing)]
    pub redis_url: Option<SecretString>,
    /// Prefix of every Redis key this cluster writes.
    pub redis_key_prefix: String,
    pub log_json: bool,
    pub endpoints: Endpoints,
    pub matcher: MatcherConfig,
    pub ingest: IngestConfig,
    pub embed: EmbedConfig,
    pub search: SearchConfig,
    pub audit: AuditConfig,
    pub auth: AuthConfig,
    pub crypto: CryptoConfig,
    pub tls: TlsConfig,
    pub admission: AdmissionConfig,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            roles: vec![ProcessRole::All],
            data_dir: PathBuf::from("biomatch-data"),
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 50051)),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            metrics_addr: None,
            shutdown_grace_ms: 20_000,
            database_url: None,
            redis_url: None,
            redis_key_prefix: "biomatch".into(),
            log_json: false,
            endpoints: Endpoints::default(),
            matcher: MatcherConfig::default(),
            ingest: IngestConfig::default(),
            embed: EmbedConfig::default(),
            search: SearchConfig::default(),
            audit: AuditConfig::default(),
            auth: AuthConfig::default(),
            crypto: CryptoConfig::default(),
            tls: TlsConfig::default(),
            admission: AdmissionConfig::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(#[from] Box<figment::Error>),
    #[error("configuration: {0}")]
    Invalid(String),
}

impl ServeConfig {
    /// Defaults, then `file`, then `BIOMATCH__*` variables, then `overrides` (flags that were given).
    pub fn load(file: Option<&Path>, overrides: impl Serialize) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(ServeConfig::default()));
        if let Some(file) = file {
            if !file.exists() {
                return Err(ConfigError::Invalid(format!("config file {} does not exist", file.display())));
            }
            figment = figment.merge(Toml::file(file));
        }
        let config: ServeConfig = figment
            .merge(Env::prefixed("BIOMATCH__").split("__"))
            .merge(Serialized::defaults(overrides))
            .extract()
            .map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.roles.is_empty() {
            return Err(ConfigError::Invalid("at least one role is required".into()));
        }
        if self.roles.contains(&ProcessRole::All) && self.roles.len() > 1 {
            return Err(ConfigError::Invalid("role all runs every role; do not combine it".into()));
        }
        if self.ingest.purge_interval_ms == 0
            || self.ingest.threshold_review_interval_ms == 0
            || self.matcher.poll_interval_ms == 0
            || self.search.shard_timeout_ms == 0
            || self.audit.checkpoint_interval_ms == 0
            || self.audit.commit_timeout_ms == 0
            || self.ingest.store_timeout_ms == 0
        {
            return Err(ConfigError::Invalid("intervals and timeouts must be positive".into()));
        }
        self.matcher_shards()?;
        let t = &self.tls;
        if t.enabled() && (t.ca_file.is_none() || t.cert_file.is_none() || t.key_file.is_none()) {
            return Err(ConfigError::Invalid("tls needs ca_file, cert_file and key_file together".into()));
        }
        if !(0.0..=1.0).contains(&self.search.candidate_margin) {
            return Err(ConfigError::Invalid("search.candidate_margin must be between 0 and 1".into()));
        }
        if self.auth.leeway_secs > 30 {
            return Err(ConfigError::Invalid("auth.leeway_secs must be at most 30".into()));
        }
        if self.audit.origin.is_empty() || self.audit.origin.contains(char::is_whitespace) {
            return Err(ConfigError::Invalid("audit.origin must be non-empty without whitespace".into()));
        }
        Ok(())
    }

    pub fn runs(&self, role: ProcessRole) -> bool {
        self.roles.contains(&ProcessRole::All) || self.roles.contains(&role)
    }

    /// Ingest and matcher seal and open templates: only they read the master key and the key
    /// directory, and open the gallery store (the database). Other roles start without them.
    pub fn seals_templates(&self) -> bool {
        self.runs(ProcessRole::Ingest) || self.runs(ProcessRole::Matcher)
    }

    /// Only the audit role opens the audit store (the database) and reads the checkpoint
    /// signing key.
    pub fn keeps_audit_log(&self) -> bool {
        self.runs(ProcessRole::Audit)
    }

    /// Demo mode: the whole cluster in one process on embedded storage.
    /// The configured roles as written on the command line, joined by `separator`.
    pub fn role_names(&self, separator: &str) -> String {
        self.roles.iter().map(|r| format!("{r:?}").to_lowercase()).collect::<Vec<_>>().join(separator)
    }

    pub fn demo(&self) -> bool {
        self.roles.contains(&ProcessRole::All)
    }

    /// The `gallery:shard` assignment, parsed.
    pub fn matcher_shards(&self) -> Result<Vec<(String, u32)>, ConfigError> {
        self.matcher
            .shards
            .iter()
            .map(|s| {
                let (g, n) = s
                    .rsplit_once(':')
                    .ok_or_else(|| ConfigError::Invalid(format!("shard {s:?} is not gallery:number")))?;
                let n = n
                    .parse()
                    .map_err(|_| ConfigError::Invalid(format!("shard {s:?} is not gallery:number")))?;
                Ok((g.to_owned(), n))
            })
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)]
mod tests;
