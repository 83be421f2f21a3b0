//! The audit service goes away in the middle of kiosk traffic: every answer a kiosk received has a
//! committed audit leaf, and every other request failed with UNAVAILABLE.

use biomatch_config::ProcessRole;
use biomatch_proto::v1::ListLeavesRequest;
use biomatch_tests::{TestCluster, backends, config, enrolled_gallery, identify};
use std::collections::HashMap;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_answer_leaves_without_a_committed_leaf() {
    let dir = tempfile::tempdir().expect("tempdir");
    for backend in backends(dir.path()).await {
        let audit = TestCluster::start(config(&backend, dir.path(), &[ProcessRole::Audit])).await;
        let mut rest = config(
            &backend,
            dir.path(),
            &[ProcessRole::Embed, ProcessRole::Ingest, ProcessRole::Matcher, ProcessRole::Search],
        );
        rest.endpoints.audit = Some(format!("http://{}", audit.running.grpc_addr));
        let cluster = TestCluster::start(rest).await;
        let (mut synthetic, centres, seq) = enrolled_gallery(&cluster, "g", 64, 2, 200, 8).await;

        let probes: Vec<Vec<f32>> = (0..400).map(|i| synthetic.sample(&centres[i % 200])).collect();
        let cluster = std::sync::Arc::new(cluster);
        let (progress, mut progressed) = tokio::sync::mpsc::channel::<()>(1000);
        let mut workers = Vec::new();
        for chunk in probes.chunks(100).map(<[Vec<f32>]>::to_vec) {
            let cluster = cluster.clone();
            let progress = progress.clone();
            workers.push(tokio::spawn(async move {
                let mut answered = Vec::new();
                let mut refused = 0;
                for probe in chunk {
                    match identify(&cluster, "g", probe, seq).await {
                        Ok(r) => answered.push((r.search_id, r.audit_leaf_index)),
                        Err(status) => {
                            assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                            refused += 1;
                        }
                    }
                    let _ = progress.try_send(());
                }
                (answered, refused)
            }));
        }
        drop(progress);
        // Cut the audit service once traffic is flowing.
        for _ in 0..40 {
            progressed.recv().await;
        }
        audit.running.shutdown().await;
        let mut answered = Vec::new();
        let mut refused = 0;
        for w in workers {
            let (a, r) = w.await.expect("worker");
            answered.extend(a);
            refused += r;
        }
        assert!(!answered.is_empty() && refused > 0, "{} answered, {refused} refused", answered.len());

        // Every answer that left is in the log, at the index it was given, for that search.
        let audit = TestCluster::start(config(&backend, dir.path(), &[ProcessRole::Audit])).await;
        let mut leaves = HashMap::new();
        let mut start = 0;
        // Up to the size each page was read at: every page is itself an audit_read leaf.
        loop {
            let page = audit
                .audit()
                .list_leaves(ListLeavesRequest { start, count: 1000 })
                .await
                .expect("leaves")
                .into_inner();
            let at_end = page.leaves.is_empty() || start + page.leaves.len() as u64 >= page.tree_size;
            start += page.leaves.len() as u64;
            for leaf in page.leaves {
                leaves.insert(leaf.index, leaf.event.map(|e| e.request_id).unwrap_or_default());
            }
            if at_end {
                break;
            }
        }
        for (search_id, index) in &answered {
            assert_eq!(
                leaves.get(index),
                Some(search_id),
                "{backend:?}: answer {search_id} has its committed leaf"
            );
        }
        audit.running.shutdown().await;
        if let Ok(cluster) = std::sync::Arc::try_unwrap(cluster) {
            cluster.running.shutdown().await;
        }
    }
}
