//! The processes a run starts and strikes: biomatch roles, a private PostgreSQL and a private
//! Redis, each on a loopback port fixed for the whole run so that a restarted process is found
//! where the others expect it.

use anyhow::{Context, bail};
use std::fs::{File, OpenOptions};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free loopback port (bound, read and released; the run keeps it for its whole length).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port())
}

/// Waits until something accepts connections on `port`, or fails after `limit`.
pub async fn wait_listening(port: u16, limit: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if Instant::now() > deadline {
            bail!("nothing listens on port {port} after {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

fn log_file(path: &Path) -> anyhow::Result<(File, File)> {
    let out = OpenOptions::new().create(true).append(true).open(path)?;
    Ok((out.try_clone()?, out))
}

fn signal(pid: u32, name: &str) -> anyhow::Result<()> {
    let status = Command::new("kill").arg(format!("-{name}")).arg(pid.to_string()).status()?;
    anyhow::ensure!(status.success(), "kill -{name} {pid} failed");
    Ok(())
}

/// Signals every process of `pids` that still exists, in one `kill` (a backend that ended since
/// it was listed is no error).
fn signal_all(pids: &[u32], name: &str) -> anyhow::Result<()> {
    if !pids.is_empty() {
        Command::new("kill")
            .arg(format!("-{name}"))
            .args(pids.iter().map(u32::to_string))
            .stderr(Stdio::null())
            .status()?;
    }
    Ok(())
}

/// The processes whose parent is `parent`, from `/proc/*/stat` (the field after the command name,
/// which is in parentheses and may itself hold spaces or parentheses).
fn children(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let after_name = &stat[stat.rfind(')')? + 1..];
            let ppid: u32 = after_name.split_whitespace().nth(1)?.parse().ok()?;
            (ppid == parent).then_some(pid)
        })
        .collect()
}

/// A child process started from a fixed command line, which can be killed, paused and started
/// again; its output is appended to one log file across restarts.
pub struct Proc {
    pub name: String,
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log: PathBuf,
    /// The port that accepts connections once the process is ready.
    pub port: u16,
    child: Option<Child>,
}

impl Proc {
    pub fn new(
        name: &str,
        program: &Path,
        args: Vec<String>,
        env: Vec<(String, String)>,
        logs: &Path,
        port: u16,
    ) -> Self {
        let log = logs.join(format!("{name}.log"));
        Self { name: name.to_owned(), program: program.to_owned(), args, env, log, port, child: None }
    }

    /// Starts the process and waits until it listens.
    pub async fn start(&mut self) -> anyhow::Result<()> {
        let (out, err) = log_file(&self.log)?;
        let child = Command::new(&self.program)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("start {}", self.name))?;
        self.child = Some(child);
        wait_listening(self.port, Duration::from_secs(60))
            .await
            .with_context(|| format!("{} did not start", self.name))
    }

    /// SIGKILL, and reap it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether the process started last is still running (not exited).
    pub fn running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The process id of the process started last (after it exited, possibly another's).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn pause(&self) -> anyhow::Result<()> {
        self.signal("STOP")
    }

    pub fn resume(&self) -> anyhow::Result<()> {
        self.signal("CONT")
    }

    fn signal(&self, name: &str) -> anyhow::Result<()> {
        let pid =
            self.child.as_ref().map(Child::id).with_context(|| format!("{} is not running", self.name))?;
        signal(pid, name)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.resume();
        self.kill();
    }
}

/// A PostgreSQL cluster of the run's own (initdb in the work directory), so that restarting it
/// disturbs nobody else. Run as the `postgres` user when the run is root (PostgreSQL refuses root).
pub struct Postgres {
    bin: PathBuf,
    data: PathBuf,
    log: PathBuf,
    pub port: u16,
    as_postgres: bool,
}

impl Postgres {
    /// The newest installed server's binaries, e.g. /usr/lib/postgresql/15/bin.
    pub fn find_bin() -> Option<PathBuf> {
        let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .flatten()
            .map(|e| e.path().join("bin"))
            .filter(|b| b.join("pg_ctl").exists() && b.join("initdb").exists())
            .collect();
        found.sort_by_key(|p| {
            p.parent().and_then(|v| v.file_name()).and_then(|v| v.to_str()?.parse::<u32>().ok())
        });
        found.pop()
    }

