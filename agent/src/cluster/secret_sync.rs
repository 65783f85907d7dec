//! Sync of mounted files to Kubernetes Secrets (`spec.secretObjects`), as the driver's secret sync controller
//! does it: the same validation and texts, type and label handling, data taken from the mounted files, and the
//! `kubernetes.io/tls` conversions. Pure: the caller reads the files ([`crate::volume::mounted_files`]), applies the
//! body with server-side apply and patches the owner references.
//!
//! Owner references are not part of the apply body. Several pods (on several nodes, all applying as
//! [`FIELD_MANAGER`]) share one Secret, and an apply removes the list entries its manager set before and did
//! not repeat; a strategic-merge patch keyed by `uid` only adds, as the driver's patcher does, so the Secret
//! is garbage-collected only when every owner is gone.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use der::asn1::AnyRef;
use der::{Decode, Encode};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use p12_keystore::Pkcs12Archive;
use serde::Deserialize;
use serde_json::{Value, json};
use spki::AlgorithmIdentifierRef;
use wisp_shared::contract::secrets_store::{API_VERSION, CTX_SECRET_PROVIDER_CLASS, DRIVER_NAME, MANAGED_SECRET_LABEL};
use zeroize::Zeroizing;

use crate::cluster::pod_status::KIND as POD_STATUS_KIND;
use crate::pem::{decode_go_base64, pem_blocks, pem_encode};
use crate::private_key::{EC_PUBLIC_KEY, KeyProblem, normalize_private_key};
use crate::volume::mounted_files::MountedFiles;

#[cfg(test)]
mod tests;

/// Server-side apply field manager of every Secret the agent writes.
pub const FIELD_MANAGER: &str = "wisp-agent";
/// Reason of the Warning Event on the pod when a Secret cannot be built or written (the driver's).
pub const EVENT_REASON_FAILED: &str = "FailedToCreateSecret";
pub const SECRET_TYPE_OPAQUE: &str = "Opaque";
pub const SECRET_TYPE_TLS: &str = "kubernetes.io/tls";
pub const TLS_CERT_KEY: &str = "tls.crt";
pub const TLS_PRIVATE_KEY_KEY: &str = "tls.key";

/// The Secret types kept as written; any other value (a typo included) becomes `Opaque`, as in the driver.
const KNOWN_SECRET_TYPES: [&str; 8] = [
    SECRET_TYPE_OPAQUE,
    "kubernetes.io/basic-auth",
    "bootstrap.kubernetes.io/token",
    "kubernetes.io/dockerconfigjson",
    "kubernetes.io/dockercfg",
    "kubernetes.io/ssh-auth",
    "kubernetes.io/service-account-token",
    SECRET_TYPE_TLS,
];

const CERTIFICATE_LABEL: &str = "CERTIFICATE";
const RSA_PRIVATE_KEY_LABEL: &str = "RSA PRIVATE KEY";
const EC_PRIVATE_KEY_LABEL: &str = "EC PRIVATE KEY";

/// One entry of `spec.secretObjects`, as written (fields are trimmed when used, as the driver does).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretObject {
    #[serde(default)]
    pub secret_name: String,
    #[serde(default, rename = "type")]
    pub secret_type: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub data: Vec<SecretObjectData>,
}

/// One `data` entry: which mounted file (`objectName`, the alias path, e.g. `alias/0`) goes under which key.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretObjectData {
    #[serde(default)]
    pub object_name: String,
    #[serde(default)]
    pub key: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "spec.secretObjects of SecretProviderClass {namespace}/{name} is not valid: {reason}; each entry needs \
     secretName, type and data (a list of objectName/key pairs)"
)]
pub struct SecretObjectsError {
    pub namespace: String,
    pub name: String,
    pub reason: String,
}

/// Reads `spec.secretObjects` (kept verbatim by [`crate::cluster::spc`]); absent or null means nothing to sync.
pub fn parse_secret_objects(
    spc_namespace: &str,
    spc_name: &str,
    secret_objects: Option<&Value>,
) -> Result<Vec<SecretObject>, SecretObjectsError> {
    match secret_objects {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(value) => Vec::<SecretObject>::deserialize(value).map_err(|e| SecretObjectsError {
            namespace: spc_namespace.to_string(),
            name: spc_name.to_string(),
            reason: e.to_string(),
        }),
    }
}

