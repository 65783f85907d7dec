//! The CSI Identity and Node services: NodePublishVolume as the upstream driver (same argument errors, same
//! order, SecretProviderClass from the pod's namespace only, volume attributes over parameters), with the
//! provider in-process; NodeUnpublishVolume removes everything, idempotently.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tonic::{Code, Request, Response, Status};
use wisp_shared::contract::secrets_store::{
    CTX_POD_NAME, CTX_POD_NAMESPACE, CTX_POD_UID, CTX_SECRET_PROVIDER_CLASS, CTX_SERVICE_ACCOUNT_NAME,
    CTX_SERVICE_ACCOUNT_TOKENS, PROVIDER_AZURE,
};

use crate::metrics::Metrics;
use crate::mount::Mounter;
use crate::proto::identity_server::Identity;
use crate::proto::node_server::Node;
use crate::proto::*;
use crate::provider::{MountInput, ObjectVersion, Provider};
use crate::spc::SharedSpcStore;
use crate::writer;

/// kubelet's deadline for CSI calls, used when a request carries no `grpc-timeout`.
const DEFAULT_DEADLINE: Duration = Duration::from_secs(120);
/// Time kept back from the deadline for writing the files and answering.
const DEADLINE_RESERVE: Duration = Duration::from_secs(2);

/// A volume this agent published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountedVolume {
    pub volume_id: String,
    pub target_path: PathBuf,
    pub pod_namespace: String,
    pub pod_name: String,
    pub pod_uid: String,
    pub secret_provider_class: String,
    pub objects: Vec<ObjectVersion>,
}

#[derive(Debug, Clone)]
pub struct DriverInfo {
    pub name: String,
    pub version: String,
    pub node_id: String,
}

/// Shared state of both services.
pub struct Driver {
    info: DriverInfo,
    spcs: SharedSpcStore,
    provider: Arc<Provider>,
    mounter: Mounter,
    metrics: Arc<Metrics>,
    volumes: Mutex<HashMap<PathBuf, MountedVolume>>,
    target_locks: Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("info", &self.info)
            .field("mounter", &self.mounter)
            .finish_non_exhaustive()
    }
}

/// A failed publish: the gRPC status users see in `kubectl describe pod` and the upstream metric error type.
#[derive(Debug)]
struct PublishFailure {
    code: Code,
    error_type: &'static str,
    message: String,
}

impl PublishFailure {
    fn invalid(message: &str) -> Self {
        Self {
            code: Code::InvalidArgument,
            error_type: "InvalidArgument",
            message: message.to_string(),
        }
    }
    fn unknown(error_type: &'static str, message: String) -> Self {
        Self {
            code: Code::Unknown,
            error_type,
            message,
        }
    }
    fn internal(error_type: &'static str, message: String) -> Self {
        Self {
            code: Code::Internal,
            error_type,
            message,
        }
    }
}

fn ctx<'a>(map: &'a HashMap<String, String>, key: &str) -> &'a str {
    map.get(key).map(String::as_str).unwrap_or("")
}

/// The volume context as logged: the service-account tokens replaced, as upstream's interceptor does.
fn loggable(context: &HashMap<String, String>) -> BTreeMap<&str, &str> {
    context
        .iter()
        .map(|(k, v)| {
            (
                k.as_str(),
                if k == CTX_SERVICE_ACCOUNT_TOKENS {
                    "***stripped***"
                } else {
                    v.as_str()
                },
            )
        })
        .collect()
}

