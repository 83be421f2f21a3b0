//! The checker: once the nemesis has stopped and every process is back, it settles the writes
//! whose effect the clients never learned (by replaying them with their idempotency keys), then
//! proves from the clients' records that the cluster kept its promises. Every broken promise is
//! an [`Anomaly`]; a sound run has none.

use crate::cluster::{Cluster, GALLERY, SHARDS};
use crate::plan::Target;
use crate::workload::{self, Endpoints, Known, Op, OpKind, Outcome};
use anyhow::Context;
use biomatch_domain::{Role, SubjectId, shard_of};
use biomatch_proto::v1::audit_service_client::AuditServiceClient;
use biomatch_proto::v1::matcher_service_client::MatcherServiceClient;
use biomatch_proto::v1::search_service_client::SearchServiceClient;
use biomatch_proto::v1::{
    AuditLeaf, IdentifyRequest, ListLeavesRequest, Operation, QueryVector, ShardRef, ShardSearchRequest,
};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// A promise the cluster broke, with what shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Anomaly {
    pub kind: &'static str,
    pub detail: String,
}

fn anomaly(kind: &'static str, detail: impl Into<String>) -> Anomaly {
    Anomaly { kind, detail: detail.into() }
}

/// What the checker did and found.
#[derive(Debug, Default, Serialize)]
pub struct Checked {
    /// Writes settled by replaying them after the run.
    pub replayed: Vec<Op>,
    pub subjects_enrolled: usize,
    pub subjects_deleted: usize,
    pub leaves: u64,
    pub anomalies: Vec<Anomaly>,
}

/// Each subject's last write, as the clients know it: acknowledged, or unsure.
fn last_writes(ops: &[Op]) -> BTreeMap<String, (OpKind, Known)> {
    let mut last = BTreeMap::new();
    for op in ops.iter().filter(|o| matches!(o.kind, OpKind::Enroll | OpKind::Delete)) {
        let known = match (op.outcome, op.kind) {
            (Outcome::Acked, OpKind::Enroll) => Known::Enrolled,
            (Outcome::Acked, _) => Known::Deleted,
            // A refused deletion leaves the subject enrolled.
            (Outcome::Refused, OpKind::Delete) => Known::Enrolled,
            _ => Known::Unsure,
        };
        last.insert(op.subject.clone(), (op.kind, known));
    }
    last
}

pub async fn check(cluster: &Cluster, endpoints: &Endpoints, ops: &[Op]) -> anyhow::Result<Checked> {
    let mut checked = Checked::default();
    for op in ops {
        if op.answer_holds == Some(false) {
            let expected = if op.expect_found == Some(true) { "must be found" } else { "must not be found" };
            checked.anomalies.push(anomaly(
                "wrong_answer",
                format!("{:?} of {} ({expected}) answered otherwise", op.kind, op.subject),
            ));
        }
        if op.kind == OpKind::Delete && op.outcome == Outcome::Refused && op.code == "NotFound" {
            checked.anomalies.push(anomaly(
                "lost_enrolment",
                format!("deleting acknowledged {} found nothing", op.subject),
            ));
        }
    }

    // Settle what the clients could not.
    let mut state: BTreeMap<String, Known> = BTreeMap::new();
    let mut seq = ops.iter().map(|o| o.change_seq).max().unwrap_or(0);
    for (subject, (kind, known)) in last_writes(ops) {
        let settled = if known == Known::Unsure {
            let mut dummy = 0;
            let op = match kind {
                OpKind::Enroll => workload::enroll(endpoints, usize::MAX, &subject, &mut dummy).await,
                _ => workload::delete(endpoints, usize::MAX, &subject, &mut dummy).await,
            };
            seq = seq.max(op.change_seq);
            let settled = match (op.outcome, kind) {
                (Outcome::Acked, OpKind::Enroll) => Known::Enrolled,
                (Outcome::Acked, _) => Known::Deleted,
                _ => {
                    checked.anomalies.push(anomaly(
                        "unsettled_write",
                        format!("{kind:?} {subject} replayed: {}", op.code),
                    ));
                    Known::Unsure
                }
            };
            checked.replayed.push(op);
            settled
        } else {
            known
        };
        state.insert(subject, settled);
    }
    checked.subjects_enrolled = state.values().filter(|k| **k == Known::Enrolled).count();
    checked.subjects_deleted = state.values().filter(|k| **k == Known::Deleted).count();

    eprintln!("chaos checker: {} writes settled by replay; checking the store", checked.replayed.len());
    check_store(cluster, &state, &mut checked.anomalies).await.context("reading the store")?;
    eprintln!("chaos checker: searching for {} subjects", state.len());
    check_searches(cluster, endpoints, &state, seq, &mut checked.anomalies).await?;
    eprintln!("chaos checker: reading the audit log");
    let leaves = all_leaves(cluster).await.context("reading the audit log")?;
    checked.leaves = leaves.len() as u64;
    check_leaves(&leaves, ops.iter().chain(&checked.replayed), &mut checked.anomalies);
    eprintln!("chaos checker: audit verify");
    check_audit_verify(cluster, &mut checked.anomalies).await?;
    Ok(checked)
}

