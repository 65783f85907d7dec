//! Everything doctor read from the cluster about one pod, in the shape the checks take it. Each read keeps its
//! error text, so a check that cannot see what it needs fails with the reason instead of stopping the run.

use std::collections::BTreeMap;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Event, Namespace, Pod, ServiceAccount};
use k8s_openapi::api::storage::v1::{CSIDriver, CSINode};
use kube::api::DynamicObject;
use wisp_agent::{IdentityMode, ParamError};
use wisp_shared::contract::workload_identity as wi;

/// One read: what it found, or why it could not read.
pub type Read<T> = Result<T, String>;

#[derive(Debug, Clone)]
pub struct Observed {
    pub pod: Pod,
    pub namespace: Read<Option<Namespace>>,
    pub service_account: Read<Option<ServiceAccount>>,
    pub webhook_configurations: Read<Vec<MutatingWebhookConfiguration>>,
    /// The cluster's service account issuer.
    pub issuer: Read<String>,
    /// The pod's `secrets-store.csi.k8s.io` volumes, in the pod's order.
    pub volumes: Vec<VolumeObserved>,
    pub csi_driver: Read<Option<CSIDriver>>,
    /// `None` while the pod is not scheduled.
    pub node: Option<NodeObserved>,
    /// The pod's `FailedMount` events.
    pub failed_mounts: Read<Vec<Event>>,
}

/// One CSI volume and what it names.
#[derive(Debug, Clone)]
pub struct VolumeObserved {
    pub volume: String,
    /// `volumeAttributes`, which the agent merges over the class's parameters.
    pub attributes: BTreeMap<String, String>,
    /// `volumeAttributes.secretProviderClass`, if set.
    pub class_name: Option<String>,
    /// The class in the pod's namespace.
    pub class: Read<Option<ClassObserved>>,
    /// Other namespaces holding a class of that name (looked for only when the pod's namespace has none).
    pub elsewhere: Vec<String>,
    /// `SecretProviderClassPodStatus` `<pod>-<namespace>-<class>`.
    pub pod_status: Read<Option<DynamicObject>>,
}

/// The parts of a SecretProviderClass a mount reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassObserved {
    pub provider: String,
    pub parameters: BTreeMap<String, String>,
}

/// The pod's node.
#[derive(Debug, Clone)]
pub struct NodeObserved {
    pub name: String,
    pub csi_node: Read<Option<CSINode>>,
    /// wisp-agent pods on the node (the chart's DaemonSet).
    pub agent_pods: Read<Vec<Pod>>,
}

impl VolumeObserved {
    /// The class's parameters with the volume attributes over them, as the agent reads them; `None` without a
    /// class.
    pub fn merged_parameters(&self) -> Option<BTreeMap<String, String>> {
        let class = self.class.as_ref().ok()?.as_ref()?;
        let mut parameters = class.parameters.clone();
        parameters.extend(self.attributes.clone());
        Some(parameters)
    }

    /// Whether the volume's SecretProviderClassPodStatus says it is mounted for the pod with `pod_uid` (a status
    /// left by an earlier pod of the same name, which its owner reference names, does not count).
    pub fn is_mounted(&self, pod_uid: Option<&str>) -> bool {
        let Ok(Some(status)) = &self.pod_status else {
            return false;
        };
        let owners = status.metadata.owner_references.as_deref().unwrap_or_default();
        let this_pod = owners.is_empty() || owners.iter().any(|owner| Some(owner.uid.as_str()) == pod_uid);
        this_pod && status.data["status"]["mounted"].as_bool() == Some(true)
    }

    /// What wisp-agent makes of the merged parameters: the identity a mount uses, or its refusal.
    pub fn identity(&self) -> Option<Result<IdentityMode, ParamError>> {
        self.merged_parameters()
            .map(|parameters| wisp_agent::check_class_parameters(&parameters))
    }
}

impl Observed {
    /// Whether the pod relies on workload identity: it asks for it (the label), or one of its volumes mounts with
    /// it or cannot be read yet. A pod whose classes all mount with the nodes' managed identity or a service
    /// principal, and that has no label, does not.
    pub fn needs_workload_identity(&self) -> bool {
        let labelled = self
            .pod
            .metadata
            .labels
            .as_ref()
            .is_some_and(|labels| labels.contains_key(wi::USE_LABEL));
        labelled
            || self.volumes.is_empty()
            || self.volumes.iter().any(|volume| {
                !matches!(
                    volume.identity(),
                    Some(Ok(
                        IdentityMode::VmManagedIdentity { .. } | IdentityMode::ServicePrincipal
                    ))
                )
            })
    }

    pub fn pod_name(&self) -> &str {
        self.pod.metadata.name.as_deref().unwrap_or_default()
    }

    pub fn pod_namespace(&self) -> &str {
        self.pod.metadata.namespace.as_deref().unwrap_or_default()
    }

    /// `spec.serviceAccountName`, `default` when unset (as the API server fills it in).
    pub fn service_account_name(&self) -> &str {
        self.pod
            .spec
            .as_ref()
            .and_then(|spec| spec.service_account_name.as_deref())
            .filter(|name| !name.is_empty())
            .unwrap_or("default")
    }

