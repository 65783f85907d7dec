//! The `secrets-store.csi.x-k8s.io/v1` SecretProviderClassPodStatus written after every successful publish (and
//! refresh), exactly as the driver writes it: the object is how users and tools see which versions a pod
//! mounted, and secret sync hangs Secrets of ownerless pods on it. Pure: the caller creates or replaces it.

use std::collections::BTreeMap;

use kube::api::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};
use wisp_shared::contract::secrets_store::{API_GROUP, API_VERSION, NODE_NAME_LABEL};

use crate::keyvault::type_label;
use crate::params::ObjectSpec;
use crate::provider::ObjectVersion;

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

/// The id under which the pod status lists one mounted object: `<type>/<name>`, or `<type>/<name>/<index>` for
/// the `index`-th (0 = newest) version of an object with `objectVersionHistory` > 1. The type is the canonical
/// lower-case one, whatever case the SecretProviderClass used.
pub fn object_id(spec: &ObjectSpec, history_index: Option<usize>) -> String {
    match history_index {
        Some(index) => format!("{}/{}/{index}", type_label(spec.object_type), spec.name),
        None => format!("{}/{}", type_label(spec.object_type), spec.name),
    }
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

/// What the agent reads back from a pod status object: the secret sync works from these (which pod, class
/// and target path), and a restarted agent can recover its mounts from them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodStatusSummary {
    pub name: String,
    pub namespace: String,
    /// `metadata.uid`, the owner of Secrets synced for ownerless pods.
    pub uid: String,
    /// The node-name label; empty when missing.
    pub node_name: String,
    pub pod_name: String,
    pub secret_provider_class: String,
    pub mounted: bool,
    pub target_path: String,
    /// As listed (sorted by id when the agent or the driver wrote it).
    pub objects: Vec<ObjectVersion>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "SecretProviderClassPodStatus {object}: {field} is missing or not {expected}; the agent rewrites it on the \
     next publish, or delete it to have it recreated"
)]
pub struct PodStatusError {
    /// `namespace/name`, as far as known.
    pub object: String,
    pub field: &'static str,
    pub expected: &'static str,
}

/// Reads a pod status object (e.g. a `DynamicObject` turned into JSON).
pub fn parse_pod_status(object: &Value) -> Result<PodStatusSummary, PodStatusError> {
    let text = |value: &Value, pointer: &str| value.pointer(pointer).and_then(Value::as_str).map(str::to_string);
    let name = text(object, "/metadata/name");
    let namespace = text(object, "/metadata/namespace");
    let shown = format!(
        "{}/{}",
        namespace.as_deref().unwrap_or("?"),
        name.as_deref().unwrap_or("?")
    );
    let missing = |field: &'static str, expected: &'static str| PodStatusError {
        object: shown.clone(),
        field,
        expected,
    };
    let required = |pointer: &str, field: &'static str| {
        text(object, pointer)
            .filter(|value| !value.is_empty())
            .ok_or_else(|| missing(field, "a non-empty string"))
    };
    let name = name
        .filter(|n| !n.is_empty())
        .ok_or_else(|| missing("metadata.name", "a non-empty string"))?;
    let namespace = required("/metadata/namespace", "metadata.namespace")?;
    let uid = required("/metadata/uid", "metadata.uid")?;
    let node_name = object
        .pointer("/metadata/labels")
        .and_then(|labels| labels.get(NODE_NAME_LABEL))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let pod_name = required("/status/podName", "status.podName")?;
    let secret_provider_class = required("/status/secretProviderClassName", "status.secretProviderClassName")?;
    let target_path = required("/status/targetPath", "status.targetPath")?;
    let mounted = match object.pointer("/status/mounted") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(mounted)) => *mounted,
        Some(_) => return Err(missing("status.mounted", "a boolean")),
    };
    let objects = match object.pointer("/status/objects") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                Some(ObjectVersion {
                    id: item.get("id")?.as_str()?.to_string(),
                    version: item
                        .get("version")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                })
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| missing("status.objects[].id", "a string"))?,
        Some(_) => return Err(missing("status.objects", "a list")),
    };
    Ok(PodStatusSummary {
        name,
        namespace,
        uid,
        node_name,
        pod_name,
        secret_provider_class,
        mounted,
        target_path,
        objects,
    })
}

