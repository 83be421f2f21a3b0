//! Recognisers: aligned face crops in, an L2-normalised template out.
//!
//! [`Recognizer`] is what the pipeline needs: it names the crops it wants ([`Crop`]: side and
//! landmark template), the pipeline aligns each from the photo, and it embeds them.
//! [`OnnxRecognizer`] runs any ONNX model that takes one NCHW crop and gives one vector,
//! configured by [`RecognizerSpec`]: crop size, alignment template, channel order and
//! per-channel normalisation `(value - mean) / std` on 0..255 values. SFace takes BGR 0..255 as
//! is; ArcFace-style models usually take RGB with mean 127.5 and std 127.5. Several recognisers
//! combine into one template in [`crate::fusion`].

use crate::FaceError;
use crate::align::Crop;
use crate::models::read_checked;
use crate::network::{Network, Runtime};
use image::RgbImage;
use std::path::{Path, PathBuf};

/// The model a template comes from; galleries record it and refuse to mix models.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInfo {
    pub model_id: String,
    pub model_version: String,
    pub dimension: usize,
}

pub trait Recognizer: Send + Sync {
    fn info(&self) -> &ModelInfo;
    /// The aligned crops [`Recognizer::embed`] takes, in this order (at least one).
    fn crops(&self) -> &[Crop];
    /// One crop of the face per entry of [`Recognizer::crops`], in that order, in; an
    /// L2-normalised template of `info().dimension` values out.
    fn embed(&self, crops: &[RgbImage]) -> Result<Vec<f32>, FaceError>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelOrder {
    Rgb,
    Bgr,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RecognizerSpec {
    /// The ONNX file, relative to the model directory unless absolute.
    pub file: PathBuf,
    /// Its SHA-256 (hex), checked at load; strongly advised.
    pub sha256: Option<String>,
    pub model_id: String,
    pub model_version: String,
    pub input_size: u32,
    /// Where the five landmarks go in the crop (YuNet's order: right eye, left eye, nose tip,
    /// right and left mouth corners; crop pixel coordinates). `None`: the ArcFace / SFace
    /// template ([`crate::align::TEMPLATE_112`]) scaled to `input_size`.
    pub template: Option<[[f32; 2]; 5]>,
    pub channel_order: ChannelOrder,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl RecognizerSpec {
    /// OpenCV Zoo's SFace, int8 block-quantized, 128-d.
    pub fn sface() -> Self {
        Self {
            file: crate::SFACE.name.into(),
            sha256: Some(crate::SFACE.sha256.into()),
            model_id: "sface".into(),
            model_version: "2021dec-int8bq".into(),
            input_size: 112,
            template: None,
            channel_order: ChannelOrder::Bgr,
            mean: [0.0; 3],
            std: [1.0; 3],
        }
    }

    /// dlib's ResNet face recogniser converted to ONNX ([`crate::DLIB_RESNET`]), 128-d: RGB,
    /// `(value - mean) / 256`, on dlib's 150 x 150 face chip with padding 0.25.
    pub fn dlib_resnet() -> Self {
        Self {
            file: crate::DLIB_RESNET.name.into(),
            sha256: Some(crate::DLIB_RESNET.sha256.into()),
            model_id: "dlib_resnet".into(),
            model_version: "v1".into(),
            input_size: 150,
            template: Some(crate::align::TEMPLATE_DLIB_150),
            channel_order: ChannelOrder::Rgb,
            mean: [122.782, 117.001, 104.298],
            std: [256.0; 3],
        }
    }

    /// The crop it takes.
    pub fn crop(&self) -> Crop {
        match self.template {
            Some(template) => Crop { size: self.input_size, template },
            None => Crop::standard(self.input_size),
        }
    }

    /// Refuses what cannot work, before the model is read.
    pub fn validate(&self) -> Result<(), FaceError> {
        let what = &self.model_id;
        if !(32..=1024).contains(&self.input_size) {
            return Err(FaceError::Model(format!(
                "recogniser {what}: input size {} is out of range (32 to 1024)",
                self.input_size
            )));
        }
        if self.std.iter().any(|s| !s.is_finite() || *s == 0.0) || self.mean.iter().any(|m| !m.is_finite()) {
            return Err(FaceError::Model(format!("recogniser {what}: mean must be finite and std non-zero")));
        }
        let side = self.input_size as f32;
        let template = self.crop().template;
        if template.iter().flatten().any(|v| !v.is_finite() || !(0.0..=side).contains(v)) {
            return Err(FaceError::Model(format!(
                "recogniser {what}: template points must lie in the {side}x{side} crop"
            )));
        }
        let [right_eye, left_eye, ..] = template;
        let eyes = (left_eye[0] - right_eye[0]).hypot(left_eye[1] - right_eye[1]);
        if eyes < 1.0 {
            return Err(FaceError::Model(format!(
                "recogniser {what}: template eyes must be at least a pixel apart"
            )));
        }
        Ok(())
    }
}

pub struct OnnxRecognizer {
    spec: RecognizerSpec,
    crop: Crop,
    network: Network,
    info: ModelInfo,
}

impl OnnxRecognizer {
    /// Reads `spec.file` (relative to `model_dir` unless absolute), checks its SHA-256 when the
    /// spec gives one, and loads it.
    pub fn load_from(model_dir: &Path, spec: RecognizerSpec, runtime: &Runtime) -> Result<Self, FaceError> {
        spec.validate()?;
        let bytes = read_checked(&model_dir.join(&spec.file), spec.sha256.as_deref())?;
        Self::load(&bytes, spec, runtime)
    }

    pub fn load(model: &[u8], spec: RecognizerSpec, runtime: &Runtime) -> Result<Self, FaceError> {
        spec.validate()?;
        let side = spec.input_size as usize;
        let what = format!("recogniser {}", spec.model_id);
        let network = Network::load(model, &[1, 3, side, side], &what, runtime)?;
        let info = ModelInfo {
            model_id: spec.model_id.clone(),
            model_version: spec.model_version.clone(),
            dimension: 0,
        };
        let crop = spec.crop();
        let mut recognizer = Self { info, network, spec, crop };
        // One run on a grey crop gives the output dimension and proves the model runs.
        let probe = RgbImage::from_pixel(side as u32, side as u32, image::Rgb([128; 3]));
        let dimension = recognizer.raw(&probe)?.len();
        if dimension == 0 {
            return Err(FaceError::Model("recogniser gives an empty output".into()));
        }
        recognizer.info.dimension = dimension;
        Ok(recognizer)
    }

    fn raw(&self, aligned: &RgbImage) -> Result<Vec<f32>, FaceError> {
        let side = self.spec.input_size as usize;
        if aligned.dimensions() != (self.spec.input_size, self.spec.input_size) {
            return Err(FaceError::Model(format!("crop must be {side}x{side}")));
        }
        let order: [usize; 3] = match self.spec.channel_order {
            ChannelOrder::Rgb => [0, 1, 2],
            ChannelOrder::Bgr => [2, 1, 0],
        };
        let mut input = vec![0f32; 3 * side * side];
        for (i, pixel) in aligned.pixels().enumerate() {
            for (plane, &source) in order.iter().enumerate() {
                input[plane * side * side + i] =
                    (f32::from(pixel.0[source]) - self.spec.mean[plane]) / self.spec.std[plane];
            }
        }
        let outputs = self.network.run(input)?;
        outputs.into_iter().next().ok_or_else(|| FaceError::Model("recogniser gave no output".into()))
    }

    /// Side of the square aligned crop it takes.
    pub fn input_size(&self) -> u32 {
        self.spec.input_size
    }

    /// The template of one crop aligned as [`OnnxRecognizer::crop`] says.
    pub fn embed_crop(&self, aligned: &RgbImage) -> Result<Vec<f32>, FaceError> {
        let mut values = self.raw(aligned)?;
        let norm = values.iter().map(|v| v * v).sum::<f32>().sqrt();
        if !norm.is_finite() || norm < 1e-12 {
            return Err(FaceError::Model("recogniser gave an empty or non-finite template".into()));
        }
        values.iter_mut().for_each(|v| *v /= norm);
        Ok(values)
    }

    /// The crop it takes.
    pub fn crop(&self) -> &Crop {
        &self.crop
    }
}

impl Recognizer for OnnxRecognizer {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn crops(&self) -> &[Crop] {
        std::slice::from_ref(&self.crop)
    }

    fn embed(&self, crops: &[RgbImage]) -> Result<Vec<f32>, FaceError> {
        match crops {
            [aligned] => self.embed_crop(aligned),
            _ => Err(FaceError::Model(format!("recogniser takes 1 crop, was given {}", crops.len()))),
        }
    }
}
