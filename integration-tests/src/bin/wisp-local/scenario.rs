//! The local stack and the documented scenario, step by step. Every step prints one progress line; the first
//! failing step ends the run with its reason and the tail of the log of the program involved.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail, ensure};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use integration_tests::fake_entra::FederatedCredential;
use integration_tests::fake_keyvault::CertificateSpec;
use integration_tests::fake_kube::FakeKube;
use integration_tests::kubelet::{self, AgentLaunch, PodRef, csi};
use integration_tests::local_cloud::{ClientFiles, CloudNames, LOGIN_HOST, LocalCloud, VAULT_RESOURCE};
use integration_tests::pki::TestPki;
use integration_tests::process::{
    self, Program, RunningProgram, free_port, mount_namespaces_available, tmpfs_mounts_available,
};
use integration_tests::sync_launch::SyncLaunch;
use serde_json::{Value, json};
use tokio::sync::Notify;
use wisp_shared::contract::deploy;
use wisp_shared::contract::secrets_store as ss;
use wisp_shared::contract::workload_identity as wi;

use csi::node_client::NodeClient;

/// Guards against a hang only.
const PATIENCE: Duration = Duration::from_secs(30);

const TENANT: &str = "72f988bf-0000-4000-8000-00000000aaaa";
/// The user-assigned identity federated with the workload's ServiceAccount (`USER_ASSIGNED_CLIENT_ID`).
const WORKLOAD_CLIENT_ID: &str = "a1b2c3d4-0000-4000-8000-000000000001";
/// A user-assigned managed identity attached to the node (VM managed identity mode).
const NODE_IDENTITY_CLIENT_ID: &str = "a1b2c3d4-0000-4000-8000-000000000002";
/// The Key Vault add-on's identity, which Service Connector configures.
const ADDON_IDENTITY_CLIENT_ID: &str = "a1b2c3d4-0000-4000-8000-000000000003";
const VAULT: &str = "wisp-local-kv";
const CLOUD_NAMES: CloudNames<'static> = CloudNames::wisp_test("https://oidc.wisp.test/local-cluster");
const NAMESPACE: &str = "default";
const SERVICE_ACCOUNT: &str = "workload-identity-sa";
const EXAMPLE_SECRET_VALUE: &str = "MyAKSExampleSecret";
const MOUNT_PATH: &str = "/mnt/secrets-store";
/// The node kubelet runs on, as the agent (`--nodeid`), the pod's `spec.nodeName` and the CSINode name it.
const NODE: &str = "wisp-local-node";
/// The workload identity pod of the documentation.
const WORKLOAD_POD: &str = "busybox-secrets-store-inline-wi";
/// Where the chart would run wisp (the namespace of the agent's pod and the webhook's Service).
const WISP_NAMESPACE: &str = "wisp-system";
/// The SecretSync wisp-sync serves, and so its Secret's name.
const SYNCED_SECRET: &str = "example-secret";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MountChoice {
    Auto,
    Tmpfs,
    Directory,
}

#[derive(Debug)]
pub struct Options {
    pub keep_running: bool,
    pub no_build: bool,
    pub mount: MountChoice,
    pub bin_dir: Option<PathBuf>,
}

fn step(text: &str) {
    println!("==> {text}");
}

fn detail(text: &str) {
    for line in text.lines() {
        println!("    {line}");
    }
}

fn binary(options: &Options, name: &str) -> Result<PathBuf> {
    match &options.bin_dir {
        Some(dir) => {
            let path = dir.join(name);
            ensure!(path.is_file(), "{} does not exist (from --bin-dir)", path.display());
            Ok(path)
        }
        None => process::find_binary(name).map_err(|e| anyhow!(e)),
    }
}

/// The last lines of a program's output, for failure reports.
fn tail(program: &RunningProgram) -> String {
    program.log_tail(25)
}

/// Adds the program's recent output to an error, after the error itself.
fn with_log<T>(result: Result<T>, program: &RunningProgram) -> Result<T> {
    result.map_err(|e| anyhow!("{e:#}\n{}", tail(program)))
}

type Fakes = LocalCloud;

/// What the scenario leaves running.
struct Stack {
    fakes: Fakes,
    sync: RunningProgram,
    webhook: RunningProgram,
    webhook_port: u16,
    agent: RunningProgram,
    node: NodeClient<tonic::transport::Channel>,
    socket: PathBuf,
    volumes: Vec<(String, PathBuf)>,
    ca_file: PathBuf,
    kubeconfig: PathBuf,
    cloud_env: PathBuf,
}

