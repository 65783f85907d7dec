//! ServiceAccount lookups: an in-memory index of the annotations the mutation reads, fed by a cluster-wide
//! metadata watch, with a live GET when a ServiceAccount is not (yet) in the index — it may have been created a
//! moment before the pod.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use futures::StreamExt;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::core::PartialObjectMeta;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};

use crate::mutate::ServiceAccountInfo;

/// A failure to read a ServiceAccount other than "it does not exist".
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error(
    "cannot read serviceaccount {namespace}/{name} from the Kubernetes API: {reason}; the webhook needs get, list and watch on serviceaccounts"
)]
pub struct LookupError {
    pub namespace: String,
    pub name: String,
    pub reason: String,
}

/// The ServiceAccounts known from the watch: namespace → name → annotations. A plain state machine that the
/// watcher drives in production and tests drive directly.
#[derive(Debug, Default)]
pub struct ServiceAccountIndex {
    by_namespace: RwLock<HashMap<String, HashMap<String, Arc<ServiceAccountInfo>>>>,
    synced: AtomicBool,
}

impl ServiceAccountIndex {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<ServiceAccountInfo>> {
        let map = self.by_namespace.read().unwrap_or_else(|e| e.into_inner());
        map.get(namespace).and_then(|names| names.get(name)).cloned()
    }

    pub fn apply(&self, namespace: &str, name: &str, info: ServiceAccountInfo) {
        let mut map = self.by_namespace.write().unwrap_or_else(|e| e.into_inner());
        map.entry(namespace.to_string())
            .or_default()
            .insert(name.to_string(), Arc::new(info));
    }

    pub fn delete(&self, namespace: &str, name: &str) {
        let mut map = self.by_namespace.write().unwrap_or_else(|e| e.into_inner());
        if let Some(names) = map.get_mut(namespace) {
            names.remove(name);
            if names.is_empty() {
                map.remove(namespace);
            }
        }
    }

    /// Replaces the whole content after a (re-)list and marks the index synced.
    pub fn replace_all(&self, items: impl IntoIterator<Item = (String, String, ServiceAccountInfo)>) {
        let mut fresh: HashMap<String, HashMap<String, Arc<ServiceAccountInfo>>> = HashMap::new();
        for (namespace, name, info) in items {
            fresh.entry(namespace).or_default().insert(name, Arc::new(info));
        }
        *self.by_namespace.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        self.synced.store(true, Ordering::Release);
    }

    /// True once a full list has been loaded; readiness waits for it.
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    pub fn len(&self) -> usize {
        let map = self.by_namespace.read().unwrap_or_else(|e| e.into_inner());
        map.values().map(HashMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The live read used on an index miss.
pub trait ServiceAccountSource: Send + Sync {
    /// `Ok(None)` when the ServiceAccount does not exist.
    fn fetch<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<ServiceAccountInfo>, LookupError>>;
}

/// Live GET of ServiceAccount metadata from the API server.
#[derive(Clone)]
pub struct KubeServiceAccountSource {
    client: Client,
}

impl KubeServiceAccountSource {
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

impl ServiceAccountSource for KubeServiceAccountSource {
    fn fetch<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<ServiceAccountInfo>, LookupError>> {
        Box::pin(async move {
            let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), namespace);
            match api.get_metadata_opt(name).await {
                Ok(found) => Ok(found.map(|meta| info_of(&meta))),
                Err(e) => Err(LookupError {
                    namespace: namespace.to_string(),
                    name: name.to_string(),
                    reason: describe(&e),
                }),
            }
        })
    }
}

/// A source that knows no ServiceAccount; for running without a live fallback (tests, benchmarks).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoServiceAccounts;

impl ServiceAccountSource for NoServiceAccounts {
    fn fetch<'a>(&'a self, _: &'a str, _: &'a str) -> BoxFuture<'a, Result<Option<ServiceAccountInfo>, LookupError>> {
        Box::pin(async { Ok(None) })
    }
}

/// Index first, then the live source; what the live source finds is added to the index.
#[derive(Clone)]
pub struct ServiceAccountLookup {
    index: Arc<ServiceAccountIndex>,
    source: Arc<dyn ServiceAccountSource>,
}

impl ServiceAccountLookup {
    pub fn new(index: Arc<ServiceAccountIndex>, source: Arc<dyn ServiceAccountSource>) -> Self {
        Self { index, source }
    }

    pub fn index(&self) -> &Arc<ServiceAccountIndex> {
        &self.index
    }

    pub async fn get(&self, namespace: &str, name: &str) -> Result<Option<Arc<ServiceAccountInfo>>, LookupError> {
        if let Some(found) = self.index.get(namespace, name) {
            return Ok(Some(found));
        }
        let fetched = self.source.fetch(namespace, name).await?;
        Ok(fetched.map(|info| {
            tracing::debug!(namespace, name, "serviceaccount not in the watch cache, read live");
            self.index.apply(namespace, name, info.clone());
            Arc::new(info)
        }))
    }
}

/// kube's Display of an API error includes the whole Status in Debug form; the code, reason and message suffice.
fn describe(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => format!("HTTP {} {}: {}", status.code, status.reason, status.message),
        other => other.to_string(),
    }
}

fn info_of(meta: &PartialObjectMeta<ServiceAccount>) -> ServiceAccountInfo {
    meta.metadata
        .annotations
        .as_ref()
        .map(ServiceAccountInfo::from_annotations)
        .unwrap_or_default()
}