/// An RFC 1123 subdomain, the rule for SecretProviderClass names (and, stricter, namespaces).
fn is_object_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// `grpc-timeout` (e.g. `119999m`) as a duration.
fn grpc_timeout(metadata: &tonic::metadata::MetadataMap) -> Option<Duration> {
    let value = metadata.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

impl Driver {
    pub fn new(
        info: DriverInfo,
        spcs: SharedSpcStore,
        provider: Arc<Provider>,
        mounter: Mounter,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            info,
            spcs,
            provider,
            mounter,
            metrics,
            volumes: Mutex::new(HashMap::new()),
            target_locks: Mutex::new(HashMap::new()),
        }
    }

    /// The volumes published by this process (for rotation and status reporting).
    pub fn volumes(&self) -> Vec<MountedVolume> {
        self.volumes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    fn target_lock(&self, target: &Path) -> Arc<tokio::sync::Mutex<()>> {
        self.target_locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(target.to_path_buf())
            .or_default()
            .clone()
    }

    /// NodePublishVolume. `timeout` is the caller's deadline, if it sent one.
    pub async fn publish(&self, req: NodePublishVolumeRequest, timeout: Option<Duration>) -> Result<(), Status> {
        let result = self.publish_inner(req, timeout).await;
        match &result {
            Ok(()) => self.metrics.node_publish_ok(),
            Err(f) => self.metrics.node_publish_error(f.error_type),
        }
        result.map_err(|f| Status::new(f.code, f.message))
    }

    async fn publish_inner(
        &self,
        req: NodePublishVolumeRequest,
        timeout: Option<Duration>,
    ) -> Result<(), PublishFailure> {
        let started = Instant::now();
        let deadline = started + timeout.unwrap_or(DEFAULT_DEADLINE).saturating_sub(DEADLINE_RESERVE);
        if req.volume_capability.is_none() {
            return Err(PublishFailure::invalid("Volume capability missing in request"));
        }
        if req.volume_id.is_empty() {
            return Err(PublishFailure::invalid("Volume ID missing in request"));
        }
        if req.target_path.is_empty() {
            return Err(PublishFailure::invalid("Target path missing in request"));
        }
        if req.volume_context.is_empty() {
            return Err(PublishFailure::invalid("Volume attributes missing in request"));
        }
        let context = &req.volume_context;
        let target = PathBuf::from(&req.target_path);
        let spc_name = ctx(context, CTX_SECRET_PROVIDER_CLASS);
        let pod_name = ctx(context, CTX_POD_NAME);
        let pod_namespace = ctx(context, CTX_POD_NAMESPACE);
        let pod_uid = ctx(context, CTX_POD_UID);
        tracing::info!(
            volume_id = %req.volume_id,
            target = %req.target_path,
            pod = %format!("{pod_namespace}/{pod_name}"),
            secret_provider_class = spc_name,
            "NodePublishVolume"
        );
        tracing::debug!(volume_context = ?loggable(context), secrets = ?req.secrets.keys().collect::<Vec<_>>(), "NodePublishVolume request");

        let lock = self.target_lock(&target);
        let _guard = lock.lock().await;

        // A republish of a mounted volume (kubelet retries, requiresRepublish) changes nothing; rotation is a
        // separate concern.
        let known = self
            .volumes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&target);
        let published = known
            || self
                .mounter
                .is_published(&target)
                .map_err(|e| PublishFailure::internal("FailedToEnsureMountPoint", e.to_string()))?;
        if published {
            tracing::info!(target = %req.target_path, "target path is already mounted; nothing to do");
            return Ok(());
        }

        if spc_name.is_empty() {
            return Err(PublishFailure::unknown(
                "SecretProviderClassNotFound",
                "secretProviderClass is not set".into(),
            ));
        }
        if pod_namespace.is_empty() || pod_name.is_empty() {
            return Err(PublishFailure::unknown(
                "PodNotFound",
                format!(
                    "failed to get secretproviderclass {spc_name}: pod name or namespace is not provided; set \
                     podInfoOnMount: true on the CSIDriver object so that kubelet sends {CTX_POD_NAME} and \
                     {CTX_POD_NAMESPACE}"
                ),
            ));
        }
        // The names become API paths: anything but a valid object name is refused before it gets there.
        if !is_object_name(spc_name) || !is_object_name(pod_namespace) {
            return Err(PublishFailure::unknown(
                "SecretProviderClassNotFound",
                format!(
                    "failed to get secretproviderclass {pod_namespace:?}/{spc_name:?}: not a valid Kubernetes object \
                     name (lower-case letters, digits, '-' and '.')"
                ),
            ));
        }
        let spc = match self.spcs.get(pod_namespace, spc_name).await {
            Ok(Some(spc)) => spc,
            Ok(None) => {
                return Err(PublishFailure::unknown(
                    "SecretProviderClassNotFound",
                    format!(
                        "failed to get secretproviderclass {pod_namespace}/{spc_name}, error: \
                         secretproviderclasses.secrets-store.csi.x-k8s.io \"{spc_name}\" not found; the \
                         SecretProviderClass must be in the pod's namespace {pod_namespace:?}"
                    ),
                ));
            }
            Err(e) => {
                return Err(PublishFailure::unknown(
                    "SecretProviderClassNotFound",
                    format!("failed to get secretproviderclass {pod_namespace}/{spc_name}, error: {e}"),
                ));
            }
        };
        if spc.provider.is_empty() {
            return Err(PublishFailure::unknown(
                "ProviderError",
                format!("provider not set in {pod_namespace}/{spc_name}"),
            ));
        }
        if spc.parameters.is_empty() {
            return Err(PublishFailure::unknown(
                "ProviderError",
                format!("parameters not set in {pod_namespace}/{spc_name}"),
            ));
        }
        if spc.provider != PROVIDER_AZURE {
            return Err(PublishFailure::unknown(
                "FailedToLookupProviderGRPCClient",
                format!(
                    "error connecting to provider {p:?}: provider not found: provider {p:?}; wisp serves only \
                     provider \"azure\" (SecretProviderClass {pod_namespace}/{spc_name})",
                    p = spc.provider
                ),
            ));
        }

        let mut parameters = spc.parameters.clone();
        for (k, v) in context {
            parameters.insert(k.clone(), v.clone());
        }
        let tokens = req
            .secrets
            .get(CTX_SERVICE_ACCOUNT_TOKENS)
            .or_else(|| context.get(CTX_SERVICE_ACCOUNT_TOKENS))
            .filter(|t| !t.is_empty())
            .cloned();
        if let Some(tokens) = tokens {
            parameters.insert(CTX_SERVICE_ACCOUNT_TOKENS.to_string(), tokens);
        }
        if !req.readonly {
            return Err(PublishFailure::invalid("Readonly is not true in request"));
        }
        let secrets: BTreeMap<String, String> = req
            .secrets
            .iter()
            .filter(|(k, _)| k.as_str() != CTX_SERVICE_ACCOUNT_TOKENS)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let input = MountInput {
            parameters: &parameters,
            secrets: &secrets,
            pod_namespace,
            service_account_name: context.get(CTX_SERVICE_ACCOUNT_NAME).map(String::as_str),
        };
        let content = self.provider.mount_content(input, deadline).await.map_err(|e| {
            PublishFailure::unknown(
                "ProviderError",
                format!(
                    "failed to mount secrets store objects for pod {pod_namespace}/{pod_name}, err: \
                     SecretProviderClass {pod_namespace}/{spc_name}: {e}"
                ),
            )
        })?;

        let mounter = self.mounter;
        let write_target = target.clone();
        let files = content.files;
        let written = tokio::task::spawn_blocking(move || {
            let prepared = mounter
                .prepare(&write_target)
                .map_err(|e| PublishFailure::internal("FailedToMount", e.to_string()))?;
            if let Err(e) = writer::write_atomically(&write_target, &files) {
                // A first mount that fails leaves nothing behind, so kubelet's retry starts from scratch.
                if let Err(cleanup) = mounter.teardown(&write_target, prepared.created_dir) {
                    tracing::error!(target = %write_target.display(), error = %cleanup, "cleanup after a failed write failed");
                }
                return Err(PublishFailure::internal(
                    "FileWriteError",
                    format!("failed to write the files of the volume at {}: {e}", write_target.display()),
                ));
            }
            Ok(())
        })
        .await
        .map_err(|e| PublishFailure::internal("FileWriteError", format!("the write task failed: {e}")))?;
        written?;

        self.volumes.lock().unwrap_or_else(|p| p.into_inner()).insert(
            target.clone(),
            MountedVolume {
                volume_id: req.volume_id.clone(),
                target_path: target,
                pod_namespace: pod_namespace.to_string(),
                pod_name: pod_name.to_string(),
                pod_uid: pod_uid.to_string(),
                secret_provider_class: spc_name.to_string(),
                objects: content.objects,
            },
        );
        tracing::info!(
            pod = %format!("{pod_namespace}/{pod_name}"),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "volume published"
        );
        Ok(())
    }

    /// NodeUnpublishVolume: remove contents, unmount, remove the directory. Idempotent.
    pub async fn unpublish(&self, req: NodeUnpublishVolumeRequest) -> Result<(), Status> {
        if req.volume_id.is_empty() {
            return Err(Status::invalid_argument("Volume ID missing in request"));
        }
        if req.target_path.is_empty() {
            return Err(Status::invalid_argument("Target path missing in request"));
        }
        let target = PathBuf::from(&req.target_path);
        let lock = self.target_lock(&target);
        let _guard = lock.lock().await;
        let mounter = self.mounter;
        let teardown_target = target.clone();
        let result = tokio::task::spawn_blocking(move || mounter.teardown(&teardown_target, true))
            .await
            .map_err(|e| format!("the unpublish task failed: {e}"))
            .and_then(|r| r.map_err(|e| e.to_string()));
        match result {
            Ok(()) => {
                self.volumes.lock().unwrap_or_else(|p| p.into_inner()).remove(&target);
                self.target_locks
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&target);
                self.metrics.node_unpublish_ok();
                tracing::info!(volume_id = %req.volume_id, target = %req.target_path, "volume unpublished");
                Ok(())
            }
            Err(message) => {
                self.metrics.node_unpublish_error();
                Err(Status::internal(message))
            }
        }
    }
}

