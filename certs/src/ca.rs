//! Making certificates: a CA (generated, or loaded back from the PEM pair it was stored as) and the TLS serving
//! certificates it issues.

use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, DnValue, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, SanType,
};
use time::OffsetDateTime;

use crate::error::CertError;
use crate::inspect::{CertInfo, first_cert_der, info_from_der, info_from_x509, parse_x509};

/// Certificates are made valid from this long before they are issued, so that a peer whose clock runs slightly
/// behind ours accepts them right away.
pub const BACKDATE: Duration = Duration::from_secs(5 * 60);

/// The longest validity this crate issues; anything longer is a unit mistake (seconds for days, say).
pub const MAX_VALIDITY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
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
        let x509 = parse_x509(CERT_FIELD, &der)?;
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

#[cfg(test)]
mod tests;