/// Runs the scenario. `interrupt` is notified on SIGINT/SIGTERM: before the mounts are done that aborts the run,
/// with `--keep-running` it starts the orderly shutdown.
pub async fn run(options: Options, interrupt: Arc<Notify>) -> Result<()> {
    let work = tempfile::Builder::new()
        .prefix("wisp-local-")
        .tempdir()
        .context("creating a work directory")?;
    let dir = work.path();
    if options.bin_dir.is_none()
        && !options.no_build
        && let Some(cargo) = std::env::var_os("CARGO")
    {
        // Started by `cargo run`: build the two programs too (a no-op when up to date), so the README's one
        // command is enough and a stale binary is never used.
        step(
            "Building wisp-webhook, wisp-agent and wisp-sync (cargo build -p wisp-webhook -p wisp-agent -p wisp-sync)",
        );
        let mut build = std::process::Command::new(cargo);
        build.args([
            "build",
            "--quiet",
            "-p",
            "wisp-webhook",
            "-p",
            "wisp-agent",
            "-p",
            "wisp-sync",
        ]);
        if let Some(dir) = std::env::var_os("CARGO_MANIFEST_DIR") {
            build.current_dir(dir);
        }
        let release = std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(|dir| dir.ends_with("release")))
            .unwrap_or(false);
        if release {
            build.arg("--release");
        }
        let status = build.status().context("running cargo build")?;
        ensure!(
            status.success(),
            "cargo build -p wisp-webhook -p wisp-agent -p wisp-sync failed ({status})"
        );
    }
    let webhook_binary = binary(&options, "wisp-webhook")?;
    let agent_binary = binary(&options, "wisp-agent")?;
    let sync_binary = binary(&options, "wisp-sync")?;

    // Everything up to the finished mounts runs until done or until a signal, which drops (and so kills) what
    // was started.
    let bring_up = async {
        step("Starting the fake Kubernetes API, Microsoft Entra (with IMDS) and Key Vault");
        let fakes = LocalCloud::start(&CLOUD_NAMES, |config| config).await?;
        let ClientFiles {
            ca_file,
            kubeconfig,
            cloud_env,
        } = fakes.write_client_files(dir);
        detail(&format!(
            "kubernetes {}\nentra      {}\nimds       {}\nkey vault  {}",
            fakes.kube.url(),
            fakes.entra.authority_host(),
            fakes.entra.imds_proxy_url(),
            fakes.vault.vault_url(VAULT)
        ));

        step("Seeding the vault and the cluster");
        seed(&fakes, &cloud_env)?;
        detail(&format!(
            "vault {VAULT}: ExampleSecret, secret1, key1 (RSA), cert1 (certificate)\n\
             ServiceAccount {NAMESPACE}/{SERVICE_ACCOUNT} (client-id {WORKLOAD_CLIENT_ID}), federated credential for \
             system:serviceaccount:{NAMESPACE}:{SERVICE_ACCOUNT}\n\
             SecretProviderClasses azure-kvname-wi, azure-kvname-user-msi, sc-azure-kvname"
        ));

        step("Starting wisp-webhook");
        let (webhook, webhook_port) = start_webhook(&fakes, &webhook_binary, dir, &kubeconfig, &cloud_env).await?;
        detail(&format!(
            "admission endpoint https://127.0.0.1:{webhook_port}/mutate-v1-pod"
        ));

        step("Starting wisp-agent");
        let tmpfs = match options.mount {
            MountChoice::Auto => tmpfs_mounts_available(),
            MountChoice::Tmpfs => true,
            MountChoice::Directory => false,
        };
        let socket = dir.join("plugins/secrets-store.csi.k8s.io/csi.sock");
        let mut agent = start_agent(&fakes, &agent_binary, &socket, &kubeconfig, &ca_file, tmpfs)?;
        let mut node = connect(&mut agent, &socket).await?;
        with_log(register_with_kubelet(&fakes, &mut agent, &socket).await, &agent)?;
        detail(&format!(
            "CSI socket {} ({} mode{})",
            socket.display(),
            if tmpfs { "tmpfs" } else { "directory" },
            if mount_namespaces_available() {
                ", in its own mount namespace"
            } else {
                ""
            }
        ));

        step("Admitting pod busybox-secrets-store-inline-wi through the webhook (as kube-apiserver)");
        let pod = with_log(admit(&fakes.pki, webhook_port, &seed_pod()).await, &webhook)?;
        detail(&describe_mutation(&pod));
        // kube-apiserver stores the admitted pod (with its own uid), bound to the node; kubelet mounts that one.
        let pod = fakes.kube.upsert(pod);

        let scenarios = [
            (
                "Workload identity: mounting azure-kvname-wi for busybox-secrets-store-inline-wi (as kubelet)",
                pod,
                TokenSource::Entra,
            ),
            (
                "User-assigned managed identity: mounting azure-kvname-user-msi for busybox-secrets-store-inline-user-msi",
                plain_pod("busybox-secrets-store-inline-user-msi", "azure-kvname-user-msi"),
                TokenSource::Imds,
            ),
            (
                "Service Connector style (add-on identity): mounting sc-azure-kvname for sc-demo-keyvault-csi",
                plain_pod("sc-demo-keyvault-csi", "sc-azure-kvname"),
                TokenSource::Imds,
            ),
        ];
        let mut volumes = Vec::new();
        for (title, pod, source) in &scenarios {
            step(title);
            let before = (fakes.entra.token_requests(TENANT), fakes.entra.imds_requests());
            let (volume, files) = with_log(play_kubelet(&fakes, &mut node, &agent, dir, pod, tmpfs).await, &agent)?;
            let after = (fakes.entra.token_requests(TENANT), fakes.entra.imds_requests());
            let how = match source {
                TokenSource::Entra => {
                    ensure!(after.0 > before.0, "the agent got no token from Entra for this mount");
                    "the pod's service account token, exchanged at Entra for a Key Vault token"
                }
                TokenSource::Imds => {
                    ensure!(after.1 > before.1, "the agent asked IMDS for no token for this mount");
                    "a managed identity token from IMDS"
                }
            };
            detail(&format!("identity: {how}\n{files}"));
            volumes.push(volume);
        }

        step(&format!(
            "SecretSync: wisp-sync writes Secret {NAMESPACE}/{SYNCED_SECRET} from azure-kvname-wi, no pod involved"
        ));
        let sync = start_sync(&fakes, &sync_binary, &kubeconfig, &ca_file);
        let synced = with_log(secret_sync(&fakes).await, &sync)?;
        detail(&synced);

        Ok::<_, anyhow::Error>(Stack {
            fakes,
            sync,
            webhook,
            webhook_port,
            agent,
            node,
            socket,
            volumes,
            ca_file,
            kubeconfig,
            cloud_env,
        })
    };
    let stack = tokio::select! {
        result = bring_up => result?,
        () = interrupt.notified() => bail!("interrupted by a signal; everything started was stopped"),
    };
    let Stack {
        fakes,
        sync,
        webhook,
        webhook_port,
        agent,
        mut node,
        socket,
        volumes,
        ca_file,
        kubeconfig,
        cloud_env,
    } = stack;

    if options.keep_running {
        step("Everything is running; Ctrl-C stops it");
        detail(&format!(
            "KUBECONFIG={}\n\
             webhook     https://127.0.0.1:{webhook_port}/mutate-v1-pod (CA: {})\n\
             agent       unix://{} (CSI Identity + Node; see the pod UIDs above for target paths)\n\
             sync        wisp-sync, serving SecretSync {NAMESPACE}/{SYNCED_SECRET} (and any you add)\n\
             entra       {} (IMDS {})\n\
             key vault   {} (resolves inside the agent's namespace only)\n\
             cloud file  {}\n\
             doctor      KUBECONFIG={} kubectl wisp doctor pod/{WORKLOAD_POD} -n {NAMESPACE}\n\
             \x20           (kubectl-wisp on PATH, or: cargo run -p kubectl-wisp -- doctor ...)",
            kubeconfig.display(),
            ca_file.display(),
            socket.display(),
            fakes.entra.authority_host(),
            fakes.entra.imds_proxy_url(),
            fakes.vault.vault_url(VAULT),
            cloud_env.display(),
            kubeconfig.display(),
        ));
        interrupt.notified().await;
    }

    step("Unmounting the volumes (NodeUnpublishVolume, as kubelet when the pods are deleted)");
    for (volume_id, target) in &volumes {
        let unpublished = node
            .node_unpublish_volume(kubelet::unpublish_request(volume_id, target))
            .await
            .map_err(|status| anyhow!("NodeUnpublishVolume failed: {}: {}", status.code(), status.message()));
        with_log(unpublished, &agent)?;
        ensure!(
            !in_agent_namespace(&agent, target).exists(),
            "{} still exists after NodeUnpublishVolume",
            target.display()
        );
    }
    detail(&format!("{} volumes unmounted and removed", volumes.len()));

    step("Stopping wisp-sync, wisp-agent and wisp-webhook");
    let mut sync = sync;
    let sync_status = sync.terminate(PATIENCE).await;
    ensure!(
        sync_status.is_some_and(|s| s.success()),
        "wisp-sync did not stop cleanly on SIGTERM ({sync_status:?}); {}",
        tail(&sync)
    );
    let mut agent = agent;
    let mut webhook = webhook;
    let agent_status = agent.terminate(PATIENCE).await;
    let webhook_status = webhook.terminate(PATIENCE).await;
    ensure!(
        agent_status.is_some_and(|s| s.success()),
        "wisp-agent did not stop cleanly on SIGTERM ({agent_status:?}); {}",
        tail(&agent)
    );
    ensure!(
        webhook_status.is_some_and(|s| s.success()),
        "wisp-webhook did not stop cleanly on SIGTERM ({webhook_status:?}); {}",
        tail(&webhook)
    );
    step("Done: every step succeeded");
    Ok(())
}

