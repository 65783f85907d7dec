//! What Key Vault returned to the bytes of the files a mount shows, exactly as provider-azure writes them.
//! Pure: no I/O.

use aws_lc_rs::signature::ParsedPublicKey;
use base64::Engine;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use der::Encode;
use der::asn1::{AnyRef, BitStringRef, ObjectIdentifier};
use p12_keystore::Pkcs12Archive;
use secrecy::{ExposeSecret, SecretString};
use spki::{AlgorithmIdentifierRef, SubjectPublicKeyInfoRef};
use wisp_shared::contract::provider_azure as pa;
use x509_parser::prelude::{FromDer, ParsedExtension, X509Certificate};
use zeroize::Zeroizing;

use crate::content::RenderedFile;
use crate::pem::{decode_go_base64, pem_blocks, pem_encode};
use crate::private_key::{Curve, EC_PUBLIC_KEY, KeyProblem, RSA_ENCRYPTION, normalize_private_key};
use crate::provider::params::{ObjectEncoding, ObjectFormat, ObjectSpec, ObjectType};

/// One object version as fetched from Key Vault.
#[derive(Debug, Clone)]
pub enum FetchedObject {
    Secret {
        value: SecretString,
        content_type: Option<String>,
        /// Set for certificate-backed secrets.
        kid: Option<String>,
    },
    /// The `key` member (a JWK) of Key Vault's KeyBundle.
    Key { jwk: serde_json::Value },
    /// The certificate's `cer` (DER).
    Cert { cer: Vec<u8> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RenderOptions {
    /// `--construct-pem-chain` (default true).
    pub construct_pem_chain: bool,
    /// `--write-cert-and-key-in-separate-files` (default false).
    pub write_cert_and_key_in_separate_files: bool,
}

impl Default for RenderOptions {
    fn default() -> Self {
        RenderOptions {
            construct_pem_chain: true,
            write_cert_and_key_in_separate_files: false,
        }
    }
}

/// One entry of a Key Vault version list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionInfo {
    /// The version identifier (last segment of the object id).
    pub id: String,
    pub enabled: bool,
    /// Unix seconds; 0 when Key Vault gave none.
    pub created: i64,
}

/// Why an object's files cannot be produced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("objects array index {index} (objectName {name:?}, objectType {object_type}): {problem}")]
    Object {
        index: usize,
        name: String,
        object_type: ObjectType,
        problem: RenderProblem,
    },
    /// From [`select_history_versions`], which does not know the object.
    #[error("{0}")]
    History(RenderProblem),
}

/// What went wrong with one object. Never contains any part of a secret value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderProblem {
    #[error("Key Vault returned a {returned} for it; this is a bug in wisp's fetch")]
    WrongObjectKind { returned: &'static str },
    #[error("failed to decode the secret value as base64 (objectEncoding: base64): it is not padded standard base64")]
    InvalidBase64,
    #[error("failed to decode the secret value as hex (objectEncoding: hex): {0}")]
    InvalidHex(String),
    #[error(
        "failed to get certificate. unknown content type '{0}'; a certificate's secret must be \
         application/x-pem-file or application/x-pkcs12"
    )]
    UnknownContentType(String),
    #[error("failed to decode the certificate's PFX: the secret value is not padded standard base64")]
    PfxBase64,
    #[error("failed to decode the certificate's PFX (only PFX files without a password are supported): {0}")]
    Pfx(String),
    #[error("failed to parse key for type pkcs1, pkcs8 or ec: {0}")]
    PrivateKey(String),
    #[error("the certificate's PFX holds a private key of algorithm {0}; only RSA and EC keys are supported")]
    PrivateKeyAlgorithm(String),
    #[error("failed to parse a certificate of the PFX: {0}")]
    Certificate(String),
    #[error("no leaf found")]
    NoLeaf,
    #[error("constructing chain resulted in cycle")]
    ChainCycle,
    #[error("failed to get key. key type '{0}' currently not supported; use an RSA or EC key")]
    KeyType(String),
    #[error("curve {0} is not supported; use P-256, P-384 or P-521")]
    Curve(String),
    #[error("the key's JWK member {member:?} is {problem}")]
    JwkMember {
        member: &'static str,
        problem: &'static str,
    },
    #[error("the key's JWK x and y are not a point on curve {0}")]
    EcPoint(String),
    #[error(
        "objectVersion {0} is not an enabled version of this object; set objectVersion to an enabled version or remove it"
    )]
    VersionNotFound(String),
    #[error("the object has no enabled versions")]
    NoEnabledVersions,
}

