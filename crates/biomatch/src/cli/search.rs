//! `biomatch identify` and `biomatch verify`.

use super::{ClientArgs, rpc_error};
use anyhow::Context;
use biomatch_proto::v1::search_service_client::SearchServiceClient;
use biomatch_proto::v1::{Embedding, IdentifyRequest, Probe, VerifyRequest, probe};
use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// A file holding one JSON array of floats.
    #[arg(long, conflicts_with = "image", required_unless_present = "image")]
    vector: Option<PathBuf>,
    /// A photo (needs the face pipeline).
    #[arg(long)]
    image: Option<PathBuf>,
}

impl ProbeArgs {
    fn probe(&self) -> anyhow::Result<Probe> {
        let kind = match (&self.vector, &self.image) {
            (Some(path), _) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                let values: Vec<f32> = serde_json::from_str(&text)
                    .with_context(|| format!("{} must hold one JSON array of numbers", path.display()))?;
                probe::Kind::Embedding(Embedding { values, ..Default::default() })
            }
            (None, Some(path)) => probe::Kind::Image(
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?,
            ),
            (None, None) => anyhow::bail!("give --vector FILE or --image PATH"),
        };
        Ok(Probe { kind: Some(kind) })
    }
}

#[derive(Debug, Args)]
pub struct IdentifyArgs {
    #[arg(long)]
    gallery: String,
    #[command(flatten)]
    probe: ProbeArgs,
    /// Number of candidates (default: the gallery's).
    #[arg(long, default_value_t = 0)]
    k: u32,
    /// Override the gallery's threshold for this search.
    #[arg(long)]
    threshold: Option<f32>,
    /// Purpose code of the search.
    #[arg(long, default_value = "")]
    purpose: String,
    /// Case or trip reference.
    #[arg(long, default_value = "")]
    case_ref: String,
    /// Answer even if some shards are unreachable.
    #[arg(long)]
    allow_partial: bool,
    /// Wait until the matchers have applied the change log up to here.
    #[arg(long, default_value_t = 0)]
    min_change_seq: u64,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[arg(long)]
    gallery: String,
    #[arg(long)]
    subject: String,
    #[command(flatten)]
    probe: ProbeArgs,
    #[arg(long)]
    threshold: Option<f32>,
    #[arg(long, default_value = "")]
    purpose: String,
    #[arg(long, default_value = "")]
    case_ref: String,
    #[command(flatten)]
    client: ClientArgs,
}

pub async fn identify(args: IdentifyArgs) -> anyhow::Result<()> {
    let request = IdentifyRequest {
        gallery: args.gallery,
        probe: Some(args.probe.probe()?),
        k: args.k,
        threshold: args.threshold,
        purpose: args.purpose,
        case_ref: args.case_ref,
        allow_partial: args.allow_partial,
        min_change_seq: args.min_change_seq,
    };
    let mut client = SearchServiceClient::new(args.client.channel()?);
    let r = client.identify(args.client.request(request)?).await.map_err(rpc_error)?.into_inner();
    let decision = biomatch_proto::decision_from_proto(r.decision()).as_str();
    if args.client.json {
        // The REST API's JSON, field for field.
        println!("{}", serde_json::to_string(&biomatch_gateway::IdentifyJson::from(r))?);
        return Ok(());
    }
    println!("decision: {decision} (threshold {:.3})", r.threshold);
    if !r.mate_subject_id.is_empty() {
        println!("mate: {}", r.mate_subject_id);
    }
    if let Some(q) = &r.probe_quality {
        let issues = if q.issues.is_empty() { "no issues".to_owned() } else { q.issues.join("; ") };
        println!("probe face quality {:.2} ({issues})", q.overall);
    }
    if r.partial {
        println!("PARTIAL: shards {:?} did not answer", r.missing_shards);
    }
    if r.candidates.is_empty() {
        // A kiosk is told the mate only; others see the candidates at or above the floor.
        println!(
            "no candidates listed (candidate floor {:.3}; kiosks are told the mate only)",
            r.candidate_floor
        );
    } else {
        println!("{:<5} {:<40} {:>8}", "rank", "subject", "score");
        for c in &r.candidates {
            println!("{:<5} {:<40} {:>8.4}", c.rank, c.subject_id, c.score);
        }
    }
    println!("search {} (audit leaf {})", r.search_id, r.audit_leaf_index);
    Ok(())
}

pub async fn verify(args: VerifyArgs) -> anyhow::Result<()> {
    let request = VerifyRequest {
        gallery: args.gallery,
        subject_id: args.subject.clone(),
        probe: Some(args.probe.probe()?),
        threshold: args.threshold,
        purpose: args.purpose,
        case_ref: args.case_ref,
        min_change_seq: 0,
    };
    let mut client = SearchServiceClient::new(args.client.channel()?);
    let r = client.verify(args.client.request(request)?).await.map_err(rpc_error)?.into_inner();
    let decision = biomatch_proto::decision_from_proto(r.decision()).as_str();
    if args.client.json {
        println!(
            "{}",
            serde_json::json!({
                "decision": decision,
                "subject_id": args.subject,
                "score": r.score,
                "threshold": r.threshold,
                "verification_id": r.verification_id,
                "audit_leaf_index": r.audit_leaf_index,
            })
        );
    } else {
        let verdict = if decision == "mate" { "MATCH" } else { "NO MATCH" };
        let score = r.score.map_or_else(|| "not disclosed".to_owned(), |s| format!("{s:.4}"));
        println!("{verdict}: subject {} score {score} (threshold {:.3})", args.subject, r.threshold);
        println!("verification {} (audit leaf {})", r.verification_id, r.audit_leaf_index);
    }
    Ok(())
}
