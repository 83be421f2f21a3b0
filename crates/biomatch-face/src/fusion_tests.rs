use super::*;
use crate::align::TEMPLATE_112;
use image::Rgb;
use proptest::prelude::*;

/// A recogniser whose template is a function of its crop's first pixel.
struct Fake {
    info: ModelInfo,
    crop: Crop,
    embed: fn([f32; 3]) -> Vec<f32>,
}

impl Recognizer for Fake {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn crops(&self) -> &[Crop] {
        std::slice::from_ref(&self.crop)
    }

    fn embed(&self, crops: &[RgbImage]) -> Result<Vec<f32>, FaceError> {
        let [crop] = crops else { return Err(FaceError::Model("one crop".into())) };
        assert_eq!(crop.width(), self.crop.size, "each member gets its own crop");
        Ok(unit((self.embed)(crop.get_pixel(0, 0).0.map(f32::from))))
    }
}

fn unit(mut v: Vec<f32>) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= norm);
    v
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn fake(id: &str, size: u32, dimension: usize, embed: fn([f32; 3]) -> Vec<f32>) -> Box<dyn Recognizer> {
    let info = ModelInfo { model_id: id.into(), model_version: "1".into(), dimension };
    Box::new(Fake { info, crop: Crop::standard(size), embed })
}

fn three() -> Box<dyn Recognizer> {
    fake("three", 112, 3, |p| vec![p[0] + 1.0, p[1], p[2] + 2.0])
}

fn two() -> Box<dyn Recognizer> {
    fake("two", 150, 2, |p| vec![p[1] + 1.0, 255.0 - p[0]])
}

fn crops(recognizer: &dyn Recognizer, colour: [u8; 3]) -> Vec<RgbImage> {
    recognizer.crops().iter().map(|c| RgbImage::from_pixel(c.size, c.size, Rgb(colour))).collect()
}

#[test]
fn fused_templates_have_unit_norm_and_score_the_weighted_sum_of_cosines() {
    let fusion =
        FusedRecognizer::new("fused".into(), "v1".into(), vec![(three(), 1.0), (two(), 3.0)]).expect("valid");
    assert_eq!(fusion.info().dimension, 5);
    assert_eq!(fusion.crops().iter().map(|c| c.size).collect::<Vec<_>>(), [112, 150]);
    assert_eq!(
        fusion.members().map(|(i, w)| (i.model_id.as_str(), w)).collect::<Vec<_>>(),
        [("three", 0.25), ("two", 0.75)]
    );
    let (a, b) = ([200, 10, 40], [30, 220, 90]);
    let fa = fusion.embed(&crops(&fusion, a)).expect("embeds");
    let fb = fusion.embed(&crops(&fusion, b)).expect("embeds");
    assert_eq!(fa.len(), 5);
    assert!((dot(&fa, &fa) - 1.0).abs() < 1e-6);
    let cosine = |m: Box<dyn Recognizer>| {
        let (x, y) = (m.embed(&crops(&*m, a)).expect("a"), m.embed(&crops(&*m, b)).expect("b"));
        dot(&x, &y)
    };
    let expected = 0.25 * cosine(three()) + 0.75 * cosine(two());
    assert!((dot(&fa, &fb) - expected).abs() < 1e-6, "{} vs {expected}", dot(&fa, &fb));
    // The layout is the members' templates in order, each scaled by sqrt(weight).
    let first = three().embed(&crops(&*three(), a)).expect("a");
    assert!(fa[..3].iter().zip(&first).all(|(f, t)| (f - t * 0.5).abs() < 1e-6));

    let err = fusion.embed(&crops(&fusion, a)[..1]).expect_err("one crop short").to_string();
    assert!(err.contains("fusion takes 2 crops, was given 1"), "{err}");
}

#[test]
fn a_member_giving_the_wrong_dimension_is_an_error_not_a_panic() {
    let liar = fake("liar", 112, 4, |p| p.to_vec());
    let fusion = FusedRecognizer::new("f".into(), "v".into(), vec![(liar, 1.0)]).expect("valid");
    let err = fusion.embed(&crops(&fusion, [1, 2, 3])).expect_err("3 of 4").to_string();
    assert!(err.contains("liar gave 3 values instead of 4"), "{err}");
}

#[test]
fn weights_are_normalised_and_bad_ones_refused() {
    assert_eq!(normalised_weights(&[1.0, 3.0]).expect("valid"), [0.25, 0.75]);
    assert_eq!(normalised_weights(&[7.0]).expect("valid"), [1.0]);
    let refused = |weights: &[f32]| normalised_weights(weights).expect_err("refused").to_string();
    assert!(refused(&[]).contains("at least one member"));
    assert!(refused(&[1.0; MAX_MEMBERS + 1]).contains("at most 4"));
    for bad in [0.0, -1.0, f32::NAN, f32::INFINITY] {
        let err = refused(&[1.0, bad]);
        assert!(err.contains("member 2") && err.contains("finite and positive"), "{err}");
    }
    assert!(refused(&[f32::MAX, f32::MAX]).contains("too large"));
    let err = FusedRecognizer::new("f".into(), "v".into(), vec![(three(), 0.0)]).err().expect("zero");
    assert!(err.to_string().contains("finite and positive"), "{err}");
    assert!(FusedRecognizer::new("f".into(), "v".into(), Vec::new()).is_err());
    let huge = || fake("huge", 112, 3000, |p| p.to_vec());
    let err = FusedRecognizer::new("f".into(), "v".into(), vec![(huge(), 1.0), (huge(), 1.0)])
        .err()
        .expect("too long");
    assert!(err.to_string().contains("6000 values"), "{err}");
    assert!(matches!(combine(&[vec![1.0]], &[]), Err(FaceError::Model(_))));
}

