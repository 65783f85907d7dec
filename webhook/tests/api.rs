//! The HTTP layer driven in-process with `router().oneshot(request)`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine;
use futures::future::BoxFuture;
use http_body_util::BodyExt;
use pretty_assertions::assert_eq;
use prometheus_client::registry::Registry;
use rstest::rstest;
use serde_json::{Value, json};
use tower::ServiceExt;
use wisp_webhook::api::{self, AppState, Readiness};
use wisp_webhook::metrics::Metrics;
use wisp_webhook::mutate::{MutationConfig, ServiceAccountInfo};
use wisp_webhook::sa_cache::{LookupError, ServiceAccountIndex, ServiceAccountLookup, ServiceAccountSource};
use wisp_webhook::tls::{CertResolver, certified_key};

const TOKEN_FILE: &str = "/var/run/secrets/azure/tokens/azure-identity-token";

/// Live reads answered from a table; `ns/broken` fails like an unreachable API server.
struct Live(HashMap<(String, String), ServiceAccountInfo>);

impl ServiceAccountSource for Live {
    fn fetch<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<ServiceAccountInfo>, LookupError>> {
        let result = if name == "broken" || name == "forbidden" {
            let access_denied = name == "forbidden";
            Err(LookupError {
                namespace: namespace.to_string(),
                name: name.to_string(),
                reason: if access_denied {
                    "HTTP 403 Forbidden: serviceaccounts \"forbidden\" is forbidden".to_string()
                } else {
                    "connection refused".to_string()
                },
                access_denied,
            })
        } else {
            Ok(self.0.get(&(namespace.to_string(), name.to_string())).cloned())
        };
        Box::pin(async move { result })
    }
}

struct Harness {
    router: axum::Router,
    registry: Arc<Registry>,
    index: Arc<ServiceAccountIndex>,
    lookup: ServiceAccountLookup,
}

fn harness() -> Harness {
    let index = Arc::new(ServiceAccountIndex::new());
    index.apply(
        "ns1",
        "sa",
        ServiceAccountInfo {
            client_id: Some("client-id".to_string()),
            tenant_id: Some("sa-tenant".to_string()),
            token_expiration: Some("4800".to_string()),
        },
    );
    let live = Live(HashMap::from([(
        ("ns1".to_string(), "late".to_string()),
        ServiceAccountInfo {
            client_id: Some("late-client".to_string()),
            ..Default::default()
        },
    )]));
    let lookup = ServiceAccountLookup::new(index.clone(), Arc::new(live));
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let state = AppState {
        mutation: MutationConfig {
            tenant_id: "webhook-tenant".to_string(),
            authority_host: "https://login.microsoftonline.com/".to_string(),
            audience: "api://AzureADTokenExchange".to_string(),
            proxy_image: "proxy:v1".to_string(),
            proxy_init_image: "proxy-init:v1".to_string(),
            native_sidecar: false,
            proxy_log_level: "info".to_string(),
        },
        service_accounts: lookup.clone(),
        metrics,
    };
    Harness {
        router: api::router(Arc::new(state)),
        registry: Arc::new(registry),
        index,
        lookup,
    }
}

fn pod(sa: &str, annotations: Value, spec_extra: Value) -> Value {
    let mut spec = json!({"serviceAccountName": sa, "containers": [{"name": "app", "image": "app:1"}]});
    if let (Some(spec), Value::Object(extra)) = (spec.as_object_mut(), spec_extra) {
        spec.extend(extra);
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "pod", "labels": {"azure.workload.identity/use": "true"}, "annotations": annotations},
        "spec": spec
    })
}

fn review(api_version: &str, pod: Value) -> Value {
    json!({
        "apiVersion": api_version,
        "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "ns1",
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller", "groups": ["system:authenticated"]},
            "object": pod,
            "oldObject": null,
            "dryRun": false,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"}
        }
    })
}

