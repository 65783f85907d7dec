//! The pod mutation as a pure function: the pod as the API server sent it (a [`Pod`] view of the raw JSON), the
//! ServiceAccount's annotations and the webhook's configuration in; a JSON Patch of `add` operations, or a
//! denial, out.
//!
//! The pod is never deserialized into typed k8s-openapi structs, and the patch only adds: a field this code does
//! not model (a newer Kubernetes' `restartPolicy` on an init container, upstream issue #1312) can then neither be
//! dropped nor rewritten. Typed k8s-openapi values are only used to build the objects that are added; each is
//! serialized once per pod and its JSON text copied into every operation that adds it.

use std::collections::BTreeMap;

use json_patch::Patch;
#[cfg(test)]
use json_patch::PatchOperation;
use k8s_openapi::api::core::v1::{
    CSIVolumeSource, Capabilities, Container, ContainerPort, EnvVar, ExecAction, Lifecycle, LifecycleHandler,
    ProjectedVolumeSource, SecurityContext, ServiceAccountTokenProjection, Volume, VolumeMount, VolumeProjection,
};
use serde::Serialize;
use serde_json::Value;
use wisp_shared::contract::secrets_store::{CTX_SECRET_PROVIDER_CLASS, DRIVER_NAME};
use wisp_shared::contract::workload_identity as wi;

use crate::pod::{self, List, Named, Pod};

/// Default proxy images: the upstream release whose token layout wisp serves.
pub const DEFAULT_PROXY_IMAGE: &str = "mcr.microsoft.com/oss/azure/workload-identity/proxy:v1.5.1";
pub const DEFAULT_PROXY_INIT_IMAGE: &str = "mcr.microsoft.com/oss/azure/workload-identity/proxy-init:v1.5.1";

/// What the mutation needs from the webhook's configuration; fixed for the life of the process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MutationConfig {
    /// `AZURE_TENANT_ID` of the webhook, used when the ServiceAccount has no tenant-id annotation.
    pub tenant_id: String,
    /// `AZURE_AUTHORITY_HOST` injected into containers, from the cloud environment.
    pub authority_host: String,
    /// Audience of the projected service account token.
    pub audience: String,
    pub proxy_image: String,
    pub proxy_init_image: String,
    /// Put the proxy sidecar into `initContainers` with `restartPolicy: Always` (API server 1.32 or newer).
    pub native_sidecar: bool,
    /// `--log-level` passed to the proxy sidecar.
    pub proxy_log_level: String,
}

/// The ServiceAccount annotations the mutation reads; the cache keeps only these.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceAccountInfo {
    pub client_id: Option<String>,
    pub tenant_id: Option<String>,
    pub token_expiration: Option<String>,
}

impl ServiceAccountInfo {
    pub fn from_annotations<'a>(annotations: impl IntoIterator<Item = (&'a String, &'a String)>) -> Self {
        let mut info = Self::default();
        for (key, value) in annotations {
            match key.as_str() {
                wi::CLIENT_ID_ANNOTATION => info.client_id = Some(value.clone()),
                wi::TENANT_ID_ANNOTATION => info.tenant_id = Some(value.clone()),
                wi::TOKEN_EXPIRATION_ANNOTATION => info.token_expiration = Some(value.clone()),
                _ => {}
            }
        }
        info
    }
}

/// Where an annotation was read from, for denial messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Pod,
    ServiceAccount,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Origin::Pod => "pod",
            Origin::ServiceAccount => "ServiceAccount",
        })
    }
}

