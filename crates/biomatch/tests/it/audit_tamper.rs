//! An insider with write access to the audit database (triggers disabled, hashes recomputed)
//! edits, deletes, inserts or reorders leaves: `biomatch audit verify` exits 2 and says where, and
//! the audit role refuses to start on a log rewritten while it was down (so its next checkpoint
//! cannot sign the forgery). Reads of the log are themselves leaves, committed before the answer.
//! Run on SQLite and PostgreSQL.

use biomatch::serve::Running;
use biomatch_config::{ProcessRole, ServeConfig};
use biomatch_proto::v1::audit_service_client::AuditServiceClient;
use biomatch_proto::v1::{
    Actor, AppendRequest, AuditEvent, GetCheckpointRequest, ListLeavesRequest, Operation, QueryAuditRequest,
};
use sqlx::{Any, AnyConnection, Connection, Row};
use std::path::Path;
use std::process::Command;
use tonic::transport::Channel;

use crate::common;

use biomatch_domain::Role;
use common::{BIN, Keys};

pub(crate) struct Log {
    pub(crate) running: Running,
    config: ServeConfig,
    pub(crate) keys: Keys,
    pub(crate) database: String,
    pub(crate) postgres: bool,
}

pub(crate) async fn start(dir: &Path, postgres: Option<String>) -> Log {
    let mut config = ServeConfig {
        roles: vec![ProcessRole::Audit],
        data_dir: dir.to_path_buf(),
        grpc_addr: "127.0.0.1:0".parse().expect("addr"),
        ..ServeConfig::default()
    };
    config.database_url = postgres.clone().map(Into::into);
    // Checkpoints only when a test asks for one, so which leaves they cover is certain.
    config.audit.checkpoint_interval_ms = 3_600_000;
    let keys = Keys::new(&dir.join("keys"));
    config.auth.public_keys = keys.public_keys();
    config.auth.service_key_file = Some(keys.private.clone());
    let running = biomatch::serve::start(config.clone()).await.expect("audit role starts");
    let database = postgres.clone().unwrap_or_else(|| format!("sqlite://{}", dir.join("audit.db").display()));
    Log { running, config, keys, database, postgres: postgres.is_some() }
}

pub(crate) fn client(log: &Log) -> AuditServiceClient<Channel> {
    AuditServiceClient::new(
        tonic::transport::Endpoint::from_shared(format!("http://{}", log.running.grpc_addr))
            .expect("url")
            .connect_lazy(),
    )
}

/// Appends identify leaves `indexes` (kiosk-i, request ri), signing a checkpoint after each index
/// in `sign_after`.
pub(crate) async fn append(log: &Log, indexes: std::ops::Range<usize>, sign_after: &[usize]) {
    let mut client = client(log);
    for i in indexes {
        let event = AuditEvent {
            actor: Some(Actor {
                subject: format!("kiosk-{i}"),
                role: "kiosk".into(),
                device_id: "lane-1".into(),
            }),
            operation: Operation::Identify.into(),
            gallery: "travelers".into(),
            request_id: format!("r{i}"),
            ..Default::default()
        };
        client
            .append(log.keys.as_role(
                Role::Service,
                AppendRequest { event: Some(event), idempotency_key: format!("k{i}") },
            ))
            .await
            .expect("append");
        if sign_after.contains(&i) {
            client
                .get_checkpoint(log.keys.as_role(Role::Auditor, GetCheckpointRequest { sign_now: true }))
                .await
                .expect("checkpoint");
        }
    }
}

/// 20 leaves with checkpoints signed at 10 and 20.
pub(crate) async fn fill(log: &Log) {
    append(log, 0..20, &[9, 19]).await;
}

pub(crate) fn verify(log: &Log) -> (Option<i32>, String) {
    verify_with(log, &[])
}

