//! SecretProviderClass `parameters` (with the volume attributes already merged in) to a typed mount request.
//! Pure: no I/O.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;
use wisp_shared::cloud::CloudEnvironment;
use wisp_shared::contract::provider_azure as pa;

use crate::content::validate_file_path;

/// What one mount asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountParams {
    pub keyvault_name: String,
    pub tenant_id: String,
    pub cloud: CloudSelection,
    pub identity: IdentityMode,
    pub objects: Vec<ObjectSpec>,
}

/// Which cloud's endpoints a mount uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloudSelection {
    /// A built-in cloud, by its canonical name (e.g. `AzurePublicCloud`).
    Named(String),
    /// A custom cloud described by a go-autorest environment JSON file on the node (`cloudEnvFileName`).
    EnvFile(PathBuf),
    /// No `cloudName`: the agent's `--cloud-name`.
    Default,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityMode {
    WorkloadIdentity {
        client_id: String,
    },
    VmManagedIdentity {
        user_assigned_identity_id: Option<String>,
    },
    /// Credentials come from the `nodePublishSecretRef` secrets (`clientid` / `clientsecret`).
    ServicePrincipal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObjectType {
    Secret,
    Key,
    Cert,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectFormat {
    Pem,
    Pfx,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectEncoding {
    Utf8,
    Hex,
    Base64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectSpec {
    /// Position in the `objects` array, for error messages.
    pub index: usize,
    pub name: String,
    /// File path relative to the mount (`objectAlias`, else `objectName`); validated, may contain `/`.
    pub alias: String,
    pub object_type: ObjectType,
    /// `None` = latest.
    pub version: Option<String>,
    /// 0 or 1 = a single file; N > 1 = files `alias/0` (newest) .. `alias/N-1`.
    pub version_history: u32,
    pub format: ObjectFormat,
    pub encoding: ObjectEncoding,
    /// `None` = the default 0644.
    pub file_permission: Option<u32>,
}

/// Why a SecretProviderClass's parameters cannot be used. The first part of each message is provider-azure's
/// own text where it has one (users search for those); wisp adds the parameter, object and fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    #[error(
        "failed to parse {parameter} flag, error: parsing {value:?}: invalid syntax; use true or false (Go \
         ParseBool: 1, t, T, TRUE, true, True, 0, f, F, FALSE, false, False)"
    )]
    InvalidBool { parameter: &'static str, value: String },
    #[error(
        "only one identity mode can be enabled at a time: usePodIdentity, useVMManagedIdentity, or \
         useAzureTokenProxy"
    )]
    MultipleIdentityModes,
    #[error(
        "usePodIdentity is not supported: aad-pod-identity is deprecated upstream; remove usePodIdentity and set \
         clientID to use the pod's workload identity"
    )]
    PodIdentityUnsupported,
    #[error(
        "useAzureTokenProxy is not supported: AKS identity binding needs the AKS token proxy; remove \
         useAzureTokenProxy and set clientID to use the pod's workload identity"
    )]
    TokenProxyUnsupported,
    #[error("keyvaultName is not provided; set parameters.keyvaultName to the name of the Key Vault")]
    KeyvaultNameMissing,
    #[error(
        "Invalid vault name: {0:?}, must be between 3 and 24 chars; set parameters.keyvaultName to the name of the \
         Key Vault, not its URL"
    )]
    KeyvaultNameLength(String),
    #[error(
        "Invalid vault name: {0:?}, must match [-a-zA-Z0-9]{{3,24}}; set parameters.keyvaultName to the name of \
         the Key Vault, not its URL"
    )]
    KeyvaultNameCharacters(String),
    #[error("tenantId is not provided; set parameters.tenantID to the Microsoft Entra tenant ID of the Key Vault")]
    TenantMissing,
    #[error(
        "cloudName {name} is not valid, error: There is no cloud environment matching the name {name:?}; use one \
         of AzurePublicCloud, AzureUSGovernmentCloud, AzureChinaCloud, AzureGermanCloud, AzureStackCloud"
    )]
    UnknownCloud { name: String },
    #[error(
        "cloudName AzureStackCloud needs a cloud environment file; set parameters.cloudEnvFileName to the path of \
         its JSON file on the node"
    )]
    StackCloudWithoutEnvFile,
    #[error(
        "objects is not set; list the Key Vault objects to mount in parameters.objects (an `array:` of YAML strings)"
    )]
    ObjectsMissing,
    #[error("failed to yaml unmarshal objects, error: {0}")]
    ObjectsYaml(String),
    #[error("objects array is empty; list at least one Key Vault object under parameters.objects `array:`")]
    ObjectsEmpty,
    #[error("unmarshal failed for keyVaultObjects at index {index}, error: {reason}")]
    ObjectYaml { index: usize, reason: String },
    /// A problem with one entry of `objects`.
    #[error("objects array index {index} (objectName {name:?}): {problem}")]
    Object {
        index: usize,
        name: String,
        problem: ObjectProblem,
    },
}

