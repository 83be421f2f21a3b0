//! Alignment: the similarity transform (rotation, uniform scale, translation; no reflection)
//! that best maps the five detected landmarks onto the recogniser's template, in the least
//! squares sense, and the crop warped through it with bilinear sampling (black outside the
//! photo), as OpenCV's `FaceRecognizerSF::alignCrop` does.

use image::{Rgb, RgbImage};

/// Where the five landmarks go in a 112 x 112 crop (the ArcFace / SFace template).
pub const TEMPLATE_112: [[f32; 2]; 5] =
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]];

/// Where YuNet's five landmarks go in dlib's 150 x 150 face chip with padding 0.25 (what
/// `get_face_chip` gives dlib's ResNet recogniser): derived from dlib's mean face shape, within
/// 0.5 px of `get_face_chip` on real photos.
pub const TEMPLATE_DLIB_150: [[f32; 2]; 5] =
    [[47.2322, 46.2884], [99.8063, 46.2884], [73.5193, 76.0521], [50.0788, 102.3365], [96.9597, 102.3365]];

/// A 2D similarity: `p' = [a -b; b a] p + t`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Similarity {
    pub a: f32,
    pub b: f32,
    pub t: [f32; 2],
}

impl Similarity {
    /// The least-squares similarity from `source` points to `target` points.
    pub fn estimate(source: &[[f32; 2]; 5], target: &[[f32; 2]; 5]) -> Self {
        let mean = |points: &[[f32; 2]; 5]| {
            let sum = points.iter().fold([0.0f32; 2], |s, p| [s[0] + p[0], s[1] + p[1]]);
            [sum[0] / 5.0, sum[1] / 5.0]
        };
        let (ms, mt) = (mean(source), mean(target));
        let (mut dot, mut cross, mut norm) = (0.0f32, 0.0f32, 0.0f32);
        for (s, t) in source.iter().zip(target) {
            let (sx, sy) = (s[0] - ms[0], s[1] - ms[1]);
            let (tx, ty) = (t[0] - mt[0], t[1] - mt[1]);
            dot += sx * tx + sy * ty;
            cross += sx * ty - sy * tx;
            norm += sx * sx + sy * sy;
        }
        let norm = norm.max(f32::EPSILON);
        let (a, b) = (dot / norm, cross / norm);
        let t = [mt[0] - (a * ms[0] - b * ms[1]), mt[1] - (b * ms[0] + a * ms[1])];
        Self { a, b, t }
    }

    pub fn apply(&self, p: [f32; 2]) -> [f32; 2] {
        [self.a * p[0] - self.b * p[1] + self.t[0], self.b * p[0] + self.a * p[1] + self.t[1]]
    }

    pub fn inverse(&self) -> Self {
        let d = (self.a * self.a + self.b * self.b).max(f32::EPSILON);
        let (a, b) = (self.a / d, -self.b / d);
        let t = [-(a * self.t[0] - b * self.t[1]), -(b * self.t[0] + a * self.t[1])];
        Self { a, b, t }
    }
}

/// A square aligned crop: its side and where the five landmarks go in it (YuNet's order: right
/// eye, left eye, nose tip, right and left mouth corners; crop pixel coordinates).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Crop {
    pub size: u32,
    pub template: [[f32; 2]; 5],
}

impl Crop {
    /// The ArcFace / SFace template scaled from 112 to `size`.
    pub fn standard(size: u32) -> Self {
        let k = size as f32 / 112.0;
        Self { size, template: TEMPLATE_112.map(|p| [p[0] * k, p[1] * k]) }
    }
}

/// The `size` x `size` crop of `image` with `landmarks` moved onto the template (scaled from
/// 112 to `size`).
pub fn align(image: &RgbImage, landmarks: &[[f32; 2]; 5], size: u32) -> RgbImage {
    align_to(image, landmarks, &Crop::standard(size))
}

/// The crop of `image` with `landmarks` moved onto `crop`'s template.
pub fn align_to(image: &RgbImage, landmarks: &[[f32; 2]; 5], crop: &Crop) -> RgbImage {
    let back = Similarity::estimate(landmarks, &crop.template).inverse();
    RgbImage::from_fn(crop.size, crop.size, |x, y| sample(image, back.apply([x as f32, y as f32])))
}

fn sample(image: &RgbImage, p: [f32; 2]) -> Rgb<u8> {
    let (w, h) = (image.width() as i64, image.height() as i64);
    let (x0, y0) = (p[0].floor(), p[1].floor());
    let (fx, fy) = (p[0] - x0, p[1] - y0);
    let (x0, y0) = (x0 as i64, y0 as i64);
    let pixel = |x: i64, y: i64| {
        if x < 0 || y < 0 || x >= w || y >= h {
            [0.0f32; 3]
        } else {
            image.get_pixel(x as u32, y as u32).0.map(f32::from)
        }
    };
    let (p00, p10, p01, p11) = (pixel(x0, y0), pixel(x0 + 1, y0), pixel(x0, y0 + 1), pixel(x0 + 1, y0 + 1));
    Rgb(std::array::from_fn(|c| {
        let top = p00[c] * (1.0 - fx) + p10[c] * fx;
        let bottom = p01[c] * (1.0 - fx) + p11[c] * fx;
        (top * (1.0 - fy) + bottom * fy).round().clamp(0.0, 255.0) as u8
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rotated_scaled_copy_of_the_template_maps_back_onto_it() {
        let angle = 0.3f32;
        let (a, b) = (1.7 * angle.cos(), 1.7 * angle.sin());
        let moved = Similarity { a, b, t: [40.0, -12.0] };
        let source = TEMPLATE_112.map(|p| moved.apply(p));
        let back = Similarity::estimate(&source, &TEMPLATE_112);
        for (s, t) in source.iter().zip(&TEMPLATE_112) {
            let p = back.apply(*s);
            assert!((p[0] - t[0]).abs() < 1e-3 && (p[1] - t[1]).abs() < 1e-3, "{p:?} vs {t:?}");
        }
        let round_trip = back.inverse().apply(back.apply([3.0, 4.0]));
        assert!((round_trip[0] - 3.0).abs() < 1e-3 && (round_trip[1] - 4.0).abs() < 1e-3);
    }

    #[test]
    fn aligning_an_aligned_crop_changes_nothing() {
        let image = RgbImage::from_fn(112, 112, |x, y| Rgb([x as u8, y as u8, 7]));
        let aligned = align(&image, &TEMPLATE_112, 112);
        assert_eq!(aligned.get_pixel(56, 60), image.get_pixel(56, 60));
        assert_eq!(aligned.get_pixel(10, 100), image.get_pixel(10, 100));
    }

    #[test]
    fn a_custom_template_moves_the_landmarks_onto_it() {
        // A template twice the standard one, shifted: the crop is the photo scaled up and moved.
        let image = RgbImage::from_fn(112, 112, |x, y| Rgb([x as u8, y as u8, 7]));
        let crop = Crop { size: 240, template: TEMPLATE_112.map(|p| [p[0] * 2.0 + 8.0, p[1] * 2.0 + 8.0]) };
        let aligned = align_to(&image, &TEMPLATE_112, &crop);
        assert_eq!(aligned.dimensions(), (240, 240));
        assert_eq!(aligned.get_pixel(8 + 2 * 50, 8 + 2 * 60), image.get_pixel(50, 60));
        assert_eq!(Crop::standard(112).template, TEMPLATE_112);
    }
}