/// Why a pod is refused. The texts keep upstream's wording (which users search for) and add the field and fix.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum Denial {
    #[error(
        "{origin} annotation {ann}: parsing {value:?}: invalid syntax; set a whole number of seconds between {min} and {max}",
        ann = wi::TOKEN_EXPIRATION_ANNOTATION,
        min = wi::MIN_TOKEN_EXPIRATION_SECONDS,
        max = wi::MAX_TOKEN_EXPIRATION_SECONDS
    )]
    TokenExpirationSyntax { origin: Origin, value: String },
    #[error(
        "token expiration {value} not valid. Expected value to be between {min} and {max} ({origin} annotation {ann})",
        ann = wi::TOKEN_EXPIRATION_ANNOTATION,
        min = wi::MIN_TOKEN_EXPIRATION_SECONDS,
        max = wi::MAX_TOKEN_EXPIRATION_SECONDS
    )]
    TokenExpirationRange { origin: Origin, value: i64 },
    #[error(
        "hostNetwork is set to true, cannot inject proxy sidecar; remove the pod annotation {ann} or spec.hostNetwork",
        ann = wi::INJECT_PROXY_SIDECAR_ANNOTATION
    )]
    ProxyWithHostNetwork,
    #[error(
        "failed to parse proxy sidecar port: pod annotation {ann}: parsing {value:?}: invalid port; set an integer between 1 and 65535",
        ann = wi::PROXY_SIDECAR_PORT_ANNOTATION
    )]
    ProxyPort { value: String },
    #[error(
        "pod annotation {ann} is empty; set it to the name of a SecretProviderClass in the pod's namespace",
        ann = wi::SECRET_PROVIDER_CLASS_ANNOTATION
    )]
    EmptySecretProviderClass,
    #[error(
        "pod annotation {ann}: {value:?} is not an absolute path; set a path starting with /",
        ann = wi::SECRETS_MOUNT_PATH_ANNOTATION
    )]
    SecretsMountPath { value: String },
    #[error("pod field {field} is not {expected}; the object is not a valid Pod")]
    MalformedPod { field: String, expected: &'static str },
    #[error("cannot encode the injected {what} as JSON: {reason}")]
    Encode { what: &'static str, reason: String },
}

impl Denial {
    /// The HTTP-style code reported in the AdmissionResponse status: the request's fault, except encoding.
    pub fn code(&self) -> u16 {
        match self {
            Denial::Encode { .. } => 500,
            _ => 400,
        }
    }
}

/// Computes the patch that injects workload identity into `pod`. An empty patch means the pod already has
/// everything (a reinvocation) or is not opted in. The webhook itself calls [`mutate_pod`] on the pod read
/// straight from the request; this is the same mutation for a pod held as a `Value`.
pub fn mutate(pod: &Value, sa: &ServiceAccountInfo, config: &MutationConfig) -> Result<Patch, Denial> {
    let patch = match Pod::from_value(pod) {
        Some(pod) => mutate_pod(&pod, sa, config)?,
        None => return Ok(Patch(Vec::new())),
    };
    if patch.is_empty() {
        return Ok(Patch(Vec::new()));
    }
    serde_json::from_slice(patch.as_bytes()).map_err(|e| Denial::Encode {
        what: "patch",
        reason: e.to_string(),
    })
}

/// Computes the patch that injects workload identity into `pod`, serialized as JSON. An empty patch means the
/// pod already has everything (a reinvocation) or is not opted in.
pub fn mutate_pod(pod: &Pod<'_>, sa: &ServiceAccountInfo, config: &MutationConfig) -> Result<JsonPatch, Denial> {
    if !pod.is_opted_in() {
        return Ok(JsonPatch::default());
    }
    let annotation = |key: &str| pod.metadata.annotations.get(key);
    let Some(spec) = &pod.spec else {
        return Err(malformed("spec", "an object"));
    };

    let proxy_port = match annotation(wi::INJECT_PROXY_SIDECAR_ANNOTATION) {
        Some(v) if v.trim().eq_ignore_ascii_case("true") => {
            if spec.host_network == Some(true) {
                return Err(Denial::ProxyWithHostNetwork);
            }
            Some(proxy_port(annotation(wi::PROXY_SIDECAR_PORT_ANNOTATION))?)
        }
        _ => None,
    };
    let expiration = token_expiration(annotation(wi::TOKEN_EXPIRATION_ANNOTATION), sa)?;
    let secrets = match annotation(wi::SECRET_PROVIDER_CLASS_ANNOTATION) {
        None => None,
        Some(class) if class.trim().is_empty() => return Err(Denial::EmptySecretProviderClass),
        Some(class) => {
            let path = match annotation(wi::SECRETS_MOUNT_PATH_ANNOTATION) {
                None => wi::DEFAULT_SECRETS_MOUNT_PATH,
                Some(p) if p.starts_with('/') => p,
                Some(p) => return Err(Denial::SecretsMountPath { value: p.to_string() }),
            };
            Some((class.trim(), path))
        }
    };
    // Lists here hold a handful of entries: linear scans beat hashing them.
    let skip: Vec<&str> = annotation(wi::SKIP_CONTAINERS_ANNOTATION)
        .map(|v| v.split(';').map(str::trim).collect())
        .unwrap_or_default();

    let tenant_id = sa.tenant_id.as_deref().unwrap_or(&config.tenant_id);
    let env = [
        (wi::ENV_CLIENT_ID, sa.client_id.as_deref().unwrap_or_default()),
        (wi::ENV_TENANT_ID, tenant_id),
        (wi::ENV_FEDERATED_TOKEN_FILE, wi::TOKEN_FILE_PATH),
        (wi::ENV_AUTHORITY_HOST, config.authority_host.as_str()),
    ]
    .into_iter()
    .filter(|(_, value)| !value.is_empty())
    .map(|(name, value)| {
        Item::new(
            "env var",
            EnvVar {
                name: name.to_string(),
                value: Some(value.to_string()),
                ..Default::default()
            },
        )
    })
    .collect::<Result<Vec<_>, Denial>>()?;
    let mut mounts = vec![Item::new(
        "volume mount",
        VolumeMount {
            name: wi::TOKEN_VOLUME_NAME.to_string(),
            mount_path: wi::TOKEN_MOUNT_PATH.to_string(),
            read_only: Some(true),
            ..Default::default()
        },
    )?];
    if let Some((_, path)) = secrets {
        mounts.push(Item::new(
            "volume mount",
            VolumeMount {
                name: wi::SECRETS_STORE_VOLUME_NAME.to_string(),
                mount_path: path.to_string(),
                read_only: Some(true),
                ..Default::default()
            },
        )?);
    }
    let injection = Injection { env, mounts, skip };

    let mut patch = PatchBuilder::default();
    let init_containers = container_list(&spec.init_containers, "initContainers")?;
    let containers = container_list(&spec.containers, "containers")?;
    injection.patch_containers("initContainers", init_containers, &mut patch)?;
    injection.patch_containers("containers", containers, &mut patch)?;

    if let Some(port) = proxy_port {
        let mut appended_init = Vec::new();
        if !has_named(init_containers, wi::PROXY_INIT_CONTAINER_NAME) {
            let mut init = proxy_init_container(config, port);
            injection.inject_into(&mut init);
            appended_init.push(to_json("proxy init container", &init)?);
        }
        let target_list = if config.native_sidecar {
            init_containers
        } else {
            containers
        };
        let sidecar = if has_named(target_list, wi::PROXY_SIDECAR_CONTAINER_NAME) {
            None
        } else {
            let mut sidecar = proxy_sidecar_container(config, port);
            injection.inject_into(&mut sidecar);
            Some(to_json("proxy sidecar container", &sidecar)?)
        };
        if config.native_sidecar {
            // Order as upstream: the sidecar first, the user's init containers, then azwi-proxy-init.
            match init_containers {
                None => {
                    let list: Vec<&[u8]> = sidecar.iter().chain(&appended_init).map(Vec::as_slice).collect();
                    if !list.is_empty() {
                        patch.add_list(&[Key("spec"), Key("initContainers")], list);
                    }
                }
                Some(_) => {
                    for c in &appended_init {
                        patch.add_one(&[Key("spec"), Key("initContainers"), Key("-")], c);
                    }
                    if let Some(s) = &sidecar {
                        patch.add_one(&[Key("spec"), Key("initContainers"), Index(0)], s);
                    }
                }
            }
        } else {
            append_all(&mut patch, "initContainers", init_containers.is_some(), &appended_init);
            if let Some(s) = &sidecar {
                match containers {
                    None => patch.add_list(&[Key("spec"), Key("containers")], [s.as_slice()]),
                    Some(_) => patch.add_one(&[Key("spec"), Key("containers"), Index(0)], s),
                }
            }
        }
    }

    let volumes = match &spec.volumes {
        List::Missing => None,
        List::Items(v) => Some(v.as_slice()),
        List::NotArray => return Err(malformed("spec.volumes", "an array")),
    };
    let mut new_volumes = Vec::new();
    if !has_token_volume(volumes) {
        new_volumes.push(to_json("token volume", &token_volume(config, expiration))?);
    }
    if let Some((class, _)) = secrets
        && !has_named(volumes, wi::SECRETS_STORE_VOLUME_NAME)
    {
        new_volumes.push(to_json("secrets-store volume", &secrets_store_volume(class))?);
    }
    append_all(&mut patch, "volumes", volumes.is_some(), &new_volumes);

    Ok(patch.finish())
}

/// A JSON Patch of `add` operations, serialized: `[{"op":"add","path":...,"value":...},...]`, the bytes that
/// `serde_json` writes for a `json_patch::Patch`; empty when there is nothing to add.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JsonPatch {
    json: Vec<u8>,
    ops: usize,
}

