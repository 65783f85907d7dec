//! Key material the fake Key Vault hands out: RSA and EC keys as Key Vault JWKs, certificates (self-signed or
//! issued by a generated CA), and the secret forms Key Vault gives certificate-backed secrets (an unencrypted
//! PKCS#12 in base64, or a PEM bundle of the PKCS#8 key followed by the chain).

use aws_lc_rs::digest;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk};
use jsonwebtoken::{Algorithm, EncodingKey};
use p12_keystore::{Certificate as P12Certificate, KeyStore, KeyStoreEntry, PrivateKey, PrivateKeyChain};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, PublicKeyData as _,
    SignatureAlgorithm,
};
use serde_json::{Map, Value, json};
use time::{Duration, OffsetDateTime};

#[derive(Debug, thiserror::Error)]
pub enum MaterialError {
    #[error("generating key material failed: {0}")]
    Generate(String),
    #[error("building the PKCS#12 file failed: {0}")]
    Pkcs12(String),
}

fn gen_err(e: impl std::fmt::Display) -> MaterialError {
    MaterialError::Generate(e.to_string())
}

/// An elliptic curve Key Vault supports for EC keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EcCurve {
    P256,
    P384,
    P521,
}

impl EcCurve {
    /// The `crv` value in Key Vault's JWK.
    pub fn jwk_name(self) -> &'static str {
        match self {
            EcCurve::P256 => "P-256",
            EcCurve::P384 => "P-384",
            EcCurve::P521 => "P-521",
        }
    }

    fn algorithm(self) -> &'static SignatureAlgorithm {
        match self {
            EcCurve::P256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            EcCurve::P384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            EcCurve::P521 => &rcgen::PKCS_ECDSA_P521_SHA512,
        }
    }

    fn coordinate_len(self) -> usize {
        match self {
            EcCurve::P256 => 32,
            EcCurve::P384 => 48,
            EcCurve::P521 => 66,
        }
    }
}

/// The key type behind a key or certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    Rsa2048,
    Ec(EcCurve),
}

/// A generated key pair and its public JWK fields in Key Vault's form.
pub struct GeneratedKey {
    pub key_pair: KeyPair,
    /// `kty`, `n`/`e` or `crv`/`x`/`y` (no `kid`, no `key_ops`: the vault adds those).
    pub jwk_fields: Map<String, Value>,
}

impl GeneratedKey {
    pub fn public_key_spki_der(&self) -> Vec<u8> {
        self.key_pair.subject_public_key_info()
    }

    pub fn private_key_pkcs8_der(&self) -> Vec<u8> {
        self.key_pair.serialize_der()
    }
}

pub fn generate_key(key_type: KeyType) -> Result<GeneratedKey, MaterialError> {
    match key_type {
        KeyType::Rsa2048 => {
            let key_pair = KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).map_err(gen_err)?;
            let encoding = EncodingKey::from_rsa_pem(key_pair.serialize_pem().as_bytes()).map_err(gen_err)?;
            let jwk = Jwk::from_encoding_key(&encoding, Algorithm::RS256).map_err(gen_err)?;
            let AlgorithmParameters::RSA(rsa) = jwk.algorithm else {
                return Err(MaterialError::Generate("RSA key produced a non-RSA JWK".into()));
            };
            let mut fields = Map::new();
            fields.insert("kty".into(), json!("RSA"));
            fields.insert("n".into(), json!(rsa.n));
            fields.insert("e".into(), json!(rsa.e));
            Ok(GeneratedKey {
                key_pair,
                jwk_fields: fields,
            })
        }
        KeyType::Ec(curve) => {
            let key_pair = KeyPair::generate_for(curve.algorithm()).map_err(gen_err)?;
            // The raw public key is the uncompressed point 0x04 || X || Y.
            let raw = key_pair.public_key_raw();
            let n = curve.coordinate_len();
            if raw.len() != 1 + 2 * n || raw[0] != 4 {
                return Err(MaterialError::Generate(format!(
                    "unexpected EC point of {} bytes",
                    raw.len()
                )));
            }
            let mut fields = Map::new();
            fields.insert("kty".into(), json!("EC"));
            fields.insert("crv".into(), json!(curve.jwk_name()));
            fields.insert("x".into(), json!(URL_SAFE_NO_PAD.encode(&raw[1..=n])));
            fields.insert("y".into(), json!(URL_SAFE_NO_PAD.encode(&raw[1 + n..])));
            Ok(GeneratedKey {
                key_pair,
                jwk_fields: fields,
            })
        }
    }
}

/// How Key Vault stores the certificate's secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertContentType {
    /// `application/x-pkcs12`: base64 of an unencrypted-key PFX (empty password).
    Pkcs12,
    /// `application/x-pem-file`: PKCS#8 key PEM followed by the certificate chain PEM.
    Pem,
}

impl CertContentType {
    pub fn mime(self) -> &'static str {
        match self {
            CertContentType::Pkcs12 => "application/x-pkcs12",
            CertContentType::Pem => "application/x-pem-file",
        }
    }
}

