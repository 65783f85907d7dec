//! A CA with the serving certificate it issued, kept together in a Kubernetes Secret the way upstream's
//! cert-controller keeps them (`ca.crt`, `ca.key`, `tls.crt`, `tls.key`), and the decision a rotation loop makes
//! each time it looks at that Secret ([`CertBundle::reconcile`]).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use crate::ca::{CertificateAuthority, ServingCert};
use crate::error::CertError;
use crate::inspect::{inspect, verify_serving_cert};

/// Secret data keys, as cert-controller writes them.
pub const CA_CERT_KEY: &str = "ca.crt";
pub const CA_KEY_KEY: &str = "ca.key";
pub const TLS_CERT_KEY: &str = "tls.crt";
pub const TLS_KEY_KEY: &str = "tls.key";

/// cert-controller's defaults: ten-year certificates, replaced 90 days before they expire.
pub const DEFAULT_CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
pub const DEFAULT_SERVING_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
pub const DEFAULT_LOOKAHEAD: Duration = Duration::from_secs(90 * 24 * 3600);

/// What to generate, and when to replace it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleSpec {
    /// Common name of a newly generated CA.
    pub ca_common_name: String,
    /// Names of the serving certificate; the first is the one clients use (e.g. `wisp-webhook.wisp.svc`) and
    /// is what [`CertBundle::check`] verifies.
    pub dns_names: Vec<String>,
    pub ca_validity: Duration,
    pub serving_validity: Duration,
    /// A certificate expiring within this window is replaced.
    pub lookahead: Duration,
}

impl BundleSpec {
    /// cert-controller's validities and lookahead for `dns_names`.
    pub fn new(ca_common_name: &str, dns_names: &[&str]) -> Self {
        Self {
            ca_common_name: ca_common_name.to_string(),
            dns_names: dns_names.iter().map(|n| n.to_string()).collect(),
            ca_validity: DEFAULT_CA_VALIDITY,
            serving_validity: DEFAULT_SERVING_VALIDITY,
            lookahead: DEFAULT_LOOKAHEAD,
        }
    }
}

/// A CA and a serving certificate it issued.
#[derive(Debug)]
pub struct CertBundle {
    pub ca: CertificateAuthority,
    pub serving: ServingCert,
}

/// What [`CertBundle::reconcile`] decided.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Outcome {
    /// The stored bundle is valid and not due: nothing to write.
    Unchanged,
    /// The CA was kept (so clients' CA bundles stay valid) and a new serving certificate issued.
    ServingReissued,
    /// Everything was generated anew (nothing stored, unreadable, or the CA itself due).
    Regenerated,
}

impl CertBundle {
    /// A new CA and a serving certificate for `spec.dns_names`, valid from `now`.
    pub fn generate(spec: &BundleSpec, now: SystemTime) -> Result<Self, CertError> {
        let ca = CertificateAuthority::generate_at(&spec.ca_common_name, spec.ca_validity, now)?;
        let serving = ca.issue_server_cert_at(&spec.dns_names, spec.serving_validity, now)?;
        Ok(Self { ca, serving })
    }

    /// The Secret's `data` (raw bytes; the API's JSON carries them base64-encoded).
    pub fn to_secret_data(&self) -> BTreeMap<String, Vec<u8>> {
        BTreeMap::from([
            (CA_CERT_KEY.to_string(), self.ca.cert_pem().as_bytes().to_vec()),
            (CA_KEY_KEY.to_string(), self.ca.key_pem().as_bytes().to_vec()),
            (TLS_CERT_KEY.to_string(), self.serving.cert_pem.as_bytes().to_vec()),
            (TLS_KEY_KEY.to_string(), self.serving.key_pem.as_bytes().to_vec()),
        ])
    }

