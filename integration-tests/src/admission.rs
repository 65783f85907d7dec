//! What kube-apiserver sends `wisp-webhook` and what it reads back, for the webhook's fault and load tests: a
//! labelled pod, its AdmissionReview, the POST over HTTPS trusting only the test CA (errors returned, not
//! panicked on, so that a load client can count them), and the exact response a pod of a ServiceAccount gets.

use base64::Engine;
use serde_json::{Value, json};

/// Where the projected token is mounted (upstream v1.5.1's layout).
pub const TOKEN_FILE: &str = "/var/run/secrets/azure/tokens/azure-identity-token";
/// The default tenant `WebhookLaunch` gives the webhook.
pub const WEBHOOK_TENANT: &str = "webhook-tenant";
/// The `service-account-token-expiration` annotation of [`service_account`].
pub const TOKEN_EXPIRATION: u32 = 7200;

/// An HTTPS client trusting only `ca_pem`, as kube-apiserver trusts the caBundle. One client holds one HTTP/2
/// connection per server, so a load of N connections uses N clients.
pub fn https_client(ca_pem: &str) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(ca_pem.as_bytes()).expect("CA PEM");
    reqwest::Client::builder()
        .tls_certs_only([ca])
        .no_proxy()
        .build()
        .expect("https client")
}

/// As [`https_client`], but every request opens a new connection (a new TLS handshake), as a freshly started
/// kube-apiserver replica does.
pub fn https_client_without_reuse(ca_pem: &str) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(ca_pem.as_bytes()).expect("CA PEM");
    reqwest::Client::builder()
        .tls_certs_only([ca])
        .no_proxy()
        .pool_max_idle_per_host(0)
        .build()
        .expect("https client")
}

/// A ServiceAccount in `namespace` with the client-id annotation and a token expiration of
/// [`TOKEN_EXPIRATION`].
pub fn service_account(namespace: &str, name: &str, client_id: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": name, "namespace": namespace, "annotations": {
            "azure.workload.identity/client-id": client_id,
            "azure.workload.identity/service-account-token-expiration": TOKEN_EXPIRATION.to_string()
        }}
    })
}

/// The CREATE review of an opted-in pod of one container running as `service_account` in `namespace`.
pub fn review(uid: &str, namespace: &str, service_account: &str) -> Value {
    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": format!("pod-{uid}"),
            "namespace": namespace,
            "labels": {"azure.workload.identity/use": "true"}
        },
        "spec": {"serviceAccountName": service_account, "containers": [{"name": "app", "image": "app:1"}]}
    });
    review_of(uid, namespace, pod)
}

/// The CREATE review of `pod` in `namespace`, as kube-apiserver sends it.
pub fn review_of(uid: &str, namespace: &str, pod: Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": {"username": "kubernetes-admin", "groups": ["system:masters", "system:authenticated"]},
            "object": pod,
            "oldObject": null,
            "dryRun": false
        }
    })
}

/// POSTs `review` to the webhook on `port`; the review response with its patch decoded into JSON, or why there is
/// none (a transport error, a status other than 200, a body that is not a review).
pub async fn post(https: &reqwest::Client, port: u16, review: &Value) -> Result<Value, String> {
    let response = https
        .post(format!("https://127.0.0.1:{port}/mutate-v1-pod"))
        .json(review)
        .send()
        .await
        .map_err(|e| format!("request failed: {e:?}"))?;
    let status = response.status().as_u16();
    let text = response.text().await.map_err(|e| format!("reading the body: {e:?}"))?;
    if status != 200 {
        return Err(format!("HTTP {status}: {text}"));
    }
    decoded_review(&text)
}

/// An AdmissionReview response body with its patch decoded into JSON. wisp writes base64 (as Go's []byte
/// encoding); an array of numbers is accepted too (kube-core's form, which the API server also takes).
pub fn decoded_review(text: &str) -> Result<Value, String> {
    let mut body: Value = serde_json::from_str(text).map_err(|e| format!("not JSON ({e}): {text}"))?;
    let bytes = match &body["response"]["patch"] {
        Value::Null => None,
        Value::String(b64) => Some(
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|e| format!("patch is not base64: {e}"))?,
        ),
        Value::Array(bytes) => Some(bytes.iter().map(|b| b.as_u64().unwrap_or(256) as u8).collect()),
        other => return Err(format!("patch is neither bytes nor base64: {other}")),
    };
    if let Some(bytes) = bytes {
        body["response"]["patch"] = serde_json::from_slice(&bytes).map_err(|e| format!("patch is not JSON: {e}"))?;
    }
    Ok(body)
}

/// The response to [`review`] for a ServiceAccount made by [`service_account`] with `client_id`.
pub fn mutated_response(uid: &str, client_id: &str) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": {
            "uid": uid,
            "allowed": true,
            "status": {"code": 200},
            "patchType": "JSONPatch",
            "patch": [
                {"op": "add", "path": "/spec/containers/0/env", "value": [
                    {"name": "AZURE_CLIENT_ID", "value": client_id},
                    {"name": "AZURE_TENANT_ID", "value": WEBHOOK_TENANT},
                    {"name": "AZURE_FEDERATED_TOKEN_FILE", "value": TOKEN_FILE},
                    {"name": "AZURE_AUTHORITY_HOST", "value": "https://login.microsoftonline.com/"}
                ]},
                {"op": "add", "path": "/spec/containers/0/volumeMounts", "value": [
                    {"name": "azure-identity-token", "mountPath": "/var/run/secrets/azure/tokens", "readOnly": true}
                ]},
                {"op": "add", "path": "/spec/volumes", "value": [{
                    "name": "azure-identity-token",
                    "projected": {"sources": [{"serviceAccountToken": {
                        "path": "azure-identity-token",
                        "expirationSeconds": TOKEN_EXPIRATION,
                        "audience": "api://AzureADTokenExchange"
                    }}]}
                }]}
            ]
        }
    })
}

/// A denial with `code` and `message`.
pub fn denied_response(uid: &str, code: u16, message: &str) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": {"uid": uid, "allowed": false, "status": {"code": code, "message": message}}
    })
}

/// The denial of a pod whose ServiceAccount does not exist.
pub fn not_found_response(uid: &str, namespace: &str, service_account: &str) -> Value {
    denied_response(
        uid,
        400,
        &format!(
            "serviceaccounts \"{service_account}\" not found in namespace \"{namespace}\"; create the ServiceAccount \
             before the pod or set spec.serviceAccountName"
        ),
    )
}
