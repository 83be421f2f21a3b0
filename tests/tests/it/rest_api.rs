//! The REST API v1 end to end over a real cluster: an admin makes a gallery, an enroller enrols,
//! analysts search, read back and review under the two-person rule, an auditor reads the log and
//! checks a leaf's proof; every list pages by cursor; every error has one shape with the
//! request's id; the OpenAPI document describes every route the test walks.

use biomatch_domain::Role;
use biomatch_tests::{PURPOSE, TestCluster, backends};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    async fn call(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if !token.is_empty() {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        let status = response.status();
        let id = response.headers().get("x-request-id").map(|v| v.to_str().unwrap_or_default().to_owned());
        let json: Value = response.json().await.unwrap_or(Value::Null);
        if status.is_client_error() || status.is_server_error() {
            // Every error: one shape, carrying the id the response header names.
            assert!(
                json["error"]["code"].is_string() && json["error"]["message"].is_string(),
                "{path}: {json}"
            );
            assert_eq!(json["error"]["request_id"].as_str(), id.as_deref(), "{path}: {json}");
        }
        (status, json)
    }

    async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, token, None).await
    }

    async fn post(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, token, Some(body)).await
    }
}

/// A unit vector of `dimension` leaning on axis `i` (distinct subjects are near-orthogonal).
fn template(dimension: usize, i: usize, noise: f32) -> Vec<f32> {
    let mut v: Vec<f32> = (0..dimension).map(|d| ((d * 7 + i * 13) % 11) as f32 * noise).collect();
    v[i % dimension] += 1.0;
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter().map(|x| x / norm).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analysts_auditors_and_admins_work_over_rest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = backends(dir.path()).await.remove(0);
    let cluster = TestCluster::all(&backend, dir.path()).await;
    let api = Api {
        http: reqwest::Client::new(),
        base: format!("http://{}", cluster.running.http_addr.expect("gateway")),
    };
    let admin = cluster.token(Role::Admin, "admin-1");
    let enroller = cluster.token(Role::Enroller, "loader-1");
    let alice = cluster.token(Role::Analyst, "alice");
    let bob = cluster.token(Role::Analyst, "bob");
    let carol = cluster.token(Role::Analyst, "carol");
    let auditor = cluster.token(Role::Auditor, "auditor-1");
    let kiosk = cluster.kiosk_token("rest");

    // Admin: galleries, paginated by cursor.
    for name in ["rest", "rest-b", "rest-c"] {
        let body = json!({"name": name, "dimension": 16, "threshold": 0.8, "allowed_purposes": [PURPOSE],
            "retention_seconds": 3600, "idempotency_key": format!("make-{name}")});
        let (status, gallery) = api.post("/v1/galleries", &admin, body).await;
        assert_eq!(status, StatusCode::CREATED, "{gallery}");
    }
    let (status, page) = api.get("/v1/galleries?limit=2", &admin).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["items"].as_array().map(Vec::len), Some(2));
    let cursor = page["next_cursor"].as_str().expect("a second page");
    let (_, rest) = api.get(&format!("/v1/galleries?limit=2&cursor={cursor}"), &admin).await;
    assert_eq!(rest["items"][0]["name"], "rest-c");
    assert!(rest["next_cursor"].is_null());
    let (status, error) = api.get("/v1/galleries?limit=1000", &admin).await;
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("INVALID_ARGUMENT"))
    );
    let threshold = json!({"threshold": 0.7, "reason": "calibrated at FMR 1e-4"});
    let (status, gallery) =
        api.call(Method::PUT, "/v1/galleries/rest/threshold", &admin, Some(threshold)).await;
    assert_eq!((status, gallery["threshold_version"].as_u64()), (StatusCode::OK, Some(2)), "{gallery}");
    assert!(gallery["threshold_policy"].is_null(), "a fixed threshold has no policy: {gallery}");
    // A target FPIR needs the model's impostor distribution: none is shipped for "external".
    for body in [
        json!({"threshold": 0.7, "target_fpir": 1e-3, "reason": "both"}),
        json!({"reason": "neither"}),
        json!({"target_fpir": 1e-3, "reason": "no distribution for this model"}),
    ] {
        let (status, error) =
            api.call(Method::PUT, "/v1/galleries/rest/threshold", &admin, Some(body.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {error}");
    }
    // An SFace gallery kept at FPIR 1e-3 from the distribution the cluster ships for SFace: at
    // the floor of 1024 templates that needs FMR ~1e-6, beyond the measured points.
    let body = json!({"name": "faces", "dimension": 128, "model_id": "sface", "target_fpir": 1e-3,
        "allowed_purposes": [PURPOSE], "retention_seconds": 3600, "idempotency_key": "make-faces"});
    let (status, faces) = api.post("/v1/galleries", &admin, body).await;
    assert_eq!(status, StatusCode::CREATED, "{faces}");
    let policy = &faces["threshold_policy"];
    assert_eq!(
        (policy["target_fpir"].as_f64(), policy["templates"].as_u64()),
        (Some(1e-3), Some(1024)),
        "{faces}"
    );
    assert_eq!(policy["extrapolated"], true, "{faces}");
    let threshold = faces["threshold"].as_f64().expect("threshold");
    assert!((0.5..0.75).contains(&threshold), "stricter than FMR 1e-4's 0.449: {faces}");
    let (status, _) =
        api.call(Method::DELETE, "/v1/galleries/rest-c?idempotency_key=rm-c", &admin, None).await;
    assert_eq!(status, 200);
    let (status, _) = api.get("/v1/galleries/rest-c", &admin).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Enroller: subjects by vectors; metadata, never a template.
    for i in 0..6 {
        let body = json!({"subject_id": format!("t{i}"), "embeddings": [template(16, i, 0.0)]});
        let (status, enrolled) = api.post("/v1/galleries/rest/subjects", &enroller, body).await;
        assert_eq!((status, enrolled["template_count"].as_u64()), (StatusCode::OK, Some(1)), "{enrolled}");
    }
    let (status, subject) = api.get("/v1/galleries/rest/subjects/t3", &enroller).await;
    assert_eq!(status, 200, "{subject}");
    assert!(subject["expires_at"].is_string() && subject.get("embeddings").is_none(), "{subject}");
    let (status, _) = api.call(Method::DELETE, "/v1/galleries/rest/subjects/t5", &enroller, None).await;
    assert_eq!(status, 200);
    let (status, _) = api.get("/v1/galleries/rest/subjects/t5", &enroller).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let wrong = json!({"subject_id": "bad", "embeddings": [[f32::MAX, 1.0]]});
    let (status, _) = api.post("/v1/galleries/rest/subjects", &enroller, wrong).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Alice identifies under a case, and verifies.
    let probe = template(16, 2, 0.01);
    let body = json!({"embedding": probe, "purpose": PURPOSE, "case_ref": "case-42", "k": 3});
    let (status, found) = api.post("/v1/galleries/rest/identify", &alice, body).await;
    assert_eq!((status, found["decision"].as_str()), (StatusCode::OK, Some("mate")), "{found}");
    assert_eq!(found["candidates"][0]["subject_id"], "t2");
    let search_id = found["search_id"].as_str().expect("search id").to_owned();
    let body = json!({"embedding": probe, "purpose": PURPOSE, "case_ref": "case-42"});
    let (status, verified) = api.post("/v1/galleries/rest/subjects/t2/verify", &alice, body).await;
    assert_eq!((status, verified["decision"].as_str()), (StatusCode::OK, Some("mate")), "{verified}");

    // The search read back: by its analyst, not (yet) by another analyst, nor by a kiosk.
    let (status, record) = api.get(&format!("/v1/searches/{search_id}"), &alice).await;
    assert_eq!(status, 200, "{record}");
    assert_eq!((record["searcher"].as_str(), record["threshold_version"].as_u64()), (Some("alice"), Some(2)));
    assert_eq!(record["candidates"][0]["state"], "unspecified");
    let (status, _) = api.get(&format!("/v1/searches/{search_id}"), &bob).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "not in review yet: only its analyst and auditors");
    let (status, _) = api.get(&format!("/v1/searches/{search_id}"), &kiosk).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = api.get("/v1/searches/no-such-search", &alice).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Two-person review over REST: alice first, never second; bob finds it in the queue.
    let review = |outcome: &str| json!({"subject_id": "t2", "outcome": outcome});
    let reviews = format!("/v1/searches/{search_id}/reviews");
    let (status, first) = api.post(&reviews, &carol, review("confirmed")).await;
    assert_eq!((status, first["state"].as_str()), (StatusCode::OK, Some("awaiting_second")), "{first}");
    let (status, refused) = api.post(&reviews, &alice, review("confirmed")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    assert!(refused["error"]["message"].as_str().is_some_and(|m| m.contains("never the second")));
    let (status, queue) = api.get("/v1/galleries/rest/reviews/pending?limit=10", &bob).await;
    assert_eq!(status, 200, "{queue}");
    assert_eq!(queue["items"][0]["search_id"].as_str(), Some(search_id.as_str()));
    assert_eq!(queue["items"][0]["first_reviewer"], "carol");
    let (status, seen) = api.get(&format!("/v1/searches/{search_id}"), &bob).await;
    assert_eq!(status, 200, "a reviewer reads a search in review: {seen}");
    let (status, second) = api.post(&reviews, &bob, review("confirmed")).await;
    assert_eq!((status, second["state"].as_str()), (StatusCode::OK, Some("confirmed")), "{second}");
    let (_, record) = api.get(&format!("/v1/searches/{search_id}"), &auditor).await;
    assert_eq!(record["candidates"][0]["state"], "confirmed", "{record}");
    let reviewers: Vec<&str> = record["candidates"][0]["reviews"]
        .as_array()
        .expect("reviews")
        .iter()
        .filter_map(|r| r["reviewer"].as_str())
        .collect();
    assert_eq!(reviewers, ["carol", "bob"]);
    let (_, queue) = api.get("/v1/galleries/rest/reviews/pending", &bob).await;
    assert!(queue["items"].as_array().is_some_and(Vec::is_empty), "{queue}");
    let (status, _) = api.post(&reviews, &alice, json!({"subject_id": "t2", "outcome": "maybe"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let elsewhere = json!({"subject_id": "t2", "outcome": "inconclusive", "case_ref": "case-other"});
    let (status, _) = api.post(&reviews, &carol, elsewhere).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "a review stays filed under its search's case");

    // An analyst's own review does not open another analyst's search to them.
    let body = json!({"embedding": template(16, 4, 0.01), "purpose": PURPOSE, "k": 3});
    let (_, other) = api.post("/v1/galleries/rest/identify", &alice, body).await;
    let other_id = other["search_id"].as_str().expect("search id");
    let probe_review = json!({"subject_id": "t4", "outcome": "inconclusive"});
    let (status, _) = api.post(&format!("/v1/searches/{other_id}/reviews"), &bob, probe_review).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = api.get(&format!("/v1/searches/{other_id}"), &bob).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "bob's own review opens nothing to bob");

    // The case's searches, a page at a time.
    let (status, case) = api.get("/v1/cases/case-42/searches?limit=1", &alice).await;
    assert_eq!(status, 200, "{case}");
    assert_eq!(case["items"][0]["search_id"].as_str(), Some(search_id.as_str()));
    let cursor = case["next_cursor"].as_str().expect("the verification is on the next page");
    let (_, next) = api.get(&format!("/v1/cases/case-42/searches?limit=1&cursor={cursor}"), &alice).await;
    assert_eq!(next["items"][0]["kind"], "verify", "{next}");

    // Auditor: filtered leaves by cursor, a leaf with its proof checked, consistency, the key.
    let (status, reviews_page) =
        api.get("/v1/audit/leaves?operation=review&gallery=rest&limit=1", &auditor).await;
    assert_eq!(status, 200, "{reviews_page}");
    assert_eq!(reviews_page["items"][0]["event"]["actor_subject"], "carol");
    let cursor = reviews_page["next_cursor"].as_str().expect("more reviews");
    let (_, more) = api
        .get(&format!("/v1/audit/leaves?operation=review&gallery=rest&limit=10&cursor={cursor}"), &auditor)
        .await;
    let subjects: Vec<&str> = more["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|l| l["event"]["actor_subject"].as_str())
        .collect();
    // The refused second confirmation, the refused refiling and the queue listings are leaves too.
    assert_eq!(subjects, ["alice", "bob", "bob", "bob", "carol", "bob"]);
    let (_, by_case) = api.get("/v1/audit/leaves?case_ref=case-42&operation=identify", &auditor).await;
    assert_eq!(by_case["items"].as_array().map(Vec::len), Some(1), "{by_case}");
    let index = reviews_page["items"][0]["index"].as_u64().expect("index");
    let (status, proved) = api.get(&format!("/v1/audit/leaves/{index}"), &auditor).await;
    assert_eq!(status, 200, "{proved}");
    assert_eq!(proved["verified"], true, "{proved}");
    assert!(proved["checkpoint"]["tree_size"].as_u64().is_some_and(|n| n > index));
    let size = proved["checkpoint"]["tree_size"].as_u64().expect("size");
    let (status, consistency) =
        api.get(&format!("/v1/audit/consistency?from_size={}&to_size={size}", size / 2), &auditor).await;
    assert_eq!(status, 200, "{consistency}");
    let (status, key) = api.get("/v1/audit/public-key", &auditor).await;
    assert_eq!((status, key["algorithm"].as_str()), (StatusCode::OK, Some("Ed25519")));
    let (status, checkpoint) = api.get("/v1/audit/checkpoint", &auditor).await;
    assert_eq!(status, 200, "{checkpoint}");
    let (status, _) = api.get("/v1/audit/leaves?operation=export", &auditor).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = api.get("/v1/audit/leaves", &alice).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "analysts do not read the log");

    // Session, errors of every layer, and no token.
    let (status, me) = api.get("/v1/session", &kiosk).await;
    assert_eq!((status, me["role"].as_str()), (StatusCode::OK, Some("kiosk")));
    let (status, _) = api.get("/v1/session", "").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = api.get("/v1/no-such-route", &alice).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = api.call(Method::PATCH, "/v1/galleries", &admin, None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    let huge = json!({"name": "x".repeat(1_100_000), "dimension": 4, "allowed_purposes": [PURPOSE]});
    let (status, _) = api.post("/v1/galleries", &admin, huge).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);

    // The document describes every route walked above, and serves as OpenAPI 3.1.
    let (status, doc) = api.get("/v1/openapi.json", "").await;
    assert_eq!((status, doc["openapi"].as_str()), (StatusCode::OK, Some("3.1.0")));
    for (method, path) in [
        ("get", "/v1/session"),
        ("get", "/v1/galleries"),
        ("post", "/v1/galleries"),
        ("get", "/v1/galleries/{gallery}"),
        ("delete", "/v1/galleries/{gallery}"),
        ("put", "/v1/galleries/{gallery}/threshold"),
        ("post", "/v1/galleries/{gallery}/subjects"),
        ("get", "/v1/galleries/{gallery}/subjects/{subject_id}"),
        ("delete", "/v1/galleries/{gallery}/subjects/{subject_id}"),
        ("post", "/v1/galleries/{gallery}/identify"),
        ("post", "/v1/galleries/{gallery}/subjects/{subject_id}/verify"),
        ("get", "/v1/searches/{search_id}"),
        ("post", "/v1/searches/{search_id}/reviews"),
        ("get", "/v1/galleries/{gallery}/reviews/pending"),
        ("get", "/v1/cases/{case_ref}/searches"),
        ("get", "/v1/audit/leaves"),
        ("get", "/v1/audit/leaves/{index}"),
        ("get", "/v1/audit/consistency"),
        ("get", "/v1/audit/checkpoint"),
        ("get", "/v1/audit/public-key"),
    ] {
        assert!(doc["paths"][path][method].is_object(), "{method} {path} is not in the document");
    }
    cluster.running.shutdown().await;
}