/// Objects as the Azure documentation writes them for this scenario; the parameters `cloudName` and
/// `cloudEnvFileName` are added because the "cloud" here is the local fakes (a custom cloud, as on Azure Stack).
fn seed(fakes: &Fakes, cloud_env: &Path) -> Result<()> {
    let entra = &fakes.entra;
    entra.add_tenant(TENANT);
    entra.add_resource(VAULT_RESOURCE);
    entra.trust_issuer(fakes.issuer.issuer(), fakes.issuer.jwks());
    entra.add_federated_credential(
        TENANT,
        WORKLOAD_CLIENT_ID,
        FederatedCredential::for_service_account(fakes.issuer.issuer(), NAMESPACE, SERVICE_ACCOUNT),
    );
    entra.set_node_identities(TENANT, None, &[NODE_IDENTITY_CLIENT_ID, ADDON_IDENTITY_CLIENT_ID]);

    let vault = &fakes.vault;
    vault.add_vault(VAULT, TENANT);
    for client_id in [WORKLOAD_CLIENT_ID, NODE_IDENTITY_CLIENT_ID, ADDON_IDENTITY_CLIENT_ID] {
        vault.grant(client_id, VAULT).context("granting vault access")?;
    }
    vault
        .add_secret(VAULT, "ExampleSecret", EXAMPLE_SECRET_VALUE, None)
        .context("seeding ExampleSecret")?;
    vault
        .add_secret(VAULT, "secret1", "Hello from wisp-local", None)
        .context("seeding secret1")?;
    vault.add_rsa_key(VAULT, "key1").context("seeding key1")?;
    vault
        .add_certificate(VAULT, "cert1", &CertificateSpec::self_signed("wisp-local.example"))
        .context("seeding cert1")?;

    let kube = &fakes.kube;
    seed_chart_objects(kube);
    kube.upsert(json!({
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {
            "name": SERVICE_ACCOUNT,
            "namespace": NAMESPACE,
            "annotations": {wi::CLIENT_ID_ANNOTATION: WORKLOAD_CLIENT_ID},
        },
    }));
    let cloud = [
        ("cloudName", "AzureStackCloud".to_string()),
        ("cloudEnvFileName", cloud_env.display().to_string()),
    ];
    let objects = kubelet::objects_parameter(&[
        "objectName: ExampleSecret\nobjectType: secret\nobjectVersion: \"\"",
        "objectName: secret1\nobjectType: secret\nobjectVersion: \"\"",
        "objectName: key1\nobjectType: key\nobjectVersion: \"\"",
        "objectName: cert1\nobjectType: cert\nobjectVersion: \"\"",
    ]);
    let classes = [
        (
            "azure-kvname-wi",
            vec![("usePodIdentity", "false"), ("clientID", WORKLOAD_CLIENT_ID)],
        ),
        (
            "azure-kvname-user-msi",
            vec![
                ("usePodIdentity", "false"),
                ("useVMManagedIdentity", "true"),
                ("userAssignedIdentityID", NODE_IDENTITY_CLIENT_ID),
            ],
        ),
        (
            "sc-azure-kvname",
            vec![
                ("usePodIdentity", "false"),
                ("useVMManagedIdentity", "true"),
                ("userAssignedIdentityID", ADDON_IDENTITY_CLIENT_ID),
            ],
        ),
    ];
    for (name, identity) in classes {
        let mut parameters = serde_json::Map::new();
        for (key, value) in identity {
            parameters.insert(key.into(), json!(value));
        }
        parameters.insert("keyvaultName".into(), json!(VAULT));
        parameters.insert("objects".into(), json!(objects));
        parameters.insert("tenantId".into(), json!(TENANT));
        for (key, value) in &cloud {
            parameters.insert((*key).into(), json!(value));
        }
        kube.upsert(json!({
            "apiVersion": ss::API_VERSION,
            "kind": "SecretProviderClass",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"provider": ss::PROVIDER_AZURE, "parameters": parameters},
        }));
    }
    Ok(())
}

