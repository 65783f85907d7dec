//! What keeps a mounted volume current, end to end with the real `wisp-agent` binary: rotation on kubelet's
//! republish (atomic swaps, failures that keep the old files, reads shared across pods), the
//! SecretProviderClassPodStatus, the sync to Kubernetes Secrets, recovery after an agent restart, and the
//! agent's own registration with kubelet and `/healthz`.
//!
//! Like `agent_e2e.rs`, the agent runs in its own mount namespace with the fakes' names in its hosts file, and
//! the tests look at its volumes through `/proc/<pid>/root`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use futures::StreamExt;
use integration_tests::agent_harness::{Agent, AgentEnv, CLIENT, POD_A, Pod, SECRETS_STORE_V1, TENANT, VAULT, pem};
use integration_tests::fake_keyvault::{CertificateSpec, ObjectKind};
use integration_tests::kubelet;
use integration_tests::kubelet::csi::NodePublishVolumeRequest;
use integration_tests::kubelet::csi::node_client::NodeClient;
use integration_tests::process::tmpfs_mounts_available;
use pretty_assertions::assert_eq;
use serde_json::{Value, json};
use tonic::transport::Channel;

/// Guards against a hang only; no test asserts on timing.
const PATIENCE: Duration = Duration::from_secs(60);
const NAMESPACE: &str = POD_A.namespace;
const SERVICE_ACCOUNT: &str = POD_A.service_account;
const POD_STATUS: &str = "SecretProviderClassPodStatus";

/// The harness's fakes, Key Vault as configured by default.
async fn setup() -> AgentEnv {
    AgentEnv::start(|config| config).await
}

/// A workload identity SecretProviderClass in `ns-a` reading `objects` from the vault, with optional
/// `secretObjects`. Its tenant is given as `tenantId`, the spelling provider-azure still reads besides `tenantID`.
fn add_spc(setup: &AgentEnv, name: &str, objects: &[&str], secret_objects: Option<Value>) {
    let mut parameters = setup.spc_parameters(objects, &[("clientID", CLIENT)]);
    let tenant = parameters.remove("tenantID").expect("tenantID");
    parameters.insert("tenantId".to_string(), tenant);
    setup.add_spc_with(NAMESPACE, name, &parameters, secret_objects);
}

fn target(setup: &AgentEnv, pod: &str) -> PathBuf {
    setup.target(NAMESPACE, pod)
}

/// kubelet's NodePublishVolume for `pod` (service account `sa-a` in `ns-a`) at its target.
fn request(setup: &AgentEnv, pod: &str, spc: &str) -> NodePublishVolumeRequest {
    let pod_ref = Pod {
        namespace: NAMESPACE,
        name: pod,
        service_account: SERVICE_ACCOUNT,
    };
    setup.publish_request(&pod_ref, spc, &target(setup, pod))
}

/// Stops `agent` with SIGTERM; panics if it does not exit.
async fn stop(agent: &mut Agent) {
    assert!(
        agent.program.terminate(PATIENCE).await.is_some(),
        "the agent did not stop"
    );
}

/// Visible files (top-level links followed) with their bytes.
fn visible_files(root: &Path) -> BTreeMap<String, Vec<u8>> {
    kubelet::visible_files(root)
        .into_iter()
        .map(|(path, (bytes, mode))| {
            assert_eq!(mode, 0o644, "{path}");
            (path, bytes)
        })
        .collect()
}

fn files(pairs: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
        .collect()
}

fn metric_line<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    text.lines().find(|line| line.starts_with(prefix))
}

