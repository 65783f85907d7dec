use k8s_openapi::api::admissionregistration::v1::{MutatingWebhook, WebhookClientConfig};
use pretty_assertions::assert_eq;
use rustls_pki_types::pem::PemObject;
use serde_json::Value;
use wisp_certs::bundle::CA_KEY_KEY;

use super::*;

const NAME: &str = "wisp-webhook-server-cert";
const NS: &str = "wisp-system";
const DAY: Duration = Duration::from_secs(24 * 3600);

fn spec() -> BundleSpec {
    RotationConfig::bundle_spec(RotationConfig::service_dns_names("wisp-webhook", NS, "cluster.local"))
}

fn stored(data: BTreeMap<String, Vec<u8>>, version: &str) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(NAME.into()),
            namespace: Some(NS.into()),
            resource_version: Some(version.into()),
            labels: Some(BTreeMap::from([("app".to_string(), "wisp".to_string())])),
            ..ObjectMeta::default()
        },
        data: Some(data.into_iter().map(|(k, v)| (k, ByteString(v))).collect()),
        ..Secret::default()
    }
}

fn keys(secret: &Secret) -> Vec<&str> {
    secret.data.iter().flatten().map(|(k, _)| k.as_str()).collect()
}

#[test]
fn names_and_validities() {
    assert_eq!(
        RotationConfig::service_dns_names("wisp-webhook", NS, "cluster.local."),
        vec![
            "wisp-webhook.wisp-system.svc",
            "wisp-webhook.wisp-system.svc.cluster.local"
        ]
    );
    assert_eq!(RotationConfig::service_dns_names("svc", "ns", ""), vec!["svc.ns.svc"]);
    let spec = spec();
    assert_eq!(spec.ca_common_name, "wisp-webhook-ca");
    assert_eq!(spec.ca_validity, 3650 * DAY);
    assert_eq!(spec.serving_validity, 365 * DAY);
    assert_eq!(spec.lookahead, 90 * DAY);
}

#[test]
fn a_missing_secret_is_created_with_the_four_keys() {
    let now = SystemTime::now();
    let plan = plan_secret(None, NAME, NS, &spec(), now).unwrap();
    assert_eq!(plan.outcome, Outcome::Regenerated);
    let SecretWrite::Create(secret) = &plan.write else {
        panic!("expected a create, got {:?}", plan.write);
    };
    assert_eq!(secret.metadata.name.as_deref(), Some(NAME));
    assert_eq!(secret.metadata.namespace.as_deref(), Some(NS));
    assert_eq!(secret.metadata.resource_version, None);
    assert_eq!(secret.type_.as_deref(), Some("Opaque"));
    assert_eq!(keys(secret), vec!["ca.crt", "ca.key", "tls.crt", "tls.key"]);
    let data = secret.data.as_ref().unwrap();
    assert_eq!(data["ca.crt"].0, plan.bundle.ca.cert_pem().as_bytes());
    assert_eq!(data["tls.crt"].0, plan.bundle.serving.cert_pem.as_bytes());
    plan.bundle.check(&spec(), now).unwrap();
}

#[test]
fn a_good_secret_is_kept_as_it_is() {
    let now = SystemTime::now();
    let bundle = CertBundle::generate(&spec(), now).unwrap();
    let secret = stored(bundle.to_secret_data(), "7");
    let plan = plan_secret(Some(&secret), NAME, NS, &spec(), now).unwrap();
    assert_eq!(plan.outcome, Outcome::Unchanged);
    assert_eq!(plan.write, SecretWrite::None);
    assert_eq!(plan.bundle.to_secret_data(), bundle.to_secret_data());
}

#[test]
fn an_empty_secret_from_the_chart_is_filled_at_its_resource_version() {
    let secret = stored(BTreeMap::new(), "3");
    let plan = plan_secret(Some(&secret), NAME, NS, &spec(), SystemTime::now()).unwrap();
    assert_eq!(plan.outcome, Outcome::Regenerated);
    let SecretWrite::Replace(written) = &plan.write else {
        panic!("expected a replace, got {:?}", plan.write);
    };
    assert_eq!(written.metadata.resource_version.as_deref(), Some("3"));
    assert_eq!(written.metadata.labels, secret.metadata.labels);
    assert_eq!(keys(written), vec!["ca.crt", "ca.key", "tls.crt", "tls.key"]);
}