/// What certificate to create.
#[derive(Debug, Clone)]
pub struct CertificateSpec {
    pub subject_cn: String,
    pub dns_names: Vec<String>,
    pub key_type: KeyType,
    pub content_type: CertContentType,
    /// Issue the certificate from a generated CA (and include the CA in the secret's chain), as a
    /// CA-integrated Key Vault certificate would be; `false` makes it self-signed (Key Vault's `Self` issuer).
    pub issued_by_ca: bool,
    pub validity_days: i64,
}

impl CertificateSpec {
    /// A self-signed RSA certificate stored as PKCS#12, valid for a year (Key Vault's defaults).
    pub fn self_signed(subject_cn: &str) -> Self {
        Self {
            subject_cn: subject_cn.to_string(),
            dns_names: vec![subject_cn.to_string()],
            key_type: KeyType::Rsa2048,
            content_type: CertContentType::Pkcs12,
            issued_by_ca: false,
            validity_days: 365,
        }
    }
}

/// A generated certificate with everything a test needs to check what a client renders from it.
pub struct GeneratedCertificate {
    pub key: GeneratedKey,
    /// Leaf first, then the issuing CA when there is one.
    pub chain_der: Vec<Vec<u8>>,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    /// The secret's value as Key Vault returns it for the spec's content type.
    pub secret_value: String,
    /// The PFX bytes (also for PEM certificates: Key Vault converts on `outContentType`).
    pub pfx: Vec<u8>,
    /// The PEM bundle: PKCS#8 key then the chain.
    pub pem_bundle: String,
}

fn pem_block(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

pub fn generate_certificate(spec: &CertificateSpec) -> Result<GeneratedCertificate, MaterialError> {
    let key = generate_key(spec.key_type)?;
    // Whole seconds, one hour in the past, so the certificate is valid at once on any clock.
    let not_before = OffsetDateTime::now_utc().replace_nanosecond(0).map_err(gen_err)? - Duration::hours(1);
    let not_after = not_before + Duration::days(spec.validity_days);
    let mut params = CertificateParams::new(spec.dns_names.clone()).map_err(gen_err)?;
    params
        .distinguished_name
        .push(DnType::CommonName, spec.subject_cn.clone());
    params.not_before = not_before;
    params.not_after = not_after;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    let mut chain_der = Vec::new();
    if spec.issued_by_ca {
        let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(gen_err)?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(gen_err)?;
        ca_params
            .distinguished_name
            .push(DnType::CommonName, format!("{} Issuing CA", spec.subject_cn));
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        ca_params.not_before = not_before;
        ca_params.not_after = not_after + Duration::days(1);
        let ca_cert = ca_params.self_signed(&ca_key).map_err(gen_err)?;
        let issuer = Issuer::new(ca_params, &ca_key);
        let leaf = params.signed_by(&key.key_pair, &issuer).map_err(gen_err)?;
        chain_der.push(leaf.der().to_vec());
        chain_der.push(ca_cert.der().to_vec());
    } else {
        let leaf = params.self_signed(&key.key_pair).map_err(gen_err)?;
        chain_der.push(leaf.der().to_vec());
    }
    let pkcs8 = key.private_key_pkcs8_der();
    let pfx = build_pfx(&pkcs8, &chain_der)?;
    let mut pem_bundle = pem_block("PRIVATE KEY", &pkcs8);
    for der in &chain_der {
        pem_bundle.push_str(&pem_block("CERTIFICATE", der));
    }
    let secret_value = match spec.content_type {
        CertContentType::Pkcs12 => STANDARD.encode(&pfx),
        CertContentType::Pem => pem_bundle.clone(),
    };
    Ok(GeneratedCertificate {
        key,
        chain_der,
        not_before,
        not_after,
        secret_value,
        pfx,
        pem_bundle,
    })
}

/// An unencrypted-password PFX like Key Vault exports: legacy 3DES bags and an HMAC-SHA1 MAC, which every
/// PKCS#12 reader (including Go's `x/crypto/pkcs12` that provider-azure uses) can open.
pub fn build_pfx(pkcs8_der: &[u8], chain_der: &[Vec<u8>]) -> Result<Vec<u8>, MaterialError> {
    let pkcs12 = |e: p12_keystore::error::Error| MaterialError::Pkcs12(e.to_string());
    let key = PrivateKey::from_der(pkcs8_der).map_err(pkcs12)?;
    let certs = chain_der
        .iter()
        .map(|der| P12Certificate::from_der(der))
        .collect::<Result<Vec<_>, _>>()
        .map_err(pkcs12)?;
    let local_key_id = digest::digest(
        &digest::SHA1_FOR_LEGACY_USE_ONLY,
        chain_der.first().map_or(&[][..], |c| c),
    );
    let chain = PrivateKeyChain::new(local_key_id.as_ref(), key, certs);
    let mut store = KeyStore::new();
    store.add_entry("certificate", KeyStoreEntry::PrivateKeyChain(chain));
    store
        .writer("")
        .encryption_algorithm(p12_keystore::EncryptionAlgorithm::PbeWithShaAnd3KeyTripleDesCbc)
        .mac_algorithm(p12_keystore::MacAlgorithm::HmacSha1)
        .write()
        .map_err(pkcs12)
}

/// `x5t`: base64url of the SHA-1 thumbprint of the certificate DER.
pub fn x5t(cert_der: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, cert_der))
}
