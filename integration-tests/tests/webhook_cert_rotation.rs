//! The real `wisp-webhook` binary managing its own serving certificate (`--cert-rotation`) against the fake
//! Kubernetes API, as upstream's cert-controller does: the Secret `wisp-system/wisp-webhook-server-cert` holds
//! `ca.crt`, `ca.key`, `tls.crt` and `tls.key`; the CA goes into every webhook's `caBundle` of the
//! MutatingWebhookConfiguration `wisp-webhook`; the served certificate chains to that CA for the Service's DNS
//! names; replicas converge on one Secret; an expiring certificate is replaced. And `--cert-rotation=false` keeps
//! serving (and hot-reloading) mounted files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use base64::Engine;
use integration_tests::fake_kube::{FakeKube, KubeVersion};
use integration_tests::pki::TestPki;
use integration_tests::webhook_harness::{Webhook, certificate_der, client_config_trusting, served_certificate};
use pretty_assertions::assert_eq;
use serde_json::{Value, json};
use wisp_certs::{BundleSpec, CertBundle, CertificateAuthority};

const NAMESPACE: &str = "wisp-system";
const SECRET: &str = "wisp-webhook-server-cert";
const SECRET_PATH: &str = "/api/v1/namespaces/wisp-system/secrets/wisp-webhook-server-cert";
const SECRETS_PATH: &str = "/api/v1/namespaces/wisp-system/secrets";
const MWC: &str = "wisp-webhook";
const MWC_PATH: &str = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/wisp-webhook";
const SERVICE_NAME: &str = "wisp-webhook.wisp-system.svc";
const SERVICE_LONG_NAME: &str = "wisp-webhook.wisp-system.svc.cluster.local";
const DAY: Duration = Duration::from_secs(24 * 3600);

/// A webhook of namespace `wisp-system` checking its certificate every 200 ms, with `extra_args`.
fn start_webhook(kubeconfig: &Path, cert_dir: &Path, extra_args: &[&str]) -> Webhook {
    let args = [&["--cert-check-interval=200ms", "--native-sidecar=false"], extra_args].concat();
    Webhook::start_with(kubeconfig, cert_dir, &args, &[("POD_NAMESPACE", NAMESPACE)])
}

/// A webhook managing its own certificate.
fn rotating_webhook(kubeconfig: &Path, cert_dir: &Path) -> Webhook {
    start_webhook(kubeconfig, cert_dir, &["--cert-rotation=true"])
}

fn mutating_webhook_configuration() -> Value {
    let webhook = |name: &str| {
        json!({
            "name": name,
            "admissionReviewVersions": ["v1"],
            "clientConfig": {"service": {"name": "wisp-webhook", "namespace": NAMESPACE, "path": "/mutate-v1-pod", "port": 443}},
            "failurePolicy": "Fail",
            "sideEffects": "None",
            "objectSelector": {"matchLabels": {"azure.workload.identity/use": "true"}},
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]}]
        })
    };
    let mut second = webhook("second.wisp.example.com");
    second["clientConfig"]["caBundle"] = json!("c3RhbGUgQ0E=");
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": MWC},
        "webhooks": [webhook("mutation.azure-workload-identity.io"), second]
    })
}

/// A test's cluster: the fake API server with the chart's MutatingWebhookConfiguration (no caBundle on the
/// first webhook, a stale one on a second), the PKI its certificate comes from, and a directory holding a
/// kubeconfig for it.
struct Cluster {
    pki: TestPki,
    dir: tempfile::TempDir,
    kube: FakeKube,
    kubeconfig: PathBuf,
}

async fn cluster() -> Cluster {
    let pki = TestPki::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let kube = FakeKube::start_with(&pki, KubeVersion { major: 1, minor: 33 }).await;
    kube.upsert(mutating_webhook_configuration());
    let kubeconfig = kube.write_kubeconfig(dir.path());
    Cluster {
        pki,
        dir,
        kube,
        kubeconfig,
    }
}

