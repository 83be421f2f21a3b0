//! `biomatch serve`.

use biomatch_config::{Role, ServeConfig};
use clap::Args;
use serde::Serialize;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Roles to run: all, or a comma-separated list of embed, ingest, matcher, search, audit, gateway.
    #[arg(long = "role", value_delimiter = ',')]
    roles: Vec<String>,
    /// Directory for SQLite stores (embedded default) and local state.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// gRPC listen address [default: 127.0.0.1:50051]; port 0 picks a free port.
    #[arg(long)]
    grpc_addr: Option<String>,
    /// REST listen address of the gateway role [default: 127.0.0.1:8080].
    #[arg(long)]
    http_addr: Option<String>,
    /// The operator port: /metrics, /healthz and /readyz (every role; the gateway's public
    /// --http-addr never serves /metrics).
    #[arg(long)]
    metrics_addr: Option<String>,
    /// PostgreSQL URL for the gallery and audit stores instead of SQLite files.
    #[arg(long, env = "BIOMATCH_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Redis for state shared by replicas (query budgets); default: in process.
    #[arg(long, env = "BIOMATCH_REDIS_URL", hide_env_values = true)]
    redis_url: Option<String>,
    /// TOML configuration file (flags and BIOMATCH__* variables override it).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Shards this matcher holds, as gallery:shard[,gallery:shard...] (gallery `*`: that shard of
    /// every gallery); default all.
    #[arg(long, value_delimiter = ',')]
    shards: Vec<String>,
    #[arg(long)]
    ingest_endpoint: Option<String>,
    #[arg(long)]
    audit_endpoint: Option<String>,
    #[arg(long)]
    embed_endpoint: Option<String>,
    #[arg(long)]
    search_endpoint: Option<String>,
    /// Matcher endpoints the search role fans out to (comma-separated).
    #[arg(long, value_delimiter = ',')]
    matcher_endpoints: Vec<String>,
    /// Trusted token public keys (KID.pub.pem files, comma-separated).
    #[arg(long, value_delimiter = ',')]
    public_keys: Vec<PathBuf>,
    /// Trusted token keys as a JWKS file.
    #[arg(long)]
    jwks_file: Option<PathBuf>,
    /// This process's private key (KID.key.pem) for its calls to other roles.
    #[arg(long)]
    service_key: Option<PathBuf>,
    /// Mutual TLS: the CA every role's certificate chains to, and this process's certificate and key.
    #[arg(long, requires_all = ["tls_cert", "tls_key"])]
    tls_ca: Option<PathBuf>,
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    #[arg(long)]
    tls_key: Option<PathBuf>,
    /// Master key file (64 hex characters) wrapping the galleries' data keys (ingest and matcher).
    #[arg(long)]
    master_key_file: Option<PathBuf>,
    /// The audit log's checkpoint signing key (audit role) [default: DATA_DIR/audit-signing.key].
    #[arg(long)]
    audit_signing_key: Option<PathBuf>,
    /// The face models (scripts/fetch-models.sh puts them in ./models); without it the embed
    /// role refuses photos.
    #[arg(long)]
    model_dir: Option<PathBuf>,
    /// Log JSON lines instead of text.
    #[arg(long)]
    log_json: bool,
}

/// The flags that were given, as a configuration layer.
#[derive(Serialize, Default)]
struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    roles: Option<Vec<Role>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    grpc_addr: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    http_addr: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metrics_addr: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    database_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    redis_url: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    log_json: bool,
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    endpoints: serde_json::Map<String, serde_json::Value>,
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    matcher: serde_json::Map<String, serde_json::Value>,
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    auth: serde_json::Map<String, serde_json::Value>,
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    crypto: serde_json::Map<String, serde_json::Value>,
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    embed: serde_json::Map<String, serde_json::Value>,
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    tls: serde_json::Map<String, serde_json::Value>,
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    audit: serde_json::Map<String, serde_json::Value>,
}

impl ServeArgs {
    fn overrides(self) -> anyhow::Result<Overrides> {
        let roles = if self.roles.is_empty() {
            None
        } else {
            Some(self.roles.iter().map(|r| Role::parse(r)).collect::<Result<Vec<_>, _>>()?)
        };
        let mut endpoints = serde_json::Map::new();
        for (key, value) in [
            ("ingest", self.ingest_endpoint),
            ("audit", self.audit_endpoint),
            ("embed", self.embed_endpoint),
            ("search", self.search_endpoint),
        ] {
            if let Some(v) = value {
                endpoints.insert(key.into(), v.into());
            }
        }
        if !self.matcher_endpoints.is_empty() {
            endpoints.insert("matchers".into(), self.matcher_endpoints.into());
        }
        let mut matcher = serde_json::Map::new();
        if !self.shards.is_empty() {
            matcher.insert("shards".into(), self.shards.into());
        }
        let mut auth = serde_json::Map::new();
        let path = |p: PathBuf| serde_json::Value::from(p.display().to_string());
        if !self.public_keys.is_empty() {
            auth.insert("public_keys".into(), self.public_keys.into_iter().map(path).collect());
        }
        if let Some(p) = self.jwks_file {
            auth.insert("jwks_file".into(), path(p));
        }
        if let Some(p) = self.service_key {
            auth.insert("service_key_file".into(), path(p));
        }
        let mut crypto = serde_json::Map::new();
        if let Some(p) = self.master_key_file {
            crypto.insert("master_key_file".into(), path(p));
        }
        let mut audit = serde_json::Map::new();
        if let Some(p) = self.audit_signing_key {
            audit.insert("signing_key_file".into(), path(p));
        }
        let mut embed = serde_json::Map::new();
        if let Some(p) = self.model_dir {
            embed.insert("model_dir".into(), path(p));
        }
        let mut tls = serde_json::Map::new();
        for (key, value) in
            [("ca_file", self.tls_ca), ("cert_file", self.tls_cert), ("key_file", self.tls_key)]
        {
            if let Some(p) = value {
                tls.insert(key.into(), path(p));
            }
        }
        Ok(Overrides {
            roles,
            data_dir: self.data_dir,
            grpc_addr: self.grpc_addr,
            http_addr: self.http_addr,
            metrics_addr: self.metrics_addr,
            database_url: self.database_url,
            redis_url: self.redis_url,
            log_json: self.log_json,
            endpoints,
            matcher,
            auth,
            crypto,
            embed,
            tls,
            audit,
        })
    }
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let file = args.config.clone();
    let config = ServeConfig::load(file.as_deref(), args.overrides()?)?;
    let format = if config.log_json {
        biomatch_telemetry::LogFormat::Json
    } else {
        biomatch_telemetry::LogFormat::Text
    };
    let telemetry = biomatch_telemetry::init(format, &format!("biomatch-{}", config.role_names("-")))
        .map_err(|e| anyhow::anyhow!(e))?;
    if telemetry.exporting_traces() {
        tracing::info!("exporting traces over OTLP");
    }
    if config.demo() {
        tracing::info!(
            data_dir = %config.data_dir.display(),
            "demo mode: the whole cluster in one process on SQLite files in data_dir"
        );
    }
    let running = crate::serve::start(config).await?;
    shutdown_signal().await;
    tracing::info!("shutting down");
    running.shutdown().await;
    telemetry.shutdown();
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
