//! SecretProviderClass lookup: a [`SpcStore`] trait with an in-memory implementation (fed by inserts in tests)
//! and a Kubernetes one (a reflector watching every SecretProviderClass, with a live GET when the cache misses,
//! e.g. for an object created a moment before the pod).

use std::collections::BTreeMap;
#[cfg(test)]
use std::collections::HashMap;
use std::sync::Arc;
#[cfg(test)]
use std::sync::RwLock;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use wisp_shared::contract::secrets_store::API_GROUP;

/// The parts of a `secrets-store.csi.x-k8s.io/v1` SecretProviderClass the mount path needs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SecretProviderClass {
    pub namespace: String,
    pub name: String,
    /// `spec.provider`, e.g. `azure`.
    pub provider: String,
    /// `spec.parameters`.
    pub parameters: BTreeMap<String, String>,
    /// `spec.secretObjects`, kept verbatim for secret sync.
    pub secret_objects: Option<serde_json::Value>,
}

#[derive(Debug, thiserror::Error)]
pub enum SpcError {
    #[error("the Kubernetes API refused or failed the request")]
    Api(#[source] kube::Error),
    #[error("the object is not a valid SecretProviderClass: {0}")]
    Invalid(String),
}

/// Where SecretProviderClasses come from.
pub trait SpcStore: Send + Sync {
    /// The SecretProviderClass `name` in `namespace`; `Ok(None)` when it does not exist.
    fn get<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<SecretProviderClass>, SpcError>>;
}

/// A map of SecretProviderClasses: the store of unit tests.
#[cfg(test)]
#[derive(Debug, Default)]
pub struct MemorySpcStore {
    objects: RwLock<HashMap<(String, String), SecretProviderClass>>,
}

#[cfg(test)]
impl MemorySpcStore {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&self, spc: SecretProviderClass) {
        let key = (spc.namespace.clone(), spc.name.clone());
        self.objects.write().unwrap_or_else(|p| p.into_inner()).insert(key, spc);
    }

    pub fn remove(&self, namespace: &str, name: &str) {
        self.objects
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(namespace.to_string(), name.to_string()));
    }
}

#[cfg(test)]
impl SpcStore for MemorySpcStore {
    fn get<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<SecretProviderClass>, SpcError>> {
        let found = self
            .objects
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(namespace.to_string(), name.to_string()))
            .cloned();
        futures::future::ready(Ok(found)).boxed()
    }
}

pub fn api_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(API_GROUP, "v1", "SecretProviderClass"),
        "secretproviderclasses",
    )
}

/// Converts an API object into a [`SecretProviderClass`].
pub fn from_dynamic(obj: &DynamicObject) -> Result<SecretProviderClass, SpcError> {
    let name = obj
        .metadata
        .name
        .clone()
        .ok_or_else(|| SpcError::Invalid("metadata.name is missing".into()))?;
    let namespace = obj.metadata.namespace.clone().unwrap_or_default();
    let spec = obj.data.get("spec");
    let provider = match spec.and_then(|s| s.get("provider")) {
        None | Some(serde_json::Value::Null) => String::new(),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(other) => {
            return Err(SpcError::Invalid(format!(
                "spec.provider must be a string, found {other}"
            )));
        }
    };
    let parameters = match spec.and_then(|s| s.get("parameters")) {
        None | Some(serde_json::Value::Null) => BTreeMap::new(),
        Some(v) => serde_json::from_value::<BTreeMap<String, String>>(v.clone())
            .map_err(|e| SpcError::Invalid(format!("spec.parameters must map strings to strings: {e}")))?,
    };
    let secret_objects = spec
        .and_then(|s| s.get("secretObjects"))
        .filter(|v| !v.is_null())
        .cloned();
    Ok(SecretProviderClass {
        namespace,
        name,
        provider,
        parameters,
        secret_objects,
    })
}

