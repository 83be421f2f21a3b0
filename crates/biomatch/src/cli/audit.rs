//! `biomatch audit tail|verify`.

mod proofs;

use super::{ClientArgs, rpc_error};
use biomatch_proto::v1::audit_service_client::AuditServiceClient;
use biomatch_proto::v1::{AuditLeaf, QueryAuditRequest};
use clap::{Args, Subcommand};

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Print the newest audit leaves.
    Tail(TailArgs),
    /// Recompute the log from every stored leaf and check it against every signed checkpoint;
    /// exit 0 only when the log is intact, 2 when it was tampered with.
    Verify(proofs::VerifyArgs),
    /// Print the log's public key (hex), its key id and origin.
    Key(proofs::KeyArgs),
    /// Print an inclusion proof of one leaf against the latest signed checkpoint (JSON).
    Prove(proofs::ProveArgs),
    /// Check a proof printed by `audit prove`, offline, against a pinned public key.
    VerifyProof(proofs::VerifyProofArgs),
}

#[derive(Debug, Args)]
pub struct TailArgs {
    /// How many leaves.
    #[arg(long, short = 'n', default_value_t = 20)]
    n: u32,
    #[command(flatten)]
    client: ClientArgs,
}

fn leaf_json(leaf: &AuditLeaf) -> serde_json::Value {
    let record = biomatch_auditlog::AuditRecord::decode(&leaf.leaf).ok();
    serde_json::json!({
        "index": leaf.index,
        "leaf_hash": hex::encode(&leaf.leaf_hash),
        "record": record.map(|r| serde_json::to_value(r).unwrap_or_default()),
    })
}

/// RFC 3339 time of a leaf, to the millisecond.
fn when(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| ms.to_string())
}

fn print_leaf(leaf: &AuditLeaf) {
    match biomatch_auditlog::AuditRecord::decode(&leaf.leaf) {
        Ok(r) => {
            let who = format!("{}({})", r.actor_subject, r.actor_role);
            let what = match (r.candidates.first(), r.subject_ids.len()) {
                (Some(best), _) => {
                    format!("{} candidates, best {} {:.4}", r.candidates.len(), best.subject_id, best.score)
                }
                (None, 0) => String::new(),
                (None, n) => format!("{n} subjects"),
            };
            println!(
                "{:>6}  {}  {:<16} {:<20} {:<12} {:<8} {}",
                leaf.index,
                when(r.time_ms),
                r.operation,
                who,
                r.gallery,
                r.decision,
                what
            );
        }
        Err(_) => println!("{:>6}  (undecodable leaf)", leaf.index),
    }
}

pub async fn run(command: AuditCommand) -> anyhow::Result<()> {
    match command {
        AuditCommand::Tail(a) => {
            let mut client = AuditServiceClient::new(a.client.channel()?);
            let request = QueryAuditRequest { page_size: a.n, descending: true, ..Default::default() };
            let mut leaves =
                client.query(a.client.request(request)?).await.map_err(rpc_error)?.into_inner().leaves;
            leaves.reverse();
            if a.client.json {
                println!("{}", serde_json::Value::Array(leaves.iter().map(leaf_json).collect()));
            } else {
                leaves.iter().for_each(print_leaf);
            }
            Ok(())
        }
        AuditCommand::Verify(a) => proofs::verify(a).await,
        AuditCommand::Key(a) => proofs::key(a).await,
        AuditCommand::Prove(a) => proofs::prove(a).await,
        AuditCommand::VerifyProof(a) => proofs::verify_proof(a),
    }
}
