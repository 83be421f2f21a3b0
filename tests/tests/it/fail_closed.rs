//! No result leaves without a committed audit leaf.

use biomatch_config::ProcessRole;
use biomatch_tests::{TestCluster, backends, config, enrolled_gallery, identify};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identify_without_audit_is_unavailable() {
    let dir = tempfile::tempdir().expect("tempdir");
    for backend in backends(dir.path()).await {
        let cluster = TestCluster::all(&backend, dir.path()).await;
        let (mut synthetic, centres, seq) = enrolled_gallery(&cluster, "g", 32, 1, 50, 9).await;
        cluster.running.shutdown().await;

        // The same data, every role but audit, and the audit endpoint pointing at nothing.
        let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
        let dead_url = format!("http://{}", dead.local_addr().expect("addr"));
        drop(dead);
        let mut c = config(
            &backend,
            dir.path(),
            &[ProcessRole::Embed, ProcessRole::Ingest, ProcessRole::Matcher, ProcessRole::Search],
        );
        c.endpoints.audit = Some(dead_url);
        let cluster = TestCluster::start(c).await;
        let probe = synthetic.sample(&centres[3]);
        let err = identify(&cluster, "g", probe, seq).await.expect_err("no unaudited answer");
        assert_eq!(err.code(), Code::Unavailable);
        assert!(err.message().contains("audit"), "{}", err.message());
        cluster.running.shutdown().await;
    }
}
