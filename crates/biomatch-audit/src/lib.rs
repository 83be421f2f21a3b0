//! The audit role: [`AuditServer`] implements `AuditService` over an [`AuditStore`].
//!
//! `Append` answers only after its leaf is durably committed (SQLite WAL with full sync, PostgreSQL
//! with synchronous commit); concurrent appends share one commit (group commit). Leaves form an
//! RFC 6962 Merkle tree held in memory (rebuilt from the stored leaf hashes at start), so roots and
//! proofs at any size cost O(log n); its heads are signed as C2SP checkpoints every
//! `checkpoint_interval` when new leaves exist, and on demand. Every read of the log (`Query`,
//! `ListLeaves`) is itself appended as an `audit_read` leaf saying what was read (the filters, or
//! the range), committed before the answer leaves; a read that cannot be recorded is refused. At
//! start the log since the latest signed checkpoint is checked (see [`Log::open`]). Which roles may
//! call each RPC is the authorization table's rule ([`biomatch_auth::policy`]), applied before a
//! handler runs; `Append` further limits each service to the leaf kinds it writes (`writers.rs`).
#![forbid(unsafe_code)]

mod convert;
pub mod keys;
mod log;
mod writers;

pub use convert::{event_to_record, record_to_event};
pub use log::{Log, Timing};

use biomatch_auditlog::AuditRecord;
use biomatch_auditlog::checkpoint::key_id;
use biomatch_domain::{Clock, ErrorClass, Principal};
use biomatch_proto::v1::audit_service_server::AuditService;
use biomatch_proto::v1::{
    AppendRequest, AppendResponse, AuditLeaf, Checkpoint, ConsistencyProof, ConsistencyProofRequest,
    GetCheckpointRequest, GetPublicKeyRequest, GetSearchRecordRequest, InclusionProof, InclusionProofRequest,
    ListCaseRecordsRequest, ListCheckpointsRequest, ListCheckpointsResponse, ListLeavesRequest,
    ListLeavesResponse, ListReviewsRequest, ListReviewsResponse, Operation, PublicKey, QueryAuditRequest,
    QueryAuditResponse,
};
use biomatch_proto::{status_from, status_with, timestamp_from_millis};
use biomatch_store::{AuditLeafRow, AuditQuery, CheckpointRow, NewAuditLeaf};
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct AuditServer {
    log: Arc<Log>,
    clock: Clock,
}

impl AuditServer {
    pub fn new(log: Arc<Log>, clock: Clock) -> Self {
        Self { log, clock }
    }

    async fn append_record(
        &self,
        record: AuditRecord,
        idempotency_key: Option<String>,
    ) -> Result<(u64, Vec<u8>, bool), Status> {
        let new = new_leaf(&record, idempotency_key);
        let written = self.log.append(new).await.map_err(|e| {
            if e.is_storage_full() {
                status_with(ErrorClass::ResourceExhausted, "audit log storage is full: nothing was recorded")
            } else {
                status_with(ErrorClass::Unavailable, "audit log cannot commit")
            }
        })?;
        Ok((written.value.index, written.value.leaf_hash, written.replayed))
    }

    /// Records that `principal` read the log.
    async fn audit_read(&self, principal: &Principal, detail: String) -> Result<(), Status> {
        let mut record = convert::empty_record(principal, Operation::AuditRead, (self.clock)());
        record.detail = detail;
        self.append_record(record, None).await.map(|_| ())
    }

    /// A `PERMISSION_DENIED` answer, recorded as an `access_denied` leaf first (best effort).
    async fn refuse(&self, principal: &Principal, what: String) -> Status {
        let mut record = convert::empty_record(principal, Operation::AccessDenied, (self.clock)());
        record.outcome = "PERMISSION_DENIED".into();
        record.detail = what.clone();
        if self.append_record(record, None).await.is_err() {
            tracing::warn!("a refusal could not be audited");
        }
        status_with(ErrorClass::PermissionDenied, what)
    }

    fn to_proto_checkpoint(&self, row: CheckpointRow) -> Checkpoint {
        let signature = row.note.rsplit(' ').next().unwrap_or_default().trim().to_owned();
        Checkpoint {
            origin: self.log.origin().to_owned(),
            tree_size: row.tree_size,
            root_hash: row.root_hash,
            signature: signature.into_bytes(),
            signed_at: Some(timestamp_from_millis(row.signed_at_ms)),
            note: row.note,
        }
    }

    /// The tree size a proof is asked for: 0 means the latest checkpoint's.
    async fn proof_size(&self, size: u64) -> Result<u64, Status> {
        if size > 0 {
            return Ok(size);
        }
        let latest = self.log.store().latest_checkpoint().await.map_err(|e| status_from(&e))?;
        latest
            .map(|c| c.tree_size)
            .ok_or_else(|| status_with(ErrorClass::FailedPrecondition, "no checkpoint has been signed yet"))
    }
}

