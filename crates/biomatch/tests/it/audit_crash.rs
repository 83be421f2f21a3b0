//! SIGKILL the audit process at random moments during concurrent appends: after restarts every
//! acknowledged leaf is present exactly once, at the index it was acknowledged with, the leaves
//! are gap-free, and the tree is consistent with every checkpoint signed before a crash.

use biomatch_auditlog::checkpoint;
use biomatch_auditlog::merkle::{Hash, verify_consistency};
use biomatch_proto::v1::audit_service_client::AuditServiceClient;
use biomatch_proto::v1::{
    Actor, AppendRequest, AuditEvent, ConsistencyProofRequest, GetCheckpointRequest, GetPublicKeyRequest,
    ListLeavesRequest, Operation,
};
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::time::Duration;
use tonic::transport::Channel;

use crate::common;

use biomatch_domain::Role;
use common::Keys;

const WRITERS: usize = 4;
const PER_WRITER: usize = 120;

fn event(key: &str) -> AuditEvent {
    AuditEvent {
        actor: Some(Actor { subject: "search".into(), role: "service".into(), device_id: String::new() }),
        operation: Operation::Identify.into(),
        request_id: key.to_owned(),
        ..Default::default()
    }
}

/// Appends until acknowledged, retrying the same key through crashes; returns (key, index).
async fn writer(client: AuditServiceClient<Channel>, w: usize, token: String) -> Vec<(String, u64)> {
    let mut acked = Vec::new();
    for n in 0..PER_WRITER {
        let key = format!("w{w}-{n}");
        loop {
            let mut c = client.clone();
            let request = AppendRequest { event: Some(event(&key)), idempotency_key: key.clone() };
            match c.append(biomatch_client::request(request, &token)).await {
                Ok(r) => {
                    acked.push((key.clone(), r.into_inner().leaf_index));
                    break;
                }
                Err(_) => tokio::task::yield_now().await,
            }
        }
    }
    acked
}

#[test]
fn acknowledged_leaves_survive_sigkill_exactly_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let data = data.to_str().expect("utf-8").to_owned();
    let keys = Keys::new(&dir.path().join("keys"));
    let start = |addr: &str| keys.serve(&["--role", "audit", "--data-dir", &data, "--grpc-addr", addr]);
    let mut audit = start("127.0.0.1:0");
    let addr = audit.addr.clone();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let channel = runtime.block_on(async {
        tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .expect("url")
            .connect_timeout(Duration::from_millis(200))
            .connect_lazy()
    });
    let client = AuditServiceClient::new(channel);
    let service = keys.token(biomatch_domain::Role::Service, "biomatch-search");
    let writers: Vec<_> =
        (0..WRITERS).map(|w| runtime.spawn(writer(client.clone(), w, service.clone()))).collect();

    let mut signed: Vec<(u64, Hash)> = Vec::new();
    // The kill moments come from a seed, printed so a failure can be replayed with
    // BIOMATCH_TEST_SEED=<seed>.
    let seed = std::env::var("BIOMATCH_TEST_SEED")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or_else(|| rand::rng().random());
    eprintln!("audit_crash: kill moments from seed {seed} (replay with BIOMATCH_TEST_SEED={seed})");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for _ in 0..3 {
        // Let some appends through, sign a checkpoint, then kill at a random moment.
        std::thread::sleep(Duration::from_millis(rng.random_range(50..250)));
        if let Ok(c) = runtime.block_on(
            client
                .clone()
                .get_checkpoint(keys.as_role(Role::Auditor, GetCheckpointRequest { sign_now: true })),
        ) {
            let c = c.into_inner();
            signed.push((c.tree_size, c.root_hash.try_into().expect("32 bytes")));
        }
        std::thread::sleep(Duration::from_millis(rng.random_range(0..150)));
        audit.kill();
        audit = start(&addr);
    }
    let acked: Vec<(String, u64)> =
        writers.into_iter().flat_map(|w| runtime.block_on(w).expect("writer")).collect();
    assert_eq!(acked.len(), WRITERS * PER_WRITER);

    runtime.block_on(async {
        let mut c = client.clone();
        let mut by_index: HashMap<u64, String> = HashMap::new();
        let mut count: HashMap<String, usize> = HashMap::new();
        // Signed first: each page read below appends its own audit_read leaf.
        let now = c
            .get_checkpoint(keys.as_role(Role::Auditor, GetCheckpointRequest { sign_now: true }))
            .await
            .expect("cp")
            .into_inner();
        let size = now.tree_size;
        loop {
            let start = by_index.len() as u64;
            let page = c
                .list_leaves(keys.as_role(Role::Auditor, ListLeavesRequest { start, count: 1000 }))
                .await
                .expect("leaves")
                .into_inner();
            let at_end = page.leaves.is_empty() || start + page.leaves.len() as u64 >= page.tree_size;
            for (i, leaf) in page.leaves.into_iter().enumerate() {
                assert_eq!(leaf.index, start + i as u64, "gap-free");
                let key = leaf.event.expect("event").request_id;
                *count.entry(key.clone()).or_default() += 1;
                by_index.insert(leaf.index, key);
            }
            if at_end {
                break;
            }
        }
        for (key, index) in &acked {
            assert_eq!(count.get(key), Some(&1), "{key} appears exactly once");
            assert_eq!(by_index.get(index), Some(key), "{key} is where its acknowledgement said");
        }
        assert!(by_index.len() as u64 >= size, "the signed size {size} was read");
        let key = c
            .get_public_key(keys.as_role(Role::Auditor, GetPublicKeyRequest {}))
            .await
            .expect("key")
            .into_inner();
        let key = ed25519_dalek::VerifyingKey::from_bytes(&key.key.try_into().expect("32")).expect("key");
        let now_root: Hash = checkpoint::open(&now.note, &key).expect("signed").root;
        assert!(!signed.is_empty(), "checkpoints were signed before the crashes");
        for (old_size, old_root) in signed {
            let proof = c
                .get_consistency_proof(
                    keys.as_role(
                        Role::Auditor,
                        ConsistencyProofRequest { from_size: old_size, to_size: size },
                    ),
                )
                .await
                .expect("proof")
                .into_inner();
            let hashes: Vec<Hash> = proof.hashes.into_iter().map(|h| h.try_into().expect("32")).collect();
            verify_consistency(old_size, size, &old_root, &now_root, &hashes).unwrap_or_else(|e| {
                panic!("checkpoint at {old_size} is not a prefix of the log after crashes: {e}")
            });
        }
    });
    audit.kill();
}
