//! The embed role: `EmbedService` turns photos into faces and templates with the face pipeline
//! of [`biomatch_face`].
//!
//! Decoding, detection and embedding are CPU-bound, so each photo runs on tokio's blocking pool,
//! at most `workers` at a time (one per core by default); at most `max_queued` more wait, and
//! beyond that a photo is refused with RESOURCE_EXHAUSTED rather than queued without bound.
//! Photos live in memory for the call only. Stage latencies are the histogram
//! `biomatch_embed_stage_seconds{stage}`. Without a configured model directory both RPCs answer
//! UNIMPLEMENTED (a cluster fed embeddings only). Who may call (the search and ingest roles) is
//! the authorization table's rule, applied before a handler runs ([`biomatch_auth::policy`]).
#![forbid(unsafe_code)]

use biomatch_config::{DEFAULT_MODEL, EmbedConfig, RecognizerConfig, RuntimeKind};
use biomatch_domain::{Classified, ErrorClass};
use biomatch_face::{
    ChannelOrder, DLIB_RESNET, FaceConfig, FaceOptions, FacePipeline, FusionMember, FusionSpec, ImageLimits,
    ONNXRUNTIME, RecognizerModel, RecognizerSpec,
};
use biomatch_proto::v1::embed_service_server::EmbedService;
use biomatch_proto::v1::{
    BoundingBox, DescribeModelRequest, EmbedRequest, EmbedResponse, Embedding, Face, ModelInfo, Point,
    Quality,
};
use biomatch_proto::{status_from, status_with};
use std::sync::Arc;
use tokio::sync::Semaphore;
use tonic::{Request, Response, Status};

fn recognizer_spec(r: &RecognizerConfig) -> RecognizerSpec {
    RecognizerSpec {
        file: r.file.clone(),
        sha256: r.sha256.clone(),
        model_id: r.model_id.clone(),
        model_version: r.model_version.clone(),
        input_size: r.input_size,
        template: r.template,
        channel_order: match r.channel_order {
            biomatch_config::ChannelOrder::Rgb => ChannelOrder::Rgb,
            biomatch_config::ChannelOrder::Bgr => ChannelOrder::Bgr,
        },
        mean: r.mean,
        std: r.std,
    }
}

/// The face pipeline's settings from the embed section of the configuration, if it has a model
/// directory. The configuration was validated when read (a recogniser or a fusion, not both);
/// the recognisers' own settings are checked when the pipeline loads.
pub fn face_config(config: &EmbedConfig) -> Option<FaceConfig> {
    let dir = config.model_dir.as_ref()?;
    let runtime = match config.runtime {
        RuntimeKind::Tract => biomatch_face::Runtime::Tract,
        RuntimeKind::OnnxRuntime => match (&config.onnxruntime_library, &config.onnxruntime_sha256) {
            (None, None) => biomatch_face::Runtime::onnxruntime_in(dir),
            (library, sha256) => biomatch_face::Runtime::OnnxRuntime {
                library: library.clone().unwrap_or_else(|| dir.join(ONNXRUNTIME.name)),
                sha256: sha256.clone(),
            },
        },
    };
    let mut face = FaceConfig::new(dir, runtime);
    face.detector_input = config.detector_input;
    face.detection_threshold = config.detection_threshold;
    face.min_face_size = config.min_face_size;
    face.limits = ImageLimits {
        max_bytes: config.max_image_bytes,
        max_pixels: config.max_image_pixels,
        ..ImageLimits::default()
    };
    // Unknown names were refused when the configuration was read.
    let (mut primary, mut also) = config.shipped_models();
    // A model directory fetched before the fusion became the default lacks dlib's network: an
    // operator who chose nothing keeps SFace, told so, rather than a role that does not start.
    if config.model.is_none() && primary == Some(DEFAULT_MODEL) && !dir.join(DLIB_RESNET.name).exists() {
        tracing::warn!(
            "{} is not in {}: embedding with sface alone instead of the default {DEFAULT_MODEL} \
             (run scripts/fetch-models.sh, or set embed.model = \"sface\" to silence this)",
            DLIB_RESNET.name,
            dir.display()
        );
        primary = Some("sface");
        also.retain(|m| *m != "sface");
    }
    if let Some(model) = primary.and_then(RecognizerModel::named) {
        face.recognizer = model;
    }
    face.also = also.into_iter().filter_map(RecognizerModel::named).collect();
    if let Some(r) = &config.recognizer {
        face.recognizer = recognizer_spec(r).into();
    }
    if let Some(fusion) = &config.fusion {
        face.recognizer = FusionSpec {
            model_id: fusion.model_id.clone(),
            model_version: fusion.model_version.clone(),
            members: fusion
                .members
                .iter()
                // A missing weight was refused when the configuration was read; NaN is refused
                // again at load, should it get here.
                .map(|m| FusionMember {
                    recognizer: recognizer_spec(m),
                    weight: m.weight.unwrap_or(f32::NAN),
                })
                .collect(),
        }
        .into();
    }
    Some(face)
}

