//! The backup and restore drill of docs/operations.md ("Backup and restore"), step by step on
//! PostgreSQL: a running cluster is backed up (`pg_dump`, a copy of the key directory, the audit
//! signing key; no matcher snapshots), keeps working (more enrolments, a gallery deleted, one
//! created), and is restored into a fresh database and fresh processes over the live key store.
//! Everything enrolled before the backup is found, the log verifies and extends the checkpoint
//! signed before the backup (and, as a point-in-time restore must, forks from one signed after
//! it), and the gallery deleted after the backup stays unreadable even when the older copy of the
//! key directory is copied back in.

use biomatch_auditlog::merkle::{Hash, verify_consistency};
use biomatch_config::ProcessRole;
use biomatch_crypto::{CryptoError, FileKeyStore, KeyStore, MasterKey};
use biomatch_domain::Role;
use biomatch_proto::v1::{
    Checkpoint, ConsistencyProofRequest, CreateGalleryRequest, DeleteGalleryRequest, EnrollMode,
    EnrollRequest, GetCheckpointRequest, GetPublicKeyRequest, ListCheckpointsRequest, ListGalleriesRequest,
    ListLeavesRequest,
};
use biomatch_tests::{
    Backend, PURPOSE, RETENTION_SECS, TestCluster, config, embedding, enrolled_gallery, identify, subject_id,
};
use clap::Parser;
use sqlx::{Connection, PgConnection, Row};
use std::path::{Path, PathBuf};
use std::process::Command;
use tonic::Code;

