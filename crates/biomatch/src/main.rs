//! The `biomatch` binary: parses arguments and dispatches to the library.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    // FAISS's OpenMP threads and OpenBLAS's own threads oversubscribe the cores when both run at
    // their defaults; pin both before any thread starts (an operator's explicit setting wins).
    for var in ["OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"] {
        if std::env::var_os(var).is_none() {
            // SAFETY: the process is still single-threaded here.
            unsafe { std::env::set_var(var, "1") };
        }
    }
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