/// `audit verify` with `flags`: its exit status and everything it printed.
fn verify_with(log: &Log, flags: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(BIN)
        .args(["audit", "verify", "--endpoint", &format!("http://{}", log.running.grpc_addr)])
        .args(flags)
        .env("BIOMATCH_TOKEN", log.keys.token(biomatch_domain::Role::Auditor, "auditor-1"))
        .output()
        .expect("run verify");
    (
        out.status.code(),
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
    )
}

/// PostgreSQL databases for the PostgreSQL half (when `BIOMATCH_TEST_DATABASE_URL` is set) and
/// `None` for SQLite.
async fn backends() -> Vec<bool> {
    let mut backends = vec![false];
    if biomatch_store::testing::fresh_postgres_url().await.is_some() {
        backends.push(true);
    }
    backends
}

async fn database(postgres: bool) -> Option<String> {
    match postgres {
        true => biomatch_store::testing::fresh_postgres_url().await,
        false => None,
    }
}

/// Opens the database as the insider: append-only triggers off for this session.
pub(crate) async fn insider(database: &str, postgres: bool) -> AnyConnection {
    sqlx::any::install_default_drivers();
    let mut conn = AnyConnection::connect(database).await.expect("connect");
    if postgres {
        sqlx::query("SET session_replication_role = replica").execute(&mut conn).await.expect("triggers off");
    } else {
        for t in ["audit_leaves_no_update", "audit_leaves_no_delete"] {
            sqlx::query(&format!("DROP TRIGGER {t}")).execute(&mut conn).await.expect("drop trigger");
        }
    }
    conn
}

