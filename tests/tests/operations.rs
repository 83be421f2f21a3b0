//! What operators rely on: every process answers gRPC health (per service) and reflection without
//! a token, serves `/healthz`, `/readyz` and `/metrics`, counts every RPC by method and status, and
//! drains (not ready, NOT_SERVING, still answering) before it stops.

use biomatch_config::ProcessRole;
use biomatch_tests::{TestCluster, backends, config, enrolled_gallery, identify};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reflection_and_rpc_metrics_without_a_gateway() {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = backends(dir.path()).await.remove(0);
    let mut c = config(
        &backend,
        dir.path(),
        &[
            ProcessRole::Audit,
            ProcessRole::Embed,
            ProcessRole::Ingest,
            ProcessRole::Matcher,
            ProcessRole::Search,
        ],
    );
    c.metrics_addr = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    let cluster = TestCluster::start(c).await;
    let (mut synthetic, centres, seq) = enrolled_gallery(&cluster, "g", 32, 2, 20, 3).await;
    identify(&cluster, "g", synthetic.sample(&centres[1]), seq).await.expect("identify");

    // Health per service, with no token (probes carry none).
    let mut health = HealthClient::new(cluster.channel.clone());
    for service in ["biomatch.v1.MatcherService", "biomatch.v1.SearchService", "biomatch.v1.AuditService"] {
        let status = health
            .check(HealthCheckRequest { service: service.into() })
            .await
            .expect("health")
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service}");
    }
    let unknown = health.check(HealthCheckRequest { service: "biomatch.v1.Nope".into() }).await;
    assert_eq!(unknown.expect_err("unknown service").code(), tonic::Code::NotFound);

    // Reflection lists the contract's services.
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = ServerReflectionClient::new(cluster.channel.clone())
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .expect("reflection")
        .into_inner();
    let response = responses.message().await.expect("stream").expect("one response");
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("not a service list: {response:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for service in ["biomatch.v1.SearchService", "biomatch.v1.MatcherService", "biomatch.v1.IngestService"] {
        assert!(names.iter().any(|n| n == service), "{service} in {names:?}");
    }

    // HTTP probes and per-RPC metrics.
    let base = format!("http://{}", cluster.running.metrics_addr.expect("metrics address"));
    for probe in ["healthz", "readyz"] {
        let response = reqwest::get(format!("{base}/{probe}")).await.expect(probe);
        assert!(response.status().is_success(), "{probe}");
    }
    let text = reqwest::get(format!("{base}/metrics")).await.expect("metrics").text().await.expect("body");
    let identify_ok =
        "biomatch_grpc_requests_total{method=\"/biomatch.v1.SearchService/Identify\",code=\"0\"}";
    assert!(text.contains(identify_ok), "{text}");
    assert!(text.contains(
        "biomatch_grpc_request_duration_seconds_bucket{method=\"/biomatch.v1.MatcherService/Search\""
    ));
    assert!(text.contains("biomatch_matcher_batch_queries_bucket{le=\"1\"}"), "batch sizes in query buckets");
    assert!(text.contains("biomatch_audit_append_seconds_bucket{outcome=\"committed\""), "{text}");
    assert!(text.contains("biomatch_matcher_change_lag 0"), "caught up: {text}");

    // Audit checkpoint gauges: after a checkpoint is signed it covers the whole tree.
    let checkpoint = cluster
        .audit()
        .get_checkpoint(biomatch_proto::v1::GetCheckpointRequest { sign_now: true })
        .await
        .expect("checkpoint")
        .into_inner();
    let text = reqwest::get(format!("{base}/metrics")).await.expect("metrics").text().await.expect("body");
    let gauge = |name: &str| {
        text.lines()
            .find_map(|l| {
                l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')).and_then(|v| v.parse::<f64>().ok())
            })
            .unwrap_or_else(|| panic!("{name} in {text}"))
    };
    assert!(gauge("biomatch_audit_tree_leaves") >= 1.0);
    assert_eq!(gauge("biomatch_audit_checkpoint_leaves"), checkpoint.tree_size as f64);
    assert!(gauge("biomatch_audit_checkpoint_age_seconds") < 60.0);
    // A refused call is counted with its status.
    let mut raw =
        biomatch_proto::v1::search_service_client::SearchServiceClient::new(cluster.channel.clone());
    let refused = raw.identify(biomatch_proto::v1::IdentifyRequest::default()).await.expect_err("no token");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    let text = reqwest::get(format!("{base}/metrics")).await.expect("metrics").text().await.expect("body");
    assert!(text.contains(
        "biomatch_grpc_requests_total{method=\"/biomatch.v1.SearchService/Identify\",code=\"16\"}"
    ));

    // Draining (the first step of shutdown): probes say not ready, health says NOT_SERVING, and
    // requests still arriving are answered.
    cluster.running.drain().await;
    let readyz = reqwest::get(format!("{base}/readyz")).await.expect("readyz");
    assert_eq!(readyz.status().as_u16(), 503);
    let status = health
        .check(HealthCheckRequest { service: "biomatch.v1.SearchService".into() })
        .await
        .expect("health")
        .into_inner()
        .status;
    assert_eq!(status, ServingStatus::NotServing as i32);
    identify(&cluster, "g", synthetic.sample(&centres[2]), seq).await.expect("still answered while draining");
    cluster.running.shutdown().await;
}
