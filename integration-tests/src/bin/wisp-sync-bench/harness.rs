//! The fakes seeded with the [`Layout`], the real `wisp-sync` against them, and what can be read off both: the
//! requests each fake saw, the controller's `/metrics`, and the Secrets the fake API server holds.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, ensure};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use integration_tests::fake_entra::FederatedCredential;
use integration_tests::fake_kube::RecordedRequest;
use integration_tests::kubelet;
use integration_tests::local_cloud::{CloudNames, LOGIN_HOST, LocalCloud, RequestCounts};
use integration_tests::process::{self, RunningProgram, free_port};
use integration_tests::prometheus_text::sample_sum;
use integration_tests::sync_launch::SyncLaunch;
use serde_json::{Value, json};
use wisp_shared::contract::secrets_store as ss;

use crate::flags::Cli;
use crate::layout::{Layout, SERVICE_ACCOUNT, object_name, secret_value};

/// Guards against a hang only: no request of a healthy controller comes near it.
pub(crate) const PATIENCE: Duration = Duration::from_secs(30);
pub(crate) const TENANT: &str = "72f988bf-0000-4000-8000-0000000be4c4";
pub(crate) const CLIENT_ID: &str = "c4c4c4c4-0000-4000-8000-000000000001";
pub(crate) const VAULT: &str = "syncbench";
const SECRET_SYNC_V1ALPHA1: &str = "secret-sync.x-k8s.io/v1alpha1";

/// Requests seen by the fakes so far, and the API server's writes of Secrets and SecretSync statuses among them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub requests: RequestCounts,
    /// Server-side applies of Secrets.
    pub secret_writes: u64,
    /// Writes of SecretSync statuses.
    pub status_writes: u64,
}

impl std::ops::Sub for Counts {
    type Output = Counts;
    fn sub(self, before: Counts) -> Counts {
        Counts {
            requests: self.requests - before.requests,
            secret_writes: self.secret_writes - before.secret_writes,
            status_writes: self.status_writes - before.status_writes,
        }
    }
}

fn is_secret_write(r: &RecordedRequest) -> bool {
    r.method == "PATCH" && r.path.starts_with("/api/v1/namespaces/") && r.path.contains("/secrets/")
}

fn is_status_write(r: &RecordedRequest) -> bool {
    r.method == "PATCH" && r.path.contains("/secretsyncs/") && r.path.ends_with("/status")
}

/// The fakes and the controller. Fields drop in order: the controller (killed, if still running) before the
/// fakes and the work directory.
pub(crate) struct Bench {
    pub sync: RunningProgram,
    pub cloud: LocalCloud,
    /// Holds the client files wisp-sync reads; removed when dropped, after the controller is gone.
    pub _work: tempfile::TempDir,
    pub layout: Layout,
    /// `/metrics`, `/healthz` and `/readyz`.
    pub http_port: u16,
    pub http: reqwest::Client,
}

impl Bench {
    /// Starts the fakes, seeds them with `layout` (everything but the SecretSyncs) and starts wisp-sync; returns
    /// once it is ready (both its caches listed).
    pub(crate) async fn start(cli: &Cli, binary: &Path, layout: Layout) -> Result<Self> {
        let work = tempfile::Builder::new()
            .prefix("wisp-sync-bench-")
            .tempdir()
            .context("creating a work directory")?;
        let cloud = LocalCloud::start(&CloudNames::wisp_test("https://oidc.wisp.test/sync-bench"), |c| c).await?;
        let files = cloud.write_client_files(work.path());
        let LocalCloud {
            kube,
            entra,
            vault,
            issuer,
            ..
        } = &cloud;
        cloud
            .add_tenant_with_vault(TENANT, VAULT, CLIENT_ID)
            .context("seeding the tenant and its vault")?;
        for i in 0..layout.objects {
            vault
                .add_secret(VAULT, &object_name(i), &secret_value(i, 0), None)
                .context("seeding a secret")?;
        }
        for namespace in &layout.namespaces {
            entra.add_federated_credential(
                TENANT,
                CLIENT_ID,
                FederatedCredential::for_service_account(issuer.issuer(), namespace, SERVICE_ACCOUNT),
            );
            kube.upsert(json!({
                "apiVersion": "v1", "kind": "ServiceAccount",
                "metadata": {"name": SERVICE_ACCOUNT, "namespace": namespace},
            }));
        }
        for class in &layout.classes {
            let objects: Vec<String> = class
                .objects
                .iter()
                .map(|&o| format!("objectName: {}\nobjectType: secret", object_name(o)))
                .collect();
            let objects: Vec<&str> = objects.iter().map(String::as_str).collect();
            kube.upsert(json!({
                "apiVersion": ss::API_VERSION,
                "kind": "SecretProviderClass",
                "metadata": {"name": class.name, "namespace": class.namespace},
                "spec": {"provider": ss::PROVIDER_AZURE, "parameters": {
                    "clientID": CLIENT_ID,
                    "keyvaultName": VAULT,
                    "tenantId": TENANT,
                    "cloudName": process::CUSTOM_CLOUD_NAME,
                    "cloudEnvFileName": files.cloud_env.display().to_string(),
                    "objects": kubelet::objects_parameter(&objects),
                }},
            }));
        }
        cloud.set_azure_latency(VAULT, Duration::from_millis(cli.latency_ms));

        let http_port = free_port();
        let interval = format!("{}s", cli.interval_secs);
        let mut sync = SyncLaunch {
            binary,
            interval: &interval,
            pod_name: Some("wisp-sync-bench"),
            kubeconfig: &files.kubeconfig,
            ca_file: &files.ca_file,
            loopback_names: vec![LOGIN_HOST.to_string(), vault.vault_host(VAULT)],
            log_level: "info",
            metrics_port: http_port,
            health_port: http_port,
        }
        .program()
        .args(&cli.sync_args)
        .spawn();
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(PATIENCE)
            .build()
            .context("building the HTTP client for /metrics")?;
        wait_ready(&http, &mut sync, http_port).await?;
        Ok(Self {
            sync,
            cloud,
            _work: work,
            layout,
            http_port,
            http,
        })
    }