/// What is wrong with one `objects` entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ObjectProblem {
    #[error("objectName is empty; set objectName to the name of the Key Vault secret, key or certificate")]
    NameMissing,
    #[error("Invalid vaultObjectTypes. Should be secret, key, or cert (objectType is {0:?})")]
    InvalidType(String),
    #[error("invalid objectFormat: {0}, should be PEM or PFX")]
    InvalidFormat(String),
    #[error("PFX format only supported for objectType: secret; remove objectFormat or mount the certificate's secret")]
    PfxNotSecret,
    #[error("invalid objectEncoding: {0}, should be hex, base64 or utf-8")]
    InvalidEncoding(String),
    #[error("objectEncoding only supported for objectType: secret; remove objectEncoding")]
    EncodingNotSecret,
    #[error(
        "invalid objectVersionHistory {0:?}; use a whole number: 0 or 1 for one file, N > 1 for the N newest versions"
    )]
    InvalidVersionHistory(String),
    #[error("invalid filePermission {0:?}; use an octal mode from 0000 to 0777, quoted, e.g. \"0644\"")]
    InvalidFilePermission(String),
    #[error("file name must not be empty")]
    FileNameEmpty,
    #[error("file name must be a relative path: {0:?}")]
    FileNameAbsolute(String),
    #[error("file name must not contain '..': {0:?}")]
    FileNameDotDot(String),
    #[error("file name {path:?} is not usable: {reason}")]
    FileNameInvalid { path: String, reason: String },
    #[error("file name {path:?} is also used by objects array index {other}; give one of them a different objectAlias")]
    FileNameConflict { path: String, other: usize },
}

fn param<'a>(params: &'a BTreeMap<String, String>, key: &str) -> &'a str {
    params.get(key).map(|v| v.trim()).unwrap_or("")
}

/// Go's `strconv.ParseBool`, with empty meaning false (as provider-azure reads unset flags).
fn parse_bool(params: &BTreeMap<String, String>, key: &'static str) -> Result<bool, ParamError> {
    match param(params, key) {
        "" | "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        other => Err(ParamError::InvalidBool {
            parameter: key,
            value: other.to_string(),
        }),
    }
}

fn non_empty(value: &str) -> Option<String> {
    (!value.is_empty()).then(|| value.to_string())
}

/// Parses and validates the parameters in provider-azure's order (flags, identity modes, vault, tenant, cloud,
/// objects), stopping at the first error.
pub fn parse_mount_params(params: &BTreeMap<String, String>) -> Result<MountParams, ParamError> {
    let use_pod_identity = parse_bool(params, pa::USE_POD_IDENTITY)?;
    let use_vm_managed_identity = parse_bool(params, pa::USE_VM_MANAGED_IDENTITY)?;
    let use_azure_token_proxy = parse_bool(params, pa::USE_AZURE_TOKEN_PROXY)?;
    if [use_pod_identity, use_vm_managed_identity, use_azure_token_proxy]
        .iter()
        .filter(|enabled| **enabled)
        .count()
        > 1
    {
        return Err(ParamError::MultipleIdentityModes);
    }
    if use_pod_identity {
        return Err(ParamError::PodIdentityUnsupported);
    }
    if use_azure_token_proxy {
        return Err(ParamError::TokenProxyUnsupported);
    }

    let keyvault_name = param(params, pa::KEYVAULT_NAME);
    validate_keyvault_name(keyvault_name)?;

    let tenant_id = match param(params, pa::TENANT_ID) {
        "" => param(params, pa::TENANT_ID_LEGACY),
        tenant => tenant,
    };
    if tenant_id.is_empty() {
        return Err(ParamError::TenantMissing);
    }

    let cloud = cloud_selection(param(params, pa::CLOUD_NAME), param(params, pa::CLOUD_ENV_FILE_NAME))?;

    let client_id = param(params, pa::CLIENT_ID);
    let identity = if use_vm_managed_identity {
        IdentityMode::VmManagedIdentity {
            user_assigned_identity_id: non_empty(param(params, pa::USER_ASSIGNED_IDENTITY_ID)),
        }
    } else if !client_id.is_empty() {
        IdentityMode::WorkloadIdentity {
            client_id: client_id.to_string(),
        }
    } else {
        IdentityMode::ServicePrincipal
    };

    let objects = parse_objects(param(params, pa::OBJECTS))?;

    Ok(MountParams {
        keyvault_name: keyvault_name.to_string(),
        tenant_id: tenant_id.to_string(),
        cloud,
        identity,
        objects,
    })
}

