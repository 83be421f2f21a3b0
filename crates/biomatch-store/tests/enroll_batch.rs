//! Batch enrolment at bulk size, on SQLite and (when configured) PostgreSQL: each item succeeds
//! or fails alone, the change log stays gap-free, and a batch re-sent after a cut replays what
//! was committed and writes the rest once.

use biomatch_domain::{Gallery, GalleryName, IndexSpec, SubjectId, Template};
use biomatch_store::testing::backend_urls;
use biomatch_store::{EnrollResult, EnrollWrite, GalleryStore, Idempotency, SqlStore, StoreError, Written};

fn spec() -> Gallery {
    Gallery {
        name: GalleryName::parse("g").expect("valid"),
        dimension: 4,
        shard_count: 2,
        index: IndexSpec::flat(),
        model_id: "external".into(),
        model_version: "1".into(),
        threshold: 0.5,
        threshold_version: 1,
        allowed_purposes: vec!["border".into()],
        retention_seconds: 3600,
        default_k: 10,
        created_at_ms: 0,
    }
}

fn write(subject: &str, templates: usize, key: Option<&str>) -> EnrollWrite {
    EnrollWrite {
        subject: SubjectId::parse(subject).expect("valid"),
        shard: (subject.len() % 2) as u32,
        model_id: "external".into(),
        sealed_templates: (0..templates)
            .map(|t| Template::new(vec![t as f32, 1.0, 0.0, 0.0], 4).expect("valid").to_le_bytes())
            .collect(),
        replace: false,
        idempotency: key.map(|k| Idempotency { key: k.into(), request_hash: format!("hash-of-{subject}") }),
    }
}

async fn each_backend<F, Fut>(test: F)
where
    F: Fn(SqlStore) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let dir = tempfile::tempdir().expect("tempdir");
    for url in backend_urls(dir.path()).await {
        let store = SqlStore::connect(&url).await.expect("connect");
        test(store.clone()).await;
        store.close().await;
    }
}

/// The written results, asserting their sequence numbers are consecutive and end at the head.
async fn assert_gap_free(store: &SqlStore, before: u64, results: &[&Written<EnrollResult>]) {
    let mut seqs: Vec<u64> = results.iter().filter(|w| !w.replayed).map(|w| w.value.change_seq).collect();
    seqs.sort_unstable();
    let expected: Vec<u64> = (before + 1..=before + seqs.len() as u64).collect();
    assert_eq!(seqs, expected, "one change each, gap-free after {before}");
    assert_eq!(store.head_seq().await.expect("head"), before + seqs.len() as u64);
}

#[tokio::test]
async fn bad_items_in_the_middle_of_a_batch_fail_alone() {
    each_backend(|store| async move {
        let g = store.create_gallery(&spec(), None, "k", None, 0).await.expect("create").value;
        let taken = store.enroll(&g, &[write("taken", 1, Some("k-taken"))], 1).await.expect("enroll");
        assert!(taken[0].is_ok());
        let before = store.head_seq().await.expect("head");

        let mut other_model = write("taken", 1, None);
        other_model.model_id = "sface".into();
        let mut conflict = write("c", 1, Some("k-taken"));
        conflict.idempotency.as_mut().expect("keyed").request_hash = "another body".into();
        let mut items: Vec<EnrollWrite> =
            (0..700).map(|i| write(&format!("s{i}"), 1 + i % 3, Some(&format!("k{i}")))).collect();
        items.insert(300, other_model);
        items.insert(350, conflict);
        items.push(write("unkeyed", 2, None));
        let results = store.enroll(&g, &items, 2).await.expect("batch");
        assert_eq!(results.len(), items.len());
        assert!(matches!(results[300], Err(StoreError::ModelMismatch { .. })), "{:?}", results[300]);
        assert!(matches!(results[350], Err(StoreError::IdempotencyConflict(_))), "{:?}", results[350]);
        let ok: Vec<&Written<EnrollResult>> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(ok.len(), items.len() - 2, "every other item committed");
        for (item, result) in items.iter().zip(&results) {
            if let Ok(w) = result {
                assert_eq!(w.value.subject_id, item.subject.as_str(), "results in the items' order");
                assert_eq!(w.value.template_count as usize, item.sealed_templates.len());
                assert!(!w.replayed);
            }
        }
        assert_gap_free(&store, before, &ok).await;
        assert!(store.subject_templates(g.id, "c").await.expect("c").is_empty(), "nothing of c");
        assert_eq!(
            store.subject_templates(g.id, "taken").await.expect("taken").len(),
            1,
            "mismatch wrote nothing"
        );
        let rows = store.subject_templates(g.id, "s5").await.expect("s5");
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[2].vector, write("s5", 3, None).sealed_templates[2], "templates in order");
        let counts = store.gallery_counts(g.id).await.expect("counts");
        let templates: usize = items.iter().map(|i| i.sealed_templates.len()).sum();
        assert_eq!((counts.subjects, counts.templates), (702, templates as u64 - 2 + 1));
        let subject = store.subject(&g, &SubjectId::parse("s699").expect("valid")).await.expect("s699");
        assert_eq!((subject.shard, subject.expires_at_ms), (0, Some(2 + 3_600_000)));
        // Each change names its subject and shard.
        let changes = store.changes_after(before, 1000).await.expect("changes");
        let s7 = changes.iter().find(|c| c.subject_id == "s7").expect("s7 changed");
        assert_eq!(s7.shard, 0);
    })
    .await;
}

