//! `biomatch eval`: accuracy of the face pipeline on a directory of labelled photos.
//!
//! Layout: each subdirectory is one identity holding its photos (the LFW layout); a photo directly
//! in the directory is an identity of its own (an impostor pool of one portrait per person).
//! `scripts/fetch-eval-set.sh` lays out the ORL faces so (docs/accuracy.md has the figures).
//!
//! Verification: every same-identity pair is genuine, every other pair an impostor; reports the
//! score distributions, FNMR at FMR 1e-3 and 1e-4, FNMR at the 1e-3 threshold by terciles of
//! the pairs' quality, and the threshold for `--target-fmr`. Identification: each identity
//! enrolled with its first `--enrol-per-subject` photos, the rest mated probes, every photo a
//! non-mated probe against the gallery without its own identity (identify.rs); reports the
//! rank-1 identification rate and FNIR at FPIR 1e-2 and 1e-3. Rates carry 95 % confidence
//! intervals from a seeded bootstrap over identities (metrics.rs). A rate that needs more pairs
//! or probes than there are is reported as such, not extrapolated. Failures to acquire (no usable
//! face) are counted and left out of the rates.
//!
//! One report column per comparator (acquire.rs): each model of `--models` (the shipped models by
//! name, `sface` by default) and, when two or more single recognisers are listed, their score
//! fusion weighted by the inverse of each one's impostor standard deviation; the weights it
//! prints are those the shipped `sface+dlib` fusion was given.

mod acquire;
mod identify;
mod metrics;
mod report;

use crate::cli::ClientArgs;
use crate::cli::bench_embed::{RuntimeArg, shipped_model};
use crate::cli::gallery::set_threshold;
use acquire::{Comparator, Templates, WeightedSum, embed_all, photos};
use anyhow::Context;
use biomatch_face::{FaceConfig, FacePipeline, RecognizerModel};
use clap::Args;
use metrics::Resamples;
use report::{FMRS, Report, assess, markdown};
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// The labelled photos.
    dir: PathBuf,
    #[arg(long, default_value = "models")]
    model_dir: PathBuf,
    /// The models to evaluate, by name (sface, dlib_resnet, sface+dlib); with two or more single
    /// recognisers, their fusion weighted by impostor spread is reported too.
    #[arg(long, value_delimiter = ',', default_value = "sface")]
    models: Vec<String>,
    /// The false-match rate to find the threshold for (set a gallery's threshold from it).
    #[arg(long, default_value_t = 1e-3)]
    target_fmr: f64,
    /// Photos enrolled per identity for identification (a subject scores by its best template);
    /// a list (1,2,3) reports each.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    enrol_per_subject: Vec<usize>,
    /// Border added around each photo before detection, as a share of its width and height, filled
    /// with its edge pixels: for sets cropped tighter than YuNet copes with (the ORL faces need
    /// none: YuNet finds every one of them as they are).
    #[arg(long, default_value_t = 0.0)]
    pad: f32,
    /// Only the first N identities (in name order).
    #[arg(long)]
    identities: Option<usize>,
    /// Bootstrap resamples for the confidence intervals.
    #[arg(long, default_value_t = 1000)]
    resamples: usize,
    /// Seed of the bootstrap.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Threads embedding photos.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// What runs the models.
    #[arg(long, value_enum, default_value = "onnxruntime")]
    runtime: RuntimeArg,
    /// Set this gallery's threshold to the one found for `--target-fmr` (an admin token).
    #[arg(long)]
    apply_to: Option<String>,
    /// Write the first recogniser's impostor tail here as JSON, for `gallery create
    /// --target-fpir R --impostor-tail FILE` (galleries of models the cluster has no measurement of).
    #[arg(long)]
    impostor_tail_out: Option<PathBuf>,
    #[command(flatten)]
    client: ClientArgs,
}

pub async fn run(mut args: EvalArgs) -> anyhow::Result<()> {
    let (apply_to, client) = (args.apply_to.take(), args.client.clone());
    let target_fmr = args.target_fmr;
    let calibrated = tokio::task::spawn_blocking(move || evaluate(&args)).await??;
    let Some(gallery) = apply_to else { return Ok(()) };
    let Some((threshold, pairs)) = calibrated else {
        anyhow::bail!(
            "no threshold for FMR {target_fmr:e} (too few impostor pairs); gallery {gallery} unchanged"
        );
    };
    let reason = format!("biomatch eval: FMR {target_fmr:e} on {pairs} impostor pairs");
    let g = set_threshold(&client, &gallery, threshold, None, &reason).await?;
    // Standard output holds only the report under --json.
    let line = format!("gallery {}: threshold {:.4} (version {})", g.name, g.threshold, g.threshold_version);
    if client.json {
        eprintln!("{line}")
    } else {
        println!("{line}")
    }
    Ok(())
}