/// What is wrong with one `secretObjects` entry. The texts are the driver's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretObjectProblem {
    #[error("secret name is empty")]
    NameEmpty,
    #[error("secret type is empty")]
    TypeEmpty,
    #[error("data is empty")]
    DataEmpty,
    #[error("object name in secretObjects.data is empty")]
    ObjectNameEmpty,
    #[error("key in secretObjects.data is empty")]
    KeyEmpty,
    #[error("file matching objectName {0} not found in the pod")]
    FileNotFound(String),
    #[error("failed to get cert data from file {object_name}, err: {problem}")]
    Tls { object_name: String, problem: TlsProblem },
}

/// Why a file cannot become `tls.crt` / `tls.key`. Never contains any part of the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsProblem {
    #[error("key '{0}' is not supported. Only 'tls.key' and 'tls.crt' are supported")]
    UnsupportedKey(String),
    #[error(
        "no CERTIFICATE PEM block found, and the file is not a PFX without password ({0}); mount the certificate \
         (objectType cert, or its secret) under this objectName"
    )]
    NoCertificate(String),
    #[error(
        "no private key found: the file has no PEM block other than CERTIFICATE, and is not a PFX without \
         password ({0}); mount the certificate's secret (objectType secret), which holds the key"
    )]
    NoPrivateKey(String),
    #[error(
        "the private key is not PKCS#1, PKCS#8 or SEC1 (EC) DER ({0}); mount the certificate's secret \
         (objectType secret) unchanged"
    )]
    InvalidPrivateKey(String),
    #[error("unknown private key type found while getting key. Only rsa and ecdsa are supported (found {0})")]
    UnsupportedKeyType(String),
}

/// A `secretObjects` entry that cannot be synced, with the driver's context (the text of the Event).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyncError {
    #[error("failed to validate secret object in spc {spc_namespace}/{spc_name}, err: {problem}")]
    Invalid {
        spc_namespace: String,
        spc_name: String,
        problem: Box<SecretObjectProblem>,
    },
    #[error("failed to get data in spc {spc_namespace}/{spc_name} for secret {secret_name}, err: {problem}")]
    Data {
        spc_namespace: String,
        spc_name: String,
        secret_name: String,
        problem: Box<SecretObjectProblem>,
    },
}

/// A Secret to apply: `PATCH` with `Patch::Apply(body)` under [`FIELD_MANAGER`] (with `force`, so a Secret the
/// upstream driver created is taken over). Debug never shows the body: its data are secrets.
#[derive(Clone, PartialEq)]
pub struct SecretApply {
    pub name: String,
    pub namespace: String,
    pub body: Value,
}

impl std::fmt::Debug for SecretApply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretApply")
            .field("name", &self.name)
            .field("namespace", &self.namespace)
            .field("body", &format_args!("<redacted>"))
            .finish()
    }
}

/// The Secret type the driver would write for a `type` field: trimmed, unknown types become `Opaque`.
pub fn secret_type(written: &str) -> &'static str {
    let trimmed = written.trim();
    KNOWN_SECRET_TYPES
        .iter()
        .find(|known| **known == trimmed)
        .copied()
        .unwrap_or(SECRET_TYPE_OPAQUE)
}

/// The driver's `ValidateSecretObject`: name, type and data present (name and type as written, untrimmed).
pub fn validate_secret_object(object: &SecretObject) -> Result<(), SecretObjectProblem> {
    if object.secret_name.trim().is_empty() {
        return Err(SecretObjectProblem::NameEmpty);
    }
    if object.secret_type.is_empty() {
        return Err(SecretObjectProblem::TypeEmpty);
    }
    if object.data.is_empty() {
        return Err(SecretObjectProblem::DataEmpty);
    }
    Ok(())
}

