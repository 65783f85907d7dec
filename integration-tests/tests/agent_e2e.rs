//! The real `wisp-agent` binary driven as kubelet drives it: CSI calls over its unix socket with the
//! volume_context kubelet sends (pod info and a real RS256 service-account token), against the fake Kubernetes
//! API (SecretProviderClasses), the fake Entra and the fake Key Vault over HTTPS trusting only the test CA.
//!
//! The agent is started with `integration_tests::process`: in a private mount namespace whose hosts file maps the
//! fakes' names to 127.0.0.1, so it resolves them with the system resolver as in production. Its tmpfs mounts
//! live in that namespace, so the tests look at the volume through `/proc/<agent pid>/root` and check its mount
//! table through `/proc/<agent pid>/mountinfo`; when the agent exits, the namespace and any mount in it are gone.
//! Where tmpfs mounts are not permitted the agent runs with `--mount-mode=directory`.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use integration_tests::agent_harness::{Agent, AgentEnv, CLIENT, POD_A, Pod, TENANT, VAULT, pem};
use integration_tests::fake_entra::FederatedCredential;
use integration_tests::fake_keyvault::{CertificateSpec, EcCurve, KeyVaultConfig, ObjectKind};
use integration_tests::foreign_clients::{ClientAuthority, ForeignCall, ForeignClients, HttpCall, authority_forms};
use integration_tests::kubelet::csi::NodeUnpublishVolumeRequest;
use integration_tests::kubelet::csi::node_client::NodeClient;
use integration_tests::kubelet::{self, PodRef, visible_files};
use integration_tests::process::tmpfs_mounts_available;
use pretty_assertions::assert_eq;
use serde_json::{Value, json};
use tonic::transport::Channel;

/// Guards against a hang only; no test asserts on timing.
const PATIENCE: Duration = Duration::from_secs(30);
const CLIENT_SP: &str = "05050505-0000-0000-0000-000000000005";
const SP_SECRET: &str = "sp-secret-value";

/// The agent's fakes with a service principal besides the workload identity, and one version per Key Vault
/// page, so that every version list is paged through `nextLink`.
async fn start_env() -> AgentEnv {
    let env = AgentEnv::start(|config| KeyVaultConfig { page_size: 1, ..config }).await;
    env.cloud.entra.add_client_secret(TENANT, CLIENT_SP, SP_SECRET);
    env.cloud.vault.grant(CLIENT_SP, VAULT).expect("grant");
    env
}

/// The object `s1`, a secret, as a SecretProviderClass lists it.
const S1: &str = "objectName: s1\nobjectType: secret";

/// Secret `s1` holding `value` (returns its version), and SecretProviderClass `ns-a/spc-a` mounting it as the
/// workload identity.
fn seed_s1(env: &AgentEnv, value: &str) -> String {
    let version = env.cloud.vault.add_secret(VAULT, "s1", value, None).expect("secret");
    env.add_spc("ns-a", "spc-a", &[("clientID", CLIENT)], &[S1]);
    version
}

/// A kubelet-style target path of pod `pod` of namespace `ns-a` under the test's directory.
fn target(env: &AgentEnv, pod: &str) -> PathBuf {
    env.target("ns-a", pod)
}

async fn unpublish(client: &mut NodeClient<Channel>, target: &Path) {
    client
        .node_unpublish_volume(NodeUnpublishVolumeRequest {
            volume_id: "any".into(),
            target_path: target.display().to_string(),
        })
        .await
        .expect("unpublish");
}

