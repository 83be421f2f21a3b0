//! The whole pipeline for one photo, with the time each stage took.
//!
//! One detector and one or more recognisers: the configured one, which answers by default, and
//! any others loaded beside it (`also`), so that galleries of different models share one embed
//! role; a request names the model it wants ([`FacePipeline::analyze_for`]).
//!
//! Each face is aligned once per distinct crop the recogniser asks for (a fusion's members may
//! each want their own size and template). Quality is always assessed on the standard 112 x 112
//! ArcFace crop, whatever the recogniser: its sharpness and exposure scales were calibrated on
//! that crop, and so a face's quality does not depend on the gallery's model (with SFace, or any
//! member taking that crop, it is the recogniser's own crop, aligned once).

use crate::align::{Crop, align_to};
use crate::decode::{ImageLimits, decode};
use crate::detector::Detector;
use crate::fusion::{FusedRecognizer, FusionSpec};
use crate::models::read_checked;
use crate::network::Runtime;
use crate::quality::{Quality, assess};
use crate::recognizer::{ModelInfo, OnnxRecognizer, Recognizer, RecognizerSpec};
use crate::{FaceError, YUNET};
use image::RgbImage;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// What makes the templates: one recogniser, or a fusion of several.
#[derive(Debug, Clone, PartialEq)]
pub enum RecognizerModel {
    Single(RecognizerSpec),
    Fusion(FusionSpec),
}

impl RecognizerModel {
    /// The models the project ships, by the name configuration uses (`embed.model`).
    pub const NAMES: [&str; 3] = ["sface", "dlib_resnet", "sface+dlib"];

    /// A shipped model by name ([`RecognizerModel::NAMES`]).
    pub fn named(name: &str) -> Option<Self> {
        match name {
            "sface" => Some(RecognizerSpec::sface().into()),
            "dlib_resnet" => Some(RecognizerSpec::dlib_resnet().into()),
            "sface+dlib" => Some(FusionSpec::sface_dlib().into()),
            _ => None,
        }
    }
}

impl From<RecognizerSpec> for RecognizerModel {
    fn from(spec: RecognizerSpec) -> Self {
        RecognizerModel::Single(spec)
    }
}

