//! Enrol and identify by photo, end to end through ingest, search, the embed role and the REST
//! gateway, with real photos and the real model; every kind of unusable photo gets its reason.

use biomatch_config::ProcessRole;
use biomatch_face::testing;
use biomatch_proto::v1::{CreateGalleryRequest, EnrollMode, EnrollRequest, IdentifyRequest, Probe, probe};
use biomatch_tests::{PURPOSE, RETENTION_SECS, TestCluster, backends, config, photo_cluster};
use image::{ImageFormat, RgbImage};
use std::io::Cursor;

fn photo_probe(bytes: Vec<u8>) -> Option<Probe> {
    Some(Probe { kind: Some(probe::Kind::Image(bytes)) })
}

fn png(image: &RgbImage) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    image.write_to(&mut out, ImageFormat::Png).expect("png");
    out.into_inner()
}

fn jpeg(image: &RgbImage) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    image.write_to(&mut out, ImageFormat::Jpeg).expect("jpeg");
    out.into_inner()
}

fn enroll(subject: &str, bytes: Vec<u8>) -> EnrollRequest {
    EnrollRequest {
        gallery: "lane".into(),
        subject_id: subject.into(),
        samples: vec![photo_probe(bytes).expect("probe")],
        mode: EnrollMode::Add.into(),
        idempotency_key: String::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrol_and_identify_by_photo() {
    let (Some(models), Some(photos)) = (testing::model_dir(), testing::photo_dir()) else { return };
    let read = |name: &str| std::fs::read(photos.join(name)).expect("photo");
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = backends(dir.path()).await.remove(0);
    let cluster = photo_cluster(&backend, dir.path(), models, "lane").await;
    let mut ingest = cluster.ingest();
    ingest.enroll(enroll("obama", read("obama.jpg"))).await.expect("obama enrolled");
    let last = ingest.enroll(enroll("biden", read("biden.jpg"))).await.expect("biden enrolled").into_inner();

    // Identify with another photo of the same person, as a kiosk.
    let request = IdentifyRequest {
        gallery: "lane".into(),
        probe: photo_probe(read("obama2.jpg")),
        k: 2,
        purpose: PURPOSE.into(),
        min_change_seq: last.change_seq,
        ..Default::default()
    };
    let kiosk = cluster.kiosk_token("lane");
    let answer = cluster
        .search()
        .identify(biomatch_client::request(request, &kiosk))
        .await
        .expect("identify")
        .into_inner();
    // A kiosk is told the decision and the mate, never a list or a score.
    assert_eq!(answer.decision(), biomatch_proto::v1::Decision::Mate, "{answer:?}");
    assert_eq!(answer.mate_subject_id, "obama", "{answer:?}");
    assert!(answer.candidates.is_empty(), "{answer:?}");
    assert_eq!(answer.model_id, "sface");
    let quality = answer.probe_quality.expect("a photo probe reports its quality");
    assert!(quality.overall > 0.5, "{quality:?}");

    // The same over REST, as a multipart upload.
    let base = format!("http://{}", cluster.running.http_addr.expect("gateway"));
    let analyst = format!("Bearer {}", cluster.token(biomatch_domain::Role::Analyst, "analyst-1"));
    let form = reqwest::multipart::Form::new()
        .part("image", reqwest::multipart::Part::bytes(read("obama3.jpg")).file_name("obama3.jpg"))
        .text("k", "2")
        .text("purpose", PURPOSE)
        .text("min_change_seq", last.change_seq.to_string());
    let r = reqwest::Client::new()
        .post(format!("{base}/v1/galleries/lane/identify"))
        .header("authorization", &analyst)
        .multipart(form)
        .send()
        .await
        .expect("rest identify");
    assert_eq!(r.status(), 200);
    let json: serde_json::Value = r.json().await.expect("json");
    assert_eq!(json["candidates"][0]["subject_id"], "obama", "{json}");
    assert_eq!(json["mate_subject_id"], "obama", "{json}");
    // An analyst sees candidates only at or above the candidate floor.
    let floor = json["candidate_floor"].as_f64().expect("floor");
    let listed = json["candidates"].as_array().expect("candidates");
    assert!(listed.iter().all(|c| c["score"].as_f64().is_some_and(|s| s >= floor)), "{json}");
    assert!(json["probe_quality"]["overall"].as_f64().is_some_and(|q| q > 0.5), "{json}");
    // Stage latencies are metrics.
    let ops = format!("http://{}", cluster.running.metrics_addr.expect("operator port"));
    let metrics = reqwest::get(format!("{ops}/metrics")).await.expect("metrics").text().await.expect("text");
    for stage in ["decode", "detect", "align", "quality", "embed", "total"] {
        let series = format!("biomatch_embed_stage_seconds_bucket{{stage=\"{stage}\"");
        assert!(metrics.contains(&series), "{series}");
    }
    let form = reqwest::multipart::Form::new().text("purpose", PURPOSE);
    let r = reqwest::Client::new()
        .post(format!("{base}/v1/galleries/lane/identify"))
        .header("authorization", &analyst)
        .multipart(form)
        .send()
        .await
        .expect("rest identify");
    assert_eq!(r.status(), 400);
    let json: serde_json::Value = r.json().await.expect("json");
    assert!(json["error"]["message"].as_str().is_some_and(|m| m.contains("no image part")), "{json}");

    // Unusable photos, each refused with its reason and nothing enrolled.
    let obama = image::load_from_memory(&read("obama.jpg")).expect("decodes").to_rgb8();
    let biden = image::load_from_memory(&read("biden.jpg")).expect("decodes").to_rgb8();
    let mut group = RgbImage::new(obama.width() + biden.width(), obama.height().max(biden.height()));
    image::imageops::replace(&mut group, &obama, 0, 0);
    image::imageops::replace(&mut group, &biden, i64::from(obama.width()), 0);
    let original = read("obama.jpg");
    let bomb = testing::decompression_bomb(100_000);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("not an image", b"GIF89a? no, a text file".to_vec(), "not an image"),
        ("truncated JPEG", original[..original.len() / 2].to_vec(), "truncated JPEG"),
        ("1x1 image", png(&RgbImage::new(1, 1)), "1x1 pixels"),
        ("decompression bomb", bomb, "declares 100000x100000 pixels"),
        ("over the size limit", vec![0xFF; 3 * 1024 * 1024 + 1], "the limit is 3145728 bytes"),
        (
            "no face",
            png(&RgbImage::from_fn(400, 300, |x, y| image::Rgb([x as u8, y as u8, 60]))),
            "no face found",
        ),
        ("two faces", jpeg(&group), "2 faces found where exactly one is required"),
        ("blurred", jpeg(&image::imageops::blur(&obama, 8.0)), "below the enrolment minimum"),
    ];
    for (what, bytes, expected) in cases {
        let status = ingest.enroll(enroll("someone", bytes)).await.expect_err(what);
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{what}: {status:?}");
        assert!(status.message().contains(expected), "{what}: {:?}", status.message());
    }
    let listed = cluster
        .galleries()
        .get_gallery(biomatch_proto::v1::GetGalleryRequest { name: "lane".into(), settings_only: false })
        .await
        .expect("gallery")
        .into_inner();
    assert_eq!(listed.subject_count, 2, "nothing was enrolled by the refused photos");

    // A gallery of another model refuses this model's templates.
    let other = CreateGalleryRequest {
        name: "other".into(),
        dimension: 128,
        model_id: "arcface".into(),
        allowed_purposes: vec![PURPOSE.into()],
        retention: Some(prost_types::Duration { seconds: RETENTION_SECS, nanos: 0 }),
        ..Default::default()
    };
    cluster.galleries().create_gallery(other).await.expect("gallery");
    let mut wrong = enroll("obama", read("obama.jpg"));
    wrong.gallery = "other".into();
    let status = ingest.enroll(wrong).await.expect_err("model mismatch");
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert!(status.message().contains("sface+dlib"), "{}", status.message());
    cluster.running.shutdown().await;
}

/// The shipped fusion (SFace + dlib's ResNet, 256-d) as the embed role's default, with SFace
/// loaded beside it: a gallery of each model gets its own model's templates from the one role.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_embed_role_serves_a_fused_gallery_and_an_sface_gallery() {
    let (Some(models), Some(photos)) = (testing::model_dir(), testing::photo_dir()) else { return };
    let read = |name: &str| std::fs::read(photos.join(name)).expect("photo");
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = backends(dir.path()).await.remove(0);
    let mut c = config(&backend, dir.path(), &[ProcessRole::All]);
    c.embed.model_dir = Some(models);
    c.embed.model = Some("sface+dlib".into());
    c.embed.also_models = vec!["sface".into()];
    let cluster = TestCluster::start(c).await;
    let mut last = 0;
    // Thresholds at FMR 1e-3 on the ID portraits (docs/accuracy.md).
    for (gallery, model, dimension, threshold) in
        [("fused", "sface+dlib", 256, 0.78), ("lane", "sface", 128, 0.39)]
    {
        let create = CreateGalleryRequest {
            name: gallery.into(),
            dimension,
            model_id: model.into(),
            threshold: Some(threshold),
            allowed_purposes: vec![PURPOSE.into()],
            retention: Some(prost_types::Duration { seconds: RETENTION_SECS, nanos: 0 }),
            ..Default::default()
        };
        cluster.galleries().create_gallery(create).await.expect("gallery created");
        let mut ingest = cluster.ingest();
        for subject in ["obama", "biden"] {
            let request =
                EnrollRequest { gallery: gallery.into(), ..enroll(subject, read(&format!("{subject}.jpg"))) };
            last = ingest.enroll(request).await.expect("enrolled").into_inner().change_seq;
        }
    }
    let analyst = cluster.token(biomatch_domain::Role::Analyst, "analyst-1");
    let mut scores = Vec::new();
    for (gallery, model) in [("fused", "sface+dlib"), ("lane", "sface")] {
        let request = IdentifyRequest {
            gallery: gallery.into(),
            probe: photo_probe(read("obama2.jpg")),
            k: 2,
            purpose: PURPOSE.into(),
            min_change_seq: last,
            ..Default::default()
        };
        let answer = cluster
            .search()
            .identify(biomatch_client::request(request, &analyst))
            .await
            .expect("identify")
            .into_inner();
        assert_eq!(answer.model_id, model, "{answer:?}");
        assert_eq!(answer.mate_subject_id, "obama", "{gallery}: {answer:?}");
        scores.push(answer.candidates[0].score);
    }
    // Different models, different scores of the same pair: each gallery got its own templates.
    assert!((scores[0] - scores[1]).abs() > 1e-3, "{scores:?}");
    cluster.running.shutdown().await;
}