impl JsonPatch {
    pub fn is_empty(&self) -> bool {
        self.ops == 0
    }

    /// The number of operations.
    pub fn len(&self) -> usize {
        self.ops
    }

    /// The JSON text; empty when there are no operations.
    pub fn as_bytes(&self) -> &[u8] {
        &self.json
    }
}

/// Writes the operations one after the other; the values are JSON text serialized once per pod.
struct PatchBuilder(JsonPatch);

impl Default for PatchBuilder {
    fn default() -> Self {
        // Room for a typical pod's patch (about 1.5 KiB for three containers), so that it is not regrown.
        Self(JsonPatch {
            json: Vec::with_capacity(2048),
            ops: 0,
        })
    }
}

/// A reference token of a JSON Pointer: one of this module's field names (none needs escaping) or an index.
#[derive(Clone, Copy)]
enum Token<'a> {
    Key(&'a str),
    Index(usize),
}

use Token::{Index, Key};

impl PatchBuilder {
    /// Adds an `add` operation of one value.
    fn add_one(&mut self, path: &[Token<'_>], value: &[u8]) {
        self.op(path, |json| json.extend_from_slice(value));
    }

    /// Adds an `add` operation whose value is an array of `values`.
    fn add_list<'v>(&mut self, path: &[Token<'_>], values: impl IntoIterator<Item = &'v [u8]>) {
        self.op(path, |json| {
            json.push(b'[');
            for (i, v) in values.into_iter().enumerate() {
                if i > 0 {
                    json.push(b',');
                }
                json.extend_from_slice(v);
            }
            json.push(b']');
        });
    }

    fn op(&mut self, path: &[Token<'_>], value: impl FnOnce(&mut Vec<u8>)) {
        let json = &mut self.0.json;
        json.push(if self.0.ops == 0 { b'[' } else { b',' });
        json.extend_from_slice(br#"{"op":"add","path":""#);
        for token in path {
            json.push(b'/');
            match *token {
                Key(key) => {
                    debug_assert!(!key.contains(['~', '/', '"', '\\']), "{key} needs escaping");
                    json.extend_from_slice(key.as_bytes());
                }
                Index(index) => write_index(json, index),
            }
        }
        json.extend_from_slice(br#"","value":"#);
        value(json);
        json.push(b'}');
        self.0.ops += 1;
    }

    fn finish(mut self) -> JsonPatch {
        if self.0.ops > 0 {
            self.0.json.push(b']');
        }
        self.0
    }
}

/// `index` in decimal.
fn write_index(out: &mut Vec<u8>, mut index: usize) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        // A digit: the remainder is below 10.
        digits[start] = b'0' + (index % 10) as u8;
        index /= 10;
        if index == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[start..]);
}