fn spec(weights: &[f32]) -> FusionSpec {
    let arcface = RecognizerSpec {
        file: "w600k_mbf.onnx".into(),
        sha256: None,
        model_id: "w600k_mbf".into(),
        model_version: "buffalo_s".into(),
        channel_order: ChannelOrder::Rgb,
        mean: [127.5; 3],
        std: [127.5; 3],
        ..RecognizerSpec::sface()
    };
    let members = [RecognizerSpec::sface(), arcface];
    FusionSpec {
        model_id: "fused".into(),
        model_version: "1".into(),
        members: members
            .into_iter()
            .zip(weights)
            .map(|(recognizer, &weight)| FusionMember { recognizer, weight })
            .collect(),
    }
}

#[test]
fn the_recorded_version_changes_with_the_layout_only() {
    let base = spec(&[1.0, 1.0]).versioned().expect("valid");
    assert!(base.starts_with("1+") && base.len() == 10, "{base}");
    assert_eq!(spec(&[2.0, 2.0]).versioned().expect("valid"), base, "the same normalised weights");
    assert_ne!(spec(&[1.0, 2.0]).versioned().expect("valid"), base);
    let mut swapped = spec(&[1.0, 1.0]);
    swapped.members.reverse();
    assert_ne!(swapped.versioned().expect("valid"), base, "member order is the layout");
    let mut retemplated = spec(&[1.0, 1.0]);
    retemplated.members[1].recognizer.template = Some(TEMPLATE_112.map(|p| [p[0] + 1.0, p[1]]));
    assert_ne!(retemplated.versioned().expect("valid"), base);
    let mut moved = spec(&[1.0, 1.0]);
    moved.members[1].recognizer.file = "elsewhere/w600k_mbf.onnx".into();
    assert_eq!(moved.versioned().expect("valid"), base, "the file's place is not the model");
    assert_ne!(spec(&[1.0]).versioned().expect("valid"), base);
}

#[test]
fn a_bad_fusion_spec_is_refused_before_any_model_is_read() {
    let load = |spec: &FusionSpec| {
        FusedRecognizer::load(spec, Path::new("/nonexistent"), &Runtime::Tract)
            .err()
            .expect("refused")
            .to_string()
    };
    assert!(load(&spec(&[])).contains("at least one member"));
    assert!(load(&spec(&[1.0, -2.0])).contains("weight -2"));
    let mut unnamed = spec(&[1.0]);
    unnamed.model_version = " ".into();
    assert!(load(&unnamed).contains("model_id and a model_version"));
    let mut outside = spec(&[1.0, 1.0]);
    outside.members[1].recognizer.template =
        Some([[10.0, 50.0], [200.0, 50.0], [56.0, 70.0], [40.0, 90.0], [70.0, 90.0]]);
    let err = load(&outside);
    assert!(err.contains("w600k_mbf") && err.contains("must lie in the 112x112 crop"), "{err}");
    let mut squashed = spec(&[1.0]);
    squashed.members[0].recognizer.template = Some([[50.0, 50.0]; 5]);
    assert!(load(&squashed).contains("a pixel apart"));
    let mut nan = spec(&[1.0]);
    nan.members[0].recognizer.template = Some([[f32::NAN, 50.0]; 5]);
    assert!(load(&nan).contains("must lie in"));
    // A valid spec gets as far as reading the first member's file.
    let err = load(&spec(&[1.0, 1.0]));
    assert!(err.contains("cannot read model file") && err.contains("face_recognition_sface"), "{err}");
}

proptest! {
    #[test]
    fn combining_unit_templates_keeps_the_weighted_cosines(
        raw in proptest::collection::vec(
            (proptest::collection::vec(-1.0f32..1.0, 4), proptest::collection::vec(-1.0f32..1.0, 4), 0.01f32..10.0),
            1..=MAX_MEMBERS,
        )
    ) {
        prop_assume!(raw.iter().all(|(a, b, _)| dot(a, a) > 1e-3 && dot(b, b) > 1e-3));
        let a: Vec<Vec<f32>> = raw.iter().map(|(a, _, _)| unit(a.clone())).collect();
        let b: Vec<Vec<f32>> = raw.iter().map(|(_, b, _)| unit(b.clone())).collect();
        let weights = normalised_weights(&raw.iter().map(|(_, _, w)| *w).collect::<Vec<_>>()).expect("valid");
        let (fa, fb) = (combine(&a, &weights).expect("a"), combine(&b, &weights).expect("b"));
        let expected: f32 = a.iter().zip(&b).zip(&weights).map(|((x, y), w)| w * dot(x, y)).sum();
        prop_assert!((dot(&fa, &fb) - expected).abs() < 1e-5);
        prop_assert!((dot(&fa, &fa) - 1.0).abs() < 1e-5);
    }
}

#[test]
fn every_shipped_model_is_a_valid_spec_and_the_fusion_is_versioned_by_its_layout() {
    use crate::RecognizerModel;
    for name in RecognizerModel::NAMES {
        match RecognizerModel::named(name).expect(name) {
            RecognizerModel::Single(spec) => {
                spec.validate().expect(name);
                assert_eq!(spec.model_id, name);
            }
            RecognizerModel::Fusion(spec) => {
                assert_eq!(spec.model_id, name);
                let version = spec.versioned().expect(name);
                assert!(version.starts_with("1+") && version.len() == 10, "{version}");
            }
        }
    }
    assert!(RecognizerModel::named("arcface").is_none());
    let dlib = RecognizerSpec::dlib_resnet();
    assert_eq!((dlib.input_size, dlib.crop().size), (150, 150));
    assert_ne!(dlib.crop(), Crop::standard(150), "dlib's chip is not the ArcFace template");
}
