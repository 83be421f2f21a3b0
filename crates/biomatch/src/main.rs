//! The `biomatch` binary: parses arguments and dispatches to the library.
#![forbid(unsafe_code)]

use clap::Parser;
use std::os::unix::process::CommandExt;
use std::process::ExitCode;

/// libgomp reads its wait policy once, as the program is loaded. With its default, FAISS's idle
/// OpenMP threads spin after every batch and take the cores from the gRPC work beside them
/// (`matcher.search_threads`). Unless the operator chose a policy, the program starts again, as
/// the same process, with the passive one.
fn with_passive_openmp() {
    const POLICY: &str = "OMP_WAIT_POLICY";
    if std::env::var_os(POLICY).is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else { return };
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_else(|| exe.clone().into_os_string());
    let error = std::process::Command::new(&exe).arg0(arg0).args(args).env(POLICY, "PASSIVE").exec();
    eprintln!("warning: could not restart with {POLICY}=PASSIVE ({error}); OpenMP threads may spin");
}

fn main() -> ExitCode {
    with_passive_openmp();
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