/// Prints the evaluation; the first comparator's threshold for the target FMR and the impostor
/// pairs behind it.
fn evaluate(args: &EvalArgs) -> anyhow::Result<Option<(f32, usize)>> {
    anyhow::ensure!(args.pad >= 0.0 && args.pad <= 2.0, "--pad must lie in 0..=2");
    anyhow::ensure!(args.enrol_per_subject.iter().all(|&n| n > 0), "--enrol-per-subject must be at least 1");
    anyhow::ensure!(!args.models.is_empty(), "--models names at least one model");
    let mut configs = Vec::with_capacity(args.models.len());
    for name in &args.models {
        let model = shipped_model(name)?;
        let mut config = FaceConfig::new(&args.model_dir, args.runtime.runtime(&args.model_dir));
        config.recognizer = model;
        configs.push(config);
    }
    let photos = photos(&args.dir, args.identities)?;
    let identities = photos.last().map_or(0, |p| p.identity + 1);
    let mut all: Vec<Templates> = Vec::with_capacity(configs.len());
    for config in &configs {
        let pipeline = FacePipeline::load(config).context("loading the face models")?;
        all.push(embed_all(&pipeline, &photos, args.threads, args.pad));
    }

    let mut fmrs = FMRS.to_vec();
    if !fmrs.contains(&args.target_fmr) {
        fmrs.push(args.target_fmr);
    }
    let resamples = Resamples::draw(identities, args.resamples, args.seed);
    let assessed =
        |c: &dyn Comparator| assess(c, &photos, identities, &resamples, &fmrs, &args.enrol_per_subject);
    let mut models: Vec<_> = all.iter().map(|t| assessed(t as &dyn Comparator)).collect();
    let singles: Vec<(&Templates, f32)> = all
        .iter()
        .zip(&configs)
        .zip(&models)
        .filter(|((_, config), _)| matches!(config.recognizer, RecognizerModel::Single(_)))
        .map(|((t, _), m)| (t, m.impostor.sd))
        .collect();
    if singles.len() >= 2 {
        let fused = WeightedSum::by_impostor_spread(singles);
        models.push(assessed(&fused as &dyn Comparator));
    }
    let report = Report {
        dir: args.dir.display().to_string(),
        photos: photos.len(),
        identities,
        pad: args.pad,
        resamples: args.resamples,
        seed: args.seed,
        models,
    };

    if let Some(path) = &args.impostor_tail_out {
        let mut tail = report.models[0]
            .impostor_tail
            .clone()
            .context("no impostor tail: it needs at least 1,000 impostor pairs")?;
        tail.source = format!(
            "biomatch eval on {} ({} photos of {identities} identities, {} impostor pairs)",
            report.dir, report.photos, tail.impostor_pairs
        );
        std::fs::write(path, serde_json::to_string_pretty(&tail)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("impostor tail written to {}", path.display());
    }
    let first = &report.models[0];
    let target = first.verification.iter().find(|v| v.fmr == args.target_fmr);
    let calibrated = target.and_then(|v| v.threshold).map(|t| (t, first.impostor.pairs));
    if args.client.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(calibrated);
    }
    println!(
        "{} photos of {identities} identities in {} (border {:.0} % before detection); \
         bootstrap: {} resamples of identities, seed {}\n",
        report.photos,
        report.dir,
        args.pad * 100.0,
        args.resamples,
        args.seed
    );
    print!("{}", markdown(&report));
    for m in &report.models {
        for (why, count) in &m.failures {
            println!("\n{}: {count} failed to acquire: {why}", m.model);
        }
    }
    if let Some((t, _)) = calibrated {
        println!(
            "\nthreshold for FMR {:e}: {t:.4} (--apply-to GALLERY sets it, or biomatch gallery set-threshold)",
            args.target_fmr
        );
    }
    Ok(calibrated)
}