/// The Identity service.
#[derive(Debug, Clone)]
pub struct IdentityService {
    driver: Arc<Driver>,
}

impl IdentityService {
    pub fn new(driver: Arc<Driver>) -> Self {
        Self { driver }
    }
}

/// The Node service.
#[derive(Debug, Clone)]
pub struct NodeService {
    driver: Arc<Driver>,
}

impl NodeService {
    pub fn new(driver: Arc<Driver>) -> Self {
        Self { driver }
    }
}

fn observe<T>(metrics: &Metrics, method: &str, started: std::time::Instant, result: &Result<T, Status>) {
    let code = match result {
        Ok(_) => Code::Ok,
        Err(s) => s.code(),
    };
    metrics.grpc_request(method, code, started.elapsed().as_secs_f64());
    if let Err(s) = result {
        tracing::warn!(method, code = ?s.code(), error = s.message(), "request failed");
    }
}

#[tonic::async_trait]
impl Identity for IdentityService {
    async fn get_plugin_info(
        &self,
        _request: Request<GetPluginInfoRequest>,
    ) -> Result<Response<GetPluginInfoResponse>, Status> {
        let info = &self.driver.info;
        if info.name.is_empty() {
            return Err(Status::unavailable("driver name not configured"));
        }
        if info.version.is_empty() {
            return Err(Status::unavailable("driver version not configured"));
        }
        Ok(Response::new(GetPluginInfoResponse {
            name: info.name.clone(),
            vendor_version: info.version.clone(),
            manifest: HashMap::new(),
        }))
    }

