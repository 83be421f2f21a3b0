//! `biomatch audit verify|key|prove|verify-proof`: checking the log as an outsider would.

use crate::cli::{ClientArgs, ExitWith, rpc_error};
use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use biomatch_auditlog::checkpoint::{self, Checkpoint};
use biomatch_auditlog::intents::OpenIntents;
use biomatch_auditlog::merkle::{Frontier, Hash, verify_inclusion};
use biomatch_auditlog::{AuditRecord, StoredLeaf, Verifier};
use biomatch_proto::v1::audit_service_client::AuditServiceClient;
use biomatch_proto::v1::{
    GetCheckpointRequest, GetPublicKeyRequest, InclusionProofRequest, ListCheckpointsRequest,
    ListLeavesRequest,
};
use clap::Args;
use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use tonic::transport::Channel;

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The log's public key (64 hex characters); default: ask the server (weaker: trust on first use).
    #[arg(long)]
    public_key: Option<String>,
    /// Exit with status 3 when a change was announced (intent leaf) without an outcome leaf.
    #[arg(long)]
    strict: bool,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct KeyArgs {
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct ProveArgs {
    /// Leaf index.
    #[arg(long)]
    leaf: u64,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct VerifyProofArgs {
    /// A file written from `biomatch audit prove`.
    proof: PathBuf,
    /// The log's public key (64 hex characters), obtained out of band.
    #[arg(long)]
    public_key: String,
}

/// What `audit prove` prints and `audit verify-proof` checks.
#[derive(Debug, Serialize, Deserialize)]
struct ProofFile {
    leaf_index: u64,
    /// The leaf's canonical bytes, base64.
    leaf: String,
    tree_size: u64,
    /// Hex hashes, leaf to root.
    proof: Vec<String>,
    /// The signed checkpoint the proof leads to.
    checkpoint: String,
}

fn tampered(message: String) -> anyhow::Error {
    ExitWith(2, format!("audit log TAMPERED: {message}")).into()
}

fn parse_key(hex_key: &str) -> anyhow::Result<VerifyingKey> {
    let bytes: [u8; 32] = hex::decode(hex_key.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .context("public key must be 64 hex characters")?;
    VerifyingKey::from_bytes(&bytes).context("not an Ed25519 public key")
}

async fn server_key(
    client: &mut AuditServiceClient<Channel>,
    args: &ClientArgs,
) -> anyhow::Result<VerifyingKey> {
    let key =
        client.get_public_key(args.request(GetPublicKeyRequest {})?).await.map_err(rpc_error)?.into_inner();
    parse_key(&hex::encode(key.key))
}

pub async fn key(args: KeyArgs) -> anyhow::Result<()> {
    let mut client = AuditServiceClient::new(args.client.channel()?);
    let key = client
        .get_public_key(args.client.request(GetPublicKeyRequest {})?)
        .await
        .map_err(rpc_error)?
        .into_inner();
    if args.client.json {
        let json = serde_json::json!({"algorithm": key.algorithm, "public_key": hex::encode(&key.key), "key_id": key.key_id, "origin": key.origin});
        println!("{json}");
    } else {
        println!(
            "{}\t{}\tkey id {}\torigin {}",
            key.algorithm,
            hex::encode(&key.key),
            key.key_id,
            key.origin
        );
    }
    Ok(())
}

/// Streams every leaf: checks each one (index, hash, encoding, chain), recomputes the Merkle root
/// at every signed checkpoint's size and compares. Each page read is itself an `audit_read` leaf,
/// so the walk ends at the log's size when its last page was read.
pub async fn verify(args: VerifyArgs) -> anyhow::Result<()> {
    let mut client = AuditServiceClient::new(args.client.channel()?);
    let key = match &args.public_key {
        Some(k) => parse_key(k)?,
        None => server_key(&mut client, &args.client).await?,
    };
    let mut checkpoints: Vec<Checkpoint> = Vec::new();
    loop {
        let after_size = checkpoints.last().map_or(0, |c| c.size);
        let page = client
            .list_checkpoints(args.client.request(ListCheckpointsRequest { after_size, count: 1000 })?)
            .await
            .map_err(rpc_error)?
            .into_inner();
        if page.checkpoints.is_empty() {
            break;
        }
        for c in page.checkpoints {
            let opened = checkpoint::open(&c.note, &key)
                .map_err(|e| tampered(format!("checkpoint at size {}: {e}", c.tree_size)))?;
            checkpoints.push(opened);
        }
    }
    let mut verifier = Verifier::default();
    let mut frontier = Frontier::default();
    let mut intents = OpenIntents::default();
    let mut pending = checkpoints.iter().peekable();
    let check = |frontier: &Frontier, pending: &mut std::iter::Peekable<std::slice::Iter<'_, Checkpoint>>| {
        while let Some(c) = pending.peek().filter(|c| c.size == frontier.size()) {
            if frontier.root() != c.root {
                return Err(tampered(format!(
                    "the first {} leaves do not hash to the root signed at that size (a leaf was rewritten with its hashes)",
                    c.size
                )));
            }
            pending.next();
        }
        Ok(())
    };
    check(&frontier, &mut pending)?;
    loop {
        let request = ListLeavesRequest { start: verifier.verified(), count: 1000 };
        let page = client.list_leaves(args.client.request(request)?).await.map_err(rpc_error)?.into_inner();
        // Each page is itself an audit_read leaf: stop at the size the page was read at, or this
        // loop would chase its own reads.
        let at_end =
            page.leaves.is_empty() || verifier.verified() + page.leaves.len() as u64 >= page.tree_size;
        for leaf in page.leaves {
            let stored = StoredLeaf {
                index: leaf.index,
                leaf: leaf.leaf,
                leaf_hash: leaf.leaf_hash,
                chain_hash: leaf.chain_hash,
            };
            verifier.push(&stored).map_err(|e| tampered(e.to_string()))?;
            // Read from the hashed bytes, not from the server's decoding of them.
            let record = AuditRecord::decode(&stored.leaf).map_err(|e| tampered(e.to_string()))?;
            intents.push(stored.index, &record);
            let hash: Hash =
                stored.leaf_hash.as_slice().try_into().map_err(|_| tampered("bad leaf hash".into()))?;
            frontier.push(hash);
            check(&frontier, &mut pending)?;
        }
        if at_end {
            break;
        }
    }
    if let Some(c) = pending.next() {
        return Err(tampered(format!(
            "a checkpoint was signed at size {} but the log holds only {} leaves (leaves were dropped)",
            c.size,
            frontier.size()
        )));
    }
    let root = hex::encode(frontier.root());
    let open = intents.open();
    if args.client.json {
        let open: Vec<_> = open
            .iter()
            .map(|i| serde_json::json!({"leaf": i.index, "operation": i.operation, "gallery": i.gallery, "request_id": i.request_id}))
            .collect();
        let json = serde_json::json!({"intact": true, "leaves": frontier.size(), "root": root, "checkpoints": checkpoints.len(), "open_intents": open});
        println!("{json}");
    } else {
        println!(
            "audit log intact: {} leaves, root {root}, consistent with {} signed checkpoints",
            frontier.size(),
            checkpoints.len()
        );
        if !open.is_empty() {
            println!(
                "{} change(s) announced without an outcome (attempted, maybe made: check the store; one in flight right now also shows here):",
                open.len()
            );
            for i in &open {
                println!("  leaf {}\t{}\t{}\trequest {}", i.index, i.operation, i.gallery, i.request_id);
            }
        }
    }
    if args.strict && !open.is_empty() {
        return Err(ExitWith(3, format!("{} change(s) announced without an outcome", open.len())).into());
    }
    Ok(())
}

pub async fn prove(args: ProveArgs) -> anyhow::Result<()> {
    let mut client = AuditServiceClient::new(args.client.channel()?);
    let checkpoint = client
        .get_checkpoint(args.client.request(GetCheckpointRequest { sign_now: true })?)
        .await
        .map_err(rpc_error)?
        .into_inner();
    let proof = client
        .get_inclusion_proof(
            args.client
                .request(InclusionProofRequest { leaf_index: args.leaf, tree_size: checkpoint.tree_size })?,
        )
        .await
        .map_err(rpc_error)?
        .into_inner();
    let leaf = client
        .list_leaves(args.client.request(ListLeavesRequest { start: args.leaf, count: 1 })?)
        .await
        .map_err(rpc_error)?
        .into_inner()
        .leaves
        .into_iter()
        .next()
        .filter(|l| l.index == args.leaf)
        .with_context(|| format!("leaf {} does not exist", args.leaf))?;
    let file = ProofFile {
        leaf_index: args.leaf,
        leaf: B64.encode(&leaf.leaf),
        tree_size: proof.tree_size,
        proof: proof.hashes.iter().map(hex::encode).collect(),
        checkpoint: checkpoint.note,
    };
    println!("{}", serde_json::to_string_pretty(&file)?);
    Ok(())
}

/// Why a proof file does not show that its leaf is in the log.
#[derive(Debug)]
pub(crate) enum ProofFileError {
    /// Not the JSON that `biomatch audit prove` writes.
    Unreadable(serde_json::Error),
    /// A proof that does not hold, and which check it failed.
    Invalid(String),
}

/// What a valid proof file shows: this leaf is in the log of the signed checkpoint.
#[derive(Debug, PartialEq)]
pub(crate) struct Proven {
    pub(crate) leaf_index: u64,
    pub(crate) leaf_hash: Hash,
    pub(crate) checkpoint: Checkpoint,
}

/// Checks a proof file against the log's key. The size and root come from the signed checkpoint
/// only: the file's own `tree_size` must agree with it.
pub(crate) fn check_proof_file(text: &str, key: &VerifyingKey) -> Result<Proven, ProofFileError> {
    let file: ProofFile = serde_json::from_str(text).map_err(ProofFileError::Unreadable)?;
    let invalid = ProofFileError::Invalid;
    let checkpoint = checkpoint::open(&file.checkpoint, key).map_err(|e| invalid(e.to_string()))?;
    if checkpoint.size != file.tree_size {
        return Err(invalid(format!(
            "proof is for size {}, the checkpoint for {}",
            file.tree_size, checkpoint.size
        )));
    }
    let leaf = B64.decode(&file.leaf).map_err(|_| invalid("leaf is not base64".into()))?;
    let hashes: Vec<Hash> = file
        .proof
        .iter()
        .map(|h| hex::decode(h).ok().and_then(|b| b.try_into().ok()))
        .collect::<Option<_>>()
        .ok_or_else(|| invalid("proof hashes must be 32-byte hex".into()))?;
    let leaf_hash = biomatch_auditlog::leaf_hash(&leaf);
    verify_inclusion(file.leaf_index, checkpoint.size, &leaf_hash, &hashes, &checkpoint.root)
        .map_err(|e| invalid(e.to_string()))?;
    Ok(Proven { leaf_index: file.leaf_index, leaf_hash, checkpoint })
}

pub fn verify_proof(args: VerifyProofArgs) -> anyhow::Result<()> {
    let key = parse_key(&args.public_key)?;
    let text = std::fs::read_to_string(&args.proof)
        .with_context(|| format!("cannot read {}", args.proof.display()))?;
    let Proven { leaf_index, checkpoint, .. } = check_proof_file(&text, &key).map_err(|e| match e {
        ProofFileError::Unreadable(e) => {
            anyhow::Error::new(e).context("not a proof written by `biomatch audit prove`")
        }
        ProofFileError::Invalid(m) => ExitWith(2, format!("proof INVALID: {m}")).into(),
    })?;
    println!(
        "proof valid: leaf {} is in the log {} of {} leaves, signed by key {}",
        leaf_index,
        checkpoint.origin,
        checkpoint.size,
        hex::encode(checkpoint::key_id(&checkpoint.origin, &key))
    );
    Ok(())
}

#[cfg(test)]
#[path = "proofs_tests.rs"]
mod tests;
