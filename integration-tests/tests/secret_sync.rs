//! wisp-sync end to end: the real binary against the fake Kubernetes API (SecretSyncs with their status
//! subresource, TokenRequests signed by the test issuer, garbage collection through owner references), the fake
//! Entra (which verifies those tokens against the federated credential) and the fake Key Vault. No pod and no
//! CSI call anywhere: the Secret comes from the SecretSync alone.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use pretty_assertions::assert_eq;
use serde_json::{Value, json};

use integration_tests::agent_harness::{AgentEnv, CLIENT, POD_A, VAULT};
use integration_tests::fake_kube::FakeKube;
use integration_tests::local_cloud::LOGIN_HOST;
use integration_tests::process::{RunningProgram, built_binary, free_port};
use integration_tests::sync_launch::SyncLaunch;

const SECRET_SYNC_V1ALPHA1: &str = "secret-sync.x-k8s.io/v1alpha1";
const NAMESPACE: &str = POD_A.namespace;
const SA: &str = POD_A.service_account;
/// Reconciles and polls settle well within this; it only guards against a hang.
const PATIENCE: Duration = Duration::from_secs(30);

/// The fakes with the ServiceAccount federated with [`CLIENT`] and `sa-unfederated` (known to the API server,
/// not to Entra).
async fn setup() -> AgentEnv {
    let env = AgentEnv::start(|config| config).await;
    for name in [SA, "sa-unfederated"] {
        env.cloud.kube.upsert(json!({
            "apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": name, "namespace": NAMESPACE},
        }));
    }
    env
}

/// [`setup`] with `db-password` holding `value` in the vault and the class [`add_class`].
async fn setup_with_class(value: &str) -> AgentEnv {
    let env = setup().await;
    env.cloud
        .vault
        .add_secret(VAULT, "db-password", value, None)
        .expect("secret");
    add_class(&env);
    env
}

/// A running wisp-sync against `env`, polling every `interval`, and its `/metrics` port.
fn start_sync(env: &AgentEnv, interval: &str) -> (RunningProgram, u16) {
    let metrics_port = free_port();
    let program = start_replica(env, "wisp-sync-0", interval, metrics_port, &[]);
    (program, metrics_port)
}

/// A running wisp-sync whose pod is `pod_name`, with `/metrics`, `/healthz` and `/readyz` on `http_port` and
/// `extra` flags.
fn start_replica(env: &AgentEnv, pod_name: &str, interval: &str, http_port: u16, extra: &[&str]) -> RunningProgram {
    SyncLaunch {
        binary: built_binary("wisp-sync", "wisp-sync"),
        interval,
        pod_name: Some(pod_name),
        kubeconfig: &env.files.kubeconfig,
        ca_file: &env.files.ca_file,
        loopback_names: vec![LOGIN_HOST.to_string(), env.cloud.vault.vault_host(VAULT)],
        log_level: "wisp_sync=debug,info",
        metrics_port: http_port,
        health_port: http_port,
    }
    .program()
    .args(extra)
    .spawn()
}

fn secret_sync(name: &str, class: &str, sa: &str, force: Option<&str>) -> Value {
    let mut spec = json!({
        "secretProviderClassName": class,
        "serviceAccountName": sa,
        "secretObject": {
            "type": "Opaque",
            "data": [{"sourcePath": "db-password", "targetKey": "password"}],
            "labels": {"app": "web"},
            "annotations": {"team": "blue"},
        },
    });
    if let Some(force) = force {
        spec["forceSynchronization"] = json!(force);
    }
    json!({
        "apiVersion": SECRET_SYNC_V1ALPHA1, "kind": "SecretSync",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": spec,
    })
}

/// SecretProviderClass `kv`: secret `db-password` of [`VAULT`] with workload identity [`CLIENT`].
fn add_class(env: &AgentEnv) {
    env.add_spc(
        NAMESPACE,
        "kv",
        &[("clientID", CLIENT)],
        &["objectName: db-password\nobjectType: secret"],
    );
}

fn get_sync(kube: &FakeKube, name: &str) -> Value {
    kube.get(SECRET_SYNC_V1ALPHA1, "SecretSync", Some(NAMESPACE), name)
        .expect("the SecretSync")
}

