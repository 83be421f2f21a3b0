//! `[embed]`: the face pipeline of the embed role.
//!
//! The recogniser is the shipped fusion of SFace and dlib's ResNet (`sface+dlib`, with SFace
//! loaded beside it) unless `embed.model` names another the project ships (`sface`,
//! `dlib_resnet`), `[embed.recognizer]` names another ONNX model, or
//! `[embed.fusion]` combines several (each with its own crop and preprocessing) into one
//! template; the three are exclusive. A fusion, as TOML:
//!
//! ```toml
//! [embed.fusion]
//! model_id = "sface+mbf"
//! model_version = "1"        # recorded as "1+<digest of the members and weights>"
//! [[embed.fusion.members]]   # first in the template
//! file = "face_recognition_sface_2021dec_int8bq.onnx"
//! model_id = "sface"
//! model_version = "2021dec-int8bq"
//! channel_order = "bgr"
//! weight = 0.5
//! [[embed.fusion.members]]
//! file = "customer/w600k_mbf.onnx"
//! model_id = "w600k_mbf"
//! model_version = "buffalo_s"
//! mean = [127.5, 127.5, 127.5]
//! std = [127.5, 127.5, 127.5]
//! weight = 0.5
//! # template = [[38.29, 51.70], [73.53, 51.50], [56.03, 71.74], [41.55, 92.37], [70.73, 92.20]]
//! ```

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::path::PathBuf;

/// The face pipeline of the embed role. Without `model_dir` the role answers UNIMPLEMENTED
/// (clusters fed vectors only); with it, every model must load or the process does not start.
/// A configuration naming both a recogniser and a fusion, or misplacing weights, is refused when
/// it is read ([`EmbedConfig::validate`]).
// `remote = "Self"`: the derived (de)serialisers become inherent functions, which the trait
// impls below wrap to validate after reading.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(remote = "Self", default, deny_unknown_fields)]
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
    /// A model the project ships, by name: `sface`, `dlib_resnet`, or `sface+dlib` (the two
    /// fused, the default: [`DEFAULT_MODEL`]); not with `recognizer` or `fusion`.
    pub model: Option<String>,
    /// Shipped models loaded beside the default one (by the same names as `model`): a photo for a
    /// gallery of one of them is embedded by it, so galleries of several models share the role.
    pub also_models: Vec<String>,
    /// Another ONNX recogniser instead of SFace.
    pub recognizer: Option<RecognizerConfig>,
    /// Several ONNX recognisers fused into one template, instead of SFace (not with `recognizer`).
    pub fusion: Option<FusionConfig>,
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
            model: None,
            also_models: Vec::new(),
            recognizer: None,
            fusion: None,
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
    /// Where the five landmarks go in the crop, `[[x, y], ...]` in crop pixels (right eye, left
    /// eye, nose tip, right and left mouth corners); default: the ArcFace template scaled to
    /// `input_size`.
    #[serde(default)]
    pub template: Option<[[f32; 2]; 5]>,
    /// A fusion member's relative weight (required there; refused elsewhere). Finite and
    /// positive; the weights are normalised to sum to 1.
    #[serde(default)]
    pub weight: Option<f32>,
}

/// Recognisers whose templates are concatenated, each L2-normalised and scaled by the square
/// root of its normalised weight: two fused templates score the weighted sum of the members'
/// cosines. Stored templates depend on the members, their order and weights; the version
/// recorded with them is `model_version` plus a digest of those, so changing any of them makes a
/// new model that galleries of the old one refuse.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FusionConfig {
    pub model_id: String,
    pub model_version: String,
    /// In template order; at least one, at most four, each with a `weight`.
    pub members: Vec<RecognizerConfig>,
}

/// The models the project ships, by the names `embed.model` takes (the face crate's
/// `RecognizerModel::NAMES`; the embed crate checks the two agree).
pub const SHIPPED_MODELS: [&str; 3] = ["sface", "dlib_resnet", "sface+dlib"];

/// The shipped model the embed role uses when the configuration chooses none (no `model`,
/// `recognizer` or `fusion`): SFace fused with dlib's ResNet, 256-d.
pub const DEFAULT_MODEL: &str = "sface+dlib";

impl EmbedConfig {
    /// The shipped model to embed with unless a recogniser or fusion is configured (the named
    /// one, or [`DEFAULT_MODEL`] when nothing is chosen), and the shipped models loaded beside
    /// it. Beside the default, SFace is loaded too, so galleries of SFace templates made before
    /// the default changed keep being served.
    pub fn shipped_models(&self) -> (Option<&str>, Vec<&str>) {
        let defaulted = self.model.is_none() && self.recognizer.is_none() && self.fusion.is_none();
        let primary = if defaulted { Some(DEFAULT_MODEL) } else { self.model.as_deref() };
        let wanted = self.also_models.iter().map(String::as_str).chain(defaulted.then_some("sface"));
        let mut also: Vec<&str> = Vec::new();
        for model in wanted {
            if Some(model) != primary && !also.contains(&model) {
                also.push(model);
            }
        }
        (primary, also)
    }

    /// What the face crate cannot see: a recogniser and a fusion together, weights outside a
    /// fusion or missing in one. Weights' values, member counts and templates are checked when
    /// the models load.
    pub fn validate(&self) -> Result<(), String> {
        let chosen = [self.model.is_some(), self.recognizer.is_some(), self.fusion.is_some()];
        if chosen.iter().filter(|c| **c).count() > 1 {
            return Err("embed.model, embed.recognizer and embed.fusion are exclusive: configure one".into());
        }
        let named = self.model.iter().map(|m| ("embed.model", m));
        for (field, model) in named.chain(self.also_models.iter().map(|m| ("embed.also_models", m))) {
            if !SHIPPED_MODELS.contains(&model.as_str()) {
                return Err(format!("{field} {model:?} is not one of {}", SHIPPED_MODELS.join(", ")));
            }
        }
        if self.recognizer.as_ref().is_some_and(|r| r.weight.is_some()) {
            return Err("embed.recognizer.weight is only for embed.fusion.members".into());
        }
        if let Some(fusion) = &self.fusion
            && let Some(i) = fusion.members.iter().position(|m| m.weight.is_none())
        {
            return Err(format!("embed.fusion.members[{i}] ({}) needs a weight", fusion.members[i].model_id));
        }
        Ok(())
    }
}

impl<'de> Deserialize<'de> for EmbedConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let config = EmbedConfig::deserialize(deserializer)?;
        config.validate().map_err(serde::de::Error::custom)?;
        Ok(config)
    }
}

impl Serialize for EmbedConfig {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        EmbedConfig::serialize(self, serializer)
    }
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
