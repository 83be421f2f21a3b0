//! Fusion of recognisers: one template from several networks, each with its own preprocessing.
//!
//! A [`FusionSpec`] lists members (a [`RecognizerSpec`] and a weight each). Every member embeds
//! its own aligned crop of the face; its L2-normalised template is scaled by `sqrt(w_i)`, with the
//! weights normalised to sum to 1, and the scaled templates are concatenated in member order. So
//! the inner product of two fused templates is the weighted sum of the members' cosines, a fused
//! template has unit norm, and the matcher and the index see one ordinary vector.
//!
//! Stored templates depend on the layout: the member order, each member's model and
//! preprocessing, and the normalised weights. Reordering, adding or removing a member or changing
//! a weight makes a different, incompatible model. [`FusionSpec::versioned`] therefore appends
//! a digest of the layout to the configured version, and that is the `model_version` galleries
//! record: templates of another layout are refused as another model's, never silently mixed.

use crate::FaceError;
use crate::align::Crop;
use crate::network::Runtime;
use crate::recognizer::{ChannelOrder, ModelInfo, OnnxRecognizer, Recognizer, RecognizerSpec};
use image::RgbImage;
use sha2::{Digest, Sha256};
use std::ops::Range;
use std::path::Path;

/// At most this many members: each one runs a network per face.
pub const MAX_MEMBERS: usize = 4;

/// Galleries take templates of at most this many values.
pub const MAX_DIMENSION: usize = 4096;

#[derive(Debug, Clone, PartialEq)]
pub struct FusionMember {
    pub recognizer: RecognizerSpec,
    /// Relative weight (finite, positive); the weights are normalised to sum to 1.
    pub weight: f32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FusionSpec {
    pub model_id: String,
    /// The operator's version; the recorded one is [`FusionSpec::versioned`].
    pub model_version: String,
    /// In template order.
    pub members: Vec<FusionMember>,
}

/// The shipped fusion's weights (SFace, dlib ResNet): each recogniser's weight is the inverse of
/// its impostor scores' standard deviation, normalised: `biomatch eval --models sface,dlib_resnet`
/// on the 615 ID portraits measured sd 0.094 for SFace and 0.031 for dlib (docs/accuracy.md).
pub const SFACE_DLIB_WEIGHTS: [f32; 2] = [0.248, 0.752];

impl FusionSpec {
    /// SFace and dlib's ResNet, 256-d: the shipped fusion (`embed.model = "sface+dlib"`).
    pub fn sface_dlib() -> Self {
        let [sface, dlib] = SFACE_DLIB_WEIGHTS;
        Self {
            model_id: "sface+dlib".into(),
            model_version: "1".into(),
            members: vec![
                FusionMember { recognizer: RecognizerSpec::sface(), weight: sface },
                FusionMember { recognizer: RecognizerSpec::dlib_resnet(), weight: dlib },
            ],
        }
    }

    /// Refuses what cannot work, before any model is read; gives the normalised weights.
    pub fn validate(&self) -> Result<Vec<f32>, FaceError> {
        if self.model_id.trim().is_empty() || self.model_version.trim().is_empty() {
            return Err(FaceError::Model("fusion needs a model_id and a model_version".into()));
        }
        for member in &self.members {
            member.recognizer.validate()?;
        }
        normalised_weights(&self.members.iter().map(|m| m.weight).collect::<Vec<_>>())
    }

