//! Private keys re-encoded as Go's `x509.MarshalPKCS8PrivateKey` writes them, and the EC curves wisp supports;
//! shared by rendering and secret sync. Pure.

use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P384_SHA384_ASN1, ECDSA_P384_SHA384_ASN1_SIGNING,
    ECDSA_P521_SHA512_ASN1, ECDSA_P521_SHA512_ASN1_SIGNING, EcdsaKeyPair, EcdsaSigningAlgorithm,
    EcdsaVerificationAlgorithm, KeyPair,
};
use der::asn1::{AnyRef, ObjectIdentifier};
use der::{Decode, Encode};
use spki::AlgorithmIdentifierRef;
use zeroize::Zeroizing;

/// Why a private key cannot be re-encoded. Never contains any part of the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum KeyProblem {
    #[error("failed to parse key for type pkcs1, pkcs8 or ec: {0}")]
    Invalid(String),
    #[error("the certificate's PFX holds a private key of algorithm {0}; only RSA and EC keys are supported")]
    Algorithm(String),
}

/// Re-encodes a PKCS#8 key as Go's `x509.MarshalPKCS8PrivateKey` does after upstream parsed it: version 1
/// without attributes or public key; RSA with NULL parameters around the PKCS#1 key; EC with the named curve
/// in the algorithm and an inner SEC1 key (version 1) without parameters, with the public key, and the private
/// scalar padded to the curve's size.
pub(crate) fn normalize_private_key(der: &[u8]) -> Result<Zeroizing<Vec<u8>>, KeyProblem> {
    let invalid = |e: der::Error| KeyProblem::Invalid(e.to_string());
    let info = pkcs8::PrivateKeyInfo::from_der(der).map_err(|e| KeyProblem::Invalid(e.to_string()))?;
    if info.algorithm.oid == RSA_ENCRYPTION {
        let normalized = pkcs8::PrivateKeyInfo::new(
            AlgorithmIdentifierRef {
                oid: RSA_ENCRYPTION,
                parameters: Some(AnyRef::NULL),
            },
            info.private_key,
        );
        return normalized.to_der().map(Zeroizing::new).map_err(invalid);
    }
    if info.algorithm.oid != EC_PUBLIC_KEY {
        return Err(KeyProblem::Algorithm(info.algorithm.oid.to_string()));
    }
    let inner = sec1::EcPrivateKey::try_from(info.private_key).map_err(|e| KeyProblem::Invalid(e.to_string()))?;
    let curve_oid = match info.algorithm.parameters_oid() {
        Ok(oid) => oid,
        Err(_) => inner
            .parameters
            .and_then(|p| p.named_curve())
            .ok_or_else(|| KeyProblem::Invalid("the EC key names no curve".into()))?,
    };
    let curve = Curve::from_oid(curve_oid).ok_or_else(|| KeyProblem::Algorithm(format!("EC on curve {curve_oid}")))?;
    let scalar = der::asn1::UintRef::new(inner.private_key).map_err(invalid)?;
    let scalar = scalar.as_bytes();
    if scalar.len() > curve.size {
        return Err(KeyProblem::Invalid(format!(
            "the private scalar is longer than {} allows",
            curve.name
        )));
    }
    let mut padded = Zeroizing::new(vec![0u8; curve.size]);
    padded[curve.size - scalar.len()..].copy_from_slice(scalar);
    let computed_public;
    let public_key = match inner.public_key {
        Some(public_key) => public_key,
        None => {
            let pair = EcdsaKeyPair::from_private_key_der(curve.signing, info.private_key)
                .map_err(|e| KeyProblem::Invalid(format!("the EC key is not valid: {e}")))?;
            computed_public = pair.public_key().as_ref().to_vec();
            &computed_public
        }
    };
    let sec1_der = Zeroizing::new(
        sec1::EcPrivateKey {
            private_key: &padded,
            parameters: None,
            public_key: Some(public_key),
        }
        .to_der()
        .map_err(invalid)?,
    );
    let curve_any = AnyRef::from(&curve.oid);
    pkcs8::PrivateKeyInfo::new(
        AlgorithmIdentifierRef {
            oid: EC_PUBLIC_KEY,
            parameters: Some(curve_any),
        },
        &sec1_der,
    )
    .to_der()
    .map(Zeroizing::new)
    .map_err(invalid)
}

pub(crate) const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
pub(crate) const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");

pub(crate) struct Curve {
    pub(crate) name: &'static str,
    pub(crate) oid: ObjectIdentifier,
    /// Bytes of a coordinate and of the private scalar.
    pub(crate) size: usize,
    pub(crate) signing: &'static EcdsaSigningAlgorithm,
    pub(crate) verifying: &'static EcdsaVerificationAlgorithm,
}

pub(crate) const CURVES: [Curve; 3] = [
    Curve {
        name: "P-256",
        oid: ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7"),
        size: 32,
        signing: &ECDSA_P256_SHA256_ASN1_SIGNING,
        verifying: &ECDSA_P256_SHA256_ASN1,
    },
    Curve {
        name: "P-384",
        oid: ObjectIdentifier::new_unwrap("1.3.132.0.34"),
        size: 48,
        signing: &ECDSA_P384_SHA384_ASN1_SIGNING,
        verifying: &ECDSA_P384_SHA384_ASN1,
    },
    Curve {
        name: "P-521",
        oid: ObjectIdentifier::new_unwrap("1.3.132.0.35"),
        size: 66,
        signing: &ECDSA_P521_SHA512_ASN1_SIGNING,
        verifying: &ECDSA_P521_SHA512_ASN1,
    },
];

impl Curve {
    pub(crate) fn from_oid(oid: ObjectIdentifier) -> Option<&'static Curve> {
        CURVES.iter().find(|curve| curve.oid == oid)
    }

    pub(crate) fn from_name(name: &str) -> Option<&'static Curve> {
        CURVES.iter().find(|curve| curve.name == name)
    }
}
