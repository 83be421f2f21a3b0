//! The cluster under test: every role as its own `biomatch serve` process on PostgreSQL and
//! Redis (2 shards x 2 matcher replicas), the keys and tokens its clients use, and the nemesis's
//! hands on each process.

use crate::plan::{FaultKind, Target};
use crate::procs::{Postgres, Proc, free_port, redis};
use biomatch_auth::TokenSigner;
use biomatch_domain::Role;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The gallery every client works in.
pub const GALLERY: &str = "chaos";
pub const SHARDS: u32 = 2;
pub const DIMENSION: u32 = 128;
pub const PURPOSE: &str = "border";

pub struct Cluster {
    /// Role processes by target, started in `Target::ALL` order.
    procs: HashMap<Target, Proc>,
    pub postgres: Postgres,
    redis: Proc,
    pub gateway_http: u16,
    signer: TokenSigner,
    service_signer: TokenSigner,
    binary: PathBuf,
}

impl Cluster {
    /// Starts PostgreSQL, Redis and every role, in that order, under `work`.
    pub async fn start(binary: &Path, postgres_bin: PathBuf, work: &Path) -> anyhow::Result<Self> {
        let logs = work.join("logs");
        std::fs::create_dir_all(&logs)?;
        let postgres = Postgres::init(postgres_bin, &work.join("pg"))?;
        let mut redis = redis(&logs)?;
        redis.start().await?;

        let keys = work.join("keys");
        let (issuer, issuer_public) = biomatch_auth::keys::generate(&keys, "chaos")?;
        let kid = biomatch_auth::issuers::service_kid(biomatch_auth::issuers::ALL_ROLES);
        let (service, service_public) = biomatch_auth::keys::generate(&keys, &kid)?;
        let master = keys.join("master.key");
        biomatch_crypto::MasterKey::load_or_create(&master)?;
        let signer = TokenSigner::from_file(&issuer, "biomatch", "biomatch")?;
        let service_signer = TokenSigner::from_file(&service, "biomatch", "biomatch")?;

        let ports: HashMap<Target, u16> =
            Target::ALL.iter().map(|t| Ok((*t, free_port()?))).collect::<anyhow::Result<_>>()?;
        let url = |t: Target| format!("http://127.0.0.1:{}", ports[&t]);
        let matchers: Vec<String> = (0..4).map(|n| url(Target::Matcher(n))).collect();
        let gateway_http = free_port()?;
        let data = work.join("data");
        let common = [
            "--data-dir".to_owned(),
            data.display().to_string(),
            "--database-url".into(),
            postgres.url(),
            "--redis-url".into(),
            format!("redis://127.0.0.1:{}", redis.port),
            "--public-keys".into(),
            format!("{},{}", issuer_public.display(), service_public.display()),
            "--service-key".into(),
            service.display().to_string(),
            "--master-key-file".into(),
            master.display().to_string(),
        ];
        // Budgets are not what this run is about: a client may search all day.
        let env: Vec<(String, String)> = [
            ("RUST_LOG", "info"),
            ("BIOMATCH__SEARCH__ANALYST_PER_MINUTE", "1000000"),
            ("BIOMATCH__SEARCH__ANALYST_PER_DAY", "100000000"),
            ("BIOMATCH__SEARCH__ENROLLER_PER_MINUTE", "1000000"),
            ("BIOMATCH__SEARCH__ENROLLER_PER_DAY", "100000000"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();

        let mut procs = HashMap::new();
        for target in Target::ALL {
            let role_args: Vec<String> = match target {
                Target::Audit => vec!["--role".into(), "audit".into()],
                Target::Ingest => {
                    vec![
                        "--role".into(),
                        "ingest,embed".into(),
                        "--audit-endpoint".into(),
                        url(Target::Audit),
                    ]
                }
                Target::Matcher(n) => {
                    vec!["--role".into(), "matcher".into(), "--shards".into(), format!("{GALLERY}:{}", n / 2)]
                }
                Target::Search => [
                    "--role",
                    "search",
                    "--audit-endpoint",
                    &url(Target::Audit),
                    "--ingest-endpoint",
                    &url(Target::Ingest),
                    "--embed-endpoint",
                    &url(Target::Ingest),
                    "--matcher-endpoints",
                    &matchers.join(","),
                ]
                .map(str::to_owned)
                .to_vec(),
                Target::Gateway => [
                    "--role",
                    "gateway",
                    "--http-addr",
                    &format!("127.0.0.1:{gateway_http}"),
                    "--search-endpoint",
                    &url(Target::Search),
                    "--ingest-endpoint",
                    &url(Target::Ingest),
                    "--audit-endpoint",
                    &url(Target::Audit),
                ]
                .map(str::to_owned)
                .to_vec(),
            };
            let mut args =
                vec!["serve".to_owned(), "--grpc-addr".into(), format!("127.0.0.1:{}", ports[&target])];
            args.extend(role_args);
            args.extend(common.iter().cloned());
            let mut proc = Proc::new(&target.name(), binary, args, env.clone(), &logs, ports[&target]);
            proc.start().await?;
            if target == Target::Gateway {
                crate::procs::wait_listening(gateway_http, Duration::from_secs(30)).await?;
            }
            procs.insert(target, proc);
        }
        Ok(Self { procs, postgres, redis, gateway_http, signer, service_signer, binary: binary.to_owned() })
    }

    pub fn url(&self, target: Target) -> String {
        format!("http://127.0.0.1:{}", self.procs[&target].port)
    }

    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// A token for a person of `role` (searchers may send vector probes, as a trusted integration).
    pub fn token(&self, role: Role, subject: &str, ttl: Duration) -> anyhow::Result<String> {
        let mut spec = biomatch_auth::TokenSpec::new(subject, role, ttl);
        spec.vector_probes = true;
        Ok(self.signer.issue(&spec)?)
    }

    /// A token of the search role's identity (the checker asks matchers directly).
    pub fn service_token(&self) -> anyhow::Result<String> {
        let spec = biomatch_auth::TokenSpec::new("biomatch-all", Role::Service, Duration::from_secs(600));
        Ok(self.service_signer.issue(&spec)?)
    }

    /// Does the harm `kind` describes.
    pub async fn strike(&mut self, kind: &FaultKind) -> anyhow::Result<()> {
        match kind {
            FaultKind::Kill(t) => self.proc(*t).kill(),
            FaultKind::Pause(t) => self.proc(*t).pause()?,
            FaultKind::RestartPostgres => self.postgres.crash()?,
            FaultKind::PausePostgres => self.postgres.pause()?,
            FaultKind::StopRedis => self.redis.kill(),
        }
        Ok(())
    }

    /// Undoes `kind`: starts again what was killed, resumes what was paused.
    pub async fn heal(&mut self, kind: &FaultKind) -> anyhow::Result<()> {
        match kind {
            FaultKind::Kill(t) => self.proc(*t).start().await,
            FaultKind::Pause(t) => self.proc(*t).resume(),
            FaultKind::RestartPostgres => self.postgres.start(),
            FaultKind::PausePostgres => self.postgres.resume(),
            FaultKind::StopRedis => self.redis.start().await,
        }
    }

    /// Each role process's name and id, in `Target::ALL` order, then Redis's.
    pub fn pids(&self) -> Vec<(String, u32)> {
        let roles = Target::ALL.iter().map(|t| &self.procs[t]);
        roles.chain([&self.redis]).filter_map(|p| Some((p.name.clone(), p.pid()?))).collect()
    }

    /// Every role process still running (none exited by itself during the run).
    pub fn exited(&mut self) -> Vec<String> {
        self.procs.values_mut().filter_map(|p| (!p.running()).then(|| p.name.clone())).collect()
    }

    fn proc(&mut self, target: Target) -> &mut Proc {
        self.procs.get_mut(&target).expect("every target has a process")
    }
}
