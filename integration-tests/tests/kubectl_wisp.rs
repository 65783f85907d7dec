//! `kubectl wisp connect` and `kubectl wisp doctor`, the real binary run as a user runs it (KUBECONFIG pointing
//! at the fake API server): whole objects written, exact output, exit codes.

use std::path::PathBuf;

use integration_tests::fake_kube::FakeKube;
use integration_tests::issuer::TestIssuer;
use integration_tests::pki::TestPki;
use integration_tests::process::built_binary;
use pretty_assertions::assert_eq;
use serde_json::{Value, json};

const NAMESPACE: &str = "shop";
const SERVICE_ACCOUNT: &str = "checkout";
const CLIENT_ID: &str = "a1b2c3d4-0000-4000-8000-000000000001";
const TENANT: &str = "72f988bf-0000-4000-8000-00000000aaaa";
const VAULT: &str = "shop-kv";
const CLASS: &str = "wisp-shop-kv";
const ISSUER: &str = "https://oidc.wisp.test/cluster-1/";
const POD: &str = "checkout-7d9f8c6b5-x2v4q";
const NODE: &str = "node-1";
const DRIVER: &str = "secrets-store.csi.k8s.io";

/// The fake API server of a cluster whose issuer is [`ISSUER`], and a kubeconfig for it.
struct Cluster {
    kube: FakeKube,
    kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
}

