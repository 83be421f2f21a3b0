//! `biomatch enroll` and `biomatch delete`.

pub(crate) mod lines;

use super::{ClientArgs, rpc_error};
use anyhow::Context;
use biomatch_proto::v1::ingest_service_client::IngestServiceClient;
use biomatch_proto::v1::{DeleteSubjectRequest, Embedding, EnrollMode, EnrollRequest, Probe, probe};
use clap::Args;
use sha2::{Digest, Sha256};
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio_stream::StreamExt;

#[derive(Debug, Args)]
pub struct EnrollArgs {
    #[arg(long)]
    gallery: String,
    /// JSON lines: {"subject_id": "...", "vector": [floats]}; several lines may name one subject.
    #[arg(long, conflicts_with = "image", required_unless_present = "image")]
    vectors: Option<PathBuf>,
    /// A photo to enroll (needs the face pipeline).
    #[arg(long, requires = "subject")]
    image: Option<PathBuf>,
    /// Subject id for --image.
    #[arg(long)]
    subject: Option<String>,
    /// Replace each subject's templates instead of adding to them.
    #[arg(long)]
    replace: bool,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    #[arg(long)]
    gallery: String,
    #[arg(long)]
    subject: String,
    #[command(flatten)]
    client: ClientArgs,
}

/// A key that makes re-running the same file safe: the same line enrolls once.
fn idempotency_key(gallery: &str, line: &str) -> String {
    hex::encode(&Sha256::digest(format!("{gallery}\n{line}").as_bytes())[..16])
}

/// Reads the vectors file, handing each line's item (with the line, which its idempotency key is
/// derived from) to `each` until it returns false; the number of items read. A bad line is an
/// error naming the line (never its content).
fn read_vectors(path: &Path, mut each: impl FnMut(&str, lines::Item) -> bool) -> anyhow::Result<usize> {
    let file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut count = 0;
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("cannot read {}", path.display()))?;
        let parsed = lines::parse_line(n + 1, &line).with_context(|| path.display().to_string())?;
        let Some(item) = parsed else { continue };
        count += 1;
        if !each(&line, item) {
            break;
        }
    }
    Ok(count)
}

/// The enrolment of one line of the vectors file.
fn vector_request(gallery: &str, mode: EnrollMode, line: &str, item: lines::Item) -> EnrollRequest {
    let embedding = Embedding { values: item.vector, ..Default::default() };
    EnrollRequest {
        gallery: gallery.to_owned(),
        subject_id: item.subject.into_string(),
        samples: vec![Probe { kind: Some(probe::Kind::Embedding(embedding)) }],
        mode: mode.into(),
        idempotency_key: idempotency_key(gallery, line),
    }
}

/// Enrolments queued between the file's reader and the stream to the ingest role: memory stays
/// bounded whatever the file's size.
const QUEUED: usize = 4096;