/// What installing the chart leaves in the API server (`helm/wisp`): the namespaces, the webhook's configuration
/// and the CSIDriver with its token request.
fn seed_chart_objects(kube: &FakeKube) {
    for namespace in [NAMESPACE, WISP_NAMESPACE] {
        kube.upsert(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}));
    }
    kube.upsert(json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": deploy::MUTATING_WEBHOOK_CONFIGURATION_NAME},
        "webhooks": [{
            "name": deploy::MUTATING_WEBHOOK_NAME,
            "admissionReviewVersions": ["v1"],
            "clientConfig": {"service": {"name": deploy::WEBHOOK_SERVICE_NAME, "namespace": WISP_NAMESPACE,
                                         "path": deploy::WEBHOOK_PATH, "port": 443}},
            "failurePolicy": "Fail",
            "sideEffects": "None",
            "namespaceSelector": {"matchExpressions": [
                {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": [WISP_NAMESPACE]}]},
            "objectSelector": {"matchLabels": {wi::USE_LABEL: "true"}},
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]}],
        }],
    }));
    kube.upsert(json!({
        "apiVersion": "storage.k8s.io/v1",
        "kind": "CSIDriver",
        "metadata": {"name": ss::DRIVER_NAME},
        "spec": {
            "podInfoOnMount": true,
            "attachRequired": false,
            "volumeLifecycleModes": ["Ephemeral"],
            "requiresRepublish": true,
            "tokenRequests": [{"audience": wi::DEFAULT_AUDIENCE}],
        },
    }));
}

