//! The harness of the real `wisp-agent` binary, shared by every end-to-end test of the agent: the fakes started
//! as one [`LocalCloud`] and seeded with one tenant, one vault and one workload identity ([`AgentEnv`]),
//! SecretProviderClasses pointing at them, kubelet's NodePublishVolume requests with real service-account tokens,
//! and a running agent ([`Agent`]) with its sockets, its mount namespace view, its volume record, metrics and logs.
//!
//! The agent runs with `integration_tests::process`: in a private mount namespace whose hosts file maps the
//! fakes' names to 127.0.0.1, so it resolves them with the system resolver as in production. Its tmpfs mounts
//! live in that namespace, so tests look at a volume through [`Agent::view`] (`/proc/<agent pid>/root`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};
use tonic::transport::Channel;

use crate::fake_entra::FederatedCredential;
use crate::fake_keyvault::{KeyVaultConfig, ObjectKind};
use crate::kubelet::csi::NodePublishVolumeRequest;
use crate::kubelet::csi::node_client::NodeClient;
use crate::kubelet::{self, AgentLaunch, PodRef};
use crate::local_cloud::{ClientFiles, CloudNames, LOGIN_HOST, LocalCloud};
use crate::process::{RunningProgram, built_binary, free_port, tmpfs_mounts_available};

/// How long the harness waits for the agent's socket; guards against a hang only, no test asserts on timing.
const PATIENCE: Duration = Duration::from_secs(60);
/// The tenant of the vault and of every identity.
pub const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
/// The one vault, readable by [`CLIENT`].
pub const VAULT: &str = "kv1";
/// The workload identity: federated with `ns-a/sa-a` ([`POD_A`]'s service account), granted on [`VAULT`].
pub const CLIENT: &str = "0a0a0a0a-0000-0000-0000-00000000000a";
/// The SecretProviderClass API version, also that of SecretProviderClassPodStatus.
pub const SECRETS_STORE_V1: &str = "secrets-store.csi.x-k8s.io/v1";

const CLOUD_NAMES: CloudNames<'static> = CloudNames::wisp_test("https://oidc.wisp.test/cluster1");

/// A pod as the tests name it; its uid is the API server's if the pod exists there (see [`AgentEnv::pod_uid`]).
#[derive(Debug, Clone, Copy)]
pub struct Pod<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub service_account: &'a str,
}

/// The pod whose service account `ns-a/sa-a` is federated with [`CLIENT`].
pub const POD_A: Pod<'static> = Pod {
    namespace: "ns-a",
    name: "pod-a",
    service_account: "sa-a",
};

/// The running fakes, seeded with [`TENANT`], [`VAULT`] and [`CLIENT`], and a directory for the client files,
/// the agent's sockets and kubelet's target paths.
pub struct AgentEnv {
    pub cloud: LocalCloud,
    pub files: ClientFiles,
    pub dir: tempfile::TempDir,
}

impl AgentEnv {
    /// Starts the fakes; `configure` may adjust Key Vault (e.g. its page size).
    pub async fn start(configure: impl FnOnce(KeyVaultConfig) -> KeyVaultConfig) -> Self {
        let cloud = LocalCloud::start(&CLOUD_NAMES, configure).await.expect("the fakes");
        let (entra, vault, issuer) = (&cloud.entra, &cloud.vault, &cloud.issuer);
        entra.add_tenant(TENANT);
        entra.add_resource(CLOUD_NAMES.vault_resource);
        entra.trust_issuer(issuer.issuer(), issuer.jwks());
        entra.add_federated_credential(
            TENANT,
            CLIENT,
            FederatedCredential::for_service_account(issuer.issuer(), POD_A.namespace, POD_A.service_account),
        );
        vault.add_vault(VAULT, TENANT);
        vault.grant(CLIENT, VAULT).expect("grant");
        let dir = tempfile::tempdir().expect("tempdir");
        let files = cloud.write_client_files(dir.path());
        Self { cloud, files, dir }
    }

