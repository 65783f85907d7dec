//! HTTP handlers: the admission endpoint, health, readiness and metrics.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use kube::core::admission::Operation;
use prometheus_client::registry::Registry;
use serde::Deserialize;

use crate::metrics::{Metrics, Outcome};
use crate::mutate::{self, JsonPatch, MutationConfig};
use crate::pod::{self, Pod};
use crate::sa_cache::ServiceAccountLookup;
use crate::tls::CertResolver;

pub const MUTATE_PATH: &str = "/mutate-v1-pod";

/// Pods can be large (up to the API server's 3 MiB request limit); leave room for the review around it.
const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

pub struct AppState {
    pub mutation: MutationConfig,
    pub service_accounts: ServiceAccountLookup,
    pub metrics: Metrics,
}

/// The admission endpoint.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route(MUTATE_PATH, post(mutate_pod))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// What readiness depends on.
#[derive(Clone)]
pub struct Readiness {
    pub certs: Arc<CertResolver>,
    pub service_accounts: ServiceAccountLookup,
}

/// `/healthz` (the process serves) and `/readyz` (a certificate is loaded and the ServiceAccount cache synced).
pub fn health_router(readiness: Readiness) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(readiness)
}

async fn readyz(State(readiness): State<Readiness>) -> Response {
    if !readiness.certs.is_loaded() {
        (StatusCode::SERVICE_UNAVAILABLE, "certs are not ready yet").into_response()
    } else if !readiness.service_accounts.index().is_synced() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "serviceaccount cache has not synced yet",
        )
            .into_response()
    } else {
        "ok".into_response()
    }
}

/// `/metrics` in the Prometheus text format.
pub fn metrics_router(registry: Arc<Registry>) -> Router {
    Router::new().route("/metrics", get(metrics)).with_state(registry)
}

async fn metrics(State(registry): State<Arc<Registry>>) -> Response {
    match crate::metrics::encode(&registry) {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics").into_response(),
    }
}

async fn mutate_pod(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    let started = Instant::now();
    let (api_version, request) = match parse_review(&body) {
        Ok(parsed) => parsed,
        Err(message) => {
            state.metrics.count(Outcome::Error);
            tracing::warn!(error = %message, "malformed admission request");
            return (StatusCode::BAD_REQUEST, message).into_response();
        }
    };
    let namespace = request
        .namespace
        .as_deref()
        .filter(|n| !n.is_empty())
        .or_else(|| {
            request
                .object
                .as_ref()
                .and_then(|pod| pod.metadata.namespace.as_deref())
        })
        .unwrap_or_default();
    let (response, outcome) = review(&state, &request, namespace).await;
    state
        .metrics
        .observe_mutation(namespace, started.elapsed().as_secs_f64());
    state.metrics.count(outcome);
    (
        [(header::CONTENT_TYPE, "application/json")],
        response.encode(&api_version),
    )
        .into_response()
}

/// The request half of an AdmissionReview, borrowing from the body. The pod is read as a [`Pod`] view: only the
/// fields the mutation reads, none dropped from the patch (it only adds). Fields wisp does not read (userInfo,
/// oldObject, options) are skipped.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReviewIn<'a> {
    #[serde(default, borrow)]
    api_version: Cow<'a, str>,
    #[serde(default, borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    request: Option<RequestIn<'a>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RequestIn<'a> {
    #[serde(borrow)]
    uid: Cow<'a, str>,
    #[serde(borrow)]
    kind: GroupVersionKind<'a>,
    #[serde(default, borrow)]
    namespace: Option<Cow<'a, str>>,
    operation: Operation,
    /// `None` when absent or not an object.
    #[serde(default, borrow, deserialize_with = "pod::lenient")]
    object: Option<Pod<'a>>,
}

/// kube-core's `GroupVersionKind`, borrowed (same name and fields, so the same parse errors).
#[derive(Debug, Deserialize)]
struct GroupVersionKind<'a> {
    #[serde(borrow)]
    #[allow(dead_code)]
    group: Cow<'a, str>,
    #[serde(borrow)]
    #[allow(dead_code)]
    version: Cow<'a, str>,
    #[serde(borrow)]
    kind: Cow<'a, str>,
}

fn parse_review(body: &[u8]) -> Result<(Cow<'_, str>, RequestIn<'_>), String> {
    let review: ReviewIn =
        serde_json::from_slice(body).map_err(|e| format!("request body is not an AdmissionReview: {e}"))?;
    if review.kind != "AdmissionReview"
        || !matches!(
            review.api_version.as_ref(),
            "admission.k8s.io/v1" | "admission.k8s.io/v1beta1"
        )
    {
        return Err(format!(
            "request body is not an AdmissionReview: expected kind AdmissionReview and apiVersion admission.k8s.io/v1 or admission.k8s.io/v1beta1, got kind {:?} apiVersion {:?}",
            review.kind, review.api_version
        ));
    }
    let request = review
        .request
        .ok_or_else(|| "request body is not an AdmissionReview: field request is missing".to_string())?;
    Ok((review.api_version, request))
}

/// The response half of an AdmissionReview, written here rather than with kube-core's `AdmissionResponse`: that
/// type encodes the patch as a JSON array of numbers (kube-rs #1781), 3-4 times the size of the base64 that
/// kube-apiserver's own `[]byte` encoding uses, and that size dominated the cost of a response.
#[derive(Debug)]
struct ResponseOut<'a> {
    uid: &'a str,
    allowed: bool,
    /// As controller-runtime answers: `code` 200 when allowed, the denial's code and message otherwise.
    code: u16,
    message: String,
    /// Sent base64-encoded, with `patchType: JSONPatch`.
    patch: Option<JsonPatch>,
}