/// Plays kubelet's plugin watcher: reads the agent's registration (GetInfo), accepts it, and records the driver
/// on the node (CSINode) as kubelet does; the agent running there is recorded as the DaemonSet's ready pod.
async fn register_with_kubelet(fakes: &Fakes, agent: &mut RunningProgram, socket: &Path) -> Result<()> {
    use integration_tests::kubelet::registration::registration_client::RegistrationClient;
    use integration_tests::kubelet::registration::{InfoRequest, RegistrationStatus};

    let registration_socket = socket
        .with_file_name("plugins_registry")
        .join(format!("{}-reg.sock", ss::DRIVER_NAME));
    let channel = kubelet::unix_channel(agent, &registration_socket, PATIENCE).await?;
    let mut registration = RegistrationClient::new(channel);
    let info = registration
        .get_info(InfoRequest {})
        .await
        .map_err(|status| anyhow!("GetInfo on the registration socket failed: {}", status.message()))?
        .into_inner();
    ensure!(
        info.name == ss::DRIVER_NAME,
        "the agent registers driver {:?}",
        info.name
    );
    registration
        .notify_registration_status(RegistrationStatus {
            plugin_registered: true,
            error: String::new(),
        })
        .await
        .map_err(|status| anyhow!("NotifyRegistrationStatus failed: {}", status.message()))?;
    fakes.kube.upsert(json!({
        "apiVersion": "storage.k8s.io/v1",
        "kind": "CSINode",
        "metadata": {"name": NODE},
        "spec": {"drivers": [{"name": info.name, "nodeID": NODE}]},
    }));
    fakes.kube.upsert(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "wisp-agent-local",
            "namespace": WISP_NAMESPACE,
            "labels": {"app.kubernetes.io/name": "wisp", "app.kubernetes.io/instance": "wisp",
                       "app.kubernetes.io/component": "agent"},
        },
        "spec": {"nodeName": NODE, "containers": [{"name": "agent", "image": "wisp-agent"}]},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
    }));
    Ok(())
}

fn inline_volume(class: &str) -> Value {
    json!({
        "name": "secrets-store01-inline",
        "csi": {
            "driver": ss::DRIVER_NAME,
            "readOnly": true,
            "volumeAttributes": {"secretProviderClass": class},
        },
    })
}

fn busybox(mounts: bool) -> Value {
    let mut container = json!({
        "name": "busybox",
        "image": "registry.k8s.io/e2e-test-images/busybox:1.29-4",
        "command": ["/bin/sleep", "10000"],
    });
    if mounts {
        container["volumeMounts"] =
            json!([{"name": "secrets-store01-inline", "mountPath": MOUNT_PATH, "readOnly": true}]);
    }
    container
}

/// The workload identity pod of the documentation.
fn seed_pod() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": WORKLOAD_POD,
            "namespace": NAMESPACE,
            "labels": {wi::USE_LABEL: "true"},
        },
        "spec": {
            "serviceAccountName": SERVICE_ACCOUNT,
            "nodeName": NODE,
            "containers": [busybox(true)],
            "volumes": [inline_volume("azure-kvname-wi")],
        },
    })
}

/// A pod that needs no webhook (not labelled for workload identity), mounting `class`.
fn plain_pod(name: &str, class: &str) -> Value {
    let uid_suffix = if name.contains("user-msi") { 2 } else { 3 };
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "uid": format!("6f1e0c1e-0000-4000-8000-00000000000{uid_suffix}"),
        },
        "spec": {
            "serviceAccountName": "default",
            "containers": [busybox(true)],
            "volumes": [inline_volume(class)],
        },
    })
}