/// The chart's Secret: created empty so that a volume could mount it before the webhook fills it.
fn empty_chart_secret() -> Value {
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": SECRET, "namespace": NAMESPACE}})
}

fn secret_with(data: &BTreeMap<String, Vec<u8>>) -> Value {
    let b64 = |bytes: &Vec<u8>| base64::engine::general_purpose::STANDARD.encode(bytes);
    let data: serde_json::Map<String, Value> = data.iter().map(|(k, v)| (k.clone(), Value::from(b64(v)))).collect();
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": SECRET, "namespace": NAMESPACE}, "type": "Opaque", "data": data})
}

/// The Secret's data, decoded, and its resourceVersion.
fn stored_secret(kube: &FakeKube) -> Option<(BTreeMap<String, String>, String)> {
    let secret = kube.get("v1", "Secret", Some(NAMESPACE), SECRET)?;
    let data = secret["data"].as_object()?;
    let decoded = data
        .iter()
        .map(|(key, value)| {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(value.as_str().expect("base64 string"))
                .expect("base64");
            (key.clone(), String::from_utf8(bytes).expect("PEM text"))
        })
        .collect();
    Some((decoded, secret["metadata"]["resourceVersion"].as_str()?.to_string()))
}

fn secret_data(kube: &FakeKube) -> BTreeMap<String, String> {
    stored_secret(kube).expect("the certificate Secret has data").0
}

/// Every webhook's caBundle, decoded.
fn ca_bundles(kube: &FakeKube) -> Vec<Option<String>> {
    let config = kube
        .get(
            "admissionregistration.k8s.io/v1",
            "MutatingWebhookConfiguration",
            None,
            MWC,
        )
        .expect("MutatingWebhookConfiguration");
    config["webhooks"]
        .as_array()
        .expect("webhooks")
        .iter()
        .map(|webhook| {
            webhook["clientConfig"]["caBundle"].as_str().map(|b64| {
                String::from_utf8(base64::engine::general_purpose::STANDARD.decode(b64).expect("base64")).expect("PEM")
            })
        })
        .collect()
}

/// The leaf the webhook presents to a client that trusts only `ca_pem` and connects for `server_name`, as
/// kube-apiserver does with the caBundle and the Service's DNS name.
async fn served_for(ca_pem: &str, server_name: &str, port: u16) -> Result<Vec<u8>, String> {
    served_certificate(client_config_trusting(ca_pem)?, server_name, port).await
}

fn successful_writes(kube: &FakeKube) -> Vec<(String, String, u16)> {
    kube.requests()
        .into_iter()
        .filter(|r| {
            matches!(r.method.as_str(), "POST" | "PUT" | "PATCH")
                && (r.path == SECRETS_PATH || r.path == SECRET_PATH)
                && r.status < 300
        })
        .map(|r| (r.method, r.path, r.status))
        .collect()
}

const KEYS: [&str; 4] = ["ca.crt", "ca.key", "tls.crt", "tls.key"];

fn keys(data: &BTreeMap<String, String>) -> Vec<&str> {
    data.keys().map(String::as_str).collect()
}