/// A workload identity's client and tenant IDs from elsewhere than the class, e.g. a ServiceAccount's
/// `azure.workload.identity/client-id` and `tenant-id` annotations.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkloadIdentityDefaults<'a> {
    pub client_id: Option<&'a str>,
    pub tenant_id: Option<&'a str>,
}

/// Fills what a class leaves out of a workload identity: `clientID` when the class names none and selects no
/// other identity mode (VM managed identity, pod identity, token proxy), then the tenant when the class names none
/// and the mount is a workload identity. The class's own values always win; an unreadable mode flag is left for
/// [`parse_mount_params`] to report.
pub fn apply_workload_identity_defaults(params: &mut BTreeMap<String, String>, defaults: WorkloadIdentityDefaults<'_>) {
    let other_mode = [
        pa::USE_POD_IDENTITY,
        pa::USE_VM_MANAGED_IDENTITY,
        pa::USE_AZURE_TOKEN_PROXY,
    ]
    .into_iter()
    .any(|flag| parse_bool(params, flag).unwrap_or(true));
    if other_mode {
        return;
    }
    if let Some(client_id) = defaults.client_id.map(str::trim).filter(|id| !id.is_empty())
        && param(params, pa::CLIENT_ID).is_empty()
    {
        params.insert(pa::CLIENT_ID.to_string(), client_id.to_string());
    }
    let tenant_named = !param(params, pa::TENANT_ID).is_empty() || !param(params, pa::TENANT_ID_LEGACY).is_empty();
    if let Some(tenant_id) = defaults.tenant_id.map(str::trim).filter(|id| !id.is_empty())
        && !tenant_named
        && !param(params, pa::CLIENT_ID).is_empty()
    {
        params.insert(pa::TENANT_ID.to_string(), tenant_id.to_string());
    }
}

fn validate_keyvault_name(name: &str) -> Result<(), ParamError> {
    if name.is_empty() {
        return Err(ParamError::KeyvaultNameMissing);
    }
    // Upstream counts bytes; a multi-byte name fails the character rule below either way.
    if !(3..=24).contains(&name.len()) {
        return Err(ParamError::KeyvaultNameLength(name.to_string()));
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(ParamError::KeyvaultNameCharacters(name.to_string()));
    }
    Ok(())
}

/// Upstream hands `cloudEnvFileName` to go-autorest, which only reads it for `AzureStackCloud`; a file named
/// without any `cloudName` is taken as choosing that custom cloud too, since nothing else could use it.
fn cloud_selection(cloud_name: &str, env_file: &str) -> Result<CloudSelection, ParamError> {
    if CloudEnvironment::is_stack_cloud(cloud_name) || (cloud_name.is_empty() && !env_file.is_empty()) {
        return match env_file {
            "" => Err(ParamError::StackCloudWithoutEnvFile),
            path => Ok(CloudSelection::EnvFile(PathBuf::from(path))),
        };
    }
    if cloud_name.is_empty() {
        return Ok(CloudSelection::Default);
    }
    match CloudEnvironment::builtin(cloud_name) {
        Ok(cloud) => Ok(CloudSelection::Named(cloud.name)),
        Err(_) => Err(ParamError::UnknownCloud {
            name: cloud_name.to_string(),
        }),
    }
}

#[derive(Deserialize)]
struct ObjectsArray {
    #[serde(default)]
    array: Option<Vec<String>>,
}

/// One `objects` entry as written. Every field is read as text, as yaml.v3 does into provider-azure's string
/// fields: an unquoted `0755` stays `"0755"`, an unquoted `5` is `"5"`. Unknown keys are ignored, as upstream.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawObject {
    object_name: Option<String>,
    object_alias: Option<String>,
    object_type: Option<String>,
    object_version: Option<String>,
    object_version_history: Option<String>,
    object_format: Option<String>,
    object_encoding: Option<String>,
    file_permission: Option<String>,
}

fn parse_objects(objects: &str) -> Result<Vec<ObjectSpec>, ParamError> {
    if objects.is_empty() {
        return Err(ParamError::ObjectsMissing);
    }
    let array: ObjectsArray = serde_saphyr::from_str(objects).map_err(|e| ParamError::ObjectsYaml(e.to_string()))?;
    let items = array.array.unwrap_or_default();
    if items.is_empty() {
        return Err(ParamError::ObjectsEmpty);
    }
    let mut specs: Vec<ObjectSpec> = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let raw: RawObject = if item.trim().is_empty() {
            RawObject::default()
        } else {
            serde_saphyr::from_str(item).map_err(|e| ParamError::ObjectYaml {
                index,
                reason: e.to_string(),
            })?
        };
        let spec = object_spec(index, raw)?;
        if let Some(other) = specs.iter().find(|other| paths_conflict(other, &spec)) {
            return Err(ParamError::Object {
                index,
                name: spec.name.clone(),
                problem: ObjectProblem::FileNameConflict {
                    path: spec.alias.clone(),
                    other: other.index,
                },
            });
        }
        specs.push(spec);
    }
    Ok(specs)
}

