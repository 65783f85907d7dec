//! ServiceAccount lookups: an in-memory index of the annotations the mutation reads, fed by a cluster-wide
//! metadata watch, with a live GET when a ServiceAccount is not (yet) in the index — it may have been created a
//! moment before the pod.
//!
//! The watch is the only writer of the index. A live read is used for the one admission and not stored: its answer
//! can arrive after newer watch events (a slow GET racing an annotation change, or a delete), and storing it
//! would put an older state back into the index with no event left to correct it until the next re-list.

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

/// A failure to read a ServiceAccount other than "it does not exist". The advice follows the cause: an API
/// server that refused the webhook (401/403) needs RBAC, one that did not answer needs time.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("cannot read serviceaccount {namespace}/{name} from the Kubernetes API: {reason}; {}", self.advice())]
pub struct LookupError {
    pub namespace: String,
    pub name: String,
    pub reason: String,
    /// The API server answered 401 or 403.
    pub access_denied: bool,
}

impl LookupError {
    fn advice(&self) -> &'static str {
        if self.access_denied {
            "the webhook needs get, list and watch on serviceaccounts"
        } else {
            "the API server is unreachable or failing; create the pod again once it answers"
        }
    }
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

    pub(crate) fn len(&self) -> usize {
        let map = self.by_namespace.read().unwrap_or_else(|e| e.into_inner());
        map.values().map(HashMap::len).sum()
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
                    access_denied: matches!(&e, kube::Error::Api(status) if matches!(status.code, 401 | 403)),
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

/// Index first, then the live source (not stored: see the module documentation).
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
mod tests;
