//! `biomatch audit tail|verify`.

use super::{ClientArgs, ExitWith, rpc_error};
use biomatch_auditlog::{StoredLeaf, Verifier};
use biomatch_proto::v1::audit_service_client::AuditServiceClient;
use biomatch_proto::v1::{AuditLeaf, ListLeavesRequest, QueryAuditRequest};
use clap::{Args, Subcommand};

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Print the newest audit leaves.
    Tail(TailArgs),
    /// Recompute the hash chain over every leaf; exit 0 only when the log is intact.
    Verify(VerifyArgs),
}

#[derive(Debug, Args)]
pub struct TailArgs {
    /// How many leaves.
    #[arg(long, short = 'n', default_value_t = 20)]
    n: u32,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
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
        AuditCommand::Verify(a) => verify(&a.client).await,
    }
}

async fn verify(client_args: &ClientArgs) -> anyhow::Result<()> {
    let mut client = AuditServiceClient::new(client_args.channel()?);
    let mut verifier = Verifier::default();
    let mut size = 0;
    loop {
        let request = ListLeavesRequest { start: verifier.verified(), count: 1000 };
        let page = client.list_leaves(client_args.request(request)?).await.map_err(rpc_error)?.into_inner();
        if size == 0 {
            size = page.tree_size;
        }
        if page.leaves.is_empty() {
            break;
        }
        for leaf in page.leaves {
            let stored = StoredLeaf {
                index: leaf.index,
                leaf: leaf.leaf,
                leaf_hash: leaf.leaf_hash,
                chain_hash: leaf.chain_hash,
            };
            verifier.push(&stored).map_err(|e| ExitWith(2, format!("audit log TAMPERED: {e}")))?;
        }
    }
    if verifier.verified() < size {
        return Err(ExitWith(
            2,
            format!(
                "audit log TAMPERED: {size} leaves counted but only {} form a chain",
                verifier.verified()
            ),
        )
        .into());
    }
    if client_args.json {
        println!(
            "{}",
            serde_json::json!({"intact": true, "leaves": verifier.verified(), "head": hex::encode(verifier.head())})
        );
    } else {
        println!(
            "audit log intact: {} leaves, chain head {}",
            verifier.verified(),
            hex::encode(verifier.head())
        );
    }
    Ok(())
}
