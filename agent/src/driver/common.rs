//! The [`Driver`] type and what first mounts and refreshes share: resolving a request against its
//! SecretProviderClass with upstream's checks and texts, fetching through the provider, the volume record, secret
//! sync beside the publish.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;
use tonic::Code;
use wisp_shared::contract::secrets_store::{CTX_POD_NAME, CTX_POD_NAMESPACE, PROVIDER_AZURE};

use super::registry::VolumeRegistry;
use super::request::PublishRequest;
use crate::cluster::SharedClusterSink;
use crate::cluster::spc::{SecretProviderClass, SharedSpcStore};
use crate::content::ObjectVersion;
use crate::error_text::error_chain;
use crate::metrics::Metrics;
use crate::provider::input::MountData;
use crate::provider::{Freshness, MountContent, Provider};
use crate::volume::mount::Mounter;
use crate::volume::state::{MountedVolume, StateError, StateFile};

#[derive(Debug, Clone)]
pub(crate) struct DriverInfo {
    pub name: String,
    pub version: String,
    pub node_id: String,
}

/// What the driver does besides mounting, all optional.
#[derive(Default)]
pub(crate) struct DriverOptions {
    /// `--rotation-poll-interval` when `--enable-secret-rotation` is on.
    pub rotation: Option<Duration>,
    /// The record of mounted volumes that survives a restart.
    pub state: Option<StateFile>,
    /// Pod status and secret sync.
    pub cluster: Option<SharedClusterSink>,
    /// `--sync-secrets`: write the Kubernetes Secrets of `spec.secretObjects`.
    pub sync_secrets: bool,
}

/// The node's publishing state, shared by the CSI services.
pub(crate) struct Driver {
    pub(crate) info: DriverInfo,
    pub(crate) metrics: Arc<Metrics>,
    pub(super) spcs: SharedSpcStore,
    pub(super) provider: Arc<Provider>,
    pub(super) mounter: Mounter,
    pub(super) rotation: Option<Duration>,
    pub(super) cluster: Option<SharedClusterSink>,
    pub(super) sync_secrets: bool,
    pub(super) registry: Arc<VolumeRegistry>,
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
pub(crate) struct PublishFailure {
    pub code: Code,
    pub error_type: &'static str,
    pub message: String,
}

impl PublishFailure {
    pub fn invalid(message: &str) -> Self {
        Self {
            code: Code::InvalidArgument,
            error_type: "InvalidArgument",
            message: message.to_string(),
        }
    }
    pub(super) fn unknown(error_type: &'static str, message: String) -> Self {
        Self {
            code: Code::Unknown,
            error_type,
            message,
        }
    }
    pub(super) fn internal(error_type: &'static str, message: String) -> Self {
        Self {
            code: Code::Internal,
            error_type,
            message,
        }
    }
}

/// A publish request resolved against its SecretProviderClass: everything the provider needs.
pub(super) struct Resolved {
    pub spc: SecretProviderClass,
    pub data: MountData,
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
            cluster: options.cluster,
            sync_secrets: options.sync_secrets,
            registry: Arc::new(VolumeRegistry::new(options.state)),
        }
    }

    /// Takes over the volumes of the state file that are still published (a restarted agent). Returns how many
    /// were recovered.
    pub fn recover(&self) -> Result<usize, StateError> {
        self.registry.recover(self.mounter)
    }

    /// Starts the background writer of the volume record.
    pub fn start_state_writer(&self) {
        self.registry.start_state_writer();
    }

    /// Writes the volume record now (at shutdown).
    pub fn flush_state(&self) {
        self.registry.flush_state();
    }

    /// The SecretProviderClass of a request and the provider's inputs, with upstream's checks and texts.
    pub(super) async fn resolve(&self, request: &PublishRequest) -> Result<Resolved, PublishFailure> {
        let spc_name = request.secret_provider_class.as_str();
        let pod_name = request.pod.name.as_str();
        let pod_namespace = request.pod.namespace.as_str();
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
                    format!(
                        "failed to get secretproviderclass {pod_namespace}/{spc_name}, error: {}",
                        error_chain(&e)
                    ),
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

        let data = MountData::merge(&spc.parameters, &request.attributes, &request.secrets);
        if !request.readonly {
            return Err(PublishFailure::invalid("Readonly is not true in request"));
        }
        Ok(Resolved { spc, data })
    }

    /// The provider's files for a resolved request.
    pub(super) async fn fetch(
        &self,
        request: &PublishRequest,
        resolved: &Resolved,
        deadline: Instant,
        freshness: Freshness,
    ) -> Result<MountContent, PublishFailure> {
        self.provider
            .content(resolved.data.input(), deadline, freshness)
            .await
            .map_err(|e| {
                PublishFailure::unknown(
                    "ProviderError",
                    format!(
                        "failed to mount secrets store objects for pod {pod_namespace}/{pod_name}, err: \
                         SecretProviderClass {pod_namespace}/{spc_name}: {e}",
                        pod_namespace = request.pod.namespace,
                        pod_name = request.pod.name,
                        spc_name = resolved.spc.name,
                    ),
                )
            })
    }

    pub(super) fn mounted_volume(&self, request: &PublishRequest, objects: Vec<ObjectVersion>) -> MountedVolume {
        MountedVolume {
            volume_id: request.volume_id.clone(),
            target_path: request.target.clone(),
            pod_namespace: request.pod.namespace.clone(),
            pod_name: request.pod.name.clone(),
            pod_uid: request.pod.uid.clone(),
            secret_provider_class: request.secret_provider_class.clone(),
            objects,
            refreshed_at: SystemTime::now(),
        }
    }

    /// Secret sync runs beside the publish, as the driver's controller does: it never delays or fails a mount.
    pub(super) fn sync_secrets_later(&self, volume: MountedVolume, spc: SecretProviderClass) {
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
}

#[cfg(test)]
impl Driver {
    pub fn registry_volumes(&self) -> Vec<MountedVolume> {
        self.registry.volumes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_names_are_rfc_1123_subdomains() {
        assert!(is_object_name("spc-1.example"));
        assert!(!is_object_name("Spc"));
        assert!(!is_object_name("a..b"));
        assert!(!is_object_name("-a"));
    }
}
