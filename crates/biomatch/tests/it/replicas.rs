//! The local cluster topology as separate processes: 1 audit, 1 ingest (+embed), 4 matchers
//! holding 2 shards x 2 replicas, 1 search. A replica SIGKILLed mid-load costs no answer; with both
//! replicas of a shard gone, a search fails clearly, or, when the caller allows it, is answered
//! flagged partial with the missing shard named, in the answer and in the audit log.

use crate::common;

use biomatch::synthetic::Synthetic;
use biomatch_domain::Role;
use biomatch_proto::embedding_probe;
use biomatch_proto::v1::audit_service_client::AuditServiceClient;
use biomatch_proto::v1::ingest_service_client::IngestServiceClient;
use biomatch_proto::v1::search_service_client::SearchServiceClient;
use biomatch_proto::v1::{
    CreateGalleryRequest, EnrollMode, EnrollRequest, IdentifyRequest, Operation, QueryAuditRequest,
};
use common::Keys;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::Notify;

const SUBJECTS: usize = 400;

fn in_shard(subject: usize) -> u32 {
    let id = biomatch_domain::SubjectId::parse(&format!("p{subject:04}")).expect("id");
    biomatch_domain::shard_of(&id, 2)
}

fn channel(addr: &str) -> tonic::transport::Channel {
    biomatch_client::channel(&format!("http://{addr}")).expect("channel")
}

#[test]
fn a_killed_replica_costs_no_answer_and_a_lost_shard_is_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let data = data.to_str().expect("utf-8");
    let any = "127.0.0.1:0";
    let keys = Keys::new(&dir.path().join("keys"));
    let serve = |args: &[&str]| keys.serve(&[&["--data-dir", data, "--grpc-addr", any], args].concat());
    let audit = serve(&["--role", "audit"]);
    let audit_url = format!("http://{}", audit.addr);
    let ingest = serve(&["--role", "ingest,embed", "--audit-endpoint", &audit_url]);
    let ingest_url = format!("http://{}", ingest.addr);
    let mut matchers: Vec<Option<common::Proc>> = ["g:0", "g:0", "g:1", "g:1"]
        .iter()
        .map(|s| Some(serve(&["--role", "matcher", "--shards", s])))
        .collect();
    let endpoints: Vec<String> = matchers.iter().flatten().map(|m| format!("http://{}", m.addr)).collect();
    let search = serve(&[
        "--role",
        "search",
        "--audit-endpoint",
        &audit_url,
        "--ingest-endpoint",
        &ingest_url,
        "--embed-endpoint",
        &ingest_url,
        "--matcher-endpoints",
        &endpoints.join(","),
    ]);

    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt");
    runtime.block_on(async {
        let mut ingest_client = IngestServiceClient::new(channel(&ingest.addr));
        let create = CreateGalleryRequest {
            name: "g".into(),
            dimension: 128,
            shard_count: 2,
            threshold: Some(0.45),
            allowed_purposes: vec!["border".into()],
            retention: Some(prost_types::Duration { seconds: 3600, nanos: 0 }),
            ..Default::default()
        };
        ingest_client.create_gallery(keys.as_role(Role::Admin, create)).await.expect("gallery");
        let mut synthetic = Synthetic::new(128, 5);
        let centres: Vec<Vec<f32>> = (0..SUBJECTS).map(|_| synthetic.identity()).collect();
        let requests: Vec<EnrollRequest> = centres
            .iter()
            .enumerate()
            .map(|(i, c)| EnrollRequest {
                gallery: "g".into(),
                subject_id: format!("p{i:04}"),
                samples: vec![embedding_probe(synthetic.sample(c))],
                mode: EnrollMode::Add.into(),
                idempotency_key: format!("p{i}"),
            })
            .collect();
        let enrolled = ingest_client
            .batch_enroll(keys.as_role(Role::Enroller, tokio_stream::iter(requests)))
            .await
            .expect("enrolled")
            .into_inner();
        let seq = enrolled.last_change_seq;

        // 8 analysts x 25 searches; the first replica of shard 0 is killed after the 50th answer.
        let probes: Arc<Vec<(usize, Vec<f32>)>> = Arc::new(
            (0..200).map(|i| ((i * 7) % SUBJECTS, synthetic.sample(&centres[(i * 7) % SUBJECTS]))).collect(),
        );
        let answered = Arc::new(AtomicUsize::new(0));
        let fiftieth = Arc::new(Notify::new());
        let search_channel = channel(&search.addr);
        let tasks: Vec<_> = (0..8)
            .map(|t| {
                let (probes, answered, fiftieth) = (probes.clone(), answered.clone(), fiftieth.clone());
                let token = keys.token(Role::Analyst, &format!("analyst-{t}"));
                let mut client = SearchServiceClient::new(search_channel.clone());
                tokio::spawn(async move {
                    for (subject, probe) in probes.iter().skip(t).step_by(8) {
                        let request = IdentifyRequest {
                            gallery: "g".into(),
                            probe: Some(embedding_probe(probe.clone())),
                            purpose: "border".into(),
                            min_change_seq: seq,
                            ..Default::default()
                        };
                        let answer = client
                            .identify(biomatch_client::request(request, &token))
                            .await
                            .expect("answered despite the killed replica")
                            .into_inner();
                        assert_eq!(
                            answer.candidates[0].subject_id,
                            format!("p{subject:04}"),
                            "{:?}",
                            answer.candidates
                        );
                        assert!(!answer.partial);
                        if answered.fetch_add(1, Ordering::SeqCst) + 1 == 50 {
                            fiftieth.notify_one();
                        }
                    }
                })
            })
            .collect();
        fiftieth.notified().await;
        matchers[0].take().expect("replica").kill();
        for task in tasks {
            task.await.expect("task");
        }
        assert_eq!(answered.load(Ordering::SeqCst), 200);

        // Both replicas of shard 0 gone.
        matchers[1].take().expect("replica").kill();
        let mut client = SearchServiceClient::new(search_channel.clone());
        let (subject, probe) = probes.iter().find(|(s, _)| in_shard(*s) == 1).expect("shard 1 subject");
        let request = |allow_partial| IdentifyRequest {
            gallery: "g".into(),
            probe: Some(embedding_probe(probe.clone())),
            purpose: "border".into(),
            allow_partial,
            ..Default::default()
        };
        let refused =
            client.identify(keys.as_role(Role::Analyst, request(false))).await.expect_err("shard 0 lost");
        assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
        assert!(refused.message().contains("[0]"), "names the shard: {}", refused.message());
        let partial =
            client.identify(keys.as_role(Role::Analyst, request(true))).await.expect("partial").into_inner();
        assert!(partial.partial);
        assert_eq!(partial.missing_shards, vec![0]);
        assert_eq!(partial.candidates[0].subject_id, format!("p{subject:04}"), "shard 1 still answers");
        let query = QueryAuditRequest {
            operation: Operation::Identify.into(),
            descending: true,
            page_size: 1,
            ..Default::default()
        };
        let leaves = AuditServiceClient::new(channel(&audit.addr))
            .query(keys.as_role(Role::Auditor, query))
            .await
            .expect("audit query")
            .into_inner()
            .leaves;
        let event = leaves[0].event.as_ref().expect("event");
        assert!(event.partial && event.missing_shards == vec![0], "the audit leaf says partial: {event:?}");
    });
    drop(search);
}
