//! Outside `--role all` demo mode the cluster refuses to start without explicitly configured keys,
//! and refuses the demo's keys.

use biomatch_config::{ProcessRole, ServeConfig};
use biomatch_tests::{backends, config};

async fn refusal(config: ServeConfig) -> String {
    match biomatch::serve::start(config).await {
        Ok(running) => {
            running.shutdown().await;
            panic!("started without the keys it needs")
        }
        Err(e) => format!("{e:#}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_refuses_to_start_without_explicit_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = backends(dir.path()).await.remove(0);
    let roles = [ProcessRole::Ingest, ProcessRole::Matcher];
    let good = config(&backend, dir.path(), &roles);

    let mut c = good.clone();
    c.auth.public_keys.clear();
    assert!(refusal(c).await.contains("no token keys configured"));

    let mut c = good.clone();
    c.auth.service_key_file = None;
    assert!(refusal(c).await.contains("service_key_file is required"));

    let mut c = good.clone();
    c.crypto.master_key_file = None;
    assert!(refusal(c).await.contains("no master key"));

    // The demo's own key pair is refused outside demo mode.
    let (demo_private, demo_public) = biomatch::identity::demo_keys(dir.path()).expect("demo keys");
    let mut c = good.clone();
    c.auth.public_keys.push(demo_public);
    assert!(refusal(c).await.contains("demo key"));
    let mut c = good.clone();
    c.auth.service_key_file = Some(demo_private);
    assert!(refusal(c).await.contains("demo key"));

    // With everything configured it starts.
    let running = biomatch::serve::start(good).await.expect("starts with explicit keys");
    running.shutdown().await;
}

/// Roles that neither seal templates nor keep the audit log start without a master key, a database
/// or an audit signing key, and open no store: the deployment mounts none of them there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_without_templates_start_without_the_master_key_or_a_database() {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = biomatch_tests::Backend::Sqlite(dir.path().join("data"));
    let mut c =
        config(&backend, dir.path(), &[ProcessRole::Gateway, ProcessRole::Embed, ProcessRole::Search]);
    c.crypto.master_key_file = None;
    c.database_url = None;
    c.redis_url = None;
    c.audit.signing_key_file = None;
    c.data_dir = dir.path().join("never-created");
    let running = biomatch::serve::start(c).await.expect("starts without the secrets it does not use");
    assert!(!dir.path().join("never-created").exists(), "no store opened, no data directory made");
    running.shutdown().await;
}