/// The row that records `record`: its canonical bytes, their hash, and the columns reads filter on.
pub fn new_leaf(record: &AuditRecord, idempotency_key: Option<String>) -> NewAuditLeaf {
    let leaf = record.encode();
    NewAuditLeaf {
        leaf_hash: biomatch_auditlog::leaf_hash(&leaf).to_vec(),
        leaf,
        idempotency_key,
        appended_at_ms: record.time_ms,
        actor_subject: record.actor_subject.clone(),
        operation: record.operation.clone(),
        gallery: record.gallery.clone(),
        subject_ids: record
            .subject_ids
            .iter()
            .chain(record.candidates.iter().map(|c| &c.subject_id))
            .cloned()
            .collect(),
        case_ref: record.case_ref.clone(),
        request_id: record.request_id.clone(),
    }
}

fn to_proto_leaf(row: AuditLeafRow) -> AuditLeaf {
    let event = AuditRecord::decode(&row.leaf).ok().map(record_to_event);
    AuditLeaf {
        index: row.index,
        appended_at: Some(timestamp_from_millis(row.appended_at_ms)),
        leaf: row.leaf,
        leaf_hash: row.leaf_hash,
        chain_hash: row.chain_hash,
        event,
    }
}

fn proof_error(e: log::ProofFailure) -> Status {
    match e {
        // Not expected (a proof asks again once each chunk it names is loaded); not the caller's fault.
        log::ProofFailure::Proof(e @ biomatch_auditlog::merkle::ProofError::NotLoaded { .. }) => {
            status_with(ErrorClass::Unavailable, e.to_string())
        }
        log::ProofFailure::Proof(e) => status_with(ErrorClass::InvalidArgument, e.to_string()),
        log::ProofFailure::Store(e) => status_from(&e),
    }
}

#[tonic::async_trait]
impl AuditService for AuditServer {
    async fn append(&self, request: Request<AppendRequest>) -> Result<Response<AppendResponse>, Status> {
        let principal = biomatch_auth::principal(&request)?;
        let AppendRequest { event, idempotency_key } = request.into_inner();
        let operation = event.as_ref().map(|e| e.operation()).unwrap_or_default();
        if !writers::may_write(&principal.subject, operation) {
            let what = format!("service {} may not record {operation:?} leaves", principal.subject);
            return Err(self.refuse(&principal, what).await);
        }
        let event = event.ok_or_else(|| status_with(ErrorClass::InvalidArgument, "event is required"))?;
        let record = event_to_record(event, (self.clock)())?;
        let key = (!idempotency_key.is_empty()).then_some(idempotency_key);
        let (leaf_index, leaf_hash, replayed) = self.append_record(record, key).await?;
        Ok(Response::new(AppendResponse { leaf_index, leaf_hash, replayed }))
    }

    async fn query(
        &self,
        request: Request<QueryAuditRequest>,
    ) -> Result<Response<QueryAuditResponse>, Status> {
        let principal = biomatch_auth::principal(&request)?;
        let QueryAuditRequest {
            actor_subject,
            operation,
            gallery,
            subject_id,
            from,
            to,
            page_size,
            page_token,
            descending,
            case_ref,
        } = request.into_inner();
        let operation = match Operation::try_from(operation).unwrap_or_default() {
            Operation::Unspecified => String::new(),
            op => convert::operation_name(op).to_owned(),
        };
        let limit = if page_size == 0 { 100 } else { page_size.min(1000) };
        let query = AuditQuery {
            actor_subject,
            operation,
            gallery,
            subject_id,
            case_ref,
            request_id: String::new(),
            from_ms: from.map(|t| biomatch_proto::millis_from_timestamp(&t)),
            to_ms: to.map(|t| biomatch_proto::millis_from_timestamp(&t)),
            after: (page_token > 0).then(|| page_token - 1),
            descending,
            limit: limit + 1,
        };
        // What was searched for, exactly as the store is asked: identifiers and times only.
        let detail = serde_json::json!({
            "rpc": "Query",
            "actor_subject": query.actor_subject,
            "operation": query.operation,
            "gallery": query.gallery,
            "subject_id": query.subject_id,
            "case_ref": query.case_ref,
            "from_ms": query.from_ms,
            "to_ms": query.to_ms,
            "page_token": page_token,
            "descending": query.descending,
            "page_size": limit,
        });
        self.audit_read(&principal, detail.to_string()).await?;
        let mut rows = self.log.store().query_leaves(&query).await.map_err(|e| status_from(&e))?;
        let has_more = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        // The token is the last index + 1 so that 0 can mean "from the start".
        let next_page_token = if has_more { rows.last().map_or(0, |r| r.index + 1) } else { 0 };
        Ok(Response::new(QueryAuditResponse {
            leaves: rows.into_iter().map(to_proto_leaf).collect(),
            next_page_token,
            has_more,
        }))
    }