    /// The parameters of a SecretProviderClass reading `objects` (YAML strings) from [`VAULT`] of the local
    /// cloud, with `extra` added over them (e.g. `clientID`).
    pub fn spc_parameters(&self, objects: &[&str], extra: &[(&str, &str)]) -> BTreeMap<String, String> {
        let mut parameters: BTreeMap<String, String> = [
            ("keyvaultName", VAULT.to_string()),
            ("tenantID", TENANT.to_string()),
            ("cloudName", "AzureStackCloud".to_string()),
            ("cloudEnvFileName", self.files.cloud_env.display().to_string()),
            ("objects", kubelet::objects_parameter(objects)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        parameters.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        parameters
    }

    /// A SecretProviderClass in `namespace` with [`spc_parameters`](Self::spc_parameters).
    pub fn add_spc(&self, namespace: &str, name: &str, extra: &[(&str, &str)], objects: &[&str]) {
        self.add_spc_with(namespace, name, &self.spc_parameters(objects, extra), None);
    }

    /// A SecretProviderClass with exactly `parameters`, and `secretObjects` if given.
    pub fn add_spc_with(
        &self,
        namespace: &str,
        name: &str,
        parameters: &BTreeMap<String, String>,
        secret_objects: Option<Value>,
    ) {
        let mut spec = json!({"provider": "azure", "parameters": parameters});
        if let Some(secret_objects) = secret_objects {
            spec["secretObjects"] = secret_objects;
        }
        self.cloud.kube.upsert(json!({
            "apiVersion": SECRETS_STORE_V1,
            "kind": "SecretProviderClass",
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec,
        }));
    }

    /// `pod` as the API server holds it, with `owners`: one inline volume `secrets` of the driver using `spc`
    /// (what secret sync reads to find the pod's volume).
    pub fn add_pod(&self, pod: &Pod<'_>, spc: &str, owners: Value) {
        self.cloud.kube.upsert(json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": pod.name, "namespace": pod.namespace, "ownerReferences": owners},
            "spec": {
                "serviceAccountName": pod.service_account,
                "containers": [{"name": "app", "image": "busybox"}],
                "volumes": [{
                    "name": "secrets",
                    "csi": {
                        "driver": "secrets-store.csi.k8s.io",
                        "readOnly": true,
                        "volumeAttributes": {"secretProviderClass": spc},
                    },
                }],
            },
        }));
    }

    /// The uid the API server gave the pod, or `uid-<pod>` for pods the tests do not create there.
    pub fn pod_uid(&self, namespace: &str, pod: &str) -> String {
        self.cloud
            .kube
            .get("v1", "Pod", Some(namespace), pod)
            .and_then(|p| p["metadata"]["uid"].as_str().map(str::to_string))
            .unwrap_or_else(|| format!("uid-{pod}"))
    }

    /// The pod as kubelet describes it in the volume_context.
    pub fn pod_ref<'a>(&self, pod: &Pod<'a>, uid: &'a str) -> PodRef<'a> {
        PodRef {
            namespace: pod.namespace,
            name: pod.name,
            uid,
            service_account: pod.service_account,
        }
    }

    /// The `serviceAccount.tokens` volume_context value kubelet sends for `pod`: an hour-long token of the
    /// cluster's issuer.
    pub fn tokens_json(&self, pod: &Pod<'_>) -> String {
        let uid = self.pod_uid(pod.namespace, pod.name);
        self.cloud
            .issuer
            .csi_tokens_json(
                pod.namespace,
                pod.service_account,
                pod.name,
                &uid,
                Duration::from_secs(3600),
            )
            .expect("SA token")
    }

    /// kubelet's target path of `pod`'s volume `secrets` under the test's directory (not created: kubelet ≥ 1.20
    /// leaves that to the driver).
    pub fn target(&self, namespace: &str, pod: &str) -> PathBuf {
        kubelet::target_path(self.dir.path(), &self.pod_uid(namespace, pod), "secrets")
    }

    /// The NodePublishVolume kubelet sends for `pod`'s inline volume of SecretProviderClass `spc` at `target`.
    pub fn publish_request(&self, pod: &Pod<'_>, spc: &str, target: &Path) -> NodePublishVolumeRequest {
        let uid = self.pod_uid(pod.namespace, pod.name);
        let context = kubelet::volume_context(
            [("secretProviderClass".to_string(), spc.to_string())],
            &self.pod_ref(pod, &uid),
            self.tokens_json(pod),
        );
        kubelet::publish_request(&format!("csi-{}", pod.name), target, context)
    }

    /// Key Vault reads of the latest versions of secrets `names`, summed.
    pub fn secret_reads(&self, names: &[&str]) -> u64 {
        names
            .iter()
            .map(|name| self.cloud.vault.object_requests(VAULT, ObjectKind::Secret, name))
            .sum()
    }
}