    /// Makes a fresh cluster under `dir` and starts it.
    pub fn init(bin: PathBuf, dir: &Path) -> anyhow::Result<Self> {
        let as_postgres = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.trim_ascii() == b"0");
        std::fs::create_dir_all(dir)?;
        if as_postgres {
            // The postgres user must reach its directory through the run's own.
            if let Some(parent) = dir.parent() {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o711))?;
            }
            let status = Command::new("chown").args(["-R", "postgres:postgres"]).arg(dir).status()?;
            anyhow::ensure!(status.success(), "chown {} to postgres failed", dir.display());
        }
        let pg = Self {
            bin,
            data: dir.join("data"),
            log: dir.join("postgres.log"),
            port: free_port()?,
            as_postgres,
        };
        pg.run(
            "initdb",
            &["-D", &pg.data.display().to_string(), "-U", "postgres", "--auth=trust", "-E", "UTF8"],
        )?;
        pg.start()?;
        Ok(pg)
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    pub fn start(&self) -> anyhow::Result<()> {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200",
            self.port,
            self.data.parent().unwrap_or(&self.data).display()
        );
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data.display().to_string(),
                "-l",
                &self.log.display().to_string(),
                "-o",
                &options,
                "-w",
                "-t",
                "60",
                "start",
            ],
        )
    }

    /// An immediate shutdown: no checkpoint, clients cut off, recovery on the next start.
    pub fn crash(&self) -> anyhow::Result<()> {
        self.run("pg_ctl", &["-D", &self.data.display().to_string(), "-m", "immediate", "-w", "stop"])
    }

    /// SIGSTOP to the server, then to every backend (the server first, so none is forked
    /// meanwhile): clients' queries and commits hang, their connections open, as on a hung disk.
    pub fn pause(&self) -> anyhow::Result<()> {
        let server = self.server_pid()?;
        signal(server, "STOP")?;
        signal_all(&children(server), "STOP")
    }

    /// SIGCONT to every backend, then to the server.
    pub fn resume(&self) -> anyhow::Result<()> {
        let server = self.server_pid()?;
        signal_all(&children(server), "CONT")?;
        signal(server, "CONT")
    }

    /// The server's process id, from the first line of `postmaster.pid`.
    fn server_pid(&self) -> anyhow::Result<u32> {
        let text =
            std::fs::read_to_string(self.data.join("postmaster.pid")).context("PostgreSQL is not running")?;
        text.lines().next().and_then(|l| l.trim().parse().ok()).context("postmaster.pid names no process")
    }

    fn run(&self, tool: &str, args: &[&str]) -> anyhow::Result<()> {
        let program = self.bin.join(tool);
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        let output =
            command.args(args).stdin(Stdio::null()).output().with_context(|| format!("run {tool}"))?;
        anyhow::ensure!(
            output.status.success(),
            "{tool} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(())
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // A server left paused (a run cut short) would never see the shutdown signal.
        let _ = self.resume();
        let _ = self.crash();
    }
}

/// A Redis of the run's own, keeping nothing on disk.
pub fn redis(logs: &Path) -> anyhow::Result<Proc> {
    let port = free_port()?;
    let program =
        which("redis-server").context("redis-server is not installed (apt-get install redis-server)")?;
    let args = ["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"];
    Ok(Proc::new("redis", &program, args.iter().map(|s| s.to_string()).collect(), Vec::new(), logs, port))
}

/// `program` on the PATH.
pub fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(program)).find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    #[test]
    fn children_are_found_by_their_parent() {
        let mut child = std::process::Command::new("sleep").arg("30").spawn().expect("spawn sleep");
        let found = super::children(std::process::id());
        let _ = child.kill();
        let _ = child.wait();
        assert!(found.contains(&child.id()), "{found:?} lacks {}", child.id());
    }
}
