//! Self-managed serving certificate (`--cert-rotation`), as upstream's cert-controller does it: a CA and a
//! serving certificate kept in one Secret (`ca.crt`, `ca.key`, `tls.crt`, `tls.key`), the CA written into the
//! `caBundle` of every webhook of the MutatingWebhookConfiguration, and rotation well before expiry.
//!
//! The Secret is the source of truth and every replica runs the same loop (no leader election, as upstream):
//! read the Secret; decide with [`wisp_certs::CertBundle::reconcile`] whether to keep, reissue or regenerate;
//! write a change with optimistic concurrency (create, or replace at the resourceVersion read); on `409` re-read
//! and adopt what the other replica wrote. The certificate is then served straight from memory through the
//! [`CertResolver`] (no files, so no wait for the kubelet to sync a mounted Secret volume), and the CA patched into
//! the MutatingWebhookConfiguration when it differs.
//!
//! [`plan_secret`] and [`ca_bundle_patch`] are the pure decisions; [`CertRotator`] does the I/O.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;
use wisp_certs::bundle::{CA_CERT_KEY, TLS_CERT_KEY, TLS_KEY_KEY};
use wisp_certs::{BundleSpec, CertBundle, CertError, Outcome};

use crate::tls::{CertResolver, TlsError, certified_key};

/// Common name of a generated CA.
pub const CA_COMMON_NAME: &str = "wisp-webhook-ca";
/// Validity of a serving certificate (upstream's cert-controller issues one-year serving certificates under a
/// ten-year CA, and replaces either 90 days before it expires).
pub const SERVING_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// How many times one sync re-reads the Secret after losing a write race before giving up until the next tick.
const MAX_ATTEMPTS: usize = 5;

/// Where the certificate lives and what it is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationConfig {
    pub secret_name: String,
    pub secret_namespace: String,
    /// The MutatingWebhookConfiguration whose webhooks get the CA as `clientConfig.caBundle`.
    pub webhook_config_name: String,
    /// What to issue, and when to replace it.
    pub bundle: BundleSpec,
    /// How often the Secret and the MutatingWebhookConfiguration are checked.
    pub check_interval: Duration,
}

impl RotationConfig {
    /// The serving certificate's names for Service `service` in `namespace`: `<svc>.<ns>.svc` (what the API
    /// server connects to) and `<svc>.<ns>.svc.<cluster_domain>`.
    pub fn service_dns_names(service: &str, namespace: &str, cluster_domain: &str) -> Vec<String> {
        let short = format!("{service}.{namespace}.svc");
        let domain = cluster_domain.trim_matches('.');
        if domain.is_empty() {
            vec![short]
        } else {
            vec![short.clone(), format!("{short}.{domain}")]
        }
    }

    /// cert-controller's CA validity and lookahead, a one-year serving certificate, for `dns_names`.
    pub fn bundle_spec(dns_names: Vec<String>) -> BundleSpec {
        let mut spec = BundleSpec::new(CA_COMMON_NAME, &[]);
        spec.dns_names = dns_names;
        spec.serving_validity = SERVING_VALIDITY;
        spec
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    #[error("cannot read Secret {namespace}/{name}: {source}")]
    ReadSecret {
        namespace: String,
        name: String,
        source: Box<kube::Error>,
    },
    #[error("cannot {verb} Secret {namespace}/{name}: {source}")]
    WriteSecret {
        verb: &'static str,
        namespace: String,
        name: String,
        source: Box<kube::Error>,
    },
    #[error(
        "Secret {namespace}/{name} changed under every one of {attempts} writes in a row; retrying at the next check"
    )]
    Contended {
        namespace: String,
        name: String,
        attempts: usize,
    },
    #[error("cannot make the certificates: {0}")]
    Cert(#[from] CertError),
    #[error("the certificate in the Secret cannot be served: {0}")]
    Tls(#[from] TlsError),
    #[error(
        "MutatingWebhookConfiguration {0} not found; the webhook serves, but the API server cannot trust it until the configuration exists (install it or fix --webhook-config-name)"
    )]
    WebhookConfigMissing(String),
    #[error("cannot {verb} the caBundle of MutatingWebhookConfiguration {name}: {source}")]
    WebhookConfig {
        verb: &'static str,
        name: String,
        source: Box<kube::Error>,
    },
}

/// The Secret write a sync needs.
#[derive(Debug, Clone, PartialEq)]
pub enum SecretWrite {
    /// The stored bundle is good.
    None,
    /// No Secret exists: create this one.
    Create(Secret),
    /// Replace the stored Secret; carries its resourceVersion, so a concurrent change makes the write fail with
    /// 409 Conflict instead of being overwritten.
    Replace(Secret),
}

/// What one sync decided: the bundle to serve (once the write, if any, succeeded), and the write.
#[derive(Debug)]
pub struct Plan {
    pub bundle: CertBundle,
    pub outcome: Outcome,
    pub write: SecretWrite,
}

