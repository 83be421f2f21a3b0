//! `biomatch certs dev`: a development CA and certificates for mutual TLS between roles.

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use std::path::{Path, PathBuf};

/// The files `dev` writes.
#[derive(Debug, Clone)]
pub struct DevCerts {
    pub ca: PathBuf,
    /// Every role's certificate (server and client use), valid for `names`.
    pub node_cert: PathBuf,
    pub node_key: PathBuf,
    /// A client-only certificate for the CLI and tests.
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// One client certificate per kiosk device, named after it (the kiosk's token must name the
    /// same device): `(device, certificate, key)`.
    pub kiosks: Vec<(String, PathBuf, PathBuf)>,
}

fn write(dir: &Path, name: &str, contents: &str, private: bool) -> anyhow::Result<PathBuf> {
    let path = dir.join(name);
    if private {
        crate::identity::write_private(&path, contents)?;
    } else {
        std::fs::write(&path, contents).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(path)
}

/// Writes a new CA, a node certificate for `names` (DNS names or IP addresses), a client
/// certificate and a client certificate for each kiosk of `devices` into `out`. For development
/// and tests only: the CA key is discarded.
pub fn dev(out: &Path, names: &[String], devices: &[String]) -> anyhow::Result<DevCerts> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.distinguished_name.push(DnType::CommonName, "biomatch development CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;

    let leaf = |cn: &str,
                sans: Vec<String>,
                usages: Vec<ExtendedKeyUsagePurpose>|
     -> anyhow::Result<(String, String)> {
        let mut params = CertificateParams::new(sans)?;
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = usages;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &ca)?;
        Ok((cert.pem(), key.serialize_pem()))
    };
    let (node_pem, node_key) = leaf(
        "biomatch node",
        names.to_vec(),
        vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth],
    )?;
    let (client_pem, client_key) =
        leaf("biomatch client", Vec::new(), vec![ExtendedKeyUsagePurpose::ClientAuth])?;
    let mut kiosks = Vec::with_capacity(devices.len());
    for device in devices {
        anyhow::ensure!(
            !device.is_empty() && device.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.'),
            "a kiosk device name is letters, digits, '-' and '.' (got {device:?})"
        );
        let (pem, key) =
            leaf(device.as_str(), vec![device.clone()], vec![ExtendedKeyUsagePurpose::ClientAuth])?;
        kiosks.push((
            device.clone(),
            write(out, &format!("kiosk-{device}.pem"), &pem, false)?,
            write(out, &format!("kiosk-{device}.key.pem"), &key, true)?,
        ));
    }
    Ok(DevCerts {
        kiosks,
        ca: write(out, "ca.pem", &ca.pem(), false)?,
        node_cert: write(out, "node.pem", &node_pem, false)?,
        node_key: write(out, "node.key.pem", &node_key, true)?,
        client_cert: write(out, "client.pem", &client_pem, false)?,
        client_key: write(out, "client.key.pem", &client_key, true)?,
    })
}
