//! The embed role: `EmbedService` turns photos into faces and templates.
//!
//! No face model is wired in yet, so both RPCs answer `UNIMPLEMENTED` with a message saying what
//! works instead (sending embeddings). Galleries and probes built from vectors work end to end.

use biomatch_client::Guard;
use biomatch_domain::{ErrorClass, Role};
use biomatch_proto::status_with;
use biomatch_proto::v1::embed_service_server::EmbedService;
use biomatch_proto::v1::{DescribeModelRequest, EmbedRequest, EmbedResponse, ModelInfo};
use tonic::{Request, Response, Status};

pub struct EmbedServer {
    guard: Guard,
}

impl EmbedServer {
    pub fn new(guard: Guard) -> Self {
        Self { guard }
    }
}

/// Photos reach the embed role only through ingest and search.
const CALLERS: &[Role] = &[Role::Service];

fn not_yet() -> Status {
    status_with(
        ErrorClass::Unimplemented,
        "face detection and embedding from images is not implemented yet: send an embedding instead",
    )
}

#[tonic::async_trait]
impl EmbedService for EmbedServer {
    async fn embed(&self, request: Request<EmbedRequest>) -> Result<Response<EmbedResponse>, Status> {
        self.guard.require(&biomatch_auth::principal(&request)?, CALLERS, "EmbedService/Embed").await?;
        Err(not_yet())
    }

    async fn describe_model(
        &self,
        request: Request<DescribeModelRequest>,
    ) -> Result<Response<ModelInfo>, Status> {
        self.guard
            .require(&biomatch_auth::principal(&request)?, CALLERS, "EmbedService/DescribeModel")
            .await?;
        Err(not_yet())
    }
}
