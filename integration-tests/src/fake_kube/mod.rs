//! A fake Kubernetes API server: real HTTPS on `127.0.0.1:<port>` serving the subset of the API that wisp uses,
//! with the semantics kube-rs' client, watcher, reflector and metadata watcher rely on.
//!
//! What it serves, for every resource in `state::RESOURCES` (ServiceAccounts, Secrets, Events,
//! SecretProviderClasses, SecretProviderClassPodStatuses, MutatingWebhookConfigurations, ...):
//!
//! - `GET /version` (configurable, e.g. 1.28 vs 1.29 for native sidecar detection);
//! - `GET /.well-known/openid-configuration` and `/openid/v1/jwks` of the service account issuer, once
//!   [`FakeKube::serve_issuer_discovery`] names it (404 before, as with discovery off; authenticated, as the
//!   default RBAC has it);
//! - LIST, namespaced and cluster-wide, with `labelSelector`, `fieldSelector` (`metadata.name`,
//!   `metadata.namespace`), `limit`/`continue` paging and the list's `resourceVersion`;
//! - WATCH (`?watch=true`): newline-delimited `WatchEvent`s (ADDED / MODIFIED / DELETED / BOOKMARK / ERROR),
//!   resuming after `resourceVersion=N`, synthetic ADDED events for `resourceVersion` unset or `0`,
//!   `sendInitialEvents=true` with the `k8s.io/initial-events-end` bookmark, `allowWatchBookmarks` (a bookmark
//!   before a watch times out), `timeoutSeconds` (default 1800), and `410 Gone` for a compacted version;
//! - GET, POST (create, `generateName`), PUT (optimistic concurrency on `metadata.resourceVersion`: 409),
//!   PATCH (`application/merge-patch+json`, `application/json-patch+json`,
//!   `application/strategic-merge-patch+json`, and server-side apply `application/apply-patch+yaml` with the
//!   required `fieldManager`), DELETE;
//! - `Accept: application/json;as=PartialObjectMetadata[List];g=meta.k8s.io;v=v1` (the metadata API);
//! - errors as the API server's `Status` objects (`NotFound`, `AlreadyExists`, `Conflict`, `Unauthorized`, ...);
//! - bearer token authentication: a wrong or missing token is `401`, except that `/version` and the health
//!   endpoints are open to anonymous requests, as with the API server's default RBAC.
//!
//! `fieldSelector` takes each resource's own field labels too (a pod's `spec.nodeName`, an event's
//! `involvedObject.name`, `reason`, ...; anything else is `field label not supported`), and every Namespace
//! carries the `kubernetes.io/metadata.name` label. No controller runs: Deployments, ReplicaSets and their pods are
//! objects a test writes.
//!
//! As on the real server, a write that changes nothing is a no-op (no new resourceVersion, no event), and an
//! object entering or leaving a watch's selector arrives as ADDED or DELETED.
//!
//! Known simplifications: server-side apply and strategic merge patch merge like a JSON merge patch (lists are
//! replaced, except `metadata.ownerReferences`, which a strategic merge patch merges by `uid` as the real server
//! does); server-side apply removes the fields a manager applied before and leaves out now, unless another
//! manager applied them (`apply.rs`), but records no `managedFields` and raises no conflicts; `continue` tokens page
//! over the current state rather than a snapshot; no DELETE of collections, no admission or validation of
//! object contents.
//!
//! Subresources: `/status` of SecretSyncs (`secret-sync.x-k8s.io/v1alpha1`, served like a CRD with a status
//! subresource: object writes keep the status, status writes change only the status, `metadata.generation`
//! counts the other changes) and the TokenRequest API (`POST .../serviceaccounts/{name}/token`, tokens signed
//! by the issuer given to [`FakeKube::serve_token_requests`]). Deleting an object deletes its dependents (owner
//! references all naming it), as the garbage collector would.
//!
//! Test controls: [`FakeKube::upsert`], [`FakeKube::delete`], [`FakeKube::insert_get_only`] (an object GET
//! returns but lists and watches do not show yet, i.e. a lagging watch cache), [`FakeKube::compact`],
//! [`FakeKube::bookmark`], [`FakeKube::close_watches`], [`FakeKube::set_version`], injected failures
//! ([`FakeKube::fail_requests`]), outages of the whole server ([`FakeKube::start_outage`]: down, or every
//! request or every LIST failing) and a request log ([`FakeKube::requests`]). Programs reach it through a
//! kubeconfig ([`FakeKube::write_kubeconfig`]).
//!
//! ```no_run
//! # async fn demo() {
//! use integration_tests::{fake_kube::FakeKube, pki::TestPki};
//! let pki = TestPki::new();
//! let kube = FakeKube::start(&pki).await;
//! kube.upsert(serde_json::json!({
//!     "apiVersion": "v1", "kind": "ServiceAccount",
//!     "metadata": {"name": "workload", "namespace": "default",
//!                  "annotations": {"azure.workload.identity/client-id": "00000000-0000-0000-0000-000000000001"}}
//! }));
//! let dir = tempfile::tempdir().unwrap();
//! let kubeconfig = kube.write_kubeconfig(dir.path()); // then run a binary with KUBECONFIG=<kubeconfig>
//! # }
//! ```

