//! Mutual TLS between roles: a cluster run with certificates serves TLS, its roles call each other
//! over it, and a caller without a client certificate from the cluster's CA is refused. A kiosk's
//! token counts only over the connection of the device its client certificate names.

use biomatch_auth::TokenSpec;
use biomatch_client::MutualTls;
use biomatch_config::ProcessRole;
use biomatch_domain::Role;
use biomatch_proto::v1::audit_service_client::AuditServiceClient;
use biomatch_proto::v1::ingest_service_client::IngestServiceClient;
use biomatch_proto::v1::search_service_client::SearchServiceClient;
use biomatch_proto::v1::{
    CreateGalleryRequest, Decision, EnrollRequest, IdentifyRequest, ListGalleriesRequest, Operation,
    QueryAuditRequest,
};
use biomatch_tests::{PURPOSE, TestCluster, backends, config, embedding};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_talk_mutual_tls_and_refuse_callers_without_a_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = backends(dir.path()).await.remove(0);
    let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    let certs =
        biomatch::certs::dev(&dir.path().join("tls"), &names, &["lane-7".to_owned()]).expect("dev certs");
    let mut c = config(
        &backend,
        dir.path(),
        &[
            ProcessRole::Embed,
            ProcessRole::Ingest,
            ProcessRole::Matcher,
            ProcessRole::Search,
            ProcessRole::Audit,
        ],
    );
    c.tls.ca_file = Some(certs.ca.clone());
    c.tls.cert_file = Some(certs.node_cert.clone());
    c.tls.key_file = Some(certs.node_key.clone());
    let cluster = TestCluster::start(c).await;
    let url = format!("http://{}", cluster.running.grpc_addr);

    // With a client certificate from the cluster's CA: the whole path works, role to role over TLS.
    let tls = MutualTls::from_files(&certs.ca, &certs.client_cert, &certs.client_key).expect("client tls");
    let channel = biomatch_client::channel_with(&url, Some(&tls)).expect("channel");
    let admin = cluster.token(Role::Admin, "ops");
    let enroller = cluster.token(Role::Enroller, "loader");
    let mut ingest = IngestServiceClient::new(channel.clone());
    let gallery = CreateGalleryRequest {
        name: "g".into(),
        dimension: 8,
        allowed_purposes: vec![PURPOSE.into()],
        retention: Some(prost_types::Duration { seconds: 3600, nanos: 0 }),
        ..Default::default()
    };
    ingest.create_gallery(biomatch_client::request(gallery, &admin)).await.expect("create over TLS");
    let vector = vec![1.0, 0.5, 0.0, 0.0, 0.2, 0.0, 0.0, 0.1];
    let enroll = EnrollRequest {
        gallery: "g".into(),
        subject_id: "s1".into(),
        samples: vec![embedding(vector.clone()).expect("probe")],
        ..Default::default()
    };
    let seq = ingest
        .enroll(biomatch_client::request(enroll, &enroller))
        .await
        .expect("enroll")
        .into_inner()
        .change_seq;
    let identify = IdentifyRequest {
        gallery: "g".into(),
        probe: embedding(vector),
        purpose: PURPOSE.into(),
        min_change_seq: seq,
        ..Default::default()
    };
    let analyst = cluster.token(Role::Analyst, "analyst");
    let found = SearchServiceClient::new(channel.clone())
        .identify(biomatch_client::request(identify.clone(), &analyst))
        .await
        .expect("identify over TLS")
        .into_inner();
    assert_eq!(found.decision(), Decision::Mate);

    // A kiosk token counts only from the lane its certificate names.
    let kiosk = |device: &str| {
        let mut spec = TokenSpec::new("kiosk-7", Role::Kiosk, std::time::Duration::from_secs(600));
        spec.device = device.into();
        spec.vector_probes = true;
        spec.galleries = Some(vec!["g".into()]);
        spec.purposes = Some(vec![PURPOSE.into()]);
        cluster.signer.issue(&spec).expect("kiosk token")
    };
    let (device, lane_cert, lane_key) = &certs.kiosks[0];
    assert_eq!(device, "lane-7");
    let lane = MutualTls::from_files(&certs.ca, lane_cert, lane_key).expect("lane tls");
    let lane = SearchServiceClient::new(biomatch_client::channel_with(&url, Some(&lane)).expect("channel"));
    let at_lane = |token: String| {
        let mut lane = lane.clone();
        let identify = identify.clone();
        async move { lane.identify(biomatch_client::request(identify, &token)).await }
    };
    let answer = at_lane(kiosk("lane-7")).await.expect("the lane's own token").into_inner();
    assert_eq!(answer.decision(), Decision::Mate);
    for (token, what) in [(kiosk("lane-9"), "another lane's token"), (kiosk(""), "a token naming no device")]
    {
        let refused = at_lane(token).await.expect_err(what);
        assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{what}: {refused:?}");
    }
    let refused = SearchServiceClient::new(channel.clone())
        .identify(biomatch_client::request(identify.clone(), &kiosk("lane-7")))
        .await
        .expect_err("a lane's token over another certificate");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    assert!(refused.message().contains("lane-7"), "the refusal names the device: {}", refused.message());
    // Each of the three refusals is a leaf.
    let query = QueryAuditRequest {
        actor_subject: "kiosk-7".into(),
        operation: Operation::AccessDenied.into(),
        page_size: 100,
        ..Default::default()
    };
    let auditor = cluster.token(Role::Auditor, "auditor");
    let leaves = AuditServiceClient::new(channel.clone())
        .query(biomatch_client::request(query, &auditor))
        .await
        .expect("query")
        .into_inner()
        .leaves;
    assert_eq!(leaves.len(), 3, "every refused lane token is on the record");

    // Refused: plain text, TLS without a client certificate, a certificate from another CA.
    let list = || biomatch_client::request(ListGalleriesRequest {}, &admin);
    let plain = Endpoint::from_shared(url.clone()).expect("url").connect_lazy();
    assert!(IngestServiceClient::new(plain).list_galleries(list()).await.is_err(), "plain text");
    let ca = Certificate::from_pem(std::fs::read(&certs.ca).expect("ca"));
    let https = url.replace("http://", "https://");
    let no_cert = Endpoint::from_shared(https.clone())
        .expect("url")
        .tls_config(ClientTlsConfig::new().ca_certificate(ca))
        .expect("tls")
        .connect_lazy();
    assert!(IngestServiceClient::new(no_cert).list_galleries(list()).await.is_err(), "no client certificate");
    let other = biomatch::certs::dev(&dir.path().join("other"), &names, &[]).expect("another CA");
    let foreign = MutualTls::from_files(&certs.ca, &other.client_cert, &other.client_key).expect("tls");
    let foreign = biomatch_client::channel_with(&url, Some(&foreign)).expect("channel");
    assert!(
        IngestServiceClient::new(foreign).list_galleries(list()).await.is_err(),
        "a foreign client certificate"
    );
    cluster.running.shutdown().await;
}