/// Asserts the settled state: the Secret has exactly the four keys, a CA with its key and a serving certificate
/// for both Service names; every caBundle is `ca.crt`; and `webhook` serves `tls.crt`, trusted through `ca.crt`
/// alone, for both names. Returns the data.
async fn assert_settled(kube: &FakeKube, webhook: &Webhook) -> BTreeMap<String, String> {
    let data = secret_data(kube);
    assert_eq!(keys(&data), KEYS);
    let ca = CertificateAuthority::from_pem(&data["ca.crt"], &data["ca.key"]).expect("ca.key is ca.crt's key");
    assert_eq!(ca.info().subject_common_name.as_deref(), Some("wisp-webhook-ca"));
    let leaf = wisp_certs::inspect(&data["tls.crt"]).expect("tls.crt");
    assert_eq!(leaf.dns_names, vec![SERVICE_NAME, SERVICE_LONG_NAME]);
    for name in [SERVICE_NAME, SERVICE_LONG_NAME] {
        wisp_certs::verify_serving_cert(
            &data["ca.crt"],
            &data["tls.crt"],
            &data["tls.key"],
            name,
            SystemTime::now(),
        )
        .expect("tls.crt/tls.key serve the Service names under ca.crt");
    }
    // The caBundle is patched right after the certificate is served (which is what readiness waits for).
    let expected = vec![Some(data["ca.crt"].clone()), Some(data["ca.crt"].clone())];
    webhook
        .wait_for("every caBundle is ca.crt", async || {
            (ca_bundles(kube) == expected).then_some(())
        })
        .await;
    for name in [SERVICE_NAME, SERVICE_LONG_NAME] {
        assert_eq!(
            served_for(&data["ca.crt"], name, webhook.port).await,
            Ok(certificate_der(&data["tls.crt"])),
            "served for {name}; log:\n{}",
            webhook.log()
        );
    }
    data
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_the_secret_patches_the_ca_bundle_and_serves_a_certificate_chaining_to_it() {
    let Cluster {
        dir, kube, kubeconfig, ..
    } = cluster().await;
    // The Secret cannot be created at first: not ready while nothing is served.
    kube.fail_requests("POST", SECRETS_PATH, 500, 2);
    let webhook = rotating_webhook(&kubeconfig, &dir.path().join("unused"));
    webhook
        .wait_for("two failed creates", async || {
            let failed = kube
                .requests()
                .iter()
                .filter(|r| r.method == "POST" && r.path == SECRETS_PATH && r.status == 500)
                .count();
            (failed == 2).then_some(())
        })
        .await;
    // Nothing is served before a create succeeds: /readyz can only be ok if the Secret exists (read after it).
    let early = webhook.health("/readyz").await;
    assert!(
        matches!(&early, Some((503, body)) if body == "certs are not ready yet") || stored_secret(&kube).is_some(),
        "{early:?}"
    );
    webhook.wait_ready().await;
    let data = assert_settled(&kube, &webhook).await;
    assert_eq!(
        kube.get("v1", "Secret", Some(NAMESPACE), SECRET).unwrap()["type"],
        "Opaque"
    );
    assert_eq!(
        successful_writes(&kube),
        vec![("POST".to_string(), SECRETS_PATH.to_string(), 201)]
    );
    // Only the caBundle changed in the configuration.
    let mut expected = mutating_webhook_configuration();
    let ca_b64 = base64::engine::general_purpose::STANDARD.encode(&data["ca.crt"]);
    expected["webhooks"][0]["clientConfig"]["caBundle"] = json!(ca_b64);
    expected["webhooks"][1]["clientConfig"]["caBundle"] = json!(ca_b64);
    let stored = kube
        .get(
            "admissionregistration.k8s.io/v1",
            "MutatingWebhookConfiguration",
            None,
            MWC,
        )
        .unwrap();
    assert_eq!(stored["webhooks"], expected["webhooks"]);

    // Later checks find everything in place and write nothing.
    kube.clear_requests();
    webhook
        .wait_for("two more checks", async || {
            let gets = kube
                .requests()
                .iter()
                .filter(|r| r.method == "GET" && r.path == MWC_PATH)
                .count();
            (gets >= 2).then_some(())
        })
        .await;
    let writes: Vec<_> = kube
        .requests()
        .into_iter()
        .filter(|r| r.method != "GET")
        .map(|r| (r.method, r.path))
        .collect();
    assert_eq!(writes, Vec::<(String, String)>::new());

    // A caBundle reset (say by a manual apply of the manifest) is repaired.
    let mut reset = mutating_webhook_configuration();
    reset["webhooks"][1]["clientConfig"]["caBundle"] = json!(ca_b64);
    kube.upsert(reset);
    webhook
        .wait_for("the caBundle is repaired", async || {
            (ca_bundles(&kube) == vec![Some(data["ca.crt"].clone()), Some(data["ca.crt"].clone())]).then_some(())
        })
        .await;
    assert_eq!(secret_data(&kube), data);
    let log = webhook.log();
    for secret in [&data["ca.key"], &data["tls.key"]] {
        let body: String = secret.lines().filter(|l| !l.starts_with("-----")).collect();
        assert!(!log.contains(&body), "the log shows key material");
    }
}

async fn race(kube: &FakeKube, kubeconfig: &Path, dir: &Path) {
    let a = rotating_webhook(kubeconfig, &dir.join("unused"));
    let b = rotating_webhook(kubeconfig, &dir.join("unused"));
    a.wait_ready().await;
    b.wait_ready().await;
    let data = assert_settled(kube, &a).await;
    assert_eq!(assert_settled(kube, &b).await, data);
    assert_eq!(kube.list("v1", "Secret").len(), 1);
    // Whether the two really collided depends on scheduling; the end state above must hold either way.
    let lost = kube
        .requests()
        .iter()
        .filter(|r| (r.path == SECRETS_PATH || r.path == SECRET_PATH) && r.status == 409)
        .count();
    eprintln!("writes that lost the race: {lost}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_creating_the_secret_end_with_one_secret_and_the_same_certificate() {
    let Cluster {
        dir, kube, kubeconfig, ..
    } = cluster().await;
    race(&kube, &kubeconfig, dir.path()).await;
    // One create won; a loser got 409 AlreadyExists and adopted the winner's Secret.
    assert_eq!(
        successful_writes(&kube),
        vec![("POST".to_string(), SECRETS_PATH.to_string(), 201)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_filling_the_charts_empty_secret_end_with_the_same_certificate() {
    let Cluster {
        dir, kube, kubeconfig, ..
    } = cluster().await;
    kube.upsert(empty_chart_secret());
    race(&kube, &kubeconfig, dir.path()).await;
    // One replace won at the resourceVersion both read; a loser got 409 Conflict and adopted the winner's.
    assert_eq!(
        successful_writes(&kube),
        vec![("PUT".to_string(), SECRET_PATH.to_string(), 200)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflicting_write_is_retried_after_a_fresh_read() {
    let Cluster {
        dir, kube, kubeconfig, ..
    } = cluster().await;
    kube.upsert(empty_chart_secret());
    // The first replace is refused as if another replica had written in between: the webhook must read again
    // (and decide on what it reads) rather than retry the same write.
    kube.fail_requests("PUT", SECRET_PATH, 409, 1);
    let webhook = rotating_webhook(&kubeconfig, &dir.path().join("unused"));
    webhook.wait_ready().await;
    assert_settled(&kube, &webhook).await;
    let secret_requests: Vec<(String, u16)> = kube
        .requests()
        .into_iter()
        .filter(|r| r.path == SECRET_PATH)
        .map(|r| (r.method, r.status))
        .take(4)
        .collect();
    assert_eq!(
        secret_requests,
        vec![
            ("GET".to_string(), 200),
            ("PUT".to_string(), 409),
            ("GET".to_string(), 200),
            ("PUT".to_string(), 200)
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiring_serving_certificate_is_reissued_under_the_same_ca() {
    let Cluster {
        dir, kube, kubeconfig, ..
    } = cluster().await;
    let webhook = rotating_webhook(&kubeconfig, &dir.path().join("unused"));
    webhook.wait_ready().await;
    let good = assert_settled(&kube, &webhook).await;

    // Someone (an older replica, a restore) stores a serving certificate with 30 days left: inside the 90-day
    // lookahead, so the next check issues a new one under the same CA and every replica serves it.
    let ca = CertificateAuthority::from_pem(&good["ca.crt"], &good["ca.key"]).unwrap();
    let expiring = ca
        .issue_server_cert(&[SERVICE_NAME, SERVICE_LONG_NAME], 30 * DAY)
        .unwrap();
    let mut data: BTreeMap<String, Vec<u8>> = good.iter().map(|(k, v)| (k.clone(), v.clone().into_bytes())).collect();
    data.insert("tls.crt".into(), expiring.cert_pem.clone().into_bytes());
    data.insert("tls.key".into(), expiring.key_pem.clone().into_bytes());
    kube.upsert(secret_with(&data));
    let rotated = webhook
        .wait_for("the expiring certificate is replaced", async || {
            stored_secret(&kube)
                .map(|(data, _)| data)
                .filter(|data| data["tls.crt"] != expiring.cert_pem)
        })
        .await;
    assert_eq!(rotated["ca.crt"], good["ca.crt"]);
    assert_eq!(rotated["ca.key"], good["ca.key"]);
    assert_ne!(rotated["tls.crt"], good["tls.crt"]);
    let info = wisp_certs::inspect(&rotated["tls.crt"]).unwrap();
    let left = info.not_after.duration_since(SystemTime::now()).unwrap();
    assert!(left > 300 * DAY, "a one-year certificate; {left:?} left");
    webhook
        .wait_for("the new certificate is served", async || {
            (served_for(&rotated["ca.crt"], SERVICE_NAME, webhook.port).await
                == Ok(certificate_der(&rotated["tls.crt"])))
            .then_some(())
        })
        .await;
    assert_eq!(assert_settled(&kube, &webhook).await, rotated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_about_to_expire_is_regenerated_and_the_ca_bundle_follows() {
    let Cluster {
        dir, kube, kubeconfig, ..
    } = cluster().await;
    let mut spec = BundleSpec::new("wisp-webhook-ca", &[SERVICE_NAME, SERVICE_LONG_NAME]);
    spec.ca_validity = 10 * DAY;
    spec.serving_validity = 10 * DAY;
    let old = CertBundle::generate(&spec, SystemTime::now()).unwrap();
    kube.upsert(secret_with(&old.to_secret_data()));
    let webhook = rotating_webhook(&kubeconfig, &dir.path().join("unused"));
    webhook.wait_ready().await;
    let data = assert_settled(&kube, &webhook).await;
    assert_ne!(data["ca.crt"], old.ca.cert_pem());
    assert_eq!(
        successful_writes(&kube),
        vec![("PUT".to_string(), SECRET_PATH.to_string(), 200)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_cert_rotation_mounted_files_are_served_and_hot_reloaded() {
    let Cluster {
        pki,
        dir,
        kube,
        kubeconfig,
    } = cluster().await;
    let cert_dir = dir.path().join("certs");
    std::fs::create_dir(&cert_dir).unwrap();
    let install = |cert_dir: &Path| {
        let cert = pki.server_cert(&[SERVICE_NAME]);
        for (file, content) in [("tls.crt", &cert.cert_pem), ("tls.key", &cert.key_pem)] {
            let tmp = cert_dir.join(format!(".{file}.tmp"));
            std::fs::write(&tmp, content).unwrap();
            std::fs::rename(&tmp, cert_dir.join(file)).unwrap();
        }
        certificate_der(&cert.cert_pem)
    };
    let first = install(&cert_dir);
    let webhook = start_webhook(&kubeconfig, &cert_dir, &["--cert-rotation=false"]);
    webhook.wait_ready().await;
    assert_eq!(served_for(pki.ca_pem(), SERVICE_NAME, webhook.port).await, Ok(first));
    let second = install(&cert_dir);
    webhook
        .wait_for("the new pair is served", async || {
            (served_for(pki.ca_pem(), SERVICE_NAME, webhook.port).await.as_ref() == Ok(&second)).then_some(())
        })
        .await;
    // No Secret and no MutatingWebhookConfiguration are touched.
    let touched: Vec<String> = kube
        .requests()
        .into_iter()
        .filter(|r| r.path.contains("/secrets") || r.path.contains("mutatingwebhookconfigurations"))
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert_eq!(touched, Vec::<String>::new());
    assert_eq!(ca_bundles(&kube), vec![None, Some("stale CA".to_string())]);
}