/// The volume is gone: no mount, no directory, nothing in it.
fn assert_nothing_left(agent: &Agent, target: &Path) {
    assert!(!agent.is_mounted(target), "{} is still mounted", target.display());
    assert!(!agent.view(target).exists(), "{} still exists", target.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_secret_key_and_certificate_with_exact_bytes_and_modes() {
    let env = start_env().await;
    env.cloud
        .vault
        .add_secret(VAULT, "s1", "secret value\nline 2", None)
        .expect("secret");
    let key = env.cloud.vault.add_rsa_key(VAULT, "k1").expect("key");
    let cert = env
        .cloud
        .vault
        .add_certificate(VAULT, "c1", &CertificateSpec::self_signed("c1.wisp.test"))
        .expect("cert");
    env.add_spc(
        "ns-a",
        "spc-a",
        &[("clientID", CLIENT)],
        &[
            "objectName: s1\nobjectType: secret\nobjectAlias: app/config/s1.txt\nfilePermission: \"0600\"",
            "objectName: k1\nobjectType: key",
            "objectName: c1\nobjectType: cert\nobjectAlias: tls.crt",
        ],
    );
    let mut agent = Agent::start(&env);
    let mut client = agent.client().await;
    let target = target(&env, "pod-a");
    let socket_mode = std::fs::metadata(&agent.socket).expect("socket").permissions().mode() & 0o777;
    assert_eq!(socket_mode, 0o600);

    agent
        .publish(&mut client, env.publish_request(&POD_A, "spc-a", &target))
        .await;

    assert_eq!(agent.is_mounted(&target), agent.tmpfs);
    let files = visible_files(&agent.view(&target));
    let expected: BTreeMap<String, (Vec<u8>, u32)> = BTreeMap::from([
        (
            "app/config/s1.txt".to_string(),
            (b"secret value\nline 2".to_vec(), 0o600),
        ),
        (
            "k1".to_string(),
            (pem("PUBLIC KEY", &key.public_key_spki_der).into_bytes(), 0o644),
        ),
        (
            "tls.crt".to_string(),
            (pem("CERTIFICATE", &cert.chain_der[0]).into_bytes(), 0o644),
        ),
    ]);
    assert_eq!(files, expected);
    // Top-level entries are symlinks into `..data`, as kubelet's atomic writer lays them out.
    let top = agent.view(&target);
    assert_eq!(
        std::fs::read_link(top.join("app")).expect("app link"),
        PathBuf::from("..data/app")
    );
    assert_eq!(
        std::fs::read_link(top.join("k1")).expect("k1 link"),
        PathBuf::from("..data/k1")
    );

    // A republish (kubelet retry) changes nothing and asks Key Vault nothing.
    let before = env.cloud.vault.request_count(VAULT, "/secrets/s1");
    client
        .node_publish_volume(env.publish_request(&POD_A, "spc-a", &target))
        .await
        .expect("republish");
    assert_eq!(env.cloud.vault.request_count(VAULT, "/secrets/s1"), before);

    unpublish(&mut client, &target).await;
    assert_nothing_left(&agent, &target);
    // Idempotent.
    unpublish(&mut client, &target).await;

    // Debug logs name requests but never carry the service-account token or a secret value.
    let log = agent.logs();
    assert!(log.contains("NodePublishVolume"), "no request log:\n{log}");
    assert!(log.contains("***stripped***"), "tokens not shown as stripped:\n{log}");
    let tokens: serde_json::Value = serde_json::from_str(&env.tokens_json(&POD_A)).expect("tokens JSON");
    let sa_token = tokens["api://AzureADTokenExchange"]["token"]
        .as_str()
        .expect("token")
        .to_string();
    // Every token of the test issuer starts with the same JWT header; header + "." + payload would be a token.
    let sa_token_prefix = &sa_token[..sa_token.find('.').expect("JWT")];
    assert!(!log.contains("secret value"), "a secret value is in the log:\n{log}");
    assert!(
        !log.contains(&format!("{sa_token_prefix}.ey")),
        "a JWT is in the log:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_b_naming_pod_a_client_id_is_refused_although_a_token_is_cached() {
    let env = start_env().await;
    seed_s1(&env, "for pod a only");
    let mut agent = Agent::start(&env);
    let mut client = agent.client().await;

    let target_a = target(&env, "pod-a");
    client
        .node_publish_volume(env.publish_request(&POD_A, "spc-a", &target_a))
        .await
        .unwrap_or_else(|e| panic!("publish A failed: {e}\n{}", agent.logs()));
    assert_eq!(env.cloud.entra.token_requests(TENANT), 1);

    // Pod B runs as another service account in the same namespace and mounts the same SecretProviderClass:
    // A's token is cached, but B must earn its own, and Entra refuses B's assertion.
    let pod_b = Pod {
        namespace: "ns-a",
        name: "pod-b",
        service_account: "sa-b",
    };
    let target_b = target(&env, "pod-b");
    let status = client
        .node_publish_volume(env.publish_request(&pod_b, "spc-a", &target_b))
        .await
        .expect_err("pod B must be refused");
    assert_eq!(status.code(), tonic::Code::Unknown);
    let expected_prefix = format!(
        "failed to mount secrets store objects for pod ns-a/pod-b, err: SecretProviderClass ns-a/spc-a: Microsoft Entra \
         ID refused a token for client ID {CLIENT} in tenant {TENANT} (HTTP 401, invalid_client): AADSTS700213: No \
         matching federated identity record found for presented assertion subject 'system:serviceaccount:ns-a:sa-b'."
    );
    assert!(status.message().starts_with(&expected_prefix), "{}", status.message());
    assert_eq!(env.cloud.entra.token_requests(TENANT), 2);
    assert_nothing_left(&agent, &target_b);
    // A's volume is untouched.
    assert_eq!(
        visible_files(&agent.view(&target_a)),
        BTreeMap::from([("s1".to_string(), (b"for pod a only".to_vec(), 0o644))])
    );
    unpublish(&mut client, &target_a).await;
    assert_nothing_left(&agent, &target_a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_path_leaves_no_mount_and_no_file() {
    let env = start_env().await;
    env.cloud.vault.add_secret(VAULT, "s1", "v1", None).expect("secret");
    env.cloud.entra.add_federated_credential(
        TENANT,
        "0c0c0c0c-0000-0000-0000-00000000000c",
        FederatedCredential::for_service_account(env.cloud.issuer.issuer(), "ns-a", "sa-a"),
    );
    env.add_spc(
        "ns-a",
        "bad-param",
        &[("clientID", CLIENT), ("keyvaultName", "k")],
        &[S1],
    );
    env.add_spc("ns-other", "elsewhere", &[("clientID", CLIENT)], &[S1]);
    env.add_spc(
        "ns-a",
        "unknown-client",
        &[("clientID", "0d0d0d0d-0000-0000-0000-00000000000d")],
        &[S1],
    );
    // Registered with a federated credential for sa-a, but never granted access to the vault.
    env.add_spc(
        "ns-a",
        "no-access",
        &[("clientID", "0c0c0c0c-0000-0000-0000-00000000000c")],
        &[S1],
    );
    env.add_spc(
        "ns-a",
        "missing-secret",
        &[("clientID", CLIENT)],
        &[S1, "objectName: nope\nobjectType: secret"],
    );
    let mut agent = Agent::start(&env);
    let mut client = agent.client().await;
    let prefix = "failed to mount secrets store objects for pod ns-a/pod-a, err: ";
    let vault_host = format!(
        "{}:{}",
        env.cloud.vault.vault_host(VAULT),
        env.cloud.vault.addr().port()
    );

    let cases: Vec<(&str, tonic::Code, String)> = vec![
        (
            "bad-param",
            tonic::Code::Unknown,
            format!(
                "{prefix}SecretProviderClass ns-a/bad-param: Invalid vault name: \"k\", must be between 3 and 24 chars; \
                 set parameters.keyvaultName to the name of the Key Vault, not its URL"
            ),
        ),
        (
            "unknown-spc",
            tonic::Code::Unknown,
            "failed to get secretproviderclass ns-a/unknown-spc, error: secretproviderclasses.secrets-store.csi.x-k8s.io \
             \"unknown-spc\" not found; the SecretProviderClass must be in the pod's namespace \"ns-a\""
                .to_string(),
        ),
        (
            "elsewhere",
            tonic::Code::Unknown,
            "failed to get secretproviderclass ns-a/elsewhere, error: secretproviderclasses.secrets-store.csi.x-k8s.io \
             \"elsewhere\" not found; the SecretProviderClass must be in the pod's namespace \"ns-a\""
                .to_string(),
        ),
        (
            "unknown-client",
            tonic::Code::Unknown,
            format!(
                "{prefix}SecretProviderClass ns-a/unknown-client: Microsoft Entra ID refused a token for client ID \
                 0d0d0d0d-0000-0000-0000-00000000000d in tenant {TENANT} (HTTP 400, unauthorized_client): AADSTS700016: \
                 Application with identifier '0d0d0d0d-0000-0000-0000-00000000000d' was not found in the directory"
            ),
        ),
        (
            "no-access",
            tonic::Code::Unknown,
            format!(
                "{prefix}SecretProviderClass ns-a/no-access: failed to get objectType:secret, objectName:s1, \
                 objectVersion:: Key Vault {vault_host} answered HTTP 403 Forbidden: The user, group or application \
                 'appid=0c0c0c0c-0000-0000-0000-00000000000c;"
            ),
        ),
        (
            "missing-secret",
            tonic::Code::Unknown,
            format!(
                "{prefix}SecretProviderClass ns-a/missing-secret: failed to get objectType:secret, objectName:nope, \
                 objectVersion:: Key Vault {vault_host} answered HTTP 404 SecretNotFound: "
            ),
        ),
    ];
    for (spc, code, message_prefix) in cases {
        let target = target(&env, &format!("pod-{spc}"));
        let status = client
            .node_publish_volume(env.publish_request(&POD_A, spc, &target))
            .await
            .expect_err(&format!("{spc} must fail"));
        assert_eq!(status.code(), code, "{spc}: {}", status.message());
        assert!(
            status.message().starts_with(&message_prefix),
            "{spc}:\n  got:      {}\n  expected: {message_prefix}…",
            status.message()
        );
        assert_nothing_left(&agent, &target);
    }
    // Nothing was written anywhere below the pods directory.
    let pods = env.dir.path().join("pods");
    assert!(!agent.view(&pods).exists(), "{} exists", pods.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_key_vault_is_retried_after_retry_after() {
    let env = start_env().await;
    seed_s1(&env, "after the throttle");
    env.cloud.vault.throttle(VAULT, "/secrets/s1", 1, 1);
    let mut agent = Agent::start(&env);
    let mut client = agent.client().await;
    let target = target(&env, "pod-a");
    agent
        .publish(&mut client, env.publish_request(&POD_A, "spc-a", &target))
        .await;
    assert_eq!(env.cloud.vault.request_count(VAULT, "/secrets/s1"), 2);
    assert_eq!(
        visible_files(&agent.view(&target)),
        BTreeMap::from([("s1".to_string(), (b"after the throttle".to_vec(), 0o644))])
    );
    unpublish(&mut client, &target).await;
    assert_nothing_left(&agent, &target);

    // SIGTERM stops the agent cleanly and removes its socket.
    let status = agent
        .program
        .terminate(PATIENCE)
        .await
        .expect("the agent exits on SIGTERM");
    assert!(status.success(), "exit status {status}:\n{}", agent.logs());
    assert!(!agent.socket.exists(), "the socket was left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_principal_from_node_publish_secret() {
    let env = start_env().await;
    env.cloud.vault.add_secret(VAULT, "s1", "via sp", None).expect("secret");
    env.add_spc("ns-a", "spc-sp", &[], &[S1]);
    let mut agent = Agent::start(&env);
    let mut client = agent.client().await;
    let target = target(&env, "pod-a");
    let mut request = env.publish_request(&POD_A, "spc-sp", &target);
    request.secrets = HashMap::from([
        ("ClientID".to_string(), CLIENT_SP.to_string()),
        ("clientsecret".to_string(), SP_SECRET.to_string()),
    ]);
    agent.publish(&mut client, request.clone()).await;
    assert_eq!(
        visible_files(&agent.view(&target)),
        BTreeMap::from([("s1".to_string(), (b"via sp".to_vec(), 0o644))])
    );
    unpublish(&mut client, &target).await;

    // A wrong secret for the same client id is not served the cached token.
    request.secrets.insert("clientsecret".to_string(), "wrong".to_string());
    let status = client.node_publish_volume(request).await.expect_err("wrong secret");
    assert!(
        status
            .message()
            .contains("(HTTP 401, invalid_client): AADSTS7000215: Invalid client secret provided."),
        "{}",
        status.message()
    );
    assert_nothing_left(&agent, &target);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renders_pfx_secrets_ec_keys_and_version_history() {
    let env = start_env().await;
    let spec = CertificateSpec {
        issued_by_ca: true,
        ..CertificateSpec::self_signed("web.wisp.test")
    };
    let cert = env.cloud.vault.add_certificate(VAULT, "web", &spec).expect("cert");
    let ec = env.cloud.vault.add_ec_key(VAULT, "ec", EcCurve::P384).expect("ec key");
    // Key Vault's `created` has one-second resolution; the pauses give the versions distinct times.
    let v1 = env.cloud.vault.add_secret(VAULT, "hist", "one", None).expect("v1");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let v2 = env.cloud.vault.add_secret(VAULT, "hist", "two", None).expect("v2");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    env.cloud.vault.add_secret(VAULT, "hist", "three", None).expect("v3");
    env.cloud
        .vault
        .disable_version(VAULT, ObjectKind::Secret, "hist", &v2)
        .expect("disable v2");
    env.add_spc(
        "ns-a",
        "spc-a",
        &[("clientID", CLIENT)],
        &[
            "objectName: web\nobjectType: secret\nobjectAlias: tls/web.pem",
            "objectName: ec\nobjectType: KEY",
            "objectName: hist\nobjectType: secret\nobjectVersionHistory: 5",
        ],
    );
    let mut agent = Agent::start(&env);
    let mut client = agent.client().await;
    let target = target(&env, "pod-a");
    agent
        .publish(&mut client, env.publish_request(&POD_A, "spc-a", &target))
        .await;

    let mut pfx_as_pem = pem("PRIVATE KEY", &cert.private_key_pkcs8_der);
    pfx_as_pem.push_str(&pem("CERTIFICATE", &cert.chain_der[0]));
    pfx_as_pem.push_str(&pem("CERTIFICATE", &cert.chain_der[1]));
    let expected: BTreeMap<String, (Vec<u8>, u32)> = BTreeMap::from([
        ("tls/web.pem".to_string(), (pfx_as_pem.into_bytes(), 0o644)),
        (
            "ec".to_string(),
            (pem("PUBLIC KEY", &ec.public_key_spki_der).into_bytes(), 0o644),
        ),
        // Newest first; the disabled version is skipped; fewer versions than asked for gives what exists.
        ("hist/0".to_string(), (b"three".to_vec(), 0o644)),
        ("hist/1".to_string(), (b"one".to_vec(), 0o644)),
    ]);
    assert_eq!(visible_files(&agent.view(&target)), expected);
    assert_ne!(v1, v2);
    unpublish(&mut client, &target).await;
    assert_nothing_left(&agent, &target);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vm_managed_identity_through_imds_and_metrics() {
    let env = start_env().await;
    let user_assigned = "0e0e0e0e-0000-0000-0000-00000000000e";
    env.cloud.entra.set_node_identities(TENANT, None, &[user_assigned]);
    env.cloud.vault.grant(user_assigned, VAULT).expect("grant");
    env.cloud
        .vault
        .add_secret(VAULT, "s1", "node identity", None)
        .expect("secret");
    env.add_spc(
        "ns-a",
        "spc-mi",
        &[
            ("useVMManagedIdentity", "true"),
            ("userAssignedIdentityID", user_assigned),
        ],
        &[S1],
    );
    let mut agent = Agent::start_with(
        &env,
        tmpfs_mounts_available(),
        &[&format!("--imds-endpoint=http://{}", env.cloud.entra.imds_addr())],
    );
    let mut client = agent.client().await;
    let target = target(&env, "pod-a");
    agent
        .publish(&mut client, env.publish_request(&POD_A, "spc-mi", &target))
        .await;
    assert_eq!(env.cloud.entra.imds_requests(), 1);
    assert_eq!(
        visible_files(&agent.view(&target)),
        BTreeMap::from([("s1".to_string(), (b"node identity".to_vec(), 0o644))])
    );
    let other_target = env
        .dir
        .path()
        .join("pods/uid-pod-x/volumes/kubernetes.io~csi/secrets/mount");
    let status = client
        .node_publish_volume(env.publish_request(&POD_A, "missing-spc", &other_target))
        .await
        .expect_err("unknown SecretProviderClass");
    assert_eq!(status.code(), tonic::Code::Unknown);
    unpublish(&mut client, &target).await;

    let text = reqwest::get(format!("http://127.0.0.1:{}/metrics", agent.metrics_port))
        .await
        .expect("metrics endpoint")
        .text()
        .await
        .expect("metrics body");
    let health = reqwest::get(format!("http://127.0.0.1:{}/healthz", agent.health_port))
        .await
        .expect("healthz");
    assert_eq!(health.status(), reqwest::StatusCode::OK);
    assert_eq!(health.text().await.expect("healthz body"), "ok");
    for line in [
        "node_publish_total{provider=\"azure\",os_type=\"linux\"} 1",
        "node_publish_error_total{provider=\"azure\",error_type=\"SecretProviderClassNotFound\",os_type=\"linux\"} 1",
        "node_unpublish_total{os_type=\"linux\"} 1",
        "keyvault_request_count{provider=\"azure\",os_type=\"linux\",object_type=\"secret\",object_name=\"s1\",error=\"\"} 1",
        "grpc_request_count{provider=\"azure\",os_type=\"linux\",grpc_method=\"/csi.v1.Node/NodePublishVolume\",grpc_code=\"Unknown\"} 1",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
    }
}

/// Waits for `socket` to appear (the agent binds its sockets one after another at start-up).
async fn wait_for_socket(agent: &Agent, socket: &Path) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !socket.exists() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} did not appear:\n{}",
            socket.display(),
            agent.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// kubelet's plugin watcher, Python `grpcio`, grpc-java and grpcurl each send another `:authority` over a unix
/// socket (none, `localhost`, the raw path, the percent-encoded path); every socket of the agent must answer
/// them all, as node-driver-registrar, the upstream driver and provider-azure (all grpc-go) do. The clients
/// here are Python's (`integration_tests::foreign_clients`), not tonic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_socket_answers_foreign_clients_whatever_authority_they_send() {
    let clients = ForeignClients::find();
    let env = start_env().await;
    let version = seed_s1(&env, "from a foreign client");
    let provider_socket = env.dir.path().join("providers/azure.sock");
    let mut agent = Agent::start_with(
        &env,
        tmpfs_mounts_available(),
        &[&format!("--provider-endpoint=unix://{}", provider_socket.display())],
    );
    agent.client().await;
    let registration_socket = agent
        .socket
        .with_file_name("plugins_registry")
        .join("secrets-store.csi.k8s.io-reg.sock");
    wait_for_socket(&agent, &registration_socket).await;
    wait_for_socket(&agent, &provider_socket).await;

    let ok = |response: Value| json!({"code": "OK", "message": "", "response": response});
    let mut calls = Vec::new();
    let mut expected = Vec::new();
    let mut targets = Vec::new();
    let mut call = |socket: &Path, client: &ClientAuthority, method: &'static str, request: Value, outcome: Value| {
        calls.push(ForeignCall {
            socket: socket.to_path_buf(),
            client: client.clone(),
            method,
            request,
        });
        expected.push(outcome);
    };
    for client in authority_forms(&registration_socket) {
        call(
            &registration_socket,
            &client,
            "/pluginregistration.Registration/GetInfo",
            json!({}),
            ok(json!({
                "type": "CSIPlugin",
                "name": "secrets-store.csi.k8s.io",
                "endpoint": agent.socket.display().to_string(),
                "supported_versions": ["1.0.0"],
            })),
        );
        call(
            &registration_socket,
            &client,
            "/pluginregistration.Registration/NotifyRegistrationStatus",
            json!({"plugin_registered": true}),
            ok(json!({})),
        );
    }
    let tokens = env.tokens_json(&POD_A);
    for (n, client) in authority_forms(&agent.socket).iter().enumerate() {
        let socket = agent.socket.clone();
        call(
            &socket,
            client,
            "/csi.v1.Identity/GetPluginInfo",
            json!({}),
            ok(json!({"name": "secrets-store.csi.k8s.io", "vendor_version": env!("CARGO_PKG_VERSION")})),
        );
        call(
            &socket,
            client,
            "/csi.v1.Identity/Probe",
            json!({}),
            ok(json!({"ready": true})),
        );
        call(
            &socket,
            client,
            "/csi.v1.Controller/ControllerGetCapabilities",
            json!({}),
            ok(json!({"capabilities": [{"rpc": {}}]})),
        );
        let target = env
            .dir
            .path()
            .join(format!("pods/uid-pod-a/volumes/kubernetes.io~csi/secrets-{n}/mount"));
        let context = kubelet::volume_context(
            [("secretProviderClass".to_string(), "spc-a".to_string())],
            &PodRef {
                namespace: POD_A.namespace,
                name: POD_A.name,
                uid: "uid-pod-a",
                service_account: POD_A.service_account,
            },
            tokens.clone(),
        );
        call(
            &socket,
            client,
            "/csi.v1.Node/NodePublishVolume",
            json!({
                "volume_id": format!("csi-pod-a-{n}"),
                "target_path": target.display().to_string(),
                "volume_capability": {"mount": {}, "access_mode": {"mode": "SINGLE_NODE_READER_ONLY"}},
                "readonly": true,
                "volume_context": context,
            }),
            ok(json!({})),
        );
        targets.push(target);
    }
    let mount_attributes = {
        let mut attributes = env.spc_parameters(&[S1], &[("clientID", CLIENT)]);
        attributes.insert("secretProviderClass".to_string(), "spc-a".to_string());
        attributes.extend(kubelet::volume_context(
            [],
            &PodRef {
                namespace: POD_A.namespace,
                name: POD_A.name,
                uid: "uid-pod-a",
                service_account: POD_A.service_account,
            },
            tokens.clone(),
        ));
        serde_json::to_string(&attributes).expect("attributes JSON")
    };
    let s1 = base64::engine::general_purpose::STANDARD.encode("from a foreign client");
    for client in authority_forms(&provider_socket) {
        call(
            &provider_socket,
            &client,
            "/v1alpha1.CSIDriverProvider/Version",
            json!({"version": "v1alpha1"}),
            ok(json!({
                "version": "v1alpha1",
                "runtime_name": "wisp-agent",
                "runtime_version": env!("CARGO_PKG_VERSION"),
            })),
        );
        call(
            &provider_socket,
            &client,
            "/v1alpha1.CSIDriverProvider/Mount",
            json!({
                "attributes": mount_attributes,
                "secrets": "null",
                "target_path": env.dir.path().join("driver/mount").display().to_string(),
                "permission": "420",
            }),
            ok(json!({
                "object_version": [{"id": "secret/s1", "version": version}],
                "files": [{"path": "s1", "mode": 420, "contents": s1}],
            })),
        );
    }

    let outcomes = clients.call(&calls);
    for ((call, outcome), expected) in calls.iter().zip(&outcomes).zip(&expected) {
        assert_eq!(
            outcome,
            expected,
            "{} on {} with {:?}\n{}",
            call.method,
            call.socket.display(),
            call.client,
            agent.logs()
        );
    }
    for target in &targets {
        assert_eq!(
            visible_files(&agent.view(target)),
            BTreeMap::from([("s1".to_string(), (b"from a foreign client".to_vec(), 0o644))]),
            "{}",
            target.display()
        );
    }
    // Every call reached a service: none was reset at the HTTP/2 layer.
    assert!(!agent.logs().contains("malformed authority"), "{}", agent.logs());

    // The agent's TCP ports, with Python's HTTP/1.1 client: /healthz (the Probe over the CSI socket and kubelet's
    // verdict, registered above) and /metrics.
    let outcomes = clients.https(&[
        HttpCall::get(agent.health_port, "/healthz"),
        HttpCall::get(agent.metrics_port, "/metrics"),
    ]);
    assert_eq!(outcomes[0], json!({"status": 200, "alpn": null, "body": "ok"}));
    assert_eq!(outcomes[1]["status"], json!(200));
    let metrics = outcomes[1]["body"].as_str().expect("metrics text");
    let publishes = format!(
        "node_publish_total{{provider=\"azure\",os_type=\"linux\"}} {}",
        targets.len()
    );
    assert!(metrics.lines().any(|l| l == publishes), "{publishes} in\n{metrics}");
}

/// Every call csi-sanity's Identity and Node suites make of a node-only plugin (kubernetes-csi/csi-test
/// `pkg/sanity/{identity,node}.go`; each Node spec's `BeforeEach` asks GetPluginCapabilities, NodeGetCapabilities
/// and ControllerGetCapabilities, which must be a non-empty list), sent as csi-sanity's grpc-go sends them
/// (`:authority` localhost), with the answers the suite accepts; a refused publish leaves nothing at the target.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_every_call_of_the_csi_sanity_node_suite() {
    let clients = ForeignClients::find();
    let env = start_env().await;
    let mut agent = Agent::start(&env);
    agent.client().await;
    let mount_dir = env.dir.path().join("csi-mount");
    std::fs::create_dir(&mount_dir).expect("mount dir");
    let target = mount_dir.join("target").display().to_string();
    let secrets = json!({"secret": "value"});
    let capability = json!({"mount": {}, "access_mode": {"mode": "SINGLE_NODE_WRITER"}});
    let ok = |response: Value| json!({"code": "OK", "message": "", "response": response});
    let invalid = |message: &str| json!({"code": "INVALID_ARGUMENT", "message": message, "response": null});
    let cases: Vec<(&'static str, Value, Value)> = vec![
        ("/csi.v1.Identity/GetPluginCapabilities", json!({}), ok(json!({}))),
        ("/csi.v1.Identity/Probe", json!({}), ok(json!({"ready": true}))),
        (
            "/csi.v1.Identity/GetPluginInfo",
            json!({}),
            ok(json!({"name": "secrets-store.csi.k8s.io", "vendor_version": env!("CARGO_PKG_VERSION")})),
        ),
        ("/csi.v1.Node/NodeGetCapabilities", json!({}), ok(json!({}))),
        (
            "/csi.v1.Controller/ControllerGetCapabilities",
            json!({}),
            ok(json!({"capabilities": [{"rpc": {}}]})),
        ),
        ("/csi.v1.Node/NodeGetInfo", json!({}), ok(json!({"node_id": "node-1"}))),
        (
            "/csi.v1.Node/NodePublishVolume",
            json!({"secrets": secrets}),
            invalid("Volume capability missing in request"),
        ),
        (
            "/csi.v1.Node/NodePublishVolume",
            json!({"volume_id": "fake-vol-id-1b4e28ba-2", "secrets": secrets, "volume_capability": capability}),
            invalid("Target path missing in request"),
        ),
        (
            "/csi.v1.Node/NodePublishVolume",
            json!({"volume_id": "fake-vol-id-1b4e28ba-2", "target_path": target, "secrets": secrets}),
            invalid("Volume capability missing in request"),
        ),
        (
            "/csi.v1.Node/NodePublishVolume",
            json!({"target_path": target, "secrets": secrets, "volume_capability": capability}),
            invalid("Volume ID missing in request"),
        ),
        (
            "/csi.v1.Node/NodeUnpublishVolume",
            json!({}),
            invalid("Volume ID missing in request"),
        ),
        (
            "/csi.v1.Node/NodeUnpublishVolume",
            json!({"volume_id": "fake-vol-id-1b4e28ba-2"}),
            invalid("Target path missing in request"),
        ),
    ];
    let calls: Vec<ForeignCall> = cases
        .iter()
        .map(|(method, request, _)| ForeignCall {
            socket: agent.socket.clone(),
            client: ClientAuthority::Grpcio("localhost".into()),
            method,
            request: request.clone(),
        })
        .collect();
    let outcomes = clients.call(&calls);
    for ((method, request, expected), outcome) in cases.iter().zip(&outcomes) {
        assert_eq!(outcome, expected, "{method} {request}");
    }
    // csi-sanity's next spec creates the mount directory again: nothing may be left in it.
    assert_eq!(std::fs::read_dir(&mount_dir).expect("mount dir").count(), 0);
}
