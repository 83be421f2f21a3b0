//! Mutual TLS for calls between roles and from clients.

use std::path::Path;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

#[derive(Debug, thiserror::Error)]
#[error("cannot read {path}: {source}")]
pub struct TlsFileError {
    path: String,
    source: std::io::Error,
}

fn read(path: &Path) -> Result<Vec<u8>, TlsFileError> {
    std::fs::read(path).map_err(|source| TlsFileError { path: path.display().to_string(), source })
}

/// The CA that signs every role's certificate, and this process's certificate and key (PEM).
#[derive(Debug, Clone)]
pub struct MutualTls {
    ca: Certificate,
    identity: Identity,
}

impl MutualTls {
    pub fn from_files(ca: &Path, cert: &Path, key: &Path) -> Result<Self, TlsFileError> {
        Ok(Self {
            ca: Certificate::from_pem(read(ca)?),
            identity: Identity::from_pem(read(cert)?, read(key)?),
        })
    }

    /// Serve TLS and require a client certificate from this CA.
    pub fn server(&self) -> ServerTlsConfig {
        ServerTlsConfig::new().identity(self.identity.clone()).client_ca_root(self.ca.clone())
    }

    /// Trust only this CA and present our certificate.
    pub fn client(&self) -> ClientTlsConfig {
        ClientTlsConfig::new().ca_certificate(self.ca.clone()).identity(self.identity.clone())
    }
}
