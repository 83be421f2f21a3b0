//! The `biomatch` binary's library half: [`serve::start`] wires the roles a process runs (so tests
//! start real clusters in process on port 0), and [`cli`] holds the client subcommands.
//! `main.rs` only parses arguments and dispatches.
#![forbid(unsafe_code)]

pub mod certs;
pub mod cli;
pub mod identity;
pub mod serve;
pub mod synthetic;
