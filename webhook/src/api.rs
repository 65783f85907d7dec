//! HTTP handlers: the admission endpoint, health, readiness and metrics.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use kube::core::admission::Operation;
use prometheus_client::registry::Registry;

use crate::metrics::{Metrics, Outcome};
use crate::mutate::{self, MutationConfig};
use crate::review::{RequestIn, ResponseOut, allow, deny, parse_review};
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
