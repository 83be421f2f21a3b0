//! Face detection with YuNet: boxes, five landmarks and a score per face.
//!
//! The photo is scaled (with a fast convolution resizer) so that its longer side fits the
//! detector's square input, padded at the right and bottom, and fed as BGR in 0..255. YuNet
//! predicts, on grids of stride 8, 16 and 32, a class and an objectness score, a box (centre
//! offset and log size) and five landmarks per cell; cells above the score threshold are decoded
//! and overlapping boxes suppressed.

use crate::FaceError;
use crate::network::{Network, Runtime};
use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::RgbImage;

/// One detected face, in the photo's pixel coordinates.
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    /// Left, top, width, height.
    pub bbox: [f32; 4],
    /// The subject's right eye, left eye, nose tip, right and left mouth corners (the right eye
    /// is on the left of the picture).
    pub landmarks: [[f32; 2]; 5],
    pub score: f32,
}

impl Detection {
    pub fn area(&self) -> f32 {
        self.bbox[2] * self.bbox[3]
    }
}

pub struct Detector {
    network: Network,
    /// Side of the square input, a multiple of 32.
    size: usize,
    score_threshold: f32,
    nms_iou: f32,
}

const STRIDES: [usize; 3] = [8, 16, 32];

impl Detector {
    /// `size`: the input side (a multiple of 32; larger finds smaller faces, costs more).
    pub fn load(model: &[u8], size: u32, score_threshold: f32, runtime: &Runtime) -> Result<Self, FaceError> {
        if size < 64 || !size.is_multiple_of(32) {
            return Err(FaceError::Model(format!(
                "detector input {size} must be a multiple of 32, at least 64"
            )));
        }
        let size = size as usize;
        let network = Network::load(model, &[1, 3, size, size], "YuNet detector", runtime)?;
        Ok(Self { network, size, score_threshold, nms_iou: 0.3 })
    }

    pub fn detect(&self, image: &RgbImage) -> Result<Vec<Detection>, FaceError> {
        let (width, height) = image.dimensions();
        let scale = self.size as f32 / width.max(height) as f32;
        let resized_w = ((width as f32 * scale).round() as u32).clamp(1, self.size as u32);
        let resized_h = ((height as f32 * scale).round() as u32).clamp(1, self.size as u32);
        let resized = resize(image, resized_w, resized_h)?;
        let input = bgr_planes(&resized, resized_w as usize, resized_h as usize, self.size);
        let outputs = self.network.run(input)?;
        if outputs.len() != 12 {
            return Err(FaceError::Model(format!("YuNet gave {} outputs, expected 12", outputs.len())));
        }
        let mut found = Vec::new();
        for (level, stride) in STRIDES.iter().enumerate() {
            let [cls, obj, bbox, kps] = [level, level + 3, level + 6, level + 9].map(|i| &outputs[i][..]);
            self.decode_level(*stride, cls, obj, bbox, kps, &mut found);
        }
        let mut kept = suppress(found, self.nms_iou);
        for d in &mut kept {
            d.bbox = d.bbox.map(|v| v / scale);
            d.landmarks = d.landmarks.map(|p| p.map(|v| v / scale));
        }
        Ok(kept)
    }

    fn decode_level(
        &self,
        stride: usize,
        cls: &[f32],
        obj: &[f32],
        bbox: &[f32],
        kps: &[f32],
        found: &mut Vec<Detection>,
    ) {
        let cols = self.size / stride;
        let cells = cols * cols;
        if cls.len() < cells || obj.len() < cells || bbox.len() < cells * 4 || kps.len() < cells * 10 {
            return;
        }
        let s = stride as f32;
        for i in 0..cells {
            let score = (cls[i].clamp(0.0, 1.0) * obj[i].clamp(0.0, 1.0)).sqrt();
            if score < self.score_threshold {
                continue;
            }
            let (col, row) = ((i % cols) as f32, (i / cols) as f32);
            let b = &bbox[i * 4..i * 4 + 4];
            let (cx, cy) = ((col + b[0]) * s, (row + b[1]) * s);
            let (w, h) = (b[2].exp() * s, b[3].exp() * s);
            let k = &kps[i * 10..i * 10 + 10];
            let landmarks = std::array::from_fn(|n| [(k[2 * n] + col) * s, (k[2 * n + 1] + row) * s]);
            found.push(Detection { bbox: [cx - w / 2.0, cy - h / 2.0, w, h], landmarks, score });
        }
    }
}

fn resize(image: &RgbImage, width: u32, height: u32) -> Result<Image<'static>, FaceError> {
    let fail = |e: &dyn std::fmt::Display| FaceError::Model(format!("resize: {e}"));
    let source = ImageRef::new(image.width(), image.height(), image.as_raw(), PixelType::U8x3)
        .map_err(|e| fail(&e))?;
    let mut target = Image::new(width, height, PixelType::U8x3);
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear));
    Resizer::new().resize(&source, &mut target, &options).map_err(|e| fail(&e))?;
    Ok(target)
}

/// NCHW planes B, G, R of a `side` x `side` input, the image at the top left, zeros elsewhere.
fn bgr_planes(image: &Image<'_>, width: usize, height: usize, side: usize) -> Vec<f32> {
    let mut planes = vec![0f32; 3 * side * side];
    let pixels = image.buffer();
    for y in 0..height {
        for x in 0..width {
            let p = &pixels[(y * width + x) * 3..(y * width + x) * 3 + 3];
            for (channel, value) in [p[2], p[1], p[0]].into_iter().enumerate() {
                planes[channel * side * side + y * side + x] = f32::from(value);
            }
        }
    }
    planes
}

fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let x1 = a[0].max(b[0]);
    let y1 = a[1].max(b[1]);
    let x2 = (a[0] + a[2]).min(b[0] + b[2]);
    let y2 = (a[1] + a[3]).min(b[1] + b[3]);
    let inter = (x2 - x1).max(0.0) * (y2 - y1).max(0.0);
    let union = a[2] * a[3] + b[2] * b[3] - inter;
    if union > 0.0 { inter / union } else { 0.0 }
}

/// Greedy non-maximum suppression, best score first.
fn suppress(mut found: Vec<Detection>, threshold: f32) -> Vec<Detection> {
    found.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut kept: Vec<Detection> = Vec::new();
    for d in found {
        if kept.iter().all(|k| iou(&k.bbox, &d.bbox) <= threshold) {
            kept.push(d);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(bbox: [f32; 4], score: f32) -> Detection {
        Detection { bbox, landmarks: [[0.0; 2]; 5], score }
    }

    #[test]
    fn overlapping_boxes_keep_the_best_one() {
        let kept = suppress(
            vec![
                det([0.0, 0.0, 10.0, 10.0], 0.8),
                det([1.0, 1.0, 10.0, 10.0], 0.9),
                det([50.0, 50.0, 10.0, 10.0], 0.7),
            ],
            0.3,
        );
        let scores: Vec<f32> = kept.iter().map(|d| d.score).collect();
        assert_eq!(scores, vec![0.9, 0.7]);
        assert!((iou(&[0.0, 0.0, 10.0, 10.0], &[5.0, 0.0, 10.0, 10.0]) - 1.0 / 3.0).abs() < 1e-6);
    }
}
