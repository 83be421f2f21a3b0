//! A caller that searches faster than its budget allows is refused, and the refusal is audited;
//! replicas share budgets and spent single-use tokens through Redis.

use biomatch_auth::{TokenSpec, bearer};
use biomatch_domain::Role;
use biomatch_proto::v1::search_service_client::SearchServiceClient;
use biomatch_proto::v1::{IdentifyRequest, Operation, QueryAuditRequest};
use biomatch_tests::{PURPOSE, TestCluster, backends, config, embedding, enrolled_gallery, identify};
use std::sync::Arc;
use std::time::Duration;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_budgets_are_enforced_and_audited() {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = backends(dir.path()).await.remove(0);
    // Every role but the gateway; the process serves its metrics on `metrics_addr`.
    use biomatch_config::ProcessRole;
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
    c.search.analyst_per_minute = 5;
    // A fixed clock: all searches fall in one minute, whatever the machine's speed.
    let cluster = TestCluster::start_with_clock(c, Arc::new(|| 1_800_000_000_000)).await;
    let (mut synthetic, centres, seq) = enrolled_gallery(&cluster, "g", 32, 1, 10, 2).await;
    for centre in &centres[..5] {
        identify(&cluster, "g", synthetic.sample(centre), seq).await.expect("within budget");
    }
    let refused = identify(&cluster, "g", synthetic.sample(&centres[0]), seq).await.expect_err("over budget");
    assert_eq!(refused.code(), Code::ResourceExhausted);
    let query = QueryAuditRequest { operation: Operation::BudgetExceeded.into(), ..Default::default() };
    let leaves = cluster.audit().query(query).await.expect("query").into_inner().leaves;
    assert_eq!(leaves.len(), 1);
    let event = leaves[0].event.as_ref().expect("event");
    assert_eq!(event.actor.as_ref().map(|a| a.subject.as_str()), Some("integration-1"));
    // And a metric an alert can watch, labelled by role, never by subject.
    let url = format!("http://{}/metrics", cluster.running.metrics_addr.expect("metrics address"));
    let text = reqwest::get(url).await.expect("metrics").text().await.expect("body");
    let line = text.lines().find(|l| l.starts_with("biomatch_budget_refusals_total{")).expect("the counter");
    assert!(line.contains("role=\"analyst\"") && line.contains("window=\"per-minute\""), "{line}");
    assert!(!text.contains("integration-1"), "no subject in metrics");
    // The matcher in this process reports its shards and search batches.
    assert!(text.contains("biomatch_matcher_shard_templates{gallery=\"g\",shard=\"0\"} 10"), "{text}");
    assert!(text.contains("biomatch_matcher_batch_queries_count"), "{text}");
    assert!(!text.contains("s00001"), "no subject id in metrics");
    // Another analyst has a budget of their own.
    let mut analyst = cluster.search();
    let request = biomatch_proto::v1::IdentifyRequest {
        gallery: "g".into(),
        probe: biomatch_tests::embedding(synthetic.sample(&centres[1])),
        purpose: biomatch_tests::PURPOSE.into(),
        ..Default::default()
    };
    assert!(analyst.identify(request).await.is_ok());
    cluster.running.shutdown().await;
}

/// The Redis of the test machine, or `None` outside CI when none is configured.
fn test_redis() -> Option<String> {
    match std::env::var("BIOMATCH_TEST_REDIS_URL") {
        Ok(url) => Some(url),
        Err(_) => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true but BIOMATCH_TEST_REDIS_URL is not set"
            );
            eprintln!("BIOMATCH_TEST_REDIS_URL not set: skipping the shared-budget test");
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn two_search_replicas_share_one_budget_through_redis() {
    let Some(redis) = test_redis() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let prefix = format!("biomatch-test-{}", uuid_like());
    let mut replicas = Vec::new();
    for name in ["a", "b"] {
        let backend = biomatch_tests::Backend::Sqlite(dir.path().join(name));
        let mut c = config(&backend, dir.path(), &[biomatch_config::ProcessRole::All]);
        c.search.analyst_per_minute = 5;
        c.redis_url = Some(redis.clone().into());
        c.redis_key_prefix = prefix.clone();
        let cluster = TestCluster::start_with_clock(c, Arc::new(|| 1_800_000_000_000)).await;
        let gallery = enrolled_gallery(&cluster, "r", 32, 1, 10, 2).await;
        replicas.push((cluster, gallery));
    }
    let mut answered = 0;
    for i in 0..6 {
        let (cluster, (synthetic, centres, seq)) = &mut replicas[i % 2];
        match identify(cluster, "r", synthetic.sample(&centres[i]), *seq).await {
            Ok(_) => answered += 1,
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted);
                assert_eq!(i, 5, "refused only past the shared budget of 5");
            }
        }
    }
    assert_eq!(answered, 5, "the two replicas counted together");

    // A single-use token spent at one replica is refused at the other.
    let mut spec = TokenSpec::new("kiosk-2", Role::Kiosk, Duration::from_secs(60));
    spec.galleries = Some(vec!["r".into()]);
    spec.purposes = Some(vec![PURPOSE.into()]);
    spec.single_use = true;
    spec.vector_probes = true;
    let token = replicas[0].0.signer.issue(&spec).expect("token");
    let mut spend = |i: usize| {
        let (cluster, (synthetic, centres, seq)) = &mut replicas[i];
        let request = IdentifyRequest {
            gallery: "r".into(),
            probe: embedding(synthetic.sample(&centres[0])),
            purpose: PURPOSE.into(),
            min_change_seq: *seq,
            ..Default::default()
        };
        let mut client = SearchServiceClient::new(cluster.channel.clone());
        let request = bearer(request, &token);
        async move { client.identify(request).await }
    };
    spend(0).await.expect("first use");
    let replay = spend(1).await.expect_err("replayed at the other replica");
    assert_eq!(replay.code(), Code::Unauthenticated, "{replay:?}");
    assert!(replay.message().contains("already used"), "{replay:?}");
    for (cluster, _) in replicas {
        cluster.running.shutdown().await;
    }
}

fn uuid_like() -> String {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("{nanos:x}-{}", std::process::id())
}