    /// `model_version` + `+` + the first 8 hex digits of the SHA-256 of the layout: each member
    /// in order with its model id and version, crop, channel order, mean, std and normalised
    /// weight (weights 1:1 and 2:2 are the same fusion). Model files are not part of it: a
    /// member's model_version names its network.
    pub fn versioned(&self) -> Result<String, FaceError> {
        let weights = self.validate()?;
        let mut layout = String::new();
        for (member, weight) in self.members.iter().zip(weights) {
            let r = &member.recognizer;
            let crop = r.crop();
            let order = match r.channel_order {
                ChannelOrder::Rgb => "rgb",
                ChannelOrder::Bgr => "bgr",
            };
            layout.push_str(&format!(
                "{}\t{}\t{weight:.6}\t{}\t{:.3?}\t{order}\t{:.4?}\t{:.4?}\n",
                r.model_id, r.model_version, crop.size, crop.template, r.mean, r.std
            ));
        }
        let digest = hex::encode(Sha256::digest(layout.as_bytes()));
        Ok(format!("{}+{}", self.model_version, &digest[..8]))
    }
}

/// The weights divided by their sum: at least one, at most [`MAX_MEMBERS`], each finite and
/// positive.
pub fn normalised_weights(weights: &[f32]) -> Result<Vec<f32>, FaceError> {
    if weights.is_empty() {
        return Err(FaceError::Model("fusion needs at least one member".into()));
    }
    if weights.len() > MAX_MEMBERS {
        return Err(FaceError::Model(format!(
            "fusion has {} members; at most {MAX_MEMBERS} are allowed",
            weights.len()
        )));
    }
    if let Some((i, w)) = weights.iter().enumerate().find(|(_, w)| !w.is_finite() || **w <= 0.0) {
        return Err(FaceError::Model(format!(
            "fusion member {} has weight {w}; weights must be finite and positive",
            i + 1
        )));
    }
    let sum: f32 = weights.iter().sum();
    if !sum.is_finite() {
        return Err(FaceError::Model("fusion weights are too large".into()));
    }
    Ok(weights.iter().map(|w| w / sum).collect())
}

/// The members' L2-normalised templates, each scaled by the square root of its normalised
/// weight, concatenated in order.
pub fn combine(templates: &[Vec<f32>], weights: &[f32]) -> Result<Vec<f32>, FaceError> {
    if templates.len() != weights.len() {
        return Err(FaceError::Model(format!(
            "fusion has {} weights for {} templates",
            weights.len(),
            templates.len()
        )));
    }
    let mut fused = Vec::with_capacity(templates.iter().map(Vec::len).sum());
    for (template, weight) in templates.iter().zip(weights) {
        let scale = weight.sqrt();
        fused.extend(template.iter().map(|v| v * scale));
    }
    Ok(fused)
}

struct Member {
    recognizer: Box<dyn Recognizer>,
    weight: f32,
    /// Its crops within the fusion's.
    crops: Range<usize>,
}

/// Recognisers run one after the other on their own crops, their templates combined as the
/// module says.
pub struct FusedRecognizer {
    info: ModelInfo,
    members: Vec<Member>,
    crops: Vec<Crop>,
}

impl FusedRecognizer {
    /// Validates `spec`, loads each member's model (relative to `model_dir` unless absolute,
    /// checksum checked) and records the templates as `spec.versioned()`.
    pub fn load(spec: &FusionSpec, model_dir: &Path, runtime: &Runtime) -> Result<Self, FaceError> {
        let version = spec.versioned()?;
        let mut members: Vec<(Box<dyn Recognizer>, f32)> = Vec::with_capacity(spec.members.len());
        for member in &spec.members {
            let recognizer = OnnxRecognizer::load_from(model_dir, member.recognizer.clone(), runtime)?;
            members.push((Box::new(recognizer), member.weight));
        }
        Self::new(spec.model_id.clone(), version, members)
    }

    /// A fusion of recognisers already loaded, with relative weights, recorded as
    /// `model_version` as given (which should change whenever the members or weights do).
    pub fn new(
        model_id: String,
        model_version: String,
        members: Vec<(Box<dyn Recognizer>, f32)>,
    ) -> Result<Self, FaceError> {
        let weights = normalised_weights(&members.iter().map(|(_, w)| *w).collect::<Vec<_>>())?;
        let mut crops = Vec::new();
        let mut fused = Vec::with_capacity(members.len());
        for ((recognizer, _), weight) in members.into_iter().zip(weights) {
            let start = crops.len();
            crops.extend_from_slice(recognizer.crops());
            if crops.len() == start {
                return Err(FaceError::Model(format!(
                    "fusion member {} takes no crop",
                    recognizer.info().model_id
                )));
            }
            fused.push(Member { recognizer, weight, crops: start..crops.len() });
        }
        let dimension = fused.iter().map(|m| m.recognizer.info().dimension).sum();
        if dimension > MAX_DIMENSION {
            return Err(FaceError::Model(format!(
                "fused template would have {dimension} values; galleries take at most {MAX_DIMENSION}"
            )));
        }
        Ok(Self { info: ModelInfo { model_id, model_version, dimension }, members: fused, crops })
    }

    /// Each member's model and normalised weight, in template order.
    pub fn members(&self) -> impl Iterator<Item = (&ModelInfo, f32)> {
        self.members.iter().map(|m| (m.recognizer.info(), m.weight))
    }
}

impl Recognizer for FusedRecognizer {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn crops(&self) -> &[Crop] {
        &self.crops
    }

    fn embed(&self, crops: &[RgbImage]) -> Result<Vec<f32>, FaceError> {
        if crops.len() != self.crops.len() {
            return Err(FaceError::Model(format!(
                "fusion takes {} crops, was given {}",
                self.crops.len(),
                crops.len()
            )));
        }
        let mut templates = Vec::with_capacity(self.members.len());
        let mut weights = Vec::with_capacity(self.members.len());
        for member in &self.members {
            let template = member.recognizer.embed(&crops[member.crops.clone()])?;
            let info = member.recognizer.info();
            if template.len() != info.dimension {
                return Err(FaceError::Model(format!(
                    "fusion member {} gave {} values instead of {}",
                    info.model_id,
                    template.len(),
                    info.dimension
                )));
            }
            templates.push(template);
            weights.push(member.weight);
        }
        combine(&templates, &weights)
    }
}

#[cfg(test)]
#[path = "fusion_tests.rs"]
mod tests;
