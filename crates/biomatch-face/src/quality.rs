//! Face quality, each factor in [0, 1] (1 is good), from the landmarks in the photo and the
//! aligned crop (the standard 112 x 112 one, whatever the recogniser); `overall` is the weakest
//! factor, and every factor below 0.5 names its issue.
//!
//! - size: inter-eye distance in the photo's pixels; 1 from 48 px (ISO/IEC 19794-5 asks 90 px
//!   for passport photos; recognisers working at 112 x 112 need far less), below 0.5 under 24 px.
//! - sharpness: variance of the Laplacian of the crop's grey centre; 1 from 300.
//! - pose: roll from the eye line, yaw from the nose's offset between the eyes, pitch from the
//!   nose's height between eyes and mouth; 0 at 40 degrees of roll, a nose at 45 % of the
//!   eye distance sideways, or a pitch ratio 0.3 off the frontal 0.5 (the template's).
//! - exposure: mean grey level of the crop's centre and the share of clipped pixels.

use image::RgbImage;

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Quality {
    pub overall: f32,
    pub size: f32,
    pub sharpness: f32,
    pub pose: f32,
    pub exposure: f32,
    pub issues: Vec<String>,
}

pub fn assess(landmarks: &[[f32; 2]; 5], aligned: &RgbImage) -> Quality {
    let [right_eye, left_eye, nose, mouth_right, mouth_left] = *landmarks;
    let eye_distance = ((left_eye[0] - right_eye[0]).powi(2) + (left_eye[1] - right_eye[1]).powi(2)).sqrt();
    let size = (eye_distance / 48.0).clamp(0.0, 1.0);

    let grey = centre_grey(aligned);
    let sharpness = (laplacian_variance(&grey) / 300.0).clamp(0.0, 1.0);

    // Pose in the face's own frame (rotated so the eyes are level).
    let roll = (left_eye[1] - right_eye[1]).atan2(left_eye[0] - right_eye[0]);
    let (sin, cos) = (-roll).sin_cos();
    let eye_mid = [(right_eye[0] + left_eye[0]) / 2.0, (right_eye[1] + left_eye[1]) / 2.0];
    let mouth_mid = [(mouth_right[0] + mouth_left[0]) / 2.0, (mouth_right[1] + mouth_left[1]) / 2.0];
    let level = |p: [f32; 2]| {
        let (dx, dy) = (p[0] - eye_mid[0], p[1] - eye_mid[1]);
        [dx * cos - dy * sin, dx * sin + dy * cos]
    };
    let (nose, mouth) = (level(nose), level(mouth_mid));
    let yaw = nose[0] / eye_distance.max(1.0);
    let pitch = if mouth[1] > 1.0 { nose[1] / mouth[1] } else { 0.0 };
    let roll_degrees = roll.to_degrees().abs();
    let pose =
        1.0 - (roll_degrees / 40.0).max(yaw.abs() / 0.45).max((pitch - 0.5).abs() / 0.3).clamp(0.0, 1.0);

    let mean = grey.iter().map(|&v| f32::from(v)).sum::<f32>() / grey.len().max(1) as f32;
    let clipped = grey.iter().filter(|&&v| !(8..=247).contains(&v)).count() as f32 / grey.len().max(1) as f32;
    let exposure = (1.0 - ((mean - 128.0).abs() - 50.0).max(0.0) / 60.0 - clipped * 2.0).clamp(0.0, 1.0);

    let mut issues = Vec::new();
    if size < 0.5 {
        issues.push(format!("face too small: {eye_distance:.0} px between the eyes, want at least 24"));
    }
    if sharpness < 0.5 {
        issues.push("image blurred or out of focus".to_owned());
    }
    if pose < 0.5 {
        let what = if roll_degrees >= 20.0 { "head tilted" } else { "head turned away from the camera" };
        issues.push(what.to_owned());
    }
    if exposure < 0.5 {
        issues.push(if mean < 128.0 { "face underexposed" } else { "face overexposed" }.to_owned());
    }
    let overall = size.min(sharpness).min(pose).min(exposure);
    Quality { overall, size, sharpness, pose, exposure, issues }
}

/// Grey levels of the crop's centre (the middle 60 %), row by row.
fn centre_grey(aligned: &RgbImage) -> Vec<u8> {
    let (w, h) = aligned.dimensions();
    let (x0, x1, y0, y1) = (w / 5, w - w / 5, h / 5, h - h / 5);
    let mut grey = Vec::with_capacity(((x1 - x0) * (y1 - y0)) as usize);
    for y in y0..y1 {
        for x in x0..x1 {
            let [r, g, b] = aligned.get_pixel(x, y).0.map(u32::from);
            grey.push(((299 * r + 587 * g + 114 * b) / 1000) as u8);
        }
    }
    grey
}

/// Variance of the 4-neighbour Laplacian over a square grey patch.
fn laplacian_variance(grey: &[u8]) -> f32 {
    let side = (grey.len() as f64).sqrt() as usize;
    if side < 3 {
        return 0.0;
    }
    let at = |x: usize, y: usize| f32::from(grey[y * side + x]);
    let mut values = Vec::with_capacity((side - 2) * (side - 2));
    for y in 1..side - 1 {
        for x in 1..side - 1 {
            values.push(at(x - 1, y) + at(x + 1, y) + at(x, y - 1) + at(x, y + 1) - 4.0 * at(x, y));
        }
    }
    let mean = values.iter().sum::<f32>() / values.len() as f32;
    values.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / values.len() as f32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::align::TEMPLATE_112;
    use image::Rgb;

    fn textured(level: u8) -> RgbImage {
        RgbImage::from_fn(112, 112, |x, y| {
            let v =
                if (x / 2 + y / 2) % 2 == 0 { level.saturating_add(40) } else { level.saturating_sub(40) };
            Rgb([v, v, v])
        })
    }

    fn scaled(k: f32) -> [[f32; 2]; 5] {
        TEMPLATE_112.map(|p| [p[0] * k, p[1] * k])
    }

    #[test]
    fn a_frontal_sharp_well_lit_face_scores_high() {
        let q = assess(&scaled(2.0), &textured(128));
        assert!(q.overall > 0.9, "{q:?}");
        assert!(q.issues.is_empty(), "{q:?}");
    }

    #[test]
    fn each_shortcoming_is_named() {
        let small = assess(&scaled(0.5), &textured(128));
        assert!(small.issues.iter().any(|i| i.starts_with("face too small")), "{small:?}");
        let flat = RgbImage::from_pixel(112, 112, Rgb([120, 120, 120]));
        assert!(assess(&scaled(2.0), &flat).issues.contains(&"image blurred or out of focus".to_owned()));
        let dark = assess(&scaled(2.0), &textured(20));
        assert!(dark.issues.contains(&"face underexposed".to_owned()), "{dark:?}");
        let mut turned = scaled(2.0);
        turned[2][0] += 40.0; // nose far towards one eye
        let turned = assess(&turned, &textured(128));
        assert!(turned.issues.contains(&"head turned away from the camera".to_owned()), "{turned:?}");
    }
}
