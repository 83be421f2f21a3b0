//! The clients: each enrols, deletes, identifies and verifies its own subjects, with idempotency
//! keys and retries, and records every operation (what it asked, what came back, which audit leaf
//! the answer named) for the checker. A client checks each answer against what it knows: a search
//! that asked to read its own acknowledged writes must find an enrolled subject and must not find
//! a deleted one.

use crate::cluster::{GALLERY, PURPOSE};
use biomatch_proto::embedding_probe;
use biomatch_proto::v1::ingest_service_client::IngestServiceClient;
use biomatch_proto::v1::search_service_client::SearchServiceClient;
use biomatch_proto::v1::{
    Decision, DeleteSubjectRequest, EnrollMode, EnrollRequest, IdentifyRequest, VerifyRequest,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use std::future::Future;
use std::time::{Duration, Instant};
use tonic::transport::Channel;
use tonic::{Code, Status};

/// One attempt's limit, above the search role's 2 s per-shard deadline so a paused replica is
/// waited out and the other one asked.
const ATTEMPT: Duration = Duration::from_secs(5);
/// How long an operation keeps retrying before the client gives up on it.
const OPERATION: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OpKind {
    Enroll,
    Delete,
    Identify,
    /// Identify through the REST gateway.
    IdentifyRest,
    Verify,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Answered OK.
    Acked,
    /// Refused with a definite error (nothing to retry).
    Refused,
    /// Still failing when the client gave up; a write's effect is unknown.
    Indeterminate,
}

/// What an operation asked and what came back.
#[derive(Debug, Clone, Serialize)]
pub struct Op {
    pub client: usize,
    pub kind: OpKind,
    pub subject: String,
    pub idempotency_key: String,
    pub started_ms: u64,
    pub ended_ms: u64,
    pub attempts: u32,
    pub outcome: Outcome,
    /// gRPC code name (or HTTP status) of the last error; empty when acknowledged.
    pub code: String,
    pub audit_leaf_index: Option<u64>,
    /// search_id / verification_id of an answered search.
    pub request_id: String,
    pub change_seq: u64,
    /// For an answered search: whether the answer was what the client's own writes imply.
    pub answer_holds: Option<bool>,
    /// For a search: whether its subject should be found (enrolled) or not (deleted).
    pub expect_found: Option<bool>,
}

/// A subject as one client knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Known {
    Enrolled,
    Deleted,
    /// A write whose effect is unknown; the checker settles it by replaying the request.
    Unsure,
}

/// The template every enrolment of `subject` sends: a unit vector drawn from the subject's name.
pub fn template(subject: &str) -> Vec<f32> {
    let seed = subject
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    unit(StdRng::seed_from_u64(seed), None)
}

/// A probe of `subject`: its template plus noise, at a cosine of about 0.99.
pub fn probe(subject: &str, rng: &mut StdRng) -> Vec<f32> {
    let base = template(subject);
    unit(StdRng::seed_from_u64(rng.random()), Some(&base))
}

fn unit(mut rng: StdRng, around: Option<&[f32]>) -> Vec<f32> {
    let dim = crate::cluster::DIMENSION as usize;
    let v: Vec<f32> = match around {
        None => (0..dim).map(|_| rng.random_range(-1.0f32..1.0)).collect(),
        Some(base) => base.iter().map(|x| x + rng.random_range(-0.01f32..0.01)).collect(),
    };
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x / norm).collect()
}

/// Whether candidates, best first, show what the subject's state implies: an enrolled subject
/// ranked first, a deleted one not listed at all.
pub fn ranking_holds<'a>(subject: &str, found: bool, mut ranked: impl Iterator<Item = &'a str>) -> bool {
    if found { ranked.next() == Some(subject) } else { ranked.all(|id| id != subject) }
}

/// Whether a failed attempt may be tried again.
pub fn retryable(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Unknown
            | Code::Internal
            | Code::Cancelled
            | Code::Aborted
            | Code::ResourceExhausted
    )
}

