//! `biomatch chaos`: the seeded fault-injection run of the whole cluster (crate biomatch-chaos).

use super::ExitWith;
use clap::Args;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Args)]
pub struct ChaosArgs {
    /// Seed of the nemesis's plan and the clients' choices; the same seed replays the same plan.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Length of the run in seconds (the checker runs after it).
    #[arg(long, default_value_t = 180)]
    seconds: u64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Where the run keeps its PostgreSQL, keys and process logs [default: a new temporary
    /// directory, kept].
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Print only the nemesis's plan for this seed and length, and run nothing.
    #[arg(long)]
    plan_only: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: ChaosArgs) -> anyhow::Result<()> {
    let duration = Duration::from_secs(args.seconds);
    if args.plan_only {
        println!("{}", serde_json::to_string_pretty(&biomatch_chaos::plan::plan(args.seed, duration))?);
        return Ok(());
    }
    let work_dir = match args.work_dir {
        Some(dir) => dir,
        None => tempfile::Builder::new().prefix("biomatch-chaos-").tempdir()?.keep(),
    };
    eprintln!(
        "chaos: seed {} for {} s; processes' logs under {}",
        args.seed,
        args.seconds,
        work_dir.join("logs").display()
    );
    let config = biomatch_chaos::Config {
        binary: std::env::current_exe()?,
        seed: args.seed,
        duration,
        clients: args.clients,
        work_dir,
    };
    let report = biomatch_chaos::run(&config).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    if report.anomalies.is_empty() {
        Ok(())
    } else {
        Err(ExitWith(4, format!("{} anomalies found", report.anomalies.len())).into())
    }
}
