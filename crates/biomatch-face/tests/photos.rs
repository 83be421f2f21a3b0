//! The pipeline on real photos (see `biomatch_face::testing` for where they come from): the same
//! person matches across photos, another person does not, every face of a group photo is found,
//! unusable photos and model files are refused with the reason, and both runtimes (ONNX Runtime
//! and tract) give the same faces and templates. [`customer`]: another network, and a fusion of
//! networks, by configuration alone.

use biomatch_face::{FaceConfig, FaceError, FaceOptions, FacePipeline, Runtime, testing};
use image::{ImageFormat, RgbImage};
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

#[path = "photos/customer.rs"]
mod customer;

/// The models in ONNX Runtime, the default runtime.
fn pipeline() -> Option<&'static FacePipeline> {
    static PIPELINE: OnceLock<Option<FacePipeline>> = OnceLock::new();
    PIPELINE.get_or_init(|| load(Runtime::onnxruntime_in)).as_ref()
}

fn load(runtime: impl Fn(&Path) -> Runtime) -> Option<FacePipeline> {
    let dir = testing::model_dir()?;
    let config = FaceConfig::new(&dir, runtime(&dir));
    Some(FacePipeline::load(&config).expect("models load"))
}

fn photo(name: &str) -> Option<Vec<u8>> {
    let dir: PathBuf = testing::photo_dir()?;
    Some(std::fs::read(dir.join(name)).expect("photo"))
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn one_face(pipeline: &FacePipeline, bytes: &[u8]) -> biomatch_face::Face {
    let analysis = pipeline.analyze(bytes, &FaceOptions::default()).expect("analysed");
    assert_eq!(analysis.faces.len(), 1, "one face");
    analysis.faces.into_iter().next().expect("face")
}

fn png(image: &RgbImage) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    image.write_to(&mut out, ImageFormat::Png).expect("png");
    out.into_inner()
}

#[test]
fn the_same_person_matches_and_another_does_not() {
    let (Some(pipeline), Some(_)) = (pipeline(), testing::photo_dir()) else { return };
    let obama: Vec<_> = ["obama.jpg", "obama2.jpg", "obama3.jpg"]
        .iter()
        .map(|n| one_face(pipeline, &photo(n).expect("photo")))
        .collect();
    let biden = one_face(pipeline, &photo("biden.jpg").expect("photo"));
    for face in obama.iter().chain([&biden]) {
        assert_eq!(face.embedding.len(), 128);
        let norm: f32 = face.embedding.iter().map(|v| v * v).sum();
        assert!((norm - 1.0).abs() < 1e-4, "L2-normalised");
        assert!(face.detection_score > 0.8, "{}", face.detection_score);
        assert!(face.quality.overall > 0.5, "{:?}", face.quality);
    }
    // SFace's customary threshold is 0.363 (cosine).
    for (i, a) in obama.iter().enumerate() {
        for b in &obama[i + 1..] {
            let score = cosine(&a.embedding, &b.embedding);
            assert!(score > 0.45, "genuine pair scored {score}");
        }
        let score = cosine(&a.embedding, &biden.embedding);
        assert!(score < 0.25, "impostor pair scored {score}");
    }
    // Deterministic.
    let again = one_face(pipeline, &photo("obama.jpg").expect("photo"));
    assert_eq!(again.embedding, obama[0].embedding);
}

#[test]
fn a_group_photo_gives_every_face_largest_first() {
    let (Some(pipeline), Some(_)) = (pipeline(), testing::photo_dir()) else { return };
    let decode =
        |name: &str| image::load_from_memory(&photo(name).expect("photo")).expect("decodes").to_rgb8();
    let (left, right) = (decode("obama.jpg"), decode("biden.jpg"));
    let right = image::imageops::resize(
        &right,
        right.width() * 2 / 3,
        right.height() * 2 / 3,
        image::imageops::FilterType::Triangle,
    );
    let mut group = RgbImage::new(left.width() + right.width(), left.height().max(right.height()));
    image::imageops::replace(&mut group, &left, 0, 0);
    image::imageops::replace(&mut group, &right, i64::from(left.width()), 0);
    let bytes = png(&group);

    let all = pipeline.analyze(&bytes, &FaceOptions::default()).expect("analysed").faces;
    assert_eq!(all.len(), 2);
    assert!(all[0].bbox[2] * all[0].bbox[3] >= all[1].bbox[2] * all[1].bbox[3], "largest first");
    assert!(all[1].bbox[0] > left.width() as f32 * 0.9 || all[0].bbox[0] > left.width() as f32 * 0.9);
    let largest = FaceOptions { largest_only: true, ..FaceOptions::default() };
    assert_eq!(pipeline.analyze(&bytes, &largest).expect("analysed").faces.len(), 1);
    let one = FaceOptions { max_faces: 1, ..FaceOptions::default() };
    assert_eq!(pipeline.analyze(&bytes, &one).expect("analysed").faces.len(), 1);
    // A minimum size above both faces leaves none, and says so.
    let huge = FaceOptions { min_face_size: Some(5000), ..FaceOptions::default() };
    let err = pipeline.analyze(&bytes, &huge).expect_err("no face that large").to_string();
    assert!(err.contains("2 face(s) smaller than 5000 px ignored"), "{err}");
}