/// SecretProviderClasses from the Kubernetes API: a cluster-wide reflector (as the upstream driver's informer)
/// plus a live GET on a cache miss.
#[derive(Clone)]
pub struct KubeSpcStore {
    client: kube::Client,
    cache: Store<DynamicObject>,
    resource: ApiResource,
}

impl std::fmt::Debug for KubeSpcStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeSpcStore").finish_non_exhaustive()
    }
}

impl KubeSpcStore {
    /// Starts the watch in the background; lookups work immediately (through live GETs until the cache fills).
    pub fn start(client: kube::Client) -> Self {
        let resource = api_resource();
        let writer = reflector::store::Writer::<DynamicObject>::new(resource.clone());
        let cache = writer.as_reader();
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
        let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()))
            .default_backoff()
            .applied_objects();
        tokio::spawn(async move {
            futures::pin_mut!(stream);
            while let Some(event) = stream.next().await {
                if let Err(e) = event {
                    tracing::warn!(error = %e, "SecretProviderClass watch failed; retrying with backoff");
                }
            }
            tracing::error!("SecretProviderClass watch ended; lookups fall back to live GETs");
        });
        Self {
            client,
            cache,
            resource,
        }
    }
}

impl SpcStore for KubeSpcStore {
    fn get<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<SecretProviderClass>, SpcError>> {
        async move {
            let key = ObjectRef::<DynamicObject>::new_with(name, self.resource.clone()).within(namespace);
            if let Some(obj) = self.cache.get(&key) {
                return from_dynamic(&obj).map(Some);
            }
            let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), namespace, &self.resource);
            match api.get_opt(name).await {
                Ok(Some(obj)) => from_dynamic(&obj).map(Some),
                Ok(None) => Ok(None),
                Err(e) => Err(SpcError::Api(e)),
            }
        }
        .boxed()
    }
}

/// Shared handle used by the node service.
pub type SharedSpcStore = Arc<dyn SpcStore>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_api_objects() {
        let obj: DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "secrets-store.csi.x-k8s.io/v1",
            "kind": "SecretProviderClass",
            "metadata": {"name": "spc1", "namespace": "ns1"},
            "spec": {
                "provider": "azure",
                "parameters": {"keyvaultName": "kv1", "tenantID": "t"},
                "secretObjects": [{"secretName": "s", "type": "Opaque"}]
            }
        }))
        .unwrap();
        assert_eq!(
            from_dynamic(&obj).unwrap(),
            SecretProviderClass {
                namespace: "ns1".into(),
                name: "spc1".into(),
                provider: "azure".into(),
                parameters: BTreeMap::from([
                    ("keyvaultName".to_string(), "kv1".to_string()),
                    ("tenantID".to_string(), "t".to_string())
                ]),
                secret_objects: Some(serde_json::json!([{"secretName": "s", "type": "Opaque"}])),
            }
        );
    }

    #[test]
    fn rejects_non_string_parameters_naming_the_field() {
        let obj: DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "secrets-store.csi.x-k8s.io/v1",
            "kind": "SecretProviderClass",
            "metadata": {"name": "spc1", "namespace": "ns1"},
            "spec": {"provider": "azure", "parameters": {"objects": 5}}
        }))
        .unwrap();
        let err = from_dynamic(&obj).unwrap_err().to_string();
        assert!(
            err.starts_with(
                "the object is not a valid SecretProviderClass: spec.parameters must map strings to strings: "
            ),
            "{err}"
        );
    }

    #[tokio::test]
    async fn memory_store_is_namespaced() {
        let store = MemorySpcStore::new();
        store.insert(SecretProviderClass {
            namespace: "a".into(),
            name: "spc".into(),
            ..Default::default()
        });
        assert!(store.get("a", "spc").await.unwrap().is_some());
        assert!(store.get("b", "spc").await.unwrap().is_none());
        store.remove("a", "spc");
        assert!(store.get("a", "spc").await.unwrap().is_none());
    }
}
