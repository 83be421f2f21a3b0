//! `biomatch chaos`: the seeded fault-injection run of the whole cluster, or with `--soak` a long
//! run without faults that samples every process's resources (crate biomatch-chaos).

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
    /// A soak instead: no faults, each client holding at most `--subjects-per-client` subjects,
    /// every process's memory, open files and sockets and PostgreSQL's connections sampled every
    /// `--sample-seconds`, with each interval's latency.
    #[arg(long, conflicts_with = "plan_only")]
    soak: bool,
    #[arg(long, default_value_t = 60, requires = "soak")]
    sample_seconds: u64,
    #[arg(long, default_value_t = 500, requires = "soak",
          value_parser = clap::value_parser!(u32).range(1..))]
    subjects_per_client: u32,
    /// Also write the soak's samples as CSV here (for `scripts/plot-soak.py`).
    #[arg(long, requires = "soak")]
    csv: Option<PathBuf>,
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
    if args.soak {
        let interval = Duration::from_secs(args.sample_seconds.max(1));
        let report = biomatch_chaos::soak(&config, interval, args.subjects_per_client as usize).await?;
        if let Some(path) = &args.csv {
            std::fs::write(path, report.csv())?;
        }
        if args.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print!("{}", report.table());
        }
        return match report.exited.is_empty() {
            true => Ok(()),
            false => Err(ExitWith(4, format!("role processes exited: {}", report.exited.join(", "))).into()),
        };
    }
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
