//! Two-person review: a candidate is CONFIRMED only when two different analysts confirmed it,
//! the analyst who ran the search never second; a rejection and a disagreement stand as such;
//! every review, and every refused review, is a leaf; the state comes from those leaves.

use biomatch_domain::Role;
use biomatch_proto::v1::search_service_client::SearchServiceClient;
use biomatch_proto::v1::{
    IdentifyRequest, Operation, QueryAuditRequest, ReviewCandidateRequest, ReviewOutcome, ReviewState,
};
use biomatch_tests::{PURPOSE, TestCluster, backends, embedding, enrolled_gallery};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_candidate_is_confirmed_by_two_analysts_and_never_by_the_searcher_second() {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = backends(dir.path()).await.remove(0);
    let cluster = TestCluster::all(&backend, dir.path()).await;
    let (mut synthetic, centres, seq) = enrolled_gallery(&cluster, "g", 64, 2, 40, 9).await;
    let search = SearchServiceClient::new(cluster.channel.clone());
    // Analyst "alice" runs the searches; bob and carol review.
    let mut search_by_alice = |subject: usize| {
        let request = IdentifyRequest {
            gallery: "g".into(),
            probe: embedding(synthetic.sample(&centres[subject])),
            k: 5,
            min_change_seq: seq,
            purpose: PURPOSE.into(),
            ..Default::default()
        };
        let mut search = search.clone();
        let token = cluster.token(Role::Analyst, "alice");
        async move {
            search.identify(biomatch_client::request(request, &token)).await.expect("identify").into_inner()
        }
    };
    let review = |who: &str, search_id: &str, subject: &str, outcome: ReviewOutcome| {
        let request = ReviewCandidateRequest {
            search_id: search_id.into(),
            gallery: "g".into(),
            subject_id: subject.into(),
            outcome: outcome.into(),
            case_ref: "case-7".into(),
        };
        let mut search = search.clone();
        let token = cluster.token(Role::Analyst, who);
        async move { search.review_candidate(biomatch_client::request(request, &token)).await }
    };
    let state = |r: Result<tonic::Response<biomatch_proto::v1::ReviewCandidateResponse>, tonic::Status>| {
        r.expect("review").into_inner().state()
    };
    use ReviewOutcome::{Confirmed, Inconclusive, Rejected};

    // The searcher confirms first, a second analyst confirms: CONFIRMED.
    let first = search_by_alice(5).await.search_id;
    assert_eq!(state(review("alice", &first, "s00005", Confirmed).await), ReviewState::AwaitingSecond);
    let again = review("alice", &first, "s00005", Confirmed).await.expect_err("once per analyst");
    assert_eq!(again.code(), Code::FailedPrecondition, "{again:?}");
    assert_eq!(state(review("bob", &first, "s00005", Confirmed).await), ReviewState::Confirmed);
    assert_eq!(state(review("carol", &first, "s00005", Inconclusive).await), ReviewState::Confirmed);

    // Another analyst confirms first: the searcher may not give the second confirmation.
    let second = search_by_alice(6).await.search_id;
    assert_eq!(state(review("bob", &second, "s00006", Confirmed).await), ReviewState::AwaitingSecond);
    let searcher = review("alice", &second, "s00006", Confirmed).await.expect_err("never second");
    assert_eq!(searcher.code(), Code::FailedPrecondition);
    assert!(searcher.message().contains("never the second"), "{}", searcher.message());
    // A rejection by another analyst: the disagreement stands.
    assert_eq!(state(review("carol", &second, "s00006", Rejected).await), ReviewState::Disputed);

    // A rejection alone.
    let third = search_by_alice(7).await.search_id;
    assert_eq!(state(review("bob", &third, "s00007", Rejected).await), ReviewState::Rejected);

    // Every review and every refused review is a leaf, with the state it led to.
    let query = QueryAuditRequest {
        operation: Operation::Review.into(),
        subject_id: "s00006".into(),
        ..Default::default()
    };
    let leaves = cluster.audit().query(query).await.expect("query").into_inner().leaves;
    let events: Vec<_> = leaves.iter().filter_map(|l| l.event.as_ref()).collect();
    assert_eq!(events.len(), 3, "{events:?}");
    let outcomes: Vec<(&str, &str, &str)> = events
        .iter()
        .map(|e| {
            (e.actor.as_ref().map_or("", |a| a.subject.as_str()), e.outcome.as_str(), e.decision.as_str())
        })
        .collect();
    assert_eq!(
        outcomes,
        [("bob", "OK", "confirmed"), ("alice", "FAILED_PRECONDITION", ""), ("carol", "OK", "rejected")]
    );
    assert!(events[2].detail.contains("DISPUTED"), "{}", events[2].detail);

    // The review queue: what awaits a second confirmation (not the confirmed, the disputed or the
    // rejected), and the listing is itself on the record.
    let fourth = search_by_alice(8).await.search_id;
    assert_eq!(state(review("bob", &fourth, "s00008", Confirmed).await), ReviewState::AwaitingSecond);
    let mut queue = search.clone();
    let list = biomatch_proto::v1::ListPendingReviewsRequest { gallery: "g".into(), ..Default::default() };
    let carol = cluster.token(Role::Analyst, "carol");
    let pending = queue
        .list_pending_reviews(biomatch_client::request(list.clone(), &carol))
        .await
        .expect("queue")
        .into_inner()
        .pending;
    let listed: Vec<(&str, &str, &str)> = pending
        .iter()
        .map(|p| (p.search_id.as_str(), p.subject_id.as_str(), p.first_reviewer.as_str()))
        .collect();
    assert_eq!(listed, [(fourth.as_str(), "s00008", "bob")]);
    assert_eq!(state(review("carol", &fourth, "s00008", Confirmed).await), ReviewState::Confirmed);
    let pending = queue.list_pending_reviews(biomatch_client::request(list, &carol)).await.expect("queue");
    assert!(pending.into_inner().pending.is_empty(), "nothing awaits a second review any more");

    // The queue a page at a time: a next page only when one more awaits, never an empty one.
    for subject in [9, 10] {
        let id = search_by_alice(subject).await.search_id;
        let who = format!("s{subject:05}");
        assert_eq!(state(review("bob", &id, &who, Confirmed).await), ReviewState::AwaitingSecond);
    }
    // Reviewed after them, and not awaiting anything: no reason for another page.
    let settled = search_by_alice(11).await.search_id;
    assert_eq!(state(review("bob", &settled, "s00011", Rejected).await), ReviewState::Rejected);
    let dave = cluster.token(Role::Analyst, "dave");
    let page = |page_token: u64| {
        let list =
            biomatch_proto::v1::ListPendingReviewsRequest { gallery: "g".into(), page_size: 1, page_token };
        let mut queue = search.clone();
        let dave = dave.clone();
        async move {
            queue
                .list_pending_reviews(biomatch_client::request(list, &dave))
                .await
                .expect("page")
                .into_inner()
        }
    };
    let first = page(0).await;
    assert_eq!((first.pending.len(), first.next_page_token), (1, 1));
    let second = page(first.next_page_token).await;
    assert_eq!((second.pending.len(), second.next_page_token), (1, 0), "the last page says so");
    assert_ne!(first.pending[0].subject_id, second.pending[0].subject_id);
    let query = QueryAuditRequest {
        operation: Operation::Review.into(),
        actor_subject: "carol".into(),
        ..Default::default()
    };
    let carols = cluster.audit().query(query).await.expect("query").into_inner().leaves;
    assert_eq!(
        carols.iter().filter_map(|l| l.event.as_ref()).filter(|e| e.outcome == "LISTED").count(),
        2,
        "each queue read is a leaf"
    );
    cluster.running.shutdown().await;
}

/// Each listing of the review queue spends a query of the caller's budget, like a search: the
/// queue cannot be polled without limit (each listing reads up to 1,000 reviews and is a leaf).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_review_queue_spends_the_callers_budget() {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = backends(dir.path()).await.remove(0);
    let mut c = biomatch_tests::config(&backend, dir.path(), &[biomatch_config::ProcessRole::All]);
    c.search.analyst_per_minute = 2;
    let cluster = TestCluster::start_with_clock(c, std::sync::Arc::new(|| 1_800_000_000_000)).await;
    enrolled_gallery(&cluster, "g", 16, 1, 4, 3).await;
    let mut queue = SearchServiceClient::new(cluster.channel.clone());
    let token = cluster.token(Role::Analyst, "dave");
    let list = biomatch_proto::v1::ListPendingReviewsRequest { gallery: "g".into(), ..Default::default() };
    for _ in 0..2 {
        queue
            .list_pending_reviews(biomatch_client::request(list.clone(), &token))
            .await
            .expect("within budget");
    }
    let over =
        queue.list_pending_reviews(biomatch_client::request(list, &token)).await.expect_err("over budget");
    assert_eq!(over.code(), Code::ResourceExhausted);
    cluster.running.shutdown().await;
}
