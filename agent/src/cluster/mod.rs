//! What a publish reports back to the cluster: the SecretProviderClassPodStatus of the volume, and the
//! Kubernetes Secrets of `spec.secretObjects` built from the mounted files. [`ClusterSink`] is the seam: the
//! node service calls it after every successful publish or refresh; [`KubeCluster`] writes through the
//! Kubernetes API; unit tests run without one. The object bodies come from the pure modules
//! [`crate::cluster::pod_status`] and [`crate::cluster::secret_sync`].

pub(crate) mod pod_status;
pub(crate) mod secret_sync;
pub(crate) mod spc;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use futures::FutureExt;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{ObjectReference, Pod, Secret};
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

use crate::cluster::pod_status::PodStatusInput;
use crate::cluster::secret_sync::{EVENT_REASON_FAILED, FIELD_MANAGER};
use crate::cluster::spc::SecretProviderClass;
use crate::metrics::Metrics;
use crate::volume::mounted_files::read_mounted_files;
use crate::volume::state::MountedVolume;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("failed to create secret provider class pod status for pod {pod}, err: {reason}")]
    PodStatus { pod: String, reason: String },
}

/// Why a volume's Secrets were not synced at all (problems with single Secrets become Events instead).
#[derive(Debug, thiserror::Error)]
enum SyncSkipped {
    #[error(transparent)]
    SecretObjects(#[from] secret_sync::SecretObjectsError),
    #[error("the Kubernetes API failed the request: {0}")]
    Api(#[from] kube::Error),
    #[error("pod {pod} not found; its Secrets are synced when it exists")]
    PodMissing { pod: String },
    #[error("pod {pod} has uid {found}, not the mounting pod's {expected}; nothing synced")]
    PodReplaced {
        pod: String,
        found: String,
        expected: String,
    },
    #[error(
        "target path {target} is not the mount path of a {driver} volume of pod {pod} using SecretProviderClass \
         {spc}; nothing synced",
        driver = wisp_shared::contract::secrets_store::DRIVER_NAME
    )]
    NotThePodsVolume { target: String, pod: String, spc: String },
    #[error(transparent)]
    Files(#[from] crate::volume::mounted_files::MountedFilesError),
    #[error("reading the mounted files failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Where a published volume is reported.
pub trait ClusterSink: Send + Sync {
    /// Creates or updates the volume's SecretProviderClassPodStatus; an error fails a first mount (as upstream).
    fn record_pod_status<'a>(&'a self, volume: &'a MountedVolume) -> BoxFuture<'a, Result<(), ClusterError>>;

    /// Writes the Secrets of `spc.secretObjects` from the files mounted for `volume`. Problems are reported as
    /// Events on the pod and in the log: they never fail a mount.
    fn sync_secrets<'a>(&'a self, volume: &'a MountedVolume, spc: &'a SecretProviderClass) -> BoxFuture<'a, ()>;
}

pub type SharedClusterSink = Arc<dyn ClusterSink>;

/// Pod status writes and secret syncs in flight at once. kube's client speaks HTTP/1.1, so every request in
/// flight holds a TLS connection of its own, and its pool keeps every connection it opened (idle connections
/// expire only when the pool is next used): kubelet republishing 2,000 volumes at once left 1,700 connections to
/// the API server open for good (RELIABILITY.md, `## Load`). Sixteen keep the pool at sixteen; a write takes
/// milliseconds, so the rest wait milliseconds, far inside kubelet's 2-minute deadline.
const API_WRITES_IN_FLIGHT: usize = 16;

/// The Kubernetes API as the sink.
pub struct KubeCluster {
    client: kube::Client,
    node_name: String,
    recorder: Recorder,
    metrics: Arc<Metrics>,
    /// [`API_WRITES_IN_FLIGHT`] permits.
    in_flight: tokio::sync::Semaphore,
}

impl std::fmt::Debug for KubeCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeCluster")
            .field("node_name", &self.node_name)
            .finish_non_exhaustive()
    }
}

impl KubeCluster {
    pub fn new(client: kube::Client, node_name: &str, metrics: Arc<Metrics>) -> Self {
        let reporter = Reporter {
            controller: "wisp-agent".into(),
            instance: Some(node_name.to_string()),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            node_name: node_name.to_string(),
            metrics,
            in_flight: tokio::sync::Semaphore::new(API_WRITES_IN_FLIGHT),
        }
    }

