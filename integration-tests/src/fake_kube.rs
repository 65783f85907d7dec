//! A fake Kubernetes API server: real HTTPS on `127.0.0.1:<port>` serving the subset of the API that wisp uses,
//! with the semantics kube-rs' client, watcher, reflector and metadata watcher rely on.
//!
//! What it serves, for every resource in [`store::RESOURCES`] (ServiceAccounts, Secrets, Events,
//! SecretProviderClasses, SecretProviderClassPodStatuses, MutatingWebhookConfigurations, ...):
//!
//! - `GET /version` (configurable, e.g. 1.28 vs 1.29 for native sidecar detection);
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
//! As on the real server, a write that changes nothing is a no-op (no new resourceVersion, no event), and an
//! object entering or leaving a watch's selector arrives as ADDED or DELETED.
//!
//! Known simplifications: server-side apply and strategic merge patch merge like a JSON merge patch (lists are
//! replaced, except `metadata.ownerReferences`, which a strategic merge patch merges by `uid` as the real server
//! does; fields dropped from an applied configuration are kept, no `managedFields`); `continue` tokens page
//! over the current state rather than a snapshot; no subresources (`/status`), no DELETE of collections, no
//! admission or validation of object contents.
//!
//! Test controls: [`FakeKube::upsert`], [`FakeKube::delete`], [`FakeKube::insert_get_only`] (an object GET
//! returns but lists and watches do not show yet, i.e. a lagging watch cache), [`FakeKube::compact`],
//! [`FakeKube::bookmark`], [`FakeKube::close_watches`], [`FakeKube::set_version`], injected failures
//! ([`FakeKube::fail_requests`]) and a request log ([`FakeKube::requests`]). Programs reach it through a
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

pub mod store;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

use crate::https_server::LoopbackServer;
use crate::pki::TestPki;
use store::{ApiError, Change, FieldSelector, LabelSelector, ResourceType, Store, meta_str};

/// Media type of the metadata API's single objects (and their watch events).
pub const PARTIAL_OBJECT_METADATA: &str = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1";
/// Media type of the metadata API's lists.
pub const PARTIAL_OBJECT_METADATA_LIST: &str = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1";

const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1800);
const KUBECONFIG_NAME: &str = "wisp-fake";

/// The Kubernetes version `/version` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeVersion {
    pub major: u32,
    pub minor: u32,
}

impl Default for KubeVersion {
    fn default() -> Self {
        Self { major: 1, minor: 33 }
    }
}

/// One request as the fake received it (the `Authorization` header is not kept).
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    /// Decoded query parameters; kube-rs' leading `&` yields no empty entry.
    pub query: BTreeMap<String, String>,
    pub accept: Option<String>,
    pub content_type: Option<String>,
    /// The JSON body of writes, if it parsed.
    pub body: Option<Value>,
    pub status: u16,
}

#[derive(Debug, Clone)]
enum Broadcast {
    Change(Arc<Change>),
    Bookmark(u64),
    CloseAll,
}

/// A failure served instead of the real answer to the next matching requests.
#[derive(Debug, Clone)]
struct InjectedFailure {
    method: Method,
    path: String,
    code: u16,
    remaining: u32,
}

struct Shared {
    failures: Mutex<Vec<InjectedFailure>>,
    store: Mutex<Store>,
    changes: broadcast::Sender<Broadcast>,
    token: String,
    version: Mutex<KubeVersion>,
    requests: Mutex<Vec<RecordedRequest>>,
}

