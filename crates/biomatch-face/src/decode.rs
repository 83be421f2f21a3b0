//! Photo bytes to RGB pixels, refusing what is not a usable photo before spending memory on it.
//!
//! Order of checks: byte size; format by its magic bytes (JPEG, PNG, WebP only); for JPEG, the
//! end-of-image marker (a truncated upload otherwise decodes into a grey-filled picture); the
//! dimensions the header declares (a decompression bomb is a small file declaring a huge
//! size, refused here before any pixel is decoded); then the decode itself, under an allocation
//! limit, with the EXIF orientation applied.

use crate::FaceError;
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, RgbImage};
use std::io::Cursor;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageLimits {
    pub max_bytes: usize,
    /// Width times height, as declared by the header.
    pub max_pixels: u64,
    /// The smaller side must be at least this.
    pub min_side: u32,
}

impl Default for ImageLimits {
    fn default() -> Self {
        Self { max_bytes: 10 * 1024 * 1024, max_pixels: 40_000_000, min_side: 64 }
    }
}

/// Decodes a photo to 8-bit RGB, upright.
pub fn decode(bytes: &[u8], limits: &ImageLimits) -> Result<RgbImage, FaceError> {
    if bytes.len() > limits.max_bytes {
        return Err(FaceError::TooLarge { bytes: bytes.len(), limit: limits.max_bytes });
    }
    let format = image::guess_format(bytes)
        .ok()
        .filter(|f| matches!(f, ImageFormat::Jpeg | ImageFormat::Png | ImageFormat::WebP))
        .ok_or(FaceError::NotAnImage)?;
    if format == ImageFormat::Jpeg && !ends_with_jpeg_eoi(bytes) {
        return Err(FaceError::Corrupt("truncated JPEG: the end-of-image marker is missing".into()));
    }
    let corrupt = |e: image::ImageError| FaceError::Corrupt(e.to_string());
    let (width, height) =
        ImageReader::with_format(Cursor::new(bytes), format).into_dimensions().map_err(corrupt)?;
    let pixels = u64::from(width) * u64::from(height);
    if pixels > limits.max_pixels {
        return Err(FaceError::TooManyPixels { width, height, limit: limits.max_pixels });
    }
    if width.min(height) < limits.min_side {
        return Err(FaceError::TooSmall { width, height, min: limits.min_side });
    }
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut decode_limits = image::Limits::default();
    decode_limits.max_image_width = Some(width);
    decode_limits.max_image_height = Some(height);
    // RGBA16 at most, twice over for conversions.
    decode_limits.max_alloc = Some(pixels * 8 * 2);
    reader.limits(decode_limits);
    let mut decoder = reader.into_decoder().map_err(corrupt)?;
    let orientation = decoder.orientation().unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut image = DynamicImage::from_decoder(decoder).map_err(corrupt)?;
    image.apply_orientation(orientation);
    Ok(image.into_rgb8())
}

/// A complete JPEG ends with FF D9 (trailing zero padding allowed).
fn ends_with_jpeg_eoi(bytes: &[u8]) -> bool {
    let end = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    bytes[..end].ends_with(&[0xFF, 0xD9])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(image: &RgbImage, format: ImageFormat) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        image.write_to(&mut out, format).expect("encode");
        out.into_inner()
    }

    fn photo(width: u32, height: u32) -> RgbImage {
        RgbImage::from_fn(width, height, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, 128]))
    }

    #[test]
    fn every_supported_format_decodes() {
        let limits = ImageLimits::default();
        for format in [ImageFormat::Jpeg, ImageFormat::Png, ImageFormat::WebP] {
            let decoded = decode(&encode(&photo(120, 90), format), &limits).expect("decodes");
            assert_eq!(decoded.dimensions(), (120, 90), "{format:?}");
        }
    }

    #[test]
    fn bad_photos_get_precise_errors() {
        let limits = ImageLimits::default();
        let err = |bytes: &[u8]| decode(bytes, &limits).expect_err("refused").to_string();
        assert!(err(b"%PDF-1.7 not a photo").starts_with("not an image"));
        assert!(err(&[]).starts_with("not an image"));

        let jpeg = encode(&photo(200, 200), ImageFormat::Jpeg);
        assert!(err(&jpeg[..jpeg.len() / 2]).contains("truncated JPEG"));
        let png = encode(&photo(200, 200), ImageFormat::Png);
        assert!(err(&png[..png.len() / 2]).starts_with("image could not be decoded"));

        assert!(err(&encode(&photo(1, 1), ImageFormat::Png)).contains("1x1 pixels; at least 64x64"));

        let small = ImageLimits { max_bytes: 1000, ..limits };
        let too_big = decode(&png, &small).expect_err("refused").to_string();
        assert!(too_big.contains("the limit is 1000 bytes"), "{too_big}");
    }

    #[test]
    fn a_decompression_bomb_is_refused_by_its_declared_size() {
        let png = crate::testing::decompression_bomb(100_000);
        assert!(png.len() < 100);
        let err = decode(&png, &ImageLimits::default()).expect_err("refused").to_string();
        assert!(err.contains("declares 100000x100000 pixels"), "{err}");
    }

    // Fuzzing the decoder: hostile bytes, and valid photos with bytes changed or cut off, get an
    // answer (a decoded image or a precise refusal), never a panic, within the limits.
    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 256, ..Default::default() })]

        #[test]
        fn arbitrary_bytes_get_an_answer(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..4096)) {
            let _ = decode(&bytes, &ImageLimits::default());
        }

        #[test]
        fn damaged_photos_get_an_answer(
            format in proptest::sample::select(vec![ImageFormat::Jpeg, ImageFormat::Png, ImageFormat::WebP]),
            changes in proptest::collection::vec((0usize..1 << 16, proptest::prelude::any::<u8>()), 0..8),
            cut in proptest::option::of(0usize..1 << 16),
        ) {
            let mut bytes = encode(&photo(64, 48), format);
            for (at, byte) in changes {
                let at = at % bytes.len();
                bytes[at] = byte;
            }
            if let Some(cut) = cut {
                bytes.truncate(cut % (bytes.len() + 1));
            }
            if let Ok(image) = decode(&bytes, &ImageLimits::default()) {
                proptest::prop_assert!(u64::from(image.width()) * u64::from(image.height()) <= ImageLimits::default().max_pixels);
            }
        }
    }
}
