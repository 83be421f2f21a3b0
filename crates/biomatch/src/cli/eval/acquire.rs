//! The labelled photos and the templates a recogniser makes of them.
//!
//! Layout: each subdirectory is one identity holding its photos (the LFW layout); a photo directly
//! in the directory is an identity of its own (an impostor pool of one portrait per person). Only
//! JPEG, PNG and WebP files count (by extension); other files (a README, a checksum) are ignored.

use anyhow::Context;
use biomatch_face::{FaceOptions, FacePipeline};
use image::{ImageFormat, Rgb, RgbImage};
use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::{Path, PathBuf};

pub struct Photo {
    pub identity: usize,
    pub path: PathBuf,
}

/// The photos in name order, identities numbered 0.. in name order; with `limit`, the first
/// `limit` identities only.
pub fn photos(dir: &Path, limit: Option<usize>) -> anyhow::Result<Vec<Photo>> {
    let mut entries = listing(dir)?;
    entries.retain(|p| p.is_dir() || is_photo(p));
    let mut out = Vec::new();
    let mut identity = 0;
    for entry in entries {
        if limit.is_some_and(|l| identity >= l) {
            break;
        }
        let files = if entry.is_dir() {
            listing(&entry)?.into_iter().filter(|p| p.is_file() && is_photo(p)).collect()
        } else {
            vec![entry]
        };
        if files.is_empty() {
            continue;
        }
        out.extend(files.into_iter().map(|path| Photo { identity, path }));
        identity += 1;
    }
    Ok(out)
}

fn listing(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| !p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.')))
        .collect();
    entries.sort();
    Ok(entries)
}

fn is_photo(path: &Path) -> bool {
    let extension = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    matches!(extension.as_deref(), Some("jpg" | "jpeg" | "png" | "webp"))
}

/// One column of the report: how two photos compare. Today one recogniser's templates compared
/// by cosine; a second recogniser, or a fusion of two scores, is another implementation.
pub trait Comparator: Sync {
    fn name(&self) -> &str;
    /// The model id and version whose scores these are (an impostor tail is recorded under them).
    fn model(&self) -> (&str, &str);
    /// The probe quality of a photo that gave something to compare; None: a failure to acquire.
    fn quality(&self, photo: usize) -> Option<f32>;
    /// Only for photos with a quality.
    fn score(&self, a: usize, b: usize) -> f32;
    /// Why photos failed to acquire, and how many failed so.
    fn failures(&self) -> BTreeMap<String, usize>;
}

pub struct Face {
    /// L2-normalised.
    pub template: Vec<f32>,
    pub quality: f32,
}

/// A recogniser's templates, one per photo (None where the pipeline found no usable face).
pub struct Templates {
    pub name: String,
    pub model_id: String,
    pub model_version: String,
    pub faces: Vec<Option<Face>>,
    /// Why photos failed, and how many failed so.
    pub failures: BTreeMap<String, usize>,
}

impl Comparator for Templates {
    fn name(&self) -> &str {
        &self.name
    }

    fn model(&self) -> (&str, &str) {
        (&self.model_id, &self.model_version)
    }

    fn quality(&self, photo: usize) -> Option<f32> {
        self.faces[photo].as_ref().map(|f| f.quality)
    }

    fn score(&self, a: usize, b: usize) -> f32 {
        match (&self.faces[a], &self.faces[b]) {
            (Some(a), Some(b)) => a.template.iter().zip(&b.template).map(|(x, y)| x * y).sum(),
            _ => f32::NAN,
        }
    }

    fn failures(&self) -> BTreeMap<String, usize> {
        self.failures.clone()
    }
}

/// Several recognisers' scores fused as the fused pipeline fuses them: the weighted sum of their
/// cosines (weights normalised to sum to 1), which is what the inner product of fused templates
/// gives. A photo counts only where every member acquired it.
pub struct WeightedSum<'a> {
    pub name: String,
    pub model_version: String,
    pub members: Vec<(&'a Templates, f32)>,
}

