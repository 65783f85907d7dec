//! The one error type of the crate, below everything that makes, loads or checks a certificate.

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
