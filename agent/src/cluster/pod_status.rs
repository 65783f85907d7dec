//! The `secrets-store.csi.x-k8s.io/v1` SecretProviderClassPodStatus written after every successful publish (and
//! refresh), exactly as the driver writes it: the object is how users and tools see which versions a pod
//! mounted, and secret sync hangs Secrets of ownerless pods on it. Pure: the caller creates or replaces it.

use std::collections::BTreeMap;

use kube::api::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};
use wisp_shared::contract::secrets_store::{API_GROUP, API_VERSION, NODE_NAME_LABEL};

use crate::content::ObjectVersion;

pub const KIND: &str = "SecretProviderClassPodStatus";
pub const PLURAL: &str = "secretproviderclasspodstatuses";

/// The API resource, for `Api::<DynamicObject>::namespaced_with`.
pub fn api_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(API_GROUP, "v1", KIND), PLURAL)
}

/// The pod status object's name, `<pod>-<namespace>-<secretProviderClass>`, as the driver names it.
pub fn pod_status_name(pod_name: &str, pod_namespace: &str, secret_provider_class: &str) -> String {
    format!("{pod_name}-{pod_namespace}-{secret_provider_class}")
}

/// What one publish mounted, for one pod and SecretProviderClass.
#[derive(Debug, Clone, Copy)]
pub struct PodStatusInput<'a> {
    pub pod_name: &'a str,
    pub pod_namespace: &'a str,
    /// `csi.storage.k8s.io/pod.uid` from the volume context.
    pub pod_uid: &'a str,
    pub secret_provider_class: &'a str,
    /// The node id (`--nodeid`), for the node-name label.
    pub node_name: &'a str,
    pub target_path: &'a str,
    /// The provider's versions, one per file; repeated ids collapse into one entry (the last one wins, as the
    /// driver keeps them in a map).
    pub objects: &'a [ObjectVersion],
}

/// The whole object, usable as a create body, a replace body (add `metadata.resourceVersion`) or a
/// server-side-apply body. Go's `omitempty` is kept: an empty object list is left out.
pub fn pod_status_object(input: &PodStatusInput<'_>) -> Value {
    let objects: BTreeMap<&str, &str> = input
        .objects
        .iter()
        .map(|object| (object.id.as_str(), object.version.as_str()))
        .collect();
    let mut status = json!({
        "podName": input.pod_name,
        "secretProviderClassName": input.secret_provider_class,
        "mounted": true,
        "targetPath": input.target_path,
    });
    if !objects.is_empty() {
        status["objects"] = objects
            .iter()
            .map(|(id, version)| json!({ "id": id, "version": version }))
            .collect();
    }
    json!({
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": pod_status_name(input.pod_name, input.pod_namespace, input.secret_provider_class),
            "namespace": input.pod_namespace,
            "labels": { NODE_NAME_LABEL: input.node_name },
            "ownerReferences": [{
                "apiVersion": "v1",
                "kind": "Pod",
                "name": input.pod_name,
                "uid": input.pod_uid,
            }],
        },
        "status": status,
    })
}

#[cfg(test)]
mod tests {
    use pretty_assertions::assert_eq;

    use super::*;

    fn version(id: &str, version: &str) -> ObjectVersion {
        ObjectVersion {
            id: id.into(),
            version: version.into(),
        }
    }

    fn input<'a>(objects: &'a [ObjectVersion]) -> PodStatusInput<'a> {
        PodStatusInput {
            pod_name: "busybox-secrets-store-inline-wi",
            pod_namespace: "default",
            pod_uid: "9f3c1f0e-6a1b-4c1e-9f7d-2a4b8c0d1e2f",
            secret_provider_class: "azure-kvname-wi",
            node_name: "aks-nodepool1-12345678-vmss000000",
            target_path: "/var/lib/kubelet/pods/9f3c1f0e-6a1b-4c1e-9f7d-2a4b8c0d1e2f/volumes/kubernetes.io~csi/secrets-store-inline/mount",
            objects,
        }
    }

    #[test]
    fn whole_object_with_objects_sorted_by_id() {
        let objects = [
            version("secret/secret1", "v-s1"),
            version("key/key1", "v-k1"),
            version("cert/cert1", "v-c1"),
            version("secret/history/1", "v-h-old"),
            version("secret/history/0", "v-h-new"),
            // The same object written to two files (certificate and key in separate files).
            version("cert/cert1", "v-c1"),
        ];
        assert_eq!(
            pod_status_object(&input(&objects)),
            json!({
                "apiVersion": "secrets-store.csi.x-k8s.io/v1",
                "kind": "SecretProviderClassPodStatus",
                "metadata": {
                    "name": "busybox-secrets-store-inline-wi-default-azure-kvname-wi",
                    "namespace": "default",
                    "labels": {"internal.secrets-store.csi.k8s.io/node-name": "aks-nodepool1-12345678-vmss000000"},
                    "ownerReferences": [{
                        "apiVersion": "v1",
                        "kind": "Pod",
                        "name": "busybox-secrets-store-inline-wi",
                        "uid": "9f3c1f0e-6a1b-4c1e-9f7d-2a4b8c0d1e2f",
                    }],
                },
                "status": {
                    "podName": "busybox-secrets-store-inline-wi",
                    "secretProviderClassName": "azure-kvname-wi",
                    "mounted": true,
                    "targetPath": "/var/lib/kubelet/pods/9f3c1f0e-6a1b-4c1e-9f7d-2a4b8c0d1e2f/volumes/kubernetes.io~csi/secrets-store-inline/mount",
                    "objects": [
                        {"id": "cert/cert1", "version": "v-c1"},
                        {"id": "key/key1", "version": "v-k1"},
                        {"id": "secret/history/0", "version": "v-h-new"},
                        {"id": "secret/history/1", "version": "v-h-old"},
                        {"id": "secret/secret1", "version": "v-s1"},
                    ],
                },
            })
        );
    }

    #[test]
    fn repeated_id_keeps_the_last_version() {
        let objects = [version("secret/a", "old"), version("secret/a", "new")];
        assert_eq!(
            pod_status_object(&input(&objects))["status"]["objects"],
            json!([{"id": "secret/a", "version": "new"}])
        );
    }

    #[test]
    fn no_objects_leaves_the_field_out() {
        let status = pod_status_object(&input(&[]));
        assert_eq!(
            status["status"],
            json!({
                "podName": "busybox-secrets-store-inline-wi",
                "secretProviderClassName": "azure-kvname-wi",
                "mounted": true,
                "targetPath": "/var/lib/kubelet/pods/9f3c1f0e-6a1b-4c1e-9f7d-2a4b8c0d1e2f/volumes/kubernetes.io~csi/secrets-store-inline/mount",
            })
        );
    }

    #[test]
    fn api_resource_names_the_crd() {
        let resource = api_resource();
        assert_eq!(
            (
                resource.group.as_str(),
                resource.version.as_str(),
                resource.api_version.as_str(),
                resource.kind.as_str(),
                resource.plural.as_str()
            ),
            (
                "secrets-store.csi.x-k8s.io",
                "v1",
                "secrets-store.csi.x-k8s.io/v1",
                "SecretProviderClassPodStatus",
                "secretproviderclasspodstatuses"
            )
        );
    }
}
