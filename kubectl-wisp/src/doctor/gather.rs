//! Reads what the checks need about one pod. Every read stands alone: a failed one is kept as its error text and
//! the rest still run.

use std::collections::BTreeMap;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Event, Namespace, Pod, ServiceAccount};
use k8s_openapi::api::storage::v1::{CSIDriver, CSINode};
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams};
use serde_json::Value;
use wisp_shared::contract::secrets_store::{API_GROUP, CTX_SECRET_PROVIDER_CLASS, DRIVER_NAME};

use super::observed::{ClassObserved, NodeObserved, Observed, Read, VolumeObserved};
use crate::cluster::{Cluster, ClusterError};

/// The wisp chart's agent pods: its DaemonSet's selector labels (`helm/wisp/templates/_helpers.tpl`).
const AGENT_POD_SELECTOR: &str = "app.kubernetes.io/name=wisp,app.kubernetes.io/component=agent";

fn custom_resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(API_GROUP, "v1", kind), plural)
}

fn read<T>(result: Result<T, ClusterError>) -> Read<T> {
    result.map_err(|e| e.to_string())
}

/// Everything about `pod`.
pub async fn observe(cluster: &Cluster, pod: Pod) -> Observed {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let service_account = pod
        .spec
        .as_ref()
        .and_then(|spec| spec.service_account_name.clone())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "default".to_string());
    let mut volumes = Vec::new();
    for (volume, attributes) in csi_volumes(&pod) {
        volumes.push(observe_volume(cluster, &pod, volume, attributes).await);
    }
    let node = match pod.spec.as_ref().and_then(|spec| spec.node_name.clone()) {
        Some(name) if !name.is_empty() => Some(observe_node(cluster, name).await),
        _ => None,
    };
    Observed {
        namespace: read(cluster.get_cluster::<Namespace>(&namespace).await),
        service_account: read(cluster.get::<ServiceAccount>(&namespace, &service_account).await),
        webhook_configurations: read(cluster.list_cluster::<MutatingWebhookConfiguration>().await),
        issuer: read(cluster.issuer().await),
        volumes,
        csi_driver: read(cluster.get_cluster::<CSIDriver>(DRIVER_NAME).await),
        node,
        failed_mounts: read(failed_mounts(cluster, &pod).await),
        pod,
    }
}

/// The pod's `secrets-store.csi.k8s.io` volumes: name and volume attributes.
fn csi_volumes(pod: &Pod) -> Vec<(String, BTreeMap<String, String>)> {
    pod.spec
        .as_ref()
        .and_then(|spec| spec.volumes.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|volume| {
            let csi = volume.csi.as_ref().filter(|csi| csi.driver == DRIVER_NAME)?;
            Some((volume.name.clone(), csi.volume_attributes.clone().unwrap_or_default()))
        })
        .collect()
}

async fn observe_volume(
    cluster: &Cluster,
    pod: &Pod,
    volume: String,
    attributes: BTreeMap<String, String>,
) -> VolumeObserved {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
    let pod_name = pod.metadata.name.as_deref().unwrap_or_default();
    let class_name = attributes
        .get(CTX_SECRET_PROVIDER_CLASS)
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty());
    let Some(name) = class_name.clone() else {
        return VolumeObserved {
            volume,
            attributes,
            class_name,
            class: Ok(None),
            elsewhere: Vec::new(),
            pod_status: Ok(None),
        };
    };
    let classes = custom_resource("SecretProviderClass", "secretproviderclasses");
    let class = read(cluster.get_custom(&classes, namespace, &name).await)
        .and_then(|found| found.map(|object| class_observed(&object)).transpose());
    // Where else a class of that name lives, to say so; a user who may not list every namespace just does not
    // get that hint.
    let elsewhere = match &class {
        Ok(None) => cluster
            .find_custom(&classes, &name)
            .await
            .unwrap_or_default()
            .into_iter()
            .filter_map(|object| object.metadata.namespace)
            .filter(|other| other != namespace)
            .collect(),
        _ => Vec::new(),
    };
    let statuses = custom_resource("SecretProviderClassPodStatus", "secretproviderclasspodstatuses");
    let status_name = format!("{pod_name}-{namespace}-{name}");
    VolumeObserved {
        volume,
        attributes,
        class_name,
        class,
        elsewhere,
        pod_status: read(cluster.get_custom(&statuses, namespace, &status_name).await),
    }
}

/// The provider and the parameters, which are all strings in the CRD's schema.
fn class_observed(object: &DynamicObject) -> Read<ClassObserved> {
    let spec = &object.data["spec"];
    let provider = spec["provider"].as_str().unwrap_or_default().to_string();
    let parameters = match &spec["parameters"] {
        Value::Null => BTreeMap::new(),
        parameters => serde_json::from_value(parameters.clone())
            .map_err(|e| format!("spec.parameters of the SecretProviderClass are not all strings: {e}"))?,
    };
    Ok(ClassObserved { provider, parameters })
}

async fn observe_node(cluster: &Cluster, name: String) -> NodeObserved {
    let agents = ListParams::default()
        .labels(AGENT_POD_SELECTOR)
        .fields(&format!("spec.nodeName={name}"));
    NodeObserved {
        csi_node: read(cluster.get_cluster::<CSINode>(&name).await),
        agent_pods: read(cluster.list::<Pod>(None, &agents).await),
        name,
    }
}

/// The pod's FailedMount events (kubelet's), for this pod and not an earlier one of the same name.
async fn failed_mounts(cluster: &Cluster, pod: &Pod) -> Result<Vec<Event>, ClusterError> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let params = ListParams::default().fields(&format!(
        "involvedObject.kind=Pod,involvedObject.name={name},reason=FailedMount"
    ));
    let events: Vec<Event> = cluster.list(Some(namespace), &params).await?;
    let uid = pod.metadata.uid.as_deref();
    Ok(events
        .into_iter()
        .filter(|event| event.involved_object.uid.is_none() || event.involved_object.uid.as_deref() == uid)
        .collect())
}
