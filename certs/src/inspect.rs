//! Reading certificates back: what a PEM certificate says (names, validity, CA flag), whether it is due for
//! rotation, and whether a serving certificate and key still work for a host name under a CA.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

use crate::error::CertError;

/// What a certificate says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub subject_common_name: Option<String>,
    pub issuer_common_name: Option<String>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// DNS subject alternative names, in certificate order.
    pub dns_names: Vec<String>,
    /// IP address subject alternative names, in certificate order.
    pub ip_addresses: Vec<IpAddr>,
    pub is_ca: bool,
}

impl CertInfo {
    /// True when the certificate should be replaced at `now`: it expires within `lookahead`, or it is not valid
    /// yet (a clock jump backwards, or a certificate from elsewhere).
    pub fn needs_rotation(&self, now: SystemTime, lookahead: Duration) -> bool {
        if now < self.not_before {
            return true;
        }
        match now.checked_add(lookahead) {
            Some(deadline) => deadline >= self.not_after,
            None => true,
        }
    }
}
/// Names and validity of the first certificate in `cert_pem`.
pub fn inspect(cert_pem: &str) -> Result<CertInfo, CertError> {
    let der = first_cert_der("certificate", cert_pem)?;
    info_from_der("certificate", &der)
}

/// [`CertInfo::needs_rotation`] for the first certificate in `cert_pem`.
pub fn needs_rotation(cert_pem: &str, now: SystemTime, lookahead: Duration) -> Result<bool, CertError> {
    Ok(inspect(cert_pem)?.needs_rotation(now, lookahead))
}

/// Checks, as a TLS client trusting only `ca_cert_pem` would at time `now`, that the serving certificate in
/// `cert_pem` is valid for `server_name` (a DNS name or an IP address), and that `key_pem` is its private key.
/// Intermediate certificates after the first one in `cert_pem` are used for path building.
pub fn verify_serving_cert(
    ca_cert_pem: &str,
    cert_pem: &str,
    key_pem: &str,
    server_name: &str,
    now: SystemTime,
) -> Result<(), CertError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for der in all_cert_ders("CA certificate", ca_cert_pem)? {
        roots.add(der).map_err(|e| CertError::InvalidCertificate {
            field: "CA certificate",
            reason: format!("not usable as a trust anchor: {e}"),
        })?;
    }
    let mut chain = all_cert_ders("serving certificate", cert_pem)?;
    let end_entity = chain.remove(0);
    let name = ServerName::try_from(server_name.to_string()).map_err(|_| CertError::InvalidName {
        name: server_name.to_string(),
        reason: "not a DNS name or an IP address".into(),
    })?;
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| CertError::InvalidCertificate {
            field: "CA certificate",
            reason: format!("cannot build a verifier: {e}"),
        })?;
    let since_epoch = now.duration_since(SystemTime::UNIX_EPOCH).unwrap_or(Duration::ZERO);
    verifier
        .verify_server_cert(&end_entity, &chain, &name, &[], UnixTime::since_unix_epoch(since_epoch))
        .map_err(|e| CertError::Untrusted {
            server_name: server_name.to_string(),
            reason: e.to_string(),
        })?;

    const KEY_FIELD: &str = "serving private key";
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|_| CertError::InvalidKey {
        field: KEY_FIELD,
        reason: "no PEM private key found".into(),
    })?;
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|_| CertError::InvalidKey {
            field: KEY_FIELD,
            reason: "not a private key of a supported type".into(),
        })?;
    rustls::sign::CertifiedKey::new(vec![end_entity], signing_key)
        .keys_match()
        .map_err(|_| CertError::KeyMismatch {
            cert_field: "the serving certificate",
            key_field: KEY_FIELD,
        })
}
fn all_cert_ders(field: &'static str, pem: &str) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertError::InvalidCertificate {
            field,
            reason: format!("invalid PEM: {e}"),
        })?;
    if certs.is_empty() {
        return Err(CertError::InvalidCertificate {
            field,
            reason: "no PEM certificate (-----BEGIN CERTIFICATE-----) found".into(),
        });
    }
    Ok(certs)
}

pub(crate) fn first_cert_der(field: &'static str, pem: &str) -> Result<CertificateDer<'static>, CertError> {
    let mut certs = all_cert_ders(field, pem)?;
    Ok(certs.swap_remove(0))
}

pub(crate) fn info_from_der(field: &'static str, der: &[u8]) -> Result<CertInfo, CertError> {
    Ok(info_from_x509(&parse_x509(field, der)?))
}

/// `der` as an X.509 certificate; `field` names it in the error.
pub(crate) fn parse_x509<'d>(field: &'static str, der: &'d [u8]) -> Result<X509Certificate<'d>, CertError> {
    let (_, x509) = x509_parser::parse_x509_certificate(der).map_err(|e| CertError::InvalidCertificate {
        field,
        reason: format!("not a valid X.509 certificate: {e}"),
    })?;
    Ok(x509)
}

pub(crate) fn info_from_x509(x509: &X509Certificate<'_>) -> CertInfo {
    let common_name = |name: &x509_parser::x509::X509Name<'_>| {
        name.iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_string)
    };
    let mut dns_names = Vec::new();
    let mut ip_addresses = Vec::new();
    if let Ok(Some(san)) = x509.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(dns) => dns_names.push((*dns).to_string()),
                GeneralName::IPAddress(bytes) => {
                    if let Ok(v4) = <[u8; 4]>::try_from(*bytes) {
                        ip_addresses.push(IpAddr::from(v4));
                    } else if let Ok(v6) = <[u8; 16]>::try_from(*bytes) {
                        ip_addresses.push(IpAddr::from(v6));
                    }
                }
                _ => {}
            }
        }
    }
    let validity = x509.validity();
    CertInfo {
        subject_common_name: common_name(x509.subject()),
        issuer_common_name: common_name(x509.issuer()),
        not_before: system_time(validity.not_before.timestamp()),
        not_after: system_time(validity.not_after.timestamp()),
        dns_names,
        ip_addresses,
        is_ca: x509.is_ca(),
    }
}

fn system_time(unix_seconds: i64) -> SystemTime {
    let magnitude = Duration::from_secs(unix_seconds.unsigned_abs());
    let shifted = if unix_seconds >= 0 {
        SystemTime::UNIX_EPOCH.checked_add(magnitude)
    } else {
        SystemTime::UNIX_EPOCH.checked_sub(magnitude)
    };
    shifted.unwrap_or(SystemTime::UNIX_EPOCH)
}

#[cfg(test)]
mod tests;