/// The Secret's `data` (raw bytes by key) from the mounted files, converted for `kubernetes.io/tls`.
/// A key listed twice takes the later entry's value.
pub fn secret_data(
    data: &[SecretObjectData],
    secret_type: &str,
    files: &MountedFiles,
) -> Result<BTreeMap<String, Zeroizing<Vec<u8>>>, SecretObjectProblem> {
    let mut out = BTreeMap::new();
    for item in data {
        let object_name = item.object_name.trim();
        let key = item.key.trim();
        if object_name.is_empty() {
            return Err(SecretObjectProblem::ObjectNameEmpty);
        }
        if key.is_empty() {
            return Err(SecretObjectProblem::KeyEmpty);
        }
        let content = files
            .get(object_name)
            .ok_or_else(|| SecretObjectProblem::FileNotFound(object_name.to_string()))?;
        let value = if secret_type == SECRET_TYPE_TLS {
            tls_part(content, key).map_err(|problem| SecretObjectProblem::Tls {
                object_name: object_name.to_string(),
                problem,
            })?
        } else {
            Zeroizing::new(content.to_vec())
        };
        out.insert(key.to_string(), value);
    }
    Ok(out)
}

/// The apply body of one `secretObjects` entry in `namespace` (the pod's).
pub fn build_secret(
    object: &SecretObject,
    namespace: &str,
    files: &MountedFiles,
) -> Result<SecretApply, SecretObjectProblem> {
    validate_secret_object(object)?;
    let name = object.secret_name.trim();
    let secret_type = secret_type(&object.secret_type);
    let data = secret_data(&object.data, secret_type, files)?;

    let mut labels = object.labels.clone();
    labels.insert(MANAGED_SECRET_LABEL.to_string(), "true".to_string());
    let mut metadata = json!({
        "name": name,
        "namespace": namespace,
        "labels": labels,
    });
    if !object.annotations.is_empty() {
        metadata["annotations"] = json!(object.annotations);
    }
    let encoded: BTreeMap<&str, String> = data
        .iter()
        .map(|(key, value)| (key.as_str(), STANDARD.encode(value.as_slice())))
        .collect();
    Ok(SecretApply {
        name: name.to_string(),
        namespace: namespace.to_string(),
        body: json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": metadata,
            "type": secret_type,
            "data": encoded,
        }),
    })
}

/// Every `secretObjects` entry of a SecretProviderClass, each on its own: one bad entry does not stop the
/// others, as in the driver. Results are in the entries' order.
pub fn build_secrets(
    spc_namespace: &str,
    spc_name: &str,
    objects: &[SecretObject],
    pod_namespace: &str,
    files: &MountedFiles,
) -> Vec<Result<SecretApply, SyncError>> {
    objects
        .iter()
        .map(|object| {
            validate_secret_object(object).map_err(|problem| SyncError::Invalid {
                spc_namespace: spc_namespace.to_string(),
                spc_name: spc_name.to_string(),
                problem: Box::new(problem),
            })?;
            build_secret(object, pod_namespace, files).map_err(|problem| SyncError::Data {
                spc_namespace: spc_namespace.to_string(),
                spc_name: spc_name.to_string(),
                secret_name: object.secret_name.trim().to_string(),
                problem: Box::new(problem),
            })
        })
        .collect()
}

/// Owners of a synced Secret for one consuming pod: the pod's own owners (e.g. its ReplicaSet), or, for a pod
/// without owners, its SecretProviderClassPodStatus (which is owned by the pod). Only apiVersion, kind, name
/// and uid are kept: a Secret must not name a controller nor block its owners' deletion.
pub fn secret_owner_references(
    pod_owners: &[OwnerReference],
    pod_status_name: &str,
    pod_status_uid: &str,
) -> Vec<OwnerReference> {
    if pod_owners.is_empty() {
        return vec![OwnerReference {
            api_version: API_VERSION.to_string(),
            kind: POD_STATUS_KIND.to_string(),
            name: pod_status_name.to_string(),
            uid: pod_status_uid.to_string(),
            ..OwnerReference::default()
        }];
    }
    pod_owners
        .iter()
        .map(|owner| OwnerReference {
            api_version: owner.api_version.clone(),
            kind: owner.kind.clone(),
            name: owner.name.clone(),
            uid: owner.uid.clone(),
            ..OwnerReference::default()
        })
        .collect()
}

