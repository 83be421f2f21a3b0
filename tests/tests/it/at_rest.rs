//! A stolen disk, database dump or backup holds no usable template: every file the cluster wrote
//! (and a PostgreSQL dump) is searched for the enrolled vectors, and a backup restored after a
//! gallery was deleted no longer decrypts.

use biomatch_crypto::{FileKeyStore, KeyStore, MasterKey};
use biomatch_proto::v1::DeleteGalleryRequest;
use biomatch_tests::{Backend, TestCluster, backends, enrolled_gallery};
use std::path::{Path, PathBuf};

/// Every window of `d` floats at any byte alignment whose cosine with a template exceeds 0.99.
fn plaintext_hits(bytes: &[u8], templates: &[Vec<f32>]) -> usize {
    let d = templates[0].len();
    let mut hits = 0;
    for align in 0..4 {
        let floats: Vec<f32> = bytes[align.min(bytes.len())..]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .map(|f| if f.is_finite() { f } else { 0.0 })
            .collect();
        for window in floats.windows(d) {
            let norm = window.iter().map(|x| x * x).sum::<f32>().sqrt();
            if norm <= 1e-6 {
                continue;
            }
            if templates.iter().any(|t| t.iter().zip(window).map(|(a, b)| a * b).sum::<f32>() / norm > 0.99) {
                hits += 1;
            }
        }
    }
    hits
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// `\x..` hex runs of a plain-text dump (how pg_dump writes bytea), decoded.
fn hex_runs(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for run in text.split("\\x").skip(1) {
        let hex: String = run.chars().take_while(char::is_ascii_hexdigit).collect();
        out.extend(hex::decode(&hex[..hex.len() - hex.len() % 2]).unwrap_or_default());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_plaintext_template_anywhere_at_rest() {
    let dir = tempfile::tempdir().expect("tempdir");
    for backend in backends(dir.path()).await {
        let cluster = TestCluster::all(&backend, dir.path()).await;
        let (mut synthetic, centres, seq) = enrolled_gallery(&cluster, "g", 32, 2, 60, 31).await;
        // The gallery works, so what is scanned below is a live cluster's data.
        let hit = biomatch_tests::identify(&cluster, "g", synthetic.sample(&centres[3]), seq)
            .await
            .expect("identify");
        assert_eq!(hit.candidates[0].subject_id, "s00003");
        cluster.running.shutdown().await;

        // The templates as enrolled: the synthetic generator is deterministic, so re-derive them.
        let mut again = biomatch::synthetic::Synthetic::new(32, 31);
        let centres_again: Vec<Vec<f32>> = (0..60).map(|_| again.identity()).collect();
        let enrolled: Vec<Vec<f32>> = centres_again.iter().map(|c| again.sample(c)).collect();
        assert!(
            plaintext_hits(&bytes_of(&enrolled), &enrolled) > 0,
            "the scan finds plaintext when it is there"
        );

        let mut scanned = 0;
        let files = files_under(dir.path());
        if matches!(backend, Backend::Sqlite(_)) {
            let snapshot = |f: &std::path::PathBuf| f.extension().is_some_and(|e| e == "snapshot");
            assert!(files.iter().any(snapshot), "matcher snapshots are among the files scanned");
        }
        for file in files {
            let bytes = std::fs::read(&file).expect("read");
            assert_eq!(plaintext_hits(&bytes, &enrolled), 0, "plaintext template in {}", file.display());
            scanned += bytes.len();
        }
        assert!(scanned > 10_000, "the cluster's files were scanned ({scanned} bytes)");
        if let Backend::Postgres(url) = &backend {
            let dump = std::process::Command::new("pg_dump")
                .arg(format!("--dbname={url}"))
                .output()
                .expect("pg_dump");
            assert!(dump.status.success(), "{}", String::from_utf8_lossy(&dump.stderr));
            let text = String::from_utf8_lossy(&dump.stdout).into_owned();
            assert!(text.contains("COPY public.templates"), "the dump holds the templates table");
            assert_eq!(plaintext_hits(&hex_runs(&text), &enrolled), 0, "plaintext template in the dump");
            assert_eq!(plaintext_hits(text.as_bytes(), &enrolled), 0);
        }
    }
}

fn bytes_of(templates: &[Vec<f32>]) -> Vec<u8> {
    templates.iter().flatten().flat_map(|f| f.to_le_bytes()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_restored_after_gallery_deletion_does_not_decrypt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = backends(dir.path()).await.remove(0);
    let Backend::Sqlite(data) = &backend else { unreachable!("SQLite comes first") };
    let cluster = TestCluster::all(&backend, dir.path()).await;
    enrolled_gallery(&cluster, "g", 32, 1, 20, 5).await;
    cluster.running.shutdown().await;

    // Yesterday's backup of the gallery store.
    let backup = dir.path().join("backup.db");
    std::fs::copy(data.join("gallery.db"), &backup).expect("backup");
    let master = MasterKey::from_file(&dir.path().join("keys/master.key")).expect("master key");
    let keys = FileKeyStore::new(&data.join("keys"), master.clone()).expect("key store");
    let (key_ref, subject, sealed) = first_template(&backup).await;
    let context = biomatch_crypto::template_context(&key_ref, &subject);
    assert!(
        keys.get(&key_ref).expect("key").open(&sealed, &context).is_ok(),
        "before deletion the backup opens"
    );

    let cluster = TestCluster::all(&backend, dir.path()).await;
    let deleted = cluster
        .galleries()
        .delete_gallery(DeleteGalleryRequest { name: "g".into(), idempotency_key: String::new() })
        .await
        .expect("deleted")
        .into_inner();
    let receipt = cluster
        .audit()
        .list_leaves(biomatch_proto::v1::ListLeavesRequest { start: deleted.audit_leaf_index, count: 1 })
        .await
        .expect("leaf")
        .into_inner()
        .leaves;
    assert!(
        receipt[0].event.as_ref().is_some_and(|e| e.detail.contains("data key destroyed")),
        "deletion receipt"
    );
    cluster.running.shutdown().await;

    // The backup still holds the rows, but no key opens them any more.
    let (key_ref_after, _, sealed_after) = first_template(&backup).await;
    assert_eq!((key_ref_after.as_str(), &sealed_after), (key_ref.as_str(), &sealed));
    let fresh = FileKeyStore::new(&data.join("keys"), master).expect("key store");
    assert!(fresh.get(&key_ref).is_err(), "the gallery's data key is gone");
    // What is left under its name is the tombstone, which holds no key.
    let left: Vec<PathBuf> = files_under(&data.join("keys"))
        .into_iter()
        .filter(|f| f.display().to_string().contains(&key_ref))
        .collect();
    assert_eq!(left, [data.join("keys").join(format!("{key_ref}.destroyed"))]);
}

/// (gallery key_ref, subject, sealed template) of the first template in a gallery store file.
async fn first_template(db: &Path) -> (String, String, Vec<u8>) {
    use sqlx::{Connection, Row};
    let mut conn =
        sqlx::SqliteConnection::connect(&format!("sqlite://{}?mode=ro", db.display())).await.expect("open");
    let row = sqlx::query(
        "SELECT g.key_ref, t.subject_id, t.vector FROM templates t JOIN galleries g ON g.id = t.gallery_id LIMIT 1",
    )
    .fetch_one(&mut conn)
    .await
    .expect("a template row");
    (row.get("key_ref"), row.get("subject_id"), row.get("vector"))
}