    /// Reads a bundle back from a Secret's `data`; checks that the CA key belongs to the CA certificate.
    pub fn from_secret_data(data: &BTreeMap<String, Vec<u8>>) -> Result<Self, CertError> {
        let text = |key: &'static str| -> Result<&str, CertError> {
            let bytes = data.get(key).ok_or(CertError::MissingSecretKey { key })?;
            std::str::from_utf8(bytes).map_err(|_| CertError::InvalidCertificate {
                field: key,
                reason: "not UTF-8 PEM text".into(),
            })
        };
        let ca = CertificateAuthority::from_pem(text(CA_CERT_KEY)?, text(CA_KEY_KEY)?)?;
        let serving = ServingCert {
            cert_pem: text(TLS_CERT_KEY)?.to_string(),
            key_pem: text(TLS_KEY_KEY)?.to_string(),
        };
        Ok(Self { ca, serving })
    }

    /// Whether this bundle can keep serving at `now`: the serving certificate chains to the CA, is valid for
    /// the first of `spec.dns_names` and matches its key, and neither certificate expires within the lookahead.
    pub fn check(&self, spec: &BundleSpec, now: SystemTime) -> Result<(), CertError> {
        self.check_serving(spec, now)?;
        if self.ca.info().needs_rotation(now, spec.lookahead) {
            return Err(CertError::RotationDue {
                which: "CA certificate",
            });
        }
        Ok(())
    }

    fn check_serving(&self, spec: &BundleSpec, now: SystemTime) -> Result<(), CertError> {
        let name = spec.dns_names.first().ok_or(CertError::NoNames)?;
        verify_serving_cert(
            self.ca.cert_pem(),
            &self.serving.cert_pem,
            &self.serving.key_pem,
            name,
            now,
        )?;
        let info = inspect(&self.serving.cert_pem)?;
        let wanted: Vec<&str> = spec.dns_names.iter().map(String::as_str).collect();
        let has_all = wanted
            .iter()
            .all(|w| info.dns_names.iter().any(|n| n == w) || info.ip_addresses.iter().any(|ip| ip.to_string() == *w));
        if !has_all {
            return Err(CertError::Untrusted {
                server_name: name.clone(),
                reason: format!("the certificate does not name all of {wanted:?}"),
            });
        }
        if info.needs_rotation(now, spec.lookahead) {
            return Err(CertError::RotationDue {
                which: "serving certificate",
            });
        }
        Ok(())
    }

    /// One rotation step, as run at start-up and periodically: given the stored Secret data (if any), returns the
    /// bundle to use and whether it must be written back. A usable stored bundle is kept; a valid CA is kept
    /// while only the serving certificate is replaced, so clients' CA bundles stay valid; anything else is
    /// regenerated. Anything new is valid from `now`. The caller writes changed data with optimistic concurrency (the Secret's
    /// resourceVersion), and on a conflict re-reads and calls this again, so two replicas converge on one
    /// bundle.
    pub fn reconcile(
        stored: Option<&BTreeMap<String, Vec<u8>>>,
        spec: &BundleSpec,
        now: SystemTime,
    ) -> Result<(Self, Outcome), CertError> {
        let Some(data) = stored else {
            return Ok((Self::generate(spec, now)?, Outcome::Regenerated));
        };
        let Ok(bundle) = Self::from_secret_data(data) else {
            return Ok((Self::generate(spec, now)?, Outcome::Regenerated));
        };
        if bundle.check(spec, now).is_ok() {
            return Ok((bundle, Outcome::Unchanged));
        }
        // A CA that is not due itself keeps signing, so clients' CA bundles stay valid. The new leaf is checked
        // like a stored one: it is capped at the CA's expiry, so a CA near its end leads to regeneration.
        if !bundle.ca.info().needs_rotation(now, spec.lookahead) {
            let serving = bundle
                .ca
                .issue_server_cert_at(&spec.dns_names, spec.serving_validity, now)?;
            let reissued = Self { ca: bundle.ca, serving };
            if reissued.check_serving(spec, now).is_ok() {
                return Ok((reissued, Outcome::ServingReissued));
            }
        }
        Ok((Self::generate(spec, now)?, Outcome::Regenerated))
    }
}

#[cfg(test)]
mod tests;
