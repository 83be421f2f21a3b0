//! Admission control of a process's gRPC server (issue 19: overload sheds, it does not fall over).

use serde::{Deserialize, Serialize};

/// Per gRPC service (search, matcher, audit, ingest, embed, each bounded alone): at most
/// `max_in_flight` calls are served at once and `max_waiting` more wait for a turn, each
/// for no longer than its caller's deadline or `max_wait_ms`; the rest are refused at once with
/// `RESOURCE_EXHAUSTED`. Health checks are never refused.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdmissionConfig {
    pub max_in_flight: usize,
    pub max_waiting: usize,
    pub max_wait_ms: u64,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        Self { max_in_flight: 256, max_waiting: 512, max_wait_ms: 1_000 }
    }
}