impl Shared {
    fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Publishes a committed change while the store lock is still held, so watchers see changes in revision
    /// order and a watch that subscribes under the lock misses nothing.
    fn publish(&self, _store: &MutexGuard<'_, Store>, change: Change) {
        let _ = self.changes.send(Broadcast::Change(Arc::new(change)));
    }
}

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
            failures: Mutex::new(Vec::new()),
            store: Mutex::new(Store::default()),
            changes,
            token: random_token(),
            version: Mutex::new(version),
            requests: Mutex::new(Vec::new()),
        });
        let router = axum::Router::new().fallback(handle).with_state(shared.clone());
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
            store::ensure_metadata(&mut object).remove("resourceVersion");
            store.replace(rt, &namespace, &name, object)
        } else {
            store.create(rt, &namespace, object, false)
        };
        let (stored, change) = result.unwrap_or_else(|e| panic!("upsert of {} {name}: {}", rt.kind, e.message));
        if let Some(change) = change {
            self.shared.publish(&store, change);
        }
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

    /// Deletes an object, notifying watches; returns it as it was, or `None` if there was none.
    pub fn delete(&self, api_version: &str, kind: &str, namespace: Option<&str>, name: &str) -> Option<Value> {
        let rt = resource_type(api_version, kind);
        let mut store = self.shared.store();
        let (object, change) = store.delete(rt, namespace.unwrap_or(""), name).ok()?;
        if let Some(change) = change {
            self.shared.publish(&store, change);
        }
        Some(object)
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

    /// Every request so far, in arrival order (watch requests are logged when their response starts).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.requests.lock().unwrap_or_else(|p| p.into_inner()).clone()
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
        store::ensure_metadata(object).insert("namespace".into(), Value::from(namespace));
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

/// Five characters from the API server's `generateName` alphabet (no vowels, no look-alikes).
fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut bytes = [0u8; 5];
    rustls::crypto::aws_lc_rs::default_provider()
        .secure_random
        .fill(&mut bytes)
        .expect("the system random generator works");
    bytes
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
        .collect()
}

/// What a request path addresses.
enum Target {
    Version,
    Health,
    Collection {
        rt: &'static ResourceType,
        /// `None`: across namespaces (or a cluster-scoped kind).
        namespace: Option<String>,
    },
    Item {
        rt: &'static ResourceType,
        namespace: String,
        name: String,
    },
}

fn not_served() -> ApiError {
    ApiError {
        code: 404,
        reason: "NotFound",
        message: "the server could not find the requested resource".into(),
        details: None,
    }
}

fn method_not_allowed() -> ApiError {
    ApiError {
        code: 405,
        reason: "MethodNotAllowed",
        message: "the server does not allow this method on the requested resource".into(),
        details: None,
    }
}

fn parse_target(path: &str) -> Result<Target, ApiError> {
    match path {
        "/version" | "/version/" => return Ok(Target::Version),
        "/healthz" | "/livez" | "/readyz" => return Ok(Target::Health),
        _ => {}
    }
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segments.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return Err(not_served()),
    };
    let find = |plural: &str| ResourceType::by_path(group, version, plural).ok_or_else(not_served);
    match rest {
        [plural] => Ok(Target::Collection {
            rt: find(plural)?,
            namespace: None,
        }),
        [plural, name] => {
            let rt = find(plural)?;
            if rt.namespaced {
                return Err(not_served());
            }
            Ok(Target::Item {
                rt,
                namespace: String::new(),
                name: (*name).to_string(),
            })
        }
        ["namespaces", namespace, plural] => {
            let rt = find(plural)?;
            if !rt.namespaced {
                return Err(not_served());
            }
            Ok(Target::Collection {
                rt,
                namespace: Some((*namespace).to_string()),
            })
        }
        ["namespaces", namespace, plural, name] => {
            let rt = find(plural)?;
            if !rt.namespaced {
                return Err(not_served());
            }
            Ok(Target::Item {
                rt,
                namespace: (*namespace).to_string(),
                name: (*name).to_string(),
            })
        }
        _ => Err(not_served()),
    }
}

struct Req {
    method: Method,
    query: BTreeMap<String, String>,
    accept: String,
    content_type: String,
    body: Bytes,
}

impl Req {
    fn param(&self, name: &str) -> Option<&str> {
        self.query.get(name).map(String::as_str).filter(|v| !v.is_empty())
    }

    fn wants_metadata(&self) -> bool {
        self.accept.contains("as=PartialObjectMetadata")
    }

