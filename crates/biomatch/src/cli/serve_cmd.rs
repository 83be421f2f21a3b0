//! `biomatch serve`.

use biomatch_config::{ProcessRole, ServeConfig};
use clap::Args;
use serde::Serialize;
use std::path::PathBuf;

/// Flags are declared once, each under the configuration key it sets: the struct serialises to
/// a configuration layer (flags not given are left out) merged over the file and the
/// `BIOMATCH__*` variables.
#[derive(Debug, Args, Serialize)]
pub struct ServeArgs {
    /// Roles to run: all, or a comma-separated list of embed, ingest, matcher, search, audit, gateway.
    #[arg(long = "role", value_delimiter = ',', value_parser = ProcessRole::parse)]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    roles: Vec<ProcessRole>,
    /// Directory for SQLite stores (embedded default) and local state.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    data_dir: Option<PathBuf>,
    /// gRPC listen address [default: 127.0.0.1:50051]; port 0 picks a free port.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    grpc_addr: Option<String>,
    /// REST listen address of the gateway role [default: 127.0.0.1:8080].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    http_addr: Option<String>,
    /// The operator port: /metrics, /healthz and /readyz (every role; the gateway's public
    /// --http-addr never serves /metrics).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    metrics_addr: Option<String>,
    /// PostgreSQL URL for the gallery and audit stores instead of SQLite files.
    #[arg(long, env = "BIOMATCH_DATABASE_URL", hide_env_values = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    database_url: Option<String>,
    /// Redis for state shared by replicas (query budgets); default: in process.
    #[arg(long, env = "BIOMATCH_REDIS_URL", hide_env_values = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    redis_url: Option<String>,
    /// TOML configuration file (flags and BIOMATCH__* variables override it).
    #[arg(long)]
    #[serde(skip)]
    config: Option<PathBuf>,
    /// Log JSON lines instead of text.
    #[arg(long)]
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    log_json: bool,
    #[command(flatten)]
    endpoints: EndpointFlags,
    #[command(flatten)]
    matcher: MatcherFlags,
    #[command(flatten)]
    auth: AuthFlags,
    #[command(flatten)]
    tls: TlsFlags,
    #[command(flatten)]
    crypto: CryptoFlags,
    #[command(flatten)]
    audit: AuditFlags,
    #[command(flatten)]
    embed: EmbedFlags,
}

#[derive(Debug, Args, Serialize)]
struct EndpointFlags {
    #[arg(long = "ingest-endpoint")]
    #[serde(skip_serializing_if = "Option::is_none")]
    ingest: Option<String>,
    #[arg(long = "audit-endpoint")]
    #[serde(skip_serializing_if = "Option::is_none")]
    audit: Option<String>,
    #[arg(long = "embed-endpoint")]
    #[serde(skip_serializing_if = "Option::is_none")]
    embed: Option<String>,
    #[arg(long = "search-endpoint")]
    #[serde(skip_serializing_if = "Option::is_none")]
    search: Option<String>,
    /// Matcher endpoints the search role fans out to (comma-separated).
    #[arg(long = "matcher-endpoints", value_delimiter = ',')]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    matchers: Vec<String>,
}

#[derive(Debug, Args, Serialize)]
struct MatcherFlags {
    /// Shards this matcher holds, as gallery:shard[,gallery:shard...] (gallery `*`: that shard of
    /// every gallery); default all.
    #[arg(long, value_delimiter = ',')]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    shards: Vec<String>,
}

#[derive(Debug, Args, Serialize)]
struct AuthFlags {
    /// Trusted token public keys (KID.pub.pem files, comma-separated).
    #[arg(long, value_delimiter = ',')]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    public_keys: Vec<PathBuf>,
    /// Trusted token keys as a JWKS file.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    jwks_file: Option<PathBuf>,
    /// This process's private key (KID.key.pem) for its calls to other roles.
    #[arg(long = "service-key")]
    #[serde(skip_serializing_if = "Option::is_none")]
    service_key_file: Option<PathBuf>,
}

#[derive(Debug, Args, Serialize)]
struct TlsFlags {
    /// Mutual TLS: the CA every role's certificate chains to, and this process's certificate and key.
    #[arg(long = "tls-ca", requires_all = ["cert_file", "key_file"])]
    #[serde(skip_serializing_if = "Option::is_none")]
    ca_file: Option<PathBuf>,
    #[arg(long = "tls-cert")]
    #[serde(skip_serializing_if = "Option::is_none")]
    cert_file: Option<PathBuf>,
    #[arg(long = "tls-key")]
    #[serde(skip_serializing_if = "Option::is_none")]
    key_file: Option<PathBuf>,
}

#[derive(Debug, Args, Serialize)]
struct CryptoFlags {
    /// Master key file (64 hex characters) wrapping the galleries' data keys (ingest and matcher).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    master_key_file: Option<PathBuf>,
}

#[derive(Debug, Args, Serialize)]
struct AuditFlags {
    /// The audit log's checkpoint signing key (audit role) [default: DATA_DIR/audit-signing.key].
    #[arg(long = "audit-signing-key")]
    #[serde(skip_serializing_if = "Option::is_none")]
    signing_key_file: Option<PathBuf>,
}

#[derive(Debug, Args, Serialize)]
struct EmbedFlags {
    /// The face models (scripts/fetch-models.sh puts them in ./models); without it the embed
    /// role refuses photos.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    model_dir: Option<PathBuf>,
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let config = ServeConfig::load(args.config.as_deref(), &args)?;
    let format = if config.log_json {
        biomatch_telemetry::LogFormat::Json
    } else {
        biomatch_telemetry::LogFormat::Text
    };
    let telemetry = biomatch_telemetry::init(format, &format!("biomatch-{}", config.role_names("-")))?;
    biomatch_telemetry::install_panic_hook();
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