/// Subjects of gallery `a` enrolled before the backup, and after it. Probes are the identities'
/// centres: a mate scores about 0.77 against an enrolled sample, far above the 0.45 threshold.
const BEFORE: usize = 40;
const AFTER: usize = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_cluster_finds_everyone_backed_up_verifies_its_log_and_keeps_deleted_galleries_shredded() {
    let Some(old_url) = biomatch_store::testing::fresh_postgres_url().await else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let (live, backup) = (dir.path().join("live"), dir.path().join("backup"));
    // The live key store (a volume of its own in a deployment). The test helpers keep the master
    // key in it too; the copy below takes only wrapped keys and tombstones.
    let (keys, master) = (live.join("keys"), live.join("keys/master.key"));
    std::fs::create_dir_all(&backup).expect("backup dir");

    // A running cluster with galleries a and b.
    let cluster = TestCluster::all(&Backend::Postgres(old_url.clone()), &live).await;
    let (mut synthetic, centres, _) = enrolled_gallery(&cluster, "a", 64, 2, BEFORE, 11).await;
    let (mut b_synthetic, b_centres, b_seq) = enrolled_gallery(&cluster, "b", 64, 1, 20, 12).await;
    let b_hit = identify(&cluster, "b", b_centres[4].clone(), b_seq).await.expect("b searchable");
    assert_eq!(b_hit.mate_subject_id, "s00004", "b works before the backup");
    let public_key = hex::encode(
        cluster.audit().get_public_key(GetPublicKeyRequest {}).await.expect("key").into_inner().key,
    );
    let signed_before = checkpoint(&cluster).await;

    // The backup, taken while the cluster runs.
    pg(Command::new("pg_dump")
        .arg("--format=custom")
        .arg("--file")
        .arg(backup.join("db.dump"))
        .arg(&old_url));
    let copied = copy_key_files(&keys, &backup.join("keys"), true);
    assert!(copied >= 2, "the key directory copy holds a's and b's wrapped keys ({copied} files)");
    std::fs::copy(live.join("audit-signing.key"), backup.join("audit-signing.key")).expect("signing key");
    let old_keys = key_refs(&old_url).await;

    // Work after the backup: more subjects in a, b deleted (crypto-shredded), c created.
    let late: Vec<Vec<f32>> = (0..AFTER).map(|_| synthetic.identity()).collect();
    let late_seq = enrol_late(&cluster, &mut synthetic, &late).await;
    let found = identify(&cluster, "a", late[2].clone(), late_seq).await.expect("identify");
    assert_eq!(found.mate_subject_id, "late-002", "enrolled after the backup, found before the restore");
    let deleted = cluster
        .galleries()
        .delete_gallery(DeleteGalleryRequest { name: "b".into(), idempotency_key: String::new() })
        .await
        .expect("b deleted")
        .into_inner();
    assert!(leaf_detail(&cluster, deleted.audit_leaf_index).await.contains("data key destroyed"));
    cluster.galleries().create_gallery(gallery_c()).await.expect("c created");
    let signed_after = checkpoint(&cluster).await;
    let new_keys = key_refs(&old_url).await;
    cluster.running.shutdown().await;
    let b_key = old_keys.iter().find(|(name, _)| name == "b").expect("b's key").1.clone();
    let c_key = new_keys.iter().find(|(name, _)| name == "c").expect("c's key").1.clone();

    // Restore the database into a fresh one.
    let new_url = biomatch_store::testing::fresh_postgres_url().await.expect("a fresh database");
    pg(Command::new("pg_restore")
        .args(["--exit-on-error", "--single-transaction", "--no-owner", "--dbname"])
        .arg(&new_url)
        .arg(backup.join("db.dump")));
    let (b_subject, b_sealed) = first_template(&new_url, "b").await;
    let context = biomatch_crypto::template_context(&b_key, &b_subject);
    let master_key = MasterKey::from_file(&master).expect("master key");
    // What the procedure forbids, and why: the older copy of the key directory alone opens b.
    let old_copy = FileKeyStore::new(&backup.join("keys"), master_key.clone()).expect("old copy");
    assert!(old_copy.get(&b_key).expect("b's key in the copy").open(&b_sealed, &context).is_ok());
    drop(old_copy);
    // The live key directory is used as it is. An operator who copies the backup into it anyway
    // (as after damage to the key volume: adding files, removing none) brings b's key back...
    assert!(keys.join(format!("{b_key}.destroyed")).exists() && !keys.join(format!("{b_key}.dek")).exists());
    copy_key_files(&backup.join("keys"), &keys, false);
    assert!(keys.join(format!("{b_key}.dek")).exists(), "the copy brought b's wrapped key back");

    // The signing key is part of the backup: a fresh audit role with a key of its own refuses the
    // restored log.
    let mut without_key =
        config(&Backend::Postgres(new_url.clone()), &dir.path().join("scratch"), &[ProcessRole::Audit]);
    without_key.audit.checkpoint_interval_ms = 3_600_000;
    let refused = biomatch::serve::start(without_key).await.err().expect("a new signing key is refused");
    assert!(format!("{refused:#}").contains("signing key"), "{refused:#}");

    // Fresh processes: empty data directory (no matcher snapshots), the signing key from the
    // backup, the live key store and master key.
    let fresh = dir.path().join("restored");
    std::fs::create_dir_all(&fresh).expect("data dir");
    std::fs::copy(backup.join("audit-signing.key"), fresh.join("audit-signing.key")).expect("signing key");
    let mut restored_config = config(&Backend::Postgres(new_url.clone()), &fresh, &[ProcessRole::All]);
    restored_config.crypto.master_key_file = Some(master.clone());
    restored_config.crypto.key_dir = Some(keys.clone());
    let restored = TestCluster::start(restored_config).await;

    // ...and opening the store destroyed it again: b's rows in the restored database stay shut.
    assert!(!keys.join(format!("{b_key}.dek")).exists(), "b's key destroyed again on start");
    let live_store = FileKeyStore::new(&keys, master_key).expect("live key store");
    let err = live_store.get(&b_key).expect_err("b's key is gone");
    assert!(matches!(err, CryptoError::Destroyed(_)), "{err}");
    assert!(err.to_string().contains("no data key") && err.to_string().contains("crypto-shredded"), "{err}");
    let b_search = identify(&restored, "b", b_centres[4].clone(), 0).await;
    assert_eq!(
        b_search.map(|_| ()).map_err(|s| s.code()),
        Err(Code::FailedPrecondition),
        "b is not searchable"
    );
    let b_enrol = restored.ingest().enroll(enrol_request("b", "s99999", b_synthetic.identity())).await;
    assert_eq!(b_enrol.map(|_| ()).map_err(|s| s.code()), Err(Code::FailedPrecondition), "nor enrollable");

    // Every subject enrolled before the backup is found; those enrolled after it are lost.
    for (i, centre) in centres.iter().enumerate() {
        let hit = identify(&restored, "a", centre.clone(), 0).await.expect("identify");
        assert_eq!(hit.mate_subject_id, subject_id(i), "enrolled before the backup");
    }
    for centre in &late {
        let r = identify(&restored, "a", centre.clone(), 0).await.expect("identify");
        assert!(r.candidates.iter().all(|c| !c.subject_id.starts_with("late-")), "after the backup: lost");
    }

    // Finishing b's deletion in the restored copy is on its record; c's key is an orphan.
    let redeleted = restored
        .galleries()
        .delete_gallery(DeleteGalleryRequest { name: "b".into(), idempotency_key: String::new() })
        .await
        .expect("b deleted again")
        .into_inner();
    assert!(leaf_detail(&restored, redeleted.audit_leaf_index).await.contains("data key destroyed"));
    let listed =
        restored.galleries().list_galleries(ListGalleriesRequest {}).await.expect("list").into_inner();
    let names: Vec<String> = listed.galleries.into_iter().map(|g| g.name).collect();
    assert_eq!(names, ["a"], "b is gone, c was created after the backup");
    assert!(keys.join(format!("{c_key}.dek")).exists(), "c's key stays, unreferenced");

    // The restored log verifies under the pinned key and extends the checkpoint signed before
    // the backup; the one signed after it is not a prefix of the restored log.
    let endpoint = format!("http://{}", restored.running.grpc_addr);
    let auditor = restored.token(Role::Auditor, "auditor-1");
    let verify = biomatch::cli::Cli::try_parse_from([
        "biomatch",
        "audit",
        "verify",
        "--endpoint",
        &endpoint,
        "--token",
        &auditor,
        "--public-key",
        &public_key,
    ])
    .expect("arguments");
    biomatch::cli::run(verify).await.expect("the restored audit log verifies");
    let kept = restored
        .audit()
        .list_checkpoints(ListCheckpointsRequest { after_size: signed_before.tree_size - 1, count: 1 })
        .await
        .expect("checkpoints")
        .into_inner()
        .checkpoints;
    assert_eq!(kept.first().map(|c| &c.note), Some(&signed_before.note), "kept as signed");
    let now = checkpoint(&restored).await;
    assert!(now.tree_size > signed_after.tree_size, "{} > {}", now.tree_size, signed_after.tree_size);
    assert_eq!(
        consistent(&restored, &signed_before, &now).await,
        Ok(()),
        "extends the pre-backup checkpoint"
    );
    assert!(consistent(&restored, &signed_after, &now).await.is_err(), "forks from the lost checkpoint");

    restored.running.shutdown().await;
    drop_database(&old_url).await;
    drop_database(&new_url).await;
}