/// The strategic-merge patch (`Patch::Strategic`) adding `owners` to a Secret's owner references; existing
/// entries with other uids stay.
pub fn owner_references_patch(owners: &[OwnerReference]) -> Value {
    json!({ "metadata": { "ownerReferences": owners } })
}

/// The name of the pod's inline CSI volume of this driver that uses SecretProviderClass `spc_name`: a pod status
/// is only synced for a pod that really mounts the class (the driver's step before reading files).
pub fn secrets_store_volume<'a>(pod: &'a Pod, spc_name: &str) -> Option<&'a str> {
    pod.spec.as_ref()?.volumes.as_ref()?.iter().find_map(|volume| {
        let csi = volume.csi.as_ref()?;
        let attributes = csi.volume_attributes.as_ref()?;
        (csi.driver == DRIVER_NAME && attributes.get(CTX_SECRET_PROVIDER_CLASS).map(String::as_str) == Some(spc_name))
            .then_some(volume.name.as_str())
    })
}

/// Whether `target_path` is kubelet's mount path of volume `volume_name` of pod `pod_uid`
/// (`.../pods/<uid>/volumes/kubernetes.io~csi/<volume>/mount`, either separator), as the driver checks before
/// copying files from a path a pod status names.
pub fn target_path_belongs_to(target_path: &str, pod_uid: &str, volume_name: &str) -> bool {
    let segments: Vec<&str> = target_path.split(['/', '\\']).filter(|s| !s.is_empty()).collect();
    segments.len() >= 6
        && segments[segments.len() - 6..] == ["pods", pod_uid, "volumes", "kubernetes.io~csi", volume_name, "mount"]
}

/// The driver's `GetCertPart` for a `kubernetes.io/tls` key.
fn tls_part(content: &[u8], key: &str) -> Result<Zeroizing<Vec<u8>>, TlsProblem> {
    match key {
        TLS_CERT_KEY => tls_certificates(content),
        TLS_PRIVATE_KEY_KEY => tls_private_key(content),
        other => Err(TlsProblem::UnsupportedKey(other.to_string())),
    }
}

/// A PFX file as the provider writes it: binary (`objectEncoding: base64`) or as Key Vault's base64 text.
fn read_pfx(content: &[u8]) -> Result<Pkcs12Archive, String> {
    match Pkcs12Archive::from_pkcs12(content, "") {
        Ok(archive) => Ok(archive),
        Err(binary_error) => match decode_go_base64(content.trim_ascii()) {
            Some(decoded) => Pkcs12Archive::from_pkcs12(&decoded, "").map_err(|e| e.to_string()),
            None => Err(binary_error.to_string()),
        },
    }
}

/// Every `CERTIFICATE` block, re-encoded, in file order; for a PFX, its certificates in bag order.
fn tls_certificates(content: &[u8]) -> Result<Zeroizing<Vec<u8>>, TlsProblem> {
    let blocks = pem_blocks(content);
    let mut out = Zeroizing::new(Vec::new());
    if blocks.is_empty() {
        let archive = read_pfx(content).map_err(TlsProblem::NoCertificate)?;
        for bag in &archive.certs {
            out.extend_from_slice(&pem_encode(CERTIFICATE_LABEL, bag.cert.as_der()));
        }
    } else {
        for (_, der) in blocks.iter().filter(|(label, _)| label == CERTIFICATE_LABEL) {
            out.extend_from_slice(&pem_encode(CERTIFICATE_LABEL, der));
        }
    }
    if out.is_empty() {
        return Err(TlsProblem::NoCertificate("it holds no certificate".into()));
    }
    Ok(out)
}

