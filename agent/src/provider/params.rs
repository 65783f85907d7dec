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
mod tests {
    use pretty_assertions::assert_eq;
    use rstest::rstest;

    use super::*;

    const OBJECTS: &str = "array:\n  - |\n    objectName: secret1\n    objectType: secret\n";

    fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        let mut map: BTreeMap<String, String> =
            [("keyvaultName", "kv-1"), ("tenantID", "tenant"), ("objects", OBJECTS)]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        for (key, value) in pairs {
            map.insert(key.to_string(), value.to_string());
        }
        map
    }

    fn object(index: usize, name: &str, alias: &str, object_type: ObjectType) -> ObjectSpec {
        ObjectSpec {
            index,
            name: name.into(),
            alias: alias.into(),
            object_type,
            version: None,
            version_history: 0,
            format: ObjectFormat::Pem,
            encoding: ObjectEncoding::Utf8,
            file_permission: None,
        }
    }

    fn objects_yaml(items: &[&str]) -> String {
        let mut yaml = String::from("array:\n");
        for item in items {
            yaml.push_str("  - |\n");
            for line in item.lines() {
                yaml.push_str(&format!("    {line}\n"));
            }
        }
        yaml
    }

    fn parse_objects_of(items: &[&str]) -> Result<Vec<ObjectSpec>, ParamError> {
        parse_mount_params(&params(&[("objects", &objects_yaml(items))])).map(|p| p.objects)
    }

    #[test]
    fn minimal_parameters_use_defaults() {
        assert_eq!(
            parse_mount_params(&params(&[])).unwrap(),
            MountParams {
                keyvault_name: "kv-1".into(),
                tenant_id: "tenant".into(),
                cloud: CloudSelection::Default,
                identity: IdentityMode::ServicePrincipal,
                objects: vec![object(0, "secret1", "secret1", ObjectType::Secret)],
            }
        );
    }

    #[test]
    fn every_object_field_is_read_and_trimmed() {
        let yaml = "array:\n  - |\n    objectName: \" cert1 \"\n    objectAlias: dir/tls.pem\n    objectType: SECRET\n    objectVersion: abc123\n    objectVersionHistory: 3\n    objectFormat: PFX\n    objectEncoding: Base64\n    filePermission: 0600\n    unknownKey: ignored\n  - |\n    objectName: key1\n    objectType: Key\n    objectVersion: \"\"\n    objectVersionHistory: \"1\"\n    filePermission: \"640\"\n  - |\n    objectName: c\n    objectType: cert\n    objectFormat: pem\n";
        let parsed = parse_mount_params(&params(&[("objects", yaml), ("clientID", " client ")])).unwrap();
        assert_eq!(
            parsed.identity,
            IdentityMode::WorkloadIdentity {
                client_id: "client".into()
            }
        );
        assert_eq!(
            parsed.objects,
            vec![
                ObjectSpec {
                    index: 0,
                    name: "cert1".into(),
                    alias: "dir/tls.pem".into(),
                    object_type: ObjectType::Secret,
                    version: Some("abc123".into()),
                    version_history: 3,
                    format: ObjectFormat::Pfx,
                    encoding: ObjectEncoding::Base64,
                    file_permission: Some(0o600),
                },
                ObjectSpec {
                    version_history: 1,
                    file_permission: Some(0o640),
                    ..object(1, "key1", "key1", ObjectType::Key)
                },
                object(2, "c", "c", ObjectType::Cert),
            ]
        );
    }

    #[rstest]
    #[case::vm_system(&[("useVMManagedIdentity", "true")], IdentityMode::VmManagedIdentity { user_assigned_identity_id: None })]
    #[case::vm_user(
        &[("useVMManagedIdentity", "T"), ("userAssignedIdentityID", "uami"), ("clientID", "ignored")],
        IdentityMode::VmManagedIdentity { user_assigned_identity_id: Some("uami".into()) }
    )]
    #[case::workload(&[("clientID", "cid"), ("usePodIdentity", "false"), ("useVMManagedIdentity", " 0 ")], IdentityMode::WorkloadIdentity { client_id: "cid".into() })]
    #[case::service_principal(&[("useVMManagedIdentity", "False")], IdentityMode::ServicePrincipal)]
    fn identity_mode(#[case] pairs: &[(&str, &str)], #[case] expected: IdentityMode) {
        assert_eq!(parse_mount_params(&params(pairs)).unwrap().identity, expected);
    }

    #[rstest]
    #[case::tenant_id_first(&[("tenantID", "new"), ("tenantId", "old")], "new")]
    #[case::legacy_tenant_id(&[("tenantID", " "), ("tenantId", "old")], "old")]
    fn tenant(#[case] pairs: &[(&str, &str)], #[case] expected: &str) {
        assert_eq!(parse_mount_params(&params(pairs)).unwrap().tenant_id, expected);
    }

    #[rstest]
    #[case::named(&[("cloudName", "azurechinacloud")], CloudSelection::Named("AzureChinaCloud".into()))]
    #[case::public(&[("cloudName", "AzurePublicCloud")], CloudSelection::Named("AzurePublicCloud".into()))]
    #[case::stack(&[("cloudName", "AzureStackCloud"), ("cloudEnvFileName", "/etc/kubernetes/akscustom.json")], CloudSelection::EnvFile("/etc/kubernetes/akscustom.json".into()))]
    #[case::file_only(&[("cloudEnvFileName", "/etc/env.json")], CloudSelection::EnvFile("/etc/env.json".into()))]
    #[case::file_ignored_for_builtin(&[("cloudName", "AzureUSGovernmentCloud"), ("cloudEnvFileName", "/x")], CloudSelection::Named("AzureUSGovernmentCloud".into()))]
    fn cloud(#[case] pairs: &[(&str, &str)], #[case] expected: CloudSelection) {
        assert_eq!(parse_mount_params(&params(pairs)).unwrap().cloud, expected);
    }

    #[rstest]
    #[case::bool_syntax(
        &[("useVMManagedIdentity", "yes")],
        "failed to parse useVMManagedIdentity flag, error: parsing \"yes\": invalid syntax; use true or false (Go \
         ParseBool: 1, t, T, TRUE, true, True, 0, f, F, FALSE, false, False)"
    )]
    #[case::pod_identity_bool(
        &[("usePodIdentity", "tRUE")],
        "failed to parse usePodIdentity flag, error: parsing \"tRUE\": invalid syntax; use true or false (Go \
         ParseBool: 1, t, T, TRUE, true, True, 0, f, F, FALSE, false, False)"
    )]
    #[case::token_proxy_bool(
        &[("useAzureTokenProxy", "2")],
        "failed to parse useAzureTokenProxy flag, error: parsing \"2\": invalid syntax; use true or false (Go \
         ParseBool: 1, t, T, TRUE, true, True, 0, f, F, FALSE, false, False)"
    )]
    #[case::two_modes(
        &[("useVMManagedIdentity", "true"), ("useAzureTokenProxy", "1")],
        "only one identity mode can be enabled at a time: usePodIdentity, useVMManagedIdentity, or useAzureTokenProxy"
    )]
    #[case::pod_identity(
        &[("usePodIdentity", "true")],
        "usePodIdentity is not supported: aad-pod-identity is deprecated upstream; remove usePodIdentity and set \
         clientID to use the pod's workload identity"
    )]
    #[case::token_proxy(
        &[("useAzureTokenProxy", "true"), ("clientID", "c")],
        "useAzureTokenProxy is not supported: AKS identity binding needs the AKS token proxy; remove \
         useAzureTokenProxy and set clientID to use the pod's workload identity"
    )]
    #[case::no_vault(&[("keyvaultName", " ")], "keyvaultName is not provided; set parameters.keyvaultName to the name of the Key Vault")]
    #[case::vault_short(
        &[("keyvaultName", "kv")],
        "Invalid vault name: \"kv\", must be between 3 and 24 chars; set parameters.keyvaultName to the name of the \
         Key Vault, not its URL"
    )]
    #[case::vault_long(
        &[("keyvaultName", "longkeyvaultnamewhichisnotvalid")],
        "Invalid vault name: \"longkeyvaultnamewhichisnotvalid\", must be between 3 and 24 chars; set \
         parameters.keyvaultName to the name of the Key Vault, not its URL"
    )]
    #[case::vault_chars(
        &[("keyvaultName", "kv_test")],
        "Invalid vault name: \"kv_test\", must match [-a-zA-Z0-9]{3,24}; set parameters.keyvaultName to the name of \
         the Key Vault, not its URL"
    )]
    #[case::no_tenant(
        &[("tenantID", ""), ("tenantId", " ")],
        "tenantId is not provided; set parameters.tenantID to the Microsoft Entra tenant ID of the Key Vault"
    )]
    #[case::bad_cloud(
        &[("cloudName", "MoonCloud")],
        "cloudName MoonCloud is not valid, error: There is no cloud environment matching the name \"MoonCloud\"; use \
         one of AzurePublicCloud, AzureUSGovernmentCloud, AzureChinaCloud, AzureGermanCloud, AzureStackCloud"
    )]
    #[case::stack_without_file(
        &[("cloudName", "azurestackcloud")],
        "cloudName AzureStackCloud needs a cloud environment file; set parameters.cloudEnvFileName to the path of its \
         JSON file on the node"
    )]
    #[case::no_objects(
        &[("objects", "  ")],
        "objects is not set; list the Key Vault objects to mount in parameters.objects (an `array:` of YAML strings)"
    )]
    #[case::empty_array(
        &[("objects", "array: []")],
        "objects array is empty; list at least one Key Vault object under parameters.objects `array:`"
    )]
    #[case::no_array_key(
        &[("objects", "other: 1")],
        "objects array is empty; list at least one Key Vault object under parameters.objects `array:`"
    )]
    fn parameter_errors(#[case] pairs: &[(&str, &str)], #[case] expected: &str) {
        assert_eq!(parse_mount_params(&params(pairs)).unwrap_err().to_string(), expected);
    }

    #[test]
    fn yaml_errors_keep_upstream_prefixes() {
        let error = parse_mount_params(&params(&[("objects", "array: [unclosed")])).unwrap_err();
        assert!(matches!(error, ParamError::ObjectsYaml(_)), "{error:?}");
        assert!(
            error
                .to_string()
                .starts_with("failed to yaml unmarshal objects, error: "),
            "{error}"
        );

        let error = parse_objects_of(&["objectName: a\nobjectType: secret", "- a list"]).unwrap_err();
        assert!(matches!(error, ParamError::ObjectYaml { index: 1, .. }), "{error:?}");
        assert!(
            error
                .to_string()
                .starts_with("unmarshal failed for keyVaultObjects at index 1, error: "),
            "{error}"
        );
    }

    #[rstest]
    #[case::no_name(
        "objectType: secret",
        "objects array index 0 (objectName \"\"): objectName is empty; set objectName to the name of the Key Vault secret, key or certificate"
    )]
    #[case::empty_item(
        "",
        "objects array index 0 (objectName \"\"): objectName is empty; set objectName to the name of the Key Vault secret, key or certificate"
    )]
    #[case::bad_type(
        "objectName: a\nobjectType: secrets",
        "objects array index 0 (objectName \"a\"): Invalid vaultObjectTypes. Should be secret, key, or cert (objectType is \"secrets\")"
    )]
    #[case::no_type(
        "objectName: a",
        "objects array index 0 (objectName \"a\"): Invalid vaultObjectTypes. Should be secret, key, or cert (objectType is \"\")"
    )]
    #[case::bad_format(
        "objectName: a\nobjectType: secret\nobjectFormat: der",
        "objects array index 0 (objectName \"a\"): invalid objectFormat: der, should be PEM or PFX"
    )]
    #[case::pfx_on_cert(
        "objectName: a\nobjectType: cert\nobjectFormat: PFX",
        "objects array index 0 (objectName \"a\"): PFX format only supported for objectType: secret; remove objectFormat or mount the certificate's secret"
    )]
    #[case::encoding_on_key(
        "objectName: a\nobjectType: key\nobjectEncoding: utf-8",
        "objects array index 0 (objectName \"a\"): objectEncoding only supported for objectType: secret; remove objectEncoding"
    )]
    #[case::bad_encoding(
        "objectName: a\nobjectType: secret\nobjectEncoding: base32",
        "objects array index 0 (objectName \"a\"): invalid objectEncoding: base32, should be hex, base64 or utf-8"
    )]
    #[case::bad_history(
        "objectName: a\nobjectType: secret\nobjectVersionHistory: two",
        "objects array index 0 (objectName \"a\"): invalid objectVersionHistory \"two\"; use a whole number: 0 or 1 for one file, N > 1 for the N newest versions"
    )]
    #[case::negative_history(
        "objectName: a\nobjectType: secret\nobjectVersionHistory: -1",
        "objects array index 0 (objectName \"a\"): invalid objectVersionHistory \"-1\"; use a whole number: 0 or 1 for one file, N > 1 for the N newest versions"
    )]
    #[case::permission_not_octal(
        "objectName: a\nobjectType: secret\nfilePermission: \"0900\"",
        "objects array index 0 (objectName \"a\"): invalid filePermission \"0900\"; use an octal mode from 0000 to 0777, quoted, e.g. \"0644\""
    )]
    #[case::permission_decimal_looking(
        "objectName: a\nobjectType: secret\nfilePermission: 900",
        "objects array index 0 (objectName \"a\"): invalid filePermission \"900\"; use an octal mode from 0000 to 0777, quoted, e.g. \"0644\""
    )]
    #[case::permission_setuid(
        "objectName: a\nobjectType: secret\nfilePermission: \"4755\"",
        "objects array index 0 (objectName \"a\"): invalid filePermission \"4755\"; use an octal mode from 0000 to 0777, quoted, e.g. \"0644\""
    )]
    #[case::permission_sign(
        "objectName: a\nobjectType: secret\nfilePermission: \"+644\"",
        "objects array index 0 (objectName \"a\"): invalid filePermission \"+644\"; use an octal mode from 0000 to 0777, quoted, e.g. \"0644\""
    )]
    #[case::absolute_alias(
        "objectName: a\nobjectType: secret\nobjectAlias: /etc/passwd",
        "objects array index 0 (objectName \"a\"): file name must be a relative path: \"/etc/passwd\""
    )]
    #[case::dotdot_alias(
        "objectName: a\nobjectType: secret\nobjectAlias: ../x",
        "objects array index 0 (objectName \"a\"): file name must not contain '..': \"../x\""
    )]
    #[case::dotdot_substring(
        "objectName: a..b\nobjectType: secret",
        "objects array index 0 (objectName \"a..b\"): file name must not contain '..': \"a..b\""
    )]
    #[case::unclean_alias(
        "objectName: a\nobjectType: secret\nobjectAlias: dir//x",
        "objects array index 0 (objectName \"a\"): file name \"dir//x\" is not usable: invalid filepath: \"dir//x\""
    )]
    #[case::trailing_slash(
        "objectName: a\nobjectType: secret\nobjectAlias: dir/",
        "objects array index 0 (objectName \"a\"): file name \"dir/\" is not usable: invalid filepath: \"dir/\""
    )]
    #[case::dot_alias(
        "objectName: a\nobjectType: secret\nobjectAlias: ./x",
        "objects array index 0 (objectName \"a\"): file name \"./x\" is not usable: invalid filepath: \"./x\""
    )]
    fn object_errors(#[case] item: &str, #[case] expected: &str) {
        assert_eq!(parse_objects_of(&[item]).unwrap_err().to_string(), expected);
    }

    #[test]
    fn long_file_name_element_is_refused() {
        let item = format!("objectName: {}\nobjectType: secret", "n".repeat(256));
        assert_eq!(
            parse_objects_of(&[&item]).unwrap_err(),
            ParamError::Object {
                index: 0,
                name: "n".repeat(256),
                problem: ObjectProblem::FileNameInvalid {
                    path: "n".repeat(256),
                    reason: "invalid path: filenames must be less than or equal to 255 characters".into(),
                },
            }
        );
    }

    #[rstest]
    #[case::same_alias(&["objectName: a\nobjectType: secret", "objectName: b\nobjectAlias: a\nobjectType: key"], "objects array index 1 (objectName \"b\"): file name \"a\" is also used by objects array index 0; give one of them a different objectAlias")]
    #[case::file_then_dir(&["objectName: a\nobjectType: secret", "objectName: b\nobjectAlias: a/b\nobjectType: secret"], "objects array index 1 (objectName \"b\"): file name \"a/b\" is also used by objects array index 0; give one of them a different objectAlias")]
    #[case::dir_then_file(&["objectName: x\nobjectAlias: d/x\nobjectType: secret", "objectName: d\nobjectType: cert"], "objects array index 1 (objectName \"d\"): file name \"d\" is also used by objects array index 0; give one of them a different objectAlias")]
    fn conflicting_file_names(#[case] items: &[&str], #[case] expected: &str) {
        assert_eq!(parse_objects_of(items).unwrap_err().to_string(), expected);
    }

    #[test]
    fn similar_names_do_not_conflict() {
        let objects = parse_objects_of(&[
            "objectName: a\nobjectType: secret",
            "objectName: ab\nobjectType: secret",
            "objectName: c\nobjectAlias: a-dir/c\nobjectType: secret",
        ])
        .unwrap();
        assert_eq!(objects.len(), 3);
    }

    #[test]
    fn object_type_display() {
        assert_eq!(
            [ObjectType::Secret, ObjectType::Key, ObjectType::Cert].map(|t| t.to_string()),
            ["secret", "key", "cert"]
        );
    }
}
