//! `biomatch gallery create|list|set-threshold|tune|delete`. A threshold is fixed (`--threshold`)
//! or kept at a target FPIR as the gallery grows (`--target-fpir`, read from the model's impostor
//! distribution: the one the cluster ships, or `--impostor-tail FILE` from `biomatch eval`).

use super::{ClientArgs, rpc_error};
use anyhow::Context;
use biomatch_domain::IndexKind;
use biomatch_proto::v1::ingest_service_client::IngestServiceClient;
use biomatch_proto::v1::{
    CreateGalleryRequest, DeleteGalleryRequest, Gallery, ListGalleriesRequest, SetThresholdRequest,
    ThresholdPolicy,
};
use clap::{Args, Subcommand};

#[derive(Debug, Subcommand)]
pub enum GalleryCommand {
    /// Create a gallery.
    Create(CreateArgs),
    /// List galleries with their sizes.
    List(ClientOnly),
    /// Set a gallery's decision threshold (`biomatch eval --target-fmr` calibrates one).
    SetThreshold(SetThresholdArgs),
    /// Choose the search settings of a gallery's trained shards from its own data.
    Tune(super::gallery_tune::TuneArgs),
    /// Delete a gallery and every template in it.
    Delete(DeleteArgs),
}

#[derive(Debug, Args)]
pub struct SetThresholdArgs {
    name: String,
    /// Cosine similarity at or above which a candidate is a mate (ends a threshold policy).
    #[arg(long, allow_negative_numbers = true, required_unless_present = "target_fpir")]
    threshold: Option<f32>,
    #[command(flatten)]
    policy: PolicyArgs,
    /// Why, for the audit record.
    #[arg(long)]
    reason: String,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct ClientOnly {
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    name: String,
    /// Template dimension, e.g. 128 or 512.
    #[arg(long)]
    dim: u32,
    /// Number of shards (subjects are spread by a stable hash of their id).
    #[arg(long, default_value_t = 1)]
    shards: u32,
    /// Index kind: flat (exact), hnsw, ivf_flat, ivf_sq8, ivf_pq, pq_rerank or ivf_rerank.
    #[arg(long, default_value = "flat")]
    index: IndexKind,
    /// Templates a shard of an IVF or re-rank kind holds before it trains (0: the default).
    #[arg(long, default_value_t = 0)]
    train_threshold: u32,
    /// Cosine similarity at or above which a candidate is a mate.
    #[arg(long, conflicts_with = "target_fpir")]
    threshold: Option<f32>,
    #[command(flatten)]
    policy: PolicyArgs,
    /// Purpose codes this gallery may be searched for (comma-separated); empty allows any.
    #[arg(long, value_delimiter = ',')]
    purposes: Vec<String>,
    /// Time to live of enrolled subjects, e.g. 12h, 30d, 5y; 0 for none.
    #[arg(long, default_value = "0")]
    retention: String,
    /// Model id of the templates (vectors computed outside the cluster by default).
    #[arg(long, default_value = "external")]
    model: String,
    /// Model version of the templates (empty: whichever version of the model is in use).
    #[arg(long, default_value = "")]
    model_version: String,
    /// Default number of candidates.
    #[arg(long, default_value_t = 10)]
    k: u32,
    /// Makes retrying this command safe: run again with the same key and options, it answers
    /// the gallery already made (and records the outcome an interrupted attempt missed).
    #[arg(long, default_value = "")]
    idempotency_key: String,
    #[command(flatten)]
    client: ClientArgs,
}

/// A threshold kept at a target FPIR as the gallery grows.
#[derive(Debug, Args)]
pub struct PolicyArgs {
    /// Derive the threshold from this false-positive identification rate (e.g. 1e-3) and the
    /// gallery's size, and again whenever the gallery has doubled.
    #[arg(long, conflicts_with = "threshold")]
    target_fpir: Option<f64>,
    /// The model's impostor distribution (`biomatch eval --impostor-tail-out FILE`); default:
    /// the one the cluster ships for the gallery's model.
    #[arg(long, requires = "target_fpir")]
    impostor_tail: Option<std::path::PathBuf>,
}

impl PolicyArgs {
    fn policy(&self) -> anyhow::Result<Option<ThresholdPolicy>> {
        let Some(target_fpir) = self.target_fpir else { return Ok(None) };
        let impostor = match &self.impostor_tail {
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
                let tail: biomatch_domain::ImpostorTail = serde_json::from_str(&text)
                    .with_context(|| format!("{} is not an impostor tail", path.display()))?;
                Some(biomatch_proto::impostor_tail_to_proto(&tail))
            }
            None => None,
        };
        Ok(Some(ThresholdPolicy { target_fpir, impostor, ..Default::default() }))
    }
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    name: String,
    #[command(flatten)]
    client: ClientArgs,
}

/// "90", "90s", "15m", "12h", "30d", "5y" to seconds.
pub fn parse_duration(s: &str) -> anyhow::Result<i64> {
    let s = s.trim();
    let (number, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: i64 = number.parse().with_context(|| format!("invalid duration {s:?}"))?;
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "y" => 365 * 86_400,
        _ => anyhow::bail!("invalid duration {s:?}: use s, m, h, d or y"),
    };
    n.checked_mul(scale).context("duration too long")
}

/// The threshold as listed: its value and version, and the policy it follows if any.
fn threshold_column(g: &Gallery) -> String {
    let fixed = format!("threshold={:.4} (v{})", g.threshold, g.threshold_version);
    match &g.threshold_policy {
        Some(p) => format!(
            "{fixed} for FPIR {:e} at {} templates (FMR {:.1e}{})",
            p.target_fpir,
            p.templates,
            p.required_fmr,
            match (p.extrapolated, p.unattainable) {
                (_, true) => ", UNATTAINABLE",
                (true, false) => ", extrapolated",
                (false, false) => "",
            }
        ),
        None => fixed,
    }
}

