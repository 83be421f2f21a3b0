//! `biomatch eval`: accuracy of the face pipeline on a directory of labelled photos.
//!
//! Layout: each subdirectory is one identity holding its photos (the LFW layout); a photo directly
//! in the directory is an identity of its own (an impostor pool of one portrait per person).
//! Verification: every same-identity pair is genuine, every other pair an impostor; reports the
//! score distributions, FNMR at FMR 1e-3 and 1e-4 and the threshold for `--target-fmr`.
//! Identification: the first photo of four identities in five is enrolled, their other photos
//! are mated probes, every photo of the fifth identity a non-mated probe; reports the rank-1
//! identification rate and FNIR at FPIR 1e-2 and 1e-3. A rate that needs more pairs or probes
//! than there are is reported as such, not extrapolated.

use crate::cli::ClientArgs;
use crate::cli::bench_embed::RuntimeArg;
use crate::cli::gallery::set_threshold;
use anyhow::Context;
use biomatch_face::{FaceConfig, FaceOptions, FacePipeline};
use clap::Args;
use std::path::{Path, PathBuf};

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// The labelled photos.
    dir: PathBuf,
    #[arg(long, default_value = "models")]
    model_dir: PathBuf,
    /// The false-match rate to find the threshold for (set a gallery's threshold from it).
    #[arg(long, default_value_t = 1e-3)]
    target_fmr: f64,
    /// Threads embedding photos.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// What runs the models.
    #[arg(long, value_enum, default_value = "onnxruntime")]
    runtime: RuntimeArg,
    /// Set this gallery's threshold to the one found for `--target-fmr` (an admin token).
    #[arg(long)]
    apply_to: Option<String>,
    #[command(flatten)]
    client: ClientArgs,
}

struct Sample {
    identity: usize,
    template: Vec<f32>,
}

/// (identity, path) of every photo, identities numbered in name order.
fn photos(dir: &Path) -> anyhow::Result<Vec<(usize, PathBuf)>> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    let mut out = Vec::new();
    for (identity, entry) in entries.into_iter().enumerate() {
        if entry.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(&entry)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file())
                .collect();
            files.sort();
            out.extend(files.into_iter().map(|f| (identity, f)));
        } else {
            out.push((identity, entry));
        }
    }
    Ok(out)
}

fn embed_all(pipeline: &FacePipeline, photos: &[(usize, PathBuf)], threads: usize) -> (Vec<Sample>, usize) {
    let options = FaceOptions { largest_only: true, ..FaceOptions::default() };
    let chunk = photos.len().div_ceil(threads.max(1)).max(1);
    let results: Vec<Vec<Option<Sample>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = photos
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .map(|(identity, path)| {
                            let bytes = std::fs::read(path).ok()?;
                            let face = pipeline.analyze(&bytes, &options).ok()?.faces.into_iter().next()?;
                            Some(Sample { identity: *identity, template: face.embedding })
                        })
                        .collect()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_default()).collect()
    });
    let all: Vec<Option<Sample>> = results.into_iter().flatten().collect();
    let failed = all.iter().filter(|s| s.is_none()).count();
    (all.into_iter().flatten().collect(), failed)
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The score at quantile `q` of sorted scores.
fn quantile(sorted: &[f32], q: f64) -> f32 {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted.get(i).copied().unwrap_or(f32::NAN)
}

/// The lowest threshold at which at most `rate` of `negatives` (sorted) reach it, if there are
/// enough negatives to tell.
fn threshold_at(negatives: &[f32], rate: f64) -> Option<f32> {
    let allowed = (negatives.len() as f64 * rate).floor() as usize;
    if negatives.is_empty() || (rate * negatives.len() as f64) < 1.0 {
        return None;
    }
    // Scores at or above the threshold count; the (allowed+1)-th highest must fall below it.
    let above = negatives.len() - allowed - 1;
    Some(negatives[above].next_up())
}

fn describe(name: &str, sorted: &[f32]) {
    if sorted.is_empty() {
        println!("| {name} | 0 | - | - | - | - |");
        return;
    }
    let mean = sorted.iter().sum::<f32>() / sorted.len() as f32;
    println!(
        "| {name} | {} | {:.3} | {:.3} | {:.3} | {:.3} |",
        sorted.len(),
        sorted[0],
        quantile(sorted, 0.5),
        mean,
        sorted[sorted.len() - 1]
    );
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
    let g = set_threshold(&client, &gallery, threshold, &reason).await?;
    println!("gallery {}: threshold {:.4} (version {})", g.name, g.threshold, g.threshold_version);
    Ok(())
}

