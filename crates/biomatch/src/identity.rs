//! Who this process trusts and who it is when it calls other roles.

use anyhow::Context;
use biomatch_auth::{Authenticator, KeySet, ServiceCredentials, TokenSigner, TokenSpec, keys};
use biomatch_config::ServeConfig;
use biomatch_crypto::{FileKeyStore, MasterKey};
use biomatch_domain::Role;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub struct Identity {
    pub auth: Authenticator,
    pub creds: Arc<ServiceCredentials>,
}

/// The store of gallery data keys, under the configured master key (and the previous one while
/// it is rotated out).
pub fn key_store(config: &ServeConfig) -> anyhow::Result<FileKeyStore> {
    let c = &config.crypto;
    let master = match master_key(c.master_key_file.as_deref(), "BIOMATCH_MASTER_KEY")? {
        Some(key) => key,
        None if config.demo() => MasterKey::load_or_create(&config.data_dir.join("master.key"))?,
        None => anyhow::bail!(
            "no master key (crypto.master_key_file or BIOMATCH_MASTER_KEY): outside --role all demo mode \
             biomatch refuses to start without explicitly configured keys"
        ),
    };
    let dir = c.key_dir.clone().unwrap_or_else(|| config.data_dir.join("keys"));
    let store = FileKeyStore::new(&dir, master).context("cannot open the key store")?;
    Ok(match master_key(c.previous_master_key_file.as_deref(), "BIOMATCH_PREVIOUS_MASTER_KEY")? {
        Some(previous) => store.with_previous(previous),
        None => store,
    })
}

/// A master key from `file`, else from the hex in the variable `env`; `None` when neither is set.
pub(crate) fn master_key(file: Option<&Path>, env: &str) -> anyhow::Result<Option<MasterKey>> {
    match (file, std::env::var(env)) {
        (Some(path), _) => {
            Ok(Some(MasterKey::from_file(path).with_context(|| format!("master key {}", path.display()))?))
        }
        (None, Ok(hex)) => Ok(Some(MasterKey::from_hex(&hex).with_context(|| env.to_owned())?)),
        (None, Err(_)) => Ok(None),
    }
}

/// The demo key pair of a data directory, created on first use.
pub fn demo_keys(data_dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    keys::generate(&data_dir.join("jwt"), "demo").context("cannot create the demo signing key")
}

/// Where `serve --role all` writes its administrator token.
pub fn demo_token_path(data_dir: &Path) -> PathBuf {
    data_dir.join("demo-admin.token")
}

pub fn load(config: &ServeConfig) -> anyhow::Result<Identity> {
    let a = &config.auth;
    let mut set = KeySet::default();
    for path in &a.public_keys {
        set.add_pem_file(path)?;
    }
    if let Some(path) = &a.jwks_file {
        set.add_jwks_file(path)?;
    }
    let signer = if config.demo() {
        let (private, public) = demo_keys(&config.data_dir)?;
        set.add_pem_file(&public)?;
        let signer = TokenSigner::from_file(&private, &a.issuer, &a.audience)?;
        let token =
            signer.issue(&TokenSpec::new("demo-admin", Role::Admin, Duration::from_secs(12 * 3600)))?;
        write_private(&demo_token_path(&config.data_dir), &token)?;
        tracing::info!(
            token_file = %demo_token_path(&config.data_dir).display(),
            "demo mode: an admin token valid 12 h is in token_file; export BIOMATCH_TOKEN=$(cat token_file)"
        );
        signer
    } else {
        if set.is_empty() {
            anyhow::bail!(
                "no token keys configured (auth.public_keys or auth.jwks_file): outside --role all demo mode \
                 biomatch refuses to start without explicitly configured keys"
            );
        }
        set.refuse_demo_keys()?;
        let path = a.service_key_file.as_ref().context(
            "auth.service_key_file is required outside demo mode: the key this role signs its calls to other roles with",
        )?;
        let signer = TokenSigner::from_file(path, &a.issuer, &a.audience)?;
        if signer.kid.starts_with("demo") {
            anyhow::bail!("service key {} is a demo key; refused outside demo mode", path.display());
        }
        if set.get(&signer.kid).is_none() {
            anyhow::bail!("the service key's public half ({}) is not among the trusted keys", signer.kid);
        }
        signer
    };
    let roles: Vec<String> = config.roles.iter().map(|r| format!("{r:?}").to_lowercase()).collect();
    let mut key_roles = std::collections::HashMap::new();
    for (kid, names) in &a.key_roles {
        let parsed = names.iter().map(|n| n.parse::<Role>()).collect::<Result<Vec<_>, _>>();
        key_roles.insert(kid.clone(), parsed.context("auth.key_roles")?);
    }
    let identity = Identity {
        auth: Authenticator::new(set, &a.issuer, &a.audience, a.leeway_secs).with_key_roles(key_roles),
        creds: Arc::new(ServiceCredentials::new(signer, &roles.join("+"))),
    };
    // The process's own calls must pass the checks every other role applies to them.
    let own = format!("Bearer {}", identity.creds.token());
    if let Err(refused) = identity
        .auth
        .authenticate_forwarded(|name| (name == biomatch_auth::AUTHORIZATION).then_some(own.as_str()))
    {
        anyhow::bail!(
            "this process's service key cannot sign its own identity ({}): {}; a process key's id must be \
             service-ROLES for the roles it runs (`biomatch token keygen --kid {}`)",
            identity.creds.principal().subject,
            refused.message(),
            biomatch_auth::issuers::service_kid(&roles.join("+")),
        );
    }
    Ok(identity)
}

/// Writes a file only its owner can read (mode 0600 on Unix), atomically.
pub(crate) fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    biomatch_crypto::write_private(path, contents.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}
