//! What must hold for any AdmissionReview body, checked by the `admission` fuzz target (`fuzz/`) and by the
//! replay of its corpus in `cargo test` (`tests/fuzz_corpus.rs`): the one place these properties are written.
//!
//! A body goes through the whole admission handler ([`crate::api::router`]), as kube-apiserver sends it, once
//! with proxy sidecars as containers and once as native sidecars. The answer must be a 400 with a reason, or a
//! 200 with an AdmissionReview for the request's uid whose JSON Patch, applied with `json-patch` to the pod as
//! sent, only adds: every field of the pod (those wisp does not model too) keeps its value, lists keep their
//! items in order. Admitting the patched pod again must add nothing (a reinvoked webhook).
//!
//! The ServiceAccount a pod names is looked up in [`NamedServiceAccounts`], which derives it from the name, so
//! that the fuzzer reaches every lookup outcome and token-expiration annotation through the body alone.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine;
use futures::future::BoxFuture;
use prometheus_client::registry::Registry;
use serde_json::Value;
use tower::ServiceExt;

use crate::api::{self, AppState};
use crate::metrics::Metrics;
use crate::mutate::{DEFAULT_PROXY_IMAGE, DEFAULT_PROXY_INIT_IMAGE, MutationConfig, ServiceAccountInfo};
use crate::sa_cache::{LookupError, ServiceAccountIndex, ServiceAccountLookup, ServiceAccountSource};

/// ServiceAccounts that exist or not by their name: `missing…` does not exist, `unreachable…` fails to load,
/// any other has a client id and, after its first `.`, the token-expiration annotation (`sa.86400`).
pub struct NamedServiceAccounts;

impl ServiceAccountSource for NamedServiceAccounts {
    fn fetch<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<ServiceAccountInfo>, LookupError>> {
        Box::pin(async move {
            if name.starts_with("missing") {
                return Ok(None);
            }
            if name.starts_with("unreachable") {
                return Err(LookupError {
                    namespace: namespace.to_string(),
                    name: name.to_string(),
                    reason: "HTTP 500 InternalError: etcd is down".to_string(),
                    access_denied: false,
                });
            }
            Ok(Some(ServiceAccountInfo {
                client_id: Some("11111111-1111-1111-1111-111111111111".to_string()),
                tenant_id: name
                    .contains("tenant")
                    .then(|| "22222222-2222-2222-2222-222222222222".to_string()),
                token_expiration: name.split_once('.').map(|(_, expiration)| expiration.to_string()),
            }))
        })
    }
}

fn router(native_sidecar: bool) -> axum::Router {
    let mut registry = Registry::default();
    let state = AppState {
        mutation: MutationConfig {
            tenant_id: "00000000-0000-0000-0000-000000000000".to_string(),
            authority_host: "https://login.microsoftonline.com/".to_string(),
            audience: "api://AzureADTokenExchange".to_string(),
            proxy_image: DEFAULT_PROXY_IMAGE.to_string(),
            proxy_init_image: DEFAULT_PROXY_INIT_IMAGE.to_string(),
            native_sidecar,
            proxy_log_level: "info".to_string(),
        },
        // A fresh index per input: what one input's lookups cached must not change the next input's answer.
        service_accounts: ServiceAccountLookup::new(
            Arc::new(ServiceAccountIndex::new()),
            Arc::new(NamedServiceAccounts),
        ),
        metrics: Metrics::register(&mut registry),
    };
    api::router(Arc::new(state))
}

thread_local! {
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime needs no resources that can be missing");
}

/// The handler's answer to `body`: HTTP status and body.
fn admit(native_sidecar: bool, body: &[u8]) -> (StatusCode, Vec<u8>) {
    let request = Request::post(api::MUTATE_PATH)
        .header("content-type", "application/json")
        .body(Body::from(body.to_vec()))
        .expect("a request with a fixed path and header is valid");
    RUNTIME.with(|runtime| {
        runtime.block_on(async {
            let response = router(native_sidecar)
                .oneshot(request)
                .await
                .expect("axum routers are infallible");
            let status = response.status();
            let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .expect("an in-memory body");
            (status, bytes.to_vec())
        })
    })
}

/// Runs `body` through the admission handler and panics, naming the property, when an answer is wrong.
pub fn check_admission(body: &[u8]) {
    for native_sidecar in [false, true] {
        let (status, answer) = admit(native_sidecar, body);
        if let Err(problem) = check_answer(native_sidecar, body, status, &answer) {
            panic!(
                "admission (native_sidecar: {native_sidecar}): {problem}\nanswer: {status} {}",
                String::from_utf8_lossy(&answer)
            );
        }
    }
}

