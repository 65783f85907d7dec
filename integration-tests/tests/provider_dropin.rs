//! The real `wisp-agent` as a drop-in provider for an existing Secrets Store CSI driver install: with
//! `--provider-endpoint` it serves `v1alpha1.CSIDriverProvider` and `grpc.health.v1.Health` on a unix socket, and
//! this test plays the upstream driver there: `Version`, a health `Check`, and `Mount` with the request the driver
//! builds (attributes = SecretProviderClass parameters with the volume context over them, secrets `null`,
//! permission `"420"`). The answer must be exactly what the agent's own NodePublishVolume writes for the same
//! SecretProviderClass (paths, modes, bytes), with provider-azure's object versions, and nothing written to the
//! target path. Fakes as in `agent_e2e.rs`: Kubernetes API, Entra, Key Vault over HTTPS with the test CA.

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use integration_tests::agent_harness::{Agent, AgentEnv, CLIENT, POD_A, VAULT};
use integration_tests::fake_keyvault::CertificateSpec;
use integration_tests::kubelet::provider::csi_driver_provider_client::CsiDriverProviderClient;
use integration_tests::kubelet::provider::{MountRequest, ObjectVersion, VersionRequest, VersionResponse};
use integration_tests::kubelet::{self, PodRef};
use integration_tests::process::tmpfs_mounts_available;
use pretty_assertions::assert_eq;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const PATIENCE: Duration = Duration::from_secs(30);
const POD: PodRef<'static> = PodRef {
    namespace: POD_A.namespace,
    name: POD_A.name,
    uid: "uid-pod-a",
    service_account: POD_A.service_account,
};