    fn json_body(&self) -> Result<Value, ApiError> {
        serde_json::from_slice(&self.body).map_err(|e| ApiError::bad_request(format!("json parse error: {e}")))
    }
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let query = Query::<BTreeMap<String, String>>::try_from_uri(&uri)
        .map(|q| q.0)
        .unwrap_or_default();
    let mut record = RecordedRequest {
        method: method.to_string(),
        path: uri.path().to_string(),
        query: query.clone(),
        accept: header(header::ACCEPT),
        content_type: header(header::CONTENT_TYPE),
        body: serde_json::from_slice(&body).ok(),
        status: 0,
    };
    let req = Req {
        method,
        query,
        accept: record.accept.clone().unwrap_or_default(),
        content_type: record.content_type.clone().unwrap_or_default(),
        body,
    };
    let response = match route(&shared, &req, uri.path(), header(header::AUTHORIZATION)) {
        Ok(response) => response,
        Err(e) => status_response(&e),
    };
    record.status = response.status().as_u16();
    shared.requests.lock().unwrap_or_else(|p| p.into_inner()).push(record);
    response
}

fn route(shared: &Arc<Shared>, req: &Req, path: &str, authorization: Option<String>) -> Result<Response, ApiError> {
    let target = parse_target(path);
    let public = matches!(target, Ok(Target::Version | Target::Health));
    let authorized = match &authorization {
        None => public,
        Some(value) => value.strip_prefix("Bearer ") == Some(shared.token.as_str()),
    };
    if !authorized {
        return Err(ApiError {
            code: 401,
            reason: "Unauthorized",
            message: "Unauthorized".into(),
            details: None,
        });
    }
    if let Some(code) = take_injected_failure(shared, &req.method, path) {
        let reason = match code {
            400 => "BadRequest",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "NotFound",
            409 => "Conflict",
            410 => "Expired",
            422 => "Invalid",
            429 => "TooManyRequests",
            503 => "ServiceUnavailable",
            504 => "Timeout",
            _ => "InternalError",
        };
        let error = ApiError {
            code,
            reason,
            message: format!("injected failure {code} for {} {path}", req.method),
            details: None,
        };
        let mut response = status_response(&error);
        if code == 429 {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        }
        return Ok(response);
    }
    match (target?, &req.method) {
        (Target::Version, &Method::GET) => Ok(json_response(StatusCode::OK, &version_body(shared))),
        (Target::Health, &Method::GET) => Ok((StatusCode::OK, "ok").into_response()),
        (Target::Collection { rt, namespace }, &Method::GET) => {
            if matches!(req.param("watch"), Some("true" | "1")) {
                watch(shared, req, rt, namespace.as_deref())
            } else {
                list(shared, req, rt, namespace.as_deref())
            }
        }
        (Target::Collection { rt, namespace }, &Method::POST) => {
            let namespace = match (rt.namespaced, namespace) {
                (true, None) => return Err(method_not_allowed()),
                (true, Some(ns)) => ns,
                (false, _) => String::new(),
            };
            create(shared, req, rt, &namespace)
        }
        (Target::Item { rt, namespace, name }, &Method::GET) => {
            let store = shared.store();
            let object = store
                .get(rt, &namespace, &name)
                .ok_or_else(|| ApiError::not_found(rt, &name))?;
            Ok(object_response(req, StatusCode::OK, object))
        }
        (Target::Item { rt, namespace, name }, &Method::PUT) => replace(shared, req, rt, &namespace, &name),
        (Target::Item { rt, namespace, name }, &Method::PATCH) => patch(shared, req, rt, &namespace, &name),
        (Target::Item { rt, namespace, name }, &Method::DELETE) => {
            let mut store = shared.store();
            let (object, change) = store.delete(rt, &namespace, &name)?;
            let body = if rt.is_custom() {
                object
            } else {
                let mut details = json!({"name": name, "kind": rt.plural, "uid": meta_str(&object, "uid")});
                if !rt.group.is_empty() {
                    details["group"] = Value::from(rt.group);
                }
                json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details})
            };
            if let Some(change) = change {
                shared.publish(&store, change);
            }
            Ok(json_response(StatusCode::OK, &body))
        }
        _ => Err(method_not_allowed()),
    }
}

