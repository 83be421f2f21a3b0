//! A customer's own network by configuration alone: InsightFace's w600k_mbf
//! (`scripts/fetch-customer-model.sh`), configured in the TOML an operator would write, read into
//! `biomatch_config::EmbedConfig` and turned into the pipeline's settings by the embed role's own
//! `biomatch_embed::face_config`; alone, then fused with SFace.

use super::{cosine, photo, pipeline};
use biomatch_config::EmbedConfig;
use biomatch_face::{Face, FaceOptions, FacePipeline, testing};
use figment::Figment;
use figment::providers::{Format, Toml};
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

const MBF_SHA256: &str = "9cc6e4a75f0e2bf0b1aed94578f144d15175f357bdc05e815e5c4a02b319eb4f";

/// The `[embed]` section of `toml`, read as the process reads its configuration file.
fn embed_config(toml: &str) -> Result<EmbedConfig, String> {
    Figment::from(Toml::string(toml)).extract_inner("embed").map_err(|e| e.to_string())
}

fn load(toml: &str) -> FacePipeline {
    let config = embed_config(toml).expect("valid configuration");
    let face = biomatch_embed::face_config(&config).expect("model_dir is set");
    FacePipeline::load(&face).expect("models load")
}

/// The w600k_mbf member (or recogniser) table body.
fn mbf(dir: &Path) -> String {
    format!(
        r#"file = "{}"
sha256 = "{MBF_SHA256}"
model_id = "w600k_mbf"
model_version = "buffalo_s"
channel_order = "rgb"
mean = [127.5, 127.5, 127.5]
std = [127.5, 127.5, 127.5]
"#,
        dir.join("w600k_mbf.onnx").display()
    )
}

fn dirs() -> Option<(std::path::PathBuf, std::path::PathBuf)> {
    let (models, customer) = (testing::model_dir()?, testing::customer_model_dir()?);
    testing::photo_dir()?;
    Some((models, customer))
}

fn mbf_pipeline() -> Option<&'static FacePipeline> {
    static PIPELINE: OnceLock<Option<FacePipeline>> = OnceLock::new();
    PIPELINE
        .get_or_init(|| {
            let (models, customer) = dirs()?;
            let toml = format!("[embed]\nmodel_dir = {:?}\n[embed.recognizer]\n{}", models, mbf(&customer));
            Some(load(&toml))
        })
        .as_ref()
}

const PHOTOS: [&str; 4] = ["obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg"];

/// The faces of [`PHOTOS`] and the mean time the recogniser took per face.
fn faces(pipeline: &FacePipeline) -> (Vec<Face>, Duration) {
    let mut embed = Duration::ZERO;
    let faces = PHOTOS
        .iter()
        .map(|name| {
            let analysis = pipeline.analyze(&photo(name).expect("photo"), &FaceOptions::default());
            let analysis = analysis.expect("analysed");
            embed += analysis.timings.embed;
            assert_eq!(analysis.faces.len(), 1, "{name}: one face");
            analysis.faces.into_iter().next().expect("face")
        })
        .collect();
    (faces, embed / PHOTOS.len() as u32)
}

/// Every genuine pair (the three Obama photos) scores above every impostor pair (with Biden).
fn genuine_above_impostor(faces: &[Face], what: &str) {
    let genuine = [(0, 1), (0, 2), (1, 2)].map(|(i, j)| cosine(&faces[i].embedding, &faces[j].embedding));
    let impostor = [0, 1, 2].map(|i| cosine(&faces[i].embedding, &faces[3].embedding));
    let (low, high) =
        (genuine.iter().copied().fold(1.0, f32::min), impostor.iter().copied().fold(-1.0, f32::max));
    assert!(low > high, "{what}: genuine {genuine:?} vs impostor {impostor:?}");
    println!("{what}: genuine {genuine:?}, impostor {impostor:?}");
}

fn unit_norm(faces: &[Face], dimension: usize) {
    for face in faces {
        assert_eq!(face.embedding.len(), dimension);
        let norm: f32 = face.embedding.iter().map(|v| v * v).sum();
        assert!((norm - 1.0).abs() < 1e-4, "L2-normalised: {norm}");
    }
}

#[test]
fn a_customer_network_alone_by_configuration() {
    let Some(mbf) = mbf_pipeline() else { return };
    let model = mbf.model();
    assert_eq!(
        (model.model_id.as_str(), model.model_version.as_str(), model.dimension),
        ("w600k_mbf", "buffalo_s", 512)
    );
    let (faces, took) = faces(mbf);
    unit_norm(&faces, 512);
    genuine_above_impostor(&faces, "w600k_mbf");
    println!("w600k_mbf: {:.1} ms per face to embed", took.as_secs_f64() * 1e3);
}