fn get_secret(kube: &FakeKube, name: &str) -> Option<Value> {
    kube.get("v1", "Secret", Some(NAMESPACE), name)
}

/// `(type, status, reason)` of every condition.
fn conditions(sync: &Value) -> Vec<(String, String, String)> {
    sync["status"]["conditions"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|c| {
                    let text = |f: &str| c[f].as_str().unwrap_or("").to_string();
                    (text("type"), text("status"), text("reason"))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn condition(type_: &str, status: &str, reason: &str) -> (String, String, String) {
    (type_.to_string(), status.to_string(), reason.to_string())
}

/// The Warning Events on SecretSync `name` as `(reason, note)`.
fn warnings(kube: &FakeKube, name: &str) -> Vec<(String, String)> {
    kube.list("events.k8s.io/v1", "Event")
        .into_iter()
        .filter(|e| e["regarding"]["kind"] == "SecretSync" && e["regarding"]["name"] == name && e["type"] == "Warning")
        .map(|e| {
            (
                e["reason"].as_str().unwrap_or("").to_string(),
                e["note"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// PATCHes of Secret `name` the fake received.
fn secret_writes(kube: &FakeKube, name: &str) -> usize {
    let path = format!("/api/v1/namespaces/{NAMESPACE}/secrets/{name}");
    kube.requests()
        .iter()
        .filter(|r| r.method == "PATCH" && r.path == path)
        .count()
}

fn decoded(secret: &Value, key: &str) -> String {
    String::from_utf8(
        STANDARD
            .decode(secret["data"][key].as_str().unwrap_or(""))
            .expect("base64"),
    )
    .expect("utf-8")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_sync_creates_refreshes_rotates_keeps_on_failure_and_is_collected() {
    let env = setup().await;
    let (kube, vault) = (&env.cloud.kube, &env.cloud.vault);
    vault
        .add_secret(VAULT, "db-password", "first-value", None)
        .expect("secret");
    add_class(&env);
    let (mut program, metrics_port) = start_sync(&env, "2s");
    kube.upsert(secret_sync("app-secret", "kv", SA, None));

    // Create: the whole Secret, and the status.
    kube.wait_until("the Secret is created", PATIENCE, |k| {
        get_secret(k, "app-secret").is_some()
    })
    .await;
    kube.wait_until("the status says CreateSucceeded", PATIENCE, |k| {
        conditions(&get_sync(k, "app-secret")) == [condition("Create", "True", "CreateSucceeded")]
    })
    .await;
    let sync = get_sync(kube, "app-secret");
    let secret = get_secret(kube, "app-secret").expect("secret");
    let server = |field: &str| secret["metadata"][field].clone();
    assert_eq!(
        secret,
        json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": "app-secret",
                "namespace": NAMESPACE,
                "labels": {"app": "web", "secrets-store.sync.x-k8s.io/secretsync": "app-secret"},
                "annotations": {"team": "blue"},
                "ownerReferences": [{
                    "apiVersion": SECRET_SYNC_V1ALPHA1,
                    "kind": "SecretSync",
                    "name": "app-secret",
                    "uid": sync["metadata"]["uid"],
                }],
                "uid": server("uid"),
                "creationTimestamp": server("creationTimestamp"),
                "resourceVersion": server("resourceVersion"),
            },
            "type": "Opaque",
            "data": {"password": STANDARD.encode("first-value")},
        })
    );
    let first_hash = sync["status"]["syncHash"].as_str().expect("syncHash").to_string();
    assert!(
        first_hash.starts_with("7631") && first_hash.len() == 132,
        "{first_hash}"
    );
    assert!(sync["status"]["lastSuccessfulSyncTime"].is_string(), "{sync}");
    assert_eq!(
        sync["status"]["conditions"][0]["message"],
        "Secret created successfully."
    );
    // The token came from the TokenRequest API, for Entra's audience.
    let token_requests: Vec<_> = kube
        .requests()
        .into_iter()
        .filter(|r| {
            r.method == "POST" && r.path == format!("/api/v1/namespaces/{NAMESPACE}/serviceaccounts/{SA}/token")
        })
        .collect();
    assert_eq!(token_requests.len(), 1, "one token, cached");
    assert_eq!(
        token_requests[0].body.as_ref().map(|b| b["spec"]["audiences"].clone()),
        Some(json!(["api://AzureADTokenExchange"]))
    );

    // An unchanged refresh: no write, the status says so.
    let writes = secret_writes(kube, "app-secret");
    kube.wait_until("an unchanged refresh", PATIENCE, |k| {
        conditions(&get_sync(k, "app-secret")).contains(&condition("Update", "True", "UpdateNoValueChangeSucceeded"))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        secret_writes(kube, "app-secret"),
        writes,
        "no Secret write without a change"
    );
    let sync = get_sync(kube, "app-secret");
    assert_eq!(sync["status"]["syncHash"], first_hash.as_str());

    // Rotation: a new version in Key Vault reaches the Secret within an interval or two.
    vault
        .add_secret(VAULT, "db-password", "second-value", None)
        .expect("v2");
    kube.wait_until("the Secret is rotated", PATIENCE, |k| {
        get_secret(k, "app-secret").is_some_and(|s| decoded(&s, "password") == "second-value")
    })
    .await;
    kube.wait_until("the status says a value change", PATIENCE, |k| {
        conditions(&get_sync(k, "app-secret")).contains(&condition(
            "Update",
            "True",
            "UpdateValueChangeOrForceUpdateSucceeded",
        ))
    })
    .await;
    assert_ne!(get_sync(kube, "app-secret")["status"]["syncHash"], first_hash.as_str());

    // Key Vault 403: the condition turns False, the Secret stays as it was, a Warning Event says why.
    vault.revoke(CLIENT, VAULT).expect("revoke");
    vault.add_secret(VAULT, "db-password", "unreadable", None).expect("v3");
    kube.wait_until("the 403 is reported", PATIENCE, |k| {
        conditions(&get_sync(k, "app-secret")).contains(&condition("Update", "False", "ProviderError"))
    })
    .await;
    let secret = get_secret(kube, "app-secret").expect("kept");
    assert_eq!(decoded(&secret, "password"), "second-value");
    let events = warnings(kube, "app-secret");
    assert!(
        events
            .iter()
            .any(|(reason, note)| reason == "ProviderError" && note.contains("db-password") && note.contains("403")),
        "{events:?}"
    );
    // Access back: the next refresh writes the new value and clears the failure.
    vault.grant(CLIENT, VAULT).expect("grant");
    kube.wait_until("recovery", PATIENCE, |k| {
        get_secret(k, "app-secret").is_some_and(|s| decoded(&s, "password") == "unreadable")
            && !conditions(&get_sync(k, "app-secret"))
                .iter()
                .any(|c| c.2 == "ProviderError")
    })
    .await;

    // forceSynchronization: a spec change syncs at once, with a fresh read.
    let forced = secret_sync("app-secret", "kv", SA, Some("now"));
    let before = get_sync(kube, "app-secret")["status"]["syncHash"].clone();
    kube.upsert(forced);
    kube.wait_until("the force update", Duration::from_secs(10), |k| {
        get_sync(k, "app-secret")["status"]["syncHash"] != before
    })
    .await;

    // Deletion: the Secret goes with its owner.
    kube.delete(SECRET_SYNC_V1ALPHA1, "SecretSync", Some(NAMESPACE), "app-secret")
        .expect("deleted");
    assert_eq!(get_secret(kube, "app-secret"), None);

    // Metrics under upstream's names, and the provider's Key Vault requests.
    let metrics = reqwest::get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    for line in [
        "rotation_reconcile_total{successful=\"true\",namespace=\"ns-a\"}",
        "rotation_reconcile_total{successful=\"false\",namespace=\"ns-a\"}",
        "secrets_store_sync_duration_sec_count{successful=\"true\",namespace=\"ns-a\"}",
        "keyvault_request_count{provider=\"azure\",os_type=\"linux\",object_type=\"secret\",object_name=\"db-password\",error=\"\"}",
    ] {
        assert!(metrics.contains(line), "{line} not in {metrics}");
    }

    // Nothing secret in the logs: neither values nor tokens.
    let logs = program.logs();
    for value in ["first-value", "second-value", "unreadable", "eyJ"] {
        assert!(!logs.contains(value), "{value} in the logs");
    }
    assert!(program.try_wait().is_none(), "wisp-sync still runs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_sync_failures_before_the_first_sync() {
    let env = setup().await;
    let (kube, vault) = (&env.cloud.kube, &env.cloud.vault);
    vault.add_secret(VAULT, "db-password", "value", None).expect("secret");
    let _program = start_sync(&env, "1m");

    // No class: ControllerSPCError, then the class's creation syncs at once (not after the minute).
    kube.upsert(secret_sync("no-class-yet", "kv", SA, None));
    kube.wait_until("ControllerSPCError", PATIENCE, |k| {
        conditions(&get_sync(k, "no-class-yet")) == [condition("Create", "False", "ControllerSPCError")]
    })
    .await;
    assert_eq!(
        get_sync(kube, "no-class-yet")["status"]["conditions"][0]["message"],
        "Secret update failed because the controller could not retrieve the Secret Provider Class or the SPC is \
         misconfigured. Check the logs or the events for more information."
    );
    assert!(get_sync(kube, "no-class-yet")["status"].get("syncHash").is_none());
    let events = warnings(kube, "no-class-yet");
    assert!(
        events.iter().any(|(reason, note)| reason == "ControllerSPCError"
            && note
                == &format!(
                    "failed to get SecretProviderClass {NAMESPACE}/kv: not found; create it in the SecretSync's \
                 namespace or fix spec.secretProviderClassName"
                )),
        "{events:?}"
    );
    add_class(&env);
    kube.wait_until("created once the class exists", Duration::from_secs(15), |k| {
        conditions(&get_sync(k, "no-class-yet")) == [condition("Create", "True", "CreateSucceeded")]
            && get_secret(k, "no-class-yet").is_some()
    })
    .await;

    // Entra refuses a ServiceAccount it has no federated credential for: ProviderError, no Secret.
    kube.upsert(secret_sync("unfederated", "kv", "sa-unfederated", None));
    kube.wait_until("Entra's refusal", PATIENCE, |k| {
        conditions(&get_sync(k, "unfederated")) == [condition("Create", "False", "ProviderError")]
    })
    .await;
    assert_eq!(get_secret(kube, "unfederated"), None);
    let events = warnings(kube, "unfederated");
    assert!(
        events
            .iter()
            .any(|(reason, note)| reason == "ProviderError" && note.contains("Microsoft Entra ID refused a token")),
        "{events:?}"
    );

    // A reserved label: refused before anything is fetched.
    let mut reserved = secret_sync("reserved", "kv", SA, None);
    reserved["spec"]["secretObject"]["labels"]["secrets-store.sync.x-k8s.io/secretsync"] = json!("other");
    kube.upsert(reserved);
    kube.wait_until("the reserved label", PATIENCE, |k| {
        conditions(&get_sync(k, "reserved")) == [condition("Create", "False", "InvalidClusterSecretLabelError")]
    })
    .await;
    assert_eq!(get_secret(kube, "reserved"), None);
}

fn lease_holder(kube: &FakeKube) -> Option<String> {
    kube.get("coordination.k8s.io/v1", "Lease", Some("default"), "wisp-sync-leader")
        .and_then(|lease| lease["spec"]["holderIdentity"].as_str().map(str::to_string))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_one_active_and_the_stand_by_takes_over() {
    let env = setup().await;
    let (kube, vault) = (&env.cloud.kube, &env.cloud.vault);
    vault
        .add_secret(VAULT, "db-password", "first-value", None)
        .expect("secret");
    add_class(&env);
    // Six seconds, renewed in the last two: on this shared, loaded test machine a shorter grace let a renewal
    // come late and the stand-by take over from a living leader (which then stops, as it should).
    let election = ["--leader-elect", "--leader-election-lease-duration=6s"];
    let (first_port, second_port) = (free_port(), free_port());
    let mut first = start_replica(&env, "replica-a", "1s", first_port, &election);
    kube.wait_until("replica-a leads", PATIENCE, |k| {
        lease_holder(k).as_deref() == Some("replica-a")
    })
    .await;
    let mut second = start_replica(&env, "replica-b", "1s", second_port, &election);
    // Both ready: the leader once its caches are listed, the stand-by while it waits.
    wait_ready(first_port, "ok\n").await;
    wait_ready(second_port, "ok: stand-by, waiting for the leader election Lease\n").await;
    kube.upsert(secret_sync("app-secret", "kv", SA, None));
    kube.wait_until("the Secret is created", PATIENCE, |k| {
        get_secret(k, "app-secret").is_some()
    })
    .await;
    // Rotations while both run: only the leader syncs; the stand-by only waits.
    vault
        .add_secret(VAULT, "db-password", "second-value", None)
        .expect("v2");
    kube.wait_until("the leader rotates", PATIENCE, |k| {
        get_secret(k, "app-secret").is_some_and(|s| decoded(&s, "password") == "second-value")
    })
    .await;
    first.wait_for_log("secret written", PATIENCE).await;
    let stand_by = second.logs();
    assert!(stand_by.contains("waiting for leadership"), "{stand_by}");
    assert!(!stand_by.contains("watching SecretSyncs"), "{stand_by}");
    assert!(!stand_by.contains("secret written"), "{stand_by}");
    assert_eq!(lease_holder(kube).as_deref(), Some("replica-a"));

    // The leader dies without releasing the Lease: the stand-by takes over once it expires (6 s) and syncs.
    first.kill();
    let killed = std::time::Instant::now();
    vault.add_secret(VAULT, "db-password", "third-value", None).expect("v3");
    kube.wait_until("replica-b leads", PATIENCE, |k| {
        lease_holder(k).as_deref() == Some("replica-b")
    })
    .await;
    let takeover = killed.elapsed();
    // A bound on the behaviour (the Lease expires, the stand-by acquires it), loose for a loaded machine.
    assert!(takeover < Duration::from_secs(18), "took over after {takeover:?}");
    kube.wait_until("the new leader rotates", PATIENCE, |k| {
        get_secret(k, "app-secret").is_some_and(|s| decoded(&s, "password") == "third-value")
    })
    .await;
    // The log line follows the write the fake API already holds.
    second.wait_for_log("secret written", PATIENCE).await;
    assert!(second.logs().contains("leading"), "{}", second.logs());
}

/// Waits until `/readyz` on `port` answers 200 with `body` (earlier answers: 503 while starting and listing).
async fn wait_ready(port: u16, body: &str) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut last = None;
    while tokio::time::Instant::now() < deadline {
        if let Ok(answer) = reqwest::get(format!("http://127.0.0.1:{port}/readyz")).await {
            let status = answer.status().as_u16();
            let text = answer.text().await.unwrap_or_default();
            if status == 200 && text == body {
                return;
            }
            last = Some((status, text));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("/readyz on {port} never answered 200 {body:?}; last answer {last:?}");
}

/// The sum of `rotation_reconcile_total` samples on `/metrics`.
async fn reconciles(metrics_port: u16) -> u64 {
    let text = reqwest::get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .filter(|l| l.starts_with("rotation_reconcile_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_syncs_share_key_vault_reads_within_a_round() {
    let env = setup_with_class("value").await;
    let kube = &env.cloud.kube;
    let (_program, metrics_port) = start_sync(&env, "2s");
    let names = ["share-1", "share-2", "share-3", "share-4"];
    for name in names {
        kube.upsert(secret_sync(name, "kv", SA, None));
    }
    kube.wait_until("every SecretSync had a periodic sync", PATIENCE, |k| {
        names.iter().all(|name| {
            conditions(&get_sync(k, name)).contains(&condition("Update", "True", "UpdateNoValueChangeSucceeded"))
        })
    })
    .await;
    let (reads, syncs) = (env.secret_reads(&["db-password"]), reconciles(metrics_port).await);
    tokio::time::sleep(Duration::from_secs(7)).await;
    let (reads, syncs) = (
        env.secret_reads(&["db-password"]) - reads,
        reconciles(metrics_port).await - syncs,
    );
    eprintln!("{syncs} syncs, {reads} Key Vault reads of db-password in 7 s");
    // About three rounds of four SecretSyncs: twelve syncs, and a read per round, not per sync.
    assert!(syncs >= 8, "{syncs} syncs in 7 s");
    assert!(reads <= 5, "{reads} Key Vault reads for {syncs} syncs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_managed_identity_class_syncs_through_imds() {
    const NODE_IDENTITY: &str = "0b0b0b0b-0000-0000-0000-00000000000b";
    let env = setup().await;
    let (kube, vault, entra) = (&env.cloud.kube, &env.cloud.vault, &env.cloud.entra);
    entra.set_node_identities(integration_tests::agent_harness::TENANT, None, &[NODE_IDENTITY]);
    vault.grant(NODE_IDENTITY, VAULT).expect("grant");
    vault
        .add_secret(VAULT, "db-password", "from-imds", None)
        .expect("secret");
    env.add_spc(
        NAMESPACE,
        "kv-msi",
        &[
            ("useVMManagedIdentity", "true"),
            ("userAssignedIdentityID", NODE_IDENTITY),
        ],
        &["objectName: db-password\nobjectType: secret"],
    );
    let imds = format!("--imds-endpoint={}", entra.imds_proxy_url());
    let _program = start_replica(&env, "wisp-sync-0", "1m", free_port(), &[&imds]);
    kube.upsert(secret_sync("msi-secret", "kv-msi", SA, None));
    // The status is written after the Secret: wait for both.
    kube.wait_until("the Secret from IMDS's identity, then its status", PATIENCE, |k| {
        get_secret(k, "msi-secret").is_some_and(|s| decoded(&s, "password") == "from-imds")
            && !conditions(&get_sync(k, "msi-secret")).is_empty()
    })
    .await;
    assert!(entra.imds_requests() > 0, "the token came from IMDS");
    assert_eq!(
        conditions(&get_sync(kube, "msi-secret")),
        [condition("Create", "True", "CreateSucceeded")]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identities_from_service_account_annotations_and_a_service_principal_secret() {
    use integration_tests::agent_harness::TENANT;
    const CLIENT_SP: &str = "05050505-0000-0000-0000-000000000005";
    const SP_SECRET: &str = "sp-secret-value";
    let env = setup().await;
    let (kube, vault, entra) = (&env.cloud.kube, &env.cloud.vault, &env.cloud.entra);
    entra.add_client_secret(TENANT, CLIENT_SP, SP_SECRET);
    vault.grant(CLIENT_SP, VAULT).expect("grant");
    vault
        .add_secret(VAULT, "db-password", "the-value", None)
        .expect("secret");
    // A class naming neither a client nor a tenant: the ServiceAccount's annotations give both.
    let mut bare = env.spc_parameters(&["objectName: db-password\nobjectType: secret"], &[]);
    bare.remove("tenantID");
    env.add_spc_with(NAMESPACE, "kv-bare", &bare, None);
    kube.upsert(json!({
        "apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": SA, "namespace": NAMESPACE, "annotations": {
            "azure.workload.identity/client-id": CLIENT,
            "azure.workload.identity/tenant-id": TENANT,
        }},
    }));
    let _program = start_sync(&env, "2s");
    kube.upsert(secret_sync("from-annotations", "kv-bare", SA, None));
    kube.wait_until("the Secret from the annotated ServiceAccount", PATIENCE, |k| {
        get_secret(k, "from-annotations").is_some_and(|s| decoded(&s, "password") == "the-value")
            && conditions(&get_sync(k, "from-annotations")) == [condition("Create", "True", "CreateSucceeded")]
    })
    .await;

    // A ServiceAccount that does not exist: the SecretSync's input is wrong.
    kube.upsert(secret_sync("no-account", "kv-bare", "no-such-sa", None));
    kube.wait_until("UserInputValidationFailed for the ServiceAccount", PATIENCE, |k| {
        conditions(&get_sync(k, "no-account")) == [condition("Create", "False", "UserInputValidationFailed")]
    })
    .await;
    assert!(
        warnings(kube, "no-account").contains(&(
            "UserInputValidationFailed".to_string(),
            format!(
                "ServiceAccount {NAMESPACE}/no-such-sa not found; create it or fix spec.serviceAccountName (a \
                 SecretSync acts as its ServiceAccount)"
            )
        )),
        "{:?}",
        warnings(kube, "no-account")
    );

    // The service principal named by the annotation, even though the ServiceAccount's annotation names a
    // workload identity: with that identity's access revoked, only the service principal can read the vault. Its
    // class names the tenant (the ServiceAccount's tenant-id is a workload identity's).
    vault.revoke(CLIENT, VAULT).expect("revoke");
    env.add_spc(
        NAMESPACE,
        "kv-tenant",
        &[],
        &["objectName: db-password\nobjectType: secret"],
    );
    let mut as_sp = secret_sync("as-sp", "kv-tenant", SA, None);
    as_sp["metadata"]["annotations"] = json!({"sync.wisp.dev/node-publish-secret-ref": "sp-creds"});
    kube.upsert(as_sp);
    let missing = format!(
        "Secret {NAMESPACE}/sp-creds named by annotation sync.wisp.dev/node-publish-secret-ref not found; create it \
         with the service principal's clientid and clientsecret, or remove the annotation"
    );
    kube.wait_until("the credentials Secret is missing", PATIENCE, |k| {
        warnings(k, "as-sp").contains(&("UserInputValidationFailed".to_string(), missing.clone()))
    })
    .await;
    let credentials = |labels: Value| {
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "sp-creds", "namespace": NAMESPACE, "labels": labels},
            "type": "Opaque",
            "data": {"ClientID": STANDARD.encode(CLIENT_SP), "clientsecret": STANDARD.encode(SP_SECRET)},
        })
    };
    kube.upsert(credentials(json!({})));
    let unlabelled = format!(
        "Secret {NAMESPACE}/sp-creds named by annotation sync.wisp.dev/node-publish-secret-ref is not labelled \
         secrets-store.csi.k8s.io/used=true; label it to let wisp-sync use it as service principal credentials"
    );
    kube.wait_until("the credentials Secret is not labelled", PATIENCE, |k| {
        warnings(k, "as-sp").contains(&("UserInputValidationFailed".to_string(), unlabelled.clone()))
    })
    .await;
    assert_eq!(get_secret(kube, "as-sp"), None);
    kube.upsert(credentials(json!({"secrets-store.csi.k8s.io/used": "true"})));
    kube.wait_until("the Secret through the service principal", PATIENCE, |k| {
        get_secret(k, "as-sp").is_some_and(|s| decoded(&s, "password") == "the-value")
            && conditions(&get_sync(k, "as-sp")) == [condition("Create", "True", "CreateSucceeded")]
    })
    .await;
    // The annotated workload identity lost its access: its refresh fails, and its Secret is kept.
    kube.wait_until("the workload identity's refusal", PATIENCE, |k| {
        conditions(&get_sync(k, "from-annotations")).contains(&condition("Update", "False", "ProviderError"))
    })
    .await;
    assert_eq!(
        decoded(&get_secret(kube, "from-annotations").expect("kept"), "password"),
        "the-value"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_and_labels_dropped_from_the_secret_sync_leave_the_secret() {
    let env = setup_with_class("value").await;
    let kube = &env.cloud.kube;
    let _program = start_sync(&env, "1m");
    let mut two_keys = secret_sync("app-secret", "kv", SA, None);
    two_keys["spec"]["secretObject"]["data"] = json!([
        {"sourcePath": "db-password", "targetKey": "password"},
        {"sourcePath": "db-password", "targetKey": "copy"},
    ]);
    kube.upsert(two_keys);
    kube.wait_until("the Secret with two keys", PATIENCE, |k| {
        get_secret(k, "app-secret").is_some_and(|s| s["data"].as_object().is_some_and(|d| d.len() == 2))
    })
    .await;
    // The same SecretSync without the second key, its labels and annotations: server-side apply drops them.
    let mut one_key = secret_sync("app-secret", "kv", SA, None);
    one_key["spec"]["secretObject"]["labels"] = json!({});
    one_key["spec"]["secretObject"]["annotations"] = json!({});
    kube.upsert(one_key);
    kube.wait_until("the Secret without the dropped key", PATIENCE, |k| {
        get_secret(k, "app-secret").is_some_and(|s| s["data"].as_object().is_some_and(|d| d.len() == 1))
    })
    .await;
    let secret = get_secret(kube, "app-secret").expect("secret");
    assert_eq!(secret["data"], json!({"password": STANDARD.encode("value")}));
    assert_eq!(
        secret["metadata"]["labels"],
        json!({"secrets-store.sync.x-k8s.io/secretsync": "app-secret"})
    );
    assert_eq!(secret["metadata"].get("annotations"), None, "{secret}");
}
