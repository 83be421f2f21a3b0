//! A kiosk's device bound to its client certificate. With mutual TLS on, a kiosk token counts
//! only on the connection of the device it names: the token's `device` claim must be the
//! common name or a DNS name of the client certificate the connection was made with. A token
//! lifted from one lane cannot be replayed from another machine or from a lane with another
//! certificate, and every leaf's `device` is the certificate's, not merely the token's say-so.
//! Without TLS there is no certificate to bind to and the claim is only recorded.

use crate::policy::Denied;
use biomatch_domain::{Principal, Role};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// The names a client certificate (DER) was issued for: its subject's common names and its
/// DNS subject alternative names. An unreadable certificate names nothing.
pub fn certificate_names(der: &[u8]) -> Vec<String> {
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        return Vec::new();
    };
    let mut names: Vec<String> =
        cert.subject().iter_common_name().filter_map(|cn| cn.as_str().ok()).map(str::to_owned).collect();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        names.extend(san.value.general_names.iter().filter_map(|name| match name {
            GeneralName::DNSName(dns) => Some((*dns).to_owned()),
            _ => None,
        }));
    }
    names
}

/// Checks a principal against the client certificate its connection presented (`leaf`, DER;
/// `None` without TLS). `required`: the server runs mutual TLS, so a kiosk without a certificate
/// (connect information lost, TLS ended in front of the process) is refused rather than let
/// through unbound. Only kiosks are bound: people's roles use operators' tools and services have
/// their own keys.
pub fn check(principal: &Principal, leaf: Option<&[u8]>, required: bool) -> Result<(), Denied> {
    if principal.role != Role::Kiosk {
        return Ok(());
    }
    let Some(leaf) = leaf else {
        if required {
            return Err(Denied("a kiosk must connect with its own client certificate".to_owned()));
        }
        return Ok(());
    };
    if principal.device.is_empty() {
        return Err(Denied(
            "a kiosk token must name its device (claim `device`) when mutual TLS is on".to_owned(),
        ));
    }
    let names = certificate_names(leaf);
    if names.iter().any(|name| name.eq_ignore_ascii_case(&principal.device)) {
        Ok(())
    } else {
        Err(Denied(format!(
            "kiosk token for device {:?} was presented with a client certificate for {}",
            principal.device,
            if names.is_empty() { "no name".to_owned() } else { names.join(", ") }
        )))
    }
}