/// The private key as PKCS#1 `RSA PRIVATE KEY` or SEC1 `EC PRIVATE KEY`. From PEM, the last block that is not
/// a certificate, as the driver picks it; from a PFX, its first key.
fn tls_private_key(content: &[u8]) -> Result<Zeroizing<Vec<u8>>, TlsProblem> {
    let blocks = pem_blocks(content);
    let der = if blocks.is_empty() {
        let archive = read_pfx(content).map_err(TlsProblem::NoPrivateKey)?;
        let bag = archive
            .keys
            .first()
            .ok_or_else(|| TlsProblem::NoPrivateKey("the PFX holds no private key".into()))?;
        Zeroizing::new(bag.key.as_der().to_vec())
    } else {
        blocks
            .into_iter()
            .rev()
            .find(|(label, _)| label != CERTIFICATE_LABEL)
            .map(|(_, der)| der)
            .ok_or_else(|| TlsProblem::NoPrivateKey("the PEM blocks are all certificates".into()))?
    };
    reencode_private_key(&der)
}

/// Tries PKCS#1, then PKCS#8, then SEC1, as the driver does.
fn reencode_private_key(der: &[u8]) -> Result<Zeroizing<Vec<u8>>, TlsProblem> {
    let invalid = |e: der::Error| TlsProblem::InvalidPrivateKey(e.to_string());
    if let Ok(rsa) = pkcs1::RsaPrivateKey::from_der(der) {
        return Ok(pem_encode(
            RSA_PRIVATE_KEY_LABEL,
            &Zeroizing::new(rsa.to_der().map_err(invalid)?),
        ));
    }
    if pkcs8::PrivateKeyInfo::from_der(der).is_ok() {
        return pkcs8_to_traditional(der);
    }
    match sec1::EcPrivateKey::from_der(der) {
        Ok(ec) => {
            let curve = ec
                .parameters
                .and_then(|p| p.named_curve())
                .ok_or_else(|| TlsProblem::InvalidPrivateKey("the SEC1 EC key names no curve".into()))?;
            let curve_any = AnyRef::from(&curve);
            let wrapped = Zeroizing::new(
                pkcs8::PrivateKeyInfo::new(
                    AlgorithmIdentifierRef {
                        oid: EC_PUBLIC_KEY,
                        parameters: Some(curve_any),
                    },
                    der,
                )
                .to_der()
                .map_err(invalid)?,
            );
            pkcs8_to_traditional(&wrapped)
        }
        Err(e) => Err(invalid(e)),
    }
}

/// A PKCS#8 key as PKCS#1 (RSA) or SEC1 with its named curve and public key, as Go's `MarshalPKCS1PrivateKey`
/// and `MarshalECPrivateKey` write them.
fn pkcs8_to_traditional(der: &[u8]) -> Result<Zeroizing<Vec<u8>>, TlsProblem> {
    let invalid = |e: der::Error| TlsProblem::InvalidPrivateKey(e.to_string());
    let normalized = normalize_private_key(der).map_err(|problem| match problem {
        KeyProblem::Algorithm(algorithm) => TlsProblem::UnsupportedKeyType(algorithm),
        other => TlsProblem::InvalidPrivateKey(other.to_string()),
    })?;
    let info =
        pkcs8::PrivateKeyInfo::from_der(&normalized).map_err(|e| TlsProblem::InvalidPrivateKey(e.to_string()))?;
    if info.algorithm.oid != EC_PUBLIC_KEY {
        // normalize_private_key accepts only RSA and EC, so this is RSA: the inner key is PKCS#1.
        let rsa = pkcs1::RsaPrivateKey::from_der(info.private_key).map_err(invalid)?;
        return Ok(pem_encode(
            RSA_PRIVATE_KEY_LABEL,
            &Zeroizing::new(rsa.to_der().map_err(invalid)?),
        ));
    }
    let curve = info
        .algorithm
        .parameters_oid()
        .map_err(|e| TlsProblem::InvalidPrivateKey(e.to_string()))?;
    let inner = sec1::EcPrivateKey::from_der(info.private_key).map_err(invalid)?;
    let sec1_der = Zeroizing::new(
        sec1::EcPrivateKey {
            private_key: inner.private_key,
            parameters: Some(sec1::EcParameters::NamedCurve(curve)),
            public_key: inner.public_key,
        }
        .to_der()
        .map_err(invalid)?,
    );
    Ok(pem_encode(EC_PRIVATE_KEY_LABEL, &sec1_der))
}
