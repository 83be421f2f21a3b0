//! `[embed]`: the face pipeline of the embed role.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The face pipeline of the embed role. Without `model_dir` the role answers UNIMPLEMENTED
/// (clusters fed vectors only); with it, both models must load or the process does not start.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmbedConfig {
    /// Where the model files are (`scripts/fetch-models.sh` installs them in `models/`).
    pub model_dir: Option<PathBuf>,
    /// Concurrent photos (decode + detect + embed run on this many blocking threads); 0: one per core.
    pub workers: usize,
    /// Photos waiting for a worker beyond this are refused with RESOURCE_EXHAUSTED.
    pub max_queued: usize,
    /// Side of the detector's square input, a multiple of 32.
    pub detector_input: u32,
    pub detection_threshold: f32,
    /// Default minimum face height in pixels.
    pub min_face_size: u32,
    pub max_image_bytes: usize,
    pub max_image_pixels: u64,
    /// Another ONNX recogniser instead of SFace.
    pub recognizer: Option<RecognizerConfig>,
    /// What runs the models.
    pub runtime: RuntimeKind,
    /// ONNX Runtime's shared library; default `libonnxruntime.so` in `model_dir`.
    pub onnxruntime_library: Option<PathBuf>,
    /// Its SHA-256, checked before it is loaded; default: that of the library
    /// `scripts/fetch-models.sh` installs when `onnxruntime_library` is not set, none otherwise.
    pub onnxruntime_sha256: Option<String>,
}

/// Which engine runs the face models (the embed role builds a `biomatch_face::Runtime` from it,
/// with the library's path and digest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeKind {
    /// ONNX Runtime, loaded from its shared library: ~2x faster than tract for SFace here.
    #[default]
    OnnxRuntime,
    /// tract: pure Rust, built in, nothing to install.
    Tract,
}

impl Default for EmbedConfig {
    fn default() -> Self {
        Self {
            model_dir: None,
            workers: 0,
            max_queued: 64,
            detector_input: 320,
            detection_threshold: 0.6,
            min_face_size: 40,
            max_image_bytes: 10 * 1024 * 1024,
            max_image_pixels: 40_000_000,
            recognizer: None,
            runtime: RuntimeKind::default(),
            onnxruntime_library: None,
            onnxruntime_sha256: None,
        }
    }
}

/// An ONNX recogniser taking one square NCHW crop and giving one vector.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecognizerConfig {
    /// Relative to `model_dir` unless absolute.
    pub file: PathBuf,
    pub sha256: Option<String>,
    pub model_id: String,
    pub model_version: String,
    #[serde(default = "default_input_size")]
    pub input_size: u32,
    /// `rgb` (the default) or `bgr`; anything else is refused when the configuration loads.
    #[serde(default)]
    pub channel_order: ChannelOrder,
    /// Per input plane, applied as (value - mean) / std to 0..255 values.
    #[serde(default)]
    pub mean: [f32; 3],
    #[serde(default = "default_std")]
    pub std: [f32; 3],
}

fn default_input_size() -> u32 {
    112
}

/// The order of the colour planes a recogniser expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelOrder {
    #[default]
    Rgb,
    Bgr,
}

fn default_std() -> [f32; 3] {
    [1.0; 3]
}