impl ResponseOut<'_> {
    /// The AdmissionReview as JSON, in the field order and encoding that `serde_json` gives the equivalent
    /// structs. Written by hand so that the base64 of the patch (most of the response) goes straight into the
    /// output, not through a `String` and `serde_json`'s escaping scan.
    fn encode(&self, api_version: &str) -> Vec<u8> {
        let patch_len = self.patch.as_ref().map_or(0, |p| p.as_bytes().len());
        let mut out = Vec::with_capacity(192 + self.uid.len() + self.message.len() + patch_len.div_ceil(3) * 4);
        out.extend_from_slice(br#"{"apiVersion":"#);
        json_string(&mut out, api_version);
        out.extend_from_slice(br#","kind":"AdmissionReview","response":{"uid":"#);
        json_string(&mut out, self.uid);
        out.extend_from_slice(if self.allowed {
            br#","allowed":true,"status":{"code":"#
        } else {
            br#","allowed":false,"status":{"code":"#
        });
        out.extend_from_slice(self.code.to_string().as_bytes());
        if !self.message.is_empty() {
            out.extend_from_slice(br#","message":"#);
            json_string(&mut out, &self.message);
        }
        out.push(b'}');
        if let Some(patch) = &self.patch {
            // The base64 alphabet needs no JSON escaping.
            out.extend_from_slice(br#","patchType":"JSONPatch","patch":""#);
            let start = out.len();
            out.resize(start + patch.as_bytes().len().div_ceil(3) * 4, 0);
            match base64::engine::general_purpose::STANDARD.encode_slice(patch.as_bytes(), &mut out[start..]) {
                Ok(written) => out.truncate(start + written),
                // The slice is sized for the padded encoding, so this does not happen; if it did, the answer must
                // still be whole rather than a panic.
                Err(_) => {
                    out.truncate(start);
                    out.extend_from_slice(
                        base64::engine::general_purpose::STANDARD
                            .encode(patch.as_bytes())
                            .as_bytes(),
                    );
                }
            }
            out.push(b'"');
        }
        out.extend_from_slice(b"}}");
        out
    }
}

/// `value` as a JSON string, escaped as `serde_json` escapes.
fn json_string(out: &mut Vec<u8>, value: &str) {
    // Serializing a str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, value);
}

fn allow<'a>(request: &'a RequestIn<'_>, patch: Option<JsonPatch>) -> ResponseOut<'a> {
    ResponseOut {
        uid: &request.uid,
        allowed: true,
        code: 200,
        message: String::new(),
        patch,
    }
}

fn deny<'a>(request: &'a RequestIn<'_>, code: u16, message: String) -> ResponseOut<'a> {
    ResponseOut {
        uid: &request.uid,
        allowed: false,
        code,
        message,
        patch: None,
    }
}

async fn review<'a>(state: &AppState, request: &'a RequestIn<'_>, namespace: &str) -> (ResponseOut<'a>, Outcome) {
    let pod = match &request.object {
        Some(pod) if request.kind.kind == "Pod" => pod,
        _ => {
            let message = format!(
                "this webhook admits Pods; request.kind is {:?} and request.object is {}",
                request.kind.kind,
                if request.object.is_some() {
                    "an object"
                } else {
                    "missing"
                }
            );
            return (deny(request, 400, message), Outcome::Error);
        }
    };
    // The MutatingWebhookConfiguration selects CREATE of labelled pods; checked again so that a broader
    // configuration neither mutates other pods nor patches a running pod's immutable spec.
    if request.operation != Operation::Create || !pod.is_opted_in() {
        return (allow(request, None), Outcome::Unchanged);
    }
    let pod_name = pod.display_name();
    let sa_name = pod.service_account_name();
    let sa = match state.service_accounts.get(namespace, sa_name).await {
        Ok(Some(sa)) => sa,
        Ok(None) => {
            let message = format!(
                "serviceaccounts \"{sa_name}\" not found in namespace \"{namespace}\"; create the ServiceAccount before the pod or set spec.serviceAccountName"
            );
            tracing::info!(pod = %pod_name, namespace, denial = %message, "pod denied");
            return (deny(request, 400, message), Outcome::Denied);
        }
        Err(e) => {
            tracing::error!(pod = %pod_name, namespace, error = %e, "serviceaccount lookup failed");
            return (deny(request, 400, e.to_string()), Outcome::Error);
        }
    };
    match mutate::mutate_pod(pod, &sa, &state.mutation) {
        Ok(patch) if patch.is_empty() => {
            tracing::debug!(pod = %pod_name, namespace, "pod already mutated");
            (allow(request, None), Outcome::Unchanged)
        }
        Ok(patch) => {
            tracing::debug!(pod = %pod_name, namespace, ops = patch.len(), "pod mutated");
            (allow(request, Some(patch)), Outcome::Mutated)
        }
        Err(denial) => {
            tracing::info!(pod = %pod_name, namespace, denial = %denial, "pod denied");
            let outcome = if denial.code() >= 500 {
                Outcome::Error
            } else {
                Outcome::Denied
            };
            (deny(request, denial.code(), denial.to_string()), outcome)
        }
    }
}