    pub(crate) fn counts(&self) -> Counts {
        let kube = &self.cloud.kube;
        Counts {
            requests: self.cloud.request_counts(),
            secret_writes: kube.count_requests(is_secret_write) as u64,
            status_writes: kube.count_requests(is_status_write) as u64,
        }
    }

    /// Creates every SecretSync of the layout, each syncing its class's objects to keys of their names.
    pub(crate) fn create_syncs(&self) {
        for sync in &self.layout.syncs {
            let class = &self.layout.classes[sync.class];
            let data: Vec<Value> = class
                .objects
                .iter()
                .map(|&o| json!({"sourcePath": object_name(o), "targetKey": object_name(o)}))
                .collect();
            self.cloud.kube.upsert(json!({
                "apiVersion": SECRET_SYNC_V1ALPHA1, "kind": "SecretSync",
                "metadata": {"name": sync.name, "namespace": sync.namespace},
                "spec": {
                    "secretProviderClassName": class.name,
                    "serviceAccountName": SERVICE_ACCOUNT,
                    "secretObject": {"type": "Opaque", "data": data},
                },
            }));
        }
    }

    /// Adds version `generation` of every secret in the fake Key Vault.
    pub(crate) fn rotate_all(&self, generation: u32) -> Result<()> {
        for i in 0..self.layout.objects {
            self.cloud
                .vault
                .add_secret(VAULT, &object_name(i), &secret_value(i, generation), None)
                .context("adding a secret version")?;
        }
        Ok(())
    }

    /// How many SecretSyncs' Secrets hold exactly the bytes of version `generation` of their objects: every key,
    /// nothing more.
    pub(crate) fn secrets_holding(&self, generation: u32) -> usize {
        let secrets: HashMap<(String, String), Value> = self
            .cloud
            .kube
            .list("v1", "Secret")
            .into_iter()
            .map(|s| {
                let text = |f: &str| s["metadata"][f].as_str().unwrap_or("").to_string();
                ((text("namespace"), text("name")), s)
            })
            .collect();
        self.layout
            .syncs
            .iter()
            .filter(|sync| {
                let Some(secret) = secrets.get(&(sync.namespace.clone(), sync.name.clone())) else {
                    return false;
                };
                let Some(data) = secret["data"].as_object() else {
                    return false;
                };
                let objects = &self.layout.classes[sync.class].objects;
                data.len() == objects.len()
                    && objects.iter().all(|&o| {
                        data.get(&object_name(o))
                            .and_then(Value::as_str)
                            .and_then(|b64| STANDARD.decode(b64).ok())
                            .is_some_and(|bytes| bytes == secret_value(o, generation).as_bytes())
                    })
            })
            .count()
    }

    /// The controller's `/metrics` text.
    pub(crate) async fn metrics(&self) -> Result<String> {
        let url = format!("http://127.0.0.1:{}/metrics", self.http_port);
        let response = self.http.get(&url).send().await.with_context(|| format!("GET {url}"))?;
        ensure!(response.status().is_success(), "GET {url}: {}", response.status());
        response.text().await.with_context(|| format!("reading {url}"))
    }

    /// Syncs so far (`rotation_reconcile_total`): those that succeeded and those that failed.
    pub(crate) async fn reconciles(&self) -> Result<(u64, u64)> {
        let text = self.metrics().await?;
        let ok = sample_sum(&text, "rotation_reconcile_total", "successful=\"true\"");
        let failed = sample_sum(&text, "rotation_reconcile_total", "successful=\"false\"");
        Ok((ok as u64, failed as u64))
    }
}

/// Waits until `/readyz` answers 200 (both caches listed), or the controller exits, or [`PATIENCE`] passes.
async fn wait_ready(http: &reqwest::Client, sync: &mut RunningProgram, port: u16) -> Result<()> {
    let url = format!("http://127.0.0.1:{port}/readyz");
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while tokio::time::Instant::now() < deadline {
        if let Some(status) = sync.try_wait() {
            return Err(anyhow!("wisp-sync exited ({status})\n{}", tail(sync)));
        }
        if let Ok(answer) = http.get(&url).send().await
            && answer.status().is_success()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(anyhow!("{url} did not answer 200 within {PATIENCE:?}\n{}", tail(sync)))
}

/// The last lines of the controller's output, for failure reports.
pub(crate) fn tail(program: &RunningProgram) -> String {
    program.log_tail(20)
}
