//! An insider with write access to the audit database (triggers disabled, hashes recomputed)
//! edits, deletes, inserts or reorders leaves: `biomatch audit verify` exits 2 and says where.
//! Run on SQLite and PostgreSQL.

use biomatch::serve::Running;
use biomatch_config::{Role, ServeConfig};
use biomatch_proto::v1::audit_service_client::AuditServiceClient;
use biomatch_proto::v1::{Actor, AppendRequest, AuditEvent, GetCheckpointRequest, Operation};
use sqlx::{Any, AnyConnection, Connection, Row};
use std::path::Path;
use std::process::Command;

mod common;

use biomatch_domain::Role as Caller;
use common::{BIN, Keys};

struct Log {
    running: Running,
    keys: Keys,
    database: String,
    postgres: bool,
}

async fn start(dir: &Path, postgres: Option<String>) -> Log {
    let mut config = ServeConfig {
        roles: vec![Role::Audit],
        data_dir: dir.to_path_buf(),
        grpc_addr: "127.0.0.1:0".parse().expect("addr"),
        ..ServeConfig::default()
    };
    config.database_url = postgres.clone().map(Into::into);
    let keys = Keys::new(&dir.join("keys"));
    config.auth.public_keys = keys.public_keys();
    config.auth.service_key_file = Some(keys.private.clone());
    let running = biomatch::serve::start(config).await.expect("audit role starts");
    let database = postgres.clone().unwrap_or_else(|| format!("sqlite://{}", dir.join("audit.db").display()));
    Log { running, keys, database, postgres: postgres.is_some() }
}

/// 20 leaves with checkpoints signed at 10 and 20.
async fn fill(log: &Log) {
    let mut client = AuditServiceClient::new(
        tonic::transport::Endpoint::from_shared(format!("http://{}", log.running.grpc_addr))
            .expect("url")
            .connect_lazy(),
    );
    for i in 0..20 {
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
                Caller::Service,
                AppendRequest { event: Some(event), idempotency_key: format!("k{i}") },
            ))
            .await
            .expect("append");
        if i == 9 || i == 19 {
            client
                .get_checkpoint(log.keys.as_role(Caller::Auditor, GetCheckpointRequest { sign_now: true }))
                .await
                .expect("checkpoint");
        }
    }
}

fn verify(log: &Log) -> (Option<i32>, String) {
    let out = Command::new(BIN)
        .args(["audit", "verify", "--endpoint", &format!("http://{}", log.running.grpc_addr)])
        .env("BIOMATCH_TOKEN", log.keys.token(biomatch_domain::Role::Auditor, "auditor-1"))
        .output()
        .expect("run verify");
    (
        out.status.code(),
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
    )
}

/// Opens the database as the insider: append-only triggers off for this session.
async fn insider(log: &Log) -> AnyConnection {
    sqlx::any::install_default_drivers();
    let mut conn = AnyConnection::connect(&log.database).await.expect("connect");
    if log.postgres {
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

/// Rewrites leaf 5's bytes, and (when `cover`) its leaf hash and every later chain hash too.
async fn edit(conn: &mut AnyConnection, cover: bool) {
    let leaf: Vec<u8> = sqlx::query_scalar("SELECT leaf FROM audit_leaves WHERE idx = 5")
        .fetch_one(&mut *conn)
        .await
        .expect("leaf");
    let edited = String::from_utf8(leaf).expect("utf-8").replace("kiosk-5", "kiosk-X").into_bytes();
    let hash = biomatch_auditlog::leaf_hash(&edited).to_vec();
    sqlx::query("UPDATE audit_leaves SET leaf = $1 WHERE idx = 5")
        .bind(edited)
        .execute(&mut *conn)
        .await
        .expect("edit");
    if !cover {
        return;
    }
    sqlx::query("UPDATE audit_leaves SET leaf_hash = $1 WHERE idx = 5")
        .bind(hash)
        .execute(&mut *conn)
        .await
        .expect("hash");
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
    let mut backends = vec![None];
    if let Some(url) = biomatch_store::testing::fresh_postgres_url().await {
        backends.push(Some(url));
    }
    for postgres in backends {
        let fresh = || async {
            match &postgres {
                Some(_) => biomatch_store::testing::fresh_postgres_url().await,
                None => None,
            }
        };
        let kinds: [(&str, &str); 5] = [
            ("edit", "leaf 5: contents do not match the leaf hash"),
            ("edit-covered", "do not hash to the root signed"),
            ("delete", "leaf 7: expected index 7, found 8"),
            ("insert", "leaf 5: chain hash"),
            ("reorder", "leaf 3: chain hash"),
        ];
        for (kind, expected) in kinds {
            let dir = tempfile::tempdir().expect("tempdir");
            let log = start(dir.path(), fresh().await).await;
            fill(&log).await;
            let (code, out) = verify(&log);
            assert_eq!(code, Some(0), "{out}");
            assert!(out.contains("20 leaves") && out.contains("signed checkpoints"), "{out}");

            let mut conn = insider(&log).await;
            match kind {
                "edit" => edit(&mut conn, false).await,
                "edit-covered" => edit(&mut conn, true).await,
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
