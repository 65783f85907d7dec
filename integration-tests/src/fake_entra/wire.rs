//! The fake Entra and IMDS on the wire: the routes (`/{tenant}/oauth2/v2.0/token`, OIDC discovery, JWKS; IMDS's
//! token path with its `Metadata: true` header), form and query parsing, and the bodies and status codes of
//! answers and errors (Entra's error JSON with trace and correlation ids and its timestamp).

use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Form, Json};
use http::{HeaderMap, Method, StatusCode, Uri};
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::state::{EntraFailure, Params, Service, fail, imds_token, tenant_not_found, token, utc_time};
use crate::traffic::{self, TrafficLayer, traffic_middleware};

/// Path of the token endpoint on IMDS.
pub const IMDS_TOKEN_PATH: &str = "/metadata/identity/oauth2/token";
/// Entra's router: every request counted (and faults applied) by path.
pub(super) fn entra_router(service: Arc<Service>) -> Router {
    Router::new()
        .fallback(entra_handler)
        .layer(axum::middleware::from_fn_with_state(
            TrafficLayer {
                traffic: service.traffic.clone(),
                key: |_, uri| uri.path().to_string(),
            },
            traffic_middleware,
        ))
        .with_state(service)
}

/// IMDS's router: requests counted as `imds:{path}`.
pub(super) fn imds_router(service: Arc<Service>) -> Router {
    Router::new()
        .route(IMDS_TOKEN_PATH, get(imds_handler))
        .layer(axum::middleware::from_fn_with_state(
            TrafficLayer {
                traffic: service.traffic.clone(),
                key: |_, uri| format!("imds:{}", uri.path()),
            },
            traffic_middleware,
        ))
        .with_state(service)
}

fn entra_time(t: OffsetDateTime) -> String {
    // Entra's `timestamp` field: `2026-01-02 03:04:05Z`.
    utc_time(t, ' ', "Z")
}

/// Entra's error body; trace ids count up, so bodies are assertable byte for byte.
pub(super) fn error_body(service: &Service, error: &str, code: u32, message: &str, correlation: Option<&str>) -> Value {
    let now = entra_time(OffsetDateTime::now_utc());
    let trace_id = service.next_trace_id();
    let correlation_id = correlation.map(str::to_string).unwrap_or_else(|| trace_id.clone());
    json!({
        "error": error,
        "error_description": format!(
            "AADSTS{code}: {message} Trace ID: {trace_id} Correlation ID: {correlation_id} Timestamp: {now}"
        ),
        "error_codes": [code],
        "timestamp": now,
        "trace_id": trace_id,
        "correlation_id": correlation_id,
        "error_uri": format!("https://{}/error?code={code}", service.host),
    })
}

fn respond(service: &Service, failure: EntraFailure, headers: &HeaderMap) -> Response {
    let correlation = headers.get("client-request-id").and_then(|v| v.to_str().ok());
    let body = error_body(service, failure.error, failure.code, &failure.message, correlation);
    (failure.status, Json(body)).into_response()
}

async fn entra_handler(
    State(inner): State<Arc<Service>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    form: Result<Form<Params>, axum::extract::rejection::FormRejection>,
) -> Response {
    let segments: Vec<&str> = uri.path().trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        [tenant, "oauth2", "v2.0", "token"] => {
            if method != Method::POST {
                let failure = fail(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    900561,
                    "The endpoint only accepts POST requests. Received a GET request.",
                );
                return respond(&inner, failure, &headers);
            }
            let params = form.map(|Form(p)| p).unwrap_or_default();
            match token(&inner, tenant, &params) {
                Ok(body) => (StatusCode::OK, Json(body)).into_response(),
                Err(failure) => respond(&inner, failure, &headers),
            }
        }
        [tenant, "v2.0", ".well-known", "openid-configuration"] if method == Method::GET => {
            if !inner.state().tenants.contains(*tenant) {
                return respond(&inner, tenant_not_found(tenant), &headers);
            }
            let base = format!("https://{}", traffic::host_with_port(&headers, &uri));
            Json(json!({
                "token_endpoint": format!("{base}/{tenant}/oauth2/v2.0/token"),
                "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
                "jwks_uri": format!("{base}/{tenant}/discovery/v2.0/keys"),
                "response_modes_supported": ["query", "fragment", "form_post"],
                "subject_types_supported": ["pairwise"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
                "scopes_supported": ["openid", "profile", "email", "offline_access"],
                "issuer": format!("{base}/{tenant}/v2.0"),
                "request_uri_parameter_supported": false,
                "authorization_endpoint": format!("{base}/{tenant}/oauth2/v2.0/authorize"),
                "tenant_region_scope": null,
            }))
            .into_response()
        }
        [_, "discovery", "v2.0", "keys"] | ["common", "discovery", "keys"] if method == Method::GET => {
            Json(inner.key.jwks()).into_response()
        }
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

fn imds_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        Json(json!({ "error": error, "error_description": description })),
    )
        .into_response()
}

async fn imds_handler(
    State(inner): State<Arc<Service>>,
    headers: HeaderMap,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    let metadata = headers.get("metadata").and_then(|v| v.to_str().ok());
    if !metadata.is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return imds_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Required metadata header not specified",
        );
    }
    match imds_token(&inner, &query) {
        Ok(body) => Json(body).into_response(),
        Err(refusal) => imds_error(refusal.status, &refusal.error, &refusal.description),
    }
}