/// What a run printed, and how it ended.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Cluster {
    async fn start() -> Self {
        let pki = TestPki::new();
        let kube = FakeKube::start(&pki).await;
        kube.serve_issuer_discovery(&TestIssuer::new(ISSUER).expect("issuer"));
        let dir = tempfile::tempdir().expect("temporary directory");
        let kubeconfig = kube.write_kubeconfig(dir.path());
        Self {
            kube,
            kubeconfig,
            _dir: dir,
        }
    }

    async fn kubectl_wisp(&self, args: &[&str]) -> Run {
        let binary = tokio::task::spawn_blocking(|| built_binary("kubectl-wisp", "kubectl-wisp"))
            .await
            .expect("building kubectl-wisp");
        let output = tokio::process::Command::new(binary)
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env_remove("RUST_LOG")
            .output()
            .await
            .expect("cannot run kubectl-wisp");
        Run {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// The stored object without what the server fills in (uid, resourceVersion, creationTimestamp).
    fn stored(&self, api_version: &str, kind: &str, name: &str) -> Option<Value> {
        let mut object = self.kube.get(api_version, kind, Some(NAMESPACE), name)?;
        if let Some(metadata) = object["metadata"].as_object_mut() {
            for field in ["uid", "resourceVersion", "creationTimestamp"] {
                metadata.remove(field);
            }
        }
        Some(object)
    }

    /// Every request that was not a read.
    fn writes(&self) -> Vec<String> {
        self.kube
            .requests()
            .into_iter()
            .filter(|request| request.method != "GET")
            .map(|request| {
                let manager = request.query.get("fieldManager").cloned().unwrap_or_default();
                format!(
                    "{} {} fieldManager={manager} -> {}",
                    request.method, request.path, request.status
                )
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------------------------
// connect

const CONNECT: &[&str] = &[
    "connect",
    "-n",
    NAMESPACE,
    "--service-account",
    SERVICE_ACCOUNT,
    "--client-id",
    CLIENT_ID,
    "--tenant-id",
    TENANT,
    "--vault",
    VAULT,
    "--secret",
    "db-password=db/password",
    "--secret",
    "api-key",
    "--key",
    "signing",
    "--cert",
    "tls",
];

fn expected_service_account() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {
            "name": SERVICE_ACCOUNT,
            "namespace": NAMESPACE,
            "annotations": {
                "azure.workload.identity/client-id": CLIENT_ID,
                "azure.workload.identity/tenant-id": TENANT,
            },
        },
    })
}

const OBJECTS_PARAMETER: &str = "array:\n  - |\n    objectName: db-password\n    objectType: secret\n    objectAlias: \
                                 \"db/password\"\n  - |\n    objectName: api-key\n    objectType: secret\n  - |\n    \
                                 objectName: signing\n    objectType: key\n  - |\n    objectName: tls\n    objectType: \
                                 cert\n";

fn expected_class() -> Value {
    json!({
        "apiVersion": "secrets-store.csi.x-k8s.io/v1",
        "kind": "SecretProviderClass",
        "metadata": {"name": CLASS, "namespace": NAMESPACE},
        "spec": {
            "provider": "azure",
            "parameters": {
                "usePodIdentity": "false",
                "clientID": CLIENT_ID,
                "keyvaultName": VAULT,
                "tenantId": TENANT,
                "objects": OBJECTS_PARAMETER,
            },
        },
    })
}

fn connect_text(summary: &str) -> String {
    format!(
        "{summary}
# Add to the pod template: the label, the volume and its mount.
metadata:
  labels:
    azure.workload.identity/use: \"true\"
spec:
  serviceAccountName: checkout
  containers:
    - name: app  # each container that reads the files
      volumeMounts:
        - name: secrets-store-inline
          mountPath: /mnt/secrets-store
          readOnly: true
  volumes:
    - name: secrets-store-inline
      csi:
        driver: secrets-store.csi.k8s.io
        readOnly: true
        volumeAttributes:
          secretProviderClass: wisp-shop-kv

# Then, in Azure (az CLI):
# 1. Federate the identity with the ServiceAccount (the issuer is this cluster's):
IDENTITY_NAME=\"$(az identity list --query \"[?clientId=='{CLIENT_ID}'].name | [0]\" -o tsv)\"
IDENTITY_GROUP=\"$(az identity list --query \"[?clientId=='{CLIENT_ID}'].resourceGroup | [0]\" -o tsv)\"
az identity federated-credential create --name wisp-shop-checkout \\
  --identity-name \"$IDENTITY_NAME\" --resource-group \"$IDENTITY_GROUP\" \\
  --issuer {ISSUER} \\
  --subject system:serviceaccount:shop:checkout --audience api://AzureADTokenExchange
# 2. Let the identity read the vault (Azure RBAC; with access policies, grant get on each kind):
VAULT_ID=\"$(az keyvault show --name shop-kv --query id -o tsv)\"
az role assignment create --role \"Key Vault Secrets User\" --assignee {CLIENT_ID} --scope \"$VAULT_ID\"
az role assignment create --role \"Key Vault Crypto User\" --assignee {CLIENT_ID} --scope \"$VAULT_ID\"
az role assignment create --role \"Key Vault Certificate User\" --assignee {CLIENT_ID} --scope \"$VAULT_ID\"
"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_applies_exactly_the_service_account_and_the_class_and_prints_what_remains() {
    let cluster = Cluster::start().await;
    // An existing ServiceAccount keeps what connect does not manage.
    cluster.kube.upsert(json!({
        "apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": SERVICE_ACCOUNT, "namespace": NAMESPACE, "labels": {"app": "checkout"}},
    }));
    cluster.kube.clear_requests();

    let run = cluster.kubectl_wisp(CONNECT).await;
    assert_eq!((run.code, run.stderr.as_str()), (Some(0), ""), "{run:?}");
    assert_eq!(
        run.stdout,
        connect_text(
            "serviceaccount/checkout (namespace shop): server-side applied (field manager kubectl-wisp)\n\
             secretproviderclass/wisp-shop-kv (namespace shop): server-side applied (field manager kubectl-wisp)\n"
        )
    );
    let mut service_account = expected_service_account();
    service_account["metadata"]["labels"] = json!({"app": "checkout"});
    assert_eq!(
        cluster.stored("v1", "ServiceAccount", SERVICE_ACCOUNT),
        Some(service_account)
    );
    assert_eq!(
        cluster.stored("secrets-store.csi.x-k8s.io/v1", "SecretProviderClass", CLASS),
        Some(expected_class())
    );
    assert_eq!(
        cluster.writes(),
        vec![
            "PATCH /api/v1/namespaces/shop/serviceaccounts/checkout fieldManager=kubectl-wisp -> 200".to_string(),
            "PATCH /apis/secrets-store.csi.x-k8s.io/v1/namespaces/shop/secretproviderclasses/wisp-shop-kv \
             fieldManager=kubectl-wisp -> 201"
                .to_string(),
        ]
    );
    assert_eq!(
        cluster
            .kube
            .list("secrets-store.csi.x-k8s.io/v1", "SecretProviderClass")
            .len(),
        1
    );

    // Applying again changes nothing.
    let again = cluster.kubectl_wisp(CONNECT).await;
    assert_eq!((again.code, again.stdout), (Some(0), run.stdout));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_dry_run_prints_everything_and_writes_nothing() {
    let cluster = Cluster::start().await;
    let mut args = CONNECT.to_vec();
    args.push("--dry-run");
    let run = cluster.kubectl_wisp(&args).await;
    assert_eq!((run.code, run.stderr.as_str()), (Some(0), ""), "{run:?}");
    assert_eq!(
        run.stdout,
        connect_text(
            "serviceaccount/checkout (namespace shop): not written (--dry-run)\n\
             secretproviderclass/wisp-shop-kv (namespace shop): not written (--dry-run)\n"
        )
    );
    assert_eq!(cluster.writes(), Vec::<String>::new());
    assert_eq!(cluster.kube.list("v1", "ServiceAccount"), Vec::<Value>::new());
    assert_eq!(
        cluster
            .kube
            .list("secrets-store.csi.x-k8s.io/v1", "SecretProviderClass"),
        Vec::<Value>::new()
    );

    // -o yaml: the same objects as a YAML stream, the rest as comments.
    args.extend(["-o", "yaml"]);
    let yaml = cluster.kubectl_wisp(&args).await;
    assert_eq!(yaml.code, Some(0), "{yaml:?}");
    let documents: Vec<&str> = yaml.stdout.split("---\n").filter(|d| !d.is_empty()).collect();
    assert_eq!(documents.len(), 2, "{}", yaml.stdout);
    let parsed: Vec<Value> = documents
        .iter()
        .map(|document| serde_saphyr::from_str::<Value>(document).expect("YAML"))
        .collect();
    assert_eq!(parsed, vec![expected_service_account(), expected_class()]);
    let comments: String = yaml
        .stdout
        .lines()
        .filter(|l| l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(comments, YAML_COMMENTS);
    assert_eq!(cluster.writes(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_without_a_tenant_says_where_to_find_one_and_writes_nothing() {
    let cluster = Cluster::start().await;
    let args: Vec<&str> = CONNECT
        .iter()
        .copied()
        .filter(|arg| *arg != "--tenant-id" && *arg != TENANT)
        .collect();
    let run = cluster.kubectl_wisp(&args).await;
    assert_eq!(run.code, Some(2));
    assert_eq!(
        run.stderr,
        "error: no tenant: pass --tenant-id (read it with: az account show --query tenantId -o tsv); the \
         ServiceAccount shop/checkout has no azure.workload.identity/tenant-id annotation to take it from\n"
    );
    assert_eq!(run.stdout, "");
    assert_eq!(cluster.writes(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_refuses_a_class_the_agent_would_refuse() {
    let cluster = Cluster::start().await;
    let mut args = CONNECT.to_vec();
    args.extend(["--secret", "other=../escape"]);
    let run = cluster.kubectl_wisp(&args).await;
    assert_eq!(run.code, Some(2));
    assert_eq!(
        run.stderr,
        "error: wisp-agent would refuse this SecretProviderClass (check --vault and the file names): objects array \
         index 2 (objectName \"other\"): file name must not contain '..': \"../escape\"\n"
    );
    assert_eq!(cluster.writes(), Vec::<String>::new());
}

// ---------------------------------------------------------------------------------------------------------------
// doctor

fn pod_status_name() -> String {
    format!("{POD}-{NAMESPACE}-{CLASS}")
}

/// A pod as the webhook leaves it: label, env, projected token, and the CSI volume of [`CLASS`].
fn mutated_pod() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": POD,
            "namespace": NAMESPACE,
            "labels": {"app": "checkout", "azure.workload.identity/use": "true"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "checkout-7d9f8c6b5",
                                 "uid": "00000000-0000-4000-8000-0000000000r5", "controller": true}],
        },
        "spec": {
            "serviceAccountName": SERVICE_ACCOUNT,
            "nodeName": NODE,
            "containers": [{
                "name": "app",
                "image": "registry.example/checkout:1",
                "env": [
                    {"name": "AZURE_CLIENT_ID", "value": CLIENT_ID},
                    {"name": "AZURE_TENANT_ID", "value": TENANT},
                    {"name": "AZURE_FEDERATED_TOKEN_FILE", "value": "/var/run/secrets/azure/tokens/azure-identity-token"},
                    {"name": "AZURE_AUTHORITY_HOST", "value": "https://login.microsoftonline.com/"},
                ],
                "volumeMounts": [
                    {"name": "secrets-store-inline", "mountPath": "/mnt/secrets-store", "readOnly": true},
                    {"name": "azure-identity-token", "mountPath": "/var/run/secrets/azure/tokens", "readOnly": true},
                ],
            }],
            "volumes": [
                {"name": "secrets-store-inline", "csi": {"driver": DRIVER, "readOnly": true,
                    "volumeAttributes": {"secretProviderClass": CLASS}}},
                {"name": "azure-identity-token", "projected": {"sources": [{"serviceAccountToken": {
                    "audience": "api://AzureADTokenExchange", "expirationSeconds": 3600, "path": "azure-identity-token"}}]}},
            ],
        },
    })
}

fn ready_agent_pod() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "wisp-agent-x7k2p",
            "namespace": "wisp-system",
            "labels": {"app.kubernetes.io/name": "wisp", "app.kubernetes.io/instance": "wisp",
                       "app.kubernetes.io/component": "agent"},
        },
        "spec": {"nodeName": NODE, "containers": [{"name": "agent", "image": "wisp-agent:0.1.0"}]},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
    })
}

/// A healthy cluster: wisp installed (webhook configuration, CSIDriver, agent registered and ready on the node),
/// the ServiceAccount and class as `connect` writes them, the mutated pod mounted.
async fn healthy_cluster() -> Cluster {
    let cluster = Cluster::start().await;
    let run = cluster.kubectl_wisp(CONNECT).await;
    assert_eq!(run.code, Some(0), "{run:?}");
    let kube = &cluster.kube;
    for namespace in [NAMESPACE, "wisp-system"] {
        kube.upsert(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}));
    }
    kube.upsert(json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": "wisp-webhook"},
        "webhooks": [{
            "name": "mutation.azure-workload-identity.io",
            "admissionReviewVersions": ["v1"],
            "clientConfig": {"service": {"name": "wisp-webhook", "namespace": "wisp-system", "path": "/mutate-v1-pod"}},
            "sideEffects": "None",
            "namespaceSelector": {"matchExpressions": [
                {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["wisp-system"]}]},
            "objectSelector": {"matchLabels": {"azure.workload.identity/use": "true"}},
        }],
    }));
    kube.upsert(json!({
        "apiVersion": "storage.k8s.io/v1",
        "kind": "CSIDriver",
        "metadata": {"name": DRIVER},
        "spec": {"podInfoOnMount": true, "attachRequired": false, "requiresRepublish": true,
                 "volumeLifecycleModes": ["Ephemeral"],
                 "tokenRequests": [{"audience": "api://AzureADTokenExchange"}]},
    }));
    kube.upsert(json!({
        "apiVersion": "storage.k8s.io/v1",
        "kind": "CSINode",
        "metadata": {"name": NODE},
        "spec": {"drivers": [{"name": DRIVER, "nodeID": NODE, "topologyKeys": null}]},
    }));
    kube.upsert(ready_agent_pod());
    // The API server gives the pod its uid.
    let pod_uid = kube.upsert(mutated_pod())["metadata"]["uid"].clone();
    let pod_uid = pod_uid.as_str().unwrap_or_default();
    kube.upsert(json!({
        "apiVersion": "secrets-store.csi.x-k8s.io/v1",
        "kind": "SecretProviderClassPodStatus",
        "metadata": {"name": pod_status_name(), "namespace": NAMESPACE,
                     "labels": {"internal.secrets-store.csi.k8s.io/node-name": NODE}},
        "status": {"podName": POD, "secretProviderClassName": CLASS, "mounted": true,
                   "targetPath": format!("/var/lib/kubelet/pods/{pod_uid}/volumes/kubernetes.io~csi/secrets-store-inline/mount"),
                   "objects": [{"id": "secret/db-password", "version": "v1"}, {"id": "secret/api-key", "version": "v1"},
                               {"id": "key/signing", "version": "v1"}, {"id": "cert/tls", "version": "v1"}]},
    }));
    cluster
}