#[tokio::test]
async fn a_subject_or_key_named_twice_in_a_batch_is_written_in_order() {
    each_backend(|store| async move {
        let g = store.create_gallery(&spec(), None, "k", None, 0).await.expect("create").value;
        let before = store.head_seq().await.expect("head");
        let items = vec![
            write("a", 1, Some("ka")),
            write("b", 1, None),
            write("a", 2, None),
            write("d", 1, Some("kd")),
            write("d", 1, Some("kd")),
        ];
        let results = store.enroll(&g, &items, 5).await.expect("batch");
        let ok: Vec<&Written<EnrollResult>> = results.iter().map(|r| r.as_ref().expect("ok")).collect();
        assert_eq!(ok[0].value.template_count, 1);
        assert_eq!(ok[2].value.template_count, 3, "the second enrolment of a adds to the first");
        assert!(ok[2].value.change_seq > ok[0].value.change_seq, "a's changes in order");
        assert!(!ok[3].replayed && ok[4].replayed, "a key's second use in the batch replays the first");
        assert_eq!(ok[4].value, ok[3].value);
        assert_eq!(store.subject_templates(g.id, "d").await.expect("d").len(), 1);
        assert_gap_free(&store, before, &ok).await;
    })
    .await;
}

#[tokio::test]
async fn a_batch_resent_after_a_cut_enrols_each_subject_once() {
    each_backend(|store| async move {
        let g = store.create_gallery(&spec(), None, "k", None, 0).await.expect("create").value;
        let items: Vec<EnrollWrite> =
            (0..1200).map(|i| write(&format!("s{i}"), 1, Some(&format!("k{i}")))).collect();
        // The stream was cut after 700 items had been committed.
        let first = store.enroll(&g, &items[..700], 1).await.expect("first part");
        let first: Vec<Written<EnrollResult>> = first.into_iter().map(|r| r.expect("ok")).collect();
        let head = store.head_seq().await.expect("head");
        // The whole batch again, with the same keys.
        let again = store.enroll(&g, &items, 2).await.expect("resent");
        let again: Vec<&Written<EnrollResult>> = again.iter().map(|r| r.as_ref().expect("ok")).collect();
        for (i, w) in again.iter().enumerate() {
            assert_eq!(w.replayed, i < 700, "item {i}: replayed only if committed before");
            if i < 700 {
                assert_eq!(w.value, first[i].value, "a replay answers the first result");
            }
        }
        assert_gap_free(&store, head, &again).await;
        let counts = store.gallery_counts(g.id).await.expect("counts");
        assert_eq!((counts.subjects, counts.templates), (1200, 1200), "each subject once");
        // A third time writes nothing.
        let third = store.enroll(&g, &items, 3).await.expect("third");
        assert!(third.iter().all(|r| r.as_ref().is_ok_and(|w| w.replayed)));
        assert_eq!(store.head_seq().await.expect("head"), head + 500);
    })
    .await;
}

/// `conflicting_keys` names exactly the keys another request (another hash) used: not the
/// unused ones, not a replay of the same request.
#[tokio::test]
async fn conflicting_keys_are_those_another_request_used() {
    each_backend(|store| async move {
        let g = store.create_gallery(&spec(), None, "k", None, 0).await.expect("create").value;
        store.enroll(&g, &[write("a", 1, Some("ka")), write("b", 1, Some("kb"))], 1).await.expect("enrol");
        let probe = |key: &str, hash: &str| Idempotency { key: key.into(), request_hash: hash.into() };
        let asked = [
            probe("ka", "hash-of-a"),
            probe("kb", "another body"),
            probe("kc", "hash-of-c"),
            probe("kb", "x"),
        ];
        let reused = store.conflicting_keys(&asked).await.expect("read");
        assert_eq!(reused, ["kb".to_owned()].into_iter().collect());
        assert!(store.conflicting_keys(&[]).await.expect("nothing asked").is_empty());
    })
    .await;
}

/// A bulk load refreshes PostgreSQL's statistics as the gallery grows: with the estimates of an
/// empty table, the planner looked each batch's subjects up by scanning the whole gallery.
#[tokio::test]
async fn a_bulk_load_gives_postgres_the_gallery_size() {
    let Some(url) = biomatch_store::testing::fresh_postgres_url().await else { return };
    let store = SqlStore::connect(&url).await.expect("connect");
    let g = store.create_gallery(&spec(), None, "k", None, 0).await.expect("create").value;
    for batch in 0..5 {
        let items: Vec<EnrollWrite> = (0..2048).map(|i| write(&format!("s{batch}-{i}"), 1, None)).collect();
        store.enroll(&g, &items, 1).await.expect("enrol");
    }
    // The refresh runs in the background once the rows are committed: wait for it, bounded.
    let pool = sqlx::AnyPool::connect(&url).await.expect("pool");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut estimate = -1.0f32;
    while estimate < 8192.0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        estimate = sqlx::query_scalar("SELECT reltuples FROM pg_class WHERE relname = 'subjects'")
            .fetch_one(&pool)
            .await
            .expect("estimate");
    }
    assert!(estimate >= 8192.0, "the planner's estimate of the subjects table: {estimate}");
    store.close().await;
}
