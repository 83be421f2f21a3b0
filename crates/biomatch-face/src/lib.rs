//! The face pipeline of the embed role: a photo's bytes in; every face out with its box, five
//! landmarks, detection score, quality and template.
//!
//! Stages: [`decode`] (JPEG, PNG or WebP, refused by its declared size before any pixel is
//! decoded), [`detector`] (YuNet), [`align`] (similarity transform of the five landmarks onto
//! the recogniser's template), [`quality`] (size, sharpness, pose, exposure) and [`recognizer`]
//! (an ONNX model behind a trait: SFace by default, other recognisers by configuration, or a
//! [`fusion`] of several, each on its own crop, as one template). Models
//! run in [`network`]: in pure Rust with tract, or in ONNX Runtime loaded from its shared library
//! (faster); [`onnx_fold`] turns the block-quantized weights of OpenCV Zoo's int8 models into
//! fp32 constants and fixes the input size. Nothing here logs: images, crops and
//! templates never leave the returned values.
#![forbid(unsafe_code)]

pub mod align;
pub mod decode;
pub mod detector;
mod error;
pub mod fusion;
mod models;
pub mod network;
pub mod onnx_fold;
mod pipeline;
pub mod quality;
pub mod recognizer;
pub mod testing;

pub use align::Crop;
pub use decode::ImageLimits;
pub use error::FaceError;
pub use fusion::{FusedRecognizer, FusionMember, FusionSpec};
pub use models::{DLIB_RESNET, ModelFile, ONNXRUNTIME, SFACE, YUNET};
pub use network::Runtime;
pub use pipeline::{Analysis, Face, FaceConfig, FaceOptions, FacePipeline, RecognizerModel, StageTimings};
pub use quality::Quality;
pub use recognizer::{ChannelOrder, ModelInfo, OnnxRecognizer, Recognizer, RecognizerSpec};
