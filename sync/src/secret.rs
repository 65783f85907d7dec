//! A SecretSync and the files its class renders → the Secret to apply: named and namespaced like the SecretSync,
//! its `secretObject` labels plus `secrets-store.sync.x-k8s.io/secretsync=<name>`, its annotations, one owner
//! reference to the SecretSync (so the Secret is garbage-collected with it), its type (default `Opaque`), and
//! `data` from `sourcePath` → `targetKey` with the `secretObjects` rules (`kubernetes.io/tls` conversions). The
//! checks before it: the reserved `secrets-store.sync.x-k8s.io` prefix on labels and annotations, and the
//! SecretSync's own fields as the CRD validates them. Pure.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::json;
// The agent's Secret to apply: its Debug never shows the body, whose data are secrets.
use wisp_agent::library::SecretApply;
use wisp_agent::library::{RenderedFile, SecretObjectProblem, secret_data};
use zeroize::Zeroizing;

use crate::conditions::Reason;
use crate::secretsync::{API_VERSION, KIND, SecretSync};

/// The prefix of the label and annotation keys reserved for the controller.
pub const RESERVED_PREFIX: &str = "secrets-store.sync.x-k8s.io";
/// The label every synced Secret carries, valued with its SecretSync's name.
pub const SECRET_SYNC_LABEL: &str = "secrets-store.sync.x-k8s.io/secretsync";
/// Server-side apply field manager of the Secrets (upstream's, so a migrated Secret keeps one manager).
pub const FIELD_MANAGER: &str = "secrets-store-sync-controller";

const MAX_NAME_LENGTH: usize = 253;
/// A label value's limit: the SecretSync's name is the value of [`SECRET_SYNC_LABEL`].
const MAX_LABEL_VALUE_LENGTH: usize = 63;
/// Secrets of this type are issued by Kubernetes for a ServiceAccount; the API server refuses them without one.
const SERVICE_ACCOUNT_TOKEN_TYPE: &str = "kubernetes.io/service-account-token";

/// Why no Secret is built; each maps to upstream's condition reason. Texts name the field and the fix; none holds
/// any secret value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error(
        "label {0} is reserved for use by the Secrets Store Sync Controller; remove it from spec.secretObject.labels"
    )]
    ReservedLabel(String),
    #[error(
        "annotation {0} is reserved for use by the Secrets Store Sync Controller; remove it from \
         spec.secretObject.annotations"
    )]
    ReservedAnnotation(String),
    #[error(
        "metadata.name is {length} characters long; the Secret's label {SECRET_SYNC_LABEL} holds it and a label \
         value has at most {MAX_LABEL_VALUE_LENGTH}: give the SecretSync a shorter name"
    )]
    NameTooLong { length: usize },
    #[error("spec.{field} is not valid: {problem}")]
    Invalid { field: &'static str, problem: String },
    #[error(
        "spec.secretObject.data[{index}].sourcePath {path:?} is not a file the SecretProviderClass writes (it \
         writes: {written}); use an objectAlias or objectName, or <alias>/<n> for version history"
    )]
    SourceMissing {
        index: usize,
        path: String,
        written: String,
    },
    #[error("spec.secretObject.data cannot become a {secret_type} Secret: {problem}")]
    Data {
        secret_type: String,
        #[source]
        problem: SecretObjectProblem,
    },
}

impl SecretError {
    /// Upstream's condition reason for this failure.
    pub fn reason(&self) -> Reason {
        match self {
            SecretError::ReservedLabel(_) => Reason::InvalidClusterSecretLabelError,
            SecretError::ReservedAnnotation(_) => Reason::InvalidClusterSecretAnnotationError,
            SecretError::NameTooLong { .. }
            | SecretError::Invalid { .. }
            | SecretError::SourceMissing { .. }
            | SecretError::Data { .. } => Reason::UserInputValidationFailed,
        }
    }
}