    /// The ServiceAccount's annotation `key`, if it exists and is not empty.
    pub fn service_account_annotation(&self, key: &str) -> Option<&str> {
        let service_account = self.service_account.as_ref().ok()?.as_ref()?;
        let value = service_account.metadata.annotations.as_ref()?.get(key)?;
        Some(value.as_str()).filter(|v| !v.trim().is_empty())
    }
}

/// A healthy pod as doctor would read it, for the checks' unit tests to break one piece at a time.
#[cfg(test)]
pub mod fixture {
    use serde_json::json;

    use super::*;

    pub const CLIENT_ID: &str = "a1b2c3d4-0000-4000-8000-000000000001";
    pub const TENANT: &str = "72f988bf-0000-4000-8000-00000000aaaa";
    pub const ISSUER: &str = "https://oidc.example/cluster/";

    fn from_json<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
        serde_json::from_value(value).expect("fixture objects are valid")
    }

    pub fn class_parameters() -> BTreeMap<String, String> {
        BTreeMap::from([
            ("clientID".to_string(), CLIENT_ID.to_string()),
            ("keyvaultName".to_string(), "shop-kv".to_string()),
            ("tenantId".to_string(), TENANT.to_string()),
            (
                "objects".to_string(),
                "array:\n  - |\n    objectName: api-key\n    objectType: secret\n".to_string(),
            ),
        ])
    }

    pub fn healthy() -> Observed {
        let pod = from_json(json!({
            "metadata": {"name": "web-1", "namespace": "shop", "uid": "u-1",
                         "labels": {"azure.workload.identity/use": "true"}},
            "spec": {
                "serviceAccountName": "web",
                "nodeName": "node-1",
                "containers": [{"name": "app", "env": [
                    {"name": "AZURE_FEDERATED_TOKEN_FILE", "value": "/var/run/secrets/azure/tokens/azure-identity-token"}]}],
                "volumes": [
                    {"name": "kv", "csi": {"driver": "secrets-store.csi.k8s.io",
                                            "volumeAttributes": {"secretProviderClass": "shop-kv"}}},
                    {"name": "azure-identity-token", "projected": {"sources": [{"serviceAccountToken": {
                        "audience": "api://AzureADTokenExchange", "expirationSeconds": 3600, "path": "azure-identity-token"}}]}},
                ],
            },
        }));
        Observed {
            pod,
            namespace: Ok(Some(from_json(json!({"metadata": {"name": "shop",
                "labels": {"kubernetes.io/metadata.name": "shop"}}})))),
            service_account: Ok(Some(from_json(json!({"metadata": {"name": "web", "namespace": "shop",
                "annotations": {"azure.workload.identity/client-id": CLIENT_ID}}})))),
            webhook_configurations: Ok(vec![from_json(json!({"metadata": {"name": "wisp-webhook"},
                "webhooks": [{"name": "mutation.azure-workload-identity.io", "admissionReviewVersions": ["v1"],
                              "clientConfig": {}, "sideEffects": "None",
                              "namespaceSelector": {"matchExpressions": [{"key": "kubernetes.io/metadata.name",
                                  "operator": "NotIn", "values": ["wisp-system"]}]}}]}))]),
            issuer: Ok(ISSUER.to_string()),
            volumes: vec![VolumeObserved {
                volume: "kv".into(),
                attributes: BTreeMap::from([("secretProviderClass".to_string(), "shop-kv".to_string())]),
                class_name: Some("shop-kv".into()),
                class: Ok(Some(ClassObserved {
                    provider: "azure".into(),
                    parameters: class_parameters(),
                })),
                elsewhere: Vec::new(),
                pod_status: Ok(Some(from_json(json!({"apiVersion": "secrets-store.csi.x-k8s.io/v1",
                    "kind": "SecretProviderClassPodStatus", "metadata": {"name": "web-1-shop-shop-kv"},
                    "status": {"mounted": true, "objects": [{"id": "secret/api-key", "version": "1"}]}})))),
            }],
            csi_driver: Ok(Some(from_json(
                json!({"metadata": {"name": "secrets-store.csi.k8s.io"},
                "spec": {"podInfoOnMount": true, "tokenRequests": [{"audience": "api://AzureADTokenExchange"}]}}),
            ))),
            node: Some(NodeObserved {
                name: "node-1".into(),
                csi_node: Ok(Some(from_json(json!({"metadata": {"name": "node-1"},
                    "spec": {"drivers": [{"name": "secrets-store.csi.k8s.io", "nodeID": "node-1"}]}})))),
                agent_pods: Ok(vec![from_json(
                    json!({"metadata": {"name": "wisp-agent-a", "namespace": "wisp-system"},
                    "status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
                )]),
            }),
            failed_mounts: Ok(Vec::new()),
        }
    }

    /// A FailedMount event of the fixture's pod, as kubelet writes it, with wisp-agent's `message`.
    pub fn failed_mount(message: &str) -> Event {
        from_json(json!({
            "metadata": {"name": "web-1.1", "namespace": "shop"},
            "involvedObject": {"kind": "Pod", "name": "web-1", "namespace": "shop", "uid": "u-1"},
            "reason": "FailedMount", "type": "Warning", "count": 1,
            "lastTimestamp": "2026-12-02T10:00:00Z",
            "message": format!("MountVolume.SetUp failed for volume \"kv\" : rpc error: code = Unknown desc = {message}"),
        }))
    }
}
