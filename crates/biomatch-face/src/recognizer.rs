//! Recognisers: an aligned face crop in, an L2-normalised template out.
//!
//! [`Recognizer`] is what the pipeline needs; [`OnnxRecognizer`] runs any ONNX model that takes
//! one NCHW crop and gives one vector, configured by [`RecognizerSpec`]: crop size, channel
//! order and per-channel normalisation `(value - mean) / std` on 0..255 values. SFace takes BGR
//! 0..255 as is; ArcFace-style models usually take RGB with mean 127.5 and std 127.5.

use crate::FaceError;
use crate::network::{Network, Runtime};
use image::RgbImage;
use std::path::PathBuf;

/// The model a template comes from; galleries record it and refuse to mix models.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInfo {
    pub model_id: String,
    pub model_version: String,
    pub dimension: usize,
}

pub trait Recognizer: Send + Sync {
    fn info(&self) -> &ModelInfo;
    /// Side of the square aligned crop it takes.
    fn input_size(&self) -> u32;
    fn embed(&self, aligned: &RgbImage) -> Result<Vec<f32>, FaceError>;
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
            channel_order: ChannelOrder::Bgr,
            mean: [0.0; 3],
            std: [1.0; 3],
        }
    }
}

pub struct OnnxRecognizer {
    spec: RecognizerSpec,
    network: Network,
    info: ModelInfo,
}

impl OnnxRecognizer {
    pub fn load(model: &[u8], spec: RecognizerSpec, runtime: &Runtime) -> Result<Self, FaceError> {
        if !(32..=1024).contains(&spec.input_size) {
            return Err(FaceError::Model(format!(
                "recogniser input size {} is out of range",
                spec.input_size
            )));
        }
        if spec.std.iter().any(|s| !s.is_finite() || *s == 0.0) || spec.mean.iter().any(|m| !m.is_finite()) {
            return Err(FaceError::Model("recogniser mean must be finite and std non-zero".into()));
        }
        let side = spec.input_size as usize;
        let what = format!("recogniser {}", spec.model_id);
        let network = Network::load(model, &[1, 3, side, side], &what, runtime)?;
        let info = ModelInfo {
            model_id: spec.model_id.clone(),
            model_version: spec.model_version.clone(),
            dimension: 0,
        };
        let mut recognizer = Self { info, network, spec };
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
}

impl Recognizer for OnnxRecognizer {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn input_size(&self) -> u32 {
        self.spec.input_size
    }

    fn embed(&self, aligned: &RgbImage) -> Result<Vec<f32>, FaceError> {
        let mut values = self.raw(aligned)?;
        let norm = values.iter().map(|v| v * v).sum::<f32>().sqrt();
        if !norm.is_finite() || norm < 1e-12 {
            return Err(FaceError::Model("recogniser gave an empty or non-finite template".into()));
        }
        values.iter_mut().for_each(|v| *v /= norm);
        Ok(values)
    }
}