impl<'a> WeightedSum<'a> {
    /// Members weighted by the inverse of their impostor scores' standard deviation, so each
    /// contributes in proportion to how far its scores separate from its own impostor spread.
    pub fn by_impostor_spread(members: Vec<(&'a Templates, f32)>) -> Self {
        let inverse: Vec<f32> = members.iter().map(|(_, sd)| 1.0 / sd.max(1e-6)).collect();
        let sum: f32 = inverse.iter().sum();
        let members: Vec<(&Templates, f32)> =
            members.iter().zip(&inverse).map(|((t, _), w)| (*t, w / sum)).collect();
        let names: Vec<&str> = members.iter().map(|(t, _)| t.model_id.as_str()).collect();
        let weights: Vec<String> = members.iter().map(|(_, w)| format!("{w:.3}")).collect();
        Self {
            name: format!("fusion {} (weights {})", names.join("+"), weights.join(", ")),
            model_version: format!("weights {}", weights.join(",")),
            members,
        }
    }
}

impl Comparator for WeightedSum<'_> {
    fn name(&self) -> &str {
        &self.name
    }

    fn model(&self) -> (&str, &str) {
        ("fusion", &self.model_version)
    }

    fn quality(&self, photo: usize) -> Option<f32> {
        let mut qualities = self.members.iter().map(|(t, _)| t.quality(photo));
        let first = qualities.next()??;
        qualities.all(|q| q.is_some()).then_some(first)
    }

    fn score(&self, a: usize, b: usize) -> f32 {
        self.members.iter().map(|(t, w)| w * t.score(a, b)).sum()
    }

    fn failures(&self) -> BTreeMap<String, usize> {
        let mut all = BTreeMap::new();
        for (t, _) in &self.members {
            for (why, n) in &t.failures {
                let count = all.entry(why.clone()).or_insert(0);
                *count = (*count).max(*n);
            }
        }
        all
    }
}

/// Templates of every photo, in order, `threads` at a time. With `pad` > 0, an eval-only step
/// first adds a border of `pad` times the photo's width (left and right) and height (top and
/// bottom), filled with its edge pixels, for sets cropped so tightly that the detector misses the
/// face; the pipeline has no such option because enrolment photos are not cropped like that.
pub fn embed_all(pipeline: &FacePipeline, photos: &[Photo], threads: usize, pad: f32) -> Templates {
    let chunk = photos.len().div_ceil(threads.max(1)).max(1);
    let results: Vec<Result<Face, String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = photos
            .chunks(chunk)
            .map(|part| {
                let handle = scope.spawn(move || {
                    part.iter()
                        .map(|photo| acquire(pipeline, photo, pad))
                        .collect::<Vec<Result<Face, String>>>()
                });
                (part.len(), handle)
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|(n, h)| {
                h.join().unwrap_or_else(|_| (0..n).map(|_| Err("embedding thread panicked".into())).collect())
            })
            .collect()
    });
    let mut failures = BTreeMap::new();
    let faces =
        results.into_iter().map(|r| r.map_err(|why| *failures.entry(why).or_insert(0) += 1).ok()).collect();
    let model = pipeline.model();
    Templates {
        name: format!("{} {}", model.model_id, model.model_version),
        model_id: model.model_id.clone(),
        model_version: model.model_version.clone(),
        faces,
        failures,
    }
}

fn acquire(pipeline: &FacePipeline, photo: &Photo, pad: f32) -> Result<Face, String> {
    let options = FaceOptions { largest_only: true, ..FaceOptions::default() };
    let bytes = std::fs::read(&photo.path).map_err(|e| format!("unreadable: {e}"))?;
    let bytes = if pad > 0.0 { padded(&bytes, pad)? } else { bytes };
    let analysis = pipeline.analyze(&bytes, &options).map_err(|e| e.to_string())?;
    let face = analysis.faces.into_iter().next().ok_or("no face")?;
    Ok(Face { template: face.embedding, quality: face.quality.overall })
}

