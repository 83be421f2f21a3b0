//! The REST gateway proves the path: identify by embedding over JSON, errors as JSON.

use biomatch_tests::{TestCluster, backends, enrolled_gallery};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_identify_and_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = backends(dir.path()).await.remove(0);
    let cluster = TestCluster::all(&backend, dir.path()).await;
    let (mut synthetic, centres, seq) = enrolled_gallery(&cluster, "g", 64, 2, 200, 21).await;
    let base = format!("http://{}", cluster.running.http_addr.expect("gateway runs"));
    let http = reqwest::Client::new();
    let analyst = format!("Bearer {}", cluster.token(biomatch_domain::Role::Analyst, "analyst-1"));

    let health = http.get(format!("{base}/healthz")).send().await.expect("healthz");
    assert_eq!(health.status(), 200);

    let probe = synthetic.sample(&centres[42]);
    let body = serde_json::json!({"embedding": probe, "k": 3, "min_change_seq": seq, "purpose": "border"});
    let r = http
        .post(format!("{base}/v1/galleries/g/identify"))
        .json(&body)
        .header("authorization", &analyst)
        .send()
        .await
        .expect("identify");
    assert_eq!(r.status(), 200);
    let json: serde_json::Value = r.json().await.expect("json");
    assert_eq!(json["decision"], "mate");
    assert_eq!(json["candidates"][0]["subject_id"], "s00042");
    assert_eq!(json["mate_subject_id"], "s00042");
    // Up to k = 3 candidates, only those at or above the candidate floor.
    let floor = json["candidate_floor"].as_f64().expect("floor");
    let listed = json["candidates"].as_array().expect("candidates");
    assert!((1..=3).contains(&listed.len()), "{json}");
    assert!(listed.iter().all(|c| c["score"].as_f64().is_some_and(|s| s >= floor)), "{json}");

    let wrong = serde_json::json!({"embedding": [1.0, 2.0], "purpose": "border"});
    let r = http
        .post(format!("{base}/v1/galleries/g/identify"))
        .json(&wrong)
        .header("authorization", &analyst)
        .send()
        .await
        .expect("identify");
    assert_eq!(r.status(), 400);
    let json: serde_json::Value = r.json().await.expect("json");
    assert_eq!(json["error"]["code"], "INVALID_ARGUMENT");

    let r = http
        .post(format!("{base}/v1/galleries/nope/identify"))
        .json(&body)
        .header("authorization", &analyst)
        .send()
        .await
        .expect("identify");
    assert_eq!(r.status(), 404);
    let r = http
        .post(format!("{base}/v1/galleries/g/identify"))
        .header("content-type", "application/json")
        .header("authorization", &analyst)
        .body("{not json")
        .send()
        .await
        .expect("identify");
    assert_eq!(r.status(), 400);
    // No token, or a forged one: 401 with a JSON error.
    let r = http.post(format!("{base}/v1/galleries/g/identify")).json(&body).send().await.expect("identify");
    assert_eq!(r.status(), 401);
    let r = http
        .post(format!("{base}/v1/galleries/g/identify"))
        .json(&body)
        .header("authorization", "Bearer eyJhbGciOiJub25lIn0.e30.")
        .send()
        .await
        .expect("identify");
    assert_eq!(r.status(), 401);
    let json: serde_json::Value = r.json().await.expect("json");
    assert_eq!(json["error"]["code"], "UNAUTHENTICATED");

    // Metrics are on the operator port only: the public port answers 404 for them.
    let r = http.get(format!("{base}/metrics")).send().await.expect("public metrics");
    assert_eq!(r.status(), 404, "the gateway's public port serves no /metrics");
    let ops = format!("http://{}", cluster.running.metrics_addr.expect("operator port"));
    // REST requests are counted by route template (never the concrete path) and status.
    let text = http.get(format!("{ops}/metrics")).send().await.expect("metrics").text().await.expect("body");
    let route = "route=\"/v1/galleries/{gallery}/identify\",method=\"POST\"";
    for status in ["200", "400", "401", "404"] {
        let series = format!("biomatch_http_requests_total{{{route},status=\"{status}\"}}");
        assert!(text.contains(&series), "{series} in {text}");
    }
    assert!(text.contains("biomatch_http_request_duration_seconds_bucket{route="));
    assert!(!text.contains("/v1/galleries/nope"), "no concrete path in a label");
    cluster.running.shutdown().await;
}
