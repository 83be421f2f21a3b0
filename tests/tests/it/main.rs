//! The cross-service scenarios, gathered into one test binary so that FAISS, ONNX Runtime and
//! tract are linked once instead of once per file. Each module is one scenario file. Scenarios
//! that read process-wide state have binaries of their own beside this one: `telemetry` and
//! `traces` install the global tracing subscriber, and `budgets` and `operations` read exact
//! values of the process's metrics, which scenarios running beside them would change.

mod at_rest;
mod audit_outage;
mod authorization;
mod backup_restore;
mod bad_input;
mod console;
mod custody_changes;
mod disk_full;
mod fail_closed;
mod galleries;
mod gateway;
mod identify;
mod mtls;
mod no_default_secrets;
mod photos;
mod rest_api;
mod restart;
mod retention;
mod review;
mod search_tuning;
mod snapshots;
mod template_oracle;
mod threshold_policy;
