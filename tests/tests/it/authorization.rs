//! Every role against every RPC: the allow/deny matrix, and every denial is an audit leaf.

use biomatch_config::ProcessRole;
use biomatch_domain::{Principal, Role};
use biomatch_proto::v1::audit_service_client::AuditServiceClient;
use biomatch_proto::v1::embed_service_client::EmbedServiceClient;
use biomatch_proto::v1::ingest_service_client::IngestServiceClient;
use biomatch_proto::v1::matcher_service_client::MatcherServiceClient;
use biomatch_proto::v1::search_service_client::SearchServiceClient;
use biomatch_proto::v1::*;
use biomatch_tests::{PURPOSE, TestCluster, backends, config, enrolled_gallery};
use tonic::Code;
use tonic::transport::Channel;

const ROLES: [Role; 6] =
    [Role::Kiosk, Role::Analyst, Role::Enroller, Role::Auditor, Role::Admin, Role::Service];

/// (RPC, roles allowed to call it)
fn matrix() -> Vec<(&'static str, Vec<Role>)> {
    use Role::*;
    let staff = vec![Enroller, Admin, Analyst, Service, Auditor];
    vec![
        ("IngestService/CreateGallery", vec![Admin]),
        ("IngestService/GetGallery", staff.clone()),
        ("IngestService/ListGalleries", vec![Enroller, Admin, Analyst, Auditor]),
        ("IngestService/DeleteGallery", vec![Admin]),
        ("IngestService/SetThreshold", vec![Admin]),
        ("IngestService/Enroll", vec![Enroller]),
        ("IngestService/BatchEnroll", vec![Enroller]),
        ("IngestService/DeleteSubject", vec![Enroller]),
        ("IngestService/GetSubject", vec![Enroller, Analyst]),
        ("IngestService/PurgeExpired", vec![Admin]),
        ("IngestService/SetSearchTuning", vec![Admin]),
        ("SearchService/Identify", vec![Kiosk, Analyst]),
        ("SearchService/Verify", vec![Kiosk, Analyst]),
        ("SearchService/ReviewCandidate", vec![Analyst]),
        ("SearchService/ListPendingReviews", vec![Analyst]),
        ("SearchService/GetSearch", vec![Analyst, Auditor]),
        ("SearchService/ListCaseSearches", vec![Analyst, Auditor]),
        ("SearchService/TuneGallery", vec![Admin]),
        ("AuditService/Append", vec![Service]),
        ("AuditService/Query", vec![Auditor]),
        ("AuditService/ListLeaves", vec![Auditor]),
        ("AuditService/GetCheckpoint", ROLES.to_vec()),
        ("AuditService/ListCheckpoints", ROLES.to_vec()),
        ("AuditService/GetInclusionProof", ROLES.to_vec()),
        ("AuditService/GetConsistencyProof", ROLES.to_vec()),
        ("AuditService/GetPublicKey", ROLES.to_vec()),
        ("AuditService/GetSearchRecord", vec![Service]),
        ("AuditService/ListReviews", vec![Service]),
        ("AuditService/ListCaseRecords", vec![Service]),
        ("MatcherService/Search", vec![Service]),
        ("MatcherService/Score", vec![Service]),
        ("MatcherService/Describe", vec![Service]),
        ("MatcherService/Tune", vec![Service]),
        ("EmbedService/Embed", vec![Service]),
        ("EmbedService/DescribeModel", vec![Service]),
    ]
}