fn check_answer(native_sidecar: bool, body: &[u8], status: StatusCode, answer: &[u8]) -> Result<(), String> {
    if status == StatusCode::BAD_REQUEST {
        return match std::str::from_utf8(answer) {
            Ok(reason) if reason.starts_with("request body is not an AdmissionReview") => Ok(()),
            _ => Err("a 400 must say why the body is not an AdmissionReview".into()),
        };
    }
    if status != StatusCode::OK {
        return Err(format!("status {status}: only 200 and 400 are answers"));
    }
    let review: Value = serde_json::from_slice(answer).map_err(|e| format!("the answer is not JSON: {e}"))?;
    if review["kind"] != "AdmissionReview" {
        return Err("the answer's kind is not AdmissionReview".into());
    }
    let response = &review["response"];
    let allowed = response["allowed"]
        .as_bool()
        .ok_or("response.allowed is not a boolean")?;
    let code = response["status"]["code"]
        .as_u64()
        .ok_or("response.status.code is not a number")?;
    let message = response["status"]["message"].as_str().unwrap_or("");
    let patch = response.get("patch");
    if !allowed {
        if !(code == 400 || code == 500) || message.is_empty() || patch.is_some() {
            return Err("a denial must carry code 400 or 500, a message and no patch".into());
        }
    } else if code != 200 || !message.is_empty() {
        return Err("an admission must carry code 200 and no message".into());
    }

    // The rest compares with the request as a JSON value. The handler reads only the fields it needs and skips
    // the others without checking more than their syntax (`pod.rs`), so a body `serde_json` refuses as a
    // value (a lone surrogate escape, a number out of range, deep nesting) can still be admitted; kube-apiserver
    // never sends one, and there is no pod value to patch.
    let Ok(request) = serde_json::from_slice::<Value>(body) else {
        return Ok(());
    };
    if review["apiVersion"] != request["apiVersion"] {
        return Err("the answer's apiVersion is not the request's".into());
    }
    if response["uid"] != request["request"]["uid"] {
        return Err("response.uid is not request.uid".into());
    }
    let Some(patch) = patch else {
        return Ok(());
    };
    if response["patchType"] != "JSONPatch" {
        return Err("a patch must come with patchType JSONPatch".into());
    }
    let patch = patch.as_str().ok_or("response.patch is not a string")?;
    let patch = base64::engine::general_purpose::STANDARD
        .decode(patch)
        .map_err(|e| format!("response.patch is not base64: {e}"))?;
    let operations: json_patch::Patch =
        serde_json::from_slice(&patch).map_err(|e| format!("response.patch is not a JSON Patch: {e}"))?;
    if operations.0.is_empty() {
        return Err("an empty patch must be left out".into());
    }
    if let Some(other) = operations
        .0
        .iter()
        .find(|op| !matches!(op, json_patch::PatchOperation::Add(_)))
    {
        return Err(format!("the patch may only add, it has {other:?}"));
    }
    let original = &request["request"]["object"];
    let mut patched = original.clone();
    json_patch::patch(&mut patched, &operations).map_err(|e| format!("the patch does not apply to the pod: {e}"))?;
    kept(original, &patched, "")?;

    // A reinvocation (reinvocationPolicy: IfNeeded) admits the patched pod: nothing more to add.
    let mut again = request.clone();
    again["request"]["object"] = patched;
    let again = serde_json::to_vec(&again).map_err(|e| format!("the patched review does not encode: {e}"))?;
    let (status, answer) = admit(native_sidecar, &again);
    let second: Value = serde_json::from_slice(&answer).map_err(|_| {
        format!(
            "the patched pod was answered {status} {}",
            String::from_utf8_lossy(&answer)
        )
    })?;
    if second["response"]["allowed"] != true || second["response"].get("patch").is_some() {
        return Err(format!(
            "admitting the patched pod again must add nothing, it answered {}",
            String::from_utf8_lossy(&answer)
        ));
    }
    Ok(())
}

/// Whether `patched` keeps everything of `original`: the same scalars, every key of an object, every item of a
/// list in order (items may be added around them). A `null` counts as absent, as the mutation reads it.
fn kept(original: &Value, patched: &Value, at: &str) -> Result<(), String> {
    match (original, patched) {
        (Value::Null, _) => Ok(()),
        (Value::Object(before), Value::Object(after)) => before.iter().try_for_each(|(key, value)| {
            let path = format!("{at}/{key}");
            match after.get(key) {
                Some(now) => kept(value, now, &path),
                None => Err(format!("the patch removed {path}")),
            }
        }),
        (Value::Array(before), Value::Array(after)) => {
            // Each item of `before` matched to the first remaining item of `after` that keeps it: if any order-
            // preserving match exists, this one does.
            let mut remaining = after.iter().enumerate();
            for (i, item) in before.iter().enumerate() {
                let path = format!("{at}/{i}");
                if !remaining.any(|(_, candidate)| kept(item, candidate, &path).is_ok()) {
                    return Err(format!("the patch changed or reordered {path}"));
                }
            }
            Ok(())
        }
        (before, after) if before == after => Ok(()),
        _ => Err(format!("the patch changed {at}")),
    }
}