/// The photo with an edge-replicated border, as PNG.
fn padded(bytes: &[u8], pad: f32) -> Result<Vec<u8>, String> {
    let image = image::load_from_memory(bytes).map_err(|e| format!("undecodable: {e}"))?.to_rgb8();
    let (w, h) = image.dimensions();
    let (px, py) = ((w as f32 * pad).round() as u32, (h as f32 * pad).round() as u32);
    let out = RgbImage::from_fn(w + 2 * px, h + 2 * py, |x, y| {
        let sx = x.saturating_sub(px).min(w - 1);
        let sy = y.saturating_sub(py).min(h - 1);
        let Rgb(p) = *image.get_pixel(sx, sy);
        Rgb(p)
    });
    let mut png = Cursor::new(Vec::new());
    out.write_to(&mut png, ImageFormat::Png).map_err(|e| e.to_string())?;
    Ok(png.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_are_identities_and_stray_files_are_not_photos() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (path, _) in
            [("b/1.png", ()), ("b/2.JPG", ()), ("b/notes.txt", ()), ("a/1.png", ()), ("c.webp", ())]
        {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(path, b"x").expect("write");
        }
        std::fs::create_dir(dir.path().join("empty")).expect("mkdir");
        std::fs::write(dir.path().join("README"), b"x").expect("write");
        std::fs::write(dir.path().join(".marker"), b"x").expect("write");
        let found = photos(dir.path(), None).expect("photos");
        let names: Vec<(usize, String)> = found
            .iter()
            .map(|p| (p.identity, p.path.strip_prefix(dir.path()).expect("inside").display().to_string()))
            .collect();
        assert_eq!(
            names,
            [(0, "a/1.png".into()), (1, "b/1.png".into()), (1, "b/2.JPG".into()), (2, "c.webp".into())]
        );
        assert_eq!(photos(dir.path(), Some(2)).expect("photos").len(), 3, "the first two identities");
    }

    fn templates(id: &str, faces: Vec<Option<Vec<f32>>>) -> Templates {
        Templates {
            name: id.into(),
            model_id: id.into(),
            model_version: "1".into(),
            faces: faces.into_iter().map(|f| f.map(|template| Face { template, quality: 0.5 })).collect(),
            failures: BTreeMap::new(),
        }
    }

    #[test]
    fn a_fusion_scores_the_weighted_sum_weighted_by_the_inverse_impostor_spread() {
        let a = templates("a", vec![Some(vec![1.0, 0.0]), Some(vec![0.6, 0.8]), Some(vec![0.0, 1.0])]);
        let b = templates("b", vec![Some(vec![0.0, 1.0]), Some(vec![0.0, 1.0]), None]);
        // a's impostors spread twice as wide as b's: b weighs twice as much.
        let fused = WeightedSum::by_impostor_spread(vec![(&a, 0.2), (&b, 0.1)]);
        let weights: Vec<f32> = fused.members.iter().map(|(_, w)| *w).collect();
        assert!(
            (weights[0] - 1.0 / 3.0).abs() < 1e-6 && (weights[1] - 2.0 / 3.0).abs() < 1e-6,
            "{weights:?}"
        );
        let expected = 0.6 / 3.0 + 2.0 / 3.0;
        assert!((fused.score(0, 1) - expected).abs() < 1e-6, "{}", fused.score(0, 1));
        assert_eq!(fused.quality(2), None, "b failed to acquire photo 2");
        assert_eq!(fused.quality(0), Some(0.5));
        assert!(fused.name().contains("a+b") && fused.name().contains("0.333, 0.667"), "{}", fused.name());
    }

    #[test]
    fn padding_replicates_the_edges() {
        let image = RgbImage::from_fn(10, 20, |x, _| Rgb([x as u8 * 20, 0, 0]));
        let mut png = Cursor::new(Vec::new());
        image.write_to(&mut png, ImageFormat::Png).expect("encode");
        let out =
            image::load_from_memory(&padded(&png.into_inner(), 0.5).expect("pad")).expect("png").to_rgb8();
        assert_eq!(out.dimensions(), (20, 40));
        assert_eq!(out.get_pixel(0, 0).0[0], 0, "left border copies the left edge");
        assert_eq!(out.get_pixel(19, 39).0[0], 180, "right border copies the right edge");
        assert_eq!(out.get_pixel(5 + 3, 10).0[0], 60, "the photo sits in the middle");
    }
}