/// The pod status object's `status` as the fake API server holds it.
fn pod_status(setup: &AgentEnv, pod: &str, spc: &str) -> Option<Value> {
    setup.cloud.kube.get(
        SECRETS_STORE_V1,
        POD_STATUS,
        Some(NAMESPACE),
        &format!("{pod}-{NAMESPACE}-{spc}"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_swaps_new_bytes_in_atomically_and_updates_the_pod_status() {
    let setup = setup().await;
    let vault = &setup.cloud.vault;
    let s1_v1 = vault.add_secret(VAULT, "s1", "first-a", None).expect("s1");
    let s2_v1 = vault.add_secret(VAULT, "s2", "first-b", None).expect("s2");
    add_spc(
        &setup,
        "spc",
        &[
            "objectName: s1\nobjectType: secret",
            "objectName: s2\nobjectType: secret\nobjectAlias: dir/s2",
        ],
        None,
    );
    let mut agent = Agent::start_with(&setup, tmpfs_mounts_available(), &["--rotation-poll-interval=1s"]);
    let mut client = agent.client().await;
    let target = target(&setup, "pod-a");
    agent.publish(&mut client, request(&setup, "pod-a", "spc")).await;
    let view = agent.view(&target);
    assert_eq!(visible_files(&view), files(&[("dir/s2", "first-b"), ("s1", "first-a")]));
    let status = pod_status(&setup, "pod-a", "spc").expect("pod status created");
    assert_eq!(
        status["metadata"]["labels"],
        json!({"internal.secrets-store.csi.k8s.io/node-name": "node-1"})
    );
    assert_eq!(
        status["metadata"]["ownerReferences"],
        json!([{"apiVersion": "v1", "kind": "Pod", "name": "pod-a", "uid": "uid-pod-a"}])
    );
    assert_eq!(
        status["status"],
        json!({
            "podName": "pod-a",
            "secretProviderClassName": "spc",
            "mounted": true,
            "targetPath": target.display().to_string(),
            "objects": [{"id": "secret/s1", "version": s1_v1}, {"id": "secret/s2", "version": s2_v1}],
        })
    );

    let s1_v2 = vault.add_secret(VAULT, "s1", "second-a", None).expect("s1 v2");
    let s2_v2 = vault.add_secret(VAULT, "s2", "second-b", None).expect("s2 v2");
    // Within the interval a republish reads nothing.
    let reads = setup.secret_reads(&["s1", "s2"]);
    agent.publish(&mut client, request(&setup, "pod-a", "spc")).await;
    assert_eq!(setup.secret_reads(&["s1", "s2"]), reads);
    assert_eq!(visible_files(&view), files(&[("dir/s2", "first-b"), ("s1", "first-a")]));

    // A reader loops over the files while the content is swapped: every read is a whole old or new value.
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (stop, view) = (stop.clone(), view.clone());
        std::thread::spawn(move || {
            let mut seen = BTreeMap::<(String, String), u64>::new();
            while !stop.load(Ordering::SeqCst) {
                for name in ["s1", "dir/s2"] {
                    let value = std::fs::read_to_string(view.join(name))
                        .unwrap_or_else(|e| panic!("{name} missing during the swap: {e}"));
                    *seen.entry((name.to_string(), value)).or_default() += 1;
                }
            }
            seen.into_keys().collect::<Vec<_>>()
        })
    };
    tokio::time::sleep(Duration::from_millis(1100)).await;
    agent.publish(&mut client, request(&setup, "pod-a", "spc")).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    stop.store(true, Ordering::SeqCst);
    let seen = reader.join().expect("reader");
    let expected_seen: Vec<(String, String)> = [
        ("dir/s2", "first-b"),
        ("dir/s2", "second-b"),
        ("s1", "first-a"),
        ("s1", "second-a"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert!(
        seen.iter().all(|s| expected_seen.contains(s)),
        "a read saw something else: {seen:?}"
    );
    assert_eq!(
        visible_files(&view),
        files(&[("dir/s2", "second-b"), ("s1", "second-a")])
    );
    assert_eq!(
        pod_status(&setup, "pod-a", "spc").expect("pod status")["status"]["objects"],
        json!([{"id": "secret/s1", "version": s1_v2}, {"id": "secret/s2", "version": s2_v2}])
    );

    // A refresh that finds nothing new leaves the files (and their `..data` directory) alone.
    let data_dir = std::fs::read_link(view.join("..data")).expect("..data");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    agent.publish(&mut client, request(&setup, "pod-a", "spc")).await;
    assert_eq!(std::fs::read_link(view.join("..data")).expect("..data"), data_dir);
    let metrics = agent.metrics().await;
    assert_eq!(
        metric_line(
            &metrics,
            "rotation_reconcile_total{provider=\"azure\",os_type=\"linux\",rotated=\"true\"}"
        ),
        Some("rotation_reconcile_total{provider=\"azure\",os_type=\"linux\",rotated=\"true\"} 1"),
        "{metrics}"
    );
    assert_eq!(
        metric_line(
            &metrics,
            "rotation_reconcile_total{provider=\"azure\",os_type=\"linux\",rotated=\"false\"}"
        ),
        Some("rotation_reconcile_total{provider=\"azure\",os_type=\"linux\",rotated=\"false\"} 1"),
        "{metrics}"
    );
    client
        .node_unpublish_volume(kubelet::unpublish_request("csi-pod-a", &target))
        .await
        .expect("unpublish");
    assert!(!view.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_refresh_keeps_the_mounted_files_and_reports_success() {
    let setup = setup().await;
    let vault = &setup.cloud.vault;
    vault.add_secret(VAULT, "s1", "kept", None).expect("s1");
    add_spc(&setup, "spc", &["objectName: s1\nobjectType: secret"], None);
    let mut agent = Agent::start_with(&setup, tmpfs_mounts_available(), &["--rotation-poll-interval=1s"]);
    let mut client = agent.client().await;
    agent.publish(&mut client, request(&setup, "pod-a", "spc")).await;
    let view = agent.view(&target(&setup, "pod-a"));
    vault.add_secret(VAULT, "s1", "not seen", None).expect("s1 v2");

    // 403: the identity lost its access.
    vault.revoke(CLIENT, VAULT).expect("revoke");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    agent.publish(&mut client, request(&setup, "pod-a", "spc")).await;
    assert_eq!(visible_files(&view), files(&[("s1", "kept")]));
    vault.grant(CLIENT, VAULT).expect("grant");

    // 404: the object is gone.
    assert!(vault.delete_object(VAULT, ObjectKind::Secret, "s1").expect("delete"));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    agent.publish(&mut client, request(&setup, "pod-a", "spc")).await;
    assert_eq!(visible_files(&view), files(&[("s1", "kept")]));

    let metrics = agent.metrics().await;
    assert_eq!(
        metric_line(&metrics, "rotation_reconcile_error_total{"),
        Some(
            "rotation_reconcile_error_total{provider=\"azure\",error_type=\"ProviderError\",os_type=\"linux\",\
             rotated=\"false\"} 2"
        ),
        "{metrics}"
    );
    let logs = agent.program.logs();
    for cause in ["Forbidden", "SecretNotFound"] {
        assert!(
            logs.lines()
                .any(|l| l.contains("refresh failed; the mounted files are kept as they were") && l.contains(cause)),
            "no refresh failure naming {cause}:\n{logs}"
        );
    }

    // Once Key Vault answers again, the next refresh picks up what it holds.
    vault.add_secret(VAULT, "s1", "recreated", None).expect("s1 again");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    agent.publish(&mut client, request(&setup, "pod-a", "spc")).await;
    assert_eq!(visible_files(&view), files(&[("s1", "recreated")]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_rotation_a_republish_reads_nothing() {
    let setup = setup().await;
    setup.cloud.vault.add_secret(VAULT, "s1", "v1", None).expect("s1");
    add_spc(&setup, "spc", &["objectName: s1\nobjectType: secret"], None);
    let mut agent = Agent::start_with(
        &setup,
        tmpfs_mounts_available(),
        &["--enable-secret-rotation=false", "--rotation-poll-interval=1s"],
    );
    let mut client = agent.client().await;
    agent.publish(&mut client, request(&setup, "pod-a", "spc")).await;
    setup.cloud.vault.add_secret(VAULT, "s1", "v2", None).expect("s1 v2");
    let reads = setup.secret_reads(&["s1"]);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    agent.publish(&mut client, request(&setup, "pod-a", "spc")).await;
    assert_eq!(setup.secret_reads(&["s1"]), reads);
    assert_eq!(
        visible_files(&agent.view(&target(&setup, "pod-a"))),
        files(&[("s1", "v1")])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refreshes_of_500_pods_read_each_object_once_per_round() {
    const PODS: usize = 500;
    // Long enough for the burst of 500 refreshes to fit in one round on a loaded 2-core machine.
    const INTERVAL: Duration = Duration::from_secs(60);
    let setup = setup().await;
    let names: Vec<String> = (0..10).map(|i| format!("s{i}")).collect();
    let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
    for name in &names {
        setup.cloud.vault.add_secret(VAULT, name, "v1", None).expect("secret");
    }
    let objects: Vec<String> = names
        .iter()
        .map(|n| format!("objectName: {n}\nobjectType: secret"))
        .collect();
    let object_refs: Vec<&str> = objects.iter().map(String::as_str).collect();
    add_spc(&setup, "spc", &object_refs, None);
    // Directory mode: 500 tmpfs mounts add nothing to what this test is about.
    let mut agent = Agent::start_with(&setup, false, &["--rotation-poll-interval=60s"]);
    let client = agent.client().await;
    let pods: Vec<String> = (0..PODS).map(|i| format!("pod-{i}")).collect();
    let publish_all = |client: NodeClient<Channel>| {
        let requests: Vec<_> = pods.iter().map(|pod| request(&setup, pod, "spc")).collect();
        futures::stream::iter(requests)
            .map(move |request| {
                let mut client = client.clone();
                async move { client.node_publish_volume(request).await }
            })
            .buffer_unordered(32)
            .collect::<Vec<_>>()
    };
    let first = publish_all(client.clone()).await;
    assert!(
        first.iter().all(Result::is_ok),
        "{:?}",
        first.iter().find(|r| r.is_err())
    );
    let first_mounted = Instant::now();
    assert_eq!(setup.secret_reads(&name_refs), (PODS * 10) as u64);
    assert_eq!(setup.cloud.entra.token_requests(TENANT), 1);

    for name in &names {
        setup
            .cloud
            .vault
            .add_secret(VAULT, name, "v2", None)
            .expect("secret v2");
    }
    // Every volume is due, and every read of the first mounts is older than one round.
    tokio::time::sleep(INTERVAL.saturating_sub(first_mounted.elapsed()) + Duration::from_millis(200)).await;
    let before = setup.secret_reads(&name_refs);
    let refreshed = publish_all(client.clone()).await;
    assert!(refreshed.iter().all(Result::is_ok));
    assert_eq!(setup.secret_reads(&name_refs) - before, 10);
    assert_eq!(setup.cloud.entra.token_requests(TENANT), 1);
    for pod in ["pod-0", "pod-499"] {
        let view = agent.view(&target(&setup, pod));
        let expected: BTreeMap<String, Vec<u8>> = names.iter().map(|n| (n.clone(), b"v2".to_vec())).collect();
        assert_eq!(visible_files(&view), expected);
    }
    let metrics = agent.metrics().await;
    assert_eq!(
        metric_line(
            &metrics,
            "rotation_reconcile_total{provider=\"azure\",os_type=\"linux\",rotated=\"true\"}"
        ),
        Some("rotation_reconcile_total{provider=\"azure\",os_type=\"linux\",rotated=\"true\"} 500")
    );
    let mut client = client;
    for pod in &pods {
        client
            .node_unpublish_volume(kubelet::unpublish_request("v", &target(&setup, pod)))
            .await
            .expect("unpublish");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_agent_keeps_rotating_and_unpublishing_its_volumes() {
    let setup = setup().await;
    let vault = &setup.cloud.vault;
    vault.add_secret(VAULT, "s1", "before restart", None).expect("s1");
    add_spc(&setup, "spc", &["objectName: s1\nobjectType: secret"], None);
    // Directory mode: a tmpfs in the agent's private mount namespace would go with the first process.
    let args = ["--rotation-poll-interval=2s"];
    let mut agent = Agent::start_with(&setup, false, &args);
    let mut client = agent.client().await;
    let target = target(&setup, "pod-a");
    agent.publish(&mut client, request(&setup, "pod-a", "spc")).await;
    stop(&mut agent).await;
    let (_, record) = agent.record();
    assert_eq!(record["volumes"][0]["target_path"], json!(target.display().to_string()));
    assert_eq!(record["volumes"][0]["pod_uid"], json!("uid-pod-a"));

    let mut agent = Agent::start_with(&setup, false, &args);
    let mut client = agent.client().await;
    vault.add_secret(VAULT, "s1", "after restart", None).expect("s1 v2");
    // The recovered volume keeps its pace: a republish right away reads nothing.
    let reads = setup.secret_reads(&["s1"]);
    agent.publish(&mut client, request(&setup, "pod-a", "spc")).await;
    assert_eq!(setup.secret_reads(&["s1"]), reads);
    assert_eq!(visible_files(&target), files(&[("s1", "before restart")]));
    tokio::time::sleep(Duration::from_millis(2100)).await;
    agent.publish(&mut client, request(&setup, "pod-a", "spc")).await;
    assert_eq!(visible_files(&target), files(&[("s1", "after restart")]));
    client
        .node_unpublish_volume(kubelet::unpublish_request("csi-pod-a", &target))
        .await
        .expect("unpublish");
    assert!(!target.exists());
    // The record is written shortly after a change, and at the latest when the agent stops.
    stop(&mut agent).await;
    assert_eq!(agent.record().1["volumes"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_agent_on_the_host_leaves_the_first_agents_record_alone() {
    let setup = setup().await;
    let vault = &setup.cloud.vault;
    vault.add_secret(VAULT, "s1", "first", None).expect("s1");
    add_spc(&setup, "spc", &["objectName: s1\nobjectType: secret"], None);
    let args = ["--rotation-poll-interval=1h"];
    let mut first = Agent::start_with(&setup, false, &args);
    let mut client = first.client().await;
    first.publish(&mut client, request(&setup, "pod-a", "spc")).await;
    stop(&mut first).await;
    let (first_record, record) = first.record();
    assert_eq!(record["volumes"][0]["pod_uid"], json!("uid-pod-a"));
    let first_bytes = std::fs::read(&first_record).expect("record");

    // Another agent (another --endpoint, the same --state-dir) starts and stops while the first is away.
    let mut second = Agent::start_at(&setup, "csi-2.sock", false, &args);
    second.client().await;
    stop(&mut second).await;
    assert!(
        !second.program.logs().contains("forgotten"),
        "the second agent touched the first one's volumes:\n{}",
        second.program.logs()
    );
    assert_eq!(std::fs::read(&first_record).expect("record"), first_bytes);
    let (second_record, record) = second.record();
    assert_ne!(second_record, first_record);
    assert_eq!(record["volumes"], json!([]));

    // The first agent comes back and takes its volume over: at its pace, a republish reads nothing.
    let mut first = Agent::start_with(&setup, false, &args);
    let mut client = first.client().await;
    let reads = setup.secret_reads(&["s1"]);
    first.publish(&mut client, request(&setup, "pod-a", "spc")).await;
    assert_eq!(setup.secret_reads(&["s1"]), reads);
    assert!(
        first
            .program
            .logs()
            .contains("recovered the volumes of the previous run")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_objects_become_kubernetes_secrets_kept_current_by_rotation() {
    let setup = setup().await;
    let vault = &setup.cloud.vault;
    vault.add_secret(VAULT, "db-password", "hunter2", None).expect("secret");
    let cert = vault
        .add_certificate(VAULT, "web", &CertificateSpec::self_signed("web.wisp.test"))
        .expect("certificate");
    add_spc(
        &setup,
        "spc",
        &[
            "objectName: db-password\nobjectType: secret\nobjectAlias: db/password",
            "objectName: web\nobjectType: secret",
        ],
        Some(json!([
            {
                "secretName": "db",
                "type": "Opaque",
                "labels": {"app": "shop"},
                "annotations": {"team": "payments"},
                "data": [{"objectName": "db/password", "key": "password"}],
            },
            {
                "secretName": "web-tls",
                "type": "kubernetes.io/tls",
                "data": [{"objectName": "web", "key": "tls.crt"}, {"objectName": "web", "key": "tls.key"}],
            },
            {"secretName": "broken", "data": [{"objectName": "web", "key": "x"}]},
        ])),
    );
    let replica_set = json!([{
        "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "shop-5d4f", "uid": "rs-uid-1",
        "controller": true, "blockOwnerDeletion": true,
    }]);
    setup.add_pod(&Pod { name: "pod-a", ..POD_A }, "spc", replica_set);
    let mut agent = Agent::start_with(&setup, tmpfs_mounts_available(), &["--rotation-poll-interval=1s"]);
    let mut client = agent.client().await;
    agent.publish(&mut client, request(&setup, "pod-a", "spc")).await;

    let kube = &setup.cloud.kube;
    let secret = |name: &str| kube.get("v1", "Secret", Some(NAMESPACE), name);
    // Each Secret is applied first, its owners are added right after.
    let synced = |name: &str| secret(name).is_some_and(|s| s["metadata"]["ownerReferences"].is_array());
    kube.wait_until("both Secrets exist with their owners", PATIENCE, |_| {
        synced("db") && synced("web-tls")
    })
    .await;
    let db = secret("db").expect("db");
    assert_eq!(db["type"], json!("Opaque"));
    assert_eq!(db["data"], json!({"password": STANDARD.encode("hunter2")}));
    assert_eq!(
        db["metadata"]["labels"],
        json!({"app": "shop", "secrets-store.csi.k8s.io/managed": "true"})
    );
    assert_eq!(db["metadata"]["annotations"], json!({"team": "payments"}));
    // Only the ReplicaSet's identity: the Secret neither names a controller nor blocks the owner's deletion.
    assert_eq!(
        db["metadata"]["ownerReferences"],
        json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "shop-5d4f", "uid": "rs-uid-1"}])
    );
    let tls = secret("web-tls").expect("web-tls");
    assert_eq!(tls["type"], json!("kubernetes.io/tls"));
    let rsa_private_key = pkcs8::PrivateKeyInfo::try_from(cert.private_key_pkcs8_der.as_slice())
        .expect("PKCS#8")
        .private_key
        .to_vec();
    assert_eq!(
        tls["data"],
        json!({
            "tls.crt": STANDARD.encode(pem("CERTIFICATE", &cert.chain_der[0])),
            "tls.key": STANDARD.encode(pem("RSA PRIVATE KEY", &rsa_private_key)),
        })
    );
    // The entry without a type is refused as the driver refuses it, in an Event on the pod.
    kube.wait_until("the sync failure is an Event", PATIENCE, |kube| {
        kube.list("events.k8s.io/v1", "Event")
            .iter()
            .any(|e| e["reason"] == json!("FailedToCreateSecret"))
    })
    .await;
    let event = kube
        .list("events.k8s.io/v1", "Event")
        .into_iter()
        .find(|e| e["reason"] == json!("FailedToCreateSecret"))
        .expect("event");
    assert_eq!(event["type"], json!("Warning"));
    assert_eq!(
        event["note"],
        json!("failed to validate secret object in spc ns-a/spc, err: secret type is empty")
    );
    assert_eq!(event["regarding"]["name"], json!("pod-a"));
    assert_eq!(event["regarding"]["uid"], json!(setup.pod_uid(NAMESPACE, "pod-a")));
    assert!(secret("broken").is_none());

    // Rotation changes the file, and the Secret follows.
    vault
        .add_secret(VAULT, "db-password", "correct horse", None)
        .expect("v2");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    agent.publish(&mut client, request(&setup, "pod-a", "spc")).await;
    kube.wait_until("the Secret has the new value", PATIENCE, |_| {
        secret("db").is_some_and(|s| s["data"]["password"] == json!(STANDARD.encode("correct horse")))
    })
    .await;

    // A second consumer adds its owner: the Secret is garbage-collected only when both are gone.
    let other_replica_set =
        json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "shop-7c9a", "uid": "rs-uid-2"}]);
    setup.add_pod(&Pod { name: "pod-c", ..POD_A }, "spc", other_replica_set);
    agent.publish(&mut client, request(&setup, "pod-c", "spc")).await;
    kube.wait_until("the Secret has both owners", PATIENCE, |_| {
        secret("db").is_some_and(|s| {
            s["metadata"]["ownerReferences"]
                .as_array()
                .is_some_and(|o| o.len() == 2)
        })
    })
    .await;
    assert_eq!(
        secret("db").expect("db")["metadata"]["ownerReferences"],
        json!([
            {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "shop-5d4f", "uid": "rs-uid-1"},
            {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "shop-7c9a", "uid": "rs-uid-2"},
        ])
    );

    // A pod without owners hangs its Secrets on its pod status object.
    add_spc(
        &setup,
        "spc-solo",
        &["objectName: db-password\nobjectType: secret"],
        Some(json!([{"secretName": "solo", "type": "Opaque", "data": [{"objectName": "db-password", "key": "p"}]}])),
    );
    setup.add_pod(&Pod { name: "pod-b", ..POD_A }, "spc-solo", json!([]));
    agent.publish(&mut client, request(&setup, "pod-b", "spc-solo")).await;
    // The Secret is applied first, its owners are added right after.
    kube.wait_until("the Secret of pod-b has its owner", PATIENCE, |_| {
        secret("solo").is_some_and(|s| s["metadata"]["ownerReferences"].is_array())
    })
    .await;
    let status = pod_status(&setup, "pod-b", "spc-solo").expect("pod status");
    assert_eq!(
        secret("solo").expect("solo")["metadata"]["ownerReferences"],
        json!([{
            "apiVersion": SECRETS_STORE_V1,
            "kind": POD_STATUS,
            "name": "pod-b-ns-a-spc-solo",
            "uid": status["metadata"]["uid"],
        }])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_registers_with_kubelet_and_healthz_follows_probe_and_registration() {
    use integration_tests::kubelet::registration::registration_client::RegistrationClient;
    use integration_tests::kubelet::registration::{InfoRequest, PluginInfo, RegistrationStatus};

    let setup = setup().await;
    let mut agent = Agent::start_with(&setup, false, &[]);
    let _ = agent.client().await;
    let healthz = |port: u16| async move {
        let response = reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
            .await
            .expect("healthz");
        (response.status().as_u16(), response.text().await.expect("body"))
    };
    assert_eq!(healthz(agent.health_port).await, (200, "ok".to_string()));

    // kubelet's plugin watcher: GetInfo on the registration socket, then the verdict.
    let channel = kubelet::unix_channel(&mut agent.program, &agent.registration_socket, PATIENCE)
        .await
        .expect("registration socket");
    let mut registration = RegistrationClient::new(channel);
    let info = registration
        .get_info(InfoRequest {})
        .await
        .expect("GetInfo")
        .into_inner();
    assert_eq!(
        info,
        PluginInfo {
            r#type: "CSIPlugin".into(),
            name: "secrets-store.csi.k8s.io".into(),
            endpoint: agent.socket.display().to_string(),
            supported_versions: vec!["1.0.0".into()],
        }
    );
    registration
        .notify_registration_status(RegistrationStatus {
            plugin_registered: true,
            error: String::new(),
        })
        .await
        .expect("notify");
    assert_eq!(healthz(agent.health_port).await, (200, "ok".to_string()));
    registration
        .notify_registration_status(RegistrationStatus {
            plugin_registered: false,
            error: "driver name secrets-store.csi.k8s.io already registered".into(),
        })
        .await
        .expect("notify");
    assert_eq!(
        healthz(agent.health_port).await,
        (
            500,
            "kubelet refused to register the CSI driver: driver name secrets-store.csi.k8s.io already registered"
                .to_string()
        )
    );

    // Stopping removes the registration socket: that is how kubelet learns the driver is gone.
    stop(&mut agent).await;
    assert!(!agent.registration_socket.exists());
    assert!(!agent.socket.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_fails_when_the_csi_socket_does_not_answer() {
    let setup = setup().await;
    let mut agent = Agent::start_with(&setup, false, &[]);
    let _ = agent.client().await;
    // Someone removes the socket under the running agent: kubelet can no longer reach it, and the check says so.
    std::fs::remove_file(&agent.socket).expect("remove socket");
    let response = reqwest::get(format!("http://127.0.0.1:{}/healthz", agent.health_port))
        .await
        .expect("healthz");
    assert_eq!(response.status().as_u16(), 500);
    let body = response.text().await.expect("body");
    let prefix = format!("the CSI Probe on {} failed: ", agent.socket.display());
    assert!(body.starts_with(&prefix), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_mount_whose_pod_status_cannot_be_written_fails_and_leaves_nothing() {
    let setup = setup().await;
    setup.cloud.vault.add_secret(VAULT, "s1", "v1", None).expect("s1");
    add_spc(&setup, "spc", &["objectName: s1\nobjectType: secret"], None);
    setup.cloud.kube.fail_requests(
        "PATCH",
        &format!(
            "/apis/secrets-store.csi.x-k8s.io/v1/namespaces/{NAMESPACE}/secretproviderclasspodstatuses/pod-a-{NAMESPACE}-spc"
        ),
        500,
        1,
    );
    let mut agent = Agent::start_with(&setup, tmpfs_mounts_available(), &[]);
    let mut client = agent.client().await;
    let target = target(&setup, "pod-a");
    let status = client
        .node_publish_volume(request(&setup, "pod-a", "spc"))
        .await
        .expect_err("the pod status write fails");
    assert_eq!(status.code(), tonic::Code::Unknown);
    assert!(
        status
            .message()
            .starts_with("failed to create secret provider class pod status for pod ns-a/pod-a, err: "),
        "{}",
        status.message()
    );
    assert!(
        !agent.view(&target).exists(),
        "the failed mount left {}",
        target.display()
    );
    assert!(!kubelet::is_mount_point(agent.program.pid(), &target));
    // kubelet retries: this time the write goes through and the volume is there.
    agent.publish(&mut client, request(&setup, "pod-a", "spc")).await;
    assert_eq!(visible_files(&agent.view(&target)), files(&[("s1", "v1")]));
    assert!(pod_status(&setup, "pod-a", "spc").is_some());
}