/// A running `wisp-agent` against an [`AgentEnv`], with its CSI socket at `csi/<name>` under the test's
/// directory, `/metrics` and `/healthz` on free loopback ports, and its logs at debug level.
pub struct Agent {
    pub program: RunningProgram,
    pub socket: PathBuf,
    pub registration_socket: PathBuf,
    /// `--mount-mode=tmpfs` (else `directory`).
    pub tmpfs: bool,
    pub metrics_port: u16,
    pub health_port: u16,
}

impl Agent {
    /// An agent at `csi/csi.sock`, mounting tmpfs where this machine permits it.
    pub fn start(env: &AgentEnv) -> Self {
        Self::start_with(env, tmpfs_mounts_available(), &[])
    }

    /// An agent at `csi/csi.sock` with the mount mode and extra flags given.
    pub fn start_with(env: &AgentEnv, tmpfs: bool, extra_args: &[&str]) -> Self {
        Self::start_at(env, "csi.sock", tmpfs, extra_args)
    }

    /// An agent whose CSI socket is `csi/<socket_name>`; its state directory is `csi/wisp-agent-state` whatever
    /// the name, as two agents on one host may share theirs.
    pub fn start_at(env: &AgentEnv, socket_name: &str, tmpfs: bool, extra_args: &[&str]) -> Self {
        let socket = env.dir.path().join("csi").join(socket_name);
        let (metrics_port, health_port) = (free_port(), free_port());
        let launch = AgentLaunch {
            binary: built_binary("wisp-agent", "wisp-agent"),
            socket: &socket,
            node_id: "node-1",
            tmpfs,
            kubeconfig: &env.files.kubeconfig,
            ca_file: &env.files.ca_file,
            loopback_names: vec![LOGIN_HOST.to_string(), env.cloud.vault.vault_host(VAULT)],
            log_level: "wisp_agent=debug,info",
            metrics_port,
            health_port,
        };
        let program = launch.program().args(extra_args).spawn();
        Self {
            program,
            registration_socket: launch.registration_socket(),
            socket,
            tmpfs,
            metrics_port,
            health_port,
        }
    }

    pub fn logs(&self) -> String {
        self.program.logs()
    }

    /// A CSI Node client on the agent's socket, once it answers; panics with the agent's logs otherwise.
    pub async fn client(&mut self) -> NodeClient<Channel> {
        match kubelet::connect(&mut self.program, &self.socket, PATIENCE).await {
            Ok(client) => client,
            Err(e) => panic!("{e}:\n{}", self.logs()),
        }
    }

    /// `path` as the agent sees it (inside its mount namespace).
    pub fn view(&self, path: &Path) -> PathBuf {
        kubelet::in_namespace_of(self.program.pid(), path)
    }

    /// Whether `path` is a mount point in the agent's namespace.
    pub fn is_mounted(&self, path: &Path) -> bool {
        kubelet::is_mount_point(self.program.pid(), path)
    }

    /// Publishes `request`; panics with the agent's logs if it fails.
    pub async fn publish(&self, client: &mut NodeClient<Channel>, request: NodePublishVolumeRequest) {
        if let Err(e) = client.node_publish_volume(request).await {
            panic!("publish failed: {e}\n{}", self.logs());
        }
    }

    /// This agent's volume record in the shared state directory: the one whose owner is this agent's socket.
    pub fn record(&self) -> (PathBuf, Value) {
        let dir = self.socket.with_file_name("wisp-agent-state");
        let mut mine = std::fs::read_dir(&dir).expect("state directory").filter_map(|entry| {
            let path = entry.expect("entry").path();
            let record: Value = serde_json::from_slice(&std::fs::read(&path).expect("record")).expect("record JSON");
            (record["owner"]["endpoint"] == json!(self.socket.display().to_string())).then_some((path, record))
        });
        let found = mine
            .next()
            .unwrap_or_else(|| panic!("no record of {} in {}", self.socket.display(), dir.display()));
        assert!(mine.next().is_none(), "two records of {}", self.socket.display());
        found
    }

    /// The text of `/metrics`.
    pub async fn metrics(&self) -> String {
        reqwest::get(format!("http://127.0.0.1:{}/metrics", self.metrics_port))
            .await
            .expect("metrics endpoint")
            .text()
            .await
            .expect("metrics body")
    }
}

/// `der` as PEM text with 64-column base64 lines, as the agent writes keys and certificates.
pub fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}
