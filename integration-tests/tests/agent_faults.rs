//! Faults injected around the real `wisp-agent` binary, each with its exact outcome: the agent SIGKILLed in the
//! middle of writing a volume, Key Vault resetting connections, failing with 5xx or stalling, Entra failing,
//! IMDS unreachable, the Kubernetes API failing while the agent writes pod status and Secrets, and a target
//! directory that is full or read-only.
//!
//! The rule each test checks is the one users rely on: a first mount either succeeds whole or fails leaving
//! nothing at the target; a refresh either swaps in a whole new volume or keeps the old one whole; the agent
//! recovers by itself once the fault is gone.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use integration_tests::agent_harness::{Agent, AgentEnv, CLIENT, POD_A, TENANT, VAULT};
use integration_tests::fake_keyvault::ObjectKind;
use integration_tests::fake_kube::Outage;
use integration_tests::kubelet::csi::NodePublishVolumeRequest;
use integration_tests::kubelet::csi::node_client::NodeClient;
use integration_tests::kubelet::{self, visible_files};
use integration_tests::process::{free_port, tmpfs_mounts_available};
use integration_tests::traffic::FaultAction;
use pretty_assertions::assert_eq;
use reqwest::StatusCode;
use serde_json::json;
use tonic::transport::Channel;

/// Guards against a hang only; no test asserts on timing.
const PATIENCE: Duration = Duration::from_secs(60);
const NAMESPACE: &str = POD_A.namespace;
const S1: &str = "objectName: s1\nobjectType: secret";
/// What every failed first mount of `spc-a` for pod-a starts with.
const MOUNT_FAILED: &str =
    "failed to mount secrets store objects for pod ns-a/pod-a, err: SecretProviderClass ns-a/spc-a: ";

/// The fakes, `s1` holding `value`, and SecretProviderClass `ns-a/spc-a` mounting it as the workload identity.
async fn env_with_s1(value: &str) -> AgentEnv {
    let env = AgentEnv::start(|config| config).await;
    env.cloud.vault.add_secret(VAULT, "s1", value, None).expect("s1");
    env.add_spc(NAMESPACE, "spc-a", &[("clientID", CLIENT)], &[S1]);
    env
}

fn s1_files(value: &str) -> BTreeMap<String, (Vec<u8>, u32)> {
    BTreeMap::from([("s1".to_string(), (value.as_bytes().to_vec(), 0o644))])
}

/// kubelet's NodePublishVolume of pod-a's volume, with kubelet's deadline as `grpc-timeout`.
fn publish_within(env: &AgentEnv, target: &Path, deadline: Duration) -> tonic::Request<NodePublishVolumeRequest> {
    let mut request = tonic::Request::new(env.publish_request(&POD_A, "spc-a", target));
    request.set_timeout(deadline);
    request
}

/// Publishes and expects the agent's own refusal (not the client's deadline): its code and message.
async fn publish_fails(
    client: &mut NodeClient<Channel>,
    request: tonic::Request<NodePublishVolumeRequest>,
) -> (tonic::Code, String) {
    let status = client
        .node_publish_volume(request)
        .await
        .expect_err("the publish must fail");
    (status.code(), status.message().to_string())
}

/// The volume is gone: no mount, no directory.
fn assert_nothing_left(agent: &Agent, target: &Path) {
    assert!(!agent.is_mounted(target), "{} is still mounted", target.display());
    assert!(!agent.view(target).exists(), "{} still exists", target.display());
}

/// A 503 as Key Vault sends it under load, asking for a short wait.
fn key_vault_503() -> FaultAction {
    FaultAction::Respond {
        status: StatusCode::SERVICE_UNAVAILABLE,
        headers: vec![
            ("content-type".into(), "application/json; charset=utf-8".into()),
            ("retry-after-ms".into(), "20".into()),
        ],
        body: json!({"error": {"code": "ServiceUnavailable", "message": "The service is temporarily unavailable."}})
            .to_string(),
    }
}