/// The checks made before anything is fetched: reserved keys first (their own reasons), then the fields.
pub fn validate(sync: &SecretSync) -> Result<(), SecretError> {
    let object = &sync.spec.secret_object;
    if let Some(key) = object.labels.keys().find(|k| k.starts_with(RESERVED_PREFIX)) {
        return Err(SecretError::ReservedLabel(key.clone()));
    }
    if let Some(key) = object.annotations.keys().find(|k| k.starts_with(RESERVED_PREFIX)) {
        return Err(SecretError::ReservedAnnotation(key.clone()));
    }
    let name_length = sync.metadata.name.as_deref().unwrap_or("").len();
    if name_length > MAX_LABEL_VALUE_LENGTH {
        return Err(SecretError::NameTooLong { length: name_length });
    }
    let invalid = |field, problem: &str| {
        Err(SecretError::Invalid {
            field,
            problem: problem.to_string(),
        })
    };
    if sync.spec.secret_provider_class_name.is_empty() {
        return invalid(
            "secretProviderClassName",
            "it is required: name a SecretProviderClass of this namespace",
        );
    }
    if sync.spec.service_account_name.is_empty() {
        return invalid(
            "serviceAccountName",
            "it is required: name the ServiceAccount whose identity reads the vault",
        );
    }
    if object.secret_type.chars().any(char::is_whitespace) {
        return invalid(
            "secretObject.type",
            "it must not contain whitespace, e.g. Opaque or kubernetes.io/tls",
        );
    }
    if object.type_or_default() == SERVICE_ACCOUNT_TOKEN_TYPE {
        return invalid(
            "secretObject.type",
            "kubernetes.io/service-account-token Secrets are issued by Kubernetes for a ServiceAccount and not \
             written by wisp-sync; use another type, e.g. Opaque",
        );
    }
    if object.data.is_empty() {
        return invalid(
            "secretObject.data",
            "it needs at least one entry of sourcePath (a file of the class) and targetKey (a key of the Secret)",
        );
    }
    let mut keys = BTreeSet::new();
    for (index, entry) in object.data.iter().enumerate() {
        for (field, value) in [("sourcePath", &entry.source_path), ("targetKey", &entry.target_key)] {
            if value.is_empty() || value.len() > MAX_NAME_LENGTH {
                return Err(SecretError::Invalid {
                    field: "secretObject.data",
                    problem: format!("entry {index}: {field} must be 1 to {MAX_NAME_LENGTH} characters"),
                });
            }
        }
        if !keys.insert(entry.target_key.as_str()) {
            return Err(SecretError::Invalid {
                field: "secretObject.data",
                problem: format!(
                    "targetKey {:?} is listed twice; each key of the Secret once",
                    entry.target_key
                ),
            });
        }
    }
    Ok(())
}

/// The Secret's type as written: as given, `Opaque` when empty (as upstream's sync controller; Kubernetes allows
/// any type name, unlike `secretObjects` sync, which turns unknown types into `Opaque`).
pub fn secret_type_of(sync: &SecretSync) -> &str {
    sync.spec.secret_object.type_or_default()
}

/// The Secret's data (raw bytes by key) from the rendered files.
pub fn data_of(sync: &SecretSync, files: &[RenderedFile]) -> Result<BTreeMap<String, Zeroizing<Vec<u8>>>, SecretError> {
    let entries = &sync.spec.secret_object.data;
    for (index, entry) in entries.iter().enumerate() {
        if !files.iter().any(|f| f.path == entry.source_path) {
            return Err(SecretError::SourceMissing {
                index,
                path: entry.source_path.clone(),
                written: files.iter().map(|f| f.path.as_str()).collect::<Vec<_>>().join(", "),
            });
        }
    }
    let pairs: Vec<(String, String)> = entries
        .iter()
        .map(|e| (e.source_path.clone(), e.target_key.clone()))
        .collect();
    let secret_type = secret_type_of(sync);
    secret_data(&pairs, secret_type, files).map_err(|problem| SecretError::Data {
        secret_type: secret_type.to_string(),
        problem,
    })
}

/// The apply body of the SecretSync's Secret holding `data`.
pub fn build_secret(sync: &SecretSync, data: &BTreeMap<String, Zeroizing<Vec<u8>>>) -> SecretApply {
    let name = sync.metadata.name.clone().unwrap_or_default();
    let namespace = sync.metadata.namespace.clone().unwrap_or_default();
    let object = &sync.spec.secret_object;
    let mut labels = object.labels.clone();
    labels.insert(SECRET_SYNC_LABEL.to_string(), name.clone());
    let mut metadata = json!({
        "name": name,
        "namespace": namespace,
        "labels": labels,
        "ownerReferences": [{
            "apiVersion": API_VERSION,
            "kind": KIND,
            "name": name,
            "uid": sync.metadata.uid.clone().unwrap_or_default(),
        }],
    });
    if !object.annotations.is_empty() {
        metadata["annotations"] = json!(object.annotations);
    }
    let encoded: BTreeMap<&str, String> = data
        .iter()
        .map(|(key, value)| (key.as_str(), STANDARD.encode(value.as_slice())))
        .collect();
    SecretApply {
        name,
        namespace,
        body: json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": metadata,
            "type": secret_type_of(sync),
            "data": encoded,
        }),
    }
}

#[cfg(test)]
mod tests;
