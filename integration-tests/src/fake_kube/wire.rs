//! The fake API server on the wire: request paths to resources, query parameters (selectors, paging, watch
//! options), bearer tokens, the JSON, metadata-API and watch-stream responses, and `Status` bodies for errors.
//! The objects, revisions and rules live in `state.rs`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

use crate::issuer::{SaTokenSpec, TestIssuer, rfc3339_seconds};

use super::apply;
use super::state::{
    self, ApiError, Change, FieldSelector, KubeVersion, LabelSelector, ResourceType, Store, check_namespace,
    check_type, merge_owner_references_by_uid, meta_str, random_suffix,
};
/// Media type of the metadata API's single objects (and their watch events).
pub const PARTIAL_OBJECT_METADATA: &str = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1";
/// Media type of the metadata API's lists.
pub const PARTIAL_OBJECT_METADATA_LIST: &str = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1";

const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1800);

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
pub(super) enum Broadcast {
    Change(Arc<Change>),
    Bookmark(u64),
    CloseAll,
}

/// The whole API server failing, until the test ends it (`FakeKube::start_outage`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outage {
    /// Down or unreachable: every connection is dropped without an answer (recorded with status 0), `/version`
    /// and the health endpoints included.
    Down,
    /// Every request is answered with this HTTP status and a `Status` body, as an API server whose storage fails.
    Status(u16),
    /// Only LIST requests (a collection GET without `watch`) are answered with this status; GET of one object,
    /// watches and writes are served. A re-list fails while everything else works, as when the storage behind
    /// consistent reads fails under a working watch cache.
    ListStatus(u16),
}

/// Whether `outage` replaces the answer to `req` on `path`.
fn covers(outage: Outage, req: &Req, path: &str) -> bool {
    match outage {
        Outage::Down | Outage::Status(_) => true,
        Outage::ListStatus(_) => {
            req.method == Method::GET
                && !matches!(req.param("watch"), Some("true" | "1"))
                && matches!(parse_target(path), Ok(Target::Collection { .. }))
        }
    }
}