async fn send(router: &axum::Router, method: &str, path: &str, body: Vec<u8>) -> (StatusCode, Vec<u8>) {
    let response = router
        .clone()
        .oneshot(
            Request::builder()
                .method(method)
                .uri(path)
                .header("content-type", "application/json")
                .body(Body::from(body))
                .unwrap(),
        )
        .await
        .unwrap();
    let status = response.status();
    (
        status,
        response.into_body().collect().await.unwrap().to_bytes().to_vec(),
    )
}

async fn admit(h: &Harness, review: &Value) -> Value {
    let (status, body) = send(&h.router, "POST", "/mutate-v1-pod", serde_json::to_vec(review).unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap()
}

/// The patch bytes as base64 (what wisp and Go webhooks write) or as an array of byte values (kube-core 5's
/// `AdmissionResponse`); the API server accepts both.
fn patch_bytes(patch: &Value) -> Vec<u8> {
    match patch {
        Value::Array(bytes) => bytes.iter().map(|b| b.as_u64().unwrap() as u8).collect(),
        Value::String(b64) => base64::engine::general_purpose::STANDARD.decode(b64).unwrap(),
        other => panic!("unexpected patch encoding {other}"),
    }
}

/// Replaces `response.patch` by the decoded JSON Patch, and returns the pod with the patch applied.
fn decode_patch(response: &mut Value, pod: &Value) -> Value {
    let bytes = patch_bytes(&response["response"]["patch"]);
    let ops: Value = serde_json::from_slice(&bytes).unwrap();
    let patch: json_patch::Patch = serde_json::from_value(ops.clone()).unwrap();
    response["response"]["patch"] = ops;
    let mut out = pod.clone();
    json_patch::patch(&mut out, &patch).unwrap();
    out
}

#[rstest]
#[case("admission.k8s.io/v1")]
#[case("admission.k8s.io/v1beta1")]
#[tokio::test]
async fn mutates_from_the_cache(#[case] api_version: &str) {
    let h = harness();
    let input = pod("sa", json!({}), json!({}));
    let mut response = admit(&h, &review(api_version, input.clone())).await;
    assert!(
        response["response"]["patch"].is_string(),
        "wisp writes the patch as base64"
    );
    let patched = decode_patch(&mut response, &input);
    let env = json!([
        {"name": "AZURE_CLIENT_ID", "value": "client-id"},
        {"name": "AZURE_TENANT_ID", "value": "sa-tenant"},
        {"name": "AZURE_FEDERATED_TOKEN_FILE", "value": TOKEN_FILE},
        {"name": "AZURE_AUTHORITY_HOST", "value": "https://login.microsoftonline.com/"}
    ]);
    let mount = json!({"name": "azure-identity-token", "mountPath": "/var/run/secrets/azure/tokens", "readOnly": true});
    let volume = json!({"name": "azure-identity-token", "projected": {"sources": [{"serviceAccountToken": {
        "path": "azure-identity-token", "expirationSeconds": 4800, "audience": "api://AzureADTokenExchange"}}]}});
    assert_eq!(
        response,
        json!({
            "apiVersion": api_version,
            "kind": "AdmissionReview",
            "response": {
                "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
                "allowed": true,
                "status": {"code": 200},
                "patchType": "JSONPatch",
                "patch": [
                    {"op": "add", "path": "/spec/containers/0/env", "value": env},
                    {"op": "add", "path": "/spec/containers/0/volumeMounts", "value": [mount]},
                    {"op": "add", "path": "/spec/volumes", "value": [volume]}
                ]
            }
        })
    );
    // Reinvocation: allowed, no patch at all.
    let again = admit(&h, &review(api_version, patched)).await;
    assert_eq!(
        again,
        json!({
            "apiVersion": api_version,
            "kind": "AdmissionReview",
            "response": {"uid": "705ab4f5-6393-11e8-b7cc-42010a800002", "allowed": true, "status": {"code": 200}}
        })
    );
}

#[tokio::test]
async fn cache_miss_reads_live_and_default_service_account_missing_is_denied() {
    let h = harness();
    let input = pod("late", json!({}), json!({}));
    let mut response = admit(&h, &review("admission.k8s.io/v1", input.clone())).await;
    let patched = decode_patch(&mut response, &input);
    assert_eq!(
        patched["spec"]["containers"][0]["env"],
        json!([
            {"name": "AZURE_CLIENT_ID", "value": "late-client"},
            {"name": "AZURE_TENANT_ID", "value": "webhook-tenant"},
            {"name": "AZURE_FEDERATED_TOKEN_FILE", "value": TOKEN_FILE},
            {"name": "AZURE_AUTHORITY_HOST", "value": "https://login.microsoftonline.com/"}
        ])
    );
    // Used for this admission only: the watch is the only writer of the cache.
    assert!(h.lookup.index().get("ns1", "late").is_none());

    let response = admit(&h, &review("admission.k8s.io/v1", pod("", json!({}), json!({})))).await;
    assert_eq!(
        response,
        json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "response": {
                "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
                "allowed": false,
                "status": {"code": 400, "message": "serviceaccounts \"default\" not found in namespace \"ns1\"; create the ServiceAccount before the pod or set spec.serviceAccountName"}
            }
        })
    );
}