/// The pure step of a sync: given the Secret as read (`None`: it does not exist), the bundle to serve and how to
/// store it. Data keys other than the four certificate keys, labels and annotations of a stored Secret are kept.
pub fn plan_secret(
    stored: Option<&Secret>,
    name: &str,
    namespace: &str,
    spec: &BundleSpec,
    now: SystemTime,
) -> Result<Plan, CertError> {
    let stored_data: Option<BTreeMap<String, Vec<u8>>> = stored.map(|secret| {
        secret
            .data
            .iter()
            .flatten()
            .map(|(key, value)| (key.clone(), value.0.clone()))
            .collect()
    });
    let (bundle, outcome) = CertBundle::reconcile(stored_data.as_ref(), spec, now)?;
    let bundle_data = || {
        bundle
            .to_secret_data()
            .into_iter()
            .map(|(key, value)| (key, ByteString(value)))
    };
    let write = match (stored, outcome) {
        (Some(_), Outcome::Unchanged) => SecretWrite::None,
        (Some(secret), _) => {
            let mut secret = secret.clone();
            secret.data.get_or_insert_with(BTreeMap::new).extend(bundle_data());
            SecretWrite::Replace(secret)
        }
        (None, _) => SecretWrite::Create(Secret {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                namespace: Some(namespace.to_string()),
                ..ObjectMeta::default()
            },
            type_: Some("Opaque".to_string()),
            data: Some(bundle_data().collect()),
            ..Secret::default()
        }),
    };
    Ok(Plan { bundle, outcome, write })
}

/// The JSON patch that sets `caBundle` to `ca_pem` in every webhook of `config` whose `caBundle` differs, `None`
/// when all already have it. The patch also sets `metadata.resourceVersion` to the one read, so that the API
/// server rejects it with 409 Conflict if the configuration changed since (webhooks reordered or removed by an
/// upgrade) rather than writing into the wrong entry.
pub fn ca_bundle_patch(config: &MutatingWebhookConfiguration, ca_pem: &[u8]) -> Option<json_patch::Patch> {
    let webhooks = config.webhooks.as_deref().unwrap_or_default();
    let encoded = ByteString(ca_pem.to_vec());
    let mut operations = Vec::new();
    for (index, webhook) in webhooks.iter().enumerate() {
        if webhook.client_config.ca_bundle.as_ref() != Some(&encoded) {
            operations.push(json!({
                "op": "add",
                "path": format!("/webhooks/{index}/clientConfig/caBundle"),
                "value": encoded,
            }));
        }
    }
    if operations.is_empty() {
        return None;
    }
    if let Some(version) = &config.metadata.resource_version {
        operations.insert(
            0,
            json!({"op": "replace", "path": "/metadata/resourceVersion", "value": version}),
        );
    }
    serde_json::from_value(serde_json::Value::Array(operations)).ok()
}

/// What a sync did, for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncReport {
    /// What this replica decided on its last attempt (`Unchanged` also when it adopted another replica's write).
    pub outcome: Outcome,
    /// The Secret was written by this replica.
    pub wrote_secret: bool,
    /// Another replica won a write race at least once during this sync.
    pub lost_race: bool,
    /// A new certificate started being served.
    pub served_new_cert: bool,
    /// The MutatingWebhookConfiguration was patched.
    pub patched_ca_bundle: bool,
}

/// Keeps the Secret, the served certificate and the MutatingWebhookConfiguration's `caBundle` in line.
pub struct CertRotator {
    config: RotationConfig,
    secrets: Api<Secret>,
    webhook_configs: Api<MutatingWebhookConfiguration>,
    resolver: Arc<CertResolver>,
    /// The serving certificate and key PEM last handed to the resolver.
    served: Mutex<Option<(String, String)>>,
}

impl std::fmt::Debug for CertRotator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertRotator")
            .field("config", &self.config)
            .field("resolver", &self.resolver)
            .finish_non_exhaustive()
    }
}

fn is_status(error: &kube::Error, check: impl Fn(&kube::core::Status) -> bool) -> bool {
    matches!(error, kube::Error::Api(status) if check(status))
}

impl CertRotator {
    pub fn new(client: kube::Client, config: RotationConfig, resolver: Arc<CertResolver>) -> Self {
        Self {
            secrets: Api::namespaced(client.clone(), &config.secret_namespace),
            webhook_configs: Api::all(client),
            config,
            resolver,
            served: Mutex::new(None),
        }
    }

    /// One pass: settle the Secret, serve its certificate, then patch the CA bundle.
    pub async fn sync(&self) -> Result<SyncReport, RotationError> {
        let (bundle, mut report) = self.settle_secret().await?;
        report.served_new_cert = self.serve(&bundle)?;
        report.patched_ca_bundle = self.patch_ca_bundle(bundle.ca.cert_pem().as_bytes()).await?;
        Ok(report)
    }

