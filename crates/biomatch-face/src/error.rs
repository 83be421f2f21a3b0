//! What can go wrong with a photo or a model, with the class a caller sees.

use biomatch_domain::{Classified, ErrorClass};

#[derive(Debug, thiserror::Error)]
pub enum FaceError {
    #[error("not an image: expected JPEG, PNG or WebP")]
    NotAnImage,
    #[error("image is {bytes} bytes; the limit is {limit} bytes")]
    TooLarge { bytes: usize, limit: usize },
    #[error("image declares {width}x{height} pixels; the limit is {limit} pixels")]
    TooManyPixels { width: u32, height: u32, limit: u64 },
    #[error("image is {width}x{height} pixels; at least {min}x{min} is needed")]
    TooSmall { width: u32, height: u32, min: u32 },
    #[error("image could not be decoded: {0}")]
    Corrupt(String),
    #[error("no face found in the image{0}")]
    NoFace(String),
    #[error("{0} faces found where exactly one is required")]
    SeveralFaces(usize),
    #[error("face model: {0}")]
    Model(String),
}

impl Classified for FaceError {
    fn class(&self) -> ErrorClass {
        match self {
            FaceError::Model(_) => ErrorClass::Internal,
            _ => ErrorClass::InvalidArgument,
        }
    }
}