#[test]
fn an_expiring_serving_certificate_is_reissued_under_the_same_ca_keeping_other_keys() {
    let now = SystemTime::now();
    let mut short = spec();
    short.serving_validity = 30 * DAY;
    let expiring = CertBundle::generate(&short, now).unwrap();
    let mut data = expiring.to_secret_data();
    data.insert("extra".into(), b"kept".to_vec());
    let secret = stored(data, "9");
    let plan = plan_secret(Some(&secret), NAME, NS, &spec(), now).unwrap();
    assert_eq!(plan.outcome, Outcome::ServingReissued);
    let SecretWrite::Replace(written) = &plan.write else {
        panic!("expected a replace, got {:?}", plan.write);
    };
    assert_eq!(written.metadata.resource_version.as_deref(), Some("9"));
    assert_eq!(keys(written), vec!["ca.crt", "ca.key", "extra", "tls.crt", "tls.key"]);
    let data = written.data.as_ref().unwrap();
    assert_eq!(data["extra"].0, b"kept");
    assert_eq!(data[CA_CERT_KEY].0, expiring.ca.cert_pem().as_bytes());
    assert_eq!(data[CA_KEY_KEY].0, expiring.ca.key_pem().as_bytes());
    assert_ne!(data[TLS_CERT_KEY].0, expiring.serving.cert_pem.as_bytes());
    let info = wisp_certs::inspect(&plan.bundle.serving.cert_pem).unwrap();
    assert!(!info.needs_rotation(now, spec().lookahead));
}

/// A scripted API server for one Secret and one MutatingWebhookConfiguration, in which another replica
/// creates the Secret just before this one does: the first create answers 409 AlreadyExists and the winner's
/// Secret is what every later GET returns.
struct RacingApi {
    winner: Value,
    secret_created: Mutex<bool>,
    config: Mutex<Value>,
    log: Mutex<Vec<(String, String, u16)>>,
}

impl RacingApi {
    fn answer(&self, method: &str, path: &str, body: &[u8]) -> (u16, Value) {
        const SECRET: &str = "/api/v1/namespaces/wisp-system/secrets/wisp-webhook-server-cert";
        const SECRETS: &str = "/api/v1/namespaces/wisp-system/secrets";
        const CONFIG: &str = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/wisp-webhook";
        let status = |code: u16, reason: &str| json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code, "reason": reason, "message": reason});
        let mut created = self.secret_created.lock().unwrap();
        let (code, body) = match (method, path) {
            ("GET", SECRET) if *created => (200, self.winner.clone()),
            ("GET", SECRET) => (404, status(404, "NotFound")),
            ("POST", SECRETS) => {
                *created = true;
                (409, status(409, "AlreadyExists"))
            }
            ("GET", CONFIG) => (200, self.config.lock().unwrap().clone()),
            ("PATCH", CONFIG) => {
                let patch: json_patch::Patch = serde_json::from_slice(body).unwrap();
                let mut config = self.config.lock().unwrap();
                json_patch::patch(&mut config, &patch).unwrap();
                (200, config.clone())
            }
            _ => (405, status(405, "MethodNotAllowed")),
        };
        self.log
            .lock()
            .unwrap()
            .push((method.to_string(), path.to_string(), code));
        (code, body)
    }
}

fn client(api: Arc<RacingApi>) -> kube::Client {
    use http_body_util::BodyExt;
    let service = tower::service_fn(move |request: axum::http::Request<kube::client::Body>| {
        let api = api.clone();
        async move {
            let method = request.method().to_string();
            let path = request.uri().path().to_string();
            let body = request
                .into_body()
                .collect()
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))?
                .to_bytes();
            let (code, json) = api.answer(&method, &path, &body);
            let response = axum::http::Response::builder()
                .status(code)
                .header("content-type", "application/json")
                .body(kube::client::Body::from(serde_json::to_vec(&json).unwrap()))
                .unwrap();
            Ok::<_, std::io::Error>(response)
        }
    });
    kube::Client::new(service, "default")
}

