//! `biomatch bench embed`: the face pipeline on 1 MP JPEG photos, per stage (decode, detect,
//! align, quality, embed) and end to end, single-threaded (p50/p99), then photos per second with
//! 1, 2, ... threads each running whole photos; for each model and runtime, in the same run.

use crate::cli::bench_search::percentile;
use anyhow::Context;
use biomatch_face::{FaceConfig, FaceOptions, FacePipeline, RecognizerModel, Runtime, StageTimings};
use clap::{Args, ValueEnum};
use image::codecs::jpeg::JpegEncoder;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Args)]
pub struct EmbedBenchArgs {
    /// The face models (scripts/fetch-models.sh).
    #[arg(long, default_value = "models")]
    model_dir: PathBuf,
    /// Photos with one face each (JPEG or PNG); default: scripts/fetch-test-photos.sh's directory.
    #[arg(long)]
    photos: Option<PathBuf>,
    /// Photos are rescaled to about this many megapixels and re-encoded as JPEG (quality 90).
    #[arg(long, default_value_t = 1.0)]
    megapixels: f64,
    /// Photos per measurement.
    #[arg(long, default_value_t = 60)]
    iterations: usize,
    /// Thread counts for the throughput measurement.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    threads: Vec<usize>,
    /// Side of the detector's input.
    #[arg(long, default_value_t = 320)]
    detector_input: u32,
    /// The runtimes to compare.
    #[arg(long, value_delimiter = ',', default_value = "onnxruntime,tract")]
    runtimes: Vec<RuntimeArg>,
    /// The models to compare, by name (sface, dlib_resnet, sface+dlib).
    #[arg(long, value_delimiter = ',', default_value = "sface")]
    models: Vec<String>,
}

/// What runs the face models (`embed.runtime`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RuntimeArg {
    /// ONNX Runtime, from `libonnxruntime.so` in the model directory.
    Onnxruntime,
    Tract,
}

impl RuntimeArg {
    pub fn runtime(self, model_dir: &std::path::Path) -> Runtime {
        match self {
            RuntimeArg::Onnxruntime => Runtime::onnxruntime_in(model_dir),
            RuntimeArg::Tract => Runtime::Tract,
        }
    }
}

/// A shipped model by the name `--models` gives.
pub fn shipped_model(name: &str) -> anyhow::Result<RecognizerModel> {
    RecognizerModel::named(name)
        .with_context(|| format!("--models: {name:?} is not one of {}", RecognizerModel::NAMES.join(", ")))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The photos, rescaled to about `megapixels` and encoded as JPEG.
fn prepare(dir: &std::path::Path, megapixels: f64) -> anyhow::Result<Vec<Vec<u8>>> {
    let mut photos = Vec::new();
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)?.filter_map(|e| e.ok().map(|e| e.path())).collect();
    names.sort();
    for path in names {
        let Ok(image) = image::open(&path) else { continue };
        let image = image.to_rgb8();
        let scale = (megapixels * 1e6 / f64::from(image.width() * image.height())).sqrt();
        let (w, h) = ((f64::from(image.width()) * scale) as u32, (f64::from(image.height()) * scale) as u32);
        let resized = image::imageops::resize(&image, w, h, image::imageops::FilterType::Triangle);
        let mut jpeg = Vec::new();
        JpegEncoder::new_with_quality(&mut jpeg, 90).encode_image(&resized)?;
        photos.push(jpeg);
    }
    anyhow::ensure!(!photos.is_empty(), "no photos in {}", dir.display());
    Ok(photos)
}

