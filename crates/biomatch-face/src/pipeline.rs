//! The whole pipeline for one photo, with the time each stage took.

use crate::align::align;
use crate::decode::{ImageLimits, decode};
use crate::detector::Detector;
use crate::models::read_checked;
use crate::network::Runtime;
use crate::quality::{Quality, assess};
use crate::recognizer::{ModelInfo, OnnxRecognizer, Recognizer, RecognizerSpec};
use crate::{FaceError, YUNET};
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq)]
pub struct FaceConfig {
    /// Where the model files are (the detector's name is fixed; the recogniser's is in `recognizer`).
    pub model_dir: PathBuf,
    /// Side of the detector's square input (multiple of 32): the photo is scaled to fit it.
    pub detector_input: u32,
    pub detection_threshold: f32,
    /// Faces whose box is less tall than this (photo pixels) are ignored unless a request says otherwise.
    pub min_face_size: u32,
    pub limits: ImageLimits,
    pub recognizer: RecognizerSpec,
    pub runtime: Runtime,
}

impl FaceConfig {
    /// The default settings for the models in `model_dir`, run by `runtime`.
    pub fn new(model_dir: impl Into<PathBuf>, runtime: Runtime) -> Self {
        Self {
            model_dir: model_dir.into(),
            detector_input: 320,
            detection_threshold: 0.6,
            min_face_size: 40,
            limits: ImageLimits::default(),
            recognizer: RecognizerSpec::sface(),
            runtime,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FaceOptions {
    /// 0: every face.
    pub max_faces: usize,
    /// Overrides the configured minimum face height.
    pub min_face_size: Option<u32>,
    pub largest_only: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Face {
    /// Left, top, width, height in the photo's pixels.
    pub bbox: [f32; 4],
    pub landmarks: [[f32; 2]; 5],
    pub detection_score: f32,
    pub quality: Quality,
    /// L2-normalised.
    pub embedding: Vec<f32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StageTimings {
    pub decode: Duration,
    pub detect: Duration,
    pub align: Duration,
    pub quality: Duration,
    pub embed: Duration,
}

impl StageTimings {
    pub fn total(&self) -> Duration {
        self.decode + self.detect + self.align + self.quality + self.embed
    }

    pub fn stages(&self) -> [(&'static str, Duration); 5] {
        [
            ("decode", self.decode),
            ("detect", self.detect),
            ("align", self.align),
            ("quality", self.quality),
            ("embed", self.embed),
        ]
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Analysis {
    /// Largest first.
    pub faces: Vec<Face>,
    pub timings: StageTimings,
}

pub struct FacePipeline {
    detector: Detector,
    recognizer: Box<dyn Recognizer>,
    limits: ImageLimits,
    min_face_size: u32,
}

impl FacePipeline {
    /// Loads and checks both models; a missing, corrupt or foreign file is an error naming it.
    pub fn load(config: &FaceConfig) -> Result<Self, FaceError> {
        let detector_bytes = read_checked(&config.model_dir.join(YUNET.name), Some(YUNET.sha256))?;
        let detector = Detector::load(
            &detector_bytes,
            config.detector_input,
            config.detection_threshold,
            &config.runtime,
        )?;
        let spec = config.recognizer.clone();
        let path = config.model_dir.join(&spec.file);
        let recognizer_bytes = read_checked(&path, spec.sha256.as_deref())?;
        let recognizer = OnnxRecognizer::load(&recognizer_bytes, spec, &config.runtime)?;
        Ok(Self {
            detector,
            recognizer: Box::new(recognizer),
            limits: config.limits,
            min_face_size: config.min_face_size,
        })
    }

    pub fn model(&self) -> &ModelInfo {
        self.recognizer.info()
    }

    pub fn limits(&self) -> &ImageLimits {
        &self.limits
    }

    /// Every face of at least the minimum size (largest first, cut to the options), each
    /// aligned, assessed and embedded. No face is an error saying why.
    pub fn analyze(&self, bytes: &[u8], options: &FaceOptions) -> Result<Analysis, FaceError> {
        let mut timings = StageTimings::default();
        let started = Instant::now();
        let image = decode(bytes, &self.limits)?;
        timings.decode = started.elapsed();

        let started = Instant::now();
        let mut detections = self.detector.detect(&image)?;
        timings.detect = started.elapsed();
        let min = options.min_face_size.unwrap_or(self.min_face_size) as f32;
        let found = detections.len();
        detections.retain(|d| d.bbox[3] >= min);
        if detections.is_empty() {
            let why = match found {
                0 => String::new(),
                n => format!(" ({n} face(s) smaller than {min} px ignored)"),
            };
            return Err(FaceError::NoFace(why));
        }
        detections.sort_by(|a, b| b.area().total_cmp(&a.area()));
        if options.largest_only {
            detections.truncate(1);
        }
        if options.max_faces > 0 {
            detections.truncate(options.max_faces);
        }

        let size = self.recognizer.input_size();
        let mut faces = Vec::with_capacity(detections.len());
        for d in detections {
            let started = Instant::now();
            let aligned = align(&image, &d.landmarks, size);
            timings.align += started.elapsed();
            let started = Instant::now();
            let quality = assess(&d.landmarks, &aligned);
            timings.quality += started.elapsed();
            let started = Instant::now();
            let embedding = self.recognizer.embed(&aligned)?;
            timings.embed += started.elapsed();
            faces.push(Face {
                bbox: d.bbox,
                landmarks: d.landmarks,
                detection_score: d.score,
                quality,
                embedding,
            });
        }
        Ok(Analysis { faces, timings })
    }
}
