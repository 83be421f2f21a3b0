//! `biomatch gallery tune`: measures a gallery's shards on its own data and records the fastest
//! search settings that meet a target recall, or pins settings an operator chose.
//!
//! Measuring is `SearchService/TuneGallery` (each shard, on one replica, searches noisy copies of
//! its own templates at the genuine-score level and compares with exact search); recording is
//! `IngestService/SetSearchTuning`, audited, after which every replica searches with the
//! settings. `--dry-run` measures without recording; `--nprobe`/`--rerank-depth` pin settings
//! (measured too, for the record, when the gallery's shards can be) and automatic tuning then
//! leaves the gallery alone; `--unpin` hands it back to tuning. `--probes-file` measures with an
//! operator's labelled probes instead (the JSON lines of `biomatch enroll --vectors`: a subject id
//! and a vector per line); they are biometric, so nothing here prints them. When exact search is
//! the choice (no shard trained yet, or exact search as fast), there is nothing to record.

use super::{ClientArgs, rpc_error};
use anyhow::Context;
use biomatch_proto::v1::ingest_service_client::IngestServiceClient;
use biomatch_proto::v1::search_service_client::SearchServiceClient;
use biomatch_proto::v1::{LabelledProbe, SearchTuning, SetSearchTuningRequest, TuneGalleryRequest};
use clap::Args;
use std::io::BufRead;
use std::path::{Path, PathBuf};

// The parser of `biomatch enroll --vectors`.
use super::enroll::lines;

/// The most labelled probes `TuneGallery` takes.
const MAX_PROBES: usize = biomatch_domain::MAX_LABELLED_PROBES;

