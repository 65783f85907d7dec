//! The CSI Identity and Node services: NodePublishVolume as the upstream driver (same argument errors, same
//! order, SecretProviderClass from the pod's namespace only, volume attributes over parameters), with the
//! provider in-process; NodeUnpublishVolume removes everything, idempotently.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;
use tonic::{Code, Request, Response, Status};
use wisp_shared::contract::secrets_store::{
    CTX_POD_NAME, CTX_POD_NAMESPACE, CTX_POD_UID, CTX_SECRET_PROVIDER_CLASS, CTX_SERVICE_ACCOUNT_TOKENS, PROVIDER_AZURE,
};

use crate::cluster::SharedClusterSink;
use crate::cluster::spc::{SecretProviderClass, SharedSpcStore};
use crate::dropin::{MountData, grpc_timeout};
use crate::metrics::Metrics;
use crate::proto::csi::controller_server::Controller;
use crate::proto::csi::identity_server::Identity;
use crate::proto::csi::node_server::Node;
use crate::proto::csi::*;
use crate::provider::{Freshness, MountContent, Provider};
use crate::volume::mount::Mounter;
pub use crate::volume::state::MountedVolume;
use crate::volume::state::StateFile;
use crate::volume::writer;

/// How long the volume record writer waits after a change for more changes to write with it.
const STATE_WRITE_DELAY: Duration = Duration::from_millis(200);
/// kubelet's deadline for CSI calls, used when a request carries no `grpc-timeout`.
const DEFAULT_DEADLINE: Duration = Duration::from_secs(120);
/// Time kept back from the deadline for writing the files and answering.
const DEADLINE_RESERVE: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
pub struct DriverInfo {
    pub name: String,
    pub version: String,
    pub node_id: String,
}

/// What the driver does besides mounting, all optional.
#[derive(Default)]
pub struct DriverOptions {
    /// `--rotation-poll-interval` when `--enable-secret-rotation` is on.
    pub rotation: Option<Duration>,
    /// The record of mounted volumes that survives a restart.
    pub state: Option<StateFile>,
    /// Pod status and secret sync.
    pub cluster: Option<SharedClusterSink>,
    /// `--sync-secrets`: write the Kubernetes Secrets of `spec.secretObjects`.
    pub sync_secrets: bool,
}

/// Shared state of both services.
pub struct Driver {
    info: DriverInfo,
    spcs: SharedSpcStore,
    provider: Arc<Provider>,
    mounter: Mounter,
    metrics: Arc<Metrics>,
    rotation: Option<Duration>,
    state: Option<StateFile>,
    cluster: Option<SharedClusterSink>,
    sync_secrets: bool,
    volumes: Mutex<HashMap<PathBuf, MountedVolume>>,
    /// Set once the background writer runs: changes then only mark the record dirty.
    state_dirty: std::sync::OnceLock<Arc<tokio::sync::Notify>>,
    target_locks: Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>,
}

/// A publish request resolved against its SecretProviderClass: everything the provider needs.
struct Resolved {
    spc: SecretProviderClass,
    data: MountData,
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

/// When the files at `target` last changed: the `..data` link is replaced on every swap (the upstream driver
/// reads the target's mtime instead). For a volume the agent has no record of, e.g. after its state was lost.
fn content_mtime(target: &Path) -> Option<SystemTime> {
    std::fs::symlink_metadata(target.join("..data"))
        .or_else(|_| std::fs::symlink_metadata(target))
        .and_then(|meta| meta.modified())
        .ok()
}

/// Best-effort removal of a first mount that failed; the error that matters is the one that stopped it.
fn cleanup(mounter: Mounter, target: &Path, created_dir: bool) {
    if let Err(e) = mounter.teardown(target, created_dir) {
        tracing::error!(target = %target.display(), error = %e, "cleanup after a failed mount failed");
    }
}

impl Driver {
    pub fn new(
        info: DriverInfo,
        spcs: SharedSpcStore,
        provider: Arc<Provider>,
        mounter: Mounter,
        metrics: Arc<Metrics>,
        options: DriverOptions,
    ) -> Self {
        Self {
            info,
            spcs,
            provider,
            mounter,
            metrics,
            rotation: options.rotation,
            state: options.state,
            cluster: options.cluster,
            sync_secrets: options.sync_secrets,
            volumes: Mutex::new(HashMap::new()),
            state_dirty: std::sync::OnceLock::new(),
            target_locks: Mutex::new(HashMap::new()),
        }
    }