/// Calls one RPC with a harmless request (unknown names, empty bodies) as the token's bearer.
async fn call(channel: &Channel, rpc: &str, token: &str) -> Code {
    macro_rules! r {
        ($m:expr) => {
            biomatch_client::request($m, token)
        };
    }
    let mut ingest = IngestServiceClient::new(channel.clone());
    let mut search = SearchServiceClient::new(channel.clone());
    let mut audit = AuditServiceClient::new(channel.clone());
    let mut matcher = MatcherServiceClient::new(channel.clone());
    let mut embed = EmbedServiceClient::new(channel.clone());
    let nope = || "no-such-gallery".to_owned();
    let result = match rpc {
        "IngestService/CreateGallery" => {
            ingest.create_gallery(r!(CreateGalleryRequest::default())).await.map(|_| ())
        }
        "IngestService/GetGallery" => {
            ingest.get_gallery(r!(GetGalleryRequest { name: nope(), settings_only: false })).await.map(|_| ())
        }
        "IngestService/ListGalleries" => ingest.list_galleries(r!(ListGalleriesRequest {})).await.map(|_| ()),
        "IngestService/DeleteGallery" => ingest
            .delete_gallery(r!(DeleteGalleryRequest { name: nope(), ..Default::default() }))
            .await
            .map(|_| ()),
        "IngestService/SetThreshold" => ingest
            .set_threshold(r!(SetThresholdRequest {
                gallery: nope(),
                threshold: 0.5,
                reason: "test".into(),
                policy: None
            }))
            .await
            .map(|_| ()),
        "IngestService/Enroll" => {
            ingest.enroll(r!(EnrollRequest { gallery: nope(), ..Default::default() })).await.map(|_| ())
        }
        "IngestService/BatchEnroll" => {
            ingest.batch_enroll(r!(tokio_stream::iter(Vec::<EnrollRequest>::new()))).await.map(|_| ())
        }
        "IngestService/DeleteSubject" => ingest
            .delete_subject(r!(DeleteSubjectRequest { gallery: nope(), ..Default::default() }))
            .await
            .map(|_| ()),
        "IngestService/GetSubject" => ingest
            .get_subject(r!(GetSubjectRequest { gallery: nope(), ..Default::default() }))
            .await
            .map(|_| ()),
        "IngestService/PurgeExpired" => ingest.purge_expired(r!(PurgeExpiredRequest {})).await.map(|_| ()),
        "IngestService/SetSearchTuning" => ingest
            .set_search_tuning(r!(SetSearchTuningRequest {
                gallery: nope(),
                tuning: Some(SearchTuning::default()),
                reason: "test".into()
            }))
            .await
            .map(|_| ()),
        "SearchService/TuneGallery" => search
            .tune_gallery(r!(TuneGalleryRequest { gallery: nope(), ..Default::default() }))
            .await
            .map(|_| ()),
        "SearchService/Identify" => search
            .identify(r!(IdentifyRequest {
                gallery: "g".into(),
                purpose: PURPOSE.into(),
                ..Default::default()
            }))
            .await
            .map(|_| ()),
        "SearchService/Verify" => search
            .verify(r!(VerifyRequest { gallery: "g".into(), purpose: PURPOSE.into(), ..Default::default() }))
            .await
            .map(|_| ()),
        "SearchService/ReviewCandidate" => {
            search.review_candidate(r!(ReviewCandidateRequest::default())).await.map(|_| ())
        }
        "SearchService/ListPendingReviews" => search
            .list_pending_reviews(r!(ListPendingReviewsRequest { gallery: "g".into(), ..Default::default() }))
            .await
            .map(|_| ()),
        "SearchService/GetSearch" => {
            search.get_search(r!(GetSearchRequest { search_id: "no-such-search".into() })).await.map(|_| ())
        }
        "SearchService/ListCaseSearches" => search
            .list_case_searches(r!(ListCaseSearchesRequest {
                case_ref: "case-1".into(),
                ..Default::default()
            }))
            .await
            .map(|_| ()),
        "AuditService/Append" => audit.append(r!(AppendRequest::default())).await.map(|_| ()),
        "AuditService/Query" => {
            audit.query(r!(QueryAuditRequest { page_size: 1, ..Default::default() })).await.map(|_| ())
        }
        "AuditService/ListLeaves" => {
            audit.list_leaves(r!(ListLeavesRequest { start: 0, count: 1 })).await.map(|_| ())
        }
        "AuditService/GetCheckpoint" => {
            audit.get_checkpoint(r!(GetCheckpointRequest::default())).await.map(|_| ())
        }
        "AuditService/ListCheckpoints" => {
            audit.list_checkpoints(r!(ListCheckpointsRequest::default())).await.map(|_| ())
        }
        "AuditService/GetInclusionProof" => audit
            .get_inclusion_proof(r!(InclusionProofRequest { leaf_index: 0, tree_size: 1 }))
            .await
            .map(|_| ()),
        "AuditService/GetConsistencyProof" => audit
            .get_consistency_proof(r!(ConsistencyProofRequest { from_size: 1, to_size: 1 }))
            .await
            .map(|_| ()),
        "AuditService/GetPublicKey" => audit.get_public_key(r!(GetPublicKeyRequest {})).await.map(|_| ()),
        "MatcherService/Search" => matcher.search(r!(ShardSearchRequest::default())).await.map(|_| ()),
        "MatcherService/Score" => matcher.score(r!(ShardScoreRequest::default())).await.map(|_| ()),
        "AuditService/GetSearchRecord" => audit
            .get_search_record(r!(GetSearchRecordRequest { search_id: "no-such-search".into() }))
            .await
            .map(|_| ()),
        "AuditService/ListReviews" => audit
            .list_reviews(r!(ListReviewsRequest {
                search_id: "s".into(),
                gallery: nope(),
                subject_id: "x".into()
            }))
            .await
            .map(|_| ()),
        "AuditService/ListCaseRecords" => audit
            .list_case_records(r!(ListCaseRecordsRequest { case_ref: "case-1".into(), ..Default::default() }))
            .await
            .map(|_| ()),
        "MatcherService/Describe" => matcher.describe(r!(DescribeMatcherRequest {})).await.map(|_| ()),
        "MatcherService/Tune" => matcher.tune(r!(TuneShardRequest::default())).await.map(|_| ()),
        "EmbedService/Embed" => embed.embed(r!(EmbedRequest::default())).await.map(|_| ()),
        "EmbedService/DescribeModel" => embed.describe_model(r!(DescribeModelRequest {})).await.map(|_| ()),
        other => panic!("no call for {other}"),
    };
    result.err().map_or(Code::Ok, |s| s.code())
}