#[derive(Debug, Args)]
pub struct TuneArgs {
    name: String,
    /// Mated rank-1 recall, against exact search, the settings must reach.
    #[arg(long, default_value_t = 0.995)]
    target_recall: f64,
    /// Cosine of each probe with the template it is made from: the genuine mean `biomatch eval`
    /// reports for the gallery's model.
    #[arg(long, default_value_t = 0.66)]
    genuine_score: f32,
    /// Probes per shard.
    #[arg(long, default_value_t = 200)]
    probes: u32,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Measure with these labelled probes (JSON lines of `{"subject_id": "...", "vector": [...]}`,
    /// at most 10,000, naming at least 50 distinct subjects and at most 10 probes of each)
    /// instead of noisy copies of the gallery's own templates. The audit leaf names every subject
    /// the probes claim.
    #[arg(long, value_name = "FILE")]
    probes_file: Option<PathBuf>,
    /// Measure and print, record nothing.
    #[arg(long)]
    dry_run: bool,
    /// Pin the IVF probe count instead of choosing it.
    #[arg(long)]
    nprobe: Option<u32>,
    /// Pin the exact re-rank depth instead of choosing it.
    #[arg(long)]
    rerank_depth: Option<u32>,
    /// Record the measured settings unpinned (automatic tuning may change them again).
    #[arg(long)]
    unpin: bool,
    /// Why, for the audit record.
    #[arg(long, default_value = "tuned on the gallery's own data")]
    reason: String,
    #[command(flatten)]
    client: ClientArgs,
}

fn summary(t: &SearchTuning) -> String {
    format!(
        "nprobe={} rerank_depth={} pinned={} recall={:.4} target={:.4} met={} qps={:.0} exact_qps={:.0} probes={} templates={}",
        t.nprobe,
        t.rerank_depth,
        t.pinned,
        t.recall,
        t.target_recall,
        t.met_target,
        t.queries_per_second,
        t.exact_queries_per_second,
        t.probes,
        t.templates
    )
}

pub(crate) fn tuning_json(t: &SearchTuning) -> serde_json::Value {
    serde_json::json!({
        "nprobe": t.nprobe,
        "rerank_depth": t.rerank_depth,
        "pinned": t.pinned,
        "target_recall": t.target_recall,
        "recall": t.recall,
        "met_target": t.met_target,
        "queries_per_second": t.queries_per_second,
        "exact_queries_per_second": t.exact_queries_per_second,
        "probes": t.probes,
        "templates": t.templates,
        "version": t.version,
    })
}

/// One line for `gallery list`.
pub(crate) fn tuning_column(t: Option<&SearchTuning>) -> String {
    match t {
        None => "tuning=none".to_owned(),
        Some(t) => format!(
            "tuning=v{}{}:nprobe={},rerank={},recall={:.4}@{:.0}qps",
            t.version,
            if t.pinned { ",pinned" } else { "" },
            t.nprobe,
            t.rerank_depth,
            t.recall,
            t.queries_per_second
        ),
    }
}

/// The labelled probes of a JSON-lines file; refusals name the line, never its content.
fn read_probes(path: &Path) -> anyhow::Result<Vec<LabelledProbe>> {
    let file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    read_probe_lines(std::io::BufReader::new(file)).with_context(|| format!("in {}", path.display()))
}

fn read_probe_lines(input: impl BufRead) -> anyhow::Result<Vec<LabelledProbe>> {
    let mut probes = Vec::new();
    for (i, line) in input.lines().enumerate() {
        let line = line.with_context(|| format!("cannot read line {}", i + 1))?;
        let Some(item) = lines::parse_line(i + 1, &line)? else { continue };
        if probes.len() == MAX_PROBES {
            anyhow::bail!("more than {MAX_PROBES} probes");
        }
        probes.push(LabelledProbe { subject_id: item.subject.as_str().to_owned(), values: item.vector });
    }
    anyhow::ensure!(!probes.is_empty(), "no probes");
    Ok(probes)
}

pub async fn run(a: TuneArgs) -> anyhow::Result<()> {
    let labelled_probes = match &a.probes_file {
        Some(path) => read_probes(path)?,
        None => Vec::new(),
    };
    let channel = a.client.channel()?;
    let request = TuneGalleryRequest {
        gallery: a.name.clone(),
        target_recall: a.target_recall,
        genuine_score: a.genuine_score,
        probes: a.probes,
        seed: a.seed,
        labelled_probes,
    };
    let mut search = SearchServiceClient::new(channel.clone());
    let mut tuning = search.tune_gallery(a.client.request(request)?).await.map_err(rpc_error)?.into_inner();
    let pin = a.nprobe.is_some() || a.rerank_depth.is_some();
    let exact = (tuning.nprobe, tuning.rerank_depth) == (0, 0);
    if pin {
        tuning.nprobe = a.nprobe.unwrap_or(tuning.nprobe);
        tuning.rerank_depth = a.rerank_depth.unwrap_or(tuning.rerank_depth);
    }
    tuning.pinned = pin && !a.unpin;
    if exact && !pin && !a.dry_run {
        if a.client.json {
            println!("{}", serde_json::json!({ "choice": "exact", "measured": tuning_json(&tuning) }));
        } else {
            println!(
                "gallery {}: exact search is the choice (no shard trained yet, or exact search as fast); nothing recorded: {}",
                a.name,
                summary(&tuning)
            );
        }
        return Ok(());
    }
    if a.dry_run {
        if a.client.json {
            println!("{}", tuning_json(&tuning));
        } else {
            println!("gallery {} (not recorded): {}", a.name, summary(&tuning));
        }
        return Ok(());
    }
    let mut ingest = IngestServiceClient::new(channel);
    let request = SetSearchTuningRequest { gallery: a.name.clone(), tuning: Some(tuning), reason: a.reason };
    let gallery = ingest.set_search_tuning(a.client.request(request)?).await.map_err(rpc_error)?.into_inner();
    let recorded = gallery.tuning.unwrap_or_default();
    if a.client.json {
        println!("{}", tuning_json(&recorded));
    } else {
        println!("gallery {}: search settings version {}: {}", a.name, recorded.version, summary(&recorded));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_files_are_read_without_quoting_them() {
        let good = "{\"subject_id\": \"alice\", \"vector\": [0.6, 0.8]}\n\n{\"subject_id\": \"bob\", \"vector\": [1, 0]}\n";
        let probes = read_probe_lines(good.as_bytes()).expect("read");
        assert_eq!(probes.len(), 2);
        assert_eq!(
            (probes[0].subject_id.as_str(), probes[0].values.as_slice()),
            ("alice", &[0.6f32, 0.8][..])
        );
        let bad = "{\"subject_id\": \"alice\", \"vector\": [0.6, 0.8]}\n{\"subject_id\": \"alice\", \"vector\": [0.6, \"x\"]}\n";
        let err = format!("{:#}", read_probe_lines(bad.as_bytes()).expect_err("refused"));
        assert!(err.contains("line 2") && !err.contains("alice") && !err.contains("0.6"), "{err}");
        assert!(read_probe_lines("\n".as_bytes()).is_err(), "no probes");
        let many = "{\"subject_id\": \"a\", \"vector\": [1]}\n".repeat(MAX_PROBES + 1);
        assert!(format!("{:#}", read_probe_lines(many.as_bytes()).expect_err("too many")).contains("10000"));
    }
}