    /// Takes over the volumes of the state file that are still published (a restarted agent), and rewrites
    /// the record without the others. Returns how many were recovered.
    pub fn recover(&self) -> Result<usize, crate::volume::state::StateError> {
        let Some(state) = &self.state else {
            return Ok(0);
        };
        let recorded = state.load()?;
        let mut volumes = self.volumes.lock().unwrap_or_else(|p| p.into_inner());
        for volume in recorded {
            match self.mounter.is_published(&volume.target_path) {
                Ok(true) => {
                    volumes.insert(volume.target_path.clone(), volume);
                }
                Ok(false) => {
                    tracing::info!(target = %volume.target_path.display(), "recorded volume is no longer mounted; forgotten")
                }
                Err(e) => {
                    tracing::warn!(target = %volume.target_path.display(), error = %e, "recorded volume cannot be checked; forgotten")
                }
            }
        }
        let count = volumes.len();
        drop(volumes);
        self.save_state();
        Ok(count)
    }

    /// Starts the background writer of the volume record: changes made in quick succession (a node's pods
    /// refreshed in one round) are written once, not once each. Without it every change is written at once.
    pub fn start_state_writer(self: &Arc<Self>) {
        if self.state.is_none() {
            return;
        }
        let dirty = Arc::new(tokio::sync::Notify::new());
        if self.state_dirty.set(dirty.clone()).is_err() {
            return;
        }
        let driver = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                dirty.notified().await;
                tokio::time::sleep(STATE_WRITE_DELAY).await;
                let Some(driver) = driver.upgrade() else {
                    return;
                };
                let _ = tokio::task::spawn_blocking(move || driver.write_state()).await;
            }
        });
    }

    /// Writes the volume record now (at shutdown, so that nothing the writer delayed is lost).
    pub fn flush_state(&self) {
        if self.state_dirty.get().is_some() {
            self.write_state();
        }
    }

    fn save_state(&self) {
        match self.state_dirty.get() {
            Some(dirty) => dirty.notify_one(),
            None => self.write_state(),
        }
    }

    fn write_state(&self) {
        let Some(state) = &self.state else {
            return;
        };
        // Serialized under the lock rather than from a copy (a few milliseconds for hundreds of volumes, once per
        // burst of changes); holding it also orders the writes, so the last one holds the newest record.
        let volumes = self.volumes.lock().unwrap_or_else(|p| p.into_inner());
        let mut sorted: Vec<&MountedVolume> = volumes.values().collect();
        sorted.sort_by(|a, b| a.target_path.cmp(&b.target_path));
        if let Err(e) = state.save(&sorted) {
            tracing::error!(error = %e, "the volume record was not updated; a restarted agent may not know every volume");
        }
    }

    fn remember(&self, volume: MountedVolume) {
        self.volumes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(volume.target_path.clone(), volume);
        self.save_state();
    }

    fn forget(&self, target: &Path) {
        let removed = self
            .volumes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(target)
            .is_some();
        if removed {
            self.save_state();
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
        tracing::info!(
            volume_id = %req.volume_id,
            target = %req.target_path,
            pod = %format!("{}/{}", ctx(context, CTX_POD_NAMESPACE), ctx(context, CTX_POD_NAME)),
            secret_provider_class = ctx(context, CTX_SECRET_PROVIDER_CLASS),
            "NodePublishVolume"
        );
        tracing::debug!(volume_context = ?loggable(context), secrets = ?req.secrets.keys().collect::<Vec<_>>(), "NodePublishVolume request");

        let lock = self.target_lock(&target);
        let _guard = lock.lock().await;

        let known = self
            .volumes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&target)
            .cloned();
        let published = known.is_some()
            || self
                .mounter
                .is_published(&target)
                .map_err(|e| PublishFailure::internal("FailedToEnsureMountPoint", e.to_string()))?;
        if published {
            // A republish (kubelet retries, requiresRepublish): without rotation it changes nothing.
            let Some(interval) = self.rotation else {
                tracing::info!(target = %req.target_path, "target path is already mounted; nothing to do");
                return Ok(());
            };
            let refreshed_at = known
                .as_ref()
                .map(|v| v.refreshed_at)
                .or_else(|| content_mtime(&target))
                .unwrap_or(SystemTime::UNIX_EPOCH);
            if SystemTime::now() < refreshed_at + interval {
                tracing::debug!(target = %req.target_path, "refreshed less than --rotation-poll-interval ago; skipped");
                return Ok(());
            }
            self.refresh(&req, &target, known.as_ref(), deadline).await;
            return Ok(());
        }

        let resolved = self.resolve(&req).await?;
        let content = self.fetch(&req, &resolved, deadline, Freshness::Fresh).await?;
        let objects = content.objects;
        let mounter = self.mounter;
        let write_target = target.clone();
        let files = content.files;
        let prepared = tokio::task::spawn_blocking(move || {
            let prepared = mounter
                .prepare(&write_target)
                .map_err(|e| PublishFailure::internal("FailedToMount", e.to_string()))?;
            if let Err(e) = writer::write_atomically(&write_target, &files) {
                // A first mount that fails leaves nothing behind, so kubelet's retry starts from scratch.
                cleanup(mounter, &write_target, prepared.created_dir);
                return Err(PublishFailure::internal(
                    "FileWriteError",
                    format!(
                        "failed to write the files of the volume at {}: {e}",
                        write_target.display()
                    ),
                ));
            }
            Ok(prepared)
        })
        .await
        .map_err(|e| PublishFailure::internal("FileWriteError", format!("the write task failed: {e}")))??;

        let volume = self.mounted_volume(&req, &target, objects);
        if let Some(cluster) = &self.cluster
            && let Err(e) = cluster.record_pod_status(&volume).await
        {
            let cleanup_target = target.clone();
            let _ = tokio::task::spawn_blocking(move || cleanup(mounter, &cleanup_target, prepared.created_dir)).await;
            return Err(PublishFailure::unknown("ProviderError", e.to_string()));
        }
        self.remember(volume.clone());
        self.sync_secrets_later(volume, resolved.spc);
        tracing::info!(
            pod = %format!("{}/{}", ctx(context, CTX_POD_NAMESPACE), ctx(context, CTX_POD_NAME)),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "volume published"
        );
        Ok(())
    }

    /// The SecretProviderClass of a request and the provider's inputs, with upstream's checks and texts.
    async fn resolve(&self, req: &NodePublishVolumeRequest) -> Result<Resolved, PublishFailure> {
        let context = &req.volume_context;
        let spc_name = ctx(context, CTX_SECRET_PROVIDER_CLASS);
        let pod_name = ctx(context, CTX_POD_NAME);
        let pod_namespace = ctx(context, CTX_POD_NAMESPACE);
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

        let data = MountData::merge(&spc.parameters, context, &req.secrets);
        if !req.readonly {
            return Err(PublishFailure::invalid("Readonly is not true in request"));
        }
        Ok(Resolved { spc, data })
    }

    /// The provider's files for a resolved request.
    async fn fetch(
        &self,
        req: &NodePublishVolumeRequest,
        resolved: &Resolved,
        deadline: Instant,
        freshness: Freshness,
    ) -> Result<MountContent, PublishFailure> {
        let context = &req.volume_context;
        let pod_namespace = ctx(context, CTX_POD_NAMESPACE);
        self.provider
            .content(resolved.data.input(), deadline, freshness)
            .await
            .map_err(|e| {
                PublishFailure::unknown(
                    "ProviderError",
                    format!(
                        "failed to mount secrets store objects for pod {pod_namespace}/{pod_name}, err: \
                         SecretProviderClass {pod_namespace}/{spc_name}: {e}",
                        pod_name = ctx(context, CTX_POD_NAME),
                        spc_name = resolved.spc.name,
                    ),
                )
            })
    }

    fn mounted_volume(
        &self,
        req: &NodePublishVolumeRequest,
        target: &Path,
        objects: Vec<crate::content::ObjectVersion>,
    ) -> MountedVolume {
        let context = &req.volume_context;
        MountedVolume {
            volume_id: req.volume_id.clone(),
            target_path: target.to_path_buf(),
            pod_namespace: ctx(context, CTX_POD_NAMESPACE).to_string(),
            pod_name: ctx(context, CTX_POD_NAME).to_string(),
            pod_uid: ctx(context, CTX_POD_UID).to_string(),
            secret_provider_class: ctx(context, CTX_SECRET_PROVIDER_CLASS).to_string(),
            objects,
            refreshed_at: SystemTime::now(),
        }
    }

    /// Rotation of a mounted volume: fetch again (sharing this round's reads with other volumes) and swap the
    /// files in when anything changed. A failure keeps the mounted files as they are and is not returned:
    /// kubelet would tear the mount down on an error (kubernetes #121271).
    async fn refresh(
        &self,
        req: &NodePublishVolumeRequest,
        target: &Path,
        known: Option<&MountedVolume>,
        deadline: Instant,
    ) {
        let started = Instant::now();
        let result = async {
            let resolved = self.resolve(req).await?;
            let content = self.fetch(req, &resolved, deadline, Freshness::SharedRound).await?;
            let write_target = target.to_path_buf();
            let files = content.files;
            let outcome = tokio::task::spawn_blocking(move || writer::write_atomically(&write_target, &files))
                .await
                .map_err(|e| PublishFailure::internal("FileWriteError", format!("the write task failed: {e}")))?
                .map_err(|e| {
                    PublishFailure::internal(
                        "FileWriteError",
                        format!("failed to write the files of the volume at {}: {e}", target.display()),
                    )
                })?;
            Ok::<_, PublishFailure>((resolved.spc, content.objects, outcome.changed()))
        }
        .await;
        let seconds = started.elapsed().as_secs_f64();
        match result {
            Ok((spc, objects, changed)) => {
                self.metrics.rotation_ok(changed, seconds);
                let volume = self.mounted_volume(req, target, objects);
                // The pod status lists versions: it changes only when they do (or the agent has no record).
                let versions_changed = known.is_none_or(|k| k.objects != volume.objects);
                if let Some(cluster) = &self.cluster
                    && versions_changed
                    && let Err(e) = cluster.record_pod_status(&volume).await
                {
                    tracing::warn!(target = %target.display(), error = %e, "pod status not updated after a refresh");
                }
                self.remember(volume.clone());
                self.sync_secrets_later(volume, spc);
                tracing::info!(target = %target.display(), changed, "volume refreshed");
            }
            Err(failure) => {
                self.metrics.rotation_error(failure.error_type, seconds);
                tracing::warn!(
                    target = %target.display(),
                    error = %failure.message,
                    "refresh failed; the mounted files are kept as they were"
                );
            }
        }
    }

    /// Secret sync runs beside the publish, as the driver's controller does: it never delays or fails a mount.
    fn sync_secrets_later(&self, volume: MountedVolume, spc: SecretProviderClass) {
        if spc.secret_objects.is_none() {
            return;
        }
        if !self.sync_secrets {
            tracing::debug!(secret_provider_class = %spc.name, "secretObjects not synced: --sync-secrets is off");
            return;
        }
        if let Some(cluster) = self.cluster.clone() {
            tokio::spawn(async move { cluster.sync_secrets(&volume, &spc).await });
        }
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
                self.forget(&target);
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

/// The Controller service of a node plugin: only `ControllerGetCapabilities`, answered as the upstream driver
/// answers it (one `RPC UNKNOWN` capability). csi-sanity's node suite asks it before every spec and refuses an
/// empty list (it decodes as nil); the agent does not advertise CONTROLLER_SERVICE, so nothing else asks.
#[derive(Debug, Clone, Copy, Default)]
pub struct ControllerService;

#[tonic::async_trait]
impl Controller for ControllerService {
    async fn controller_get_capabilities(
        &self,
        _request: Request<ControllerGetCapabilitiesRequest>,
    ) -> Result<Response<ControllerGetCapabilitiesResponse>, Status> {
        use controller_service_capability::{Rpc, Type, rpc};
        Ok(Response::new(ControllerGetCapabilitiesResponse {
            capabilities: vec![ControllerServiceCapability {
                r#type: Some(Type::Rpc(Rpc {
                    r#type: rpc::Type::Unknown as i32,
                })),
            }],
        }))
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
    use crate::cluster::spc::{MemorySpcStore, SecretProviderClass};
    use crate::provider::ProviderConfig;
    use crate::provider::http::RetryPolicy;
    use crate::provider::render::RenderOptions;
    use crate::volume::mount::MountMode;
    use wisp_shared::contract::secrets_store::CTX_SERVICE_ACCOUNT_NAME;

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
                rotation_round: Duration::from_secs(120),
            },
            crate::provider::http::build_client().unwrap(),
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
            DriverOptions::default(),
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
