//! The real `wisp-webhook` binary against the fake Kubernetes API, driven as kube-apiserver drives it:
//! AdmissionReviews over HTTPS trusting only the test CA.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use integration_tests::admission::{decoded_review, denied_response, mutated_response, review_of, service_account};
use integration_tests::fake_kube::{FakeKube, KubeVersion, RecordedRequest};
use integration_tests::foreign_clients::{ForeignClients, HttpCall, HttpClient};
use integration_tests::pki::TestPki;
use integration_tests::webhook_harness::{Webhook, certificate_der, served_certificate};
use pretty_assertions::assert_eq;
use serde_json::{Value, json};

/// Guards against a hang only; no test asserts on timing.
const PATIENCE: Duration = Duration::from_secs(30);

/// An HTTPS client trusting only the test CA, as kube-apiserver trusts the caBundle.
fn https_client(pki: &TestPki) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(pki.ca_pem().as_bytes()).expect("CA PEM");
    reqwest::Client::builder()
        .tls_certs_only([ca])
        .no_proxy()
        .build()
        .expect("https client")
}

fn pod(name: &str, sa: &str, annotations: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "default",
            "labels": {"azure.workload.identity/use": "true"},
            "annotations": annotations
        },
        "spec": {"serviceAccountName": sa, "containers": [{"name": "app", "image": "app:1"}]}
    })
}

fn review(uid: &str, pod: Value) -> Value {
    review_of(uid, "default", pod)
}

/// POSTs an AdmissionReview; returns the review response with its patch (if any) decoded into JSON.
async fn admit(https: &reqwest::Client, webhook: &Webhook, review: &Value) -> Value {
    let response = https
        .post(format!("https://127.0.0.1:{}/mutate-v1-pod", webhook.port))
        .json(review)
        .send()
        .await
        .unwrap_or_else(|e| panic!("admission request failed: {e}; webhook log:\n{}", webhook.log()));
    assert_eq!(response.status().as_u16(), 200);
    // ALPN: the webhook offers HTTP/2 (and HTTP/1.1), like controller-runtime's server.
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    decoded_review(&response.text().await.expect("body")).unwrap_or_else(|e| panic!("{e}"))
}

/// Writes a pair the way kubelet updates a Secret volume: into a fresh directory, then an atomic rename.
fn install_cert(pki: &TestPki, cert_dir: &Path) -> Vec<u8> {
    let cert = pki.server_cert(&[]);
    for (file, content) in [("tls.crt", &cert.cert_pem), ("tls.key", &cert.key_pem)] {
        let tmp = cert_dir.join(format!(".{file}.tmp"));
        std::fs::write(&tmp, content).expect("write cert");
        std::fs::rename(&tmp, cert_dir.join(file)).expect("rename cert");
    }
    certificate_der(&cert.cert_pem)
}