/// An env var or volume mount to inject, with its JSON text.
struct Item<T> {
    value: T,
    json: Vec<u8>,
}

impl<T: Serialize> Item<T> {
    fn new(what: &'static str, value: T) -> Result<Self, Denial> {
        Ok(Self {
            json: to_json(what, &value)?,
            value,
        })
    }
}

/// The env vars and mounts to give every container not named in skip-containers.
struct Injection<'a> {
    /// Built once per pod.
    env: Vec<Item<EnvVar>>,
    mounts: Vec<Item<VolumeMount>>,
    skip: Vec<&'a str>,
}

impl Injection<'_> {
    /// Adds what an existing container lacks (env entries and mounts, by name) through patch operations at its
    /// index.
    fn patch_containers(
        &self,
        list: &str,
        containers: Option<&[Option<pod::Container<'_>>]>,
        patch: &mut PatchBuilder,
    ) -> Result<(), Denial> {
        // container_list checked that every entry is an object.
        for (i, container) in containers.unwrap_or_default().iter().flatten().enumerate() {
            if self.skip.contains(&container.name.as_deref().unwrap_or_default()) {
                continue;
            }
            let env_names = names(&container.env, || format!("spec.{list}[{i}].env"))?;
            let mount_names = names(&container.volume_mounts, || format!("spec.{list}[{i}].volumeMounts"))?;
            let env = self.env.iter().filter(|e| !env_names.contains(&e.value.name.as_str()));
            let mounts = self
                .mounts
                .iter()
                .filter(|m| !mount_names.contains(&m.value.name.as_str()));
            add_missing(patch, list, i, "env", &container.env, env.map(|e| e.json.as_slice()));
            add_missing(
                patch,
                list,
                i,
                "volumeMounts",
                &container.volume_mounts,
                mounts.map(|m| m.json.as_slice()),
            );
        }
        Ok(())
    }

    /// Adds what a container being injected lacks, in place.
    fn inject_into(&self, container: &mut Container) {
        if self.skip.contains(&container.name.as_str()) {
            return;
        }
        let has_env = |name: &str| container.env.iter().flatten().any(|e| e.name == name);
        let env: Vec<EnvVar> = self
            .env
            .iter()
            .filter(|e| !has_env(&e.value.name))
            .map(|e| e.value.clone())
            .collect();
        let has_mount = |name: &str| container.volume_mounts.iter().flatten().any(|m| m.name == name);
        let mounts: Vec<VolumeMount> = self
            .mounts
            .iter()
            .filter(|m| !has_mount(&m.value.name))
            .map(|m| m.value.clone())
            .collect();
        if !env.is_empty() {
            container.env.get_or_insert_with(Vec::new).extend(env);
        }
        if !mounts.is_empty() {
            container.volume_mounts.get_or_insert_with(Vec::new).extend(mounts);
        }
    }
}