fn take_injected_failure(shared: &Shared, method: &Method, path: &str) -> Option<u16> {
    let mut failures = shared.failures.lock().unwrap_or_else(|p| p.into_inner());
    let failure = failures
        .iter_mut()
        .find(|f| f.remaining > 0 && f.method == *method && f.path == path)?;
    failure.remaining -= 1;
    Some(failure.code)
}

fn version_body(shared: &Shared) -> Value {
    let version = shared.version.lock().unwrap_or_else(|p| p.into_inner()).clone();
    json!({
        "major": version.major.to_string(),
        "minor": version.minor.to_string(),
        "gitVersion": format!("v{}.{}.0", version.major, version.minor),
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-01-01T00:00:00Z",
        "goVersion": "go1.24.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

fn status_response(error: &ApiError) -> Response {
    let status = StatusCode::from_u16(error.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(status, &error.status())
}

fn partial_metadata(object: &Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": object["metadata"]})
}

fn object_response(req: &Req, status: StatusCode, object: &Value) -> Response {
    if req.wants_metadata() {
        let body = partial_metadata(object).to_string();
        (status, [(header::CONTENT_TYPE, PARTIAL_OBJECT_METADATA)], body).into_response()
    } else {
        json_response(status, object)
    }
}

struct Selectors {
    labels: Option<LabelSelector>,
    fields: Option<FieldSelector>,
}

impl Selectors {
    fn from(req: &Req) -> Result<Self, ApiError> {
        Ok(Self {
            labels: req.param("labelSelector").map(LabelSelector::parse).transpose()?,
            fields: req.param("fieldSelector").map(FieldSelector::parse).transpose()?,
        })
    }

    fn matches(&self, object: &Value) -> bool {
        self.labels.as_ref().is_none_or(|s| s.matches(object)) && self.fields.as_ref().is_none_or(|s| s.matches(object))
    }
}

fn list(shared: &Shared, req: &Req, rt: &'static ResourceType, namespace: Option<&str>) -> Result<Response, ApiError> {
    let selectors = Selectors::from(req)?;
    let limit: usize = match req.param("limit") {
        None => 0,
        Some(l) => l
            .parse()
            .map_err(|_| ApiError::bad_request(format!("invalid limit {l:?}: must be a non-negative integer")))?,
    };
    let start_after = match req.param("continue") {
        None => None,
        Some(token) => Some(decode_continue(token)?),
    };
    let store = shared.store();
    let revision = store.revision();
    let mut items: Vec<&Value> = store
        .list(rt, namespace)
        .into_iter()
        .filter(|o| selectors.matches(o))
        .filter(|o| {
            start_after
                .as_ref()
                .is_none_or(|(ns, name)| (meta_str(o, "namespace"), meta_str(o, "name")) > (ns.as_str(), name.as_str()))
        })
        .collect();
    let mut list_meta = json!({"resourceVersion": revision.to_string()});
    if limit > 0 && items.len() > limit {
        let remaining = items.len() - limit;
        items.truncate(limit);
        let last = items[limit - 1];
        list_meta["continue"] = Value::from(encode_continue(meta_str(last, "namespace"), meta_str(last, "name")));
        list_meta["remainingItemCount"] = Value::from(remaining);
    }
    let (content_type, body) = if req.wants_metadata() {
        let items: Vec<Value> = items.iter().map(|o| partial_metadata(o)).collect();
        (
            PARTIAL_OBJECT_METADATA_LIST,
            json!({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1", "metadata": list_meta, "items": items}),
        )
    } else {
        let items: Vec<Value> = items
            .iter()
            .map(|o| {
                let mut item = (*o).clone();
                if !rt.is_custom()
                    && let Some(fields) = item.as_object_mut()
                {
                    fields.remove("apiVersion");
                    fields.remove("kind");
                }
                item
            })
            .collect();
        (
            "application/json",
            json!({"kind": format!("{}List", rt.kind), "apiVersion": rt.api_version(), "metadata": list_meta, "items": items}),
        )
    };
    Ok((StatusCode::OK, [(header::CONTENT_TYPE, content_type)], body.to_string()).into_response())
}

fn encode_continue(namespace: &str, name: &str) -> String {
    URL_SAFE_NO_PAD.encode(json!([namespace, name]).to_string())
}

fn decode_continue(token: &str) -> Result<(String, String), ApiError> {
    let invalid = || ApiError::bad_request("continue key is not valid: incorrect encoded start resourceVersion");
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
    serde_json::from_slice::<(String, String)>(&bytes).map_err(|_| invalid())
}

fn watch_line(event: &str, object: Value) -> Bytes {
    let mut line = json!({"type": event, "object": object}).to_string();
    line.push('\n');
    Bytes::from(line)
}

fn watch(
    shared: &Arc<Shared>,
    req: &Req,
    rt: &'static ResourceType,
    namespace: Option<&str>,
) -> Result<Response, ApiError> {
    let selectors = Selectors::from(req)?;
    let metadata_only = req.wants_metadata();
    let bookmarks = req.param("allowWatchBookmarks") == Some("true");
    let timeout = match req.param("timeoutSeconds") {
        None => DEFAULT_WATCH_TIMEOUT,
        Some(t) => Duration::from_secs(
            t.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid timeoutSeconds {t:?}")))?,
        ),
    };
    let shape = move |object: &Value| {
        if metadata_only {
            partial_metadata(object)
        } else {
            object.clone()
        }
    };
    let bookmark_kind = if metadata_only {
        "PartialObjectMetadata"
    } else {
        rt.kind
    };
    let bookmark_api_version = if metadata_only {
        "meta.k8s.io/v1".to_string()
    } else {
        rt.api_version()
    };
    let bookmark = move |revision: u64, initial_end: bool| {
        let mut metadata = json!({"resourceVersion": revision.to_string()});
        if initial_end {
            metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        watch_line(
            "BOOKMARK",
            json!({"kind": bookmark_kind, "apiVersion": bookmark_api_version, "metadata": metadata}),
        )
    };

    let mut initial = Vec::new();
    let (mut receiver, start_revision) = {
        let store = shared.store();
        let current = store.revision();
        let send_initial = req.param("sendInitialEvents") == Some("true");
        match req.param("resourceVersion") {
            _ if send_initial => {
                for object in store.list(rt, namespace).into_iter().filter(|o| selectors.matches(o)) {
                    initial.push(watch_line("ADDED", shape(object)));
                }
                if bookmarks {
                    initial.push(bookmark(current, true));
                }
            }
            None | Some("0") => {
                for object in store.list(rt, namespace).into_iter().filter(|o| selectors.matches(o)) {
                    initial.push(watch_line("ADDED", shape(object)));
                }
            }
            Some(version) => {
                let from: u64 = version.parse().map_err(|_| {
                    ApiError::bad_request(format!("invalid resource version {version:?}: must be an integer"))
                })?;
                if from < store.compacted() {
                    let expired = ApiError {
                        code: 410,
                        reason: "Expired",
                        message: format!("too old resource version: {from} ({})", store.compacted()),
                        details: None,
                    };
                    let line = watch_line("ERROR", expired.status());
                    return Ok(stream_response(vec![line], None, "application/json"));
                }
                for change in store.changes_since(rt, namespace, from) {
                    if let Some(event) = change.as_seen_through(|o| selectors.matches(o)) {
                        initial.push(watch_line(event.as_str(), shape(&change.object)));
                    }
                }
            }
        }
        (shared.changes.subscribe(), current)
    };

    let (sender, body_receiver) = mpsc::channel::<Result<Bytes, Infallible>>(64);
    let shared_for_task = shared.clone();
    let namespace = namespace.map(str::to_string);
    tokio::spawn(async move {
        for line in initial {
            if sender.send(Ok(line)).await.is_err() {
                return;
            }
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        // The line this watch sends for a change, if any.
        let line_for = |change: &Change| {
            if change.revision <= start_revision
                || change.resource != rt
                || namespace.as_deref().is_some_and(|n| n != change.namespace)
            {
                return None;
            }
            let event = change.as_seen_through(|o| selectors.matches(o))?;
            Some(watch_line(event.as_str(), shape(&change.object)))
        };
        loop {
            let message = tokio::select! {
                message = receiver.recv() => message,
                () = &mut deadline => {
                    // Everything committed up to `revision` was broadcast before the store lock was released, so
                    // draining the receiver now delivers it before the closing bookmark promises it.
                    let revision = shared_for_task.store().revision();
                    while let Ok(message) = receiver.try_recv() {
                        if let Broadcast::Change(change) = message
                            && let Some(line) = line_for(&change)
                            && sender.send(Ok(line)).await.is_err()
                        {
                            return;
                        }
                    }
                    if bookmarks {
                        let _ = sender.send(Ok(bookmark(revision, false))).await;
                    }
                    return;
                }
                () = sender.closed() => return,
            };
            let line = match message {
                Ok(Broadcast::Change(change)) => match line_for(&change) {
                    Some(line) => line,
                    None => continue,
                },
                Ok(Broadcast::Bookmark(revision)) if bookmarks && revision > start_revision => {
                    bookmark(revision, false)
                }
                Ok(Broadcast::Bookmark(_)) => continue,
                // A lagging watch ends; the client resumes from its last version and the history fills the gap.
                Ok(Broadcast::CloseAll) | Err(_) => return,
            };
            if sender.send(Ok(line)).await.is_err() {
                return;
            }
        }
    });
    let content_type = if metadata_only {
        PARTIAL_OBJECT_METADATA
    } else {
        "application/json"
    };
    Ok(stream_response(Vec::new(), Some(body_receiver), content_type))
}

fn stream_response(
    lines: Vec<Bytes>,
    receiver: Option<mpsc::Receiver<Result<Bytes, Infallible>>>,
    content_type: &'static str,
) -> Response {
    let head = futures::stream::iter(lines.into_iter().map(Ok::<Bytes, Infallible>));
    let body = match receiver {
        Some(receiver) => Body::from_stream(futures::StreamExt::chain(
            head,
            tokio_stream::wrappers::ReceiverStream::new(receiver),
        )),
        None => Body::from_stream(head),
    };
    (StatusCode::OK, [(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// Checks a written object's `apiVersion`/`kind` (when given) against the URL's resource.
fn check_type(rt: &ResourceType, object: &Value) -> Result<(), ApiError> {
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let kind = object["kind"].as_str().unwrap_or_default();
    if (!api_version.is_empty() && api_version != rt.api_version()) || (!kind.is_empty() && kind != rt.kind) {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({api_version}) does not match the expected API version ({})",
            rt.api_version()
        )));
    }
    if !object.is_object() {
        return Err(ApiError::bad_request("the request body is not a JSON object"));
    }
    Ok(())
}

fn check_namespace(rt: &ResourceType, namespace: &str, object: &Value) -> Result<(), ApiError> {
    let given = meta_str(object, "namespace");
    if rt.namespaced && !given.is_empty() && given != namespace {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    Ok(())
}

fn create(shared: &Shared, req: &Req, rt: &'static ResourceType, namespace: &str) -> Result<Response, ApiError> {
    let mut object = req.json_body()?;
    check_type(rt, &object)?;
    check_namespace(rt, namespace, &object)?;
    if !meta_str(&object, "resourceVersion").is_empty() {
        return Err(ApiError::internal(
            "resourceVersion should not be set on objects to be created",
        ));
    }
    let mut store = shared.store();
    if meta_str(&object, "name").is_empty() {
        let prefix = meta_str(&object, "generateName").to_string();
        if prefix.is_empty() {
            return Err(ApiError::invalid(
                rt,
                "",
                format!(
                    "{} \"\" is invalid: metadata.name: Required value: name or generateName is required",
                    rt.kind
                ),
            ));
        }
        let name = format!("{prefix}{}", random_suffix());
        store::ensure_metadata(&mut object).insert("name".into(), Value::from(name));
    }
    let (stored, change) = store.create(rt, namespace, object, false)?;
    if let Some(change) = change {
        shared.publish(&store, change);
    }
    Ok(object_response(req, StatusCode::CREATED, &stored))
}

fn replace(
    shared: &Shared,
    req: &Req,
    rt: &'static ResourceType,
    namespace: &str,
    name: &str,
) -> Result<Response, ApiError> {
    let object = req.json_body()?;
    check_type(rt, &object)?;
    check_namespace(rt, namespace, &object)?;
    let given = meta_str(&object, "name");
    if given != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({given}) does not match the name on the URL ({name})"
        )));
    }
    let mut store = shared.store();
    let (stored, change) = store.replace(rt, namespace, name, object)?;
    if let Some(change) = change {
        shared.publish(&store, change);
    }
    Ok(object_response(req, StatusCode::OK, &stored))
}

fn patch(
    shared: &Shared,
    req: &Req,
    rt: &'static ResourceType,
    namespace: &str,
    name: &str,
) -> Result<Response, ApiError> {
    let media_type = req
        .content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_string();
    let mut store = shared.store();
    let current = store.get(rt, namespace, name).cloned();
    let patched = match media_type.as_str() {
        "application/apply-patch+yaml" => {
            if req.param("fieldManager").is_none() {
                return Err(ApiError::invalid(
                    rt,
                    name,
                    "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply \
                     patch",
                ));
            }
            let applied = serde_json::from_slice::<Value>(&req.body).map_err(|e| {
                ApiError::bad_request(format!(
                    "error decoding YAML: the fake accepts JSON apply configurations: {e}"
                ))
            })?;
            check_type(rt, &applied)?;
            check_namespace(rt, namespace, &applied)?;
            match current {
                None => {
                    let mut object = applied;
                    store::ensure_metadata(&mut object).insert("name".into(), Value::from(name));
                    let (stored, change) = store.create(rt, namespace, object, false)?;
                    if let Some(change) = change {
                        shared.publish(&store, change);
                    }
                    return Ok(object_response(req, StatusCode::CREATED, &stored));
                }
                Some(mut object) => {
                    json_patch::merge(&mut object, &applied);
                    object
                }
            }
        }
        "application/merge-patch+json" => {
            let mut object = current.ok_or_else(|| ApiError::not_found(rt, name))?;
            json_patch::merge(&mut object, &req.json_body()?);
            object
        }
        "application/strategic-merge-patch+json" => {
            let mut object = current.ok_or_else(|| ApiError::not_found(rt, name))?;
            let mut patch = req.json_body()?;
            merge_owner_references_by_uid(&object, &mut patch);
            json_patch::merge(&mut object, &patch);
            object
        }
        "application/json-patch+json" => {
            let mut object = current.ok_or_else(|| ApiError::not_found(rt, name))?;
            let operations: json_patch::Patch = serde_json::from_slice(&req.body)
                .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
            json_patch::patch(&mut object, &operations)
                .map_err(|e| ApiError::invalid(rt, name, format!("the JSON patch cannot be applied: {e}")))?;
            object
        }
        other => {
            return Err(ApiError {
                code: 415,
                reason: "UnsupportedMediaType",
                message: format!(
                    "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (got {other:?})"
                ),
                details: None,
            });
        }
    };
    let (stored, change) = store.replace(rt, namespace, name, patched)?;
    if let Some(change) = change {
        shared.publish(&store, change);
    }
    Ok(object_response(req, StatusCode::OK, &stored))
}

/// Strategic merge of `metadata.ownerReferences`, whose patch merge key is `uid`: entries of the patch replace the
/// object's entries with the same uid, others are appended, the object's other entries stay. The merged list
/// goes into `patch`, for the JSON merge of the rest.
fn merge_owner_references_by_uid(object: &Value, patch: &mut Value) {
    let Some(patched) = patch
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .cloned()
    else {
        return;
    };
    let mut merged: Vec<Value> = object
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for entry in patched {
        match merged
            .iter_mut()
            .find(|existing| existing.get("uid") == entry.get("uid"))
        {
            Some(existing) => *existing = entry,
            None => merged.push(entry),
        }
    }
    patch["metadata"]["ownerReferences"] = Value::Array(merged);
}
