//! One suite, run against SQLite and (when configured) PostgreSQL.

use biomatch_domain::{
    Gallery, GalleryName, ImpostorTail, IndexSpec, SearchTuning, SubjectId, Template, ThresholdPolicy,
};
use biomatch_store::testing::backend_urls;
use biomatch_store::{
    AttemptFate, AuditQuery, AuditStore, Backend, ChangeOp, CheckpointRow, EnrollWrite, GalleryStore,
    Idempotency, NewAuditLeaf, SqlStore, StoreError, as_attempt,
};
use sqlx::Connection;

fn spec(name: &str) -> Gallery {
    Gallery {
        name: GalleryName::parse(name).expect("valid"),
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

fn write(subject: &str, values: &[[f32; 4]], key: Option<(&str, &str)>) -> EnrollWrite {
    EnrollWrite {
        subject: SubjectId::parse(subject).expect("valid"),
        shard: 1,
        model_id: "external".into(),
        sealed_templates: values
            .iter()
            .map(|v| Template::new(v.to_vec(), 4).expect("valid").to_le_bytes())
            .collect(),
        replace: false,
        idempotency: key.map(|(k, h)| Idempotency { key: k.into(), request_hash: h.into() }),
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

#[tokio::test]
async fn galleries_are_created_listed_and_deleted() {
    each_backend(|store| async move {
        let key = |hash: &str| Idempotency { key: "create-g1".into(), request_hash: hash.into() };
        let first =
            store.create_gallery(&spec("g1"), None, "k1", Some(&key("h1")), 1000).await.expect("create");
        let g = first.value;
        assert!(!first.replayed);
        assert_eq!(g.settings.name.as_str(), "g1");
        assert_eq!(g.settings.allowed_purposes, vec!["border".to_owned()]);
        assert!(matches!(
            store.create_gallery(&spec("g1"), None, "k1", None, 1000).await,
            Err(StoreError::GalleryExists(_))
        ));
        let again =
            store.create_gallery(&spec("g1"), None, "k2", Some(&key("h1")), 1000).await.expect("replay");
        assert!(again.replayed, "the same key and request answer the gallery again");
        assert_eq!((again.value.id, again.value.key_ref.as_str()), (g.id, "k1"), "nothing new was made");
        assert!(matches!(
            store.create_gallery(&spec("g2"), None, "k3", Some(&key("h2")), 1000).await,
            Err(StoreError::IdempotencyConflict(_))
        ));
        assert_eq!(store.galleries().await.expect("list").len(), 1);
        let name = GalleryName::parse("g1").expect("valid");
        let before = store.head_seq().await.expect("head");
        let seq = store.delete_gallery(&name, None, 2000).await.expect("delete").value.change_seq;
        assert!(seq > before);
        assert!(matches!(store.gallery(&name).await, Err(StoreError::GalleryNotFound(_))));
        let changes = store.changes_after(before, 10).await.expect("changes");
        assert_eq!(changes.last().map(|c| c.op), Some(ChangeOp::DropGallery));
    })
    .await;
}

#[tokio::test]
async fn a_threshold_change_is_in_the_change_log_and_a_same_value_is_not() {
    each_backend(|store| async move {
        let g = store.create_gallery(&spec("t"), None, "kt", None, 0).await.expect("create").value;
        let name = GalleryName::parse("t").expect("valid");
        let before = store.head_seq().await.expect("head");
        let raised = store.set_threshold(&name, 0.7, None, None, 10).await.expect("set");
        assert_eq!((raised.settings.threshold, raised.settings.threshold_version), (0.7, 2));
        let changes = store.changes_after(before, 10).await.expect("changes");
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert_eq!((changes[0].op, changes[0].gallery_id), (ChangeOp::Settings, g.id));
        let head = store.head_seq().await.expect("head");
        let same = store.set_threshold(&name, 0.7, None, None, 20).await.expect("same value");
        assert_eq!(same.settings.threshold_version, 2, "an unchanged value keeps its version");
        assert_eq!(store.head_seq().await.expect("head"), head, "and appends no change");
        let unknown = GalleryName::parse("nope").expect("valid");
        assert!(matches!(
            store.set_threshold(&unknown, 0.7, None, None, 30).await,
            Err(StoreError::GalleryNotFound(_))
        ));

        // Search tuning: versioned, kept with the gallery, and in the change log too.
        assert_eq!(store.gallery(&name).await.expect("gallery").tuning, None);
        let tuning = SearchTuning { nprobe: 32, rerank_depth: 128, recall: 0.996, ..Default::default() };
        let head = store.head_seq().await.expect("head");
        let first = store.set_search_tuning(&name, &tuning, 40).await.expect("tuned");
        assert_eq!(first.tuning.as_ref().map(|t| (t.version, t.nprobe)), Some((1, 32)));
        let pinned = SearchTuning { nprobe: 8, pinned: true, ..tuning };
        store.set_search_tuning(&name, &pinned, 50).await.expect("pinned");
        let read = store.gallery(&name).await.expect("gallery").tuning.expect("tuning");
        assert_eq!((read.version, read.nprobe, read.pinned, read.recall), (2, 8, true, 0.996));
        let changes = store.changes_after(head, 10).await.expect("changes");
        assert!(
            changes.iter().all(|c| c.op == ChangeOp::Settings && c.gallery_id == g.id) && changes.len() == 2
        );
        assert!(matches!(
            store.set_search_tuning(&unknown, &pinned, 60).await,
            Err(StoreError::GalleryNotFound(_))
        ));
    })
    .await;
}

#[tokio::test]
async fn a_threshold_policy_is_kept_with_its_threshold_and_cleared_by_a_fixed_one() {
    each_backend(|store| async move {
        let scores: Vec<f32> = (0..5000).map(|i| (i as f32 / 5000.0) * 0.6 - 0.2).collect();
        let tail = ImpostorTail::fit(&scores, "m", "1", "test").expect("tail");
        let (threshold, policy) = ThresholdPolicy::derive(1e-3, tail, 0, 5).expect("derived");
        let spec = Gallery { threshold, ..spec("p") };
        let made = store.create_gallery(&spec, Some(&policy), "kp", None, 0).await.expect("create").value;
        // serde_json reads floats back to within an ulp (no `float_roundtrip`: see the note in
        // the workspace Cargo.toml); the compare of `only_if` is of read-back values only.
        let read = made.threshold_policy.clone().expect("kept");
        assert!((read.required_fmr / policy.required_fmr - 1.0).abs() < 1e-12);
        assert_eq!(ThresholdPolicy { required_fmr: policy.required_fmr, ..read.clone() }, policy);
        let name = GalleryName::parse("p").expect("valid");
        // Derived again at the same threshold: new evidence, same version, no change in the log.
        let head = store.head_seq().await.expect("head");
        let later = ThresholdPolicy { templates: 4096, derived_at_ms: 9, ..policy.clone() };
        // Only while the stored policy is the one derived from: the stored (read back) one is.
        let same = store.set_threshold(&name, threshold, Some(&later), Some(&read), 10).await.expect("set");
        let kept = same.threshold_policy.as_ref().map(|p| (p.templates, p.derived_at_ms));
        assert_eq!((same.settings.threshold_version, kept), (1, Some((4096, 9))));
        assert_eq!(store.head_seq().await.expect("head"), head);
        // A fixed threshold ends the policy.
        let fixed = store.set_threshold(&name, 0.9, None, None, 20).await.expect("fixed");
        assert_eq!((fixed.settings.threshold_version, fixed.threshold_policy), (2, None));
        // A re-derivation from the policy that was replaced meanwhile changes nothing.
        assert!(matches!(
            store.set_threshold(&name, 0.8, Some(&later), Some(&later), 30).await,
            Err(StoreError::ThresholdChanged(_))
        ));
        let kept = store.gallery(&name).await.expect("gallery");
        assert_eq!(
            (kept.settings.threshold, kept.settings.threshold_version, kept.threshold_policy),
            (0.9, 2, None)
        );
    })
    .await;
}

#[tokio::test]
async fn a_gallery_deletion_key_is_bound_to_its_gallery() {
    each_backend(|store| async move {
        store.create_gallery(&spec("a"), None, "ka", None, 0).await.expect("a");
        store.create_gallery(&spec("b"), None, "kb", None, 0).await.expect("b");
        let a = GalleryName::parse("a").expect("valid");
        let b = GalleryName::parse("b").expect("valid");
        let key = |hash: &str| Idempotency { key: "drop".into(), request_hash: hash.into() };
        assert_eq!(store.idempotent_response(&key("a")).await.expect("unused"), None);
        let first = store.delete_gallery(&a, Some(&key("a")), 1).await.expect("deleted");
        assert!(!first.replayed);
        assert_eq!(first.value.key_ref, "ka");
        let again = store.delete_gallery(&a, Some(&key("a")), 2).await.expect("replayed");
        assert!(again.replayed);
        assert_eq!(again.value, first.value, "the gone gallery's receipt is answered again");
        assert!(store.idempotent_response(&key("a")).await.expect("used").is_some());
        assert!(matches!(
            store.idempotent_response(&key("b")).await,
            Err(StoreError::IdempotencyConflict(_))
        ));
        assert!(matches!(
            store.delete_gallery(&b, Some(&key("b")), 3).await,
            Err(StoreError::IdempotencyConflict(_))
        ));
        assert!(store.gallery(&b).await.is_ok(), "the second gallery is untouched");
    })
    .await;
}

#[tokio::test]
async fn expired_subjects_are_listed_then_purged_unless_renewed() {
    each_backend(|store| async move {
        let g = store.create_gallery(&spec("g"), None, "k", None, 0).await.expect("create").value;
        store.enroll(&g, &[write("a", &[[1.0, 0.0, 0.0, 0.0]], None)], 0).await.expect("a");
        store.enroll(&g, &[write("b", &[[0.0, 1.0, 0.0, 0.0]], None)], 0).await.expect("b");
        let later = 3_600_000 + 1;
        let expired = store.expired(later, 10).await.expect("expired");
        assert_eq!(expired.len(), 2);
        assert!(store.subject_templates(g.id, "a").await.expect("a").len() == 1, "listing removes nothing");
        // b is enrolled again before the purge: its retention starts over and it is kept.
        store.enroll(&g, &[write("b", &[[0.0, 1.0, 0.0, 0.0]], None)], 10).await.expect("b again");
        let purged = store.purge(&expired, later).await.expect("purge");
        assert_eq!(purged.iter().map(|p| p.subject_id.as_str()).collect::<Vec<_>>(), ["a"]);
        assert!(store.subject_templates(g.id, "a").await.expect("a").is_empty());
        assert_eq!(store.subject_templates(g.id, "b").await.expect("b").len(), 2);
    })
    .await;
}

#[tokio::test]
async fn an_attempt_is_settled_as_made_or_fenced_off_for_good() {
    each_backend(|store| async move {
        let created = as_attempt("made", store.create_gallery(&spec("g"), None, "k", None, 0)).await;
        let g = created.expect("create").value;
        assert_eq!(store.settle_attempt("made", &[]).await.expect("settle"), AttemptFate::Made);
        assert_eq!(store.settle_attempt("made", &[]).await.expect("again"), AttemptFate::Made, "final");
        // An attempt the store never saw is fenced off: its write can no longer commit.
        assert_eq!(store.settle_attempt("lost", &[]).await.expect("settle"), AttemptFate::Abandoned);
        let late =
            as_attempt("lost", store.enroll(&g, &[write("a", &[[1.0, 0.0, 0.0, 0.0]], None)], 0)).await;
        assert!(late.is_err(), "a fenced attempt's write is refused");
        assert!(store.subject_templates(g.id, "a").await.expect("a").is_empty(), "and made nothing");
        assert_eq!(store.settle_attempt("lost", &[]).await.expect("again"), AttemptFate::Abandoned);
        // Writes outside an attempt record none; young attempts are kept.
        store.enroll(&g, &[write("b", &[[0.0, 1.0, 0.0, 0.0]], None)], 0).await.expect("b");
        // A retry whose attempt was lost, of a request an earlier attempt made, was made.
        store.enroll(&g, &[write("c", &[[0.0, 0.0, 1.0, 0.0]], Some(("k-c", "h")))], 0).await.expect("c");
        let retry = store.settle_attempt("retry", &["k-c".into()]).await.expect("retry");
        assert_eq!(retry, AttemptFate::Made, "its key's record is the request's change");
        let unmade = store.settle_attempt("other", &["k-c".into(), "k-d".into()]).await.expect("other");
        assert_eq!(unmade, AttemptFate::Abandoned, "not every key was used");
        assert_eq!(store.forget_old_attempts().await.expect("forget"), 0);
        assert_eq!(store.settle_attempt("made", &[]).await.expect("kept"), AttemptFate::Made);
    })
    .await;
}

#[tokio::test]
async fn enrolment_writes_templates_and_change_log_in_order() {
    each_backend(|store| async move {
        let g = store.create_gallery(&spec("g"), None, "k", None, 0).await.expect("create").value;
        let items = vec![
            write("a", &[[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]], None),
            write("b", &[[0.0, 0.0, 1.0, 0.0]], None),
        ];
        let results = store.enroll(&g, &items, 10).await.expect("enroll");
        let a = results[0].as_ref().expect("a enrolled");
        let b = results[1].as_ref().expect("b enrolled");
        assert_eq!(a.value.template_count, 2);
        assert!(b.value.change_seq == a.value.change_seq + 1, "gap-free sequence");
        assert_eq!(store.head_seq().await.expect("head"), b.value.change_seq);
        let rows = store.subject_templates(g.id, "a").await.expect("templates");
        assert_eq!(rows.len(), 2);
        assert_eq!(
            Template::from_le_bytes(&rows[0].vector, 4).expect("decode").values(),
            &[1.0, 0.0, 0.0, 0.0]
        );
        let shard = store.shard_templates(g.id, 1, 0, 100).await.expect("shard page");
        assert_eq!(shard.len(), 3);
        let page = store.shard_templates(g.id, 1, shard[1].id, 100).await.expect("next page");
        assert_eq!(page.len(), 1);
        let counts = store.gallery_counts(g.id).await.expect("counts");
        assert_eq!((counts.subjects, counts.templates), (2, 3));
        let subject = store.subject(&g, &SubjectId::parse("a").expect("valid")).await.expect("subject");
        assert_eq!(subject.expires_at_ms, Some(10 + 3_600_000), "retention sets the expiry");

        // Replace keeps only the new template.
        let mut replace = write("a", &[[0.0, 0.0, 0.0, 1.0]], None);
        replace.replace = true;
        let r = store.enroll(&g, &[replace], 20).await.expect("replace");
        assert_eq!(r[0].as_ref().expect("ok").value.template_count, 1);

        let deleted =
            store.delete_subject(&g, &SubjectId::parse("b").expect("valid"), None, 30).await.expect("delete");
        assert!(store.subject_templates(g.id, "b").await.expect("templates").is_empty());
        let last = store.changes_after(deleted.value - 1, 10).await.expect("changes");
        assert_eq!(last[0].op, ChangeOp::Delete);
        assert!(matches!(
            store.delete_subject(&g, &SubjectId::parse("b").expect("valid"), None, 40).await,
            Err(StoreError::SubjectNotFound(_))
        ));
    })
    .await;
}

#[tokio::test]
async fn idempotency_keys_replay_or_conflict_without_half_writes() {
    each_backend(|store| async move {
        let g = store.create_gallery(&spec("g"), None, "k", None, 0).await.expect("create").value;
        let first = store
            .enroll(&g, &[write("a", &[[1.0, 0.0, 0.0, 0.0]], Some(("k1", "h1")))], 1)
            .await
            .expect("enroll");
        let first = first[0].as_ref().expect("ok").clone();
        assert!(!first.replayed);
        let again = store
            .enroll(&g, &[write("a", &[[1.0, 0.0, 0.0, 0.0]], Some(("k1", "h1")))], 2)
            .await
            .expect("enroll");
        let again = again[0].as_ref().expect("ok");
        assert!(again.replayed);
        assert_eq!(again.value, first.value);
        let head = store.head_seq().await.expect("head");
        let conflict = store
            .enroll(
                &g,
                &[
                    write("c", &[[0.0, 1.0, 0.0, 0.0]], Some(("k1", "other"))),
                    write("d", &[[0.0, 1.0, 0.0, 0.0]], None),
                ],
                3,
            )
            .await
            .expect("batch");
        assert!(matches!(conflict[0], Err(StoreError::IdempotencyConflict(_))));
        assert!(conflict[1].is_ok(), "one bad item does not sink the batch");
        assert_eq!(store.head_seq().await.expect("head"), head + 1, "only d wrote a change");
        assert!(store.subject_templates(g.id, "c").await.expect("c").is_empty(), "nothing of c was written");
        assert_eq!(store.subject_templates(g.id, "a").await.expect("a").len(), 1, "replay wrote nothing");

        // A subject enrolled with one model refuses templates of another.
        let mut other_model = write("a", &[[1.0, 1.0, 0.0, 0.0]], None);
        other_model.model_id = "sface".into();
        let r = store.enroll(&g, &[other_model], 4).await.expect("enroll");
        assert!(matches!(r[0], Err(StoreError::ModelMismatch { .. })));
    })
    .await;
}

fn chain(previous: &[u8], leaf_hash: &[u8]) -> Vec<u8> {
    [previous, leaf_hash].concat()
}

fn leaf(n: u8, key: Option<&str>) -> NewAuditLeaf {
    NewAuditLeaf {
        leaf: vec![n],
        leaf_hash: vec![n],
        idempotency_key: key.map(str::to_owned),
        appended_at_ms: i64::from(n) * 100,
        actor_subject: format!("user{}", n % 2),
        operation: "identify".into(),
        gallery: "g".into(),
        subject_ids: vec![format!("s{n}")],
        case_ref: format!("case-{}", n % 3),
        request_id: format!("r{n}"),
    }
}

#[tokio::test]
async fn audit_leaves_are_append_only_chained_and_queryable() {
    each_backend(|store| async move {
        let first = store.append_leaves(vec![leaf(0, Some("key0"))], chain).await.expect("append");
        assert_eq!((first[0].value.index, first[0].replayed), (0, false));
        let batch =
            (1..5u8).map(|n| leaf(n, Some(&format!("key{n}")))).chain([leaf(9, Some("key3"))]).collect();
        let written = store.append_leaves(batch, chain).await.expect("append batch");
        let indexes: Vec<(u64, bool)> = written.iter().map(|w| (w.value.index, w.replayed)).collect();
        assert_eq!(
            indexes,
            vec![(1, false), (2, false), (3, false), (4, false), (3, true)],
            "a key repeated in a batch"
        );
        let replay =
            store.append_leaves(vec![leaf(9, Some("key2")), leaf(5, None)], chain).await.expect("replay");
        assert_eq!((replay[0].value.index, replay[0].replayed), (2, true));
        assert_eq!((replay[1].value.index, replay[1].replayed), (5, false));
        assert_eq!(store.leaf_count().await.expect("count"), 6);
        let by_key = store.leaf_by_key("key3").await.expect("by key").expect("found");
        assert_eq!((by_key.index, by_key.leaf.as_slice()), (3, &[3u8][..]));
        assert!(store.leaf_by_key("no-such-key").await.expect("by key").is_none());
        let leaves = store.leaves(0, 100).await.expect("leaves");
        assert_eq!(leaves[4].chain_hash, vec![0, 1, 2, 3, 4]);
        assert_eq!(store.leaf_hashes(4, 10).await.expect("hashes"), vec![vec![4], vec![5]]);

        let q = AuditQuery { actor_subject: "user1".into(), limit: 10, ..Default::default() };
        let got: Vec<u64> = store.query_leaves(&q).await.expect("query").iter().map(|l| l.index).collect();
        assert_eq!(got, vec![1, 3, 5]);
        let q = AuditQuery { subject_id: "s4".into(), limit: 10, ..Default::default() };
        assert_eq!(store.query_leaves(&q).await.expect("query")[0].index, 4);
        let q = AuditQuery { descending: true, limit: 2, ..Default::default() };
        let got: Vec<u64> = store.query_leaves(&q).await.expect("query").iter().map(|l| l.index).collect();
        assert_eq!(got, vec![5, 4]);
        let q = AuditQuery { descending: true, limit: 2, after: Some(3), ..Default::default() };
        let got: Vec<u64> = store.query_leaves(&q).await.expect("query").iter().map(|l| l.index).collect();
        assert_eq!(got, vec![2, 1]);
        let q = AuditQuery { from_ms: Some(150), to_ms: Some(350), limit: 10, ..Default::default() };
        let got: Vec<u64> = store.query_leaves(&q).await.expect("query").iter().map(|l| l.index).collect();
        assert_eq!(got, vec![2, 3]);
        let q = AuditQuery { case_ref: "case-1".into(), limit: 10, ..Default::default() };
        let got: Vec<u64> = store.query_leaves(&q).await.expect("query").iter().map(|l| l.index).collect();
        assert_eq!(got, vec![1, 4], "by case reference");
        let q = AuditQuery {
            request_id: "r5".into(),
            case_ref: "case-2".into(),
            limit: 10,
            ..Default::default()
        };
        let got: Vec<u64> = store.query_leaves(&q).await.expect("query").iter().map(|l| l.index).collect();
        assert_eq!(got, vec![5], "by request id");
    })
    .await;
}

#[tokio::test]
async fn the_audit_log_refuses_updates_and_deletes_even_for_its_owner() {
    each_backend(|store| async move {
        store.append_leaves(vec![leaf(0, None), leaf(1, None)], chain).await.expect("append");
        let checkpoint =
            CheckpointRow { tree_size: 2, root_hash: vec![1; 32], note: "n".into(), signed_at_ms: 5 };
        store.add_checkpoint(&checkpoint).await.expect("checkpoint");
        store.add_checkpoint(&checkpoint).await.expect("a repeated checkpoint is ignored");
        assert_eq!(store.latest_checkpoint().await.expect("latest"), Some(checkpoint.clone()));
        assert_eq!(store.checkpoints(0, 10).await.expect("list"), vec![checkpoint]);
        assert!(store.checkpoints(2, 10).await.expect("list").is_empty());

        let url = store.url();
        let mut conn = sqlx::AnyConnection::connect(&url).await.expect("connect");
        for sql in [
            "UPDATE audit_leaves SET leaf = leaf WHERE idx = 0",
            "DELETE FROM audit_leaves WHERE idx = 1",
            "UPDATE audit_checkpoints SET note = 'x'",
            "DELETE FROM audit_leaf_subjects",
        ] {
            let err = sqlx::query(sql).execute(&mut conn).await.expect_err("refused");
            assert!(err.to_string().contains("append-only"), "{sql}: {err}");
        }
        if store.backend() == Backend::Postgres {
            let err = sqlx::query("TRUNCATE audit_leaves").execute(&mut conn).await.expect_err("refused");
            assert!(err.to_string().contains("append-only"), "{err}");
            // The audit service's role may read and append, and nothing else.
            sqlx::query("SET ROLE biomatch_audit").execute(&mut conn).await.expect("set role");
            let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_leaves")
                .fetch_one(&mut conn)
                .await
                .expect("select");
            assert_eq!(n, 2);
            let err = sqlx::query("DELETE FROM galleries").execute(&mut conn).await.expect_err("no access");
            assert!(err.to_string().contains("permission denied"), "{err}");
            let err =
                sqlx::query("DROP TABLE audit_leaves").execute(&mut conn).await.expect_err("not the owner");
            assert!(err.to_string().contains("owner") || err.to_string().contains("permission"), "{err}");
        }
        assert_eq!(store.leaf_count().await.expect("count"), 2);
    })
    .await;
}

/// SQLite's subjects moved to a table keyed in log order (migration 0008): a log written before
/// keeps every subject, its queries and its append-only rule.
#[tokio::test]
async fn an_sqlite_log_from_before_the_subject_key_changed_keeps_its_subjects() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("audit.db").display());
    let mut before = sqlx::migrate!("migrations/sqlite");
    let index = before.migrations.iter().position(|m| m.version == 8).expect("migration 0008");
    before.migrations = std::borrow::Cow::Owned(before.migrations[..index].to_vec());
    let mut conn = sqlx::SqliteConnection::connect(&url).await.expect("connect");
    before.run(&mut conn).await.expect("the migrations before 0008");
    for (idx, subjects) in [(0i64, &["b", "a"][..]), (1, &["a"]), (2, &[])] {
        sqlx::query(
            "INSERT INTO audit_leaves (idx, leaf, leaf_hash, chain_hash, appended_at, actor_subject, \
             operation, gallery) VALUES (?, x'00', x'00', x'00', 0, 'u', 'identify', 'g')",
        )
        .bind(idx)
        .execute(&mut conn)
        .await
        .expect("leaf");
        for subject in subjects {
            sqlx::query("INSERT INTO audit_leaf_subjects (idx, subject_id) VALUES (?, ?)")
                .bind(idx)
                .bind(*subject)
                .execute(&mut conn)
                .await
                .expect("subject");
        }
    }
    conn.close().await.expect("close");

    let store = SqlStore::connect(&url).await.expect("migrated");
    let named = |subject: &str| {
        let (store, q) =
            (store.clone(), AuditQuery { subject_id: subject.into(), limit: 10, ..Default::default() });
        async move { store.query_leaves(&q).await.expect("query").iter().map(|l| l.index).collect::<Vec<_>>() }
    };
    assert_eq!(named("a").await, vec![0, 1]);
    assert_eq!(named("b").await, vec![0]);
    assert!(named("c").await.is_empty());
    let mut conn = sqlx::AnyConnection::connect(&store.url()).await.expect("connect");
    let err = sqlx::query("DELETE FROM audit_leaf_subjects").execute(&mut conn).await.expect_err("refused");
    assert!(err.to_string().contains("append-only"), "{err}");
    store.close().await;
}