/// Key Vault's answer when it fails internally, with no `Retry-After`: the agent backs off by itself.
fn key_vault_500() -> FaultAction {
    FaultAction::Respond {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        headers: vec![("content-type".into(), "application/json; charset=utf-8".into())],
        body: json!({"error": {"code": "InternalServerError", "message": "An unexpected error occurred."}}).to_string(),
    }
}

/// Key Vault answers that are retried (4 tries per request, as the Azure SDKs): a fault that lasts fewer tries
/// is invisible to the pod; one that lasts longer fails the first mount, which leaves nothing behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_vault_faults_are_retried_and_a_first_mount_that_runs_out_leaves_nothing() {
    let env = env_with_s1("through the faults").await;
    let vault = &env.cloud.vault;
    let mut agent = Agent::start(&env);
    let mut client = agent.client().await;
    let vault_host = format!("{}:{}", vault.vault_host(VAULT), vault.addr().port());

    // Transient: the fault lasts fewer tries than the agent makes.
    let transient: Vec<(&str, FaultAction, u32)> = vec![
        ("connection reset mid-body", FaultAction::DropConnection, 2),
        ("503 with retry-after-ms", key_vault_503(), 3),
        ("500", key_vault_500(), 1),
    ];
    for (n, (what, action, times)) in transient.into_iter().enumerate() {
        let target = env.target(NAMESPACE, &format!("pod-transient-{n}"));
        let before = vault.request_count(VAULT, "/secrets/s1");
        vault.inject(VAULT, "/secrets/s1", action, Some(times));
        client
            .node_publish_volume(publish_within(&env, &target, PATIENCE))
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}\n{}", agent.logs()));
        assert_eq!(
            vault.request_count(VAULT, "/secrets/s1") - before,
            u64::from(times) + 1,
            "{what}"
        );
        assert_eq!(
            visible_files(&agent.view(&target)),
            s1_files("through the faults"),
            "{what}"
        );
    }

    // Lasting: every try fails; the mount fails with Key Vault's answer and nothing is left.
    let target = env.target(NAMESPACE, "pod-lasting");
    let before = vault.request_count(VAULT, "/secrets/s1");
    vault.inject(VAULT, "/secrets/s1", key_vault_503(), None);
    let (code, message) = publish_fails(&mut client, publish_within(&env, &target, PATIENCE)).await;
    vault.clear_faults();
    assert_eq!(code, tonic::Code::Unknown);
    assert_eq!(
        message,
        format!(
            "{MOUNT_FAILED}failed to get objectType:secret, objectName:s1, objectVersion:: Key Vault {vault_host} \
             answered HTTP 503 ServiceUnavailable: The service is temporarily unavailable."
        )
    );
    assert_eq!(vault.request_count(VAULT, "/secrets/s1") - before, 4);
    assert_nothing_left(&agent, &target);

    // Stalled: Key Vault does not answer within kubelet's deadline; the agent answers before it, with the cause.
    let target = env.target(NAMESPACE, "pod-stalled");
    vault.delay(VAULT, "/secrets/s1", Duration::from_secs(30), None);
    let (code, message) = publish_fails(&mut client, publish_within(&env, &target, Duration::from_secs(4))).await;
    vault.clear_faults();
    assert_eq!(code, tonic::Code::Unknown, "{message}");
    assert!(
        message.starts_with(&format!(
            "{MOUNT_FAILED}failed to get objectType:secret, objectName:s1, objectVersion:: "
        )),
        "{message}"
    );
    assert!(message.contains("timed out"), "{message}");
    assert_nothing_left(&agent, &target);
}