/// The matrix names every RPC of the contract, and the authorization table has a rule for each
/// (a new RPC is refused to everyone until it is added to both).
#[test]
fn the_matrix_and_the_table_cover_the_whole_contract() {
    let mut contract: Vec<String> = biomatch_proto::rpc_paths()
        .iter()
        .map(|path| biomatch_auth::policy::rpc_of_path(path).to_owned())
        .filter(|rpc| !rpc.starts_with("Health/") && !rpc.starts_with("ServerReflection/"))
        .collect();
    contract.sort();
    let mut tested: Vec<String> = matrix().into_iter().map(|(rpc, _)| rpc.to_owned()).collect();
    tested.sort();
    let mut ruled: Vec<String> =
        biomatch_auth::policy::RULES.iter().map(|(rpc, _)| (*rpc).to_owned()).collect();
    ruled.sort();
    assert_eq!(tested, contract, "the matrix tests every RPC of the contract");
    assert_eq!(ruled, contract, "the table has one rule per RPC");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_against_every_rpc() {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = backends(dir.path()).await.remove(0);
    // Outside demo mode: the matrix is the cluster's, not the demo's.
    let roles = [
        ProcessRole::Embed,
        ProcessRole::Ingest,
        ProcessRole::Matcher,
        ProcessRole::Search,
        ProcessRole::Audit,
    ];
    let cluster = TestCluster::start(config(&backend, dir.path(), &roles)).await;
    let mut denials = 0;
    for (rpc, allowed) in matrix() {
        for role in ROLES {
            let token = match role {
                Role::Kiosk => cluster.kiosk_token("g"),
                // The cluster's own service identity (one process, every role).
                Role::Service => cluster.token(role, "biomatch-all"),
                _ => cluster.token(role, "someone"),
            };
            let code = call(&cluster.channel, rpc, &token).await;
            if allowed.contains(&role) {
                assert!(
                    !matches!(code, Code::PermissionDenied | Code::Unauthenticated),
                    "{role} should be allowed {rpc}, got {code:?}"
                );
            } else {
                assert_eq!(code, Code::PermissionDenied, "{role} must be refused {rpc}");
                denials += 1;
            }
        }
        assert_eq!(
            call(&cluster.channel, rpc, "not-a-token").await,
            Code::Unauthenticated,
            "{rpc} without a token"
        );
    }
    // Every denial left an access_denied leaf naming the RPC.
    let mut audit = cluster.audit();
    let query = QueryAuditRequest {
        operation: Operation::AccessDenied.into(),
        page_size: 1000,
        ..Default::default()
    };
    let leaves = audit.query(query).await.expect("query").into_inner().leaves;
    assert_eq!(leaves.len(), denials, "one leaf per denial");
    assert!(
        leaves.iter().all(|l| l
            .event
            .as_ref()
            .is_some_and(|e| e.outcome == "PERMISSION_DENIED" && !e.detail.is_empty()))
    );
    cluster.running.shutdown().await;
}

/// One key per identity: a process key signs only its own service identity, which may call only
/// what its role needs; a forged or over-long token is refused everywhere and is on the record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_key_signs_only_its_own_identity() {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = backends(dir.path()).await.remove(0);
    let mut c = config(&backend, dir.path(), &[ProcessRole::All]);
    // The gateway's and the embed role's own keys, trusted like every pod's.
    let mut pod_signers = Vec::new();
    for kid in ["service-gateway", "service-embed"] {
        let (private, public) = biomatch_auth::keys::generate(&dir.path().join("pods"), kid).expect("keys");
        c.auth.public_keys.push(public);
        pod_signers
            .push(biomatch_auth::TokenSigner::from_file(&private, "biomatch", "biomatch").expect("signer"));
    }
    let cluster = TestCluster::start(c).await;
    let ttl = std::time::Duration::from_secs(300);
    for signer in &pod_signers {
        let forged = [
            (Role::Admin, "mallory", "IngestService/DeleteGallery"),
            (Role::Admin, "mallory", "IngestService/CreateGallery"),
            (Role::Enroller, "mallory", "IngestService/Enroll"),
            (Role::Auditor, "mallory", "AuditService/Query"),
            (Role::Analyst, "fresh-subject-1", "SearchService/Identify"),
            (Role::Service, "biomatch-search", "MatcherService/Search"),
            (Role::Service, "biomatch-ingest", "AuditService/Append"),
            (Role::Service, "biomatch-all", "AuditService/Append"),
        ];
        for (role, subject, rpc) in forged {
            let token = signer.issue(&biomatch_auth::TokenSpec::new(subject, role, ttl)).expect("token");
            let code = call(&cluster.channel, rpc, &token).await;
            assert_eq!(code, Code::Unauthenticated, "key {} as {role} {subject} on {rpc}", signer.kid);
        }
        // Its own identity authenticates, and may neither ask a matcher, nor delete a gallery, nor
        // write any leaf but its own refusals (the gateway: none at all).
        let own = format!("biomatch-{}", signer.kid.trim_start_matches("service-"));
        let token = signer.issue(&biomatch_auth::TokenSpec::new(&own, Role::Service, ttl)).expect("token");
        for rpc in ["MatcherService/Search", "IngestService/DeleteGallery", "AuditService/Append"] {
            assert_eq!(call(&cluster.channel, rpc, &token).await, Code::PermissionDenied, "{own} on {rpc}");
        }
    }
    let gateway = Principal::service("biomatch-gateway");
    assert!(biomatch_auth::policy::authorize("AuditService/Append", &gateway).is_err());

    // Tokens live no longer than their role allows.
    let mut spec =
        biomatch_auth::TokenSpec::new("kiosk-9", Role::Kiosk, std::time::Duration::from_secs(9 * 3600));
    spec.galleries = Some(vec!["g".into()]);
    spec.purposes = Some(vec![PURPOSE.into()]);
    let long = cluster.signer.issue(&spec).expect("token");
    assert_eq!(call(&cluster.channel, "SearchService/Identify", &long).await, Code::Unauthenticated);

    // Refused authentications are on the record: the first of each source and minute at once.
    let query =
        QueryAuditRequest { operation: Operation::AuthFailed.into(), page_size: 1000, ..Default::default() };
    let leaves = cluster.audit().query(query).await.expect("query").into_inner().leaves;
    assert!(!leaves.is_empty(), "refused authentications leave leaves");
    let event = leaves[0].event.as_ref().expect("event");
    assert_eq!(event.actor.as_ref().map(|a| a.subject.as_str()), Some("unauthenticated@127.0.0.1"));
    assert!(event.detail.contains("may not sign"), "{}", event.detail);
    assert!(leaves.len() <= 3, "a flood from one source is one leaf a minute: {}", leaves.len());
    cluster.running.shutdown().await;
}

