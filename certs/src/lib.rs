//! Certificates for wisp: a small certificate authority and the TLS serving certificates it issues.
//!
//! The webhook manages its own serving certificate the way upstream's cert-controller does (a CA and a serving
//! certificate kept in a Secret, the CA bundle patched into the MutatingWebhookConfiguration, rotation before
//! expiry), and the local stack and the tests need the same thing. So this crate offers:
//!
//! - [`CertificateAuthority`]: generate a CA ([`CertificateAuthority::generate`]) or load one back from the PEM
//!   pair it was stored as ([`CertificateAuthority::from_pem`]), and issue serving certificates for DNS names and
//!   IP addresses ([`CertificateAuthority::issue_server_cert`]).
//! - [`inspect`] / [`CertInfo`]: what a PEM certificate says (names, validity, CA flag), and
//!   [`CertInfo::needs_rotation`] / [`needs_rotation`] to decide when to replace it.
//! - [`verify_serving_cert`]: whether a stored serving certificate and key still work for a host name under a
//!   CA, checked the way a TLS client checks it (rustls' WebPKI verifier).
//!
//! - [`bundle::CertBundle`]: a CA and its serving certificate kept in one Secret (cert-controller's layout), and
//!   the keep / reissue / regenerate decision of a rotation loop ([`bundle::CertBundle::reconcile`]).
//!
//! Keys are ECDSA P-256, written as PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`). Private keys never appear in
//! `Debug` output or in error messages.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, DnValue, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, SanType,
};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

pub mod bundle;

pub use bundle::{BundleSpec, CertBundle, Outcome};

/// Certificates are made valid from this long before they are issued, so that a peer whose clock runs slightly
/// behind ours accepts them right away.
pub const BACKDATE: Duration = Duration::from_secs(5 * 60);