/// Entra's token endpoint failing with 5xx is retried like Key Vault; when it keeps failing, the first mount
/// fails with Entra's answer and leaves nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entra_5xx_is_retried_and_a_lasting_outage_fails_the_mount_cleanly() {
    let env = env_with_s1("past entra").await;
    let entra = &env.cloud.entra;
    let mut agent = Agent::start(&env);
    let mut client = agent.client().await;

    let target = env.target(NAMESPACE, "pod-lasting");
    entra.fail_token_requests(TENANT, 4, StatusCode::SERVICE_UNAVAILABLE, Some(0));
    let (code, message) = publish_fails(&mut client, publish_within(&env, &target, PATIENCE)).await;
    assert_eq!(code, tonic::Code::Unknown);
    // Entra's description ends with its trace and correlation IDs and a timestamp.
    let expected = format!(
        "{MOUNT_FAILED}Microsoft Entra ID refused a token for client ID {CLIENT} in tenant {TENANT} (HTTP 503, \
         temporarily_unavailable): AADSTS90033: A transient error has occurred. Please try again. Trace ID: "
    );
    assert!(message.starts_with(&expected), "{message}");
    assert_eq!(entra.token_requests(TENANT), 4);
    assert_nothing_left(&agent, &target);

    // One failure only: the retry gets the token, and the pod its secret.
    let target = env.target(NAMESPACE, "pod-transient");
    entra.fail_token_requests(TENANT, 1, StatusCode::BAD_GATEWAY, None);
    client
        .node_publish_volume(publish_within(&env, &target, PATIENCE))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", agent.logs()));
    assert_eq!(entra.token_requests(TENANT), 6);
    assert_eq!(visible_files(&agent.view(&target)), s1_files("past entra"));
}

/// A redirect is not followed: it would carry the bearer token wherever its Location points. The mount fails with
/// Key Vault's status, and nothing is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_vault_redirect_is_not_followed() {
    let env = env_with_s1("never redirected").await;
    let vault = &env.cloud.vault;
    let mut agent = Agent::start(&env);
    let mut client = agent.client().await;
    let trap = format!(
        "{}/secrets/trap?api-version=7.4",
        vault.vault_url(VAULT).trim_end_matches('/')
    );
    vault.inject(
        VAULT,
        "/secrets/s1",
        FaultAction::Respond {
            status: StatusCode::TEMPORARY_REDIRECT,
            headers: vec![("location".into(), trap)],
            body: String::new(),
        },
        None,
    );
    let target = env.target(NAMESPACE, "pod-redirected");
    let (code, message) = publish_fails(&mut client, publish_within(&env, &target, PATIENCE)).await;
    assert_eq!(code, tonic::Code::Unknown);
    assert_eq!(
        message,
        format!(
            "{MOUNT_FAILED}failed to get objectType:secret, objectName:s1, objectVersion:: Key Vault {}:{} answered \
             HTTP 307 UnknownError: empty response body",
            vault.vault_host(VAULT),
            vault.addr().port()
        )
    );
    assert_eq!(
        vault.request_count(VAULT, "/secrets/trap"),
        0,
        "the redirect was followed"
    );
    assert_nothing_left(&agent, &target);
}

/// VM managed identity with no IMDS listening (a node without the endpoint, a blocked link-local route): the
/// agent retries until kubelet's deadline is near, then fails the mount naming IMDS, leaving nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_imds_fails_the_mount_before_kubelets_deadline_leaving_nothing() {
    let env = AgentEnv::start(|config| config).await;
    env.cloud.vault.add_secret(VAULT, "s1", "never read", None).expect("s1");
    env.add_spc(
        NAMESPACE,
        "spc-a",
        &[
            ("useVMManagedIdentity", "true"),
            ("userAssignedIdentityID", "0e0e0e0e-0000-0000-0000-00000000000e"),
        ],
        &[S1],
    );
    // A port nothing listens on.
    let imds = format!("http://127.0.0.1:{}", free_port());
    let mut agent = Agent::start_with(&env, tmpfs_mounts_available(), &[&format!("--imds-endpoint={imds}")]);
    let mut client = agent.client().await;
    let target = env.target(NAMESPACE, "pod-a");
    let (code, message) = publish_fails(&mut client, publish_within(&env, &target, Duration::from_secs(6))).await;
    assert_eq!(code, tonic::Code::Unknown, "{message}");
    assert!(message.starts_with(MOUNT_FAILED), "{message}");
    assert!(message.contains(&imds), "the message names IMDS's address: {message}");
    assert_eq!(env.cloud.vault.object_requests(VAULT, ObjectKind::Secret, "s1"), 0);
    assert_nothing_left(&agent, &target);
}