fn federated_credential_line(compare: &str) -> String {
    format!(
        "  ok: Entra needs a federated credential with issuer {ISSUER}, subject system:serviceaccount:shop:checkout, \
         audience api://AzureADTokenExchange; compare: {compare}"
    )
}

fn compare_by_client_id() -> String {
    format!(
        "az identity federated-credential list --identity-name \"$(az identity list --query \
         \"[?clientId=='{CLIENT_ID}'].name | [0]\" -o tsv)\" --resource-group \"$(az identity list --query \
         \"[?clientId=='{CLIENT_ID}'].resourceGroup | [0]\" -o tsv)\" -o table"
    )
}

/// The healthy pod's report, line by line (heading first).
fn healthy_lines() -> Vec<String> {
    vec![
        format!("pod {NAMESPACE}/{POD} (node {NODE})"),
        "  ok: label azure.workload.identity/use: \"true\"".to_string(),
        "  ok: the webhook mutated the pod: AZURE_FEDERATED_TOKEN_FILE and the azure-identity-token volume".to_string(),
        format!("  ok: ServiceAccount shop/checkout has client-id {CLIENT_ID}, tenant-id {TENANT}"),
        "  ok: projected token azure-identity-token has audience api://AzureADTokenExchange, expires after 3600 s"
            .to_string(),
        federated_credential_line(&compare_by_client_id()),
        "  ok: SecretProviderClass shop/wisp-shop-kv (volume secrets-store-inline) is in the pod's namespace and \
         wisp-agent accepts its parameters"
            .to_string(),
        "  ok: CSIDriver secrets-store.csi.k8s.io requests pod tokens for api://AzureADTokenExchange".to_string(),
        "  ok: node node-1 lists driver secrets-store.csi.k8s.io (CSINode node-1)".to_string(),
        "  ok: wisp-agent pod wisp-system/wisp-agent-x7k2p on node node-1 is ready".to_string(),
        format!(
            "  ok: SecretProviderClassPodStatus shop/{}: mounted, 4 objects",
            pod_status_name()
        ),
        "  ok: no FailedMount events".to_string(),
    ]
}