/// Adds `values` to `spec.<list>[<index>].<field>`: appended one by one to an existing array, or as the whole
/// array when the container has none.
fn add_missing<'v>(
    patch: &mut PatchBuilder,
    list: &str,
    index: usize,
    field: &str,
    existing: &List<Option<Named<'_>>>,
    values: impl Iterator<Item = &'v [u8]> + Clone,
) {
    if values.clone().next().is_none() {
        return;
    }
    match existing {
        List::Items(_) => {
            for v in values {
                patch.add_one(&[Key("spec"), Key(list), Index(index), Key(field), Key("-")], v);
            }
        }
        List::Missing | List::NotArray => patch.add_list(&[Key("spec"), Key(list), Index(index), Key(field)], values),
    }
}

fn malformed(field: &str, expected: &'static str) -> Denial {
    Denial::MalformedPod {
        field: field.to_string(),
        expected,
    }
}

/// The JSON text of an object to add. k8s-openapi writes fields in the order of their JSON names, as a
/// `serde_json::Value` (a sorted map) did: the bytes are those the webhook sent before it stopped building
/// `Value`s (tests/golden_responses.rs).
fn to_json<T: Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>, Denial> {
    serde_json::to_vec(value).map_err(|e| Denial::Encode {
        what,
        reason: e.to_string(),
    })
}

/// Appends `values` to `spec.<field>`, creating the list when the pod has none.
fn append_all(patch: &mut PatchBuilder, field: &str, exists: bool, values: &[Vec<u8>]) {
    if values.is_empty() {
        return;
    }
    if exists {
        for v in values {
            patch.add_one(&[Key("spec"), Key(field), Key("-")], v);
        }
    } else {
        patch.add_list(&[Key("spec"), Key(field)], values.iter().map(Vec::as_slice));
    }
}

fn container_list<'p, 'a>(
    list: &'p List<Option<pod::Container<'a>>>,
    field: &str,
) -> Result<Option<&'p [Option<pod::Container<'a>>]>, Denial> {
    match list {
        List::Missing => Ok(None),
        List::Items(items) => {
            if items.iter().all(Option::is_some) {
                Ok(Some(items.as_slice()))
            } else {
                Err(malformed(&format!("spec.{field}"), "an array of objects"))
            }
        }
        List::NotArray => Err(malformed(&format!("spec.{field}"), "an array")),
    }
}

/// The `name`s in a list of named objects (env, volumeMounts); absent or null is empty.
fn names<'p>(list: &'p List<Option<Named<'_>>>, field: impl FnOnce() -> String) -> Result<Vec<&'p str>, Denial> {
    match list {
        List::Missing => Ok(Vec::new()),
        List::Items(items) => Ok(items.iter().flatten().filter_map(|i| i.name.as_deref()).collect()),
        List::NotArray => Err(malformed(&field(), "an array")),
    }
}

fn has_named<T: HasName>(list: Option<&[Option<T>]>, name: &str) -> bool {
    list.unwrap_or_default()
        .iter()
        .flatten()
        .any(|v| v.name() == Some(name))
}

trait HasName {
    fn name(&self) -> Option<&str>;
}

impl HasName for pod::Container<'_> {
    fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }
}

impl HasName for pod::Volume<'_> {
    fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }
}