/// Enrolled subjects have their rows; deleted ones have none, and the change log ends with
/// their deletion (a matcher replaying it from any point ends without them).
async fn check_store(
    cluster: &Cluster,
    state: &BTreeMap<String, Known>,
    anomalies: &mut Vec<Anomaly>,
) -> anyhow::Result<()> {
    let pool =
        sqlx::postgres::PgPoolOptions::new().max_connections(1).connect(&cluster.postgres.url()).await?;
    let gallery: i64 =
        sqlx::query_scalar("SELECT id FROM galleries WHERE name = $1").bind(GALLERY).fetch_one(&pool).await?;
    for (subject, known) in state {
        let rows: i64 = sqlx::query_scalar(
            "SELECT (SELECT COUNT(*) FROM subjects WHERE gallery_id = $1 AND subject_id = $2)
                  + (SELECT COUNT(*) FROM templates WHERE gallery_id = $1 AND subject_id = $2)",
        )
        .bind(gallery)
        .bind(subject)
        .fetch_one(&pool)
        .await?;
        let last: Option<String> = sqlx::query_scalar(
            "SELECT op FROM changes WHERE gallery_id = $1 AND subject_id = $2 ORDER BY seq DESC LIMIT 1",
        )
        .bind(gallery)
        .bind(subject)
        .fetch_optional(&pool)
        .await?;
        match known {
            Known::Enrolled if rows != 2 || last.as_deref() != Some("upsert") => anomalies.push(anomaly(
                "enrolment_missing_from_store",
                format!("{subject}: {rows} rows, last change {last:?}"),
            )),
            Known::Deleted if rows != 0 || last.as_deref() != Some("delete") => anomalies
                .push(anomaly("deletion_left_data", format!("{subject}: {rows} rows, last change {last:?}"))),
            _ => {}
        }
    }
    pool.close().await;
    Ok(())
}