async fn start_webhook(
    fakes: &Fakes,
    binary: &Path,
    dir: &Path,
    kubeconfig: &Path,
    cloud_env: &Path,
) -> Result<(RunningProgram, u16)> {
    let cert_dir = dir.join("webhook-certs");
    std::fs::create_dir_all(&cert_dir).context("creating the webhook certificate directory")?;
    fakes
        .pki
        .write_server_cert(&cert_dir, &["wisp-webhook.wisp-system.svc"]);
    let (port, health_port, metrics_port) = (free_port(), free_port(), free_port());
    let mut webhook = Program::from_path("wisp-webhook", binary)
        .args([
            format!("--port={port}"),
            format!("--health-addr=127.0.0.1:{health_port}"),
            format!("--metrics-addr=127.0.0.1:{metrics_port}"),
            format!("--webhook-cert-dir={}", cert_dir.display()),
            "--log-level=info".to_string(),
        ])
        .env("KUBECONFIG", kubeconfig)
        .env(wi::ENV_TENANT_ID, TENANT)
        .env("AZURE_ENVIRONMENT", "AzureStackCloud")
        .env("AZURE_ENVIRONMENT_FILEPATH", cloud_env)
        .env_remove("RUST_LOG")
        .own_process_group()
        .spawn();
    let ready = format!("http://127.0.0.1:{health_port}/readyz");
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Ok(response) = http.get(&ready).send().await
            && response.status().is_success()
        {
            return Ok((webhook, port));
        }
        if let Some(status) = webhook.try_wait() {
            bail!("wisp-webhook exited ({status}) before it was ready; {}", tail(&webhook));
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("wisp-webhook was not ready within {PATIENCE:?}; {}", tail(&webhook));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn start_agent(
    fakes: &Fakes,
    binary: &Path,
    socket: &Path,
    kubeconfig: &Path,
    ca_file: &Path,
    tmpfs: bool,
) -> Result<RunningProgram> {
    if let Some(parent) = socket.parent() {
        std::fs::create_dir_all(parent).context("creating the plugin directory")?;
    }
    Ok(AgentLaunch {
        binary,
        socket,
        node_id: NODE,
        tmpfs,
        kubeconfig,
        ca_file,
        loopback_names: vec![LOGIN_HOST.to_string(), fakes.vault.vault_host(VAULT)],
        log_level: "info",
        metrics_port: free_port(),
        health_port: free_port(),
    }
    .program()
    .arg(format!("--imds-endpoint={}", fakes.entra.imds_proxy_url()))
    .own_process_group()
    .spawn())
}

fn start_sync(fakes: &Fakes, binary: &Path, kubeconfig: &Path, ca_file: &Path) -> RunningProgram {
    SyncLaunch {
        binary,
        interval: "2m",
        pod_name: None,
        kubeconfig,
        ca_file,
        loopback_names: vec![LOGIN_HOST.to_string(), fakes.vault.vault_host(VAULT)],
        log_level: "info",
        metrics_port: free_port(),
        health_port: free_port(),
    }
    .program()
    .arg(format!("--imds-endpoint={}", fakes.entra.imds_proxy_url()))
    .own_process_group()
    .spawn()
}

/// Creates SecretSync [`SYNCED_SECRET`] (ExampleSecret of class azure-kvname-wi, with the workload identity's
/// ServiceAccount) and waits for its Secret and status; returns what to show.
async fn secret_sync(fakes: &Fakes) -> Result<String> {
    let kube = &fakes.kube;
    kube.upsert(json!({
        "apiVersion": "secret-sync.x-k8s.io/v1alpha1",
        "kind": "SecretSync",
        "metadata": {"name": SYNCED_SECRET, "namespace": NAMESPACE},
        "spec": {
            "secretProviderClassName": "azure-kvname-wi",
            "serviceAccountName": SERVICE_ACCOUNT,
            "secretObject": {"data": [{"sourcePath": "ExampleSecret", "targetKey": "example"}]},
        },
    }));
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let sync = kube.get(
            "secret-sync.x-k8s.io/v1alpha1",
            "SecretSync",
            Some(NAMESPACE),
            SYNCED_SECRET,
        );
        let condition = sync
            .as_ref()
            .and_then(|s| s["status"]["conditions"].as_array().and_then(|c| c.first()).cloned());
        if let (Some(condition), Some(secret)) = (
            condition.clone(),
            kube.get("v1", "Secret", Some(NAMESPACE), SYNCED_SECRET),
        ) {
            let value = STANDARD
                .decode(secret["data"]["example"].as_str().unwrap_or(""))
                .context("the Secret's data is not base64")?;
            ensure!(
                condition["reason"] == "CreateSucceeded",
                "the SecretSync's condition is {condition}"
            );
            return Ok(format!(
                "SecretSync {NAMESPACE}/{SYNCED_SECRET}: {} {} {}, syncHash {}…\n\
                 Secret {NAMESPACE}/{SYNCED_SECRET}: labels {}, owner SecretSync {}\n\
                 data.example = {}",
                condition["type"].as_str().unwrap_or(""),
                condition["status"].as_str().unwrap_or(""),
                condition["reason"].as_str().unwrap_or(""),
                sync.as_ref()
                    .and_then(|s| s["status"]["syncHash"].as_str())
                    .unwrap_or("")
                    .chars()
                    .take(16)
                    .collect::<String>(),
                secret["metadata"]["labels"],
                secret["metadata"]["ownerReferences"][0]["name"].as_str().unwrap_or(""),
                String::from_utf8_lossy(&value),
            ));
        }
        if let Some(condition) = condition.filter(|c| c["status"] == "False") {
            bail!("the SecretSync failed: {condition}");
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("no Secret {NAMESPACE}/{SYNCED_SECRET} within {PATIENCE:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn connect(agent: &mut RunningProgram, socket: &Path) -> Result<NodeClient<tonic::transport::Channel>> {
    let connected = kubelet::connect(agent, socket, PATIENCE).await;
    with_log(connected.map_err(anyhow::Error::from), agent)
}

/// Sends the pod to the webhook as kube-apiserver would and returns the pod with the patch applied.
async fn admit(pki: &TestPki, port: u16, pod: &Value) -> Result<Value> {
    let review = json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "0c0c0c0c-0000-4000-8000-000000000001",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": NAMESPACE,
            "operation": "CREATE",
            "userInfo": {"username": "kubernetes-admin", "groups": ["system:masters", "system:authenticated"]},
            "object": pod,
            "oldObject": null,
            "dryRun": false,
        },
    });
    let response = pki
        .reqwest_client()
        .post(format!("https://127.0.0.1:{port}/mutate-v1-pod"))
        .json(&review)
        .send()
        .await
        .context("sending the AdmissionReview")?;
    let status = response.status();
    let body: Value = response.json().await.context("reading the AdmissionReview response")?;
    ensure!(status.is_success(), "the webhook answered {status}: {body}");
    let answer = &body["response"];
    ensure!(answer["allowed"] == json!(true), "the webhook denied the pod: {answer}");
    // The API server accepts the patch as base64 text; kube-rs writes the same bytes as a JSON number array.
    let patch_bytes = match &answer["patch"] {
        Value::String(b64) => STANDARD.decode(b64).context("the patch is not base64")?,
        Value::Array(numbers) => numbers
            .iter()
            .map(|n| n.as_u64().and_then(|n| u8::try_from(n).ok()))
            .collect::<Option<Vec<u8>>>()
            .ok_or_else(|| anyhow!("the patch array holds something other than bytes"))?,
        Value::Null => bail!("the webhook allowed the pod without mutating it"),
        other => bail!("unexpected patch field: {other}"),
    };
    let patch: json_patch::Patch = serde_json::from_slice(&patch_bytes).context("the patch is not a JSON Patch")?;
    let mut mutated = pod.clone();
    json_patch::patch(&mut mutated, &patch).context("the patch does not apply to the pod")?;
    Ok(mutated)
}

fn describe_mutation(pod: &Value) -> String {
    let mut out = String::new();
    let container = &pod["spec"]["containers"][0];
    out.push_str("env of container busybox:\n");
    for var in container["env"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "  {}={}\n",
            var["name"].as_str().unwrap_or("?"),
            var["value"].as_str().unwrap_or("")
        ));
    }
    out.push_str("volume mounts:\n");
    for mount in container["volumeMounts"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "  {} -> {}\n",
            mount["name"].as_str().unwrap_or("?"),
            mount["mountPath"].as_str().unwrap_or("?")
        ));
    }
    out.push_str("volumes:\n");
    for volume in pod["spec"]["volumes"].as_array().into_iter().flatten() {
        let name = volume["name"].as_str().unwrap_or("?");
        let kind = if let Some(sources) = volume["projected"]["sources"].as_array() {
            let token = &sources
                .first()
                .map(|s| s["serviceAccountToken"].clone())
                .unwrap_or(Value::Null);
            format!(
                "projected serviceAccountToken (audience {}, expirationSeconds {}, path {})",
                token["audience"].as_str().unwrap_or("?"),
                token["expirationSeconds"],
                token["path"].as_str().unwrap_or("?")
            )
        } else if volume["csi"].is_object() {
            format!(
                "csi {} (secretProviderClass {})",
                volume["csi"]["driver"].as_str().unwrap_or("?"),
                volume["csi"]["volumeAttributes"]["secretProviderClass"]
                    .as_str()
                    .unwrap_or("?")
            )
        } else {
            "other".to_string()
        };
        out.push_str(&format!("  {name}: {kind}\n"));
    }
    out
}