#[test]
fn a_fusion_of_sface_and_the_customer_network_by_configuration() {
    let (Some(sface), Some(mbf_alone), Some((models, customer))) = (pipeline(), mbf_pipeline(), dirs())
    else {
        return;
    };
    let toml = format!(
        r#"[embed]
model_dir = {models:?}
[embed.fusion]
model_id = "sface+w600k_mbf"
model_version = "1"
[[embed.fusion.members]]
file = "face_recognition_sface_2021dec_int8bq.onnx"
sha256 = "{}"
model_id = "sface"
model_version = "2021dec-int8bq"
channel_order = "bgr"
weight = 1
[[embed.fusion.members]]
{}weight = 3
"#,
        biomatch_face::SFACE.sha256,
        mbf(&customer)
    );
    let fused = load(&toml);
    let model = fused.model();
    assert_eq!((model.model_id.as_str(), model.dimension), ("sface+w600k_mbf", 640));
    assert!(
        model.model_version.starts_with("1+") && model.model_version.len() == 10,
        "{}",
        model.model_version
    );

    let (fused_faces, fused_took) = faces(&fused);
    let (sface_faces, sface_took) = faces(sface);
    let (mbf_faces, mbf_took) = faces(mbf_alone);
    unit_norm(&fused_faces, 640);
    genuine_above_impostor(&fused_faces, "sface+w600k_mbf");
    // The fused score is the weighted sum of the members' cosines (weights 1:3).
    for (i, j) in [(0, 1), (0, 3), (2, 3)] {
        let fused = cosine(&fused_faces[i].embedding, &fused_faces[j].embedding);
        let sface = cosine(&sface_faces[i].embedding, &sface_faces[j].embedding);
        let mbf_alone = cosine(&mbf_faces[i].embedding, &mbf_faces[j].embedding);
        let expected = 0.25 * sface + 0.75 * mbf_alone;
        assert!((fused - expected).abs() < 1e-4, "{} vs {}: {fused} vs {expected}", PHOTOS[i], PHOTOS[j]);
    }
    // Quality is assessed on the same standard crop, whatever the recogniser.
    assert_eq!(fused_faces[0].quality, sface_faces[0].quality);
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "embed per face: sface {:.1} ms, w600k_mbf {:.1} ms, fusion {:.1} ms",
        ms(sface_took),
        ms(mbf_took),
        ms(fused_took)
    );
}

#[test]
fn a_misconfigured_recogniser_or_fusion_is_refused_with_the_reason() {
    let member = |weight: &str| {
        format!(
            "[[embed.fusion.members]]\nfile = \"a.onnx\"\nmodel_id = \"a\"\nmodel_version = \"1\"\n{weight}"
        )
    };
    let fusion = |members: &str| {
        format!(
            "[embed]\nmodel_dir = \"/nonexistent\"\n[embed.fusion]\nmodel_id = \"f\"\nmodel_version = \"1\"\n{members}"
        )
    };
    let both = format!(
        "{}[embed.recognizer]\nfile = \"b.onnx\"\nmodel_id = \"b\"\nmodel_version = \"1\"\n",
        fusion(&member("weight = 1\n"))
    );
    let err = embed_config(&both).expect_err("both");
    assert!(err.contains("exclusive"), "{err}");
    let err = embed_config(&fusion(&member(""))).expect_err("no weight");
    assert!(err.contains("members[0] (a) needs a weight"), "{err}");
    let err = embed_config(&fusion(&member("weight = 1\nwieght = 2\n"))).expect_err("typo");
    assert!(err.contains("wieght"), "{err}");
    let named = |model: &str| format!("[embed]\nmodel_dir = \"/nonexistent\"\nmodel = {model:?}\n");
    let err = embed_config(&named("arcface")).expect_err("not shipped");
    assert!(err.contains("\"arcface\" is not one of sface, dlib_resnet, sface+dlib"), "{err}");
    let fine = embed_config(&named("sface+dlib")).expect("a shipped name alone");
    assert_eq!(fine.model.as_deref(), Some("sface+dlib"));
    let err = embed_config(&format!(
        "{}[embed.recognizer]\nfile = \"b.onnx\"\nmodel_id = \"b\"\nmodel_version = \"1\"\n",
        named("sface+dlib")
    ))
    .expect_err("a name and a recogniser");
    assert!(err.contains("exclusive"), "{err}");
    let stray = "[embed]\n[embed.recognizer]\nfile = \"b.onnx\"\nmodel_id = \"b\"\nmodel_version = \"1\"\nweight = 2\n";
    assert!(embed_config(stray).expect_err("weight").contains("only for embed.fusion.members"));

    // Values are checked when the pipeline loads, before any model file is read.
    let refused = |toml: &str| {
        let config = biomatch_embed::face_config(&embed_config(toml).expect("readable")).expect("model_dir");
        FacePipeline::load(&config).err().expect("refused").to_string()
    };
    let err = refused(&fusion(&format!("{}{}", member("weight = 1\n"), member("weight = -1\n"))));
    assert!(err.contains("member 2 has weight -1") && err.contains("finite and positive"), "{err}");
    let err = refused(&fusion("members = []\n"));
    assert!(err.contains("at least one member"), "{err}");
    let err = refused(&fusion(&member("weight = 1\n").repeat(5)));
    assert!(err.contains("5 members; at most 4"), "{err}");
    let off = fusion(&member("weight = 1\ntemplate = [[1, 2], [300, 2], [5, 6], [7, 8], [9, 10]]\n"));
    assert!(refused(&off).contains("must lie in the 112x112 crop"));
}