    async fn get_plugin_capabilities(
        &self,
        _request: Request<GetPluginCapabilitiesRequest>,
    ) -> Result<Response<GetPluginCapabilitiesResponse>, Status> {
        // No CONTROLLER_SERVICE: the agent is a node plugin only, so csi-sanity skips the controller suites.
        Ok(Response::new(GetPluginCapabilitiesResponse { capabilities: vec![] }))
    }

    async fn probe(&self, _request: Request<ProbeRequest>) -> Result<Response<ProbeResponse>, Status> {
        Ok(Response::new(ProbeResponse { ready: Some(true) }))
    }
}

#[tonic::async_trait]
impl Node for NodeService {
    async fn node_stage_volume(
        &self,
        _request: Request<NodeStageVolumeRequest>,
    ) -> Result<Response<NodeStageVolumeResponse>, Status> {
        Err(Status::unimplemented("NodeStageVolume is not implemented"))
    }

    async fn node_unstage_volume(
        &self,
        _request: Request<NodeUnstageVolumeRequest>,
    ) -> Result<Response<NodeUnstageVolumeResponse>, Status> {
        Err(Status::unimplemented("NodeUnstageVolume is not implemented"))
    }

    async fn node_publish_volume(
        &self,
        request: Request<NodePublishVolumeRequest>,
    ) -> Result<Response<NodePublishVolumeResponse>, Status> {
        let started = std::time::Instant::now();
        let timeout = grpc_timeout(request.metadata());
        let result = self
            .driver
            .publish(request.into_inner(), timeout)
            .await
            .map(|()| NodePublishVolumeResponse {});
        observe(&self.driver.metrics, "/csi.v1.Node/NodePublishVolume", started, &result);
        result.map(Response::new)
    }

