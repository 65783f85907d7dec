//! The Kubernetes API as both commands use it: the client kubectl's configuration points at (`KUBECONFIG`,
//! `~/.kube/config`, in-cluster), reads that treat "not found" as an answer, server-side apply, and the service
//! account issuer's discovery document. Errors say what was being read and, for 401/403, what to grant.

use k8s_openapi::{ClusterResourceScope, NamespaceResourceScope};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams};
use kube::core::Resource;
use serde::de::DeserializeOwned;
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot find the cluster: {0}; point KUBECONFIG at a kubeconfig file or run `kubectl config use-context`")]
    Config(kube::config::InferConfigError),
    #[error("cannot create a Kubernetes client from the kubeconfig: {0}")]
    Client(kube::Error),
    // The API server's message is the whole story: it is shown here rather than kept as a source.
    #[error("{action}: {}", describe(error))]
    Api { action: String, error: kube::Error },
    #[error("{action}: {reason}")]
    Invalid { action: String, reason: String },
}

/// kube's error as one line: the API server's own message for a `Status`, with what to do about 401 and 403.
fn describe(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => {
            let hint = match status.code {
                401 => "; your credentials were refused: log in again (e.g. az aks get-credentials)",
                403 => "; your user may not do this: ask for the RBAC permission (kubectl auth can-i)",
                _ => "",
            };
            format!("{} (HTTP {}){hint}", status.message, status.code)
        }
        other => other.to_string(),
    }
}

fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 404)
}

/// A connected client.
#[derive(Clone)]
pub struct Cluster {
    client: kube::Client,
}

impl Cluster {
    /// The cluster of kubectl's current context.
    pub async fn connect() -> Result<Self, ClusterError> {
        let config = kube::Config::infer().await.map_err(ClusterError::Config)?;
        let client = kube::Client::try_from(config).map_err(ClusterError::Client)?;
        Ok(Self { client })
    }

    /// The current context's namespace (`default` when it names none).
    pub fn default_namespace(&self) -> &str {
        self.client.default_namespace()
    }

    /// A namespaced object, `None` when it does not exist.
    pub async fn get<K>(&self, namespace: &str, name: &str) -> Result<Option<K>, ClusterError>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
    {
        let api: Api<K> = Api::namespaced(self.client.clone(), namespace);
        let action = || format!("reading {} {namespace}/{name}", K::kind(&()));
        get_optional(&api, name, action).await
    }

    /// A cluster-scoped object, `None` when it does not exist.
    pub async fn get_cluster<K>(&self, name: &str) -> Result<Option<K>, ClusterError>
    where
        K: Resource<Scope = ClusterResourceScope, DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
    {
        let api: Api<K> = Api::all(self.client.clone());
        let action = || format!("reading {} {name}", K::kind(&()));
        get_optional(&api, name, action).await
    }

    /// Objects of a namespaced kind in `namespace` (every namespace when `None`), filtered by `params`.
    pub async fn list<K>(&self, namespace: Option<&str>, params: &ListParams) -> Result<Vec<K>, ClusterError>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
    {
        let api: Api<K> = match namespace {
            Some(namespace) => Api::namespaced(self.client.clone(), namespace),
            None => Api::all(self.client.clone()),
        };
        let action = || {
            format!(
                "listing {}s in {}",
                K::kind(&()),
                namespace.unwrap_or("every namespace")
            )
        };
        list_all(&api, params, action).await
    }

    /// Every object of a cluster-scoped kind.
    pub async fn list_cluster<K>(&self) -> Result<Vec<K>, ClusterError>
    where
        K: Resource<Scope = ClusterResourceScope, DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
    {
        let api: Api<K> = Api::all(self.client.clone());
        list_all(&api, &ListParams::default(), || format!("listing {}s", K::kind(&()))).await
    }

    /// A namespaced custom resource (SecretProviderClass, SecretProviderClassPodStatus), `None` when absent.
    pub async fn get_custom(
        &self,
        resource: &ApiResource,
        namespace: &str,
        name: &str,
    ) -> Result<Option<DynamicObject>, ClusterError> {
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), namespace, resource);
        let action = || format!("reading {} {namespace}/{name}", resource.kind);
        get_optional(&api, name, action).await
    }

    /// Custom resources named `name` in every namespace.
    pub async fn find_custom(&self, resource: &ApiResource, name: &str) -> Result<Vec<DynamicObject>, ClusterError> {
        let api: Api<DynamicObject> = Api::all_with(self.client.clone(), resource);
        let params = ListParams::default().fields(&format!("metadata.name={name}"));
        list_all(&api, &params, || {
            format!("looking for {} {name} in every namespace", resource.kind)
        })
        .await
    }

    /// Server-side applies a namespaced object (its `apiVersion`, `kind`, `metadata.name`, `metadata.namespace`)
    /// as `field_manager`, and returns the object the server now holds.
    pub async fn apply(&self, object: &Value, field_manager: &str) -> Result<Value, ClusterError> {
        let text = |pointer: &str| object.pointer(pointer).and_then(Value::as_str).unwrap_or_default();
        let (api_version, kind) = (text("/apiVersion"), text("/kind"));
        let (namespace, name) = (text("/metadata/namespace"), text("/metadata/name"));
        let action = format!("applying {kind} {namespace}/{name}");
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind));
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), namespace, &resource);
        let applied = api
            .patch(name, &PatchParams::apply(field_manager), &Patch::Apply(object))
            .await
            .map_err(|error| ClusterError::Api {
                action: action.clone(),
                error,
            })?;
        serde_json::to_value(applied).map_err(|e| ClusterError::Invalid {
            action,
            reason: e.to_string(),
        })
    }

    /// The service account issuer, from the API server's `/.well-known/openid-configuration`.
    pub async fn issuer(&self) -> Result<String, ClusterError> {
        let action = "reading the service account issuer (/.well-known/openid-configuration)".to_string();
        let request = http::Request::get("/.well-known/openid-configuration")
            .body(Vec::new())
            .map_err(|e| ClusterError::Invalid {
                action: action.clone(),
                reason: e.to_string(),
            })?;
        let document: Value = self.client.request(request).await.map_err(|error| ClusterError::Api {
            action: action.clone(),
            error,
        })?;
        match document.get("issuer").and_then(Value::as_str) {
            Some(issuer) if !issuer.is_empty() => Ok(issuer.to_string()),
            _ => Err(ClusterError::Invalid {
                action,
                reason: "the document has no issuer".into(),
            }),
        }
    }
}

async fn get_optional<K>(api: &Api<K>, name: &str, action: impl Fn() -> String) -> Result<Option<K>, ClusterError>
where
    K: Clone + DeserializeOwned + std::fmt::Debug,
{
    match api.get(name).await {
        Ok(object) => Ok(Some(object)),
        Err(e) if is_not_found(&e) => Ok(None),
        Err(error) => Err(ClusterError::Api {
            action: action(),
            error,
        }),
    }
}

async fn list_all<K>(api: &Api<K>, params: &ListParams, action: impl Fn() -> String) -> Result<Vec<K>, ClusterError>
where
    K: Clone + DeserializeOwned + std::fmt::Debug,
{
    api.list(params)
        .await
        .map(|list| list.items)
        .map_err(|error| ClusterError::Api {
            action: action(),
            error,
        })
}