struct Workers {
    pipeline: Arc<FacePipeline>,
    running: Arc<Semaphore>,
    /// Permits for running plus waiting photos.
    admitted: Arc<Semaphore>,
}

pub struct EmbedServer {
    workers: Option<Workers>,
}

impl EmbedServer {
    /// `pipeline`: `None` when no model is configured.
    pub fn new(pipeline: Option<Arc<FacePipeline>>, config: &EmbedConfig) -> Self {
        let workers = if config.workers == 0 {
            std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
        } else {
            config.workers
        };
        let workers = pipeline.map(|pipeline| Workers {
            pipeline,
            running: Arc::new(Semaphore::new(workers)),
            admitted: Arc::new(Semaphore::new(workers + config.max_queued)),
        });
        Self { workers }
    }

    fn workers(&self) -> Result<&Workers, Status> {
        self.workers.as_ref().ok_or_else(|| {
            status_with(
                ErrorClass::Unimplemented,
                "no face model is configured (embed.model_dir): send an embedding instead",
            )
        })
    }
}

fn model_info(info: &biomatch_face::ModelInfo) -> ModelInfo {
    ModelInfo {
        model_id: info.model_id.clone(),
        model_version: info.model_version.clone(),
        dimension: info.dimension as u32,
    }
}

fn face_to_proto(face: biomatch_face::Face, model: &ModelInfo) -> Face {
    let [x, y, width, height] = face.bbox;
    let q = face.quality;
    Face {
        r#box: Some(BoundingBox { x, y, width, height }),
        landmarks: face.landmarks.iter().map(|p| Point { x: p[0], y: p[1] }).collect(),
        detection_score: face.detection_score,
        quality: Some(Quality {
            overall: q.overall,
            size: q.size,
            sharpness: q.sharpness,
            pose: q.pose,
            exposure: q.exposure,
            issues: q.issues,
        }),
        embedding: Some(Embedding {
            values: face.embedding,
            model_id: model.model_id.clone(),
            model_version: model.model_version.clone(),
        }),
    }
}

