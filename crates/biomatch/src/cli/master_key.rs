//! `biomatch master-key`: make a master key, and re-wrap the galleries' data keys under a new one.
//!
//! Rotation without downtime (docs/operations.md): generate the new key; roll every role with
//! the new key as `crypto.master_key_file` and the old one as `crypto.previous_master_key_file`;
//! run `rewrap`; roll again without the previous key; destroy the old key.

use anyhow::Context;
use biomatch_crypto::{FileKeyStore, MasterKey};
use clap::{Args, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub enum MasterKeyCommand {
    /// Write a new random master key (64 hex characters, mode 0600); never overwrites a file.
    Generate {
        /// Where to write it.
        file: PathBuf,
    },
    /// Re-wrap every data key still under the previous master key with the current one.
    /// Safe to run again: keys already under the current key are left as they are.
    Rewrap(RewrapArgs),
}

#[derive(Debug, Args)]
pub struct RewrapArgs {
    /// The key store: `crypto.key_dir` (default DATA_DIR/keys).
    #[arg(long)]
    key_dir: PathBuf,
    /// The new master key (or BIOMATCH_MASTER_KEY).
    #[arg(long)]
    master_key_file: Option<PathBuf>,
    /// The master key being rotated out (or BIOMATCH_PREVIOUS_MASTER_KEY).
    #[arg(long)]
    previous_master_key_file: Option<PathBuf>,
}

pub fn run(command: MasterKeyCommand) -> anyhow::Result<()> {
    match command {
        MasterKeyCommand::Generate { file } => {
            anyhow::ensure!(!file.exists(), "{} exists: a master key is never overwritten", file.display());
            MasterKey::load_or_create(&file).with_context(|| format!("writing {}", file.display()))?;
            println!("wrote a new master key to {}", file.display());
        }
        MasterKeyCommand::Rewrap(args) => {
            use crate::identity::master_key;
            let current = master_key(args.master_key_file.as_deref(), "BIOMATCH_MASTER_KEY")?
                .context("the new master key: --master-key-file or BIOMATCH_MASTER_KEY")?;
            let previous =
                master_key(args.previous_master_key_file.as_deref(), "BIOMATCH_PREVIOUS_MASTER_KEY")?
                    .context(
                        "the old master key: --previous-master-key-file or BIOMATCH_PREVIOUS_MASTER_KEY",
                    )?;
            anyhow::ensure!(args.key_dir.is_dir(), "no key store at {}", args.key_dir.display());
            let store = FileKeyStore::new(&args.key_dir, current)?.with_previous(previous);
            let done = store.rewrap_all().context("re-wrapping data keys")?;
            println!(
                "re-wrapped {} data keys; {} were already under the new master key",
                done.rewrapped, done.current
            );
        }
    }
    Ok(())
}
