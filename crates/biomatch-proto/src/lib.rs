//! The one biomatch contract: generated protobuf and gRPC code for every service, the mapping of
//! [`biomatch_domain::ErrorClass`] to gRPC and HTTP codes, and the proto <-> domain conversions.
//!
//! Services depend on this crate and talk to each other only through the clients generated here.
#![forbid(unsafe_code)]

mod convert;
mod status;
mod threshold_policy;
mod tuning;
#[cfg(test)]
mod wire_tests;

pub use convert::{
    decision_from_proto, decision_to_proto, embedding_probe, gallery_from_proto, gallery_to_proto,
    index_kind_from_proto, index_kind_to_proto, index_spec_from_proto, index_spec_to_proto,
    millis_from_timestamp, timestamp_from_millis,
};
pub use status::{code_name, http_status, status_from, status_with};
pub use threshold_policy::{
    impostor_tail_from_proto, impostor_tail_to_proto, threshold_policy_from_proto, threshold_policy_to_proto,
};
pub use tuning::{search_tuning_from_proto, search_tuning_to_proto};

#[allow(clippy::all, clippy::unwrap_used, missing_docs)]
pub mod v1 {
    tonic::include_proto!("biomatch.v1");
}

/// The encoded file descriptor set, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("biomatch_descriptor");

/// Every `/package.Service/Method` path of the contract, plus the standard health checks.
pub fn rpc_paths() -> Vec<String> {
    use prost::Message;
    let set = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).unwrap_or_default();
    let mut paths: Vec<String> =
        set.file
            .iter()
            .flat_map(|file| {
                file.service.iter().flat_map(move |service| {
                    service.method.iter().map(move |method| {
                        format!("/{}.{}/{}", file.package(), service.name(), method.name())
                    })
                })
            })
            .collect();
    paths.extend(["/grpc.health.v1.Health/Check".to_owned(), "/grpc.health.v1.Health/Watch".to_owned()]);
    paths
}
