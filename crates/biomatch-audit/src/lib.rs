//! The audit role: [`AuditServer`] implements `AuditService` over an [`AuditStore`].
//!
//! `Append` commits a leaf durably (SQLite WAL with full sync, PostgreSQL with synchronous commit)
//! before it answers; callers answer their own clients only after that, so no result leaves
//! unaudited. Reads of the log are themselves appended as `audit_read` leaves. Merkle proofs and
//! signed checkpoints are not implemented yet and answer `UNIMPLEMENTED`.

mod convert;

use biomatch_auditlog::{AuditRecord, chain_hash, leaf_hash};
use biomatch_domain::{Clock, ErrorClass, Principal, Role};
use biomatch_proto::v1::audit_service_server::AuditService;
use biomatch_proto::v1::{
    AppendRequest, AppendResponse, AuditLeaf, Checkpoint, ConsistencyProof, ConsistencyProofRequest,
    GetCheckpointRequest, GetPublicKeyRequest, InclusionProof, InclusionProofRequest, ListLeavesRequest,
    ListLeavesResponse, Operation, PublicKey, QueryAuditRequest, QueryAuditResponse,
};
use biomatch_proto::{status_from, status_with};
use biomatch_store::{AuditLeafRow, AuditQuery, AuditStore, NewAuditLeaf};
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub use convert::{event_to_record, record_to_event};

pub struct AuditServer {
    store: Arc<dyn AuditStore>,
    clock: Clock,
}

impl AuditServer {
    pub fn new(store: Arc<dyn AuditStore>, clock: Clock) -> Self {
        Self { store, clock }
    }

    async fn append_record(
        &self,
        record: AuditRecord,
        idempotency_key: Option<String>,
    ) -> Result<biomatch_store::Written<AuditLeafRow>, Status> {
        let leaf = record.encode();
        let new = NewAuditLeaf {
            leaf_hash: leaf_hash(&leaf),
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
        };
        self.store.append_leaf(new, chain_hash).await.map_err(|e| {
            tracing::error!(error = %e, "audit append failed");
            status_with(ErrorClass::Unavailable, "audit log cannot commit")
        })
    }

    /// Records that `principal` read the log.
    async fn audit_read(&self, principal: &Principal, detail: String) -> Result<(), Status> {
        let mut record = convert::empty_record(principal, Operation::AuditRead, (self.clock)());
        record.detail = detail;
        self.append_record(record, None).await.map(|_| ())
    }
}

fn to_proto_leaf(row: AuditLeafRow) -> AuditLeaf {
    let event = AuditRecord::decode(&row.leaf).ok().map(record_to_event);
    AuditLeaf {
        index: row.index,
        appended_at: Some(biomatch_proto::timestamp_from_millis(row.appended_at_ms)),
        leaf: row.leaf,
        leaf_hash: row.leaf_hash,
        chain_hash: row.chain_hash,
        event,
    }
}

const READERS: &[Role] = &[Role::Auditor, Role::Admin];

#[tonic::async_trait]
impl AuditService for AuditServer {
    async fn append(&self, request: Request<AppendRequest>) -> Result<Response<AppendResponse>, Status> {
        let principal = biomatch_auth::principal(&request)?;
        biomatch_auth::require_role(&principal, &[Role::Service, Role::Admin])?;
        let AppendRequest { event, idempotency_key } = request.into_inner();
        let event = event.ok_or_else(|| status_with(ErrorClass::InvalidArgument, "event is required"))?;
        let record = event_to_record(event, (self.clock)())?;
        let key = (!idempotency_key.is_empty()).then_some(idempotency_key);
        let written = self.append_record(record, key).await?;
        Ok(Response::new(AppendResponse {
            leaf_index: written.value.index,
            leaf_hash: written.value.leaf_hash,
            replayed: written.replayed,
        }))
    }

    async fn query(
        &self,
        request: Request<QueryAuditRequest>,
    ) -> Result<Response<QueryAuditResponse>, Status> {
        let principal = biomatch_auth::principal(&request)?;
        biomatch_auth::require_role(&principal, READERS)?;
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
            from_ms: from.map(|t| biomatch_proto::millis_from_timestamp(&t)),
            to_ms: to.map(|t| biomatch_proto::millis_from_timestamp(&t)),
            after: (page_token > 0).then(|| page_token - 1),
            descending,
            limit: limit + 1,
        };
        self.audit_read(&principal, format!("query page of {limit}")).await?;
        let mut rows = self.store.query_leaves(&query).await.map_err(|e| status_from(&e))?;
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
        biomatch_auth::require_role(&principal, READERS)?;
        let ListLeavesRequest { start, count } = request.into_inner();
        let count = if count == 0 { 1000 } else { count.min(1000) };
        let tree_size = self.store.leaf_count().await.map_err(|e| status_from(&e))?;
        let rows = self.store.leaves(start, count).await.map_err(|e| status_from(&e))?;
        Ok(Response::new(ListLeavesResponse {
            leaves: rows.into_iter().map(to_proto_leaf).collect(),
            tree_size,
        }))
    }

    async fn get_checkpoint(&self, _: Request<GetCheckpointRequest>) -> Result<Response<Checkpoint>, Status> {
        Err(not_yet())
    }

    async fn get_inclusion_proof(
        &self,
        _: Request<InclusionProofRequest>,
    ) -> Result<Response<InclusionProof>, Status> {
        Err(not_yet())
    }

    async fn get_consistency_proof(
        &self,
        _: Request<ConsistencyProofRequest>,
    ) -> Result<Response<ConsistencyProof>, Status> {
        Err(not_yet())
    }

    async fn get_public_key(&self, _: Request<GetPublicKeyRequest>) -> Result<Response<PublicKey>, Status> {
        Err(not_yet())
    }
}

fn not_yet() -> Status {
    status_with(ErrorClass::Unimplemented, "Merkle proofs and signed checkpoints are not implemented yet")
}