impl From<FusionSpec> for RecognizerModel {
    fn from(spec: FusionSpec) -> Self {
        RecognizerModel::Fusion(spec)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct FaceConfig {
    /// Where the model files are (the detector's name is fixed; the recognisers' are in `recognizer`).
    pub model_dir: PathBuf,
    /// Side of the detector's square input (multiple of 32): the photo is scaled to fit it.
    pub detector_input: u32,
    pub detection_threshold: f32,
    /// Faces whose box is less tall than this (photo pixels) are ignored unless a request says otherwise.
    pub min_face_size: u32,
    pub limits: ImageLimits,
    pub recognizer: RecognizerModel,
    /// Other recognisers loaded beside it, for requests that name them.
    pub also: Vec<RecognizerModel>,
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
            recognizer: RecognizerSpec::sface().into(),
            also: Vec::new(),
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
    /// Every recogniser of a fusion, together.
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
    /// The default first; model ids distinct.
    recognizers: Vec<Box<dyn Recognizer>>,
    limits: ImageLimits,
    min_face_size: u32,
}

impl FacePipeline {
    /// Loads and checks every model; a missing, corrupt or foreign file is an error naming it.
    pub fn load(config: &FaceConfig) -> Result<Self, FaceError> {
        let models: Vec<&RecognizerModel> = std::iter::once(&config.recognizer).chain(&config.also).collect();
        // A recogniser's settings are checked before any model is read.
        for model in &models {
            match model {
                RecognizerModel::Single(spec) => spec.validate()?,
                RecognizerModel::Fusion(spec) => {
                    spec.validate()?;
                }
            }
        }
        let detector_bytes = read_checked(&config.model_dir.join(YUNET.name), Some(YUNET.sha256))?;
        let detector = Detector::load(
            &detector_bytes,
            config.detector_input,
            config.detection_threshold,
            &config.runtime,
        )?;
        let (dir, runtime) = (&config.model_dir, &config.runtime);
        let mut recognizers: Vec<Box<dyn Recognizer>> = Vec::with_capacity(models.len());
        for model in models {
            let recognizer: Box<dyn Recognizer> = match model {
                RecognizerModel::Single(spec) => {
                    Box::new(OnnxRecognizer::load_from(dir, spec.clone(), runtime)?)
                }
                RecognizerModel::Fusion(spec) => Box::new(FusedRecognizer::load(spec, dir, runtime)?),
            };
            let id = &recognizer.info().model_id;
            if recognizers.iter().any(|r| &r.info().model_id == id) {
                return Err(FaceError::Model(format!("model {id} is configured twice")));
            }
            recognizers.push(recognizer);
        }
        Ok(Self { detector, recognizers, limits: config.limits, min_face_size: config.min_face_size })
    }

    /// The default model.
    pub fn model(&self) -> &ModelInfo {
        self.recognizers[0].info()
    }

    /// Every model loaded, the default first.
    pub fn models(&self) -> impl Iterator<Item = &ModelInfo> {
        self.recognizers.iter().map(|r| r.info())
    }

    /// The recogniser of `model_id`, or the default one when none is named or none has that id
    /// (a gallery of another model then refuses the template as another model's).
    fn recognizer(&self, model_id: Option<&str>) -> &dyn Recognizer {
        let named = model_id.and_then(|id| self.recognizers.iter().find(|r| r.info().model_id == id));
        named.unwrap_or(&self.recognizers[0]).as_ref()
    }

    pub fn limits(&self) -> &ImageLimits {
        &self.limits
    }

    /// Every face of at least the minimum size (largest first, cut to the options), each
    /// aligned, assessed and embedded by the default model. No face is an error saying why.
    pub fn analyze(&self, bytes: &[u8], options: &FaceOptions) -> Result<Analysis, FaceError> {
        self.analyze_for(bytes, options, None).map(|(analysis, _)| analysis)
    }

    /// As [`FacePipeline::analyze`], embedded by the model `model_id` names when it is loaded
    /// (the default otherwise); with the model that embedded the faces.
    pub fn analyze_for(
        &self,
        bytes: &[u8],
        options: &FaceOptions,
        model_id: Option<&str>,
    ) -> Result<(Analysis, &ModelInfo), FaceError> {
        let recognizer = self.recognizer(model_id);
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

        let wanted = recognizer.crops();
        let standard = Crop::standard(112);
        let mut faces = Vec::with_capacity(detections.len());
        for d in detections {
            let started = Instant::now();
            let mut crops: Vec<RgbImage> = Vec::with_capacity(wanted.len());
            for (i, crop) in wanted.iter().enumerate() {
                let aligned = match wanted[..i].iter().position(|c| c == crop) {
                    Some(same) => crops[same].clone(),
                    None => align_to(&image, &d.landmarks, crop),
                };
                crops.push(aligned);
            }
            let own;
            let for_quality = match wanted.iter().position(|c| *c == standard) {
                Some(i) => &crops[i],
                None => {
                    own = align_to(&image, &d.landmarks, &standard);
                    &own
                }
            };
            timings.align += started.elapsed();
            let started = Instant::now();
            let quality = assess(&d.landmarks, for_quality);
            timings.quality += started.elapsed();
            let started = Instant::now();
            let embedding = recognizer.embed(&crops)?;
            timings.embed += started.elapsed();
            faces.push(Face {
                bbox: d.bbox,
                landmarks: d.landmarks,
                detection_score: d.score,
                quality,
                embedding,
            });
        }
        Ok((Analysis { faces, timings }, recognizer.info()))
    }
}
