//! The `biomatch` binary: parses arguments and dispatches to the library.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = biomatch::cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(biomatch::cli::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            match e.downcast_ref::<biomatch::cli::ExitWith>() {
                Some(exit) => ExitCode::from(exit.0),
                None => ExitCode::FAILURE,
            }
        }
    }
}