#[tokio::test]
async fn losing_the_create_race_serves_the_winners_certificate() {
    wisp_shared::runtime::install_crypto_provider();
    let winner = CertBundle::generate(&spec(), SystemTime::now()).unwrap();
    let mut winner_secret = stored(winner.to_secret_data(), "5");
    winner_secret.metadata.labels = None;
    let api = Arc::new(RacingApi {
        winner: serde_json::to_value(&winner_secret).unwrap(),
        secret_created: Mutex::new(false),
        config: Mutex::new(serde_json::to_value(webhook_config(&[None])).unwrap()),
        log: Mutex::new(Vec::new()),
    });
    let resolver = Arc::new(CertResolver::default());
    let config = RotationConfig {
        secret_name: NAME.into(),
        secret_namespace: NS.into(),
        webhook_config_name: "wisp-webhook".into(),
        bundle: spec(),
        check_interval: Duration::from_secs(60),
    };
    let rotator = CertRotator::new(client(api.clone()), config, resolver.clone());
    let report = rotator.sync().await.unwrap();
    assert_eq!(
        report,
        SyncReport {
            outcome: Outcome::Unchanged,
            wrote_secret: false,
            lost_race: true,
            served_new_cert: true,
            patched_ca_bundle: true,
        }
    );
    let served: Vec<Vec<u8>> = resolver.current_chain().unwrap().iter().map(|c| c.to_vec()).collect();
    let winner_der = rustls_pki_types::CertificateDer::from_pem_slice(winner.serving.cert_pem.as_bytes()).unwrap();
    assert_eq!(served, vec![winner_der.to_vec()]);
    let config = api.config.lock().unwrap().clone();
    let ca_b64 = serde_json::to_value(ByteString(winner.ca.cert_pem().as_bytes().to_vec())).unwrap();
    assert_eq!(config["webhooks"][0]["clientConfig"]["caBundle"], ca_b64);
    let secrets = "/api/v1/namespaces/wisp-system/secrets";
    let secret = "/api/v1/namespaces/wisp-system/secrets/wisp-webhook-server-cert";
    let config_path = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/wisp-webhook";
    let entry = |m: &str, p: &str, c: u16| (m.to_string(), p.to_string(), c);
    assert_eq!(
        *api.log.lock().unwrap(),
        vec![
            entry("GET", secret, 404),
            entry("POST", secrets, 409),
            entry("GET", secret, 200),
            entry("GET", config_path, 200),
            entry("PATCH", config_path, 200),
        ]
    );

    // The next check changes nothing and serves the same certificate.
    let again = rotator.sync().await.unwrap();
    assert_eq!(
        (again.served_new_cert, again.patched_ca_bundle, again.lost_race),
        (false, false, false)
    );
}

fn webhook_config(bundles: &[Option<&[u8]>]) -> MutatingWebhookConfiguration {
    MutatingWebhookConfiguration {
        metadata: ObjectMeta {
            name: Some("wisp-webhook".into()),
            resource_version: Some("42".into()),
            ..ObjectMeta::default()
        },
        webhooks: Some(
            bundles
                .iter()
                .enumerate()
                .map(|(i, bundle)| MutatingWebhook {
                    name: format!("w{i}.example.com"),
                    client_config: WebhookClientConfig {
                        ca_bundle: bundle.map(|b| ByteString(b.to_vec())),
                        ..WebhookClientConfig::default()
                    },
                    ..MutatingWebhook::default()
                })
                .collect(),
        ),
    }
}

#[test]
fn the_ca_bundle_is_patched_only_where_it_differs() {
    let ca = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    let encoded = "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUIKLS0tLS1FTkQgQ0VSVElGSUNBVEUtLS0tLQo=";
    let patch = ca_bundle_patch(&webhook_config(&[None, Some(ca), Some(b"old")]), ca).unwrap();
    assert_eq!(
        serde_json::to_value(&patch).unwrap(),
        json!([
            {"op": "replace", "path": "/metadata/resourceVersion", "value": "42"},
            {"op": "add", "path": "/webhooks/0/clientConfig/caBundle", "value": encoded},
            {"op": "add", "path": "/webhooks/2/clientConfig/caBundle", "value": encoded},
        ])
    );
    assert_eq!(ca_bundle_patch(&webhook_config(&[Some(ca), Some(ca)]), ca), None);
    assert_eq!(ca_bundle_patch(&webhook_config(&[]), ca), None);
}