/// Prints the evaluation; the threshold for the target FMR and the impostor pairs behind it.
fn evaluate(args: &EvalArgs) -> anyhow::Result<Option<(f32, usize)>> {
    let config = FaceConfig::new(&args.model_dir, args.runtime.runtime(&args.model_dir));
    let pipeline = FacePipeline::load(&config).context("loading the face models")?;
    let photos = photos(&args.dir)?;
    let (samples, failed) = embed_all(&pipeline, &photos, args.threads);
    let identities = photos.iter().map(|(i, _)| *i).collect::<std::collections::HashSet<_>>().len();
    println!(
        "{} photos of {identities} identities in {}; {failed} without a usable face (failures to enrol)",
        photos.len(),
        args.dir.display()
    );

    let (mut genuine, mut impostor) = (Vec::new(), Vec::new());
    for (i, a) in samples.iter().enumerate() {
        for b in &samples[i + 1..] {
            let score = dot(&a.template, &b.template);
            if a.identity == b.identity { genuine.push(score) } else { impostor.push(score) }
        }
    }
    genuine.sort_by(f32::total_cmp);
    impostor.sort_by(f32::total_cmp);
    println!("\n| pairs | count | min | median | mean | max |\n|---|---|---|---|---|---|");
    describe("genuine", &genuine);
    describe("impostor", &impostor);

    println!("\n| FMR | threshold | FNMR |\n|---|---|---|");
    for fmr in [1e-3, 1e-4, args.target_fmr] {
        match threshold_at(&impostor, fmr) {
            Some(t) if !genuine.is_empty() => {
                let fnmr = genuine.iter().filter(|&&g| g < t).count() as f64 / genuine.len() as f64;
                println!("| {fmr:e} | {t:.4} | {fnmr:.4} ({} genuine pairs) |", genuine.len());
            }
            Some(t) => println!("| {fmr:e} | {t:.4} | no genuine pairs |"),
            None => println!("| {fmr:e} | - | needs at least {:.0} impostor pairs |", 1.0 / fmr),
        }
    }
    let calibrated = threshold_at(&impostor, args.target_fmr);
    if let Some(t) = calibrated {
        println!(
            "\nthreshold for FMR {:e}: {t:.4} (--apply-to GALLERY sets it, or biomatch gallery set-threshold)",
            args.target_fmr
        );
    }
    identification(&samples);
    Ok(calibrated.map(|t| (t, impostor.len())))
}

fn identification(samples: &[Sample]) {
    let held_out = |identity: usize| identity % 5 == 4;
    let mut gallery: Vec<&Sample> = Vec::new();
    let (mut mated, mut non_mated) = (Vec::new(), Vec::new());
    for s in samples {
        if held_out(s.identity) {
            non_mated.push(s);
        } else if gallery.iter().any(|g| g.identity == s.identity) {
            mated.push(s);
        } else {
            gallery.push(s);
        }
    }
    let top = |probe: &Sample| {
        gallery
            .iter()
            .map(|g| (g.identity, dot(&probe.template, &g.template)))
            .max_by(|a, b| a.1.total_cmp(&b.1))
    };
    println!(
        "\nidentification: gallery {} (one photo per identity), {} mated and {} non-mated probes",
        gallery.len(),
        mated.len(),
        non_mated.len()
    );
    if gallery.is_empty() {
        return;
    }
    let mated_top: Vec<(bool, f32)> =
        mated.iter().filter_map(|p| top(p).map(|(id, score)| (id == p.identity, score))).collect();
    if !mated_top.is_empty() {
        let rank1 = mated_top.iter().filter(|(hit, _)| *hit).count() as f64 / mated_top.len() as f64;
        println!("rank-1 identification rate: {rank1:.4} ({} mated probes)", mated_top.len());
    }
    let mut non_mated_top: Vec<f32> = non_mated.iter().filter_map(|p| top(p).map(|(_, s)| s)).collect();
    non_mated_top.sort_by(f32::total_cmp);
    println!("\n| FPIR | threshold | FNIR |\n|---|---|---|");
    for fpir in [1e-2, 1e-3] {
        match threshold_at(&non_mated_top, fpir) {
            Some(t) if !mated_top.is_empty() => {
                let misses = mated_top.iter().filter(|(hit, score)| !hit || *score < t).count();
                println!("| {fpir:e} | {t:.4} | {:.4} |", misses as f64 / mated_top.len() as f64);
            }
            Some(t) => println!("| {fpir:e} | {t:.4} | no mated probes |"),
            None => println!("| {fpir:e} | - | needs at least {:.0} non-mated probes |", 1.0 / fpir),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::threshold_at;

    #[test]
    fn the_threshold_lets_through_at_most_the_rate() {
        let negatives: Vec<f32> = (0..1000).map(|i| i as f32 / 1000.0).collect();
        let t = threshold_at(&negatives, 1e-2).expect("enough");
        let passing = negatives.iter().filter(|&&n| n >= t).count();
        assert_eq!(passing, 10, "1 % of 1000 pass, no more");
        assert!(threshold_at(&negatives, 1e-4).is_none(), "1000 pairs cannot show 1e-4");
    }
}