impl From<KeyProblem> for RenderProblem {
    fn from(problem: KeyProblem) -> Self {
        match problem {
            KeyProblem::Invalid(reason) => RenderProblem::PrivateKey(reason),
            KeyProblem::Algorithm(algorithm) => RenderProblem::PrivateKeyAlgorithm(algorithm),
        }
    }
}

const CONTENT_TYPE_PEM: &str = "application/x-pem-file";
const CONTENT_TYPE_PFX: &str = "application/x-pkcs12";
const CERTIFICATE_LABEL: &str = "CERTIFICATE";
const PRIVATE_KEY_LABEL: &str = "PRIVATE KEY";
const PUBLIC_KEY_LABEL: &str = "PUBLIC KEY";

/// JWK members are base64url without padding; padded input is accepted too.
const JWK_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// provider-azure's `splitCertAndKey`: every `CERTIFICATE` block to the `.crt` file, every other block to the
/// `.key` file, each re-encoded.
fn split_cert_and_key(content: &[u8]) -> (Zeroizing<Vec<u8>>, Zeroizing<Vec<u8>>) {
    let mut certs = Zeroizing::new(Vec::new());
    let mut keys = Zeroizing::new(Vec::new());
    for (label, der) in pem_blocks(content) {
        let target = if label == CERTIFICATE_LABEL {
            &mut certs
        } else {
            &mut keys
        };
        target.extend_from_slice(&pem_encode(&label, &der));
    }
    (certs, keys)
}

/// Renders one fetched object version to its file(s), `file_path` being the alias (or `alias/N` in version
/// history). Certificate-backed secrets with `--write-cert-and-key-in-separate-files` give
/// `<file_path>.crt`, `<file_path>.key` and `<file_path>`, in that order, as upstream.
pub fn render_object(
    spec: &ObjectSpec,
    file_path: &str,
    object: &FetchedObject,
    opts: &RenderOptions,
) -> Result<Vec<RenderedFile>, RenderError> {
    let fail = |problem: RenderProblem| RenderError::Object {
        index: spec.index,
        name: spec.name.clone(),
        object_type: spec.object_type,
        problem,
    };
    let mode = spec.file_permission.unwrap_or(pa::DEFAULT_FILE_MODE);
    let file = |suffix: &str, contents: Zeroizing<Vec<u8>>| RenderedFile {
        path: format!("{file_path}{suffix}"),
        contents,
        mode,
    };
    match (spec.object_type, object) {
        (
            ObjectType::Secret,
            FetchedObject::Secret {
                value,
                content_type,
                kid,
            },
        ) => {
            let mut contents: Vec<(&str, Zeroizing<Vec<u8>>)> = Vec::new();
            let mut content = Zeroizing::new(value.expose_secret().as_bytes().to_vec());
            if kid.as_deref().is_some_and(|kid| !kid.is_empty()) {
                match content_type.as_deref() {
                    Some(CONTENT_TYPE_PEM) => {}
                    Some(CONTENT_TYPE_PFX) => {
                        if spec.format != ObjectFormat::Pfx {
                            content = pfx_to_pem(&content, opts.construct_pem_chain).map_err(fail)?;
                        }
                    }
                    other => return Err(fail(RenderProblem::UnknownContentType(other.unwrap_or("").to_string()))),
                }
                if opts.write_cert_and_key_in_separate_files {
                    let (certs, keys) = split_cert_and_key(&content);
                    contents.push((".crt", certs));
                    contents.push((".key", keys));
                }
            }
            contents.push(("", content));
            contents
                .into_iter()
                .map(|(suffix, content)| Ok(file(suffix, decode_encoding(spec.encoding, content).map_err(fail)?)))
                .collect()
        }
        (ObjectType::Key, FetchedObject::Key { jwk }) => {
            let spki = jwk_to_spki(jwk).map_err(fail)?;
            Ok(vec![file("", pem_encode(PUBLIC_KEY_LABEL, &spki))])
        }
        (ObjectType::Cert, FetchedObject::Cert { cer }) => Ok(vec![file("", pem_encode(CERTIFICATE_LABEL, cer))]),
        (_, other) => Err(fail(RenderProblem::WrongObjectKind {
            returned: match other {
                FetchedObject::Secret { .. } => "secret",
                FetchedObject::Key { .. } => "key",
                FetchedObject::Cert { .. } => "certificate",
            },
        })),
    }
}

