//! Everything doctor read from the cluster about one pod, in the shape the checks take it. Each read keeps its
//! error text, so a check that cannot see what it needs fails with the reason instead of stopping the run.

use std::collections::BTreeMap;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Event, Namespace, Pod, ServiceAccount};
use k8s_openapi::api::storage::v1::{CSIDriver, CSINode};
use kube::api::DynamicObject;

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

impl Observed {
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