/// Token scopes hold at ingest too: an enroller or administrator scoped to gallery `a` touches
/// nothing in `b`; subject reads are on the record and spend the reader's query budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gallery_scopes_hold_at_ingest_and_subject_reads_are_recorded_and_budgeted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = backends(dir.path()).await.remove(0);
    let mut c = config(&backend, dir.path(), &[ProcessRole::All]);
    c.search.analyst_per_minute = 2;
    c.search.enroller_per_minute = 1;
    let cluster = TestCluster::start_with_clock(c, std::sync::Arc::new(|| 1_800_000_000_000)).await;
    enrolled_gallery(&cluster, "a", 8, 1, 2, 1).await;
    enrolled_gallery(&cluster, "b", 8, 1, 2, 2).await;
    let scoped = |role: Role, subject: &str| {
        let mut spec = biomatch_auth::TokenSpec::new(subject, role, std::time::Duration::from_secs(600));
        spec.galleries = Some(vec!["a".into()]);
        cluster.signer.issue(&spec).expect("token")
    };
    let (enroller, admin, analyst) = (
        scoped(Role::Enroller, "loader-a"),
        scoped(Role::Admin, "ops-a"),
        scoped(Role::Analyst, "analyst-a"),
    );
    let mut ingest = IngestServiceClient::new(cluster.channel.clone());
    let enrol = |gallery: &str| EnrollRequest {
        gallery: gallery.into(),
        subject_id: "late".into(),
        samples: vec![biomatch_tests::embedding(vec![1.0; 8]).expect("probe")],
        mode: EnrollMode::Add.into(),
        idempotency_key: String::new(),
    };
    fn code<T>(r: Result<tonic::Response<T>, tonic::Status>) -> Code {
        r.err().map_or(Code::Ok, |s| s.code())
    }
    assert_eq!(
        code(ingest.enroll(biomatch_client::request(enrol("b"), &enroller)).await),
        Code::PermissionDenied
    );
    assert_eq!(code(ingest.enroll(biomatch_client::request(enrol("a"), &enroller)).await), Code::Ok);
    let delete = DeleteGalleryRequest { name: "b".into(), ..Default::default() };
    assert_eq!(
        code(ingest.delete_gallery(biomatch_client::request(delete, &admin)).await),
        Code::PermissionDenied
    );
    let listed = ingest.list_galleries(biomatch_client::request(ListGalleriesRequest {}, &admin)).await;
    let names: Vec<String> =
        listed.expect("list").into_inner().galleries.into_iter().map(|g| g.name).collect();
    assert_eq!(names, ["a"], "a scoped administrator sees only its galleries");
    let purge = ingest.purge_expired(biomatch_client::request(PurgeExpiredRequest {}, &admin)).await;
    assert_eq!(code(purge), Code::PermissionDenied);

    // Subject reads: in scope, recorded, and budgeted like searches (2 a minute here).
    let read = |gallery: &str| GetSubjectRequest { gallery: gallery.into(), subject_id: "s00000".into() };
    assert_eq!(
        code(ingest.get_subject(biomatch_client::request(read("b"), &analyst)).await),
        Code::PermissionDenied
    );
    assert_eq!(code(ingest.get_subject(biomatch_client::request(read("a"), &analyst)).await), Code::Ok);
    let missing = GetSubjectRequest { gallery: "a".into(), subject_id: "nobody".into() };
    assert_eq!(code(ingest.get_subject(biomatch_client::request(missing, &analyst)).await), Code::NotFound);
    let over = ingest.get_subject(biomatch_client::request(read("a"), &analyst)).await;
    assert_eq!(code(over), Code::ResourceExhausted);
    let query = QueryAuditRequest {
        actor_subject: "analyst-a".into(),
        operation: Operation::SubjectRead.into(),
        ..Default::default()
    };
    let reads = cluster.audit().query(query).await.expect("query").into_inner().leaves;
    let outcomes: Vec<String> =
        reads.iter().filter_map(|l| l.event.as_ref()).map(|e| e.outcome.clone()).collect();
    assert_eq!(outcomes, ["OK", "NOT_FOUND"], "every subject read is a leaf, found or not");
    // Enrollers' reads are counted too (1 a minute here): membership cannot be walked.
    assert_eq!(code(ingest.get_subject(biomatch_client::request(read("a"), &enroller)).await), Code::Ok);
    let over = ingest.get_subject(biomatch_client::request(read("a"), &enroller)).await;
    assert_eq!(code(over), Code::ResourceExhausted);
    cluster.running.shutdown().await;
}