/// The token volume counts as present when a projected service account token source already writes the token
/// file (upstream v1.5.1's rule), or a volume already has its name (adding a second would make the pod invalid).
fn has_token_volume(volumes: Option<&[Option<pod::Volume<'_>>]>) -> bool {
    volumes.unwrap_or_default().iter().flatten().any(|v| {
        v.name.as_deref() == Some(wi::TOKEN_VOLUME_NAME)
            || v.projected.as_ref().is_some_and(|p| {
                p.sources.items().iter().flatten().any(|s| {
                    s.service_account_token
                        .as_ref()
                        .is_some_and(|t| t.path.as_deref() == Some(wi::TOKEN_PATH))
                })
            })
    })
}

fn proxy_port(value: Option<&str>) -> Result<u16, Denial> {
    match value {
        None => Ok(wi::DEFAULT_PROXY_SIDECAR_PORT),
        Some(v) => match v.parse::<u16>() {
            Ok(port) if port > 0 => Ok(port),
            _ => Err(Denial::ProxyPort { value: v.to_string() }),
        },
    }
}

fn token_expiration(pod_value: Option<&str>, sa: &ServiceAccountInfo) -> Result<i64, Denial> {
    let (origin, raw) = match (pod_value, sa.token_expiration.as_deref()) {
        (Some(v), _) if !v.is_empty() => (Origin::Pod, v),
        (_, Some(v)) if !v.is_empty() => (Origin::ServiceAccount, v),
        _ => return Ok(wi::DEFAULT_TOKEN_EXPIRATION_SECONDS),
    };
    let value = raw.parse::<i64>().map_err(|_| Denial::TokenExpirationSyntax {
        origin,
        value: raw.to_string(),
    })?;
    if (wi::MIN_TOKEN_EXPIRATION_SECONDS..=wi::MAX_TOKEN_EXPIRATION_SECONDS).contains(&value) {
        Ok(value)
    } else {
        Err(Denial::TokenExpirationRange { origin, value })
    }
}

fn token_volume(config: &MutationConfig, expiration: i64) -> Volume {
    Volume {
        name: wi::TOKEN_VOLUME_NAME.to_string(),
        projected: Some(ProjectedVolumeSource {
            sources: Some(vec![VolumeProjection {
                service_account_token: Some(ServiceAccountTokenProjection {
                    path: wi::TOKEN_PATH.to_string(),
                    expiration_seconds: Some(expiration),
                    audience: Some(config.audience.clone()),
                }),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn secrets_store_volume(class: &str) -> Volume {
    Volume {
        name: wi::SECRETS_STORE_VOLUME_NAME.to_string(),
        csi: Some(CSIVolumeSource {
            driver: DRIVER_NAME.to_string(),
            read_only: Some(true),
            volume_attributes: Some(BTreeMap::from([(
                CTX_SECRET_PROVIDER_CLASS.to_string(),
                class.to_string(),
            )])),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn proxy_init_container(config: &MutationConfig, port: u16) -> Container {
    Container {
        name: wi::PROXY_INIT_CONTAINER_NAME.to_string(),
        image: Some(config.proxy_init_image.clone()),
        image_pull_policy: Some("IfNotPresent".to_string()),
        security_context: Some(SecurityContext {
            capabilities: Some(Capabilities {
                add: Some(vec!["NET_ADMIN".to_string()]),
                drop: Some(vec!["ALL".to_string()]),
            }),
            privileged: Some(true),
            run_as_non_root: Some(false),
            run_as_user: Some(0),
            ..Default::default()
        }),
        env: Some(vec![EnvVar {
            name: "PROXY_PORT".to_string(),
            value: Some(port.to_string()),
            ..Default::default()
        }]),
        ..Default::default()
    }
}

fn proxy_sidecar_container(config: &MutationConfig, port: u16) -> Container {
    let port_arg = format!("--proxy-port={port}");
    let level_arg = format!("--log-level={}", config.proxy_log_level);
    Container {
        name: wi::PROXY_SIDECAR_CONTAINER_NAME.to_string(),
        image: Some(config.proxy_image.clone()),
        image_pull_policy: Some("IfNotPresent".to_string()),
        args: Some(vec![port_arg.clone(), level_arg.clone()]),
        ports: Some(vec![ContainerPort {
            container_port: i32::from(port),
            ..Default::default()
        }]),
        lifecycle: Some(Lifecycle {
            post_start: Some(LifecycleHandler {
                exec: Some(ExecAction {
                    command: Some(vec!["/proxy".to_string(), port_arg, "--probe".to_string(), level_arg]),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                add: None,
                drop: Some(vec!["ALL".to_string()]),
            }),
            privileged: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            ..Default::default()
        }),
        restart_policy: config.native_sidecar.then(|| "Always".to_string()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests;