/// Path → (bytes, mode) of a volume as a container sees it: everything under `..data`, which the visible
/// top-level names link into. (Read through the agent's namespace view, `root` must not be canonicalized: its tmpfs
/// exists only in that namespace.)
fn volume_files(root: &Path) -> BTreeMap<String, (Vec<u8>, u32)> {
    let data = root.join("..data");
    let mut out = BTreeMap::new();
    let mut pending = vec![data.clone()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("read_dir").flatten() {
            let path = entry.path();
            let meta = std::fs::metadata(&path).expect("metadata");
            if meta.is_dir() {
                pending.push(path);
                continue;
            }
            let relative = path.strip_prefix(&data).expect("under ..data").display().to_string();
            let visible = std::fs::read(root.join(&relative)).expect("visible through the top-level name");
            out.insert(relative, (visible, meta.permissions().mode() & 0o7777));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_mount_returns_what_node_publish_writes() {
    let env = AgentEnv::start(|config| config).await;
    let dir = &env.dir;
    let (kv, issuer) = (&env.cloud.vault, &env.cloud.issuer);

    let s1 = kv.add_secret(VAULT, "s1", "secret value\nline 2", None).expect("s1");
    let key = kv.add_rsa_key(VAULT, "k1").expect("k1");
    let cert = kv
        .add_certificate(VAULT, "web", &CertificateSpec::self_signed("web.wisp.test"))
        .expect("web");
    // Key Vault's `created` has one-second resolution: the pause orders the two versions.
    let hist_old = kv.add_secret(VAULT, "hist", "one", None).expect("hist v1");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let hist_new = kv.add_secret(VAULT, "hist", "two", None).expect("hist v2");

    let objects = [
        "objectName: s1\nobjectType: secret\nfilePermission: \"0600\"",
        "objectName: k1\nobjectType: key\nobjectAlias: keys/k1.pem",
        "objectName: web\nobjectType: cert",
        "objectName: web\nobjectType: secret\nobjectAlias: tls/web.pem",
        "objectName: hist\nobjectType: secret\nobjectVersionHistory: 2",
    ];
    let parameters = env.spc_parameters(&objects, &[("clientID", CLIENT)]);
    env.add_spc_with(POD.namespace, "spc-a", &parameters, None);

    let provider_socket = dir.path().join("secrets-store-csi-providers/azure.sock");
    let mut agent = Agent::start_with(
        &env,
        tmpfs_mounts_available(),
        &[&format!("--provider-endpoint=unix://{}", provider_socket.display())],
    );
    let channel = kubelet::unix_channel(&mut agent.program, &provider_socket, PATIENCE)
        .await
        .unwrap_or_else(|e| panic!("{e}:\n{}", agent.logs()));
    let meta = std::fs::metadata(&provider_socket).expect("socket metadata");
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let mut provider = CsiDriverProviderClient::new(channel.clone());

    let version = provider
        .version(VersionRequest {
            version: "v1alpha1".into(),
        })
        .await
        .expect("Version")
        .into_inner();
    assert_eq!(
        version,
        VersionResponse {
            version: "v1alpha1".into(),
            runtime_name: "wisp-agent".into(),
            runtime_version: env!("CARGO_PKG_VERSION").into(),
        }
    );
    for service in ["", "v1alpha1.CSIDriverProvider"] {
        let health = HealthClient::new(channel.clone())
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health Check")
            .into_inner();
        assert_eq!(health.status, ServingStatus::Serving as i32, "{service:?}");
    }

    // The agent's own CSI path, as kubelet drives it.
    let mut node = agent.client().await;
    let tokens = issuer
        .csi_tokens_json(
            POD.namespace,
            POD.service_account,
            POD.name,
            POD.uid,
            Duration::from_secs(3600),
        )
        .expect("SA token");
    let context = kubelet::volume_context([("secretProviderClass".to_string(), "spc-a".to_string())], &POD, tokens);
    let target = kubelet::target_path(dir.path(), POD.uid, "secrets");
    node.node_publish_volume(kubelet::publish_request("csi-a", &target, context.clone()))
        .await
        .unwrap_or_else(|e| panic!("NodePublishVolume: {e}\n{}", agent.logs()));
    let published = volume_files(&kubelet::in_namespace_of(agent.program.pid(), &target));

    // The driver's Mount for the same volume: parameters with every volume attribute copied over them.
    let driver_request = |parameters: &BTreeMap<String, String>, target: &Path| {
        let mut attributes = parameters.clone();
        attributes.extend(context.clone());
        MountRequest {
            attributes: serde_json::to_string(&attributes).expect("attributes JSON"),
            secrets: "null".into(),
            target_path: target.display().to_string(),
            permission: "420".into(),
            current_object_version: vec![],
        }
    };
    let mount_target = kubelet::target_path(dir.path(), "uid-driver", "secrets");
    let response = provider
        .mount(driver_request(&parameters, &mount_target))
        .await
        .unwrap_or_else(|e| panic!("Mount: {e}\n{}", agent.logs()))
        .into_inner();
    assert_eq!(response.error, None);
    let returned: BTreeMap<String, (Vec<u8>, u32)> = response
        .files
        .iter()
        .map(|f| {
            let mode = u32::try_from(f.mode).expect("mode is not negative");
            (f.path.clone(), (f.contents.clone(), mode))
        })
        .collect();
    assert_eq!(returned.len(), response.files.len(), "a path was returned twice");
    assert_eq!(returned, published);
    let paths: Vec<&str> = response.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, ["s1", "keys/k1.pem", "web", "tls/web.pem", "hist/0", "hist/1"]);
    assert_eq!(returned["s1"], (b"secret value\nline 2".to_vec(), 0o600));
    assert_eq!(returned["hist/0"], (b"two".to_vec(), 0o644));
    let version = |id: &str, version: &str| ObjectVersion {
        id: id.into(),
        version: version.into(),
    };
    assert_eq!(
        response.object_version,
        vec![
            version("secret/s1", &s1),
            version("key/k1", &key.version),
            version("cert/web", &cert.version),
            version("secret/web", &cert.version),
            version("secret/hist/0", &hist_new),
            version("secret/hist/1", &hist_old),
        ]
    );
    // The driver writes the files; the provider leaves the target path alone.
    assert!(!kubelet::in_namespace_of(agent.program.pid(), &mount_target).exists());
    assert!(!mount_target.exists());

    // Remounts (the driver sends the versions it has) share a rotation round's reads, as republishes on the CSI
    // socket do: the first one reads, the next one within the round reads nothing.
    let remount = || MountRequest {
        current_object_version: response.object_version.clone(),
        ..driver_request(&parameters, &mount_target)
    };
    let reads = || kv.traffic().counts().values().sum::<u64>();
    let before_first = reads();
    let first = provider.mount(remount()).await.expect("remount").into_inner();
    assert_eq!(first.object_version, response.object_version);
    assert!(reads() > before_first, "the first remount of a round reads Key Vault");
    let before_second = reads();
    let second = provider.mount(remount()).await.expect("remount").into_inner();
    assert_eq!(second.object_version, response.object_version);
    assert_eq!(reads(), before_second);

    // A missing Key Vault object: a gRPC error with the cause and the object, and no secret value.
    let missing = env.spc_parameters(
        &[
            "objectName: s1\nobjectType: secret",
            "objectName: nope\nobjectType: secret",
        ],
        &[("clientID", CLIENT)],
    );
    let status = provider
        .mount(driver_request(&missing, &mount_target))
        .await
        .expect_err("a missing object fails the mount");
    assert_eq!(status.code(), tonic::Code::Unknown, "{}", status.message());
    let expected_prefix = format!(
        "failed to mount objects, error: failed to get objectType:secret, objectName:nope, objectVersion:: Key Vault \
         {}:{} answered HTTP 404 SecretNotFound: ",
        kv.vault_host(VAULT),
        kv.addr().port()
    );
    assert!(status.message().starts_with(&expected_prefix), "{}", status.message());
    assert!(!status.message().contains("secret value"), "{}", status.message());

    // Bad requests name the field.
    let mut bad = driver_request(&parameters, &mount_target);
    bad.permission = "\"0644\"".into();
    let status = provider.mount(bad).await.expect_err("bad permission");
    assert!(
        status
            .message()
            .starts_with("failed to unmarshal file permission, error: "),
        "{}",
        status.message()
    );

    let metrics = agent.metrics().await;
    for line in [
        "grpc_request_count{provider=\"azure\",os_type=\"linux\",grpc_method=\"/v1alpha1.CSIDriverProvider/Mount\",grpc_code=\"OK\"} 3",
        "grpc_request_count{provider=\"azure\",os_type=\"linux\",grpc_method=\"/v1alpha1.CSIDriverProvider/Mount\",grpc_code=\"Unknown\"} 2",
        "grpc_request_count{provider=\"azure\",os_type=\"linux\",grpc_method=\"/v1alpha1.CSIDriverProvider/Version\",grpc_code=\"OK\"} 1",
    ] {
        assert!(metrics.lines().any(|l| l == line), "missing {line:?} in\n{metrics}");
    }

    node.node_unpublish_volume(kubelet::unpublish_request("csi-a", &target))
        .await
        .expect("unpublish");
    let log = agent.logs();
    assert!(!log.contains("secret value"), "a secret value is in the log:\n{log}");
}
