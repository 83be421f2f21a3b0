//! `biomatch token issue|keygen`.

use crate::cli::gallery::parse_duration;
use anyhow::Context;
use biomatch_auth::{TokenSigner, TokenSpec, keys};
use biomatch_domain::Role;
use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Print a token signed with a private key (or a demo data directory's key).
    Issue(IssueArgs),
    /// Write a new Ed25519 key pair OUT/KID.key.pem (private, 0600) and OUT/KID.pub.pem.
    Keygen(KeygenArgs),
}

#[derive(Debug, Args)]
pub struct IssueArgs {
    /// kiosk, analyst, enroller, auditor, admin or service.
    #[arg(long)]
    role: String,
    /// The token's subject (who).
    #[arg(long)]
    sub: String,
    /// Galleries the token may search (required for kiosks).
    #[arg(long, value_delimiter = ',')]
    galleries: Vec<String>,
    /// Purposes the token may search for (required for kiosks).
    #[arg(long, value_delimiter = ',')]
    purposes: Vec<String>,
    /// Device the token is bound to (kiosks).
    #[arg(long, default_value = "")]
    device: String,
    /// Lifetime, e.g. 15m, 8h.
    #[arg(long, default_value = "15m")]
    ttl: String,
    /// The token is refused after its first use.
    #[arg(long)]
    single_use: bool,
    /// Let the holder search with raw embeddings (scope `vector-probes`): for trusted
    /// integrations only; kiosks and analysts send photos.
    #[arg(long)]
    vector_probes: bool,
    #[arg(long, default_value = "biomatch")]
    issuer: String,
    #[arg(long, default_value = "biomatch")]
    audience: String,
    /// Private key (KID.key.pem).
    #[arg(long, conflicts_with = "data_dir", required_unless_present = "data_dir")]
    key: Option<PathBuf>,
    /// A `--role all` data directory: use its demo key.
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Key id (the files' name).
    #[arg(long)]
    kid: String,
    #[arg(long)]
    out: PathBuf,
}

pub fn run(command: TokenCommand) -> anyhow::Result<()> {
    match command {
        TokenCommand::Issue(a) => {
            let key = match (&a.key, &a.data_dir) {
                (Some(key), _) => key.clone(),
                (None, Some(dir)) => crate::identity::demo_keys(dir)?.0,
                (None, None) => anyhow::bail!("give --key FILE or --data-dir DIR"),
            };
            let signer = TokenSigner::from_file(&key, &a.issuer, &a.audience)?;
            let role: Role = a.role.parse()?;
            let ttl = u64::try_from(parse_duration(&a.ttl)?).context("ttl must be positive")?;
            let mut spec = TokenSpec::new(&a.sub, role, Duration::from_secs(ttl));
            spec.device = a.device;
            spec.galleries = (!a.galleries.is_empty()).then_some(a.galleries);
            spec.purposes = (!a.purposes.is_empty()).then_some(a.purposes);
            spec.single_use = a.single_use;
            spec.vector_probes = a.vector_probes;
            println!("{}", signer.issue(&spec)?);
        }
        TokenCommand::Keygen(a) => {
            let (private, public) = keys::generate(&a.out, &a.kid)?;
            println!("{}\n{}", private.display(), public.display());
        }
    }
    Ok(())
}