    async fn node_unpublish_volume(
        &self,
        request: Request<NodeUnpublishVolumeRequest>,
    ) -> Result<Response<NodeUnpublishVolumeResponse>, Status> {
        let started = std::time::Instant::now();
        let result = self
            .driver
            .unpublish(request.into_inner())
            .await
            .map(|()| NodeUnpublishVolumeResponse {});
        observe(
            &self.driver.metrics,
            "/csi.v1.Node/NodeUnpublishVolume",
            started,
            &result,
        );
        result.map(Response::new)
    }

    async fn node_get_volume_stats(
        &self,
        _request: Request<NodeGetVolumeStatsRequest>,
    ) -> Result<Response<NodeGetVolumeStatsResponse>, Status> {
        Err(Status::unimplemented("NodeGetVolumeStats is not implemented"))
    }

    async fn node_expand_volume(
        &self,
        _request: Request<NodeExpandVolumeRequest>,
    ) -> Result<Response<NodeExpandVolumeResponse>, Status> {
        Err(Status::unimplemented("NodeExpandVolume is not implemented"))
    }

    async fn node_get_capabilities(
        &self,
        _request: Request<NodeGetCapabilitiesRequest>,
    ) -> Result<Response<NodeGetCapabilitiesResponse>, Status> {
        Ok(Response::new(NodeGetCapabilitiesResponse { capabilities: vec![] }))
    }

