//! Helpers shared by the binary's integration tests.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_biomatch");

/// A `biomatch serve` process, killed when dropped.
pub struct Proc {
    pub child: Child,
    pub addr: String,
}

impl Proc {
    /// SIGKILL, and wait for the process to be gone.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `biomatch serve ARGS` and waits for the line that says where it listens.
pub fn serve(args: &[&str]) -> Proc {
    let mut child = Command::new(BIN)
        .arg("serve")
        .args(args)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn biomatch serve");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("grpc listening addr=").nth(1) {
                let _ = tx.send(rest.split_whitespace().next().unwrap_or_default().to_owned());
            }
        }
    });
    let addr = rx.recv_timeout(Duration::from_secs(60)).expect("process reports its address");
    Proc { child, addr }
}

/// Test keys in `dir`: an issuer for people's tokens (kid `test`), one service key every process
/// signs its calls with (kid `service-all`), and a master key.
pub struct Keys {
    /// The service key pair.
    pub private: std::path::PathBuf,
    pub public: std::path::PathBuf,
    /// The issuer's key pair: it signs people's tokens.
    pub issuer: std::path::PathBuf,
    pub issuer_public: std::path::PathBuf,
    pub master: std::path::PathBuf,
    signer: biomatch_auth::TokenSigner,
    service_signer: biomatch_auth::TokenSigner,
}

impl Keys {
    pub fn new(dir: &std::path::Path) -> Self {
        let (issuer, issuer_public) = biomatch_auth::keys::generate(dir, "test").expect("keys");
        let kid = biomatch_auth::issuers::service_kid(biomatch_auth::issuers::ALL_ROLES);
        let (private, public) = biomatch_auth::keys::generate(dir, &kid).expect("keys");
        let signer = biomatch_auth::TokenSigner::from_file(&issuer, "biomatch", "biomatch").expect("signer");
        let service_signer =
            biomatch_auth::TokenSigner::from_file(&private, "biomatch", "biomatch").expect("signer");
        let master = dir.join("master.key");
        biomatch_crypto::MasterKey::load_or_create(&master).expect("master key");
        Self { private, public, issuer, issuer_public, master, signer, service_signer }
    }

    /// Every public key a process trusts.
    pub fn public_keys(&self) -> Vec<std::path::PathBuf> {
        vec![self.issuer_public.clone(), self.public.clone()]
    }

    /// The `serve` flags that make a process trust and use these keys.
    pub fn flags(&self) -> Vec<String> {
        vec![
            "--public-keys".into(),
            format!("{},{}", self.issuer_public.display(), self.public.display()),
            "--service-key".into(),
            self.private.display().to_string(),
            "--master-key-file".into(),
            self.master.display().to_string(),
        ]
    }

    /// Starts `biomatch serve ARGS` trusting and using these keys.
    pub fn serve(&self, args: &[&str]) -> Proc {
        let flags = self.flags();
        let mut all: Vec<&str> = args.to_vec();
        all.extend(flags.iter().map(String::as_str));
        serve(&all)
    }

    /// A token of `role`; searching roles may send vector probes (as a trusted integration).
    /// A `service` token is signed with the service key (its subject names roles, `biomatch-ROLE`).
    pub fn token(&self, role: biomatch_domain::Role, subject: &str) -> String {
        let mut spec = biomatch_auth::TokenSpec::new(subject, role, Duration::from_secs(600));
        spec.vector_probes = true;
        let signer = if role == biomatch_domain::Role::Service { &self.service_signer } else { &self.signer };
        signer.issue(&spec).expect("token")
    }

    /// A request from `role`.
    pub fn as_role<T>(&self, role: biomatch_domain::Role, message: T) -> tonic::Request<T> {
        let subject = if role == biomatch_domain::Role::Service { "biomatch-all" } else { "someone" };
        biomatch_client::request(message, &self.token(role, subject))
    }
}