/// Every fault during a refresh keeps the mounted files exactly as they were, reports success to kubelet (an
/// error would make kubelet tear the mount down) and counts a rotation error; once the fault is gone the next
/// refresh brings the new version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_under_any_fault_keeps_the_mounted_files_and_the_next_one_recovers() {
    let env = env_with_s1("mounted").await;
    let (vault, entra) = (&env.cloud.vault, &env.cloud.entra);
    // Tokens that need a new exchange at every refresh, so that Entra's faults reach one.
    entra.set_token_lifetime(Duration::from_secs(2));
    let mut agent = Agent::start_with(&env, tmpfs_mounts_available(), &["--rotation-poll-interval=1s"]);
    let mut client = agent.client().await;
    let target = env.target(NAMESPACE, "pod-a");
    let view = agent.view(&target);
    agent
        .publish(&mut client, env.publish_request(&POD_A, "spc-a", &target))
        .await;
    vault.add_secret(VAULT, "s1", "rotated", None).expect("s1 v2");

    type Inject = Box<dyn Fn(&AgentEnv)>;
    let faults: Vec<(&str, Inject)> = vec![
        (
            "Key Vault resets every connection",
            Box::new(|env| {
                env.cloud
                    .vault
                    .inject(VAULT, "/secrets/s1", FaultAction::DropConnection, None)
            }),
        ),
        (
            "Key Vault answers 503",
            Box::new(|env| env.cloud.vault.inject(VAULT, "/secrets/s1", key_vault_503(), None)),
        ),
        (
            "Key Vault stalls",
            Box::new(|env| {
                env.cloud
                    .vault
                    .delay(VAULT, "/secrets/s1", Duration::from_secs(30), None)
            }),
        ),
        (
            "Entra answers 500",
            Box::new(|env| {
                env.cloud
                    .entra
                    .fail_token_requests(TENANT, u32::MAX, StatusCode::INTERNAL_SERVER_ERROR, Some(0))
            }),
        ),
    ];
    for (n, (what, inject)) in faults.iter().enumerate() {
        tokio::time::sleep(Duration::from_millis(2100)).await;
        inject(&env);
        client
            .node_publish_volume(publish_within(&env, &target, Duration::from_secs(5)))
            .await
            .unwrap_or_else(|e| panic!("{what}: a failed refresh is not reported to kubelet: {e}"));
        vault.clear_faults();
        entra.traffic().clear_faults();
        assert_eq!(visible_files(&view), s1_files("mounted"), "{what}");
        let metrics = agent.metrics().await;
        let errors: u64 = metrics
            .lines()
            .filter(|l| l.starts_with("rotation_reconcile_error_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum();
        assert_eq!(errors, n as u64 + 1, "{what}: rotation errors counted\n{metrics}");
    }

    tokio::time::sleep(Duration::from_millis(2100)).await;
    agent
        .publish(&mut client, env.publish_request(&POD_A, "spc-a", &target))
        .await;
    assert_eq!(visible_files(&view), s1_files("rotated"));
}

/// Secret names of the SIGKILL test: enough objects that writing a volume takes a while.
fn many_secrets(count: usize) -> Vec<String> {
    (0..count).map(|i| format!("s{i:03}")).collect()
}

/// The value of secret `name` in generation `generation`: a few KiB, so the write is not instant.
fn generation_value(name: &str, generation: u32) -> String {
    format!("{name} generation {generation} ").repeat(200)
}

/// What a volume's current data directory holds, read the way a consistent reader reads an atomic volume:
/// resolve `..data` once, then every file below what it names. `None` when the directory went away meanwhile
/// (swapped and cleaned up: the reader reads again).
fn snapshot(target: &Path) -> Option<BTreeMap<String, String>> {
    let data = std::fs::read_link(target.join("..data")).ok()?;
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(target.join(&data)).ok()? {
        let entry = entry.ok()?;
        let contents = std::fs::read_to_string(entry.path()).ok()?;
        files.insert(entry.file_name().to_string_lossy().into_owned(), contents);
    }
    // Swapped meanwhile: the directory read may have raced with its removal.
    (std::fs::read_link(target.join("..data")).ok()? == data).then_some(files)
}

/// The generation a snapshot holds, if it is whole: every name present, every value of one generation.
fn whole_generation(files: &BTreeMap<String, String>, names: &[String], generations: &[u32]) -> Option<u32> {
    let keys: Vec<&String> = files.keys().collect();
    if keys != names.iter().collect::<Vec<_>>() {
        return None;
    }
    generations
        .iter()
        .copied()
        .find(|g| names.iter().all(|n| files[n] == generation_value(n, *g)))
}

/// The writer's data directories at `target` (`..<timestamp>.<suffix>`).
fn data_dirs(target: &Path) -> Vec<String> {
    std::fs::read_dir(target)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|name| {
                    name.strip_prefix("..")
                        .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Data directories at `target` that `..data` does not name: what an interrupted write leaves.
fn orphan_data_dirs(target: &Path) -> Vec<String> {
    let current = std::fs::read_link(target.join("..data")).ok();
    data_dirs(target)
        .into_iter()
        .filter(|name| current.as_deref() != Some(Path::new(name)))
        .collect()
}

/// Publishes in the background and SIGKILLs the agent as soon as a new data directory appears at `target`,
/// i.e. while it writes the files. Returns whether the kill landed during the write (a directory appeared).
async fn kill_while_writing(
    agent: &mut Agent,
    client: &NodeClient<Channel>,
    request: NodePublishVolumeRequest,
    target: &Path,
) -> bool {
    let before = data_dirs(target);
    let mut client = client.clone();
    let publish = tokio::spawn(async move { client.node_publish_volume(request).await });
    let target = target.to_path_buf();
    let appeared = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + PATIENCE;
        while std::time::Instant::now() < deadline {
            if data_dirs(&target).iter().any(|name| !before.contains(name)) {
                return true;
            }
            std::hint::spin_loop();
        }
        false
    })
    .await
    .expect("watcher");
    agent.program.kill();
    let _ = publish.await;
    appeared
}

/// The agent SIGKILLed while it writes a volume of 150 objects, again and again, on a first mount and on
/// refreshes: a reader that reads the volume as kubelet's atomic writer promises (resolve `..data`, read what it
/// names) never sees a partial or mixed volume; after every kill the volume is the old one or the new one,
/// whole; a restarted agent refreshes it (removing what the interrupted write left) and unpublishes it.
///
/// Directory mode: the agent runs in a private mount namespace here, and its tmpfs would go with it; on a node
/// the tmpfs outlives the agent and the same writer runs on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_while_writing_leaves_the_old_or_the_new_volume_whole() {
    const OBJECTS: usize = 150;
    const KILLS: u32 = 6;
    let env = AgentEnv::start(|config| config).await;
    let names = many_secrets(OBJECTS);
    let seed = |generation: u32| {
        for name in &names {
            env.cloud
                .vault
                .add_secret(VAULT, name, &generation_value(name, generation), None)
                .expect("secret");
        }
    };
    seed(1);
    let objects: Vec<String> = names
        .iter()
        .map(|n| format!("objectName: {n}\nobjectType: secret"))
        .collect();
    let objects: Vec<&str> = objects.iter().map(String::as_str).collect();
    env.add_spc(NAMESPACE, "spc-a", &[("clientID", CLIENT)], &objects);
    let target = env.target(NAMESPACE, "pod-a");
    let args = ["--rotation-poll-interval=1ms"];
    let request = || env.publish_request(&POD_A, "spc-a", &target);

    // A reader of the volume for the whole test.
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (stop, target, names) = (stop.clone(), target.clone(), names.clone());
        std::thread::spawn(move || {
            let generations: Vec<u32> = (1..=KILLS + 2).collect();
            let (mut whole, mut mixed) = (0u64, Vec::new());
            while !stop.load(Ordering::SeqCst) {
                if let Some(files) = snapshot(&target) {
                    match whole_generation(&files, &names, &generations) {
                        Some(_) => whole += 1,
                        None => mixed.push(files.len()),
                    }
                }
            }
            (whole, mixed)
        })
    };

    // The first mount, killed while writing: kubelet's retry mounts generation 1 whole.
    let mut agent = Agent::start_with(&env, false, &args);
    let client = agent.client().await;
    assert!(
        kill_while_writing(&mut agent, &client, request(), &target).await,
        "no write was seen"
    );
    // Killed before the swap (nothing visible) or, rarely, just after it (the whole first generation).
    if let Some(files) = snapshot(&target) {
        assert_eq!(
            whole_generation(&files, &names, &[1]),
            Some(1),
            "a partial first mount is visible"
        );
    }
    let mut agent = Agent::start_with(&env, false, &args);
    let mut client = agent.client().await;
    agent.publish(&mut client, request()).await;
    assert_eq!(
        snapshot(&target).and_then(|f| whole_generation(&f, &names, &[1])),
        Some(1)
    );
    assert_eq!(orphan_data_dirs(&target), Vec::<String>::new());
    drop(agent);

    // Refreshes, each killed while writing generation `g`.
    let (mut interrupted, mut current) = (0, 1);
    for g in 2..KILLS + 2 {
        seed(g);
        let mut agent = Agent::start_with(&env, false, &args);
        let client = agent.client().await;
        assert!(
            kill_while_writing(&mut agent, &client, request(), &target).await,
            "generation {g}: no write was seen"
        );
        let files = snapshot(&target).expect("a volume is there after the kill");
        let generation = whole_generation(&files, &names, &[current, g])
            .unwrap_or_else(|| panic!("generation {g}: the volume after the kill is not whole"));
        // Still the old volume after an interrupted write, or the new one if the swap came first.
        if generation == current {
            interrupted += 1;
            assert!(
                !orphan_data_dirs(&target).is_empty(),
                "generation {g}: no trace of the interrupted write"
            );
        }
        current = generation;
        // Whatever is there, the visible links lead into it.
        for name in &names {
            assert_eq!(
                std::fs::read_link(target.join(name)).expect("visible link"),
                Path::new("..data").join(name)
            );
        }
    }
    assert!(interrupted > 0, "no kill interrupted a write");

    // A restarted agent refreshes the volume whole, leaving no trace of the interrupted writes, and unpublishes.
    seed(KILLS + 2);
    let mut agent = Agent::start_with(&env, false, &args);
    let mut client = agent.client().await;
    agent.publish(&mut client, request()).await;
    let files = snapshot(&target).expect("volume");
    assert_eq!(whole_generation(&files, &names, &[KILLS + 2]), Some(KILLS + 2));
    assert_eq!(orphan_data_dirs(&target), Vec::<String>::new());
    stop.store(true, Ordering::SeqCst);
    let (whole, mixed) = reader.join().expect("reader");
    eprintln!(
        "{} kills while writing ({interrupted} before the swap), {whole} whole snapshots read, {} partial or mixed",
        KILLS,
        mixed.len()
    );
    assert_eq!(mixed, Vec::<usize>::new(), "the reader saw partial or mixed volumes");
    assert!(whole > 0, "the reader never read the volume");
    client
        .node_unpublish_volume(kubelet::unpublish_request("csi-pod-a", &target))
        .await
        .expect("unpublish");
    assert!(!target.exists(), "{} is left", target.display());
}