/// Two objects conflict when one would write the file (or directory, with history) the other needs.
fn paths_conflict(a: &ObjectSpec, b: &ObjectSpec) -> bool {
    let nested = |outer: &str, inner: &str| {
        inner.len() > outer.len() && inner.starts_with(outer) && inner.as_bytes()[outer.len()] == b'/'
    };
    a.alias == b.alias || nested(&a.alias, &b.alias) || nested(&b.alias, &a.alias)
}

fn text(value: Option<String>) -> String {
    value.map(|v| v.trim().to_string()).unwrap_or_default()
}

fn object_spec(index: usize, raw: RawObject) -> Result<ObjectSpec, ParamError> {
    let name = text(raw.object_name);
    let fail = |problem: ObjectProblem| ParamError::Object {
        index,
        name: name.clone(),
        problem,
    };
    if name.is_empty() {
        return Err(fail(ObjectProblem::NameMissing));
    }
    let object_type_text = text(raw.object_type);
    let object_type = match object_type_text.to_ascii_lowercase().as_str() {
        "secret" => ObjectType::Secret,
        "key" => ObjectType::Key,
        "cert" => ObjectType::Cert,
        _ => return Err(fail(ObjectProblem::InvalidType(object_type_text))),
    };

    let format_text = text(raw.object_format);
    let format = match format_text.to_ascii_lowercase().as_str() {
        "" | "pem" => ObjectFormat::Pem,
        "pfx" => ObjectFormat::Pfx,
        _ => return Err(fail(ObjectProblem::InvalidFormat(format_text))),
    };
    if format == ObjectFormat::Pfx && object_type != ObjectType::Secret {
        return Err(fail(ObjectProblem::PfxNotSecret));
    }

    let encoding_text = text(raw.object_encoding);
    if !encoding_text.is_empty() && object_type != ObjectType::Secret {
        return Err(fail(ObjectProblem::EncodingNotSecret));
    }
    let encoding = match encoding_text.to_ascii_lowercase().as_str() {
        "" | "utf-8" => ObjectEncoding::Utf8,
        "hex" => ObjectEncoding::Hex,
        "base64" => ObjectEncoding::Base64,
        _ => return Err(fail(ObjectProblem::InvalidEncoding(encoding_text))),
    };

    let alias = match text(raw.object_alias) {
        alias if alias.is_empty() => name.clone(),
        alias => alias,
    };
    validate_file_name(&alias).map_err(fail)?;

    let history_text = text(raw.object_version_history);
    let version_history = match history_text.as_str() {
        "" => 0,
        digits => digits
            .parse::<i32>()
            .ok()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| fail(ObjectProblem::InvalidVersionHistory(history_text.clone())))?,
    };

    let permission_text = text(raw.file_permission);
    let file_permission = match permission_text.as_str() {
        "" => None,
        octal => Some(
            parse_file_permission(octal)
                .ok_or_else(|| fail(ObjectProblem::InvalidFilePermission(permission_text.clone())))?,
        ),
    };

    Ok(ObjectSpec {
        index,
        name: name.clone(),
        alias,
        object_type,
        version: non_empty(&text(raw.object_version)),
        version_history,
        format,
        encoding,
        file_permission,
    })
}

/// Only permission bits: a set-id or sticky bit on a secret file is never wanted.
fn parse_file_permission(octal: &str) -> Option<u32> {
    if !octal.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return None;
    }
    u32::from_str_radix(octal, 8).ok().filter(|mode| *mode <= 0o777)
}

/// provider-azure's file name rule (any `..` substring is refused, stricter than the writer's element rule),
/// then the writer's path rules, so a bad alias fails when the parameters are read rather than at write time.
fn validate_file_name(path: &str) -> Result<(), ObjectProblem> {
    if path.is_empty() {
        return Err(ObjectProblem::FileNameEmpty);
    }
    if path.starts_with('/') {
        return Err(ObjectProblem::FileNameAbsolute(path.to_string()));
    }
    if path.contains("..") {
        return Err(ObjectProblem::FileNameDotDot(path.to_string()));
    }
    validate_file_path(path).map_err(|e| ObjectProblem::FileNameInvalid {
        path: path.to_string(),
        reason: e.to_string(),
    })
}

impl ObjectType {
    /// The canonical lower-case name (`secret`, `key`, `cert`), whatever case the SecretProviderClass used: in
    /// messages, object ids and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectType::Secret => "secret",
            ObjectType::Key => "key",
            ObjectType::Cert => "cert",
        }
    }
}

impl std::fmt::Display for ObjectType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests;