/// The longest validity this crate issues; anything longer is a unit mistake (seconds for days, say).
pub const MAX_VALIDITY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Why a certificate could not be made, loaded or accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CertError {
    #[error("cannot generate the {what}: {reason}")]
    Generate { what: &'static str, reason: String },
    #[error("a serving certificate needs at least one DNS name or IP address")]
    NoNames,
    #[error("invalid subject alternative name {name:?}: {reason}")]
    InvalidName { name: String, reason: String },
    #[error("certificate validity of {seconds}s is out of range: use between 1 second and 100 years")]
    InvalidValidity { seconds: u64 },
    #[error("{field}: {reason}")]
    InvalidCertificate { field: &'static str, reason: String },
    #[error("{field}: {reason}")]
    InvalidKey { field: &'static str, reason: String },
    #[error("{field} is not a CA certificate (basicConstraints CA:TRUE is missing); use the CA's own certificate")]
    NotCa { field: &'static str },
    #[error("{key_field} does not belong to {cert_field}; store the key that was generated with that certificate")]
    KeyMismatch {
        cert_field: &'static str,
        key_field: &'static str,
    },
    #[error("the serving certificate is not valid for {server_name:?}: {reason}")]
    Untrusted { server_name: String, reason: String },
    #[error("the Secret has no {key} entry; delete the Secret to have a new CA generated")]
    MissingSecretKey { key: &'static str },
    #[error("the {which} expires within the rotation lookahead")]
    RotationDue { which: &'static str },
}

/// A certificate authority: its certificate and the key that signs with it.
///
/// Store it with [`cert_pem`](Self::cert_pem) and [`key_pem`](Self::key_pem) (e.g. in a Secret) and load it
/// back with [`from_pem`](Self::from_pem); certificates issued before and after the round trip chain to the same
/// CA certificate.
pub struct CertificateAuthority {
    cert_pem: String,
    key_pem: String,
    info: CertInfo,
    issuer: Issuer<'static, KeyPair>,
}

impl fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("info", &self.info)
            .field("key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// A serving certificate and its private key, both PEM. `Debug` does not show the key.
#[derive(Clone, PartialEq, Eq)]
pub struct ServingCert {
    /// The leaf certificate (`-----BEGIN CERTIFICATE-----`), signed by the issuing CA.
    pub cert_pem: String,
    /// Its PKCS#8 private key (`-----BEGIN PRIVATE KEY-----`).
    pub key_pem: String,
}

impl fmt::Debug for ServingCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServingCert")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

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

impl CertificateAuthority {
    /// A new self-signed CA named `common_name`, valid from [`BACKDATE`] ago until `validity` from now. It may
    /// sign end-entity certificates only (path length 0).
    pub fn generate(common_name: &str, validity: Duration) -> Result<Self, CertError> {
        Self::generate_at(common_name, validity, SystemTime::now())
    }

    /// [`generate`](Self::generate) as if the time were `now` (rotation decisions and their tests pass the
    /// time explicitly).
    pub fn generate_at(common_name: &str, validity: Duration, now: SystemTime) -> Result<Self, CertError> {
        let (not_before, not_after) = validity_window(validity, now)?;
        let key = KeyPair::generate().map_err(generate_error("CA key"))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = common_name_dn(common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = not_before;
        params.not_after = not_after;
        let cert = params.self_signed(&key).map_err(generate_error("CA certificate"))?;
        let cert_pem = cert.pem();
        let info = info_from_der("CA certificate", cert.der())?;
        let key_pem = key.serialize_pem();
        Ok(Self {
            cert_pem,
            key_pem,
            info,
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads a CA back from its certificate and PKCS#8 private key, as written by [`cert_pem`](Self::cert_pem)
    /// and [`key_pem`](Self::key_pem). Checks that the certificate is a CA and that the key is its key.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, CertError> {
        const CERT_FIELD: &str = "CA certificate";
        const KEY_FIELD: &str = "CA private key";
        let der = first_cert_der(CERT_FIELD, cert_pem)?;
        let (_, x509) = x509_parser::parse_x509_certificate(&der).map_err(|e| CertError::InvalidCertificate {
            field: CERT_FIELD,
            reason: format!("not a valid X.509 certificate: {e}"),
        })?;
        if !x509.is_ca() {
            return Err(CertError::NotCa { field: CERT_FIELD });
        }
        let key = KeyPair::from_pem(key_pem).map_err(|_| CertError::InvalidKey {
            field: KEY_FIELD,
            reason: "not a PKCS#8 PEM private key (-----BEGIN PRIVATE KEY-----) of a supported type".into(),
        })?;
        if x509.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(CertError::KeyMismatch {
                cert_field: CERT_FIELD,
                key_field: KEY_FIELD,
            });
        }
        let info = info_from_x509(&x509);
        let issuer = Issuer::from_ca_cert_der(&der, key).map_err(|e| CertError::InvalidCertificate {
            field: CERT_FIELD,
            reason: format!("cannot sign with it: {e}"),
        })?;
        Ok(Self {
            cert_pem: cert_pem.to_string(),
            key_pem: key_pem.to_string(),
            info,
            issuer,
        })
    }

    /// The CA certificate, PEM: what clients trust (the webhook's `caBundle`, a test's `ca.crt`).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA's private key, PKCS#8 PEM: keep it only where the CA itself is kept.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// The CA certificate's names and validity.
    pub fn info(&self) -> &CertInfo {
        &self.info
    }

    /// When the CA certificate expires.
    pub fn not_after(&self) -> SystemTime {
        self.info.not_after
    }

    /// Issues a TLS serving certificate with a fresh key for `names`: each is an IP address SAN if it parses as
    /// one (`127.0.0.1`, `::1`), a DNS name SAN otherwise (`localhost`, `wisp-webhook.wisp.svc`, `*.vault.test`).
    /// The first name is also the subject common name. Valid from [`BACKDATE`] ago for `validity`, but never past
    /// the CA's own expiry, so rotating the CA in time also keeps its leaves valid.
    pub fn issue_server_cert<S: AsRef<str>>(&self, names: &[S], validity: Duration) -> Result<ServingCert, CertError> {
        self.issue_server_cert_at(names, validity, SystemTime::now())
    }

    /// [`issue_server_cert`](Self::issue_server_cert) as if the time were `now`.
    pub fn issue_server_cert_at<S: AsRef<str>>(
        &self,
        names: &[S],
        validity: Duration,
        now: SystemTime,
    ) -> Result<ServingCert, CertError> {
        let (not_before, not_after) = validity_window(validity, now)?;
        let ca_not_after = OffsetDateTime::from(self.info.not_after);
        let mut sans = Vec::with_capacity(names.len());
        for name in names {
            sans.push(subject_alt_name(name.as_ref())?);
        }
        let first = names.first().ok_or(CertError::NoNames)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = common_name_dn(first.as_ref().trim());
        params.subject_alt_names = sans;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        params.not_before = not_before;
        params.not_after = not_after.min(ca_not_after);
        let key = KeyPair::generate().map_err(generate_error("serving key"))?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(generate_error("serving certificate"))?;
        Ok(ServingCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
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

fn generate_error(what: &'static str) -> impl FnOnce(rcgen::Error) -> CertError {
    move |e| CertError::Generate {
        what,
        reason: e.to_string(),
    }
}

fn validity_window(validity: Duration, now: SystemTime) -> Result<(OffsetDateTime, OffsetDateTime), CertError> {
    if validity < Duration::from_secs(1) || validity > MAX_VALIDITY {
        return Err(CertError::InvalidValidity {
            seconds: validity.as_secs(),
        });
    }
    // Whole seconds: X.509 times have no fractions, and equal truncation keeps `not_after - not_before` exact.
    let now = OffsetDateTime::from(now);
    let now = now.replace_nanosecond(0).unwrap_or(now);
    Ok((now - BACKDATE, now + validity))
}

fn common_name_dn(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, DnValue::Utf8String(common_name.to_string()));
    dn
}

fn subject_alt_name(name: &str) -> Result<SanType, CertError> {
    let trimmed = name.trim();
    let invalid = |reason: &str| CertError::InvalidName {
        name: name.to_string(),
        reason: reason.to_string(),
    };
    if trimmed.is_empty() {
        return Err(invalid("it is empty"));
    }
    if let Ok(ip) = trimmed.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    let host = trimmed.strip_prefix("*.").unwrap_or(trimmed);
    let valid_dns = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if !valid_dns {
        return Err(invalid(
            "not an IP address, and not a DNS name (dot-separated labels of letters, digits and '-', optionally \
             starting with \"*.\")",
        ));
    }
    let ia5 = trimmed.to_string().try_into().map_err(|_| invalid("not ASCII"))?;
    Ok(SanType::DnsName(ia5))
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

fn first_cert_der(field: &'static str, pem: &str) -> Result<CertificateDer<'static>, CertError> {
    let mut certs = all_cert_ders(field, pem)?;
    Ok(certs.swap_remove(0))
}

fn info_from_der(field: &'static str, der: &[u8]) -> Result<CertInfo, CertError> {
    let (_, x509) = x509_parser::parse_x509_certificate(der).map_err(|e| CertError::InvalidCertificate {
        field,
        reason: format!("not a valid X.509 certificate: {e}"),
    })?;
    Ok(info_from_x509(&x509))
}

fn info_from_x509(x509: &X509Certificate<'_>) -> CertInfo {
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