/// Every enrolled subject is found first by the search role and by both replicas of its shard;
/// no deleted subject is found by either. Searches run 8 at a time; matchers are asked in
/// batches of 64 probes, as the search role asks them.
async fn check_searches(
    cluster: &Cluster,
    endpoints: &Endpoints,
    state: &BTreeMap<String, Known>,
    seq: u64,
    anomalies: &mut Vec<Anomaly>,
) -> anyhow::Result<()> {
    let settled: Vec<(String, bool)> = state
        .iter()
        .filter(|(_, k)| **k != Known::Unsure)
        .map(|(s, k)| (s.clone(), *k == Known::Enrolled))
        .collect();
    let mut tasks = tokio::task::JoinSet::new();
    for chunk in settled.chunks(settled.len().div_ceil(8).max(1)) {
        let (chunk, search) = (chunk.to_vec(), SearchServiceClient::new(endpoints.search.clone()));
        let token = endpoints.analyst_token.clone();
        tasks.spawn(async move {
            let mut found_wrong = Vec::new();
            for (subject, found) in chunk {
                let request = IdentifyRequest {
                    gallery: GALLERY.into(),
                    probe: Some(biomatch_proto::embedding_probe(workload::template(&subject))),
                    purpose: crate::cluster::PURPOSE.into(),
                    min_change_seq: seq,
                    ..Default::default()
                };
                let (answer, _) = workload::with_retries(|| {
                    let (mut search, request) =
                        (search.clone(), biomatch_client::request(request.clone(), &token));
                    async move { search.identify(request).await.map(tonic::Response::into_inner) }
                })
                .await;
                let answer =
                    answer.with_context(|| format!("search role, identify {subject} after change {seq}"))?;
                if !workload::ranking_holds(
                    &subject,
                    found,
                    answer.candidates.iter().map(|c| c.subject_id.as_str()),
                ) {
                    let top = answer.candidates.first().map(|c| c.subject_id.as_str());
                    found_wrong.push(if found {
                        anomaly("enrolment_not_findable", format!("{subject}: top candidate {top:?}"))
                    } else {
                        anomaly("deleted_subject_found", format!("{subject} by the search role"))
                    });
                }
            }
            anyhow::Ok(found_wrong)
        });
    }
    while let Some(found_wrong) = tasks.join_next().await {
        anomalies.extend(found_wrong??);
    }
    for replica in 0..4u32 {
        let shard = replica / 2;
        let matcher = MatcherServiceClient::new(biomatch_client::channel(
            &cluster.url(Target::Matcher(replica as usize)),
        )?);
        let mine: Vec<&(String, bool)> = settled
            .iter()
            .filter(|(s, _)| SubjectId::parse(s).is_ok_and(|id| shard_of(&id, SHARDS) == shard))
            .collect();
        for batch in mine.chunks(64) {
            let request = ShardSearchRequest {
                shard: Some(ShardRef { gallery: GALLERY.into(), shard }),
                queries: batch.iter().map(|(s, _)| QueryVector { values: workload::template(s) }).collect(),
                k: 5,
                min_change_seq: seq,
            };
            let service = cluster.service_token()?;
            let (answer, _) = workload::with_retries(|| {
                let (mut matcher, request) =
                    (matcher.clone(), biomatch_client::request(request.clone(), &service));
                async move { matcher.search(request).await.map(tonic::Response::into_inner) }
            })
            .await;
            let answer = answer
                .with_context(|| format!("matcher {replica}, {} probes after change {seq}", batch.len()))?;
            for ((subject, found), result) in batch.iter().zip(&answer.results) {
                if !workload::ranking_holds(
                    subject,
                    *found,
                    result.candidates.iter().map(|c| c.subject_id.as_str()),
                ) {
                    let top = result.candidates.first().map(|c| c.subject_id.as_str());
                    anomalies.push(if *found {
                        anomaly(
                            "replica_missing_enrolment",
                            format!("{subject} on matcher {replica}: {top:?}"),
                        )
                    } else {
                        anomaly("deleted_subject_found", format!("{subject} on matcher {replica}"))
                    });
                }
            }
            if answer.results.len() != batch.len() {
                anomalies.push(anomaly(
                    "replica_short_answer",
                    format!("matcher {replica}: {} results for {} probes", answer.results.len(), batch.len()),
                ));
            }
        }
    }
    Ok(())
}