#[tonic::async_trait]
impl EmbedService for EmbedServer {
    async fn embed(&self, request: Request<EmbedRequest>) -> Result<Response<EmbedResponse>, Status> {
        biomatch_auth::principal(&request)?;
        let workers = self.workers()?;
        let EmbedRequest { image, options, model_id } = request.into_inner();
        if image.is_empty() {
            return Err(status_with(ErrorClass::InvalidArgument, "image is empty"));
        }
        let options = options.unwrap_or_default();
        let options = FaceOptions {
            max_faces: options.max_faces as usize,
            min_face_size: (options.min_face_size > 0).then_some(options.min_face_size),
            largest_only: options.largest_face_only,
        };
        let _admitted = workers.admitted.clone().try_acquire_owned().map_err(|_| {
            status_with(
                ErrorClass::ResourceExhausted,
                "too many photos waiting to be embedded: retry shortly",
            )
        })?;
        let running = workers
            .running
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| status_with(ErrorClass::Unavailable, "the embed role is shutting down"))?;
        let pipeline = workers.pipeline.clone();
        let analysis = tokio::task::spawn_blocking(move || {
            let _running = running;
            let wanted = (!model_id.is_empty()).then_some(model_id.as_str());
            pipeline
                .analyze_for(&image, &options, wanted)
                .map(|(analysis, model)| (analysis, model_info(model)))
        })
        .await
        .map_err(|_| status_with(ErrorClass::Internal, "internal error"))?
        .map_err(|e| {
            if e.class() == ErrorClass::Internal {
                tracing::error!(error = %e, "face pipeline failed");
            }
            status_from(&e)
        })?;
        let (analysis, model) = analysis;
        for (stage, took) in analysis.timings.stages() {
            metrics::histogram!("biomatch_embed_stage_seconds", "stage" => stage).record(took.as_secs_f64());
        }
        metrics::histogram!("biomatch_embed_stage_seconds", "stage" => "total")
            .record(analysis.timings.total().as_secs_f64());
        let faces = analysis.faces.into_iter().map(|f| face_to_proto(f, &model)).collect();
        Ok(Response::new(EmbedResponse { faces, model: Some(model) }))
    }

    async fn describe_model(
        &self,
        request: Request<DescribeModelRequest>,
    ) -> Result<Response<ModelInfo>, Status> {
        biomatch_auth::principal(&request)?;
        Ok(Response::new(model_info(self.workers()?.pipeline.model())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configurable_model_names_are_the_shipped_models() {
        assert_eq!(biomatch_config::SHIPPED_MODELS, RecognizerModel::NAMES);
        for name in biomatch_config::SHIPPED_MODELS {
            let config = EmbedConfig {
                model_dir: Some("models".into()),
                model: Some(name.into()),
                ..EmbedConfig::default()
            };
            let face = face_config(&config).expect("model_dir is set");
            assert_eq!(Some(face.recognizer), RecognizerModel::named(name), "{name}");
        }
    }

    #[test]
    fn the_default_fusion_gives_way_to_sface_in_a_directory_without_dlib() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = EmbedConfig { model_dir: Some(dir.path().into()), ..EmbedConfig::default() };
        let face = face_config(&config).expect("model_dir is set");
        assert_eq!(Some(face.recognizer), RecognizerModel::named("sface"));
        assert!(face.also.is_empty());
        std::fs::write(dir.path().join(DLIB_RESNET.name), b"").expect("written");
        let face = face_config(&config).expect("model_dir is set");
        assert_eq!(Some(face.recognizer), RecognizerModel::named(DEFAULT_MODEL));
        assert_eq!(face.also, vec![RecognizerModel::named("sface").expect("shipped")]);
        // A model chosen by name is loaded as chosen (and fails to load if its file is missing).
        let chosen = EmbedConfig { model: Some(DEFAULT_MODEL.into()), ..config };
        std::fs::remove_file(dir.path().join(DLIB_RESNET.name)).expect("removed");
        assert_eq!(
            Some(face_config(&chosen).expect("dir").recognizer),
            RecognizerModel::named(DEFAULT_MODEL)
        );
    }

    #[test]
    fn every_shipped_model_has_the_impostor_distribution_of_its_version() {
        for name in RecognizerModel::NAMES {
            let version = match RecognizerModel::named(name).expect("shipped") {
                RecognizerModel::Single(spec) => spec.model_version,
                // Other weights or members make another version: measure it again
                // (docs/accuracy.md) and ship that distribution instead.
                RecognizerModel::Fusion(spec) => spec.versioned().expect("valid"),
            };
            if name == "dlib_resnet" {
                // Not a model for galleries on its own (a fusion member): nothing shipped.
                continue;
            }
            let tail = biomatch_domain::builtin_impostor_tail(name, &version);
            assert!(tail.is_some(), "no shipped impostor distribution for {name} {version}");
        }
    }
}