/// Calls `call` until it answers, fails definitely, or `OPERATION` has passed.
pub async fn with_retries<T, F, Fut>(mut call: F) -> (Result<T, Status>, u32)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Status>>,
{
    let give_up = Instant::now() + OPERATION;
    let mut attempts = 0;
    loop {
        attempts += 1;
        let result = tokio::time::timeout(ATTEMPT, call())
            .await
            .unwrap_or_else(|_| Err(Status::deadline_exceeded("the attempt timed out")));
        let backoff = Duration::from_millis(100 * u64::from(attempts.min(10)));
        match result {
            Err(status) if retryable(status.code()) && Instant::now() + backoff < give_up => {
                // Back off before the next attempt (a retry policy, not a wait for an event).
                tokio::time::sleep(backoff).await;
            }
            other => return (other, attempts),
        }
    }
}

/// Where a client sends its requests, and as whom.
#[derive(Clone)]
pub struct Endpoints {
    pub ingest: Channel,
    pub search: Channel,
    pub gateway: String,
    pub http: reqwest::Client,
    pub enroller_token: String,
    pub analyst_token: String,
}

/// One client's run: operations until `stop`, drawn from `seed`. With a `cap`, a client holding
/// that many enrolled subjects deletes instead of enrolling, so a long run reaches a steady state.
pub async fn client(
    id: usize,
    seed: u64,
    endpoints: Endpoints,
    (epoch, stop): (Instant, Instant),
    cap: Option<usize>,
) -> Vec<Op> {
    let mut rng = StdRng::seed_from_u64(seed ^ (id as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut subjects: Vec<(String, Known)> = Vec::new();
    let mut seq = 0u64;
    let mut ops = Vec::new();
    let mut n = 0usize;
    while Instant::now() < stop {
        n += 1;
        let enrolled: Vec<usize> =
            (0..subjects.len()).filter(|i| subjects[*i].1 == Known::Enrolled).collect();
        let deleted: Vec<usize> = (0..subjects.len()).filter(|i| subjects[*i].1 == Known::Deleted).collect();
        let roll = rng.random_range(0..100);
        let started = Instant::now();
        let at_cap = cap.is_some_and(|cap| enrolled.len() >= cap);
        let mut op = if enrolled.is_empty() || (roll < 35 && !at_cap) {
            let subject = format!("c{id}-s{n:05}");
            let op = enroll(&endpoints, id, &subject, &mut seq).await;
            subjects.push((subject, known_after_write(op.outcome, Known::Enrolled)));
            op
        } else if roll < 45 {
            let i = enrolled[rng.random_range(0..enrolled.len())];
            let op = delete(&endpoints, id, &subjects[i].0, &mut seq).await;
            subjects[i].1 = known_after_write(op.outcome, Known::Deleted);
            op
        } else if roll < 60 {
            let i = enrolled[rng.random_range(0..enrolled.len())];
            verify(&endpoints, id, &subjects[i].0, seq, &mut rng).await
        } else {
            // Mostly a subject that must be found; now and then one that must not.
            let (i, found) = if !deleted.is_empty() && roll < 68 {
                (deleted[rng.random_range(0..deleted.len())], false)
            } else {
                (enrolled[rng.random_range(0..enrolled.len())], true)
            };
            let probe = probe(&subjects[i].0, &mut rng);
            if roll % 4 == 0 {
                identify_rest(&endpoints, id, &subjects[i].0, found, probe, seq).await
            } else {
                identify(&endpoints, id, &subjects[i].0, found, probe, seq).await
            }
        };
        op.started_ms = since(epoch, started);
        op.ended_ms = since(epoch, Instant::now());
        ops.push(op);
        // A capped (long) run remembers only its latest deleted subjects, so its own work per
        // operation stays the same all run long.
        if let Some(cap) = cap
            && deleted.len() > cap
        {
            subjects.remove(deleted[0]);
        }
    }
    ops
}

fn known_after_write(outcome: Outcome, wanted: Known) -> Known {
    match outcome {
        Outcome::Acked => wanted,
        Outcome::Indeterminate => Known::Unsure,
        // A refused enrolment made nothing; a refused deletion left the subject as it was.
        Outcome::Refused if wanted == Known::Enrolled => Known::Unsure,
        Outcome::Refused => Known::Enrolled,
    }
}

fn since(epoch: Instant, at: Instant) -> u64 {
    u64::try_from(at.duration_since(epoch).as_millis()).unwrap_or(u64::MAX)
}

pub(crate) fn blank(client: usize, kind: OpKind, subject: &str) -> Op {
    Op {
        client,
        kind,
        subject: subject.to_owned(),
        idempotency_key: String::new(),
        started_ms: 0,
        ended_ms: 0,
        attempts: 0,
        outcome: Outcome::Refused,
        code: String::new(),
        audit_leaf_index: None,
        request_id: String::new(),
        change_seq: 0,
        answer_holds: None,
        expect_found: None,
    }
}

fn settle<T>(op: &mut Op, result: Result<T, Status>, attempts: u32) -> Option<T> {
    op.attempts = attempts;
    match result {
        Ok(answer) => {
            op.outcome = Outcome::Acked;
            Some(answer)
        }
        Err(status) => {
            op.code = format!("{:?}", status.code());
            op.outcome = if retryable(status.code()) { Outcome::Indeterminate } else { Outcome::Refused };
            None
        }
    }
}

/// The enrolment of `subject`, as first sent and as replayed: the same key and body.
pub fn enroll_request(subject: &str) -> EnrollRequest {
    EnrollRequest {
        gallery: GALLERY.into(),
        subject_id: subject.into(),
        samples: vec![embedding_probe(template(subject))],
        mode: EnrollMode::Add.into(),
        idempotency_key: format!("enrol-{subject}"),
    }
}

pub fn delete_request(subject: &str) -> DeleteSubjectRequest {
    DeleteSubjectRequest {
        gallery: GALLERY.into(),
        subject_id: subject.into(),
        idempotency_key: format!("delete-{subject}"),
    }
}

pub async fn enroll(endpoints: &Endpoints, client: usize, subject: &str, seq: &mut u64) -> Op {
    let mut op = blank(client, OpKind::Enroll, subject);
    let request = enroll_request(subject);
    op.idempotency_key = request.idempotency_key.clone();
    let (result, attempts) = with_retries(|| {
        let mut ingest = IngestServiceClient::new(endpoints.ingest.clone());
        let request = biomatch_client::request(request.clone(), &endpoints.enroller_token);
        async move { ingest.enroll(request).await.map(tonic::Response::into_inner) }
    })
    .await;
    if let Some(answer) = settle(&mut op, result, attempts) {
        op.audit_leaf_index = Some(answer.audit_leaf_index);
        op.change_seq = answer.change_seq;
        *seq = (*seq).max(answer.change_seq);
    }
    op
}

pub async fn delete(endpoints: &Endpoints, client: usize, subject: &str, seq: &mut u64) -> Op {
    let mut op = blank(client, OpKind::Delete, subject);
    let request = delete_request(subject);
    op.idempotency_key = request.idempotency_key.clone();
    let (result, attempts) = with_retries(|| {
        let mut ingest = IngestServiceClient::new(endpoints.ingest.clone());
        let request = biomatch_client::request(request.clone(), &endpoints.enroller_token);
        async move { ingest.delete_subject(request).await.map(tonic::Response::into_inner) }
    })
    .await;
    if let Some(answer) = settle(&mut op, result, attempts) {
        op.audit_leaf_index = Some(answer.audit_leaf_index);
        op.change_seq = answer.change_seq;
        *seq = (*seq).max(answer.change_seq);
    }
    op
}

async fn identify(
    endpoints: &Endpoints,
    client: usize,
    subject: &str,
    found: bool,
    probe: Vec<f32>,
    seq: u64,
) -> Op {
    let mut op = blank(client, OpKind::Identify, subject);
    op.expect_found = Some(found);
    let request = IdentifyRequest {
        gallery: GALLERY.into(),
        probe: Some(embedding_probe(probe)),
        purpose: PURPOSE.into(),
        min_change_seq: seq,
        ..Default::default()
    };
    let (result, attempts) = with_retries(|| {
        let mut search = SearchServiceClient::new(endpoints.search.clone());
        let request = biomatch_client::request(request.clone(), &endpoints.analyst_token);
        async move { search.identify(request).await.map(tonic::Response::into_inner) }
    })
    .await;
    if let Some(answer) = settle(&mut op, result, attempts) {
        op.audit_leaf_index = Some(answer.audit_leaf_index);
        op.request_id = answer.search_id;
        let ranked = answer.candidates.iter().map(|c| c.subject_id.as_str());
        op.answer_holds = Some(!answer.partial && ranking_holds(subject, found, ranked));
    }
    op
}

#[derive(serde::Deserialize)]
struct RestIdentify {
    search_id: String,
    candidates: Vec<RestCandidate>,
    partial: bool,
    audit_leaf_index: u64,
}

#[derive(serde::Deserialize)]
struct RestCandidate {
    subject_id: String,
}

async fn identify_rest(
    endpoints: &Endpoints,
    client: usize,
    subject: &str,
    found: bool,
    probe: Vec<f32>,
    seq: u64,
) -> Op {
    let mut op = blank(client, OpKind::IdentifyRest, subject);
    op.expect_found = Some(found);
    let url = format!("{}/v1/galleries/{GALLERY}/identify", endpoints.gateway);
    let body = serde_json::json!({"embedding": probe, "purpose": PURPOSE, "min_change_seq": seq});
    let (result, attempts) = with_retries(|| {
        let call = endpoints.http.post(&url).bearer_auth(&endpoints.analyst_token).json(&body).send();
        async move {
            let response =
                call.await.map_err(|e| Status::unavailable(format!("gateway unreachable: {e}")))?;
            let status = response.status();
            if status.is_success() {
                return response
                    .json::<RestIdentify>()
                    .await
                    .map_err(|e| Status::unknown(format!("bad body: {e}")));
            }
            let code = match status.as_u16() {
                502..=504 => Code::Unavailable,
                429 => Code::ResourceExhausted,
                500..=599 => Code::Internal,
                404 => Code::NotFound,
                401 => Code::Unauthenticated,
                403 => Code::PermissionDenied,
                _ => Code::InvalidArgument,
            };
            Err(Status::new(code, format!("HTTP {status}")))
        }
    })
    .await;
    if let Some(answer) = settle(&mut op, result, attempts) {
        op.audit_leaf_index = Some(answer.audit_leaf_index);
        op.request_id = answer.search_id;
        let ranked = answer.candidates.iter().map(|c| c.subject_id.as_str());
        op.answer_holds = Some(!answer.partial && ranking_holds(subject, found, ranked));
    }
    op
}

async fn verify(endpoints: &Endpoints, client: usize, subject: &str, seq: u64, rng: &mut StdRng) -> Op {
    let mut op = blank(client, OpKind::Verify, subject);
    op.expect_found = Some(true);
    let request = VerifyRequest {
        gallery: GALLERY.into(),
        subject_id: subject.into(),
        probe: Some(embedding_probe(probe(subject, rng))),
        purpose: PURPOSE.into(),
        min_change_seq: seq,
        ..Default::default()
    };
    let (result, attempts) = with_retries(|| {
        let mut search = SearchServiceClient::new(endpoints.search.clone());
        let request = biomatch_client::request(request.clone(), &endpoints.analyst_token);
        async move { search.verify(request).await.map(tonic::Response::into_inner) }
    })
    .await;
    if let Some(answer) = settle(&mut op, result, attempts) {
        op.audit_leaf_index = Some(answer.audit_leaf_index);
        op.request_id = answer.verification_id;
        op.answer_holds = Some(answer.decision == i32::from(Decision::Mate));
    }
    op
}
