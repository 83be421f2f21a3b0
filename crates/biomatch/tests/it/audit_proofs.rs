//! The audit role holds only the Merkle tree's upper levels (a hash per 1,024 leaves): a proof
//! that reaches inside a chunk of leaves reads that chunk's leaf hashes back from the store and
//! checks them against the tree before using them. Proofs across chunk boundaries match the
//! whole tree's; a leaf hash edited in the store under the running role gets no proof.

use crate::audit_tamper::{Log, append, client, fill, insider, start, verify};
use biomatch_auditlog::merkle::{Hash, Tree};
use biomatch_domain::Role;
use biomatch_proto::v1::{Checkpoint, ConsistencyProofRequest, GetCheckpointRequest, InclusionProofRequest};
use sqlx::{AnyConnection, Connection};

const SIZE: u64 = 2100;

/// Every leaf hash in the store, read as an auditor's own tool would.
async fn stored_hashes(database: &str) -> Vec<Hash> {
    sqlx::any::install_default_drivers();
    let mut conn = AnyConnection::connect(database).await.expect("connect");
    let rows: Vec<Vec<u8>> = sqlx::query_scalar("SELECT leaf_hash FROM audit_leaves ORDER BY idx")
        .fetch_all(&mut conn)
        .await
        .expect("leaf hashes");
    let _ = conn.close().await;
    rows.into_iter().map(|h| h.try_into().expect("32 bytes")).collect()
}

/// A checkpoint signed now, as an auditor asks for one.
async fn sign_checkpoint(log: &Log) -> Checkpoint {
    client(log)
        .get_checkpoint(log.keys.as_role(Role::Auditor, GetCheckpointRequest { sign_now: true }))
        .await
        .expect("checkpoint")
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proofs_read_leaf_hashes_back_and_refuse_an_edited_chunk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = start(dir.path(), None).await;
    fill(&log).await;
    tokio::join!(
        append(&log, 20..540, &[]),
        append(&log, 540..1060, &[]),
        append(&log, 1060..1580, &[]),
        append(&log, 1580..SIZE as usize, &[]),
    );
    let mut audit = client(&log);
    let checkpoint = sign_checkpoint(&log).await;
    assert_eq!(checkpoint.tree_size, SIZE);
    let whole = Tree::from_leaf_hashes(stored_hashes(&log.database).await.into_iter().take(SIZE as usize));
    assert_eq!(whole.root(SIZE).map(|r| r.to_vec()), Some(checkpoint.root_hash.clone()));

    let inclusion = |leaf_index: u64| {
        let mut audit = client(&log);
        let request = log.keys.as_role(Role::Auditor, InclusionProofRequest { leaf_index, tree_size: SIZE });
        async move { audit.get_inclusion_proof(request).await.map(|p| p.into_inner().hashes) }
    };
    let expected = |proof: Vec<Hash>| proof.iter().map(|h| h.to_vec()).collect::<Vec<_>>();
    // The first chunk (read back from the store) and the incomplete last one (in memory).
    for index in [0, 5, 1023, 2048, SIZE - 1] {
        let proof = inclusion(index).await.expect("proof");
        assert_eq!(proof, expected(whole.inclusion_proof(index, SIZE).expect("reference")), "leaf {index}");
    }
    let consistency = audit
        .get_consistency_proof(
            log.keys.as_role(Role::Auditor, ConsistencyProofRequest { from_size: 700, to_size: SIZE }),
        )
        .await
        .expect("consistency")
        .into_inner();
    assert_eq!(consistency.hashes, expected(whole.consistency_proof(700, SIZE).expect("reference")));
    let (code, out) = verify(&log);
    assert_eq!(code, Some(0), "checkpoints at 10, 20 and {SIZE} are consistent: {out}");

    // An insider rewrites a leaf hash in the second chunk, which no proof has read yet.
    let mut conn = insider(&log.database, log.postgres).await;
    sqlx::query("UPDATE audit_leaves SET leaf_hash = $1 WHERE idx = 1500")
        .bind(vec![7u8; 32])
        .execute(&mut conn)
        .await
        .expect("edit");
    let _ = conn.close().await;
    for index in [1024, 1500, 2047] {
        let refused = inclusion(index).await.expect_err("no proof from an edited chunk");
        assert_eq!(refused.code(), tonic::Code::Internal, "leaf {index}: {refused}");
    }
    let refused = audit
        .get_consistency_proof(
            log.keys.as_role(Role::Auditor, ConsistencyProofRequest { from_size: 1600, to_size: SIZE }),
        )
        .await
        .expect_err("no consistency proof through the edited chunk");
    assert_eq!(refused.code(), tonic::Code::Internal, "{refused}");
    // Proofs that do not reach inside the edited chunk are still given.
    assert_eq!(
        inclusion(5).await.expect("proof"),
        expected(whole.inclusion_proof(5, SIZE).expect("reference"))
    );
    log.running.shutdown().await;
}

/// Leaves another writer committed to the store (or a commit the audit role gave up on that
/// landed later) are read into the tree, checked, by the next commit: the next checkpoint covers
/// every stored leaf, and proofs reach them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tree_catches_up_with_leaves_committed_behind_its_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = start(dir.path(), None).await;
    fill(&log).await;
    let store = biomatch_store::SqlStore::connect(&log.database).await.expect("store");
    let record = biomatch_auditlog::AuditRecord {
        actor_subject: "elsewhere".into(),
        operation: "identify".into(),
        ..Default::default()
    };
    let leaves = (0..3).map(|i| biomatch_audit::new_leaf(&record, Some(format!("elsewhere-{i}")))).collect();
    use biomatch_store::AuditStore;
    store.append_leaves(leaves, biomatch_auditlog::chain_hash).await.expect("another writer");
    store.close().await;
    append(&log, 20..22, &[]).await;

    let stored = stored_hashes(&log.database).await;
    assert_eq!(stored.len(), 25);
    let mut audit = client(&log);
    let checkpoint = sign_checkpoint(&log).await;
    let whole = Tree::from_leaf_hashes(stored);
    assert_eq!(checkpoint.tree_size, 25, "the tree holds every stored leaf");
    assert_eq!(whole.root(25).map(|r| r.to_vec()), Some(checkpoint.root_hash));
    let request = InclusionProofRequest { leaf_index: 21, tree_size: 25 };
    let proof = audit.get_inclusion_proof(log.keys.as_role(Role::Auditor, request)).await.expect("proof");
    let expected: Vec<Vec<u8>> =
        whole.inclusion_proof(21, 25).expect("reference").iter().map(|h| h.to_vec()).collect();
    assert_eq!(proof.into_inner().hashes, expected);
    let (code, out) = verify(&log);
    assert_eq!(code, Some(0), "{out}");
    log.running.shutdown().await;
}