/// How the Kubernetes API fails during a refresh.
#[derive(Debug, Clone, Copy)]
enum ApiFault {
    /// Writes of the pod status answer 500, writes of the Secret 503; everything else works.
    WritesFail,
    /// The API server is down: every connection is dropped, watches included.
    Down,
}

/// The Kubernetes API failing while the agent writes the pod status and syncs Secrets on a refresh: the files
/// are refreshed anyway (the mount does not depend on the API server; the class comes from the watch cache), the
/// pod status and the Secret keep their last values, and both are written at the first refresh after the API
/// server is back, without a restart.
async fn pod_status_and_secrets_catch_up_after(fault: ApiFault) {
    let env = env_with_s1("first").await;
    let kube = &env.cloud.kube;
    env.add_spc_with(
        NAMESPACE,
        "spc-a",
        &env.spc_parameters(&[S1], &[("clientID", CLIENT)]),
        Some(json!([{"secretName": "app", "type": "Opaque", "data": [{"objectName": "s1", "key": "value"}]}])),
    );
    env.add_pod(&POD_A, "spc-a", json!([]));
    let mut agent = Agent::start_with(&env, tmpfs_mounts_available(), &["--rotation-poll-interval=1s"]);
    let mut client = agent.client().await;
    let target = env.target(NAMESPACE, "pod-a");
    agent
        .publish(&mut client, env.publish_request(&POD_A, "spc-a", &target))
        .await;
    let status_name = format!("pod-a-{NAMESPACE}-spc-a");
    let status_version = || {
        kube.get(
            "secrets-store.csi.x-k8s.io/v1",
            "SecretProviderClassPodStatus",
            Some(NAMESPACE),
            &status_name,
        )
        .map(|s| s["status"]["objects"][0]["version"].clone())
    };
    let secret_value = || {
        kube.get("v1", "Secret", Some(NAMESPACE), "app")
            .map(|s| s["data"]["value"].clone())
    };
    let first_version = status_version().expect("pod status");
    kube.wait_until("the Secret is synced", PATIENCE, |_| {
        secret_value() == Some(json!(STANDARD.encode("first")))
    })
    .await;

    match fault {
        ApiFault::WritesFail => {
            let status_path = format!(
                "/apis/secrets-store.csi.x-k8s.io/v1/namespaces/{NAMESPACE}/secretproviderclasspodstatuses/{status_name}"
            );
            kube.fail_requests("PATCH", &status_path, 500, u32::MAX);
            kube.fail_requests(
                "PATCH",
                &format!("/api/v1/namespaces/{NAMESPACE}/secrets/app"),
                503,
                u32::MAX,
            );
        }
        ApiFault::Down => kube.start_outage(Outage::Down),
    }
    let second_version = env.cloud.vault.add_secret(VAULT, "s1", "second", None).expect("s1 v2");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    agent
        .publish(&mut client, env.publish_request(&POD_A, "spc-a", &target))
        .await;
    assert_eq!(visible_files(&agent.view(&target)), s1_files("second"), "{fault:?}");
    agent
        .program
        .wait_for_log("pod status not updated after a refresh", PATIENCE)
        .await;
    match fault {
        // The Secret's write is retried while the API server answers 503: it has been tried, and refused.
        ApiFault::WritesFail => {
            kube.wait_until("the Secret's write was tried and refused", PATIENCE, |kube| {
                let secret_path = format!("/api/v1/namespaces/{NAMESPACE}/secrets/app");
                kube.requests()
                    .iter()
                    .filter(|r| r.method == "PATCH" && r.path == secret_path && r.status == 503)
                    .count()
                    >= 2
            })
            .await
        }
        // No pod to read the volume from.
        ApiFault::Down => agent.program.wait_for_log("secret sync skipped", PATIENCE).await,
    }
    assert_eq!(status_version(), Some(first_version), "{fault:?}");
    assert_eq!(secret_value(), Some(json!(STANDARD.encode("first"))), "{fault:?}");

    // The API server is back: the next refresh writes both, though the files do not change again.
    kube.clear_failures();
    kube.end_outage();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    agent
        .publish(&mut client, env.publish_request(&POD_A, "spc-a", &target))
        .await;
    assert_eq!(status_version(), Some(json!(second_version)), "{fault:?}");
    kube.wait_until("the Secret has the new value", PATIENCE, |_| {
        secret_value() == Some(json!(STANDARD.encode("second")))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_status_and_secrets_catch_up_once_the_api_server_takes_writes_again() {
    pod_status_and_secrets_catch_up_after(ApiFault::WritesFail).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_status_and_secrets_catch_up_once_the_api_server_is_up_again() {
    pod_status_and_secrets_catch_up_after(ApiFault::Down).await;
}

/// A filesystem mounted for the test below the pods directory, unmounted however the test ends.
struct TestMount(PathBuf);

impl TestMount {
    /// Mounts a tmpfs with `options` at `dir` (created), or `None` where this machine permits no mounts.
    fn tmpfs(dir: &Path, options: &str) -> Option<Self> {
        if !tmpfs_mounts_available() {
            return None;
        }
        std::fs::create_dir_all(dir).expect("mount point");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(dir)
            .status()
            .expect("mount");
        assert!(status.success(), "mount -o {options} {}", dir.display());
        Some(Self(dir.to_path_buf()))
    }
}

impl Drop for TestMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A target directory on a full filesystem, and one on a read-only filesystem: the mount fails with the path
/// and the system's reason, and nothing is left there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_or_read_only_target_fails_naming_the_path_and_leaves_nothing() {
    let env = env_with_s1(&"x".repeat(256 * 1024)).await;
    let pods = env.dir.path().join("pods");
    let full_root = pods.join("full");
    let read_only_root = pods.join("read-only");
    let (Some(_full), Some(_read_only)) = (
        TestMount::tmpfs(&full_root, "size=64k"),
        TestMount::tmpfs(&read_only_root, "ro,size=64k"),
    ) else {
        eprintln!("skipped: this machine permits no mounts (run as root)");
        return;
    };
    // Directory mode: the agent writes into the test's filesystems (a tmpfs of its own would have room).
    let mut agent = Agent::start_with(&env, false, &[]);
    let mut client = agent.client().await;

    // kubelet creates the volume's directory; the driver creates `mount` in it.
    let volume_dir = full_root.join("uid-1/volumes/kubernetes.io~csi/secrets");
    std::fs::create_dir_all(&volume_dir).expect("volume directory");
    let target = volume_dir.join("mount");
    let (code, message) = publish_fails(&mut client, publish_within(&env, &target, PATIENCE)).await;
    assert_eq!(code, tonic::Code::Internal, "{message}");
    let prefix = format!(
        "failed to write the files of the volume at {}: failed to write the file ",
        target.display()
    );
    assert!(message.starts_with(&prefix), "{message}");
    assert!(message.ends_with("No space left on device (os error 28)"), "{message}");
    assert_eq!(
        std::fs::read_dir(&volume_dir).expect("volume directory").count(),
        0,
        "nothing is left on the full filesystem"
    );

    let target = read_only_root.join("mount");
    let (code, message) = publish_fails(&mut client, publish_within(&env, &target, PATIENCE)).await;
    assert_eq!(code, tonic::Code::Internal, "{message}");
    assert_eq!(
        message,
        format!(
            "failed to create target path {}: Read-only file system (os error 30)",
            target.display()
        )
    );
    assert!(!target.exists());
}