#[derive(Debug, Clone, Copy)]
enum TokenSource {
    Entra,
    Imds,
}

/// `path` as the agent sees it (it may run in its own mount namespace).
fn in_agent_namespace(agent: &RunningProgram, path: &Path) -> PathBuf {
    kubelet::in_namespace_of(agent.pid(), path)
}

/// Plays kubelet for the pod's CSI volume: mints the token kubelet requests for the CSIDriver's audience, calls
/// NodePublishVolume with the volume_context kubelet builds, and shows the volume as the container sees it.
async fn play_kubelet(
    fakes: &Fakes,
    node: &mut NodeClient<tonic::transport::Channel>,
    agent: &RunningProgram,
    dir: &Path,
    pod: &Value,
    tmpfs: bool,
) -> Result<((String, PathBuf), String)> {
    let name = pod["metadata"]["name"].as_str().unwrap_or_default();
    let uid = pod["metadata"]["uid"].as_str().unwrap_or_default();
    let service_account = pod["spec"]["serviceAccountName"].as_str().unwrap_or("default");
    let volume = pod["spec"]["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["csi"]["driver"] == json!(ss::DRIVER_NAME))
        .ok_or_else(|| anyhow!("pod {name} has no {} volume", ss::DRIVER_NAME))?;
    let volume_name = volume["name"].as_str().unwrap_or_default();
    let tokens = fakes
        .issuer
        .csi_tokens_json(NAMESPACE, service_account, name, uid, Duration::from_secs(3600))
        .context("minting the pod's service account token")?;
    let attributes = volume["csi"]["volumeAttributes"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(key, value)| (key.clone(), value.as_str().unwrap_or_default().to_string()));
    let pod_ref = PodRef {
        namespace: NAMESPACE,
        name,
        uid,
        service_account,
    };
    let context = kubelet::volume_context(attributes, &pod_ref, tokens);
    let target = kubelet::target_path(dir, uid, volume_name);
    let volume_id = format!("csi-{uid}-{volume_name}");
    let request = kubelet::publish_request(&volume_id, &target, context);
    node.node_publish_volume(request)
        .await
        .map_err(|status| anyhow!("NodePublishVolume failed: {}: {}", status.code(), status.message()))?;

    let mounted = kubelet::is_mount_point(agent.pid(), &target);
    ensure!(
        mounted == tmpfs,
        "{} is {}a mount point, but the agent runs in {} mode",
        target.display(),
        if mounted { "" } else { "not " },
        if tmpfs { "tmpfs" } else { "directory" }
    );
    let seen = in_agent_namespace(agent, &target);
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(&seen).with_context(|| format!("reading {}", seen.display()))? {
        let entry = entry.context("reading the volume")?;
        let file_name = entry.file_name().to_string_lossy().to_string();
        if file_name.starts_with('.') {
            continue;
        }
        let bytes = std::fs::read(entry.path()).with_context(|| format!("reading {file_name}"))?;
        files.insert(file_name, bytes);
    }
    let mut out = format!(
        "volume: {} ({})\n$ ls {MOUNT_PATH}/\n",
        target.display(),
        if tmpfs { "a tmpfs mount" } else { "a plain directory" }
    );
    out.push_str(&files.keys().cloned().collect::<Vec<_>>().join("\n"));
    out.push('\n');
    let example = files
        .get("ExampleSecret")
        .ok_or_else(|| anyhow!("the volume has no ExampleSecret"))?;
    ensure!(
        example.as_slice() == EXAMPLE_SECRET_VALUE.as_bytes(),
        "ExampleSecret holds {} bytes that are not the seeded value",
        example.len()
    );
    out.push_str(&format!(
        "$ cat {MOUNT_PATH}/ExampleSecret\n{}\n",
        String::from_utf8_lossy(example)
    ));
    let first_line = |name: &str| {
        files
            .get(name)
            .and_then(|b| String::from_utf8_lossy(b).lines().next().map(str::to_string))
            .unwrap_or_default()
    };
    out.push_str(&format!("$ head -1 {MOUNT_PATH}/key1\n{}\n", first_line("key1")));
    out.push_str(&format!("$ head -1 {MOUNT_PATH}/cert1\n{}", first_line("cert1")));
    Ok(((volume_id, target), out))
}