async fn all_leaves(cluster: &Cluster) -> anyhow::Result<Vec<AuditLeaf>> {
    let token = cluster.token(Role::Auditor, "chaos-auditor", Duration::from_secs(600))?;
    let audit = AuditServiceClient::new(biomatch_client::channel(&cluster.url(Target::Audit))?);
    let mut leaves: Vec<AuditLeaf> = Vec::new();
    // The log as it was at the first read: each read appends a leaf of its own, which the next
    // read would answer, so reading until an empty page would never end.
    let mut size = None;
    loop {
        let request = ListLeavesRequest { start: leaves.len() as u64, count: 1000 };
        let (page, _) = workload::with_retries(|| {
            let (mut audit, request) = (audit.clone(), biomatch_client::request(request, &token));
            async move { audit.list_leaves(request).await.map(tonic::Response::into_inner) }
        })
        .await;
        let page = page?;
        let size = *size.get_or_insert(page.tree_size);
        let before = leaves.len();
        leaves.extend(page.leaves.into_iter().take(usize::try_from(size)?.saturating_sub(before)));
        if leaves.len() as u64 >= size {
            return Ok(leaves);
        }
        anyhow::ensure!(leaves.len() > before, "the audit log answered no leaf at {before} of {size}");
    }
}

/// No leaf missing or duplicated; every acknowledged answer's leaf is where the answer said and
/// records that answer.
fn check_leaves<'a>(leaves: &[AuditLeaf], ops: impl Iterator<Item = &'a Op>, anomalies: &mut Vec<Anomaly>) {
    for (i, leaf) in leaves.iter().enumerate() {
        if leaf.index != i as u64 {
            anomalies.push(anomaly("leaf_out_of_place", format!("position {i} holds leaf {}", leaf.index)));
        }
    }
    let mut answers: HashMap<&str, usize> = HashMap::new();
    for leaf in leaves {
        if let Some(event) = &leaf.event
            && event.outcome == "OK"
            && matches!(event.operation(), Operation::Identify | Operation::Verify)
        {
            *answers.entry(event.request_id.as_str()).or_default() += 1;
        }
    }
    for (request, count) in answers.iter().filter(|(_, c)| **c > 1) {
        anomalies.push(anomaly("duplicate_leaf", format!("search {request} answered in {count} leaves")));
    }
    for op in ops.filter(|o| o.outcome == Outcome::Acked) {
        let Some(index) = op.audit_leaf_index else { continue };
        let Some(event) = leaves.get(index as usize).and_then(|l| l.event.as_ref()) else {
            anomalies.push(anomaly(
                "answer_without_leaf",
                format!("{:?} of {} names leaf {index}, beyond the log", op.kind, op.subject),
            ));
            continue;
        };
        let holds = match op.kind {
            OpKind::Identify | OpKind::IdentifyRest => {
                event.operation() == Operation::Identify
                    && event.request_id == op.request_id
                    && event.outcome == "OK"
            }
            OpKind::Verify => {
                event.operation() == Operation::Verify
                    && event.request_id == op.request_id
                    && event.outcome == "OK"
            }
            OpKind::Enroll => {
                event.operation() == Operation::Enroll
                    && event.subject_ids.contains(&op.subject)
                    && event.outcome == "OK"
            }
            OpKind::Delete => {
                event.operation() == Operation::DeleteSubject
                    && event.subject_ids.contains(&op.subject)
                    && event.outcome == "OK"
            }
        };
        if !holds {
            anomalies.push(anomaly(
                "answer_without_leaf",
                format!(
                    "{:?} of {}: leaf {index} records {:?} {}",
                    op.kind,
                    op.subject,
                    event.operation(),
                    event.outcome
                ),
            ));
        }
    }
}

/// `biomatch audit verify --strict`: the chain, the signed checkpoints, and no change announced
/// without its outcome.
async fn check_audit_verify(cluster: &Cluster, anomalies: &mut Vec<Anomaly>) -> anyhow::Result<()> {
    let token = cluster.token(Role::Auditor, "chaos-auditor", Duration::from_secs(600))?;
    let output = tokio::process::Command::new(cluster.binary())
        .args(["audit", "verify", "--strict"])
        .env("BIOMATCH_ENDPOINT", cluster.url(Target::Audit))
        .env("BIOMATCH_TOKEN", token)
        .output()
        .await?;
    if !output.status.success() {
        anomalies.push(anomaly(
            "audit_verify_failed",
            format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr)),
        ));
    }
    Ok(())
}