    async fn list_leaves(
        &self,
        request: Request<ListLeavesRequest>,
    ) -> Result<Response<ListLeavesResponse>, Status> {
        let principal = biomatch_auth::principal(&request)?;
        let ListLeavesRequest { start, count } = request.into_inner();
        let count = if count == 0 { 1000 } else { count.min(1000) };
        // The read covers only leaves committed before its own leaf: the leaf names exactly the
        // range answered, and a reader at the end of the log is not chasing its own reads.
        let tree_size = self.log.size();
        let end = tree_size.min(start.saturating_add(u64::from(count)));
        let count = u32::try_from(end.saturating_sub(start)).unwrap_or(0);
        let detail = serde_json::json!({
            "rpc": "ListLeaves",
            "start": start,
            "count": count,
            "tree_size": tree_size,
        });
        // Committed before any leaf leaves: if it cannot be, the caller gets UNAVAILABLE and no data.
        self.audit_read(&principal, detail.to_string()).await?;
        let rows = match count {
            0 => Vec::new(),
            n => self.log.store().leaves(start, n).await.map_err(|e| status_from(&e))?,
        };
        Ok(Response::new(ListLeavesResponse {
            // Within the range recorded even where a gap (a deleted row) would let more through.
            leaves: rows.into_iter().filter(|r| r.index < end).map(to_proto_leaf).collect(),
            tree_size,
        }))
    }

    async fn get_checkpoint(
        &self,
        request: Request<GetCheckpointRequest>,
    ) -> Result<Response<Checkpoint>, Status> {
        biomatch_auth::principal(&request)?;
        let row = if request.get_ref().sign_now {
            Some(self.log.sign_checkpoint().await.map_err(|e| status_from(&e))?)
        } else {
            self.log.store().latest_checkpoint().await.map_err(|e| status_from(&e))?
        };
        let row =
            row.ok_or_else(|| status_with(ErrorClass::NotFound, "no checkpoint has been signed yet"))?;
        Ok(Response::new(self.to_proto_checkpoint(row)))
    }

    async fn list_checkpoints(
        &self,
        request: Request<ListCheckpointsRequest>,
    ) -> Result<Response<ListCheckpointsResponse>, Status> {
        biomatch_auth::principal(&request)?;
        let ListCheckpointsRequest { after_size, count } = request.into_inner();
        let count = if count == 0 { 1000 } else { count.min(10_000) };
        let rows = self.log.store().checkpoints(after_size, count).await.map_err(|e| status_from(&e))?;
        Ok(Response::new(ListCheckpointsResponse {
            checkpoints: rows.into_iter().map(|r| self.to_proto_checkpoint(r)).collect(),
        }))
    }

    async fn get_inclusion_proof(
        &self,
        request: Request<InclusionProofRequest>,
    ) -> Result<Response<InclusionProof>, Status> {
        biomatch_auth::principal(&request)?;
        let InclusionProofRequest { leaf_index, tree_size } = request.into_inner();
        let tree_size = self.proof_size(tree_size).await?;
        let hashes = self.log.inclusion_proof(leaf_index, tree_size).await.map_err(proof_error)?;
        Ok(Response::new(InclusionProof {
            leaf_index,
            tree_size,
            hashes: hashes.iter().map(|h| h.to_vec()).collect(),
        }))
    }

    async fn get_consistency_proof(
        &self,
        request: Request<ConsistencyProofRequest>,
    ) -> Result<Response<ConsistencyProof>, Status> {
        biomatch_auth::principal(&request)?;
        let ConsistencyProofRequest { from_size, to_size } = request.into_inner();
        let to_size = self.proof_size(to_size).await?;
        let hashes = self.log.consistency_proof(from_size, to_size).await.map_err(proof_error)?;
        Ok(Response::new(ConsistencyProof {
            from_size,
            to_size,
            hashes: hashes.iter().map(|h| h.to_vec()).collect(),
        }))
    }

    async fn get_public_key(
        &self,
        request: Request<GetPublicKeyRequest>,
    ) -> Result<Response<PublicKey>, Status> {
        biomatch_auth::principal(&request)?;
        let key = self.log.key().verifying_key();
        Ok(Response::new(PublicKey {
            algorithm: "Ed25519".into(),
            key: key.as_bytes().to_vec(),
            key_id: hex::encode(key_id(self.log.origin(), &key)),
            origin: self.log.origin().to_owned(),
        }))
    }