pub fn run(args: EmbedBenchArgs) -> anyhow::Result<()> {
    let photos_dir = args.photos.clone().unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/biomatch/testdata/photos")
    });
    let mut pipelines: Vec<(String, Arc<FacePipeline>)> = Vec::new();
    for model in &args.models {
        let recognizer = shipped_model(model)?;
        for runtime in &args.runtimes {
            let mut config = FaceConfig::new(&args.model_dir, runtime.runtime(&args.model_dir));
            config.detector_input = args.detector_input;
            config.recognizer = recognizer.clone();
            let started = Instant::now();
            let pipeline =
                FacePipeline::load(&config).with_context(|| format!("loading {model} in {runtime:?}"))?;
            let name = format!("{model} {}", config.runtime.name());
            println!("{name}: models loaded in {:.0} ms", ms(started.elapsed()));
            pipelines.push((name, Arc::new(pipeline)));
        }
    }
    let (_, first) = pipelines.first().context("no runtime to measure")?;
    // Only photos with exactly one face of the default size (so each run does the same work).
    let photos: Vec<Vec<u8>> = prepare(&photos_dir, args.megapixels)?
        .into_iter()
        .filter(|p| first.analyze(p, &FaceOptions::default()).is_ok_and(|a| a.faces.len() == 1))
        .collect();
    anyhow::ensure!(!photos.is_empty(), "no photo with exactly one face in {}", photos_dir.display());
    println!(
        "face pipeline: {} photos of ~{:.1} MP (JPEG q90) from {}, detector input {}",
        photos.len(),
        args.megapixels,
        photos_dir.display(),
        args.detector_input,
    );

    // Single-threaded latency per stage.
    let options = FaceOptions { largest_only: true, ..FaceOptions::default() };
    let mut latencies: Vec<Vec<StageTimings>> = Vec::new();
    for (_, pipeline) in &pipelines {
        let mut runs = Vec::with_capacity(args.iterations);
        for i in 0..args.iterations {
            runs.push(pipeline.analyze(&photos[i % photos.len()], &options)?.timings);
        }
        latencies.push(runs);
    }
    let names: Vec<&str> = pipelines.iter().map(|(name, _)| name.as_str()).collect();
    println!(
        "\n| stage | {} |",
        names.iter().map(|n| format!("{n} p50 ms | {n} p99 ms")).collect::<Vec<_>>().join(" | ")
    );
    println!("|---|{}", "---|---|".repeat(names.len()));
    let stages = ["decode", "detect", "align", "quality", "embed", "end to end"];
    for (s, name) in stages.iter().enumerate() {
        let mut row = format!("| {name} |");
        for runs in &latencies {
            let mut d: Vec<Duration> =
                runs.iter().map(|t| if s < 5 { t.stages()[s].1 } else { t.total() }).collect();
            d.sort();
            row += &format!(" {:.2} | {:.2} |", percentile(&d, 0.5), percentile(&d, 0.99));
        }
        println!("{row}");
    }

    // Throughput with whole photos per thread.
    println!("\n| model and runtime | threads | photos | seconds | photos/s |\n|---|---|---|---|---|");
    for (name, pipeline) in &pipelines {
        for &threads in &args.threads {
            let (done, secs) = throughput(pipeline, &photos, &options, threads, args.iterations)?;
            println!("| {name} | {threads} | {done} | {secs:.2} | {:.1} |", done as f64 / secs);
        }
    }
    Ok(())
}

/// Photos done and seconds taken by `threads` threads sharing `iterations` photos.
fn throughput(
    pipeline: &Arc<FacePipeline>,
    photos: &[Vec<u8>],
    options: &FaceOptions,
    threads: usize,
    iterations: usize,
) -> anyhow::Result<(usize, f64)> {
    let started = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (pipeline, photos, options) = (pipeline.clone(), photos.to_vec(), *options);
            let count = iterations / threads.max(1);
            std::thread::spawn(move || -> anyhow::Result<usize> {
                for i in 0..count {
                    pipeline.analyze(&photos[(t + i) % photos.len()], &options)?;
                }
                Ok(count)
            })
        })
        .collect();
    let mut done = 0;
    for h in handles {
        done += h.join().map_err(|_| anyhow::anyhow!("bench thread panicked"))??;
    }
    Ok((done, started.elapsed().as_secs_f64()))
}