fn decode_encoding(encoding: ObjectEncoding, content: Zeroizing<Vec<u8>>) -> Result<Zeroizing<Vec<u8>>, RenderProblem> {
    match encoding {
        ObjectEncoding::Utf8 => Ok(content),
        ObjectEncoding::Base64 => decode_go_base64(&content).ok_or(RenderProblem::InvalidBase64),
        ObjectEncoding::Hex => match hex::decode(content.as_slice()) {
            Ok(bytes) => Ok(Zeroizing::new(bytes)),
            // Only the kind of error: hex's own text would quote a character of the secret.
            Err(hex::FromHexError::OddLength) => Err(RenderProblem::InvalidHex("odd number of digits".into())),
            Err(_) => Err(RenderProblem::InvalidHex("a character is not a hex digit".into())),
        },
    }
}

/// provider-azure's `decodePKCS12`: the private keys as PKCS#8 `PRIVATE KEY` blocks in Go's encoding, then
/// the certificates, ordered leaf to root when `construct_chain` and the chain is complete.
fn pfx_to_pem(base64_pfx: &[u8], construct_chain: bool) -> Result<Zeroizing<Vec<u8>>, RenderProblem> {
    let pfx = decode_go_base64(base64_pfx).ok_or(RenderProblem::PfxBase64)?;
    let archive = Pkcs12Archive::from_pkcs12(&pfx, "").map_err(|e| RenderProblem::Pfx(e.to_string()))?;
    let mut out = Zeroizing::new(Vec::new());
    for bag in &archive.keys {
        let pkcs8 = normalize_private_key(bag.key.as_der())?;
        out.extend_from_slice(&pem_encode(PRIVATE_KEY_LABEL, &pkcs8));
    }
    let certs: Vec<&[u8]> = archive.certs.iter().map(|bag| bag.cert.as_der()).collect();
    let order = if construct_chain {
        chain_order(&certs)?
    } else {
        (0..certs.len()).collect()
    };
    for index in order {
        out.extend_from_slice(&pem_encode(CERTIFICATE_LABEL, certs[index]));
    }
    Ok(out)
}

/// provider-azure's `fetchCertChains`, as an order over `certs`: a certificate's parent is the first other
/// certificate whose subject key identifier equals its authority key identifier (two absent identifiers do
/// not match); the leaf is the first certificate that is nobody's parent. A chain that does not reach every
/// certificate leaves them in their original order, with a warning.
pub(crate) fn chain_order(certs: &[&[u8]]) -> Result<Vec<usize>, RenderProblem> {
    let mut key_ids = Vec::with_capacity(certs.len());
    for der in certs {
        let (_, cert) = X509Certificate::from_der(der).map_err(|e| RenderProblem::Certificate(e.to_string()))?;
        let mut subject_key_id = None;
        let mut authority_key_id = None;
        for extension in cert.extensions() {
            match extension.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(id) => subject_key_id = Some(id.0.to_vec()),
                ParsedExtension::AuthorityKeyIdentifier(aki) => {
                    authority_key_id = aki.key_identifier.as_ref().map(|id| id.0.to_vec())
                }
                _ => {}
            }
        }
        key_ids.push((subject_key_id, authority_key_id));
    }
    let mut parent = vec![None; certs.len()];
    let mut is_parent = vec![false; certs.len()];
    for (i, (_, authority)) in key_ids.iter().enumerate() {
        let found = key_ids
            .iter()
            .enumerate()
            .find(|(j, (subject, _))| *j != i && (authority.is_some() || subject.is_some()) && subject == authority);
        if let Some((j, _)) = found {
            parent[i] = Some(j);
            is_parent[j] = true;
        }
    }
    let Some(leaf) = is_parent.iter().position(|p| !p) else {
        return Err(RenderProblem::NoLeaf);
    };
    let mut chain = Vec::with_capacity(certs.len());
    let mut next = Some(leaf);
    while let Some(current) = next {
        if chain.len() == certs.len() {
            return Err(RenderProblem::ChainCycle);
        }
        chain.push(current);
        next = parent[current];
    }
    if chain.len() != certs.len() {
        tracing::warn!(
            "certificate chain is not complete due to missing intermediate/root certificates in the cert from key \
             vault"
        );
        return Ok((0..certs.len()).collect());
    }
    Ok(chain)
}

fn jwk_string<'a>(jwk: &'a serde_json::Value, member: &'static str) -> Result<&'a str, RenderProblem> {
    jwk.get(member)
        .and_then(|v| v.as_str())
        .ok_or(RenderProblem::JwkMember {
            member,
            problem: "missing or not a string",
        })
}