    async fn get_search_record(
        &self,
        request: Request<GetSearchRecordRequest>,
    ) -> Result<Response<AuditLeaf>, Status> {
        biomatch_auth::principal(&request)?;
        let GetSearchRecordRequest { search_id } = request.into_inner();
        let store = self.log.store();
        // The search role appends an answered search under `identify:ID` or `verify:ID`.
        for key in [format!("identify:{search_id}"), format!("verify:{search_id}")] {
            if let Some(row) = store.leaf_by_key(&key).await.map_err(|e| status_from(&e))? {
                return Ok(Response::new(to_proto_leaf(row)));
            }
        }
        Err(status_with(ErrorClass::NotFound, format!("no search {search_id:?} is on record")))
    }

    async fn list_reviews(
        &self,
        request: Request<ListReviewsRequest>,
    ) -> Result<Response<ListReviewsResponse>, Status> {
        biomatch_auth::principal(&request)?;
        let ListReviewsRequest { search_id, gallery, subject_id } = request.into_inner();
        if gallery.is_empty() || (search_id.is_empty() && !subject_id.is_empty()) {
            let what = "gallery is required, and subject_id needs a search_id";
            return Err(status_with(ErrorClass::InvalidArgument, what));
        }
        let store = self.log.store();
        let is_review = |leaf: &AuditLeaf| {
            leaf.event.as_ref().is_some_and(|e| {
                e.outcome == "OK"
                    && (search_id.is_empty() || e.request_id == search_id)
                    && (subject_id.is_empty() || e.subject_ids.contains(&subject_id))
            })
        };
        if search_id.is_empty() {
            // The review queue's view: the gallery's latest reviews, oldest first.
            let query = AuditQuery {
                operation: convert::operation_name(Operation::Review).to_owned(),
                gallery,
                descending: true,
                limit: 1000,
                ..AuditQuery::default()
            };
            let mut rows = store.query_leaves(&query).await.map_err(|e| status_from(&e))?;
            rows.truncate(1000);
            rows.reverse();
            let reviews = rows.into_iter().map(to_proto_leaf).filter(is_review).collect();
            return Ok(Response::new(ListReviewsResponse { reviews }));
        }
        // Every review of this search (of one subject: found by the subject index, which leaves
        // written before the request id column also have), page by page.
        let mut reviews = Vec::new();
        let mut after = None;
        loop {
            let query = AuditQuery {
                operation: convert::operation_name(Operation::Review).to_owned(),
                gallery: gallery.clone(),
                subject_id: subject_id.clone(),
                request_id: if subject_id.is_empty() { search_id.clone() } else { String::new() },
                after,
                limit: 1000,
                ..AuditQuery::default()
            };
            let rows = store.query_leaves(&query).await.map_err(|e| status_from(&e))?;
            let last = rows.last().map(|r| r.index);
            let full = rows.len() == 1000;
            reviews.extend(rows.into_iter().map(to_proto_leaf).filter(is_review));
            match last {
                Some(index) if full => after = Some(index),
                _ => break,
            }
        }
        Ok(Response::new(ListReviewsResponse { reviews }))
    }

    async fn list_case_records(
        &self,
        request: Request<ListCaseRecordsRequest>,
    ) -> Result<Response<QueryAuditResponse>, Status> {
        biomatch_auth::principal(&request)?;
        let ListCaseRecordsRequest { case_ref, page_size, page_token } = request.into_inner();
        if case_ref.is_empty() {
            return Err(status_with(ErrorClass::InvalidArgument, "case_ref is required"));
        }
        let limit = if page_size == 0 { 100 } else { page_size.min(100) };
        let searches = [Operation::Identify, Operation::Verify].map(convert::operation_name);
        // Scans the case's leaves (its searches, reviews and reads) until a page of answered
        // searches is full or the case ends.
        let mut leaves = Vec::new();
        let mut after = (page_token > 0).then(|| page_token - 1);
        let has_more = loop {
            let query =
                AuditQuery { case_ref: case_ref.clone(), after, limit: 1000, ..AuditQuery::default() };
            let rows = self.log.store().query_leaves(&query).await.map_err(|e| status_from(&e))?;
            let full = rows.len() == 1000;
            for row in rows {
                after = Some(row.index);
                let leaf = to_proto_leaf(row);
                let answered = leaf.event.as_ref().is_some_and(|e| {
                    e.outcome == "OK" && searches.contains(&convert::operation_name(e.operation()))
                });
                if answered {
                    leaves.push(leaf);
                    if leaves.len() == limit as usize {
                        break;
                    }
                }
            }
            if leaves.len() == limit as usize || !full {
                break leaves.len() == limit as usize;
            }
        };
        let next_page_token = match (has_more, leaves.last()) {
            (true, Some(last)) => last.index + 1,
            _ => 0,
        };
        Ok(Response::new(QueryAuditResponse { leaves, next_page_token, has_more }))
    }
}