fn print_gallery(g: &Gallery) {
    let retention = g.retention.as_ref().map_or(0, |d| d.seconds);
    println!(
        "{}\tdim={}\tshards={}\tsubjects={}\ttemplates={}\t{}\tmodel={}\tretention={}s\tpurposes={}\t{}",
        g.name,
        g.dimension,
        g.shard_count,
        g.subject_count,
        g.template_count,
        threshold_column(g),
        g.model_id,
        retention,
        if g.allowed_purposes.is_empty() { "any".to_owned() } else { g.allowed_purposes.join(",") },
        super::gallery_tune::tuning_column(g.tuning.as_ref()),
    );
}

fn gallery_json(g: &Gallery) -> serde_json::Value {
    serde_json::json!({
        "name": g.name,
        "dimension": g.dimension,
        "shards": g.shard_count,
        "subjects": g.subject_count,
        "templates": g.template_count,
        "threshold": g.threshold,
        "threshold_version": g.threshold_version,
        "model_id": g.model_id,
        "allowed_purposes": g.allowed_purposes,
        "retention_seconds": g.retention.as_ref().map_or(0, |d| d.seconds),
        "index_kind": g.index.as_ref().map(|i| biomatch_proto::index_kind_from_proto(i.kind()).as_str()),
        "tuning": g.tuning.as_ref().map(super::gallery_tune::tuning_json),
        "threshold_policy": g.threshold_policy.as_ref().map(|p| serde_json::json!({
            "target_fpir": p.target_fpir,
            "templates": p.templates,
            "required_fmr": p.required_fmr,
            "extrapolated": p.extrapolated,
            "unattainable": p.unattainable,
            "derived_at_ms": p.derived_at.as_ref().map_or(0, biomatch_proto::millis_from_timestamp),
            "impostor_pairs": p.impostor.as_ref().map_or(0, |t| t.impostor_pairs),
            "impostor_source": p.impostor.as_ref().map(|t| t.source.clone()),
        })),
    })
}

/// Sets the threshold of gallery `name`, or the policy it is derived from; the gallery as it now is.
pub async fn set_threshold(
    client: &ClientArgs,
    name: &str,
    threshold: f32,
    policy: Option<ThresholdPolicy>,
    reason: &str,
) -> anyhow::Result<Gallery> {
    let request =
        SetThresholdRequest { gallery: name.to_owned(), threshold, reason: reason.to_owned(), policy };
    let mut ingest = IngestServiceClient::new(client.channel()?);
    Ok(ingest.set_threshold(client.request(request)?).await.map_err(rpc_error)?.into_inner())
}

pub async fn run(command: GalleryCommand) -> anyhow::Result<()> {
    match command {
        GalleryCommand::Create(a) => {
            let request = CreateGalleryRequest {
                name: a.name,
                dimension: a.dim,
                shard_count: a.shards,
                index: Some(biomatch_proto::index_spec_to_proto(&biomatch_domain::IndexSpec {
                    train_threshold: a.train_threshold,
                    ..biomatch_domain::IndexSpec::of(a.index)
                })),
                model_id: a.model,
                model_version: a.model_version,
                threshold: a.threshold,
                threshold_policy: a.policy.policy()?,
                allowed_purposes: a.purposes,
                retention: Some(prost_types::Duration { seconds: parse_duration(&a.retention)?, nanos: 0 }),
                default_k: a.k,
                idempotency_key: a.idempotency_key,
            };
            let mut client = IngestServiceClient::new(a.client.channel()?);
            let g = client.create_gallery(a.client.request(request)?).await.map_err(rpc_error)?.into_inner();
            if a.client.json {
                println!("{}", gallery_json(&g));
            } else {
                println!("created gallery {}: {}", g.name, threshold_column(&g));
            }
        }
        GalleryCommand::List(a) => {
            let mut client = IngestServiceClient::new(a.client.channel()?);
            let list = client
                .list_galleries(a.client.request(ListGalleriesRequest {})?)
                .await
                .map_err(rpc_error)?
                .into_inner();
            if a.client.json {
                println!("{}", serde_json::Value::Array(list.galleries.iter().map(gallery_json).collect()));
            } else if list.galleries.is_empty() {
                println!("no galleries");
            } else {
                list.galleries.iter().for_each(print_gallery);
            }
        }
        GalleryCommand::SetThreshold(a) => {
            let policy = a.policy.policy()?;
            let g = set_threshold(&a.client, &a.name, a.threshold.unwrap_or(0.0), policy, &a.reason).await?;
            if a.client.json {
                println!("{}", gallery_json(&g));
            } else {
                println!("gallery {}: {}", g.name, threshold_column(&g));
            }
        }
        GalleryCommand::Tune(a) => super::gallery_tune::run(a).await?,
        GalleryCommand::Delete(a) => {
            let mut client = IngestServiceClient::new(a.client.channel()?);
            let request = DeleteGalleryRequest { name: a.name.clone(), idempotency_key: String::new() };
            let r = client.delete_gallery(a.client.request(request)?).await.map_err(rpc_error)?.into_inner();
            if a.client.json {
                println!(
                    "{}",
                    serde_json::json!({"deleted": a.name, "audit_leaf_index": r.audit_leaf_index})
                );
            } else {
                println!("deleted gallery {} (audit leaf {})", a.name, r.audit_leaf_index);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("0").expect("ok"), 0);
        assert_eq!(parse_duration("12h").expect("ok"), 43_200);
        assert_eq!(parse_duration("30d").expect("ok"), 2_592_000);
        assert!(parse_duration("12x").is_err());
        assert!(parse_duration("h").is_err());
    }
}
