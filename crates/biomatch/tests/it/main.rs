//! The `biomatch` binary run as separate processes (crash, restart, replicas, an insider
//! editing the audit database), gathered into one test binary so it is linked once.

mod common;

mod audit_crash;
mod audit_proofs;
mod audit_tamper;
mod chaos;
mod eval_set;
mod processes;
mod replicas;