pub async fn run(args: EnrollArgs) -> anyhow::Result<()> {
    let mode = if args.replace { EnrollMode::Replace } else { EnrollMode::Add };
    let (sender, receiver) = tokio::sync::mpsc::channel(QUEUED);
    let mut reader = None;
    let total = if let Some(path) = args.vectors.clone() {
        // A first pass checks every line and counts them, so nothing of a bad file is sent; the
        // second streams the file as it is read.
        let checking = Progress::start("checked", None);
        let checked = checking.done.clone();
        let to_check = path.clone();
        let counted = tokio::task::spawn_blocking(move || {
            read_vectors(&to_check, |_, _| {
                checked.fetch_add(1, Ordering::Relaxed);
                true
            })
        });
        let total = counted.await??;
        checking.finish();
        let gallery = args.gallery.clone();
        reader = Some(tokio::task::spawn_blocking(move || {
            read_vectors(&path, |line, item| {
                sender.blocking_send(vector_request(&gallery, mode, line, item)).is_ok()
            })
        }));
        total
    } else if let (Some(image), Some(subject)) = (&args.image, &args.subject) {
        let bytes = std::fs::read(image).with_context(|| format!("cannot read {}", image.display()))?;
        let request = EnrollRequest {
            gallery: args.gallery.clone(),
            subject_id: subject.clone(),
            samples: vec![Probe { kind: Some(probe::Kind::Image(bytes)) }],
            mode: mode.into(),
            idempotency_key: String::new(),
        };
        sender.send(request).await.context("the enrolment queue closed")?;
        drop(sender);
        1
    } else {
        0
    };
    let mut client = IngestServiceClient::new(args.client.channel()?);
    let sending = Progress::start("sent", Some(total));
    let sent = sending.done.clone();
    let requests = tokio_stream::wrappers::ReceiverStream::new(receiver).map(move |request| {
        sent.fetch_add(1, Ordering::Relaxed);
        request
    });
    let response = client.batch_enroll(args.client.request(requests)?).await;
    sending.finish();
    let response = response.map_err(rpc_error)?.into_inner();
    if args.client.json {
        let failures: Vec<serde_json::Value> = response
            .failures
            .iter()
            .map(|f| serde_json::json!({"index": f.index, "subject_id": f.subject_id, "code": f.code, "message": f.message}))
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "accepted": response.accepted,
                "rejected": response.rejected,
                "failures": failures,
                "change_seq": response.last_change_seq,
            })
        );
    } else {
        println!("enrolled {} of {total} (change log at {})", response.accepted, response.last_change_seq);
        for f in &response.failures {
            println!("rejected item {} ({}): {}: {}", f.index, f.subject_id, f.code, f.message);
        }
    }
    if let Some(reader) = reader {
        // The file changed between the passes: what was streamed before the bad line, reported
        // above, is enrolled.
        reader.await?.context("the file changed while it was sent")?;
    }
    if response.rejected > 0 {
        anyhow::bail!("{} of {total} enrolments were rejected", response.rejected);
    }
    Ok(())
}

/// A progress line on stderr, redrawn every second while a large file is read and sent; only when
/// stderr is a terminal, so scripts and logs see nothing of it.
struct Progress {
    done: Arc<AtomicUsize>,
    ticker: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    fn start(what: &'static str, total: Option<usize>) -> Self {
        let done = Arc::new(AtomicUsize::new(0));
        let ticker = std::io::stderr().is_terminal().then(|| {
            let done = done.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                tick.tick().await;
                loop {
                    tick.tick().await;
                    let n = done.load(Ordering::Relaxed);
                    let rate = n as f64 / started.elapsed().as_secs_f64();
                    let line = match total {
                        Some(total) => format!(
                            "{what} {n} of {total} ({:.0}%), {rate:.0}/s",
                            100.0 * n as f64 / total.max(1) as f64
                        ),
                        None => format!("{what} {n} lines, {rate:.0}/s"),
                    };
                    let mut err = std::io::stderr().lock();
                    let _ = write!(err, "\r\x1b[2K{line}");
                    let _ = err.flush();
                }
            })
        });
        Self { done, ticker }
    }

    fn finish(self) {
        if let Some(ticker) = self.ticker {
            ticker.abort();
            eprint!("\r\x1b[2K");
        }
    }
}

pub async fn delete(args: DeleteArgs) -> anyhow::Result<()> {
    let mut client = IngestServiceClient::new(args.client.channel()?);
    let request = DeleteSubjectRequest {
        gallery: args.gallery,
        subject_id: args.subject.clone(),
        idempotency_key: String::new(),
    };
    let r = client.delete_subject(args.client.request(request)?).await.map_err(rpc_error)?.into_inner();
    if args.client.json {
        println!("{}", serde_json::json!({"deleted": args.subject, "audit_leaf_index": r.audit_leaf_index}));
    } else {
        println!("deleted subject {} (audit leaf {})", args.subject, r.audit_leaf_index);
    }
    Ok(())
}