#[rstest]
#[case::host_network(
    "sa", json!({"azure.workload.identity/inject-proxy-sidecar": "true"}), json!({"hostNetwork": true}),
    "hostNetwork is set to true, cannot inject proxy sidecar; remove the pod annotation azure.workload.identity/inject-proxy-sidecar or spec.hostNetwork"
)]
#[case::expiration(
    "sa", json!({"azure.workload.identity/service-account-token-expiration": "100"}), json!({}),
    "token expiration 100 not valid. Expected value to be between 3600 and 86400 (pod annotation azure.workload.identity/service-account-token-expiration)"
)]
#[case::api_down(
    "broken", json!({}), json!({}),
    "cannot read serviceaccount ns1/broken from the Kubernetes API: connection refused; the API server is unreachable or failing; create the pod again once it answers"
)]
#[case::api_refusal(
    "forbidden", json!({}), json!({}),
    "cannot read serviceaccount ns1/forbidden from the Kubernetes API: HTTP 403 Forbidden: serviceaccounts \"forbidden\" is forbidden; the webhook needs get, list and watch on serviceaccounts"
)]
#[tokio::test]
async fn denials_carry_code_and_message(
    #[case] sa: &str,
    #[case] annotations: Value,
    #[case] spec: Value,
    #[case] message: &str,
) {
    let h = harness();
    let response = admit(&h, &review("admission.k8s.io/v1", pod(sa, annotations, spec))).await;
    assert_eq!(
        response["response"],
        json!({
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "allowed": false,
            "status": {"code": 400, "message": message}
        })
    );
}

#[rstest]
#[case::not_json(b"{not json".to_vec(), "request body is not an AdmissionReview: key must be a string at line 1 column 2")]
#[case::wrong_kind(br#"{"apiVersion":"v1","kind":"Pod"}"#.to_vec(), "request body is not an AdmissionReview: expected kind AdmissionReview and apiVersion admission.k8s.io/v1 or admission.k8s.io/v1beta1, got kind \"Pod\" apiVersion \"v1\"")]
#[case::no_request(br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#.to_vec(), "request body is not an AdmissionReview: field request is missing")]
#[case::bad_request(br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u"}}"#.to_vec(), "request body is not an AdmissionReview: missing field `kind` at line 1 column 82")]
#[tokio::test]
async fn malformed_bodies_get_http_400(#[case] body: Vec<u8>, #[case] message: &str) {
    let h = harness();
    let (status, text) = send(&h.router, "POST", "/mutate-v1-pod", body).await;
    assert_eq!(
        (status, String::from_utf8(text).unwrap()),
        (StatusCode::BAD_REQUEST, message.to_string())
    );
}

#[tokio::test]
async fn review_without_a_pod_is_refused() {
    let h = harness();
    let mut r = review("admission.k8s.io/v1", Value::Null);
    r["request"]["kind"]["kind"] = json!("Deployment");
    let response = admit(&h, &r).await;
    assert_eq!(
        response["response"],
        json!({
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "allowed": false,
            "status": {"code": 400, "message": "this webhook admits Pods; request.kind is \"Deployment\" and request.object is missing"}
        })
    );
}

