//! The cluster as separate processes on loopback, driven through the CLI: a matcher killed with
//! SIGKILL comes back with the same answers, and `audit verify` catches a leaf edited in the
//! database.

use biomatch::synthetic::Synthetic;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use crate::common;

use biomatch_domain::Role;
use common::{BIN, Keys};

fn cli(endpoint: &str, token: &str, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("BIOMATCH_ENDPOINT", format!("http://{endpoint}"))
        .env("BIOMATCH_TOKEN", token)
        .output()
        .expect("run biomatch")
}

fn ok_json(output: Output) -> serde_json::Value {
    assert!(output.status.success(), "failed: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("json output")
}

fn write_gallery(dir: &Path, n: usize) -> (Synthetic, Vec<Vec<f32>>) {
    let mut synthetic = Synthetic::new(128, 77);
    let centres: Vec<Vec<f32>> = (0..n).map(|_| synthetic.identity()).collect();
    let mut file = std::fs::File::create(dir.join("gallery.jsonl")).expect("create");
    for (i, c) in centres.iter().enumerate() {
        let line = serde_json::json!({"subject_id": format!("p{i:04}"), "vector": synthetic.sample(c)});
        writeln!(file, "{line}").expect("write");
    }
    (synthetic, centres)
}

#[test]
fn separate_processes_survive_a_killed_matcher_and_detect_tampering() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let data = data.to_str().expect("utf-8");
    let any = "127.0.0.1:0";
    let keys = Keys::new(&dir.path().join("keys"));
    let serve = |args: &[&str]| keys.serve(args);

    let audit = serve(&["--role", "audit", "--data-dir", data, "--grpc-addr", any]);
    let audit_url = format!("http://{}", audit.addr);
    let ingest = serve(&[
        "--role",
        "ingest,embed",
        "--data-dir",
        data,
        "--grpc-addr",
        any,
        "--audit-endpoint",
        &audit_url,
    ]);
    let ingest_url = format!("http://{}", ingest.addr);
    let matcher = serve(&["--role", "matcher", "--data-dir", data, "--grpc-addr", any]);
    let matcher_addr = matcher.addr.clone();
    let search = serve(&[
        "--role",
        "search",
        "--grpc-addr",
        any,
        "--data-dir",
        data,
        "--audit-endpoint",
        &audit_url,
        "--ingest-endpoint",
        &ingest_url,
        "--embed-endpoint",
        &ingest_url,
        "--matcher-endpoints",
        &format!("http://{matcher_addr}"),
    ]);

    let created = cli(
        &ingest.addr,
        &keys.token(Role::Admin, "ops"),
        &[
            "gallery",
            "create",
            "g",
            "--dim",
            "128",
            "--shards",
            "2",
            "--threshold",
            "0.45",
            "--purposes",
            "border",
            "--retention",
            "12h",
        ],
    );
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    let (mut synthetic, centres) = write_gallery(dir.path(), 300);
    let enrolled = ok_json(cli(
        &ingest.addr,
        &keys.token(Role::Enroller, "loader"),
        &[
            "enroll",
            "--gallery",
            "g",
            "--vectors",
            dir.path().join("gallery.jsonl").to_str().expect("utf-8"),
            "--json",
        ],
    ));
    assert_eq!(enrolled["accepted"], 300);
    let seq = enrolled["change_seq"].as_u64().expect("change_seq").to_string();

    // The kiosk's token comes from the CLI, scoped to its gallery, purpose and lane.
    let issued = Command::new(BIN)
        .args(["token", "issue", "--role", "kiosk", "--sub", "kiosk-9", "--device", "lane-4"])
        .args(["--galleries", "g", "--purposes", "border", "--ttl", "10m", "--vector-probes", "--key"])
        .arg(&keys.issuer)
        .output()
        .expect("token issue");
    assert!(issued.status.success(), "{}", String::from_utf8_lossy(&issued.stderr));
    let kiosk = String::from_utf8(issued.stdout).expect("utf-8").trim().to_owned();
    let identify = |probe: &Vec<f32>, min_seq: &str| {
        let path = dir.path().join("probe.json");
        std::fs::write(&path, serde_json::to_vec(probe).expect("json")).expect("write probe");
        cli(
            &search.addr,
            &kiosk,
            &[
                "identify",
                "--gallery",
                "g",
                "--purpose",
                "border",
                "--vector",
                path.to_str().expect("utf-8"),
                "--min-change-seq",
                min_seq,
                "--json",
            ],
        )
    };
    let probes: Vec<Vec<f32>> = (0..12).map(|i| synthetic.sample(&centres[i * 20])).collect();
    let mut before = Vec::new();
    for (i, p) in probes.iter().enumerate() {
        let json = ok_json(identify(p, &seq));
        // A kiosk is told the decision and the mate only.
        assert_eq!(json["mate_subject_id"], format!("p{:04}", i * 20));
        assert_eq!(json["decision"], "mate");
        assert_eq!(json["candidates"], serde_json::json!([]), "no list for a kiosk");
        before.push(json["mate_subject_id"].clone());
    }

    // SIGKILL the matcher: searches fail with a clear one-line error, then succeed as before.
    matcher.kill();
    let failed = identify(&probes[0], "0");
    assert!(!failed.status.success());
    let message = String::from_utf8_lossy(&failed.stderr);
    assert!(message.starts_with("error: UNAVAILABLE"), "{message}");
    assert_eq!(message.trim().lines().count(), 1, "one-line reason: {message}");
    let _matcher = serve(&["--role", "matcher", "--data-dir", data, "--grpc-addr", &matcher_addr]);
    for (p, expected) in probes.iter().zip(&before) {
        let json = ok_json(identify(p, "0"));
        assert_eq!(&json["mate_subject_id"], expected, "same answer after the matcher restarted");
    }

    let verified =
        ok_json(cli(&audit.addr, &keys.token(Role::Auditor, "auditor-1"), &["audit", "verify", "--json"]));
    assert_eq!(verified["intact"], true);
    let leaves = verified["leaves"].as_u64().expect("leaves");
    assert!(leaves >= 1 + 1 + 12 + 12, "gallery, enrolment and every identify are audited: {leaves}");

    // An insider edits one leaf directly in the database: verification names it and fails.
    drop(audit);
    let db = format!("sqlite://{}", Path::new(data).join("audit.db").display());
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let index = runtime.block_on(async {
        use sqlx::Connection;
        let mut conn = sqlx::SqliteConnection::connect(&db).await.expect("open audit.db");
        sqlx::query("DROP TRIGGER audit_leaves_no_update")
            .execute(&mut conn)
            .await
            .expect("insider drops the guard");
        // The first identify of the kiosk (its leaves follow the gallery's and enrolment's intent
        // and outcome leaves).
        let (index, leaf): (i64, Vec<u8>) = sqlx::query_as(
            "SELECT idx, leaf FROM audit_leaves WHERE leaf LIKE '%kiosk-9%' ORDER BY idx LIMIT 1",
        )
        .fetch_one(&mut conn)
        .await
        .expect("leaf");
        let edited = String::from_utf8(leaf).expect("utf-8").replace("kiosk-9", "kiosk-0");
        sqlx::query("UPDATE audit_leaves SET leaf = $1 WHERE idx = $2")
            .bind(edited.into_bytes())
            .bind(index)
            .execute(&mut conn)
            .await
            .expect("edit");
        index
    });
    // The audit role will not start on it (nor sign a checkpoint over the forgery), naming the
    // leaf, or the checkpoint that covers it.
    let mut refused = Command::new(BIN)
        .args(["serve", "--role", "audit", "--data-dir", data, "--grpc-addr", any])
        .args(keys.flags())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run biomatch serve");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = refused.try_wait().expect("wait") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = refused.kill();
            panic!("the audit role started on a tampered log");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success());
    let mut message = String::new();
    std::io::Read::read_to_string(&mut refused.stderr.take().expect("stderr"), &mut message).expect("stderr");
    assert!(message.contains("audit log tampered"), "{message}");
    assert!(message.contains(&format!("leaf {index}")) || message.contains("root signed"), "{message}");
    drop(search);
}