#[test]
fn blur_darkness_and_empty_scenes_are_reported() {
    let (Some(pipeline), Some(_)) = (pipeline(), testing::photo_dir()) else { return };
    let original = image::load_from_memory(&photo("obama.jpg").expect("photo")).expect("decodes").to_rgb8();
    let sharp = one_face(pipeline, &png(&original));
    let blurred = one_face(pipeline, &png(&image::imageops::blur(&original, 6.0)));
    assert!(
        blurred.quality.sharpness < sharp.quality.sharpness / 2.0,
        "{:?} vs {:?}",
        blurred.quality,
        sharp.quality
    );
    assert!(blurred.quality.issues.iter().any(|i| i.contains("blurred")), "{:?}", blurred.quality);
    // Darkened, the face is still found and its exposure score falls; darkened further, it is
    // either reported as badly exposed or not found at all, never passed as a good photo.
    let dim = one_face(pipeline, &png(&image::imageops::colorops::brighten(&original, -60)));
    assert!(dim.quality.exposure < sharp.quality.exposure, "{:?} vs {:?}", dim.quality, sharp.quality);
    let dark = image::imageops::colorops::brighten(&original, -110);
    match pipeline.analyze(&png(&dark), &FaceOptions::default()) {
        Ok(dark) => {
            let quality = &dark.faces[0].quality;
            assert!(quality.exposure < dim.quality.exposure, "{quality:?} vs {:?}", dim.quality);
            assert!(quality.issues.iter().any(|i| i.contains("expos") || i.contains("dark")), "{quality:?}");
        }
        Err(e) => assert!(matches!(e, FaceError::NoFace(_)), "{e}"),
    }

    let empty = RgbImage::from_fn(640, 480, |x, y| image::Rgb([(x / 3) as u8, (y / 2) as u8, 90]));
    let err = pipeline.analyze(&png(&empty), &FaceOptions::default()).expect_err("no face");
    assert!(matches!(err, FaceError::NoFace(_)), "{err}");
    assert_eq!(err.to_string(), "no face found in the image");

    // A 32-bit PNG with alpha is a photo like any other.
    let rgba = pipeline.analyze(&photo("32bit.png").expect("photo"), &FaceOptions::default());
    assert!(rgba.is_ok_and(|a| !a.faces.is_empty()));
}

#[test]
fn missing_or_corrupt_models_are_named_at_load() {
    let Some(models) = testing::model_dir() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let err = FacePipeline::load(&FaceConfig::new(dir.path(), Runtime::Tract))
        .err()
        .expect("no models")
        .to_string();
    assert!(err.contains("cannot read model file") && err.contains("yunet"), "{err}");
    for name in [biomatch_face::YUNET.name, biomatch_face::SFACE.name] {
        std::fs::copy(models.join(name), dir.path().join(name)).expect("copy");
    }
    let sface = dir.path().join(biomatch_face::SFACE.name);
    let mut bytes = std::fs::read(&sface).expect("read");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xFF;
    std::fs::write(&sface, bytes).expect("write");
    let err =
        FacePipeline::load(&FaceConfig::new(dir.path(), Runtime::Tract)).err().expect("corrupt").to_string();
    assert!(err.contains("SHA-256") && err.contains("sface"), "{err}");
}

#[test]
fn tract_and_onnxruntime_give_the_same_faces_and_templates() {
    let (Some(onnxruntime), Some(_)) = (pipeline(), testing::photo_dir()) else { return };
    let tract = load(|_| Runtime::Tract).expect("models");
    for name in ["obama.jpg", "biden.jpg", "obama2.jpg"] {
        let bytes = photo(name).expect("photo");
        let (a, b) = (one_face(onnxruntime, &bytes), one_face(&tract, &bytes));
        let coordinates = |f: &biomatch_face::Face| {
            f.bbox.into_iter().chain(f.landmarks.into_iter().flatten()).collect::<Vec<f32>>()
        };
        for (x, y) in coordinates(&a).into_iter().zip(coordinates(&b)) {
            assert!((x - y).abs() < 1.0, "{name}: {x} vs {y}");
        }
        assert!((a.detection_score - b.detection_score).abs() < 1e-3, "{name}");
        let score = cosine(&a.embedding, &b.embedding);
        assert!(score > 0.999, "{name}: cosine {score} between the runtimes' templates");
    }
}

#[test]
fn a_missing_or_foreign_onnxruntime_library_is_named_at_load() {
    let Some(models) = testing::model_dir() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    for name in [biomatch_face::YUNET.name, biomatch_face::SFACE.name] {
        std::fs::copy(models.join(name), dir.path().join(name)).expect("copy");
    }
    let config = FaceConfig::new(dir.path(), Runtime::onnxruntime_in(dir.path()));
    let err = FacePipeline::load(&config).err().expect("no library").to_string();
    assert!(err.contains("libonnxruntime.so is missing") && err.contains("fetch-models"), "{err}");
    // Another file in its place is refused before it is loaded.
    std::fs::write(dir.path().join(biomatch_face::ONNXRUNTIME.name), b"\x7fELF not really").expect("write");
    let err = FacePipeline::load(&config).err().expect("foreign library").to_string();
    assert!(err.contains("SHA-256") && err.contains("libonnxruntime.so"), "{err}");
}