/// Response headers, then the connection aborted before the body: what a client sees of a server that goes away
/// (HTTP/1.1 and HTTP/2 alike report an error, never a status).
fn dropped_connection() -> Response {
    let failing = futures::stream::once(async {
        Err::<Bytes, _>(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "fake API server outage: connection dropped",
        ))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_LENGTH, "1024")
        .body(Body::from_stream(failing))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// A failure served instead of the real answer to the next matching requests.
#[derive(Debug, Clone)]
pub(super) struct InjectedFailure {
    pub(super) method: Method,
    pub(super) path: String,
    pub(super) code: u16,
    pub(super) remaining: u32,
}

pub(super) struct Shared {
    /// Signs the tokens of the TokenRequest API (`None`: the subresource answers 503).
    pub(super) token_issuer: Mutex<Option<TestIssuer>>,
    pub(super) failures: Mutex<Vec<InjectedFailure>>,
    pub(super) outage: Mutex<Option<Outage>>,
    pub(super) store: Mutex<Store>,
    pub(super) changes: broadcast::Sender<Broadcast>,
    pub(super) token: String,
    pub(super) version: Mutex<KubeVersion>,
    pub(super) requests: Mutex<Vec<RecordedRequest>>,
    /// The service account issuer's discovery documents, once a test serves them.
    pub(super) issuer_discovery: Mutex<Option<IssuerDiscovery>>,
}

/// What `/.well-known/openid-configuration` and `/openid/v1/jwks` return.
#[derive(Debug, Clone)]
pub(super) struct IssuerDiscovery {
    pub(super) openid_configuration: Value,
    pub(super) jwks: Value,
}

impl Shared {
    pub(super) fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Publishes a committed change (`None`: the write changed nothing) while the store lock is still held, so
    /// watchers see changes in revision order and a watch that subscribes under the lock misses nothing.
    pub(super) fn publish(&self, _store: &MutexGuard<'_, Store>, change: Option<Change>) {
        if let Some(change) = change {
            let _ = self.changes.send(Broadcast::Change(Arc::new(change)));
        }
    }
}

/// What a request path addresses.
enum Target {
    Version,
    Health,
    OpenIdConfiguration,
    Jwks,
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
    /// `.../namespaces/{namespace}/{plural}/{name}/{subresource}`: `status` of a resource with a status
    /// subresource, `token` of a ServiceAccount (the TokenRequest API).
    Subresource {
        rt: &'static ResourceType,
        namespace: String,
        name: String,
        subresource: String,
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
        "/.well-known/openid-configuration" => return Ok(Target::OpenIdConfiguration),
        "/openid/v1/jwks" => return Ok(Target::Jwks),
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
        ["namespaces", namespace, plural, name, subresource] => {
            let rt = find(plural)?;
            let served = match *subresource {
                "status" => rt.status_subresource,
                "token" => rt.plural == "serviceaccounts" && rt.group.is_empty(),
                _ => false,
            };
            if !served {
                return Err(not_served());
            }
            Ok(Target::Subresource {
                rt,
                namespace: (*namespace).to_string(),
                name: (*name).to_string(),
                subresource: (*subresource).to_string(),
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

/// The router serving `shared`.
pub(super) fn router(shared: Arc<Shared>) -> axum::Router {
    axum::Router::new().fallback(handle).with_state(shared)
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
    let outage = *shared.outage.lock().unwrap_or_else(|p| p.into_inner());
    let (response, status) = match outage.filter(|o| covers(*o, &req, uri.path())) {
        Some(Outage::Down) => (dropped_connection(), 0),
        Some(Outage::Status(code) | Outage::ListStatus(code)) => {
            let error = ApiError {
                code,
                reason: reason_for(code),
                message: format!("injected outage: {code} for {} {}", req.method, uri.path()),
                details: None,
            };
            (status_response(&error), code)
        }
        None => {
            let response = match route(&shared, &req, uri.path(), header(header::AUTHORIZATION)) {
                Ok(response) => response,
                Err(e) => status_response(&e),
            };
            let status = response.status().as_u16();
            (response, status)
        }
    };
    record.status = status;
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
        let error = ApiError {
            code,
            reason: reason_for(code),
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
        // Served only when the issuer is discoverable, as kube-apiserver with a URL `--service-account-issuer`;
        // the default RBAC does not open them to anonymous requests.
        (Target::OpenIdConfiguration, &Method::GET) => issuer_document(shared, |d| &d.openid_configuration),
        (Target::Jwks, &Method::GET) => issuer_document(shared, |d| &d.jwks),
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
        (Target::Item { rt, namespace, name }, &Method::PUT) => {
            replace(shared, req, ItemRef::new(rt, &namespace, &name))
        }
        (Target::Item { rt, namespace, name }, &Method::PATCH) => {
            patch(shared, req, ItemRef::new(rt, &namespace, &name))
        }
        (
            Target::Subresource {
                rt,
                namespace,
                name,
                subresource,
            },
            method,
        ) => subresource_request(shared, req, ItemRef::new(rt, &namespace, &name), &subresource, method),
        (Target::Item { rt, namespace, name }, &Method::DELETE) => {
            let mut store = shared.store();
            let (object, changes) = store.delete_cascading(rt, &namespace, &name)?;
            let body = if rt.is_custom() {
                object
            } else {
                let mut details = json!({"name": name, "kind": rt.plural, "uid": meta_str(&object, "uid")});
                if !rt.group.is_empty() {
                    details["group"] = Value::from(rt.group);
                }
                json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details})
            };
            for change in changes {
                shared.publish(&store, Some(change));
            }
            Ok(json_response(StatusCode::OK, &body))
        }
        _ => Err(method_not_allowed()),
    }
}

fn issuer_document(shared: &Shared, pick: impl Fn(&IssuerDiscovery) -> &Value) -> Result<Response, ApiError> {
    let discovery = shared.issuer_discovery.lock().unwrap_or_else(|p| p.into_inner());
    let document = discovery.as_ref().map(pick).ok_or_else(not_served)?;
    Ok(json_response(StatusCode::OK, document))
}

/// The `Status` reason the API server gives with `code`.
fn reason_for(code: u16) -> &'static str {
    match code {
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
    fn from(req: &Req, rt: &ResourceType) -> Result<Self, ApiError> {
        Ok(Self {
            labels: req.param("labelSelector").map(LabelSelector::parse).transpose()?,
            fields: req
                .param("fieldSelector")
                .map(|selector| FieldSelector::parse(rt, selector))
                .transpose()?,
        })
    }

    fn matches(&self, object: &Value) -> bool {
        self.labels.as_ref().is_none_or(|s| s.matches(object)) && self.fields.as_ref().is_none_or(|s| s.matches(object))
    }
}

fn list(shared: &Shared, req: &Req, rt: &'static ResourceType, namespace: Option<&str>) -> Result<Response, ApiError> {
    let selectors = Selectors::from(req, rt)?;
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
    let selectors = Selectors::from(req, rt)?;
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
        state::ensure_metadata(&mut object).insert("name".into(), Value::from(name));
    }
    let (stored, change) = store.create(rt, namespace, object, false)?;
    shared.publish(&store, change);
    Ok(object_response(req, StatusCode::CREATED, &stored))
}

/// The object a PUT or PATCH addresses.
#[derive(Clone, Copy)]
struct ItemRef<'a> {
    rt: &'static ResourceType,
    namespace: &'a str,
    name: &'a str,
}

impl<'a> ItemRef<'a> {
    fn new(rt: &'static ResourceType, namespace: &'a str, name: &'a str) -> Self {
        Self { rt, namespace, name }
    }
}

fn replace(shared: &Shared, req: &Req, item: ItemRef<'_>) -> Result<Response, ApiError> {
    let ItemRef { rt, namespace, name } = item;
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
    shared.publish(&store, change);
    Ok(object_response(req, StatusCode::OK, &stored))
}

fn patch(shared: &Shared, req: &Req, item: ItemRef<'_>) -> Result<Response, ApiError> {
    let ItemRef { rt, namespace, name } = item;
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
            let Some(manager) = req.param("fieldManager") else {
                return Err(ApiError::invalid(
                    rt,
                    name,
                    "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply \
                     patch",
                ));
            };
            let applied = serde_json::from_slice::<Value>(&req.body).map_err(|e| {
                ApiError::bad_request(format!(
                    "error decoding YAML: the fake accepts JSON apply configurations: {e}"
                ))
            })?;
            check_type(rt, &applied)?;
            check_namespace(rt, namespace, &applied)?;
            match current {
                None => {
                    let mut object = applied.clone();
                    state::ensure_metadata(&mut object).insert("name".into(), Value::from(name));
                    let (stored, change) = store.create(rt, namespace, object, false)?;
                    let owners = store.field_owners(state::meta_str(&stored, "uid"));
                    owners.insert(manager.to_string(), apply::fields_of(&applied));
                    shared.publish(&store, change);
                    return Ok(object_response(req, StatusCode::CREATED, &stored));
                }
                Some(mut object) => {
                    let uid = state::meta_str(&object, "uid").to_string();
                    apply::apply(&mut object, &applied, manager, store.field_owners(&uid));
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
    shared.publish(&store, change);
    Ok(object_response(req, StatusCode::OK, &stored))
}

/// The lifetime of a TokenRequest's token when it asks for none, and the least it may ask for (the API server's).
const DEFAULT_TOKEN_SECONDS: i64 = 3600;
const MIN_TOKEN_SECONDS: i64 = 600;

/// `GET`/`PUT`/`PATCH` of `/status`, `POST` of a ServiceAccount's `/token`.
fn subresource_request(
    shared: &Shared,
    req: &Req,
    item: ItemRef<'_>,
    subresource: &str,
    method: &Method,
) -> Result<Response, ApiError> {
    let ItemRef { rt, namespace, name } = item;
    match (subresource, method) {
        ("status", &Method::GET) => {
            let store = shared.store();
            let object = store
                .get(rt, namespace, name)
                .ok_or_else(|| ApiError::not_found(rt, name))?;
            Ok(object_response(req, StatusCode::OK, object))
        }
        ("status", &Method::PUT | &Method::PATCH) => {
            let mut store = shared.store();
            let mut object = store
                .get(rt, namespace, name)
                .cloned()
                .ok_or_else(|| ApiError::not_found(rt, name))?;
            let body = req.json_body()?;
            if *method == Method::PUT {
                object = body;
            } else if req.content_type.starts_with("application/json-patch+json") {
                let operations: json_patch::Patch = serde_json::from_value(body)
                    .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
                json_patch::patch(&mut object, &operations)
                    .map_err(|e| ApiError::invalid(rt, name, format!("the JSON patch cannot be applied: {e}")))?;
            } else {
                // Merge, strategic merge and apply all merge here (the fake's documented simplification).
                json_patch::merge(&mut object, &body);
            }
            let (stored, change) = store.replace_status(rt, namespace, name, object.get("status").cloned())?;
            shared.publish(&store, change);
            Ok(object_response(req, StatusCode::OK, &stored))
        }
        ("token", &Method::POST) => token_request(shared, req, item),
        _ => Err(method_not_allowed()),
    }
}

/// The TokenRequest API: a service-account token signed by the test issuer, for the audiences asked (or the
/// issuer's own), valid `expirationSeconds` (default one hour, at least ten minutes).
fn token_request(shared: &Shared, req: &Req, item: ItemRef<'_>) -> Result<Response, ApiError> {
    let ItemRef { rt, namespace, name } = item;
    if shared.store().get(rt, namespace, name).is_none() {
        return Err(ApiError::not_found(rt, name));
    }
    let body = req.json_body()?;
    let seconds = body["spec"]["expirationSeconds"]
        .as_i64()
        .unwrap_or(DEFAULT_TOKEN_SECONDS);
    if seconds < MIN_TOKEN_SECONDS {
        return Err(ApiError::invalid(
            rt,
            name,
            format!(
                "spec.expirationSeconds: Invalid value: {seconds}: may not specify a duration less than 10 minutes"
            ),
        ));
    }
    let issuer_guard = shared.token_issuer.lock().unwrap_or_else(|p| p.into_inner());
    let Some(issuer) = issuer_guard.as_ref() else {
        return Err(ApiError {
            code: 503,
            reason: "ServiceUnavailable",
            message: "the fake serves no TokenRequests: call FakeKube::serve_token_requests".into(),
            details: None,
        });
    };
    let mut audiences: Vec<String> = body["spec"]["audiences"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    if audiences.is_empty() {
        audiences.push(issuer.issuer().to_string());
    }
    let spec = SaTokenSpec {
        namespace,
        service_account: name,
        pod_name: "",
        pod_uid: "",
        audiences: audiences.clone(),
        ttl: Duration::from_secs(seconds.unsigned_abs()),
        issued_at: None,
    };
    let (mut claims, expiration) = issuer
        .sa_token_claims(&spec)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    // A token bound to no object: no `pod` claim.
    if let Some(kubernetes) = claims["kubernetes.io"].as_object_mut() {
        kubernetes.remove("pod");
    }
    let token = issuer
        .sign_claims(&claims)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let expiration = rfc3339_seconds(expiration).map_err(|e| ApiError::internal(e.to_string()))?;
    let answer = json!({
        "kind": "TokenRequest",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"name": name, "namespace": namespace, "creationTimestamp": null},
        "spec": {"audiences": audiences, "expirationSeconds": seconds, "boundObjectRef": null},
        "status": {"token": token, "expirationTimestamp": expiration},
    });
    Ok(json_response(StatusCode::CREATED, &answer))
}