#[cfg(test)]
mod tests {
    use pretty_assertions::assert_eq;

    use super::*;
    use crate::params::{ObjectEncoding, ObjectFormat, ObjectType};

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
    fn ids_for_single_and_history_objects() {
        let spec = |object_type| ObjectSpec {
            index: 0,
            name: "obj".into(),
            alias: "alias".into(),
            object_type,
            version: None,
            version_history: 0,
            format: ObjectFormat::Pem,
            encoding: ObjectEncoding::Utf8,
            file_permission: None,
        };
        assert_eq!(
            [
                object_id(&spec(ObjectType::Secret), None),
                object_id(&spec(ObjectType::Key), None),
                object_id(&spec(ObjectType::Cert), None),
                object_id(&spec(ObjectType::Secret), Some(0)),
                object_id(&spec(ObjectType::Cert), Some(12)),
            ],
            ["secret/obj", "key/obj", "cert/obj", "secret/obj/0", "cert/obj/12"]
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

    #[test]
    fn a_written_object_reads_back() {
        let objects = [version("secret/b", "2"), version("key/a", "1")];
        let mut object = pod_status_object(&input(&objects));
        object["metadata"]["uid"] = json!("spcps-uid");
        assert_eq!(
            parse_pod_status(&object).unwrap(),
            PodStatusSummary {
                name: "busybox-secrets-store-inline-wi-default-azure-kvname-wi".into(),
                namespace: "default".into(),
                uid: "spcps-uid".into(),
                node_name: "aks-nodepool1-12345678-vmss000000".into(),
                pod_name: "busybox-secrets-store-inline-wi".into(),
                secret_provider_class: "azure-kvname-wi".into(),
                mounted: true,
                target_path: "/var/lib/kubelet/pods/9f3c1f0e-6a1b-4c1e-9f7d-2a4b8c0d1e2f/volumes/kubernetes.io~csi/secrets-store-inline/mount".into(),
                objects: vec![version("key/a", "1"), version("secret/b", "2")],
            }
        );
    }

    #[test]
    fn unreadable_objects_name_the_field() {
        let mut object = pod_status_object(&input(&[]));
        object["metadata"]["uid"] = json!("u");
        let expect = |object: &Value| parse_pod_status(object).unwrap_err().to_string();

        let mut no_path = object.clone();
        no_path["status"]["targetPath"] = json!("");
        assert_eq!(
            expect(&no_path),
            "SecretProviderClassPodStatus default/busybox-secrets-store-inline-wi-default-azure-kvname-wi: \
             status.targetPath is missing or not a non-empty string; the agent rewrites it on the next publish, or \
             delete it to have it recreated"
        );

        let mut bad_objects = object.clone();
        bad_objects["status"]["objects"] = json!([{"version": "1"}]);
        assert_eq!(
            expect(&bad_objects),
            "SecretProviderClassPodStatus default/busybox-secrets-store-inline-wi-default-azure-kvname-wi: \
             status.objects[].id is missing or not a string; the agent rewrites it on the next publish, or delete \
             it to have it recreated"
        );

        let mut no_uid = object.clone();
        no_uid["metadata"].as_object_mut().unwrap().remove("uid");
        no_uid["metadata"].as_object_mut().unwrap().remove("name");
        assert_eq!(
            expect(&no_uid),
            "SecretProviderClassPodStatus default/?: metadata.name is missing or not a non-empty string; the agent \
             rewrites it on the next publish, or delete it to have it recreated"
        );
    }
}
