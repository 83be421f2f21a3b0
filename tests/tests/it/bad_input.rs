//! Bad input gets a precise status and writes nothing.

use biomatch_proto::v1::ingest_service_client::IngestServiceClient;
use biomatch_proto::v1::{
    CreateGalleryRequest, EnrollMode, EnrollRequest, Gallery, GetGalleryRequest, IdentifyRequest, Probe,
    VerifyRequest, probe,
};
use biomatch_tests::{Authed, PURPOSE, TestCluster, backends, embedding, enrolled_gallery};
use tonic::Code;

fn enroll(gallery: &str, subject: &str, values: Vec<f32>, key: &str) -> EnrollRequest {
    EnrollRequest {
        gallery: gallery.into(),
        subject_id: subject.into(),
        samples: vec![embedding(values).expect("probe")],
        mode: EnrollMode::Add.into(),
        idempotency_key: key.into(),
    }
}

fn code<T>(result: Result<tonic::Response<T>, tonic::Status>) -> Code {
    result.map(|_| ()).expect_err("refused").code()
}

async fn gallery(ingest: &mut IngestServiceClient<Authed>) -> Gallery {
    ingest
        .get_gallery(GetGalleryRequest { name: "g".into(), settings_only: false })
        .await
        .expect("gallery")
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_precise_statuses_and_write_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    for backend in backends(dir.path()).await {
        let cluster = TestCluster::all(&backend, dir.path()).await;
        let (mut synthetic, centres, seq) = enrolled_gallery(&cluster, "g", 64, 2, 100, 3).await;
        let mut ingest = cluster.ingest();
        let mut search = cluster.search();
        let before = gallery(&mut ingest).await;

        // Enrolment
        let wrong_dim = ingest.enroll(enroll("g", "x1", vec![0.1; 63], "")).await;
        assert_eq!(code(wrong_dim), Code::InvalidArgument);
        let mut nan = vec![0.1; 64];
        nan[5] = f32::NAN;
        assert_eq!(code(ingest.enroll(enroll("g", "x2", nan.clone(), "")).await), Code::InvalidArgument);
        assert_eq!(code(ingest.enroll(enroll("g", "x3", vec![0.0; 64], "")).await), Code::InvalidArgument);
        assert_eq!(code(ingest.enroll(enroll("", "x4", vec![0.1; 64], "")).await), Code::InvalidArgument);
        assert_eq!(code(ingest.enroll(enroll("nope", "x5", vec![0.1; 64], "")).await), Code::NotFound);
        assert_eq!(code(ingest.enroll(enroll("g", "", vec![0.1; 64], "")).await), Code::InvalidArgument);
        let no_samples = EnrollRequest { samples: vec![], ..enroll("g", "x6", vec![], "") };
        assert_eq!(code(ingest.enroll(no_samples).await), Code::InvalidArgument);
        let image = EnrollRequest {
            samples: vec![Probe { kind: Some(probe::Kind::Image(vec![0xFF, 0xD8, 0xFF])) }],
            ..enroll("g", "x7", vec![], "")
        };
        assert_eq!(code(ingest.enroll(image).await), Code::Unimplemented);

        // Idempotency: same key and body replays; same key, other body conflicts.
        let first =
            ingest.enroll(enroll("g", "dup", vec![0.2; 64], "key-1")).await.expect("enrolled").into_inner();
        let again =
            ingest.enroll(enroll("g", "dup", vec![0.2; 64], "key-1")).await.expect("replayed").into_inner();
        assert!(again.replayed);
        assert_eq!(again.change_seq, first.change_seq);
        let conflict = ingest.enroll(enroll("g", "dup", vec![0.3; 64], "key-1")).await;
        assert_eq!(code(conflict), Code::InvalidArgument, "a key bound to another body");
        let after = gallery(&mut ingest).await;
        assert_eq!(after.subject_count, before.subject_count + 1, "only the one valid enrolment landed");
        assert_eq!(
            after.template_count,
            before.template_count + 1,
            "the replay and the conflict added nothing"
        );
        let settings = GetGalleryRequest { name: "g".into(), settings_only: true };
        let settings = ingest.get_gallery(settings).await.expect("settings").into_inner();
        assert_eq!((settings.subject_count, settings.template_count), (0, 0), "settings only: not counted");
        let counted =
            Gallery { subject_count: after.subject_count, template_count: after.template_count, ..settings };
        assert_eq!(counted, after, "the same settings either way");

        // Galleries
        let create = |name: &str, dimension: u32| CreateGalleryRequest {
            name: name.into(),
            dimension,
            allowed_purposes: vec![PURPOSE.into()],
            ..Default::default()
        };
        assert_eq!(code(cluster.galleries().create_gallery(create("", 8)).await), Code::InvalidArgument);
        assert_eq!(
            code(cluster.galleries().create_gallery(create("bad name", 8)).await),
            Code::InvalidArgument
        );
        assert_eq!(code(cluster.galleries().create_gallery(create("z", 0)).await), Code::InvalidArgument);
        assert_eq!(code(cluster.galleries().create_gallery(create("g", 64)).await), Code::AlreadyExists);
        let no_purpose = CreateGalleryRequest { allowed_purposes: vec![], ..create("p", 8) };
        assert_eq!(code(cluster.galleries().create_gallery(no_purpose).await), Code::InvalidArgument);

        // Identify and verify
        let identify = |gallery: &str, values: Vec<f32>, k: u32| IdentifyRequest {
            gallery: gallery.into(),
            probe: embedding(values),
            k,
            min_change_seq: seq,
            purpose: PURPOSE.into(),
            ..Default::default()
        };
        let good = synthetic.sample(&centres[0]);
        assert_eq!(code(search.identify(identify("g", vec![0.1; 65], 5)).await), Code::InvalidArgument);
        assert_eq!(code(search.identify(identify("g", nan.clone(), 5)).await), Code::InvalidArgument);
        assert_eq!(code(search.identify(identify("", good.clone(), 5)).await), Code::InvalidArgument);
        assert_eq!(code(search.identify(identify("nope", good.clone(), 5)).await), Code::NotFound);
        assert_eq!(code(search.identify(identify("g", good.clone(), 5000)).await), Code::InvalidArgument);
        let no_probe = IdentifyRequest { probe: None, ..identify("g", vec![], 5) };
        assert_eq!(code(search.identify(no_probe).await), Code::InvalidArgument);
        let bad_threshold =
            IdentifyRequest { threshold: Some(f32::INFINITY), ..identify("g", good.clone(), 5) };
        assert_eq!(code(search.identify(bad_threshold).await), Code::InvalidArgument);
        let verify = VerifyRequest {
            gallery: "g".into(),
            subject_id: "never-enrolled".into(),
            probe: embedding(good.clone()),
            purpose: PURPOSE.into(),
            ..Default::default()
        };
        assert_eq!(code(search.verify(verify).await), Code::NotFound);

        // None of the refused searches reached the audit log: only successful answers did.
        let ok = search.identify(identify("g", good, 5)).await.expect("identify").into_inner();
        assert_eq!(ok.candidates[0].subject_id, "s00000");
        cluster.running.shutdown().await;
    }
}