mod apply;
mod state;
mod wire;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::Method;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::broadcast;

use crate::https_server::LoopbackServer;
use crate::issuer::TestIssuer;
use crate::pki::TestPki;
pub use state::KubeVersion;
use state::{ResourceType, Store, meta_str};
use wire::{Broadcast, InjectedFailure, IssuerDiscovery, Shared};
pub use wire::{Outage, PARTIAL_OBJECT_METADATA, PARTIAL_OBJECT_METADATA_LIST, RecordedRequest};
const KUBECONFIG_NAME: &str = "wisp-fake";

/// The fake API server. Stops serving when dropped.
pub struct FakeKube {
    shared: Arc<Shared>,
    server: LoopbackServer,
    ca_pem: String,
}

impl std::fmt::Debug for FakeKube {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeKube")
            .field("url", &self.url())
            .field("token", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl FakeKube {
    /// Starts the fake with a random bearer token, reporting Kubernetes 1.33.
    pub async fn start(pki: &TestPki) -> Self {
        Self::start_with(pki, KubeVersion::default()).await
    }

    /// Starts the fake reporting `version`.
    pub async fn start_with(pki: &TestPki, version: KubeVersion) -> Self {
        let (changes, _) = broadcast::channel(4096);
        let shared = Arc::new(Shared {
            token_issuer: Mutex::new(None),
            failures: Mutex::new(Vec::new()),
            outage: Mutex::new(None),
            store: Mutex::new(Store::default()),
            changes,
            token: random_token(),
            version: Mutex::new(version),
            requests: Mutex::new(Vec::new()),
            issuer_discovery: Mutex::new(None),
        });
        let router = wire::router(shared.clone());
        let server = pki.serve(router, &[]);
        Self {
            shared,
            server,
            ca_pem: pki.ca_pem().to_string(),
        }
    }

    /// `https://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        self.server.url("")
    }

    /// The bearer token requests must carry.
    pub fn token(&self) -> &str {
        &self.shared.token
    }

    /// Writes `dir/kubeconfig` (server URL, CA data, bearer token, namespace `default`) and returns its path; a
    /// program finds it through `KUBECONFIG`.
    pub fn write_kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join("kubeconfig");
        let contents = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: {n}\n  cluster:\n    server: {url}\n    \
             certificate-authority-data: {ca}\ncontexts:\n- name: {n}\n  context:\n    cluster: {n}\n    \
             user: {n}\n    namespace: default\ncurrent-context: {n}\nusers:\n- name: {n}\n  user:\n    \
             token: {token}\n",
            n = KUBECONFIG_NAME,
            url = self.url(),
            ca = STANDARD.encode(&self.ca_pem),
            token = self.token(),
        );
        std::fs::write(&path, contents).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        path
    }

    /// Serves `issuer`'s discovery documents from now on, as the API server of a cluster whose service account
    /// tokens it issues (`/.well-known/openid-configuration`, `/openid/v1/jwks`).
    pub fn serve_issuer_discovery(&self, issuer: &TestIssuer) {
        let discovery = IssuerDiscovery {
            openid_configuration: issuer.openid_configuration(),
            jwks: serde_json::to_value(issuer.jwks()).unwrap_or_else(|e| panic!("the JWKS does not serialize: {e}")),
        };
        *self.shared.issuer_discovery.lock().unwrap_or_else(|p| p.into_inner()) = Some(discovery);
    }

    /// Changes what `/version` reports from now on.
    pub fn set_version(&self, major: u32, minor: u32) {
        *self.shared.version.lock().unwrap_or_else(|p| p.into_inner()) = KubeVersion { major, minor };
    }

    /// Creates or replaces an object (any serializable Kubernetes object with `apiVersion`, `kind` and
    /// `metadata.name`; namespaced kinds default to namespace `default`), notifying watches as a client write
    /// would. Returns the stored object with its `resourceVersion`. Panics on an unknown kind.
    pub fn upsert(&self, object: impl Serialize) -> Value {
        let (rt, namespace, name, mut object) = identify(object);
        let mut store = self.shared.store();
        ensure_namespace(rt, &namespace, &mut object);
        let result = if store.get(rt, &namespace, &name).is_some() {
            state::ensure_metadata(&mut object).remove("resourceVersion");
            store.replace(rt, &namespace, &name, object)
        } else {
            store.create(rt, &namespace, object, false)
        };
        let (stored, change) = result.unwrap_or_else(|e| panic!("upsert of {} {name}: {}", rt.kind, e.message));
        self.shared.publish(&store, change);
        stored
    }

    /// Stores an object that GET returns but that LIST and WATCH do not show until it is written again (e.g. by
    /// [`upsert`](Self::upsert)): the state of an API server whose watch cache lags behind. Panics if it exists.
    pub fn insert_get_only(&self, object: impl Serialize) -> Value {
        let (rt, namespace, name, mut object) = identify(object);
        ensure_namespace(rt, &namespace, &mut object);
        let mut store = self.shared.store();
        let (stored, _) = store
            .create(rt, &namespace, object, true)
            .unwrap_or_else(|e| panic!("insert_get_only of {} {name}: {}", rt.kind, e.message));
        stored
    }

    /// The stored object, if any (namespace `None` for cluster-scoped kinds).
    pub fn get(&self, api_version: &str, kind: &str, namespace: Option<&str>, name: &str) -> Option<Value> {
        let rt = resource_type(api_version, kind);
        self.shared.store().get(rt, namespace.unwrap_or(""), name).cloned()
    }

    /// All listed objects of a kind, across namespaces, ordered by namespace and name.
    pub fn list(&self, api_version: &str, kind: &str) -> Vec<Value> {
        let rt = resource_type(api_version, kind);
        self.shared.store().list(rt, None).into_iter().cloned().collect()
    }

    /// Deletes an object, notifying watches; returns it as it was, or `None` if there was none. Its dependents
    /// (objects whose owner references all name it) are deleted too, as the garbage collector would.
    pub fn delete(&self, api_version: &str, kind: &str, namespace: Option<&str>, name: &str) -> Option<Value> {
        let rt = resource_type(api_version, kind);
        let mut store = self.shared.store();
        let (object, changes) = store.delete_cascading(rt, namespace.unwrap_or(""), name).ok()?;
        for change in changes {
            self.shared.publish(&store, Some(change));
        }
        Some(object)
    }

    /// Serves the TokenRequest API (`POST .../serviceaccounts/{name}/token`) with tokens signed by `issuer`, so a
    /// fake Entra trusting that issuer accepts them.
    pub fn serve_token_requests(&self, issuer: TestIssuer) {
        *self.shared.token_issuer.lock().unwrap_or_else(|p| p.into_inner()) = Some(issuer);
    }

    /// The current resourceVersion (a global counter, as etcd's revision).
    pub fn resource_version(&self) -> u64 {
        self.shared.store().revision()
    }

    /// Sends a BOOKMARK at the current resourceVersion to every watch that allowed bookmarks.
    pub fn bookmark(&self) {
        let store = self.shared.store();
        let _ = self.shared.changes.send(Broadcast::Bookmark(store.revision()));
    }

    /// Forgets the change history: watches resuming from an older resourceVersion get `410 Gone` (an `ERROR`
    /// watch event with an `Expired` Status) and must re-list.
    pub fn compact(&self) {
        self.shared.store().compact();
    }

    /// Ends every open watch response, as an API server restart would; clients resume from their last version.
    pub fn close_watches(&self) {
        let _store = self.shared.store();
        let _ = self.shared.changes.send(Broadcast::CloseAll);
    }

    /// Makes the next `times` requests with `method` (e.g. `"PATCH"`) on exactly `path` (e.g.
    /// `/api/v1/namespaces/default/secrets/x`) fail with HTTP `code` and a `Status` body whose reason matches
    /// the code (429 also carries `Retry-After: 1`), after authentication, as an overloaded or failing API server
    /// would. For retry and error-path tests.
    pub fn fail_requests(&self, method: &str, path: &str, code: u16, times: u32) {
        let method = Method::from_bytes(method.to_ascii_uppercase().as_bytes())
            .unwrap_or_else(|_| panic!("{method:?} is not an HTTP method"));
        self.shared
            .failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(InjectedFailure {
                method,
                path: path.to_string(),
                code,
                remaining: times,
            });
    }

    /// Ends every failure [`fail_requests`](Self::fail_requests) injected: the API server is back.
    pub fn clear_failures(&self) {
        self.shared.failures.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// From now on, fails requests as `outage` says (replacing an outage already in force) and ends every open
    /// watch response, as an API server going down or restarting into a failing state; requests are still
    /// recorded. The store keeps taking [`upsert`](Self::upsert) and [`delete`](Self::delete), as writes through
    /// another API server would, and watches resumed after [`end_outage`](Self::end_outage) receive them.
    pub fn start_outage(&self, outage: Outage) {
        *self.shared.outage.lock().unwrap_or_else(|p| p.into_inner()) = Some(outage);
        self.close_watches();
    }

    /// Serves every request normally again.
    pub fn end_outage(&self) {
        *self.shared.outage.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Every request so far, in arrival order (watch requests are logged when their response starts).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.requests.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// How many requests so far `matches`, counted under the log's lock without copying it: cheap enough to
    /// call every few milliseconds while a benchmark writes thousands of objects.
    pub fn count_requests(&self, matches: impl Fn(&RecordedRequest) -> bool) -> usize {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|r| matches(r))
            .count()
    }

    pub fn clear_requests(&self) {
        self.shared.requests.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// Waits until `check` holds, re-checking every 10 ms; panics naming `what` after `timeout`. For tests whose
    /// subject reacts asynchronously (a reconcile loop, a watch).
    pub async fn wait_until(&self, what: &str, timeout: Duration, mut check: impl FnMut(&Self) -> bool) {
        let deadline = tokio::time::Instant::now() + timeout;
        while !check(self) {
            if tokio::time::Instant::now() >= deadline {
                panic!("timed out after {timeout:?} waiting until {what}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn resource_type(api_version: &str, kind: &str) -> &'static ResourceType {
    ResourceType::by_kind(api_version, kind)
        .unwrap_or_else(|| panic!("the fake API server does not serve {api_version} {kind}"))
}

fn identify(object: impl Serialize) -> (&'static ResourceType, String, String, Value) {
    let object = serde_json::to_value(object).unwrap_or_else(|e| panic!("object does not serialize: {e}"));
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let kind = object["kind"].as_str().unwrap_or_default();
    let rt = resource_type(api_version, kind);
    let name = meta_str(&object, "name").to_string();
    assert!(!name.is_empty(), "{kind} has no metadata.name");
    let namespace = match (rt.namespaced, meta_str(&object, "namespace")) {
        (false, _) => String::new(),
        (true, "") => "default".to_string(),
        (true, ns) => ns.to_string(),
    };
    (rt, namespace, name, object)
}

fn ensure_namespace(rt: &ResourceType, namespace: &str, object: &mut Value) {
    if rt.namespaced {
        state::ensure_metadata(object).insert("namespace".into(), Value::from(namespace));
    }
}

fn random_token() -> String {
    let mut bytes = [0u8; 24];
    rustls::crypto::aws_lc_rs::default_provider()
        .secure_random
        .fill(&mut bytes)
        .expect("the system random generator works");
    URL_SAFE_NO_PAD.encode(bytes)
}