fn gets_of(requests: &[RecordedRequest], path: &str) -> Vec<(String, u16)> {
    requests
        .iter()
        .filter(|r| r.method == "GET" && r.path == path)
        .map(|r| (r.path.clone(), r.status))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_end_to_end() {
    let pki = TestPki::new();
    let kube = FakeKube::start_with(&pki, KubeVersion { major: 1, minor: 33 }).await;
    kube.upsert(service_account("default", "workload", "client-1"));
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = kube.write_kubeconfig(dir.path());
    let cert_dir = dir.path().join("certs");
    std::fs::create_dir(&cert_dir).expect("cert dir");
    let https = https_client(&pki);

    // No certificate yet: alive, not ready.
    let webhook = Webhook::start(&kubeconfig, &cert_dir, &[]);
    let health = webhook
        .wait_for("/healthz answers", async || webhook.health("/healthz").await)
        .await;
    assert_eq!(health, (200, "ok".to_string()));
    assert_eq!(
        webhook.health("/readyz").await,
        Some((503, "certs are not ready yet".to_string()))
    );

    // The certificate appears (as when the Secret is populated) and is picked up without a restart.
    let first = install_cert(&pki, &cert_dir);
    webhook
        .wait_for("/readyz is ok", async || {
            webhook.health("/readyz").await.filter(|r| r.0 == 200)
        })
        .await;
    assert_eq!(
        served_certificate(pki.client_config(), "127.0.0.1", webhook.port).await,
        Ok(first)
    );

    // TLS 1.3 is the default minimum: a TLS 1.2-only client is refused.
    let tls12_only =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS12])
            .expect("TLS 1.2")
            .with_root_certificates(pki.root_store())
            .with_no_client_auth();
    assert!(
        served_certificate(Arc::new(tls12_only), "127.0.0.1", webhook.port)
            .await
            .is_err()
    );

    // ServiceAccount from the watch cache.
    let response = admit(&https, &webhook, &review("uid-1", pod("app", "workload", json!({})))).await;
    assert_eq!(response, mutated_response("uid-1", "client-1"));

    // A denial from the pod's annotations.
    let response = admit(
        &https,
        &webhook,
        &review(
            "uid-2",
            pod(
                "app",
                "workload",
                json!({"azure.workload.identity/service-account-token-expiration": "100"}),
            ),
        ),
    )
    .await;
    assert_eq!(
        response,
        denied_response(
            "uid-2",
            400,
            "token expiration 100 not valid. Expected value to be between 3600 and 86400 (pod annotation azure.workload.identity/service-account-token-expiration)"
        )
    );

    // Native sidecar (the fake reports 1.33): the proxy goes first into initContainers.
    let response = admit(
        &https,
        &webhook,
        &review(
            "uid-3",
            pod(
                "app",
                "workload",
                json!({"azure.workload.identity/inject-proxy-sidecar": "true"}),
            ),
        ),
    )
    .await;
    let ops = response["response"]["patch"].as_array().expect("patch ops").clone();
    let paths: Vec<&str> = ops.iter().map(|op| op["path"].as_str().unwrap_or_default()).collect();
    assert_eq!(
        paths,
        vec![
            "/spec/containers/0/env",
            "/spec/containers/0/volumeMounts",
            "/spec/initContainers",
            "/spec/volumes"
        ]
    );
    let init: Vec<(&str, Option<&str>)> = ops[2]["value"]
        .as_array()
        .expect("init containers")
        .iter()
        .map(|c| (c["name"].as_str().unwrap_or_default(), c["restartPolicy"].as_str()))
        .collect();
    assert_eq!(init, vec![("azwi-proxy", Some("Always")), ("azwi-proxy-init", None)]);
    assert_eq!(
        ops[2]["value"][0]["image"],
        json!("mcr.microsoft.com/oss/azure/workload-identity/proxy:v1.5.1")
    );

    // A ServiceAccount the watch has not delivered yet: read live.
    kube.insert_get_only(service_account("default", "late", "client-late"));
    kube.clear_requests();
    let response = admit(&https, &webhook, &review("uid-4", pod("app", "late", json!({})))).await;
    assert_eq!(response, mutated_response("uid-4", "client-late"));
    let path = "/api/v1/namespaces/default/serviceaccounts/late";
    assert_eq!(gets_of(&kube.requests(), path), vec![(path.to_string(), 200)]);

    // A ServiceAccount that does not exist: one live read (404), then a denial.
    kube.clear_requests();
    let response = admit(&https, &webhook, &review("uid-5", pod("app", "", json!({})))).await;
    assert_eq!(
        response,
        denied_response(
            "uid-5",
            400,
            "serviceaccounts \"default\" not found in namespace \"default\"; create the ServiceAccount before the pod or set spec.serviceAccountName"
        )
    );
    let path = "/api/v1/namespaces/default/serviceaccounts/default";
    assert_eq!(gets_of(&kube.requests(), path), vec![(path.to_string(), 404)]);

    // An annotation change reaches the cache through the watch.
    kube.upsert(service_account("default", "workload", "client-2"));
    webhook
        .wait_for("the watch delivers the new client id", async || {
            let response = admit(&https, &webhook, &review("uid-6", pod("app", "workload", json!({})))).await;
            (response == mutated_response("uid-6", "client-2")).then_some(())
        })
        .await;

    // Certificate rotation: the next handshakes present the new certificate, same process.
    let second = install_cert(&pki, &cert_dir);
    let config = pki.client_config();
    webhook
        .wait_for("the new certificate is served", async || {
            (served_certificate(config.clone(), "127.0.0.1", webhook.port)
                .await
                .ok()?
                == second)
                .then_some(())
        })
        .await;
    let response = admit(&https, &webhook, &review("uid-7", pod("app", "workload", json!({})))).await;
    assert_eq!(response, mutated_response("uid-7", "client-2"));

    // Metrics: upstream's histogram per namespace and the outcome counter.
    let (status, text) = webhook.metrics("/metrics").await.expect("metrics");
    assert_eq!(status, 200);
    let admissions_before_metrics = text
        .lines()
        .find(|l| l.starts_with("azwi_mutation_request_count{namespace=\"default\"}"))
        .map(str::to_string);
    let mutated_line = text
        .lines()
        .find(|l| l.starts_with("wisp_webhook_admissions_total{outcome=\"mutated\"}"))
        .map(str::to_string);
    let counts: Vec<&str> = text
        .lines()
        .filter(|l| {
            l.starts_with("wisp_webhook_admissions_total{outcome=\"denied\"}")
                || l.starts_with("wisp_webhook_admissions_total{outcome=\"error\"}")
                || l.starts_with("wisp_webhook_admissions_total{outcome=\"unchanged\"}")
        })
        .collect();
    let mut counts = counts;
    counts.sort_unstable();
    assert_eq!(
        counts,
        vec![
            "wisp_webhook_admissions_total{outcome=\"denied\"} 2",
            "wisp_webhook_admissions_total{outcome=\"error\"} 0",
            "wisp_webhook_admissions_total{outcome=\"unchanged\"} 0",
        ]
    );
    // The watch wait above retried an unknown number of times; everything else is exact.
    let mutated: u64 = mutated_line
        .and_then(|l| l.rsplit(' ').next().and_then(|n| n.parse().ok()))
        .expect("mutated counter");
    assert!(mutated >= 5, "{text}");
    assert_eq!(
        admissions_before_metrics,
        Some(format!(
            "azwi_mutation_request_count{{namespace=\"default\"}} {}",
            mutated + 2
        ))
    );
    assert!(text.contains("# TYPE azwi_mutation_request histogram\n"), "{text}");

    // SIGTERM: a clean exit.
    let status = webhook.terminate().await;
    assert!(status.success(), "exit status {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_until_the_service_account_cache_syncs() {
    let pki = TestPki::new();
    let kube = FakeKube::start_with(&pki, KubeVersion { major: 1, minor: 29 }).await;
    kube.upsert(service_account("default", "workload", "client-1"));
    let dir = tempfile::tempdir().expect("tempdir");
    // A token the API server refuses: every list, watch and GET is 401, so the cache never syncs.
    let kubeconfig = kube.write_kubeconfig(dir.path());
    let text = std::fs::read_to_string(&kubeconfig).expect("kubeconfig");
    std::fs::write(&kubeconfig, text.replace(kube.token(), "wrong-token")).expect("kubeconfig");
    let cert_dir = dir.path().join("certs");
    std::fs::create_dir(&cert_dir).expect("cert dir");
    install_cert(&pki, &cert_dir);
    let https = https_client(&pki);

    let webhook = Webhook::start(&kubeconfig, &cert_dir, &["--native-sidecar=false"]);
    let health = webhook
        .wait_for("/healthz answers", async || webhook.health("/healthz").await)
        .await;
    assert_eq!(health, (200, "ok".to_string()));
    // The watch has been refused at least once (with backoff it keeps trying): still not ready.
    kube.wait_until("the webhook tried to list serviceaccounts", PATIENCE, |k| {
        k.requests()
            .iter()
            .any(|r| r.path == "/api/v1/serviceaccounts" && r.status == 401)
    })
    .await;
    assert_eq!(
        webhook.health("/readyz").await,
        Some((503, "serviceaccount cache has not synced yet".to_string()))
    );

    // The live read fails too: the pod is refused with the reason, never admitted unmutated.
    let response = admit(&https, &webhook, &review("uid-1", pod("app", "workload", json!({})))).await;
    assert_eq!(
        response,
        denied_response(
            "uid-1",
            400,
            "cannot read serviceaccount default/workload from the Kubernetes API: HTTP 401 Unauthorized: Unauthorized; the webhook needs get, list and watch on serviceaccounts"
        )
    );

    let status = webhook.terminate().await;
    assert!(status.success(), "exit status {status}");
}

