//! Command-line interface: `serve` and the client subcommands that talk gRPC to a cluster.

mod audit;
mod bench;
mod bench_cluster;
mod bench_embed;
mod bench_overload;
mod bench_restart;
mod bench_search;
mod chaos;
mod enroll;
mod eval;
mod gallery;
mod gallery_tune;
mod master_key;
mod search;
mod serve_cmd;
mod token;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use tonic::transport::Channel;

#[derive(Debug, Parser)]
#[command(
    name = "biomatch",
    version,
    about = "Face matching for ports of entry: serve the cluster or talk to it"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one or more roles (`--role all` runs the whole cluster on embedded storage).
    Serve(Box<serve_cmd::ServeArgs>),
    /// Create, list and delete galleries.
    #[command(subcommand)]
    Gallery(gallery::GalleryCommand),
    /// Enroll subjects from a JSON-lines file of vectors.
    Enroll(enroll::EnrollArgs),
    /// Delete one subject from a gallery.
    Delete(enroll::DeleteArgs),
    /// Identify (1:N): who in the gallery is this probe?
    Identify(search::IdentifyArgs),
    /// Verify (1:1): is this probe the enrolled subject?
    Verify(search::VerifyArgs),
    /// Read and verify the audit log.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Development certificates for mutual TLS.
    #[command(subcommand)]
    Certs(CertsCommand),
    /// Issue tokens and make signing keys.
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// Make a master key, and re-wrap the galleries' data keys when rotating it.
    #[command(subcommand)]
    MasterKey(master_key::MasterKeyCommand),
    /// Accuracy of the face pipeline on a directory of labelled photos (LFW layout).
    Eval(eval::EvalArgs),
    /// Benchmarks, printed as tables.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// A seeded fault-injection run of the whole cluster as separate processes, then its checker.
    Chaos(chaos::ChaosArgs),
}

#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// A development CA, one certificate for every role (server and client) and one for clients.
    Dev {
        #[arg(long)]
        out: std::path::PathBuf,
        /// Names the roles are reached by (DNS names or IP addresses).
        #[arg(long, value_delimiter = ',', default_value = "localhost,127.0.0.1")]
        names: Vec<String>,
        /// Kiosk devices to make client certificates for (each kiosk's token names its device).
        #[arg(long, value_delimiter = ',')]
        kiosks: Vec<String>,
    },
}

/// How a client reaches the cluster and who it says it is.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// gRPC endpoint of the cluster.
    #[arg(long, env = "BIOMATCH_ENDPOINT", default_value = "http://127.0.0.1:50051", global = true)]
    pub endpoint: String,
    /// Bearer token (JWT) of the caller. A `--role all` cluster writes an admin token to
    /// DATA_DIR/demo-admin.token; `biomatch token issue` makes others.
    #[arg(long, env = "BIOMATCH_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Mutual TLS to the cluster: its CA, and this client's certificate and key.
    #[arg(long, env = "BIOMATCH_TLS_CA", global = true)]
    pub tls_ca: Option<std::path::PathBuf>,
    #[arg(long, env = "BIOMATCH_TLS_CERT", global = true)]
    pub tls_cert: Option<std::path::PathBuf>,
    #[arg(long, env = "BIOMATCH_TLS_KEY", global = true)]
    pub tls_key: Option<std::path::PathBuf>,
}

impl ClientArgs {
    pub fn channel(&self) -> anyhow::Result<Channel> {
        let tls = match (&self.tls_ca, &self.tls_cert, &self.tls_key) {
            (Some(ca), Some(cert), Some(key)) => Some(biomatch_client::MutualTls::from_files(ca, cert, key)?),
            (None, None, None) => None,
            _ => anyhow::bail!("mutual TLS needs --tls-ca, --tls-cert and --tls-key together"),
        };
        Ok(biomatch_client::channel_with(&self.endpoint, tls.as_ref())?)
    }

    /// A request carrying the caller's token.
    pub fn request<T>(&self, message: T) -> anyhow::Result<tonic::Request<T>> {
        let token = self.token.as_deref().map(str::trim).filter(|t| !t.is_empty()).context(
            "no token: pass --token or set BIOMATCH_TOKEN (a demo cluster writes one: \
             export BIOMATCH_TOKEN=$(cat DATA_DIR/demo-admin.token))",
        )?;
        Ok(biomatch_client::request(message, token))
    }
}

/// A gRPC failure as one line: `NOT_FOUND: gallery x not found`.
pub fn rpc_error(status: tonic::Status) -> anyhow::Error {
    let code = biomatch_proto::code_name(status.code());
    if status.code() == tonic::Code::Unavailable && status.message().contains("transport") {
        return anyhow::anyhow!("{code}: cannot reach the cluster ({})", status.message());
    }
    anyhow::anyhow!("{code}: {}", status.message())
}

/// A failure that has its own exit status (e.g. a tampered audit log).
#[derive(Debug)]
pub struct ExitWith(pub u8, pub String);

impl std::fmt::Display for ExitWith {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.1)
    }
}

impl std::error::Error for ExitWith {}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve_cmd::run(*args).await,
        Command::Gallery(cmd) => gallery::run(cmd).await,
        Command::Enroll(args) => enroll::run(args).await,
        Command::Delete(args) => enroll::delete(args).await,
        Command::Identify(args) => search::identify(args).await,
        Command::Verify(args) => search::verify(args).await,
        Command::Audit(cmd) => audit::run(cmd).await,
        Command::Bench(cmd) => bench::run(cmd).await,
        Command::Chaos(args) => chaos::run(args).await,
        Command::Token(cmd) => token::run(cmd),
        Command::Eval(args) => eval::run(args).await,
        Command::MasterKey(cmd) => master_key::run(cmd),
        Command::Certs(CertsCommand::Dev { out, names, kiosks }) => {
            let certs = crate::certs::dev(&out, &names, &kiosks)?;
            println!("CA       {}", certs.ca.display());
            println!("node     {} {}", certs.node_cert.display(), certs.node_key.display());
            println!("client   {} {}", certs.client_cert.display(), certs.client_key.display());
            for (device, cert, key) in &certs.kiosks {
                println!("kiosk    {device}: {} {}", cert.display(), key.display());
            }
            Ok(())
        }
    }
}
