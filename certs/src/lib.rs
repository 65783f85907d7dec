//! Certificates for wisp: a small certificate authority and the TLS serving certificates it issues.
//!
//! The webhook manages its own serving certificate the way upstream's cert-controller does (a CA and a serving
//! certificate kept in a Secret, the CA bundle patched into the MutatingWebhookConfiguration, rotation before
//! expiry), and the local stack and the tests need the same thing. So this crate offers:
//!
//! - [`CertificateAuthority`]: generate a CA ([`CertificateAuthority::generate`]) or load one back from the PEM
//!   pair it was stored as ([`CertificateAuthority::from_pem`]), and issue serving certificates for DNS names and
//!   IP addresses ([`CertificateAuthority::issue_server_cert`]).
//! - [`inspect()`] / [`CertInfo`]: what a PEM certificate says (names, validity, CA flag), and
//!   [`CertInfo::needs_rotation`] / [`needs_rotation`] to decide when to replace it.
//! - [`verify_serving_cert`]: whether a stored serving certificate and key still work for a host name under a
//!   CA, checked the way a TLS client checks it (rustls' WebPKI verifier).
//!
//! - [`bundle::CertBundle`]: a CA and its serving certificate kept in one Secret (cert-controller's layout), and
//!   the keep / reissue / regenerate decision of a rotation loop ([`bundle::CertBundle::reconcile`]).
//!
//! Keys are ECDSA P-256, written as PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`). Private keys never appear in
//! `Debug` output or in error messages.

mod ca;
mod error;
mod inspect;

pub mod bundle;

pub use bundle::{BundleSpec, CertBundle, Outcome};
pub use ca::{BACKDATE, CertificateAuthority, MAX_VALIDITY, ServingCert};
pub use error::CertError;
pub use inspect::{CertInfo, inspect, needs_rotation, verify_serving_cert};

#[cfg(test)]
mod fixtures;