    /// Reads the Secret and writes it when needed, re-reading after a lost race, until it holds a usable bundle.
    async fn settle_secret(&self) -> Result<(CertBundle, SyncReport), RotationError> {
        let RotationConfig {
            secret_name: name,
            secret_namespace: namespace,
            ..
        } = &self.config;
        let mut lost_race = false;
        for _ in 0..MAX_ATTEMPTS {
            let stored = self
                .secrets
                .get_opt(name)
                .await
                .map_err(|source| RotationError::ReadSecret {
                    namespace: namespace.clone(),
                    name: name.clone(),
                    source: Box::new(source),
                })?;
            let plan = plan_secret(stored.as_ref(), name, namespace, &self.config.bundle, SystemTime::now())?;
            let (verb, written) = match &plan.write {
                SecretWrite::None => {
                    let report = SyncReport {
                        outcome: plan.outcome,
                        wrote_secret: false,
                        lost_race,
                        served_new_cert: false,
                        patched_ca_bundle: false,
                    };
                    return Ok((plan.bundle, report));
                }
                SecretWrite::Create(secret) => ("create", self.secrets.create(&PostParams::default(), secret).await),
                SecretWrite::Replace(secret) => (
                    "replace",
                    self.secrets.replace(name, &PostParams::default(), secret).await,
                ),
            };
            match written {
                Ok(_) => {
                    let what = match plan.outcome {
                        Outcome::Regenerated => "generated a new CA and serving certificate",
                        _ => "issued a new serving certificate under the stored CA",
                    };
                    tracing::info!(secret = %format!("{namespace}/{name}"), "{what}");
                    let report = SyncReport {
                        outcome: plan.outcome,
                        wrote_secret: true,
                        lost_race,
                        served_new_cert: false,
                        patched_ca_bundle: false,
                    };
                    return Ok((plan.bundle, report));
                }
                // Another replica created or changed it first: what it wrote wins; read it again.
                Err(e) if is_status(&e, |s| s.is_already_exists() || s.is_conflict()) => {
                    tracing::info!(
                        secret = %format!("{namespace}/{name}"),
                        "another replica wrote the certificate Secret first; using its certificate"
                    );
                    lost_race = true;
                }
                Err(source) => {
                    return Err(RotationError::WriteSecret {
                        verb,
                        namespace: namespace.clone(),
                        name: name.clone(),
                        source: Box::new(source),
                    });
                }
            }
        }
        Err(RotationError::Contended {
            namespace: namespace.clone(),
            name: name.clone(),
            attempts: MAX_ATTEMPTS,
        })
    }

    /// Hands the bundle's serving certificate to the resolver when it differs from the served one.
    fn serve(&self, bundle: &CertBundle) -> Result<bool, RotationError> {
        let pair = (bundle.serving.cert_pem.clone(), bundle.serving.key_pem.clone());
        let mut served = self.served.lock().unwrap_or_else(|e| e.into_inner());
        if served.as_ref() == Some(&pair) {
            return Ok(false);
        }
        let source = format!("Secret {}/{}", self.config.secret_namespace, self.config.secret_name);
        let key = certified_key(
            Path::new(&format!("{source} {TLS_CERT_KEY}")),
            pair.0.as_bytes(),
            Path::new(&format!("{source} {TLS_KEY_KEY}")),
            pair.1.as_bytes(),
        )?;
        self.resolver.set(key);
        *served = Some(pair);
        tracing::info!(secret = %source, "serving certificate loaded");
        Ok(true)
    }

    /// Writes the CA into every webhook of the configuration whose caBundle differs.
    async fn patch_ca_bundle(&self, ca_pem: &[u8]) -> Result<bool, RotationError> {
        let name = &self.config.webhook_config_name;
        let config = self
            .webhook_configs
            .get_opt(name)
            .await
            .map_err(|source| RotationError::WebhookConfig {
                verb: "read",
                name: name.clone(),
                source: Box::new(source),
            })?
            .ok_or_else(|| RotationError::WebhookConfigMissing(name.clone()))?;
        let Some(patch) = ca_bundle_patch(&config, ca_pem) else {
            return Ok(false);
        };
        self.webhook_configs
            .patch(name, &PatchParams::default(), &Patch::Json::<()>(patch))
            .await
            .map_err(|source| RotationError::WebhookConfig {
                verb: "patch",
                name: name.clone(),
                source: Box::new(source),
            })?;
        tracing::info!(
            mutating_webhook_configuration = %name,
            key = CA_CERT_KEY,
            "caBundle updated from the certificate Secret"
        );
        Ok(true)
    }

    /// Syncs now and then every `check_interval`, forever. A failed sync is logged and retried sooner (from half
    /// a second, doubling, up to the interval); the served certificate stays meanwhile.
    pub async fn run(self) {
        const FIRST_RETRY: Duration = Duration::from_millis(500);
        let interval = self.config.check_interval;
        let mut retry = FIRST_RETRY;
        let mut failing = false;
        loop {
            let wait = match self.sync().await {
                Ok(report) => {
                    if failing {
                        tracing::info!("certificate rotation recovered");
                    }
                    tracing::debug!(?report, "certificate check done");
                    failing = false;
                    retry = FIRST_RETRY;
                    interval
                }
                Err(e) => {
                    tracing::error!(error = %e, "certificate rotation failed; keeping the served certificate");
                    failing = true;
                    let wait = retry.min(interval);
                    retry = (retry * 2).min(interval);
                    wait
                }
            };
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests;