fn jwk_bytes(jwk: &serde_json::Value, member: &'static str) -> Result<Vec<u8>, RenderProblem> {
    let bytes = JWK_BASE64
        .decode(jwk_string(jwk, member)?.trim_end_matches('='))
        .map_err(|_| RenderProblem::JwkMember {
            member,
            problem: "not base64url",
        })?;
    if bytes.is_empty() {
        return Err(RenderProblem::JwkMember {
            member,
            problem: "empty",
        });
    }
    Ok(bytes)
}

/// provider-azure's `getKey`: the public half of the JWK as X.509 SubjectPublicKeyInfo DER.
fn jwk_to_spki(jwk: &serde_json::Value) -> Result<Vec<u8>, RenderProblem> {
    let kty = jwk_string(jwk, "kty")?;
    let encode_error = |e: der::Error| RenderProblem::JwkMember {
        member: "kty",
        problem: if e.kind() == der::ErrorKind::Overflow {
            "too large"
        } else {
            "not encodable"
        },
    };
    match kty {
        "RSA" | "RSA-HSM" => {
            let n = jwk_bytes(jwk, "n")?;
            let e = jwk_bytes(jwk, "e")?;
            let public_key = pkcs1::RsaPublicKey {
                modulus: der::asn1::UintRef::new(&n).map_err(encode_error)?,
                public_exponent: der::asn1::UintRef::new(&e).map_err(encode_error)?,
            }
            .to_der()
            .map_err(encode_error)?;
            spki_der(RSA_ENCRYPTION, AnyRef::NULL, &public_key).map_err(encode_error)
        }
        "EC" | "EC-HSM" => {
            let crv = jwk_string(jwk, "crv")?;
            let curve = Curve::from_name(crv).ok_or_else(|| RenderProblem::Curve(crv.to_string()))?;
            let mut point = Vec::with_capacity(1 + 2 * curve.size);
            point.push(0x04);
            for member in ["x", "y"] {
                let coordinate = jwk_bytes(jwk, member)?;
                let digits = der::asn1::UintRef::new(&coordinate).map_err(encode_error)?;
                let digits = digits.as_bytes();
                if digits.len() > curve.size {
                    return Err(RenderProblem::EcPoint(crv.to_string()));
                }
                point.resize(point.len() + curve.size - digits.len(), 0);
                point.extend_from_slice(digits);
            }
            ParsedPublicKey::new(curve.verifying, &point).map_err(|_| RenderProblem::EcPoint(crv.to_string()))?;
            spki_der(EC_PUBLIC_KEY, AnyRef::from(&curve.oid), &point).map_err(encode_error)
        }
        other => Err(RenderProblem::KeyType(other.to_string())),
    }
}

fn spki_der(algorithm: ObjectIdentifier, parameters: AnyRef<'_>, public_key: &[u8]) -> der::Result<Vec<u8>> {
    SubjectPublicKeyInfoRef {
        algorithm: AlgorithmIdentifierRef {
            oid: algorithm,
            parameters: Some(parameters),
        },
        subject_public_key: BitStringRef::from_bytes(public_key)?,
    }
    .to_der()
}

/// Versions for `objectVersionHistory: count`: enabled versions newest first by `created` (ties keep Key
/// Vault's order), starting at `start_at` (`None` or `latest` = the newest), at most `count` of them (at least
/// one). Fewer than `count` enabled versions give all of them, as upstream. Unlike upstream (which returns one
/// more than asked when more exist, and nothing for an unknown start version), exactly `count` are returned and
/// an unknown or disabled start version is an error.
pub fn select_history_versions(
    versions: &[VersionInfo],
    start_at: Option<&str>,
    count: u32,
) -> Result<Vec<String>, RenderError> {
    let mut enabled: Vec<&VersionInfo> = versions.iter().filter(|v| v.enabled).collect();
    if enabled.is_empty() {
        return Err(RenderError::History(RenderProblem::NoEnabledVersions));
    }
    enabled.sort_by_key(|v| std::cmp::Reverse(v.created));
    let start = match start_at {
        None | Some("") | Some("latest") => 0,
        Some(wanted) => enabled
            .iter()
            .position(|v| v.id == wanted)
            .ok_or_else(|| RenderError::History(RenderProblem::VersionNotFound(wanted.to_string())))?,
    };
    let count = usize::try_from(count.max(1)).unwrap_or(usize::MAX);
    Ok(enabled.iter().skip(start).take(count).map(|v| v.id.clone()).collect())
}

#[cfg(test)]
mod tests;