/// Line indexes in [`healthy_lines`].
const LABEL: usize = 1;
const WEBHOOK: usize = 2;
const SERVICE_ACCOUNT_LINE: usize = 3;
const TOKEN: usize = 4;
const FEDERATED: usize = 5;
const CLASS_LINE: usize = 6;
const CSI_DRIVER: usize = 7;
const REGISTRATION: usize = 8;
const POD_STATUS: usize = 10;
const EVENTS: usize = 11;

fn text(lines: &[String]) -> String {
    lines.iter().map(|line| format!("{line}\n")).collect()
}

async fn doctor(cluster: &Cluster) -> Run {
    cluster
        .kubectl_wisp(&["doctor", &format!("pod/{POD}"), "-n", NAMESPACE])
        .await
}

fn assert_report(run: &Run, code: i32, lines: &[String]) {
    assert_eq!(run.stdout, text(lines), "stderr: {}", run.stderr);
    assert_eq!((run.code, run.stderr.as_str()), (Some(code), ""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_on_a_healthy_pod_is_all_ok() {
    let cluster = healthy_cluster().await;
    cluster.kube.clear_requests();
    assert_report(&doctor(&cluster).await, 0, &healthy_lines());
    assert_eq!(cluster.writes(), Vec::<String>::new(), "doctor only reads");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_json_is_the_same_as_data() {
    let cluster = healthy_cluster().await;
    let run = cluster
        .kubectl_wisp(&["doctor", &format!("pod/{POD}"), "-n", NAMESPACE, "-o", "json"])
        .await;
    assert_eq!(run.code, Some(0), "{run:?}");
    let report: Value = serde_json::from_str(&run.stdout).expect("JSON");
    assert_eq!(report["ok"], json!(true));
    let section = &report["sections"][0];
    assert_eq!(
        (
            &section["kind"],
            &section["namespace"],
            &section["name"],
            &section["node"]
        ),
        (&json!("pod"), &json!(NAMESPACE), &json!(POD), &json!(NODE))
    );
    let checks: Vec<(String, String)> = section["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .map(|c| {
            (
                c["check"].as_str().unwrap().to_string(),
                c["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expected: Vec<(String, String)> = [
        "label",
        "webhook",
        "service-account",
        "token-audience",
        "federated-credential",
        "class",
        "csi-driver",
        "node-registration",
        "agent-pod",
        "pod-status",
        "mount-events",
    ]
    .iter()
    .map(|check| (check.to_string(), "ok".to_string()))
    .collect();
    assert_eq!(checks, expected);
    // The details are the text lines' own words.
    let details: Vec<String> = section["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| format!("  ok: {}", c["detail"].as_str().unwrap()))
        .collect();
    assert_eq!(details, healthy_lines()[1..].to_vec());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_on_a_deployment_checks_each_of_its_pods() {
    let cluster = healthy_cluster().await;
    let kube = &cluster.kube;
    kube.upsert(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "checkout", "namespace": NAMESPACE},
        "spec": {"selector": {"matchLabels": {"app": "checkout"}},
                 "template": {"metadata": {"labels": {"app": "checkout"}}, "spec": {"containers": []}}},
    }));
    let deployment_uid =
        kube.get("apps/v1", "Deployment", Some(NAMESPACE), "checkout").unwrap()["metadata"]["uid"].clone();
    kube.upsert(json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": "checkout-7d9f8c6b5", "namespace": NAMESPACE, "labels": {"app": "checkout"},
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "checkout",
                                          "uid": deployment_uid, "controller": true}]},
        "spec": {"selector": {"matchLabels": {"app": "checkout"}}},
    }));
    let replica_set_uid = kube
        .get("apps/v1", "ReplicaSet", Some(NAMESPACE), "checkout-7d9f8c6b5")
        .unwrap()["metadata"]["uid"]
        .clone();
    let mut pod = kube.get("v1", "Pod", Some(NAMESPACE), POD).unwrap();
    pod["metadata"]["ownerReferences"][0]["uid"] = replica_set_uid;
    kube.upsert(pod);
    // A pod with the same labels that the deployment does not own is not its pod.
    let mut stranger = mutated_pod();
    stranger["metadata"]["name"] = json!("checkout-debug");
    stranger["metadata"]["ownerReferences"] = json!([]);
    kube.upsert(stranger);

    let run = cluster
        .kubectl_wisp(&["doctor", "deployment/checkout", "-n", NAMESPACE])
        .await;
    assert_report(&run, 0, &healthy_lines());

    kube.delete("v1", "Pod", Some(NAMESPACE), POD);
    let run = cluster
        .kubectl_wisp(&["doctor", "deploy/checkout", "-n", NAMESPACE])
        .await;
    assert_report(
        &run,
        1,
        &[
            "deployment shop/checkout".to_string(),
            "  FAIL: deployment shop/checkout has no pods — kubectl describe deployment checkout -n shop (its \
             ReplicaSet's events say why no pod was created)"
                .to_string(),
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_without_the_label() {
    let cluster = healthy_cluster().await;
    // Never labelled, so never mutated.
    let mut pod = mutated_pod();
    pod["metadata"]["labels"] = json!({"app": "checkout"});
    pod["spec"]["containers"][0]["env"] = json!([]);
    pod["spec"]["containers"][0]["volumeMounts"] =
        json!([{"name": "secrets-store-inline", "mountPath": "/mnt/secrets-store", "readOnly": true}]);
    pod["spec"]["volumes"] = json!([pod["spec"]["volumes"][0]]);
    cluster.kube.upsert(pod);

    let mut lines = healthy_lines();
    lines[LABEL] = format!(
        "  FAIL: pod {POD} has no label azure.workload.identity/use: \"true\", so the webhook does not inject \
         workload identity — add the label azure.workload.identity/use: \"true\" to the pod template's \
         metadata.labels and recreate the pod"
    );
    lines[WEBHOOK] = "  skip: the webhook mutates only pods with the label (see above)".to_string();
    lines[TOKEN] = "  skip: the pod has no azure-identity-token volume to check (see the webhook above)".to_string();
    assert_report(&doctor(&cluster).await, 1, &lines);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_with_a_service_account_without_client_id() {
    let cluster = healthy_cluster().await;
    cluster.kube.upsert(json!({
        "apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": SERVICE_ACCOUNT, "namespace": NAMESPACE},
    }));
    let mut lines = healthy_lines();
    lines[SERVICE_ACCOUNT_LINE] = "  FAIL: ServiceAccount shop/checkout has no azure.workload.identity/client-id \
                                   annotation, so the pod gets no AZURE_CLIENT_ID — kubectl annotate serviceaccount \
                                   checkout -n shop azure.workload.identity/client-id=<CLIENT_ID> (or kubectl wisp \
                                   connect), then recreate the pod"
        .to_string();
    lines[FEDERATED] = federated_credential_line(
        "az identity federated-credential list --identity-name <identity> --resource-group <group> -o table",
    );
    assert_report(&doctor(&cluster).await, 1, &lines);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_with_the_class_in_another_namespace() {
    let cluster = healthy_cluster().await;
    let mut class = cluster
        .kube
        .delete(
            "secrets-store.csi.x-k8s.io/v1",
            "SecretProviderClass",
            Some(NAMESPACE),
            CLASS,
        )
        .expect("the class");
    class["metadata"] = json!({"name": CLASS, "namespace": "payments"});
    cluster.kube.upsert(class);

    let mut lines = healthy_lines();
    lines[CLASS_LINE] = "  FAIL: SecretProviderClass wisp-shop-kv is in namespace payments, not in the pod's \
                         namespace shop; wisp-agent looks only in the pod's namespace — create it in shop (kubectl \
                         get secretproviderclass wisp-shop-kv -n payments -o yaml, change metadata.namespace, \
                         kubectl apply -f -)"
        .to_string();
    lines[POD_STATUS] = "  skip: nothing to mount until the class is fixed (see above)".to_string();
    assert_report(&doctor(&cluster).await, 1, &lines);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_with_a_bad_file_permission() {
    let cluster = healthy_cluster().await;
    let mut class = cluster
        .kube
        .get(
            "secrets-store.csi.x-k8s.io/v1",
            "SecretProviderClass",
            Some(NAMESPACE),
            CLASS,
        )
        .unwrap();
    class["spec"]["parameters"]["objects"] =
        json!("array:\n  - |\n    objectName: api-key\n    objectType: secret\n    filePermission: \"0999\"\n");
    cluster.kube.upsert(class);

    let mut lines = healthy_lines();
    lines[CLASS_LINE] = "  FAIL: SecretProviderClass shop/wisp-shop-kv: objects array index 0 (objectName \
                         \"api-key\"): invalid filePermission \"0999\"; use an octal mode from 0000 to 0777, quoted, \
                         e.g. \"0644\" — wisp-agent fails every mount of it until spec.parameters are fixed (kubectl \
                         edit secretproviderclass wisp-shop-kv -n shop)"
        .to_string();
    lines[POD_STATUS] = "  skip: nothing to mount until the class is fixed (see above)".to_string();
    assert_report(&doctor(&cluster).await, 1, &lines);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_with_a_csi_driver_without_token_requests() {
    let cluster = healthy_cluster().await;
    let mut driver = cluster
        .kube
        .get("storage.k8s.io/v1", "CSIDriver", None, DRIVER)
        .unwrap();
    driver["spec"].as_object_mut().unwrap().remove("tokenRequests");
    cluster.kube.upsert(driver);

    let mut lines = healthy_lines();
    lines[CSI_DRIVER] = "  FAIL: CSIDriver secrets-store.csi.k8s.io has no tokenRequests entry for \
                         api://AzureADTokenExchange, so kubelet sends wisp-agent no pod token (mounts fail with \
                         \"token for audience api://AzureADTokenExchange not found\") — upgrade wisp's chart with \
                         tokenRequests: [{audience: api://AzureADTokenExchange}] (its default)"
        .to_string();
    assert_report(&doctor(&cluster).await, 1, &lines);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_when_the_agent_is_not_registered_on_the_node() {
    let cluster = healthy_cluster().await;
    cluster.kube.upsert(json!({
        "apiVersion": "storage.k8s.io/v1", "kind": "CSINode",
        "metadata": {"name": NODE}, "spec": {"drivers": []},
    }));
    let mut lines = healthy_lines();
    lines[REGISTRATION] = "  FAIL: node node-1 does not list driver secrets-store.csi.k8s.io (CSINode node-1), so \
                           kubelet cannot reach wisp-agent there — check that wisp-agent runs on the node and logs \
                           \"registered with kubelet\"; its --registration-socket must be under kubelet's root \
                           directory (chart value agent.kubeletRootDir)"
        .to_string();
    assert_report(&doctor(&cluster).await, 1, &lines);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_explains_an_aadsts700213_mount_failure() {
    let cluster = healthy_cluster().await;
    // The first mount failed: no pod status, kubelet's FailedMount event with wisp-agent's message.
    cluster.kube.delete(
        "secrets-store.csi.x-k8s.io/v1",
        "SecretProviderClassPodStatus",
        Some(NAMESPACE),
        &pod_status_name(),
    );
    let pod_uid = cluster.kube.get("v1", "Pod", Some(NAMESPACE), POD).unwrap()["metadata"]["uid"].clone();
    let message = format!(
        "MountVolume.SetUp failed for volume \"secrets-store-inline\" : rpc error: code = Unknown desc = failed to \
         mount secrets store objects for pod shop/{POD}, err: SecretProviderClass shop/wisp-shop-kv: Microsoft \
         Entra ID refused a token for client ID {CLIENT_ID} in tenant {TENANT} (HTTP 401, invalid_client): \
         AADSTS700213: No matching federated identity record found for presented assertion subject \
         'system:serviceaccount:shop:checkout'. Trace ID: 1"
    );
    cluster.kube.upsert(json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": format!("{POD}.17f0a1b2c3d4e5f6"), "namespace": NAMESPACE},
        "involvedObject": {"kind": "Pod", "namespace": NAMESPACE, "name": POD, "uid": pod_uid, "apiVersion": "v1"},
        "reason": "FailedMount", "type": "Warning", "message": message, "count": 4,
        "firstTimestamp": "2026-12-02T16:00:00Z", "lastTimestamp": "2026-12-02T16:02:08Z",
        "source": {"component": "kubelet", "host": NODE},
    }));
    // An event of an earlier pod of the same name is not this pod's.
    cluster.kube.upsert(json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": format!("{POD}.0000000000000001"), "namespace": NAMESPACE},
        "involvedObject": {"kind": "Pod", "namespace": NAMESPACE, "name": POD, "uid": "an-earlier-pod"},
        "reason": "FailedMount", "type": "Warning", "message": "AADSTS90002: an old failure",
        "lastTimestamp": "2026-12-01T00:00:00Z", "source": {"component": "kubelet", "host": NODE},
    }));

    let mut lines = healthy_lines();
    lines[POD_STATUS] = format!(
        "  FAIL: no SecretProviderClassPodStatus shop/{}: the volume has not been mounted — the FailedMount events \
         below say why",
        pod_status_name()
    );
    lines[EVENTS] = format!(
        "  FAIL: FailedMount (4 times, last 2026-12-02T16:02:08Z): AADSTS700213: Entra found no federated \
         credential of client ID {CLIENT_ID} for the pod's token (issuer {ISSUER}, subject \
         system:serviceaccount:shop:checkout, audience api://AzureADTokenExchange) — az identity \
         federated-credential create --name wisp-shop-checkout --identity-name \"$(az identity list --query \
         \"[?clientId=='{CLIENT_ID}'].name | [0]\" -o tsv)\" --resource-group \"$(az identity list --query \
         \"[?clientId=='{CLIENT_ID}'].resourceGroup | [0]\" -o tsv)\" --issuer {ISSUER} --subject \
         system:serviceaccount:shop:checkout --audience api://AzureADTokenExchange"
    );
    assert_report(&doctor(&cluster).await, 1, &lines);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_says_why_the_webhook_left_a_labelled_pod_alone() {
    let cluster = healthy_cluster().await;
    let mut pod = mutated_pod();
    pod["spec"]["containers"][0]["env"] = json!([]);
    pod["spec"]["volumes"] = json!([pod["spec"]["volumes"][0]]);
    cluster.kube.upsert(pod);
    let no_token = "  skip: the pod has no azure-identity-token volume to check (see the webhook above)".to_string();

    // The webhook's configuration excludes the namespace.
    let mut configuration = cluster
        .kube
        .get(
            "admissionregistration.k8s.io/v1",
            "MutatingWebhookConfiguration",
            None,
            "wisp-webhook",
        )
        .unwrap();
    configuration["webhooks"][0]["namespaceSelector"]["matchExpressions"][0]["values"] =
        json!(["wisp-system", NAMESPACE]);
    cluster.kube.upsert(configuration);
    let mut lines = healthy_lines();
    lines[WEBHOOK] = "  FAIL: the webhook did not mutate the pod (no AZURE_FEDERATED_TOKEN_FILE env, no \
                      azure-identity-token volume): MutatingWebhookConfiguration wisp-webhook's namespaceSelector \
                      excludes namespace shop — run the workload in another namespace, or change the chart value \
                      webhook.mutatingWebhookNamespaceSelector"
        .to_string();
    lines[TOKEN] = no_token.clone();
    assert_report(&doctor(&cluster).await, 1, &lines);

    // No webhook at all.
    cluster.kube.delete(
        "admissionregistration.k8s.io/v1",
        "MutatingWebhookConfiguration",
        None,
        "wisp-webhook",
    );
    lines[WEBHOOK] = "  FAIL: the webhook did not mutate the pod (no AZURE_FEDERATED_TOKEN_FILE env, no \
                      azure-identity-token volume): no MutatingWebhookConfiguration has the webhook \
                      mutation.azure-workload-identity.io — install wisp (helm install wisp helm/wisp -n wisp-system \
                      ...), then recreate the pod"
        .to_string();
    assert_report(&doctor(&cluster).await, 1, &lines);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_on_a_missing_pod_says_so() {
    let cluster = Cluster::start().await;
    let run = cluster.kubectl_wisp(&["doctor", "pod/nope", "-n", NAMESPACE]).await;
    assert_eq!(run.code, Some(2));
    assert_eq!(
        run.stderr,
        "error: pod shop/nope does not exist; list the pods with kubectl get pods -n shop\n"
    );
}

/// `connect -o yaml`: the pod snippet and the commands, as YAML comments.
const YAML_COMMENTS: &str = r#"# Add to the pod template: the label, the volume and its mount.
# metadata:
#   labels:
#     azure.workload.identity/use: "true"
# spec:
#   serviceAccountName: checkout
#   containers:
#     - name: app  # each container that reads the files
#       volumeMounts:
#         - name: secrets-store-inline
#           mountPath: /mnt/secrets-store
#           readOnly: true
#   volumes:
#     - name: secrets-store-inline
#       csi:
#         driver: secrets-store.csi.k8s.io
#         readOnly: true
#         volumeAttributes:
#           secretProviderClass: wisp-shop-kv
#
# Then, in Azure (az CLI):
# 1. Federate the identity with the ServiceAccount (the issuer is this cluster's):
# IDENTITY_NAME="$(az identity list --query "[?clientId=='a1b2c3d4-0000-4000-8000-000000000001'].name | [0]" -o tsv)"
# IDENTITY_GROUP="$(az identity list --query "[?clientId=='a1b2c3d4-0000-4000-8000-000000000001'].resourceGroup | [0]" -o tsv)"
# az identity federated-credential create --name wisp-shop-checkout \
#   --identity-name "$IDENTITY_NAME" --resource-group "$IDENTITY_GROUP" \
#   --issuer https://oidc.wisp.test/cluster-1/ \
#   --subject system:serviceaccount:shop:checkout --audience api://AzureADTokenExchange
# 2. Let the identity read the vault (Azure RBAC; with access policies, grant get on each kind):
# VAULT_ID="$(az keyvault show --name shop-kv --query id -o tsv)"
# az role assignment create --role "Key Vault Secrets User" --assignee a1b2c3d4-0000-4000-8000-000000000001 --scope "$VAULT_ID"
# az role assignment create --role "Key Vault Crypto User" --assignee a1b2c3d4-0000-4000-8000-000000000001 --scope "$VAULT_ID"
# az role assignment create --role "Key Vault Certificate User" --assignee a1b2c3d4-0000-4000-8000-000000000001 --scope "$VAULT_ID"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_and_doctor_with_the_nodes_managed_identity() {
    let cluster = healthy_cluster().await;
    let kube = &cluster.kube;
    kube.delete(
        "secrets-store.csi.x-k8s.io/v1",
        "SecretProviderClass",
        Some(NAMESPACE),
        CLASS,
    );
    let run = cluster
        .kubectl_wisp(&[
            "connect",
            "-n",
            NAMESPACE,
            "--managed-identity",
            "--client-id",
            CLIENT_ID,
            "--tenant-id",
            TENANT,
            "--vault",
            VAULT,
            "--secret",
            "api-key",
        ])
        .await;
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(
        run.stdout.starts_with(
            "secretproviderclass/wisp-shop-kv (namespace shop): server-side applied (field manager kubectl-wisp)\n\n"
        ),
        "{}",
        run.stdout
    );
    assert_eq!(
        cluster.stored("secrets-store.csi.x-k8s.io/v1", "SecretProviderClass", CLASS),
        Some(json!({
            "apiVersion": "secrets-store.csi.x-k8s.io/v1",
            "kind": "SecretProviderClass",
            "metadata": {"name": CLASS, "namespace": NAMESPACE},
            "spec": {"provider": "azure", "parameters": {
                "usePodIdentity": "false",
                "useVMManagedIdentity": "true",
                "userAssignedIdentityID": CLIENT_ID,
                "keyvaultName": VAULT,
                "tenantId": TENANT,
                "objects": "array:\n  - |\n    objectName: api-key\n    objectType: secret\n",
            }},
        }))
    );
    // A pod without the label, never mutated, that mounted after one failure (kubelet retried).
    let mut pod = kube.get("v1", "Pod", Some(NAMESPACE), POD).unwrap();
    pod["metadata"]["labels"] = json!({"app": "checkout"});
    pod["spec"]["containers"][0]["env"] = json!([]);
    pod["spec"]["volumes"] = json!([pod["spec"]["volumes"][0]]);
    let pod_uid = pod["metadata"]["uid"].clone();
    kube.upsert(pod);
    kube.upsert(json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": format!("{POD}.17f0a1b2c3d4e5f7"), "namespace": NAMESPACE},
        "involvedObject": {"kind": "Pod", "namespace": NAMESPACE, "name": POD, "uid": pod_uid},
        "reason": "FailedMount", "type": "Warning", "count": 1, "lastTimestamp": "2026-12-02T16:00:00Z",
        "message": "MountVolume.SetUp failed for volume \"secrets-store-inline\" : rpc error: code = Unknown desc = \
                    failed to get objectType:secret, objectName:api-key, objectVersion:: Key Vault \
                    shop-kv.vault.azure.net answered HTTP 403 Forbidden: not yet",
        "source": {"component": "kubelet", "host": NODE},
    }));

    let lines = healthy_lines();
    let expected = [
        lines[0].clone(),
        "  skip: workload identity: the pod has no azure.workload.identity/use label and its classes mount with the \
         nodes' managed identity or a service principal"
            .to_string(),
        lines[CLASS_LINE].clone(),
        "  ok: CSIDriver secrets-store.csi.k8s.io sends kubelet's pod information".to_string(),
        lines[REGISTRATION].clone(),
        lines[REGISTRATION + 1].clone(),
        lines[POD_STATUS].clone(),
        "  ok: an earlier FailedMount of volume secrets-store-inline (once, last 2026-12-02T16:00:00Z) is resolved: \
         it is mounted now"
            .to_string(),
    ];
    assert_report(&doctor(&cluster).await, 0, &expected);
}