/// Runs a PostgreSQL client tool; panics with its output when it fails.
fn pg(command: &mut Command) {
    let out = command.output().expect("PostgreSQL client tools are installed");
    assert!(out.status.success(), "{command:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Copies wrapped keys and tombstones from `from` to `to`, never replacing a file (`cp -n`).
/// Returns how many were copied.
fn copy_key_files(from: &Path, to: &Path, create: bool) -> usize {
    if create {
        std::fs::create_dir_all(to).expect("key copy dir");
    }
    let mut copied = 0;
    for entry in std::fs::read_dir(from).expect("key dir").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let target: PathBuf = to.join(&name);
        if (name.ends_with(".dek") || name.ends_with(".destroyed")) && !target.exists() {
            std::fs::copy(entry.path(), target).expect("copy");
            copied += 1;
        }
    }
    copied
}

async fn checkpoint(cluster: &TestCluster) -> Checkpoint {
    cluster
        .audit()
        .get_checkpoint(GetCheckpointRequest { sign_now: true })
        .await
        .expect("checkpoint")
        .into_inner()
}

/// Whether the restored log proves `old` a prefix of `new` (both signed checkpoints).
async fn consistent(
    cluster: &TestCluster,
    old: &Checkpoint,
    new: &Checkpoint,
) -> Result<(), biomatch_auditlog::merkle::ProofError> {
    let request = ConsistencyProofRequest { from_size: old.tree_size, to_size: new.tree_size };
    let proof = cluster.audit().get_consistency_proof(request).await.expect("proof").into_inner();
    let hashes: Vec<Hash> = proof.hashes.into_iter().map(|h| h.try_into().expect("32 bytes")).collect();
    let root = |c: &Checkpoint| -> Hash { c.root_hash.clone().try_into().expect("32 bytes") };
    verify_consistency(old.tree_size, new.tree_size, &root(old), &root(new), &hashes)
}

async fn leaf_detail(cluster: &TestCluster, index: u64) -> String {
    let leaves = cluster
        .audit()
        .list_leaves(ListLeavesRequest { start: index, count: 1 })
        .await
        .expect("leaf")
        .into_inner()
        .leaves;
    leaves.first().and_then(|l| l.event.as_ref()).map(|e| e.detail.clone()).unwrap_or_default()
}

fn enrol_request(gallery: &str, subject: &str, template: Vec<f32>) -> EnrollRequest {
    EnrollRequest {
        gallery: gallery.into(),
        subject_id: subject.into(),
        samples: vec![embedding(template).expect("probe")],
        mode: EnrollMode::Add.into(),
        idempotency_key: format!("{gallery}-{subject}"),
    }
}

/// Enrols `late-000`... into `a`; returns the change position of the last one.
async fn enrol_late(
    cluster: &TestCluster,
    synthetic: &mut biomatch::synthetic::Synthetic,
    centres: &[Vec<f32>],
) -> u64 {
    let requests: Vec<EnrollRequest> = centres
        .iter()
        .enumerate()
        .map(|(i, c)| enrol_request("a", &format!("late-{i:03}"), synthetic.sample(c)))
        .collect();
    let response =
        cluster.ingest().batch_enroll(tokio_stream::iter(requests)).await.expect("enrolled").into_inner();
    assert_eq!(response.accepted as usize, centres.len(), "{:?}", response.failures.first());
    response.last_change_seq
}

fn gallery_c() -> CreateGalleryRequest {
    CreateGalleryRequest {
        name: "c".into(),
        dimension: 64,
        threshold: Some(0.45),
        allowed_purposes: vec![PURPOSE.into()],
        retention: Some(prost_types::Duration { seconds: RETENTION_SECS, nanos: 0 }),
        ..Default::default()
    }
}

/// (gallery name, data key reference) of every gallery in the database.
async fn key_refs(url: &str) -> Vec<(String, String)> {
    let mut conn = PgConnection::connect(url).await.expect("connect");
    let rows =
        sqlx::query("SELECT name, key_ref FROM galleries").fetch_all(&mut conn).await.expect("galleries");
    rows.iter().map(|r| (r.get("name"), r.get("key_ref"))).collect()
}

/// (subject, sealed template) of one template of `gallery` in the database.
async fn first_template(url: &str, gallery: &str) -> (String, Vec<u8>) {
    let mut conn = PgConnection::connect(url).await.expect("connect");
    let row = sqlx::query(
        "SELECT t.subject_id, t.vector FROM templates t JOIN galleries g ON g.id = t.gallery_id \
         WHERE g.name = $1 LIMIT 1",
    )
    .bind(gallery)
    .fetch_one(&mut conn)
    .await
    .expect("the restored database holds the gallery's templates");
    (row.get("subject_id"), row.get("vector"))
}

async fn drop_database(url: &str) {
    let (server, name) = url.rsplit_once('/').expect("database URL");
    let mut admin = PgConnection::connect(&format!("{server}/postgres")).await.expect("connect");
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .expect("drop");
}