/// kube-apiserver is Go (net/http over crypto/tls, HTTP/2 by ALPN); the tests' own client is reqwest over
/// rustls. Python's HTTP/1.1 and HTTP/2 clients over OpenSSL get the same admission answer, byte for byte once
/// the patch is decoded, and the same health and metrics answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_of_other_tls_and_http_stacks_get_the_same_answers() {
    let clients = ForeignClients::find();
    let pki = TestPki::new();
    let kube = FakeKube::start(&pki).await;
    kube.upsert(service_account("default", "workload", "client-1"));
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = kube.write_kubeconfig(dir.path());
    let cert_dir = dir.path().join("certs");
    std::fs::create_dir(&cert_dir).expect("cert dir");
    install_cert(&pki, &cert_dir);
    let ca_file = pki.write_ca_cert(dir.path());
    let webhook = Webhook::start(&kubeconfig, &cert_dir, &[]);
    webhook.wait_ready().await;

    let review_body = review("uid-py", pod("app", "workload", json!({}))).to_string();
    let admission = |client| HttpCall {
        client,
        host: "127.0.0.1".into(),
        port: webhook.port,
        ca_file: Some(ca_file.clone()),
        method: "POST",
        path: "/mutate-v1-pod".into(),
        content_type: Some("application/json"),
        body: Some(review_body.clone()),
    };
    let outcomes = clients.https(&[
        admission(HttpClient::Http1),
        admission(HttpClient::H2),
        HttpCall::get(webhook.health_port, "/healthz"),
        HttpCall::get(webhook.health_port, "/readyz"),
        HttpCall::get(webhook.metrics_port, "/metrics"),
    ]);
    for (outcome, alpn) in outcomes[..2].iter().zip(["http/1.1", "h2"]) {
        assert_eq!(
            (&outcome["status"], &outcome["alpn"]),
            (&json!(200), &json!(alpn)),
            "{outcome}"
        );
        let body = decoded_review(outcome["body"].as_str().expect("body")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(body, mutated_response("uid-py", "client-1"), "{alpn}");
    }
    assert_eq!(outcomes[2], json!({"status": 200, "alpn": null, "body": "ok"}));
    assert_eq!(outcomes[3], json!({"status": 200, "alpn": null, "body": "ok"}));
    assert_eq!(outcomes[4]["status"], json!(200));
    let metrics = outcomes[4]["body"].as_str().expect("metrics text");
    assert!(
        metrics
            .lines()
            .any(|l| l == "azwi_mutation_request_count{namespace=\"default\"} 2")
            && metrics
                .lines()
                .any(|l| l == "wisp_webhook_admissions_total{outcome=\"mutated\"} 2"),
        "{metrics}"
    );
}
