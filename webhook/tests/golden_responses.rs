//! Byte-exact admission responses: every case sends a raw AdmissionReview body through the router and compares the
//! status, content type and body bytes with `tests/golden/admission.txt`. The file was recorded from the
//! implementation that parsed the pod into a `serde_json::Value` and serialized a `json_patch::Patch`; it pins the
//! response bytes (key order, escaping, base64) so that faster implementations keep them identical.
//!
//! `UPDATE_GOLDEN=1 cargo test -p wisp-webhook --test golden_responses` rewrites the file.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, header};
use base64::Engine;
use http_body_util::BodyExt;
use tower::ServiceExt;
use wisp_webhook::api;
use wisp_webhook::mutate::ServiceAccountInfo;
use wisp_webhook::sa_cache::ServiceAccountIndex;

mod fixtures;

const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/admission.txt");

fn router(native_sidecar: bool) -> axum::Router {
    let index = Arc::new(ServiceAccountIndex::new());
    let sa = |client: &str, tenant: Option<&str>, expiration: Option<&str>| ServiceAccountInfo {
        client_id: Some(client.to_string()),
        tenant_id: tenant.map(str::to_string),
        token_expiration: expiration.map(str::to_string),
    };
    index.apply(
        "bench",
        "workload",
        sa("11111111-1111-1111-1111-111111111111", None, None),
    );
    index.apply("ns1", "sa", sa("client-id", Some("sa-tenant"), Some("4800")));
    index.apply("ns1", "bad-expiration", sa("client-id", None, Some("1h")));
    index.apply("ns1", "no-client", ServiceAccountInfo::default());
    index.apply("ns1", "quoted\"name", sa("client \"quoted\" \u{e9}", None, None));
    index.apply("ns2", "default", sa("default-client", None, None));
    fixtures::admission_router(index, native_sidecar)
}

/// An AdmissionReview around `object` (raw JSON text, kept byte for byte).
fn review(namespace: &str, operation: &str, object: &str) -> String {
    format!(
        r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{{"uid":"705ab4f5-6393-11e8-b7cc-42010a800002","kind":{{"group":"","version":"v1","kind":"Pod"}},"resource":{{"group":"","version":"v1","resource":"pods"}},"namespace":"{namespace}","operation":"{operation}","userInfo":{{"username":"system:serviceaccount:kube-system:replicaset-controller","groups":["system:authenticated"]}},"object":{object},"oldObject":null,"dryRun":false,"options":{{"kind":"CreateOptions","apiVersion":"meta.k8s.io/v1"}}}}}}"#
    )
}

/// A pod in namespace ns1 opted in, with `annotations` and `spec` (raw JSON text).
fn pod(annotations: &str, spec: &str) -> String {
    format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"pod","namespace":"ns1","labels":{{"azure.workload.identity/use":"true"}},"annotations":{annotations}}},"spec":{spec}}}"#
    )
}

const BENCH_POD: &str = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"generateName":"api-7d9f8c6b5d-","namespace":"bench","labels":{"app":"api","azure.workload.identity/use":"true"}},"spec":{"serviceAccountName":"workload","initContainers":[{"name":"migrate","image":"api:1.2.3","args":["migrate"]}],"containers":[{"name":"api","image":"api:1.2.3","ports":[{"containerPort":8080,"protocol":"TCP"}],"env":[{"name":"LOG_LEVEL","value":"info"}],"volumeMounts":[{"name":"config","mountPath":"/etc/api"}],"resources":{"requests":{"cpu":"100m","memory":"128Mi"}}},{"name":"metrics","image":"exporter:0.9"}],"volumes":[{"name":"config","configMap":{"name":"api"}}]}}"#;

const TOKEN_VOLUME: &str = r#"{"name":"azure-identity-token","projected":{"sources":[{"serviceAccountToken":{"path":"azure-identity-token","expirationSeconds":3600,"audience":"api://AzureADTokenExchange"}}]}}"#;