fn key_of(meta: &PartialObjectMeta<ServiceAccount>) -> Option<(String, String)> {
    Some((meta.metadata.namespace.clone()?, meta.metadata.name.clone()?))
}

/// Keeps `index` in step with every ServiceAccount in the cluster until the stream ends (it does not: watch errors
/// are retried with backoff).
pub async fn run_watcher(client: Client, index: Arc<ServiceAccountIndex>) {
    // An Api over PartialObjectMeta makes metadata-only list and watch requests: annotations are all we need.
    let api: Api<PartialObjectMeta<ServiceAccount>> = Api::all(client);
    let stream = watcher::watcher(api, watcher::Config::default()).default_backoff();
    futures::pin_mut!(stream);
    let mut relist = Vec::new();
    while let Some(event) = stream.next().await {
        match event {
            Ok(Event::Init) => relist.clear(),
            Ok(Event::InitApply(meta)) => {
                if let Some((namespace, name)) = key_of(&meta) {
                    relist.push((namespace, name, info_of(&meta)));
                }
            }
            Ok(Event::InitDone) => {
                index.replace_all(relist.drain(..));
                tracing::info!(service_accounts = index.len(), "serviceaccount cache synced");
            }
            Ok(Event::Apply(meta)) => {
                if let Some((namespace, name)) = key_of(&meta) {
                    index.apply(&namespace, &name, info_of(&meta));
                }
            }
            Ok(Event::Delete(meta)) => {
                if let Some((namespace, name)) = key_of(&meta) {
                    index.delete(&namespace, &name);
                }
            }
            Err(e) => tracing::warn!(error = %e, "serviceaccount watch failed; retrying"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;
    use std::sync::Mutex;

    fn info(client_id: &str) -> ServiceAccountInfo {
        ServiceAccountInfo {
            client_id: Some(client_id.to_string()),
            ..Default::default()
        }
    }

    #[test]
    fn index_apply_delete_and_replace() {
        let index = ServiceAccountIndex::new();
        assert!(!index.is_synced());
        index.apply("ns1", "sa", info("a"));
        index.apply("ns1", "sa", info("b"));
        index.apply("ns2", "sa", info("c"));
        assert_eq!(index.get("ns1", "sa").as_deref(), Some(&info("b")));
        assert_eq!(index.get("ns2", "sa").as_deref(), Some(&info("c")));
        assert_eq!(index.get("ns3", "sa"), None);
        index.delete("ns1", "sa");
        assert_eq!(index.get("ns1", "sa"), None);
        assert_eq!(index.len(), 1);
        index.replace_all([("ns4".to_string(), "x".to_string(), info("d"))]);
        assert!(index.is_synced());
        assert_eq!(index.get("ns2", "sa"), None);
        assert_eq!(index.get("ns4", "x").as_deref(), Some(&info("d")));
        assert_eq!(index.len(), 1);
    }

    /// Records each fetch and answers from a fixed table.
    struct Recording {
        known: HashMap<(String, String), ServiceAccountInfo>,
        calls: Mutex<Vec<String>>,
    }

    impl ServiceAccountSource for Recording {
        fn fetch<'a>(
            &'a self,
            namespace: &'a str,
            name: &'a str,
        ) -> BoxFuture<'a, Result<Option<ServiceAccountInfo>, LookupError>> {
            self.calls
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(format!("{namespace}/{name}"));
            let found = self.known.get(&(namespace.to_string(), name.to_string())).cloned();
            Box::pin(async move { Ok(found) })
        }
    }

    #[tokio::test]
    async fn miss_falls_back_to_live_read_once() {
        let source = Arc::new(Recording {
            known: HashMap::from([(("ns".to_string(), "late".to_string()), info("live"))]),
            calls: Mutex::new(Vec::new()),
        });
        let index = Arc::new(ServiceAccountIndex::new());
        index.apply("ns", "cached", info("cached"));
        let lookup = ServiceAccountLookup::new(index.clone(), source.clone());

        assert_eq!(
            lookup.get("ns", "cached").await.unwrap().as_deref(),
            Some(&info("cached"))
        );
        assert_eq!(lookup.get("ns", "late").await.unwrap().as_deref(), Some(&info("live")));
        assert_eq!(lookup.get("ns", "late").await.unwrap().as_deref(), Some(&info("live")));
        assert_eq!(lookup.get("ns", "missing").await.unwrap(), None);
        assert_eq!(
            *source.calls.lock().unwrap(),
            vec!["ns/late".to_string(), "ns/missing".to_string()]
        );
        assert_eq!(index.get("ns", "late").as_deref(), Some(&info("live")));
    }

    #[test]
    fn only_the_workload_identity_annotations_are_kept() {
        let annotations = std::collections::BTreeMap::from([
            ("azure.workload.identity/client-id".to_string(), "cid".to_string()),
            ("azure.workload.identity/tenant-id".to_string(), String::new()),
            (
                "azure.workload.identity/service-account-token-expiration".to_string(),
                "4800".to_string(),
            ),
            (
                "kubectl.kubernetes.io/last-applied-configuration".to_string(),
                "{}".to_string(),
            ),
        ]);
        assert_eq!(
            ServiceAccountInfo::from_annotations(&annotations),
            ServiceAccountInfo {
                client_id: Some("cid".to_string()),
                tenant_id: Some(String::new()),
                token_expiration: Some("4800".to_string()),
            }
        );
    }
}