#[tokio::test]
async fn only_post_on_the_mutate_path() {
    let h = harness();
    assert_eq!(
        send(&h.router, "GET", "/mutate-v1-pod", Vec::new()).await.0,
        StatusCode::METHOD_NOT_ALLOWED
    );
    assert_eq!(
        send(&h.router, "POST", "/other", Vec::new()).await.0,
        StatusCode::NOT_FOUND
    );
}

fn counter_lines(text: &str) -> Vec<String> {
    let mut lines: Vec<String> = text
        .lines()
        .filter(|l| l.starts_with("wisp_webhook_admissions_total") || l.starts_with("azwi_mutation_request_count"))
        .map(str::to_string)
        .collect();
    lines.sort();
    lines
}

#[tokio::test]
async fn metrics_count_every_outcome() {
    let h = harness();
    let input = pod("sa", json!({}), json!({}));
    let mut first = admit(&h, &review("admission.k8s.io/v1", input.clone())).await;
    let patched = decode_patch(&mut first, &input);
    admit(&h, &review("admission.k8s.io/v1", patched)).await;
    admit(&h, &review("admission.k8s.io/v1", pod("missing", json!({}), json!({})))).await;
    send(&h.router, "POST", "/mutate-v1-pod", b"[]".to_vec()).await;

    let (status, body) = send(&api::metrics_router(h.registry.clone()), "GET", "/metrics", Vec::new()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        counter_lines(&String::from_utf8(body).unwrap()),
        vec![
            "azwi_mutation_request_count{namespace=\"ns1\"} 3",
            "wisp_webhook_admissions_total{outcome=\"denied\"} 1",
            "wisp_webhook_admissions_total{outcome=\"error\"} 1",
            "wisp_webhook_admissions_total{outcome=\"mutated\"} 1",
            "wisp_webhook_admissions_total{outcome=\"unchanged\"} 1",
        ]
    );
}

#[tokio::test]
async fn readiness_needs_certificate_and_synced_cache() {
    wisp_shared::runtime::install_crypto_provider();
    let h = harness();
    let certs = Arc::new(CertResolver::default());
    let health = api::health_router(Readiness {
        certs: certs.clone(),
        service_accounts: h.lookup.clone(),
    });
    let probe = |path: &'static str| {
        let health = health.clone();
        async move {
            let (status, body) = send(&health, "GET", path, Vec::new()).await;
            (status, String::from_utf8(body).unwrap())
        }
    };
    assert_eq!(probe("/healthz").await, (StatusCode::OK, "ok".to_string()));
    assert_eq!(
        probe("/readyz").await,
        (StatusCode::SERVICE_UNAVAILABLE, "certs are not ready yet".to_string())
    );
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let dir = std::path::Path::new("/certs");
    certs.set(
        certified_key(
            &dir.join("tls.crt"),
            cert.pem().as_bytes(),
            &dir.join("tls.key"),
            key.serialize_pem().as_bytes(),
        )
        .unwrap(),
    );
    assert_eq!(
        probe("/readyz").await,
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "serviceaccount cache has not synced yet".to_string()
        )
    );
    h.index.replace_all([]);
    assert_eq!(probe("/readyz").await, (StatusCode::OK, "ok".to_string()));
}

#[rstest]
#[case::not_labelled(json!({"app": "x"}), "CREATE")]
#[case::update(json!({"azure.workload.identity/use": "true"}), "UPDATE")]
#[tokio::test]
async fn pods_outside_the_webhooks_scope_are_allowed_unchanged(#[case] labels: Value, #[case] operation: &str) {
    let h = harness();
    // The ServiceAccount does not exist: it is not even looked up.
    let mut input = pod("missing", json!({}), json!({}));
    input["metadata"]["labels"] = labels;
    let mut r = review("admission.k8s.io/v1", input);
    r["request"]["operation"] = json!(operation);
    let response = admit(&h, &r).await;
    assert_eq!(
        response,
        json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "response": {"uid": "705ab4f5-6393-11e8-b7cc-42010a800002", "allowed": true, "status": {"code": 200}}
        })
    );
    assert!(h.index.get("ns1", "missing").is_none());
}
