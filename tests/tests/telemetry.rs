//! Nothing biometric reaches the logs or spans: the end-to-end path runs with every log line at
//! debug level and every span (with its fields, on close) captured, and the capture holds no float
//! array of 64 or more values, no base64 blob over 1 KiB and no image bytes.

use biomatch_proto::v1::{EnrollRequest, IdentifyRequest, Probe, VerifyRequest, probe};
use biomatch_tests::{PURPOSE, TestCluster, backends, embedding, enrolled_gallery, identify};
use std::io::Write;
use std::sync::{Arc, Mutex};

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Longest run of comma- or space-separated decimal numbers.
fn longest_number_run(text: &str) -> usize {
    let (mut best, mut run) = (0, 0);
    for token in text.split(|c: char| c == ',' || c.is_whitespace() || c == '[' || c == ']') {
        if token.is_empty() {
            continue;
        }
        if token.parse::<f64>().is_ok() && token.contains('.') {
            run += 1;
            best = best.max(run);
        } else {
            run = 0;
        }
    }
    best
}

fn longest_base64_run(text: &str) -> usize {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '+' || c == '/' || c == '='))
        .map(str::len)
        .max()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_carry_nothing_biometric() {
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter("debug,h2=info,hyper=info,hyper_util=info,tower=info,sqlx=info")
        .with_writer(move || writer.clone())
        .with_ansi(false)
        // Every span too, with its fields, when it closes: what a trace exporter would send.
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        .finish();
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber in this test binary");

    let dir = tempfile::tempdir().expect("tempdir");
    let backend = backends(dir.path()).await.remove(0);
    let cluster = TestCluster::all(&backend, dir.path()).await;
    let (mut synthetic, centres, seq) = enrolled_gallery(&cluster, "g", 128, 2, 200, 3).await;
    for centre in &centres[..10] {
        identify(&cluster, "g", synthetic.sample(centre), seq).await.expect("identify");
    }
    let verify = VerifyRequest {
        gallery: "g".into(),
        subject_id: "s00001".into(),
        probe: embedding(synthetic.sample(&centres[1])),
        purpose: PURPOSE.into(),
        ..Default::default()
    };
    cluster.search().verify(verify).await.expect("verify");
    // Failures log too: bad vectors, an image, a refused role.
    let mut nan = synthetic.sample(&centres[2]);
    nan[7] = f32::NAN;
    let bad = IdentifyRequest {
        gallery: "g".into(),
        probe: embedding(nan),
        purpose: PURPOSE.into(),
        ..Default::default()
    };
    assert!(cluster.search().identify(bad).await.is_err());
    let jpeg = [vec![0xFF, 0xD8, 0xFF, 0xE0], vec![0x42; 4000]].concat();
    let image = EnrollRequest {
        gallery: "g".into(),
        subject_id: "x".into(),
        samples: vec![Probe { kind: Some(probe::Kind::Image(jpeg)) }],
        ..Default::default()
    };
    assert!(cluster.ingest().enroll(image).await.is_err());
    cluster.running.shutdown().await;

    let log = String::from_utf8_lossy(&capture.0.lock().expect("capture")).into_owned();
    assert!(log.contains("grpc listening"), "the capture holds the cluster's logs");
    assert!(longest_number_run(&log) < 64, "a float array in the logs");
    assert!(longest_base64_run(&log) < 1024, "a base64 blob in the logs");
    assert!(!log.contains("\u{FFFD}\u{FFFD}\u{FFFD}") && !log.contains("JFIF"), "image bytes in the logs");
    // And the checks do fire on what they look for.
    let vector: Vec<String> = centres[0].iter().map(|v| format!("{v:.6}")).collect();
    assert!(longest_number_run(&format!("[{}]", vector.join(", "))) >= 64);
    assert!(longest_base64_run(&"QUJD".repeat(300)) >= 1024);
    let _ = std::io::stderr().flush();
}
