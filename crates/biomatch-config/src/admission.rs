//! Admission control of a process's gRPC server (issue 19: overload sheds, it does not fall over).

use serde::{Deserialize, Serialize};

/// Per gRPC service, each bounded alone: at most `max_in_flight` calls are served at once and
/// `max_waiting` more wait for a turn, each for no longer than its caller's deadline or
/// `max_wait_ms`; the rest are refused at once with `RESOURCE_EXHAUSTED`. Health checks are never
/// refused. The `max_*` bounds are the front doors' (search, ingest, embed); the `internal_*`
/// ones are the matcher's and the audit log's, which every admitted search and change calls, so
/// they must hold all the front doors' admitted calls (of every replica) at once. The front
/// doors' defaults are from `biomatch bench overload` (docs/reliability.md): of the bounds tried,
/// they answered the most within deadline at 10x load. With `adaptive` the front doors'
/// `max_in_flight` is a ceiling and the number of calls served at once follows their latency
/// (see `biomatch_telemetry`'s admission layer): admitted calls are answered about four times
/// sooner under overload, and about a third fewer are answered (docs/reliability.md), so it is
/// the operator's choice, off by default.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdmissionConfig {
    pub max_in_flight: usize,
    pub max_waiting: usize,
    pub max_wait_ms: u64,
    pub internal_max_in_flight: usize,
    pub internal_max_waiting: usize,
    pub internal_max_wait_ms: u64,
    /// Whether the front doors' in-flight bound adapts to latency (up to `max_in_flight`).
    pub adaptive: bool,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        Self {
            max_in_flight: 16,
            max_waiting: 16,
            max_wait_ms: 20,
            internal_max_in_flight: 256,
            internal_max_waiting: 1024,
            internal_max_wait_ms: 1_000,
            adaptive: false,
        }
    }
}