/// (case name, native sidecars, request body)
fn cases() -> Vec<(String, bool, String)> {
    let mut cases: Vec<(String, bool, String)> = Vec::new();
    let mut case = |name: &str, native: bool, body: String| cases.push((name.to_string(), native, body));
    let sa = r#""serviceAccountName":"sa""#;
    let proxy = r#"{"azure.workload.identity/inject-proxy-sidecar":"true"}"#;

    case("bench pod", false, review("bench", "CREATE", BENCH_POD));
    case(
        "bench pod, namespace from the pod",
        false,
        review("", "CREATE", BENCH_POD),
    );
    case(
        "deployment pod with owner references",
        true,
        review(
            "bench",
            "CREATE",
            r#"{"apiVersion":"v1","kind":"Pod","metadata":{"generateName":"api-7d9f8c6b5d-","namespace":"bench","labels":{"app":"api","azure.workload.identity/use":"true","pod-template-hash":"7d9f8c6b5d"},"annotations":{},"ownerReferences":[{"apiVersion":"apps/v1","kind":"ReplicaSet","name":"api-7d9f8c6b5d","uid":"6f1c","controller":true}]},"spec":{"serviceAccountName":"workload","initContainers":[{"name":"migrate","image":"api:1.2.3","args":["migrate"],"resources":{}}],"containers":[{"name":"api","image":"api:1.2.3","ports":[{"containerPort":8080,"protocol":"TCP"}],"env":[{"name":"LOG_LEVEL","value":"info"},{"name":"PORT","value":"8080"}],"volumeMounts":[{"name":"config","mountPath":"/etc/api"},{"name":"kube-api-access-x7k2p","readOnly":true,"mountPath":"/var/run/secrets/kubernetes.io/serviceaccount"}],"resources":{"requests":{"cpu":"100m","memory":"128Mi"}}},{"name":"metrics","image":"exporter:0.9","resources":{}}],"volumes":[{"name":"config","configMap":{"name":"api"}},{"name":"kube-api-access-x7k2p","projected":{"sources":[{"serviceAccountToken":{"expirationSeconds":3607,"path":"token"}},{"configMap":{"name":"kube-root-ca.crt","items":[{"key":"ca.crt","path":"ca.crt"}]}}],"defaultMode":420}}],"restartPolicy":"Always","terminationGracePeriodSeconds":30,"dnsPolicy":"ClusterFirst"}}"#,
        ),
    );
    case(
        "service account tenant and expiration",
        false,
        review(
            "ns1",
            "CREATE",
            &pod("{}", &format!(r#"{{{sa},"containers":[{{"name":"app"}}]}}"#)),
        ),
    );
    case(
        "pod expiration overrides",
        false,
        review(
            "ns1",
            "CREATE",
            &pod(
                r#"{"azure.workload.identity/service-account-token-expiration":"86400"}"#,
                &format!(r#"{{{sa},"containers":[{{"name":"app"}}]}}"#),
            ),
        ),
    );
    case(
        "service account without client id",
        false,
        review(
            "ns1",
            "CREATE",
            &pod(
                "{}",
                r#"{"serviceAccountName":"no-client","containers":[{"name":"app"}]}"#,
            ),
        ),
    );
    case(
        "escaped names and values",
        false,
        review(
            "ns1",
            "CREATE",
            r#"{"metadata":{"name":"p\u006fd","labels":{"azure.workload.identity/\u0075se":"tr\u0075e"},"annotations":{"azure.workload.identity/skip-containers":"sk\u0069p"}},"spec":{"serviceAccountName":"quoted\"name","containers":[{"name":"\u0061pp","env":[{"name":"AZURE_CLIENT_\u0049D","value":"mine"}]},{"name":"skip"}]}}"#,
        ),
    );
    case(
        "existing env, mounts and volumes",
        false,
        review(
            "ns1",
            "CREATE",
            &pod(
                "{}",
                &format!(
                    r#"{{{sa},"containers":[{{"name":"app","env":[{{"name":"A","value":"1"}},{{"name":"AZURE_TENANT_ID","value":"mine"}}],"volumeMounts":[{{"name":"data","mountPath":"/data"}}]}}],"volumes":[{{"name":"data","emptyDir":{{}}}}]}}"#
                ),
            ),
        ),
    );
    case(
        "existing token mount and projected token source",
        false,
        review(
            "ns1",
            "CREATE",
            &pod(
                "{}",
                &format!(
                    r#"{{{sa},"containers":[{{"name":"app","volumeMounts":[{{"name":"azure-identity-token","mountPath":"/elsewhere"}}]}}],"volumes":[{{"name":"custom","projected":{{"sources":[{{"serviceAccountToken":{{"path":"azure-identity-token"}}}}]}}}}]}}"#
                ),
            ),
        ),
    );
    case(
        "empty env and mount lists, null init containers",
        false,
        review(
            "ns1",
            "CREATE",
            &pod(
                "{}",
                &format!(
                    r#"{{{sa},"initContainers":null,"containers":[{{"name":"app","env":[],"volumeMounts":null}}],"volumes":[]}}"#
                ),
            ),
        ),
    );
    case(
        "volumes of any shape",
        false,
        review(
            "ns1",
            "CREATE",
            &pod(
                "{}",
                &format!(
                    r#"{{{sa},"containers":[{{"name":"app","env":[1,{{"value":"x"}},{{"name":7}}]}}],"volumes":[1,null,"x",{{"name":"v","projected":{{"sources":"none"}}}}]}}"#
                ),
            ),
        ),
    );
    case(
        "no containers at all",
        false,
        review("ns1", "CREATE", &pod("{}", &format!(r#"{{{sa}}}"#))),
    );
    case(
        "skip containers",
        false,
        review(
            "ns1",
            "CREATE",
            &pod(
                r#"{"azure.workload.identity/skip-containers":"init; side ;"}"#,
                &format!(
                    r#"{{{sa},"initContainers":[{{"name":"init","env":"not checked when skipped"}}],"containers":[{{"name":"app"}},{{"name":"side"}}]}}"#
                ),
            ),
        ),
    );
    case(
        "duplicate keys, the last one counts",
        false,
        review(
            "ns1",
            "CREATE",
            r#"{"metadata":{"name":"first","labels":{"azure.workload.identity/use":"false"},"name":"second","labels":{"azure.workload.identity/use":"true"}},"spec":{"containers":5,"serviceAccountName":"other","serviceAccountName":"sa","containers":[{"name":"a","env":"x","env":[{"name":"AZURE_CLIENT_ID"}]}]}}"#,
        ),
    );
    case(
        "duplicate metadata, not opted in",
        false,
        review(
            "ns1",
            "CREATE",
            r#"{"metadata":{"labels":{"azure.workload.identity/use":"true"}},"metadata":{},"spec":{"containers":[{"name":"a"}]}}"#,
        ),
    );
    for native in [false, true] {
        let kind = if native { "native" } else { "regular" };
        case(
            &format!("proxy sidecar, {kind}"),
            native,
            review(
                "ns1",
                "CREATE",
                &pod(
                    proxy,
                    &format!(
                        r#"{{{sa},"initContainers":[{{"name":"init"}}],"containers":[{{"name":"app"}}],"volumes":[{TOKEN_VOLUME}]}}"#
                    ),
                ),
            ),
        );
        case(
            &format!("proxy sidecar on port 9000 without init containers, {kind}"),
            native,
            review(
                "ns1",
                "CREATE",
                &pod(
                    r#"{"azure.workload.identity/inject-proxy-sidecar":" TRUE ","azure.workload.identity/proxy-sidecar-port":"9000"}"#,
                    &format!(r#"{{{sa},"containers":[{{"name":"app"}}]}}"#),
                ),
            ),
        );
        case(
            &format!("proxy sidecar skipped, no containers, {kind}"),
            native,
            review(
                "ns1",
                "CREATE",
                &pod(
                    r#"{"azure.workload.identity/inject-proxy-sidecar":"true","azure.workload.identity/skip-containers":"azwi-proxy;azwi-proxy-init"}"#,
                    &format!(r#"{{{sa}}}"#),
                ),
            ),
        );
        case(
            &format!("proxy containers already present, {kind}"),
            native,
            review(
                "ns1",
                "CREATE",
                &pod(
                    proxy,
                    &format!(
                        r#"{{{sa},"initContainers":[{{"name":"azwi-proxy-init"}},{{"name":"azwi-proxy"}}],"containers":[{{"name":"azwi-proxy"}},{{"name":"app"}}]}}"#
                    ),
                ),
            ),
        );
    }
    case(
        "proxy annotation false",
        false,
        review(
            "ns1",
            "CREATE",
            &pod(
                r#"{"azure.workload.identity/inject-proxy-sidecar":"false"}"#,
                &format!(r#"{{{sa},"containers":[{{"name":"app"}}]}}"#),
            ),
        ),
    );
    case(
        "secret provider class",
        false,
        review(
            "ns1",
            "CREATE",
            &pod(
                r#"{"azure.workload.identity/secret-provider-class":" my-spc ","azure.workload.identity/secrets-mount-path":"/etc/secrets"}"#,
                &format!(r#"{{{sa},"initContainers":[{{"name":"init"}}],"containers":[{{"name":"app"}}]}}"#),
            ),
        ),
    );
    case(
        "secret provider class with existing volume and skipped container",
        false,
        review(
            "ns1",
            "CREATE",
            &pod(
                r#"{"azure.workload.identity/secret-provider-class":"spc","azure.workload.identity/skip-containers":"tool"}"#,
                &format!(
                    r#"{{{sa},"containers":[{{"name":"app"}},{{"name":"tool"}}],"volumes":[{{"name":"secrets-store-inline","csi":{{"driver":"secrets-store.csi.k8s.io","volumeAttributes":{{"secretProviderClass":"other"}}}}}}]}}"#
                ),
            ),
        ),
    );
    case(
        "secret provider class and proxy, native",
        true,
        review(
            "ns1",
            "CREATE",
            &pod(
                r#"{"azure.workload.identity/secret-provider-class":"spc","azure.workload.identity/inject-proxy-sidecar":"true"}"#,
                &format!(r#"{{{sa},"containers":[{{"name":"app"}}]}}"#),
            ),
        ),
    );
    // Denials.
    for (name, annotations, spec) in [
        (
            "denied: pod expiration syntax",
            r#"{"azure.workload.identity/service-account-token-expiration":"3600s"}"#,
            r#"{"serviceAccountName":"sa"}"#,
        ),
        (
            "denied: service account expiration syntax",
            "{}",
            r#"{"serviceAccountName":"bad-expiration"}"#,
        ),
        (
            "denied: expiration range",
            r#"{"azure.workload.identity/service-account-token-expiration":"3599"}"#,
            r#"{"serviceAccountName":"sa"}"#,
        ),
        (
            "denied: proxy with host network",
            r#"{"azure.workload.identity/inject-proxy-sidecar":"true","azure.workload.identity/service-account-token-expiration":"1"}"#,
            r#"{"serviceAccountName":"sa","hostNetwork":true}"#,
        ),
        (
            "denied: proxy port",
            r#"{"azure.workload.identity/inject-proxy-sidecar":"true","azure.workload.identity/proxy-sidecar-port":"0"}"#,
            r#"{"serviceAccountName":"sa"}"#,
        ),
        (
            "denied: empty secret provider class",
            r#"{"azure.workload.identity/secret-provider-class":" "}"#,
            r#"{"serviceAccountName":"sa"}"#,
        ),
        (
            "denied: relative secrets mount path",
            r#"{"azure.workload.identity/secret-provider-class":"spc","azure.workload.identity/secrets-mount-path":"mnt\"x"}"#,
            r#"{"serviceAccountName":"sa"}"#,
        ),
        (
            "denied: containers not a list",
            "{}",
            r#"{"serviceAccountName":"sa","containers":{"name":"app"}}"#,
        ),
        (
            "denied: init containers not objects",
            "{}",
            r#"{"serviceAccountName":"sa","initContainers":[{"name":"a"},"b"],"containers":7}"#,
        ),
        (
            "denied: env not a list",
            "{}",
            r#"{"serviceAccountName":"sa","containers":[{"name":"ok"},{"name":"app","env":"X=1","volumeMounts":1}],"volumes":{}}"#,
        ),
        (
            "denied: volume mounts not a list",
            "{}",
            r#"{"serviceAccountName":"sa","initContainers":[{"name":"app","volumeMounts":{}}]}"#,
        ),
        (
            "denied: volumes not a list",
            "{}",
            r#"{"serviceAccountName":"sa","containers":[{"name":"app"}],"volumes":{}}"#,
        ),
        (
            "denied: service account not found",
            "{}",
            r#"{"serviceAccountName":"missing","containers":[{"name":"app"}]}"#,
        ),
        (
            "denied: default service account not found",
            "{}",
            r#"{"serviceAccountName":"","containers":[{"name":"app"}]}"#,
        ),
    ] {
        case(name, false, review("ns1", "CREATE", &pod(annotations, spec)));
    }
    case(
        "denied: spec not an object",
        false,
        review(
            "ns2",
            "CREATE",
            r#"{"metadata":{"labels":{"azure.workload.identity/use":"true"}},"spec":[{"serviceAccountName":"sa"}]}"#,
        ),
    );
    case(
        "denied: no spec",
        false,
        review(
            "ns2",
            "CREATE",
            r#"{"metadata":{"labels":{"azure.workload.identity/use":"true"}}}"#,
        ),
    );
    // Not mutated.
    case(
        "reinvocation of the bench pod",
        false,
        review(
            "bench",
            "CREATE",
            r#"{"apiVersion":"v1","kind":"Pod","metadata":{"generateName":"api-7d9f8c6b5d-","namespace":"bench","labels":{"app":"api","azure.workload.identity/use":"true"}},"spec":{"serviceAccountName":"workload","initContainers":[{"name":"migrate","image":"api:1.2.3","args":["migrate"],"env":[{"name":"AZURE_CLIENT_ID","value":"1"},{"name":"AZURE_TENANT_ID","value":"2"},{"name":"AZURE_FEDERATED_TOKEN_FILE","value":"3"},{"name":"AZURE_AUTHORITY_HOST","value":"4"}],"volumeMounts":[{"name":"azure-identity-token","mountPath":"/var/run/secrets/azure/tokens","readOnly":true}]}],"containers":[{"name":"api","env":[{"name":"AZURE_CLIENT_ID","value":"1"},{"name":"AZURE_TENANT_ID","value":"2"},{"name":"AZURE_FEDERATED_TOKEN_FILE","value":"3"},{"name":"AZURE_AUTHORITY_HOST","value":"4"}],"volumeMounts":[{"name":"azure-identity-token","mountPath":"/x"}]}],"volumes":[{"name":"azure-identity-token","projected":{"sources":[]}}]}}"#,
        ),
    );
    for (name, labels) in [
        ("not opted in: no label", r#"{"app":"x"}"#),
        ("not opted in: True", r#"{"azure.workload.identity/use":"True"}"#),
        ("not opted in: boolean", r#"{"azure.workload.identity/use":true}"#),
        (
            "not opted in: labels not an object",
            r#"["azure.workload.identity/use"]"#,
        ),
    ] {
        case(
            name,
            false,
            review(
                "ns1",
                "CREATE",
                &format!(r#"{{"metadata":{{"labels":{labels}}},"spec":{{"serviceAccountName":"missing"}}}}"#),
            ),
        );
    }
    case("update is not mutated", false, review("ns1", "UPDATE", BENCH_POD));
    case("object null", false, review("ns1", "CREATE", "null"));
    case(
        "object an array",
        false,
        review("ns1", "CREATE", r#"[{"metadata":{}}]"#),
    );
    case("object a string", false, review("ns1", "CREATE", r#""pod""#));
    case(
        "not a pod",
        false,
        review("ns1", "CREATE", BENCH_POD).replace(r#""kind":"Pod"}"#, r#""kind":"Deployment"}"#),
    );
    case(
        "uid with escapes",
        false,
        review("bench", "CREATE", BENCH_POD).replace("705ab4f5-6393", r#"705ab4f5\"\u00e9\n-6393"#),
    );
    case(
        "v1beta1",
        false,
        review("bench", "CREATE", BENCH_POD).replace("admission.k8s.io/v1", "admission.k8s.io/v1beta1"),
    );
    // Malformed bodies.
    case("malformed: empty", false, String::new());
    case("malformed: not json", false, "{not json".to_string());
    case(
        "malformed: invalid json inside the pod",
        false,
        review("bench", "CREATE", r#"{"metadata":{"name":tru}}"#),
    );
    case(
        "malformed: truncated",
        false,
        review("bench", "CREATE", BENCH_POD)[..400].to_string(),
    );
    case(
        "malformed: trailing characters",
        false,
        format!("{} x", review("bench", "CREATE", BENCH_POD)),
    );
    case(
        "malformed: wrong kind",
        false,
        r#"{"apiVersion":"v1","kind":"Pod"}"#.to_string(),
    );
    case(
        "malformed: no request",
        false,
        r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#.to_string(),
    );
    case(
        "malformed: request without kind",
        false,
        r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u"}}"#.to_string(),
    );
    case(
        "malformed: uid not a string",
        false,
        review("bench", "CREATE", BENCH_POD).replace(r#""uid":"705ab4f5-6393-11e8-b7cc-42010a800002""#, r#""uid":5"#),
    );
    case(
        "malformed: unknown operation",
        false,
        review("bench", "PATCH", BENCH_POD),
    );
    cases
}

async fn respond(router: &axum::Router, body: String) -> (u16, String, Vec<u8>) {
    let response = router
        .clone()
        .oneshot(
            Request::builder()
                .method("POST")
                .uri(api::MUTATE_PATH)
                .header("content-type", "application/json")
                .body(Body::from(body))
                .unwrap(),
        )
        .await
        .unwrap();
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let bytes = response.into_body().collect().await.unwrap().to_bytes().to_vec();
    (status, content_type, bytes)
}

/// One section per case: the status and content type, the body as sent, and the decoded patch for a reader.
async fn render() -> String {
    let routers = [router(false), router(true)];
    let mut out = String::new();
    for (name, native, body) in cases() {
        let (status, content_type, bytes) = respond(&routers[usize::from(native)], body).await;
        let text = String::from_utf8(bytes).expect("responses are UTF-8");
        writeln!(out, "== {name} (native sidecar: {native})").unwrap();
        writeln!(out, "{status} {content_type}").unwrap();
        writeln!(out, "{text}").unwrap();
        if let Ok(review) = serde_json::from_str::<serde_json::Value>(&text)
            && let Some(patch) = review["response"]["patch"].as_str()
        {
            let decoded = base64::engine::general_purpose::STANDARD.decode(patch).unwrap();
            writeln!(out, "patch: {}", String::from_utf8(decoded).unwrap()).unwrap();
        }
    }
    out
}

#[tokio::test]
async fn responses_are_byte_identical_to_the_recorded_ones() {
    let actual = render().await;
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(GOLDEN, &actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(GOLDEN).expect("tests/golden/admission.txt (UPDATE_GOLDEN=1 records it)");
    for (i, (a, e)) in actual.lines().zip(expected.lines()).enumerate() {
        assert_eq!(a, e, "line {} of tests/golden/admission.txt differs", i + 1);
    }
    assert_eq!(actual.lines().count(), expected.lines().count(), "number of lines");
}