    /// Creates or updates the object in one call: a server-side apply, forced, so that an object the upstream
    /// driver wrote is taken over. An apply that changes nothing is a no-op on the server.
    async fn write_pod_status(&self, volume: &MountedVolume) -> Result<(), kube::Error> {
        let target_path = volume.target_path.display().to_string();
        let desired = pod_status::pod_status_object(&PodStatusInput {
            pod_name: &volume.pod_name,
            pod_namespace: &volume.pod_namespace,
            pod_uid: &volume.pod_uid,
            secret_provider_class: &volume.secret_provider_class,
            node_name: &self.node_name,
            target_path: &target_path,
            objects: &volume.objects,
        });
        let name = pod_status::pod_status_name(&volume.pod_name, &volume.pod_namespace, &volume.secret_provider_class);
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &volume.pod_namespace, &pod_status::api_resource());
        api.patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&desired),
        )
        .await
        .map(drop)
    }

    async fn sync(&self, volume: &MountedVolume, spc: &SecretProviderClass) -> Result<usize, SyncSkipped> {
        let objects = secret_sync::parse_secret_objects(&spc.namespace, &spc.name, spc.secret_objects.as_ref())?;
        if objects.is_empty() {
            return Ok(0);
        }
        let shown_pod = || format!("{}/{}", volume.pod_namespace, volume.pod_name);
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &volume.pod_namespace);
        let Some(pod) = pods.get_opt(&volume.pod_name).await? else {
            return Err(SyncSkipped::PodMissing { pod: shown_pod() });
        };
        let pod_uid = pod.metadata.uid.clone().unwrap_or_default();
        if pod_uid != volume.pod_uid {
            return Err(SyncSkipped::PodReplaced {
                pod: shown_pod(),
                found: pod_uid,
                expected: volume.pod_uid.clone(),
            });
        }
        let target_path = volume.target_path.display().to_string();
        let belongs = secret_sync::secrets_store_volume(&pod, &spc.name)
            .is_some_and(|volume_name| secret_sync::target_path_belongs_to(&target_path, &pod_uid, volume_name));
        if !belongs {
            return Err(SyncSkipped::NotThePodsVolume {
                target: target_path,
                pod: shown_pod(),
                spc: spc.name.clone(),
            });
        }

        let owners = if pod.metadata.owner_references.as_deref().unwrap_or_default().is_empty() {
            let status_name =
                pod_status::pod_status_name(&volume.pod_name, &volume.pod_namespace, &volume.secret_provider_class);
            let api: Api<DynamicObject> =
                Api::namespaced_with(self.client.clone(), &volume.pod_namespace, &pod_status::api_resource());
            let status = api.get(&status_name).await?;
            secret_sync::secret_owner_references(&[], &status_name, status.metadata.uid.as_deref().unwrap_or(""))
        } else {
            secret_sync::secret_owner_references(pod.metadata.owner_references.as_deref().unwrap_or_default(), "", "")
        };

        let root: PathBuf = volume.target_path.clone();
        let files = tokio::task::spawn_blocking(move || read_mounted_files(&root)).await??;
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &volume.pod_namespace);
        let reference = pod_reference(&pod);
        let mut written = 0;
        for built in secret_sync::build_secrets(&spc.namespace, &spc.name, &objects, &volume.pod_namespace, &files) {
            let result = match built {
                Err(e) => Err(e.to_string()),
                Ok(apply) => {
                    let params = PatchParams::apply(FIELD_MANAGER).force();
                    match secrets.patch(&apply.name, &params, &Patch::Apply(&apply.body)).await {
                        Ok(_) => secrets
                            .patch(
                                &apply.name,
                                &PatchParams::default(),
                                &Patch::Strategic(secret_sync::owner_references_patch(&owners)),
                            )
                            .await
                            .map(|_| written += 1)
                            .map_err(|e| format!("failed to set the owners of secret {}: {e}", apply.name)),
                        Err(kube::Error::Api(status)) if status.code == 403 => Err(format!(
                            "failed to write secret {}: {}; the agent may not write Secrets: install the chart \
                             with syncSecret.enabled=true",
                            apply.name, status.message
                        )),
                        Err(e) => Err(format!("failed to write secret {}: {e}", apply.name)),
                    }
                }
            };
            if let Err(message) = result {
                tracing::warn!(pod = %format!("{}/{}", volume.pod_namespace, volume.pod_name), error = %message, "secret sync failed");
                let event = Event {
                    type_: EventType::Warning,
                    reason: EVENT_REASON_FAILED.into(),
                    note: Some(message),
                    action: "SyncSecret".into(),
                    secondary: None,
                };
                if let Err(e) = self.recorder.publish(&event, &reference).await {
                    tracing::warn!(error = %e, "cannot record the secret sync failure as an Event");
                }
            }
        }
        Ok(written)
    }
}

fn pod_reference(pod: &Pod) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        name: pod.metadata.name.clone(),
        namespace: pod.metadata.namespace.clone(),
        uid: pod.metadata.uid.clone(),
        resource_version: pod.metadata.resource_version.clone(),
        ..ObjectReference::default()
    }
}

impl ClusterSink for KubeCluster {
    fn record_pod_status<'a>(&'a self, volume: &'a MountedVolume) -> BoxFuture<'a, Result<(), ClusterError>> {
        async move {
            // The semaphore is never closed.
            let _permit = self.in_flight.acquire().await.ok();
            self.write_pod_status(volume)
                .await
                .map_err(|e| ClusterError::PodStatus {
                    pod: format!("{}/{}", volume.pod_namespace, volume.pod_name),
                    reason: e.to_string(),
                })
        }
        .boxed()
    }

    fn sync_secrets<'a>(&'a self, volume: &'a MountedVolume, spc: &'a SecretProviderClass) -> BoxFuture<'a, ()> {
        async move {
            let _permit = self.in_flight.acquire().await.ok();
            let started = Instant::now();
            match self.sync(volume, spc).await {
                Ok(0) => {}
                Ok(count) => {
                    self.metrics
                        .secrets_synced(count as u64, started.elapsed().as_secs_f64());
                    tracing::info!(pod = %format!("{}/{}", volume.pod_namespace, volume.pod_name), secrets = count, "secrets synced");
                }
                Err(skipped) => {
                    tracing::warn!(pod = %format!("{}/{}", volume.pod_namespace, volume.pod_name), error = %skipped, "secret sync skipped");
                }
            }
        }
        .boxed()
    }
}