    async fn node_get_info(
        &self,
        _request: Request<NodeGetInfoRequest>,
    ) -> Result<Response<NodeGetInfoResponse>, Status> {
        Ok(Response::new(NodeGetInfoResponse {
            node_id: self.driver.info.node_id.clone(),
            max_volumes_per_node: 0,
            accessible_topology: None,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MountMode;
    use crate::http::RetryPolicy;
    use crate::provider::ProviderConfig;
    use crate::render::RenderOptions;
    use crate::spc::{MemorySpcStore, SecretProviderClass};

    struct Fixture {
        driver: Arc<Driver>,
        store: Arc<MemorySpcStore>,
        dir: tempfile::TempDir,
    }

    fn fixture() -> Fixture {
        crate::test_support::install_crypto();
        let metrics = Arc::new(Metrics::new());
        let provider = crate::provider::build(
            ProviderConfig {
                default_cloud: "AzurePublicCloud".into(),
                render: RenderOptions::default(),
                max_parallel: 4,
            },
            crate::http::build_client().unwrap(),
            "http://127.0.0.1:1",
            RetryPolicy::none(),
            metrics.clone(),
        );
        let store = Arc::new(MemorySpcStore::new());
        let driver = Arc::new(Driver::new(
            DriverInfo {
                name: "secrets-store.csi.k8s.io".into(),
                version: "0.1.0".into(),
                node_id: "node-1".into(),
            },
            store.clone(),
            Arc::new(provider),
            Mounter::new(MountMode::Directory),
            metrics,
        ));
        Fixture {
            driver,
            store,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn spc(namespace: &str, name: &str, parameters: &[(&str, &str)]) -> SecretProviderClass {
        SecretProviderClass {
            namespace: namespace.into(),
            name: name.into(),
            provider: "azure".into(),
            parameters: parameters.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            secret_objects: None,
        }
    }

    const OBJECTS: &str = "array:\n  - |\n    objectName: s1\n    objectType: secret\n";

    fn request(target: &Path, spc_name: &str) -> NodePublishVolumeRequest {
        NodePublishVolumeRequest {
            volume_id: "csi-123".into(),
            target_path: target.display().to_string(),
            volume_capability: Some(VolumeCapability {
                access_type: Some(volume_capability::AccessType::Mount(
                    volume_capability::MountVolume::default(),
                )),
                access_mode: Some(volume_capability::AccessMode {
                    mode: volume_capability::access_mode::Mode::SingleNodeReaderOnly as i32,
                }),
            }),
            readonly: true,
            volume_context: HashMap::from([
                (CTX_SECRET_PROVIDER_CLASS.to_string(), spc_name.to_string()),
                (CTX_POD_NAME.to_string(), "pod-a".to_string()),
                (CTX_POD_NAMESPACE.to_string(), "ns-a".to_string()),
                (CTX_POD_UID.to_string(), "uid-a".to_string()),
                (CTX_SERVICE_ACCOUNT_NAME.to_string(), "sa-a".to_string()),
            ]),
            ..Default::default()
        }
    }

    async fn publish_err(f: &Fixture, req: NodePublishVolumeRequest) -> (Code, String) {
        let status = f.driver.publish(req, None).await.unwrap_err();
        (status.code(), status.message().to_string())
    }

    fn assert_nothing_left(f: &Fixture) {
        let entries: Vec<_> = std::fs::read_dir(f.dir.path()).unwrap().collect();
        assert!(entries.is_empty(), "left behind: {entries:?}");
        assert!(f.driver.volumes().is_empty());
    }

    #[tokio::test]
    async fn argument_errors_are_upstreams() {
        let f = fixture();
        let target = f.dir.path().join("mount");
        let base = request(&target, "spc1");
        let cases: Vec<(NodePublishVolumeRequest, &str)> = vec![
            (
                NodePublishVolumeRequest {
                    volume_capability: None,
                    ..base.clone()
                },
                "Volume capability missing in request",
            ),
            (
                NodePublishVolumeRequest {
                    volume_id: String::new(),
                    ..base.clone()
                },
                "Volume ID missing in request",
            ),
            (
                NodePublishVolumeRequest {
                    target_path: String::new(),
                    ..base.clone()
                },
                "Target path missing in request",
            ),
            (
                NodePublishVolumeRequest {
                    volume_context: HashMap::new(),
                    ..base.clone()
                },
                "Volume attributes missing in request",
            ),
        ];
        for (req, message) in cases {
            assert_eq!(publish_err(&f, req).await, (Code::InvalidArgument, message.to_string()));
        }
        assert_nothing_left(&f);
    }

    #[tokio::test]
    async fn secret_provider_class_errors_name_namespace_and_name() {
        let f = fixture();
        let target = f.dir.path().join("mount");
        let mut req = request(&target, "");
        assert_eq!(
            publish_err(&f, req.clone()).await,
            (Code::Unknown, "secretProviderClass is not set".into())
        );

        // Present, but in another namespace: the pod's namespace is the only one searched.
        f.store.insert(spc("ns-b", "spc1", &[("keyvaultName", "kv1")]));
        req.volume_context
            .insert(CTX_SECRET_PROVIDER_CLASS.into(), "spc1".into());
        assert_eq!(
            publish_err(&f, req.clone()).await,
            (
                Code::Unknown,
                "failed to get secretproviderclass ns-a/spc1, error: secretproviderclasses.secrets-store.csi.x-k8s.io \
                 \"spc1\" not found; the SecretProviderClass must be in the pod's namespace \"ns-a\""
                    .into()
            )
        );

        f.store.insert(SecretProviderClass {
            provider: String::new(),
            ..spc("ns-a", "spc1", &[("a", "b")])
        });
        assert_eq!(
            publish_err(&f, req.clone()).await,
            (Code::Unknown, "provider not set in ns-a/spc1".into())
        );
        f.store.insert(spc("ns-a", "spc1", &[]));
        assert_eq!(
            publish_err(&f, req.clone()).await,
            (Code::Unknown, "parameters not set in ns-a/spc1".into())
        );
        f.store.insert(SecretProviderClass {
            provider: "aws".into(),
            ..spc("ns-a", "spc1", &[("a", "b")])
        });
        assert_eq!(
            publish_err(&f, req.clone()).await,
            (
                Code::Unknown,
                "error connecting to provider \"aws\": provider not found: provider \"aws\"; wisp serves only provider \
                 \"azure\" (SecretProviderClass ns-a/spc1)"
                    .into()
            )
        );
        assert_nothing_left(&f);
    }

    #[tokio::test]
    async fn pod_info_and_names_are_required_and_validated() {
        let f = fixture();
        let target = f.dir.path().join("mount");
        let mut req = request(&target, "spc1");
        req.volume_context.remove(CTX_POD_NAMESPACE);
        assert_eq!(
            publish_err(&f, req).await,
            (
                Code::Unknown,
                "failed to get secretproviderclass spc1: pod name or namespace is not provided; set podInfoOnMount: \
                 true on the CSIDriver object so that kubelet sends csi.storage.k8s.io/pod.name and \
                 csi.storage.k8s.io/pod.namespace"
                    .into()
            )
        );
        let req = request(&target, "../../api/v1/secrets");
        assert_eq!(
            publish_err(&f, req).await,
            (
                Code::Unknown,
                "failed to get secretproviderclass \"ns-a\"/\"../../api/v1/secrets\": not a valid Kubernetes object \
                 name (lower-case letters, digits, '-' and '.')"
                    .into()
            )
        );
        assert!(is_object_name("spc-1.example"));
        assert!(!is_object_name("Spc"));
        assert!(!is_object_name("a..b"));
        assert!(!is_object_name("-a"));
        assert_nothing_left(&f);
    }

    #[tokio::test]
    async fn readonly_is_checked_after_the_lookup() {
        let f = fixture();
        let target = f.dir.path().join("mount");
        f.store.insert(spc("ns-a", "spc1", &[("keyvaultName", "kv1")]));
        let req = NodePublishVolumeRequest {
            readonly: false,
            ..request(&target, "spc1")
        };
        assert_eq!(
            publish_err(&f, req).await,
            (Code::InvalidArgument, "Readonly is not true in request".into())
        );
        let missing = NodePublishVolumeRequest {
            readonly: false,
            ..request(&target, "nope")
        };
        assert_eq!(publish_err(&f, missing).await.0, Code::Unknown);
        assert_nothing_left(&f);
    }

    #[tokio::test]
    async fn provider_errors_carry_pod_and_class() {
        let f = fixture();
        let target = f.dir.path().join("mount");
        f.store
            .insert(spc("ns-a", "spc1", &[("tenantID", "t1"), ("objects", OBJECTS)]));
        let (code, message) = publish_err(&f, request(&target, "spc1")).await;
        assert_eq!(code, Code::Unknown);
        assert_eq!(
            message,
            "failed to mount secrets store objects for pod ns-a/pod-a, err: SecretProviderClass ns-a/spc1: \
             keyvaultName is not provided; set parameters.keyvaultName to the name of the Key Vault"
        );

        // Volume attributes override parameters; workload identity needs the kubelet's token.
        f.store.insert(spc(
            "ns-a",
            "spc1",
            &[("keyvaultName", "kv1"), ("tenantID", "t1"), ("objects", OBJECTS)],
        ));
        let mut req = request(&target, "spc1");
        req.volume_context.insert("clientID".into(), "client-1".into());
        let (_, message) = publish_err(&f, req.clone()).await;
        assert_eq!(
            message,
            "failed to mount secrets store objects for pod ns-a/pod-a, err: SecretProviderClass ns-a/spc1: service \
             account tokens not found"
        );
        // Tokens in `secrets` win over the volume context.
        req.volume_context.insert(
            CTX_SERVICE_ACCOUNT_TOKENS.into(),
            r#"{"api://AzureADTokenExchange":{"token":"a"}}"#.into(),
        );
        req.secrets
            .insert(CTX_SERVICE_ACCOUNT_TOKENS.into(), r#"{"other":{"token":"b"}}"#.into());
        let (_, message) = publish_err(&f, req).await;
        assert_eq!(
            message,
            "failed to mount secrets store objects for pod ns-a/pod-a, err: SecretProviderClass ns-a/spc1: token for \
             audience api://AzureADTokenExchange not found"
        );
        assert_nothing_left(&f);
    }

    #[tokio::test]
    async fn republish_of_a_populated_target_is_a_no_op() {
        let f = fixture();
        let target = f.dir.path().join("mount");
        std::fs::create_dir(&target).unwrap();
        std::os::unix::fs::symlink("..2026", target.join("..data")).unwrap();
        // No SecretProviderClass exists: success proves nothing was looked up.
        f.driver.publish(request(&target, "spc1"), None).await.unwrap();
    }

    #[tokio::test]
    async fn unpublish_is_idempotent_and_validates() {
        let f = fixture();
        let target = f.dir.path().join("mount");
        std::fs::create_dir_all(target.join("..2026/sub")).unwrap();
        std::fs::write(target.join("..2026/sub/a"), b"x").unwrap();
        std::os::unix::fs::symlink("..2026", target.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/sub", target.join("sub")).unwrap();
        let req = NodeUnpublishVolumeRequest {
            volume_id: "v".into(),
            target_path: target.display().to_string(),
        };
        f.driver.unpublish(req.clone()).await.unwrap();
        assert!(!target.exists());
        f.driver.unpublish(req).await.unwrap();
        let status = f
            .driver
            .unpublish(NodeUnpublishVolumeRequest {
                volume_id: String::new(),
                target_path: "/x".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(
            (status.code(), status.message()),
            (Code::InvalidArgument, "Volume ID missing in request")
        );
        let status = f
            .driver
            .unpublish(NodeUnpublishVolumeRequest {
                volume_id: "v".into(),
                target_path: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(
            (status.code(), status.message()),
            (Code::InvalidArgument, "Target path missing in request")
        );
    }

    #[tokio::test]
    async fn identity_and_node_info() {
        let f = fixture();
        let identity = IdentityService::new(f.driver.clone());
        let info = identity
            .get_plugin_info(Request::new(GetPluginInfoRequest {}))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            info,
            GetPluginInfoResponse {
                name: "secrets-store.csi.k8s.io".into(),
                vendor_version: "0.1.0".into(),
                manifest: HashMap::new()
            }
        );
        let caps = identity
            .get_plugin_capabilities(Request::new(GetPluginCapabilitiesRequest {}))
            .await
            .unwrap();
        assert_eq!(
            caps.into_inner(),
            GetPluginCapabilitiesResponse { capabilities: vec![] }
        );
        let probe = identity
            .probe(Request::new(ProbeRequest {}))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(probe, ProbeResponse { ready: Some(true) });
        let node = NodeService::new(f.driver.clone());
        let info = node
            .node_get_info(Request::new(NodeGetInfoRequest {}))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            info,
            NodeGetInfoResponse {
                node_id: "node-1".into(),
                max_volumes_per_node: 0,
                accessible_topology: None
            }
        );
        let caps = node
            .node_get_capabilities(Request::new(NodeGetCapabilitiesRequest {}))
            .await
            .unwrap();
        assert_eq!(caps.into_inner(), NodeGetCapabilitiesResponse { capabilities: vec![] });
        let err = node
            .node_stage_volume(Request::new(NodeStageVolumeRequest::default()))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unimplemented);
        let err = node
            .node_expand_volume(Request::new(NodeExpandVolumeRequest::default()))
            .await
            .unwrap_err();
        assert_eq!(
            (err.code(), err.message()),
            (Code::Unimplemented, "NodeExpandVolume is not implemented")
        );
    }

    #[test]
    fn grpc_timeouts_and_log_stripping() {
        let mut md = tonic::metadata::MetadataMap::new();
        assert_eq!(grpc_timeout(&md), None);
        md.insert("grpc-timeout", "119999m".parse().unwrap());
        assert_eq!(grpc_timeout(&md), Some(Duration::from_millis(119_999)));
        md.insert("grpc-timeout", "2M".parse().unwrap());
        assert_eq!(grpc_timeout(&md), Some(Duration::from_secs(120)));
        md.insert("grpc-timeout", "x".parse().unwrap());
        assert_eq!(grpc_timeout(&md), None);
        let context = HashMap::from([
            (
                CTX_SERVICE_ACCOUNT_TOKENS.to_string(),
                "{\"aud\":{\"token\":\"jwt\"}}".to_string(),
            ),
            (CTX_POD_NAME.to_string(), "p".to_string()),
        ]);
        assert_eq!(
            loggable(&context),
            BTreeMap::from([(CTX_POD_NAME, "p"), (CTX_SERVICE_ACCOUNT_TOKENS, "***stripped***")])
        );
    }
}