async fn exec(conn: &mut AnyConnection, sql: &str) {
    sqlx::query::<Any>(sql).execute(conn).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// How far an insider covers an edit.
#[derive(Clone, Copy, PartialEq, PartialOrd)]
enum Cover {
    /// The leaf bytes only.
    Nothing,
    /// The bytes and the leaf hash.
    LeafHash,
    /// The bytes, the leaf hash and every chain hash from there on.
    Chain,
}

/// Rewrites leaf `idx`'s bytes (kiosk-IDX becomes kiosk-X), covering the edit as far as `cover`.
async fn edit(conn: &mut AnyConnection, idx: i64, cover: Cover) {
    let leaf: Vec<u8> = sqlx::query_scalar("SELECT leaf FROM audit_leaves WHERE idx = $1")
        .bind(idx)
        .fetch_one(&mut *conn)
        .await
        .expect("leaf");
    let edited =
        String::from_utf8(leaf).expect("utf-8").replace(&format!("kiosk-{idx}"), "kiosk-X").into_bytes();
    let hash = biomatch_auditlog::leaf_hash(&edited).to_vec();
    sqlx::query("UPDATE audit_leaves SET leaf = $1 WHERE idx = $2")
        .bind(edited)
        .bind(idx)
        .execute(&mut *conn)
        .await
        .expect("edit");
    if cover == Cover::Nothing {
        return;
    }
    sqlx::query("UPDATE audit_leaves SET leaf_hash = $1 WHERE idx = $2")
        .bind(hash)
        .bind(idx)
        .execute(&mut *conn)
        .await
        .expect("hash");
    if cover == Cover::LeafHash {
        return;
    }
    let rows = sqlx::query("SELECT idx, leaf_hash, chain_hash FROM audit_leaves ORDER BY idx")
        .fetch_all(&mut *conn)
        .await
        .expect("rows");
    let mut chain: Vec<u8> = Vec::new();
    for row in rows {
        let idx: i64 = row.get("idx");
        let lh: Vec<u8> = row.get("leaf_hash");
        chain = biomatch_auditlog::chain_hash(&chain, &lh);
        sqlx::query("UPDATE audit_leaves SET chain_hash = $1 WHERE idx = $2")
            .bind(chain.clone())
            .bind(idx)
            .execute(&mut *conn)
            .await
            .expect("chain");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_names_every_kind_of_tampering() {
    for postgres in backends().await {
        let kinds: [(&str, &str); 5] = [
            ("edit", "leaf 5: contents do not match the leaf hash"),
            ("edit-covered", "do not hash to the root signed"),
            ("delete", "leaf 7: expected index 7, found 8"),
            ("insert", "leaf 5: chain hash"),
            ("reorder", "leaf 3: chain hash"),
        ];
        for (kind, expected) in kinds {
            let dir = tempfile::tempdir().expect("tempdir");
            let log = start(dir.path(), database(postgres).await).await;
            fill(&log).await;
            let (code, out) = verify(&log);
            assert_eq!(code, Some(0), "{out}");
            assert!(out.contains("20 leaves") && out.contains("signed checkpoints"), "{out}");

            let mut conn = insider(&log.database, log.postgres).await;
            match kind {
                "edit" => edit(&mut conn, 5, Cover::Nothing).await,
                "edit-covered" => edit(&mut conn, 5, Cover::Chain).await,
                "delete" => exec(&mut conn, "DELETE FROM audit_leaves WHERE idx = 7").await,
                "insert" => {
                    exec(&mut conn, "UPDATE audit_leaves SET idx = idx + 1000 WHERE idx >= 5").await;
                    exec(&mut conn, "UPDATE audit_leaves SET idx = idx - 999 WHERE idx >= 1000").await;
                    exec(
                        &mut conn,
                        "INSERT INTO audit_leaves (idx, idempotency_key, leaf, leaf_hash, chain_hash, appended_at, \
                         actor_subject, operation, gallery) SELECT 5, NULL, leaf, leaf_hash, chain_hash, appended_at, \
                         actor_subject, operation, gallery FROM audit_leaves WHERE idx = 2",
                    )
                    .await;
                }
                "reorder" => {
                    exec(&mut conn, "UPDATE audit_leaves SET idx = 1003 WHERE idx = 3").await;
                    exec(&mut conn, "UPDATE audit_leaves SET idx = 3 WHERE idx = 4").await;
                    exec(&mut conn, "UPDATE audit_leaves SET idx = 4 WHERE idx = 1003").await;
                }
                _ => unreachable!(),
            }
            let _ = conn.close().await;
            let (code, out) = verify(&log);
            assert_eq!(code, Some(2), "{kind}: {out}");
            assert!(out.contains("TAMPERED") && out.contains(expected), "{kind} on {}: {out}", log.database);
            log.running.shutdown().await;
        }
    }
}

/// Leaves rewritten while the audit role was down: at start it checks every leaf after the latest
/// signed checkpoint (index, bytes against leaf hash, chain) and the root at that checkpoint's
/// size, and refuses to start naming the leaf, so no later checkpoint signs the forgery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_role_refuses_to_start_on_a_rewritten_log() {
    for postgres in backends().await {
        let kinds: [(&str, Option<&str>); 7] = [
            ("untouched", None),
            ("edit after the checkpoint", Some("leaf 22: contents do not match the leaf hash")),
            ("edit and leaf hash after the checkpoint", Some("leaf 22: chain hash does not follow")),
            ("delete after the checkpoint", Some("leaf 21: expected index 21, found 22")),
            ("edit before the checkpoint", Some("leaves 0..20 do not hash to the root signed at size 20")),
            ("drop below the checkpoint", Some("checkpoint was signed at size 20 but the log holds only 19")),
            // The residual risk (docs/security.md): nothing signed covers leaves after the latest
            // checkpoint, so a rewrite of their bytes, leaf hashes and chain is indistinguishable.
            ("consistent rewrite after the checkpoint", None),
        ];
        for (kind, expected) in kinds {
            let dir = tempfile::tempdir().expect("tempdir");
            let log = start(dir.path(), database(postgres).await).await;
            fill(&log).await;
            append(&log, 20..25, &[]).await;
            log.running.shutdown().await;

            let mut conn = insider(&log.database, log.postgres).await;
            match kind {
                "untouched" => {}
                "edit after the checkpoint" => edit(&mut conn, 22, Cover::Nothing).await,
                "edit and leaf hash after the checkpoint" => edit(&mut conn, 22, Cover::LeafHash).await,
                "delete after the checkpoint" => {
                    exec(&mut conn, "DELETE FROM audit_leaves WHERE idx = 21").await
                }
                "edit before the checkpoint" => edit(&mut conn, 5, Cover::Chain).await,
                "drop below the checkpoint" => {
                    exec(&mut conn, "DELETE FROM audit_leaves WHERE idx >= 19").await;
                }
                "consistent rewrite after the checkpoint" => edit(&mut conn, 22, Cover::Chain).await,
                _ => unreachable!(),
            }
            let _ = conn.close().await;
            let what = format!("{kind} on {}", log.database);
            match (biomatch::serve::start(log.config.clone()).await, expected) {
                (Ok(running), None) => running.shutdown().await,
                (Ok(running), Some(expected)) => {
                    running.shutdown().await;
                    panic!("{what}: started, expected a refusal naming {expected:?}");
                }
                (Err(e), expected) => {
                    let message = format!("{e:#}");
                    assert!(
                        expected.is_some_and(|x| message.contains(x)) && message.contains("tampered"),
                        "{what}: {message}"
                    );
                }
            }
        }
    }
}

fn as_auditor<T>(token: &str, message: T) -> tonic::Request<T> {
    biomatch_client::request(message, token)
}

/// Every read of the log is a leaf saying what was read (the range, or the filters) and by whom,
/// committed before the answer; when it cannot be committed the reader gets UNAVAILABLE, no data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_of_the_log_are_on_the_record_and_fail_closed() {
    for postgres in backends().await {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = start(dir.path(), database(postgres).await).await;
        fill(&log).await;
        let mut audit = client(&log);
        let token = log.keys.token(Role::Auditor, "auditor-7");
        let detail = |leaf: &biomatch_proto::v1::AuditLeaf| -> serde_json::Value {
            let event = leaf.event.as_ref().expect("event");
            assert_eq!(event.operation(), Operation::AuditRead);
            let actor = event.actor.as_ref().expect("actor");
            assert_eq!((actor.subject.as_str(), actor.role.as_str()), ("auditor-7", "auditor"));
            serde_json::from_str(&event.detail).expect("detail is JSON")
        };

        let page = audit
            .list_leaves(as_auditor(&token, ListLeavesRequest { start: 3, count: 5 }))
            .await
            .expect("leaves")
            .into_inner();
        assert_eq!(page.leaves.iter().map(|l| l.index).collect::<Vec<_>>(), vec![3, 4, 5, 6, 7]);
        assert_eq!(page.tree_size, 20, "the read's own leaf comes after what it read");
        // Reading from the end answers the earlier read's leaf, and never the read's own.
        let page = audit
            .list_leaves(as_auditor(&token, ListLeavesRequest { start: 20, count: 1000 }))
            .await
            .expect("leaves")
            .into_inner();
        assert_eq!((page.leaves.len(), page.tree_size), (1, 21));
        let first = detail(&page.leaves[0]);
        assert_eq!(
            first,
            serde_json::json!({"rpc": "ListLeaves", "start": 3, "count": 5, "tree_size": 20}),
            "the range read"
        );

        let query = QueryAuditRequest {
            actor_subject: "kiosk-3".into(),
            operation: Operation::Identify.into(),
            gallery: "travelers".into(),
            subject_id: "s-42".into(),
            from: Some(prost_types::Timestamp { seconds: 1_000, nanos: 0 }),
            to: None,
            page_size: 7,
            page_token: 4,
            descending: true,
            case_ref: "case-9".into(),
        };
        audit.query(as_auditor(&token, query)).await.expect("query");
        let page = audit
            .list_leaves(as_auditor(&token, ListLeavesRequest { start: 21, count: 1000 }))
            .await
            .expect("leaves")
            .into_inner();
        assert_eq!(page.leaves.iter().map(|l| l.index).collect::<Vec<_>>(), vec![21, 22]);
        assert_eq!(detail(&page.leaves[0])["start"], 20, "the second ListLeaves");
        assert_eq!(
            detail(&page.leaves[1]),
            serde_json::json!({
                "rpc": "Query", "actor_subject": "kiosk-3", "operation": "identify",
                "gallery": "travelers", "subject_id": "s-42", "case_ref": "case-9", "from_ms": 1_000_000, "to_ms": null,
                "page_token": 4, "descending": true, "page_size": 7
            }),
            "what was searched for"
        );

        // The log stops committing: reads are refused, with no data.
        sqlx::any::install_default_drivers();
        let mut conn = AnyConnection::connect(&log.database).await.expect("connect");
        let refuse = if log.postgres {
            vec![
                "CREATE FUNCTION refuse_append() RETURNS trigger LANGUAGE plpgsql AS \
                 $$ BEGIN RAISE EXCEPTION 'disk full'; END $$",
                "CREATE TRIGGER refuse_append BEFORE INSERT ON audit_leaves FOR EACH ROW \
                 EXECUTE FUNCTION refuse_append()",
            ]
        } else {
            vec![
                "CREATE TRIGGER refuse_append BEFORE INSERT ON audit_leaves \
                 BEGIN SELECT RAISE(ABORT, 'disk full'); END",
            ]
        };
        for sql in refuse {
            exec(&mut conn, sql).await;
        }
        let _ = conn.close().await;
        let err = audit
            .list_leaves(as_auditor(&token, ListLeavesRequest { start: 0, count: 10 }))
            .await
            .expect_err("refused");
        assert_eq!(err.code(), tonic::Code::Unavailable, "{err}");
        let err = audit.query(as_auditor(&token, QueryAuditRequest::default())).await.expect_err("refused");
        assert_eq!(err.code(), tonic::Code::Unavailable, "{err}");
        log.running.shutdown().await;
    }
}

/// A change announced by an intent leaf with no outcome leaf (the ingest role died between the
/// two, or the outcome could not be recorded and nobody retried) is named by `audit verify`, and
/// `--strict` fails on it; a concluded change is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_names_changes_announced_without_an_outcome() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = start(dir.path(), None).await;
    let mut client = client(&log);
    let leaves = [("q1", "INTENT"), ("q2", "INTENT"), ("q2", "OK"), ("q3", "INTENT"), ("q3", "UNAVAILABLE")];
    for (i, (request, outcome)) in leaves.into_iter().enumerate() {
        let event = AuditEvent {
            actor: Some(Actor {
                subject: "loader".into(),
                role: "enroller".into(),
                device_id: String::new(),
            }),
            operation: Operation::Enroll.into(),
            gallery: "travelers".into(),
            subject_ids: vec!["s1".into()],
            request_id: request.into(),
            outcome: outcome.into(),
            ..Default::default()
        };
        let append = AppendRequest { event: Some(event), idempotency_key: format!("c{i}") };
        client.append(log.keys.as_role(Role::Service, append)).await.expect("append");
    }
    let (code, out) = verify(&log);
    assert_eq!(code, Some(0), "the log is intact: {out}");
    assert!(out.contains("1 change(s) announced without an outcome"), "{out}");
    assert!(out.contains("leaf 0\tenroll\ttravelers\trequest q1"), "{out}");
    assert!(!out.contains("request q2") && !out.contains("request q3"), "concluded changes: {out}");
    let (strict, _) = verify_with(&log, &["--strict"]);
    assert_eq!(strict, Some(3), "--strict fails on an open intent");
    log.running.shutdown().await;
}
