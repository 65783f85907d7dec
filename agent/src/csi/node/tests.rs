use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tonic::{Code, Request};
use wisp_shared::contract::secrets_store::{
    CTX_POD_NAME, CTX_POD_NAMESPACE, CTX_POD_UID, CTX_SECRET_PROVIDER_CLASS, CTX_SERVICE_ACCOUNT_TOKENS,
};

use super::*;
use crate::cluster::spc::{MemorySpcStore, SecretProviderClass};
use crate::csi::identity::IdentityService;
use crate::driver::{DriverInfo, DriverOptions};
use crate::metrics::Metrics;
use crate::proto::csi::identity_server::Identity;
use crate::provider::ProviderConfig;
use crate::provider::http::RetryPolicy;
use crate::provider::render::RenderOptions;
use crate::volume::mount::MountMode;
use crate::volume::mount::Mounter;
use wisp_shared::contract::secrets_store::CTX_SERVICE_ACCOUNT_NAME;

struct Fixture {
    driver: Arc<Driver>,
    store: Arc<MemorySpcStore>,
    dir: tempfile::TempDir,
}

fn fixture() -> Fixture {
    crate::test_support::install_crypto();
    let metrics = Arc::new(Metrics::new());
    let provider = crate::provider::build(
        ProviderConfig {
            default_cloud: "AzurePublicCloud".into(),
            render: RenderOptions::default(),
            max_parallel: 4,
            rotation_round: Duration::from_secs(120),
        },
        crate::provider::http::build_client().unwrap(),
        "http://127.0.0.1:1",
        RetryPolicy::none(),
        metrics.clone(),
    );
    let store = Arc::new(MemorySpcStore::new());
    let driver = Arc::new(Driver::new(
        DriverInfo {
            name: "secrets-store.csi.k8s.io".into(),
            version: "0.1.0".into(),
            node_id: "node-1".into(),
        },
        store.clone(),
        Arc::new(provider),
        Mounter::new(MountMode::Directory),
        metrics,
        DriverOptions::default(),
    ));
    Fixture {
        driver,
        store,
        dir: tempfile::tempdir().unwrap(),
    }
}

fn spc(namespace: &str, name: &str, parameters: &[(&str, &str)]) -> SecretProviderClass {
    SecretProviderClass {
        namespace: namespace.into(),
        name: name.into(),
        provider: "azure".into(),
        parameters: parameters.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        secret_objects: None,
    }
}

const OBJECTS: &str = "array:\n  - |\n    objectName: s1\n    objectType: secret\n";

fn request(target: &Path, spc_name: &str) -> NodePublishVolumeRequest {
    NodePublishVolumeRequest {
        volume_id: "csi-123".into(),
        target_path: target.display().to_string(),
        volume_capability: Some(VolumeCapability {
            access_type: Some(volume_capability::AccessType::Mount(
                volume_capability::MountVolume::default(),
            )),
            access_mode: Some(volume_capability::AccessMode {
                mode: volume_capability::access_mode::Mode::SingleNodeReaderOnly as i32,
            }),
        }),
        readonly: true,
        volume_context: HashMap::from([
            (CTX_SECRET_PROVIDER_CLASS.to_string(), spc_name.to_string()),
            (CTX_POD_NAME.to_string(), "pod-a".to_string()),
            (CTX_POD_NAMESPACE.to_string(), "ns-a".to_string()),
            (CTX_POD_UID.to_string(), "uid-a".to_string()),
            (CTX_SERVICE_ACCOUNT_NAME.to_string(), "sa-a".to_string()),
        ]),
        ..Default::default()
    }
}

async fn publish(f: &Fixture, req: NodePublishVolumeRequest) -> Result<(), Status> {
    NodeService::new(f.driver.clone())
        .node_publish_volume(Request::new(req))
        .await
        .map(|_| ())
}

async fn unpublish(f: &Fixture, req: NodeUnpublishVolumeRequest) -> Result<(), Status> {
    NodeService::new(f.driver.clone())
        .node_unpublish_volume(Request::new(req))
        .await
        .map(|_| ())
}

async fn publish_err(f: &Fixture, req: NodePublishVolumeRequest) -> (Code, String) {
    let status = publish(f, req).await.unwrap_err();
    (status.code(), status.message().to_string())
}

fn assert_nothing_left(f: &Fixture) {
    let entries: Vec<_> = std::fs::read_dir(f.dir.path()).unwrap().collect();
    assert!(entries.is_empty(), "left behind: {entries:?}");
    assert!(f.driver.registry_volumes().is_empty());
}

#[tokio::test]
async fn argument_errors_are_upstreams() {
    let f = fixture();
    let target = f.dir.path().join("mount");
    let base = request(&target, "spc1");
    let cases: Vec<(NodePublishVolumeRequest, &str)> = vec![
        (
            NodePublishVolumeRequest {
                volume_capability: None,
                ..base.clone()
            },
            "Volume capability missing in request",
        ),
        (
            NodePublishVolumeRequest {
                volume_id: String::new(),
                ..base.clone()
            },
            "Volume ID missing in request",
        ),
        (
            NodePublishVolumeRequest {
                target_path: String::new(),
                ..base.clone()
            },
            "Target path missing in request",
        ),
        (
            NodePublishVolumeRequest {
                volume_context: HashMap::new(),
                ..base.clone()
            },
            "Volume attributes missing in request",
        ),
    ];
    for (req, message) in cases {
        assert_eq!(publish_err(&f, req).await, (Code::InvalidArgument, message.to_string()));
    }
    assert_nothing_left(&f);
}

#[tokio::test]
async fn secret_provider_class_errors_name_namespace_and_name() {
    let f = fixture();
    let target = f.dir.path().join("mount");
    let mut req = request(&target, "");
    assert_eq!(
        publish_err(&f, req.clone()).await,
        (Code::Unknown, "secretProviderClass is not set".into())
    );

    // Present, but in another namespace: the pod's namespace is the only one searched.
    f.store.insert(spc("ns-b", "spc1", &[("keyvaultName", "kv1")]));
    req.volume_context
        .insert(CTX_SECRET_PROVIDER_CLASS.into(), "spc1".into());
    assert_eq!(
        publish_err(&f, req.clone()).await,
        (
            Code::Unknown,
            "failed to get secretproviderclass ns-a/spc1, error: secretproviderclasses.secrets-store.csi.x-k8s.io \
             \"spc1\" not found; the SecretProviderClass must be in the pod's namespace \"ns-a\""
                .into()
        )
    );

    f.store.insert(SecretProviderClass {
        provider: String::new(),
        ..spc("ns-a", "spc1", &[("a", "b")])
    });
    assert_eq!(
        publish_err(&f, req.clone()).await,
        (Code::Unknown, "provider not set in ns-a/spc1".into())
    );
    f.store.insert(spc("ns-a", "spc1", &[]));
    assert_eq!(
        publish_err(&f, req.clone()).await,
        (Code::Unknown, "parameters not set in ns-a/spc1".into())
    );
    f.store.insert(SecretProviderClass {
        provider: "aws".into(),
        ..spc("ns-a", "spc1", &[("a", "b")])
    });
    assert_eq!(
        publish_err(&f, req.clone()).await,
        (
            Code::Unknown,
            "error connecting to provider \"aws\": provider not found: provider \"aws\"; wisp serves only provider \
             \"azure\" (SecretProviderClass ns-a/spc1)"
                .into()
        )
    );
    assert_nothing_left(&f);
}

#[tokio::test]
async fn pod_info_and_names_are_required_and_validated() {
    let f = fixture();
    let target = f.dir.path().join("mount");
    let mut req = request(&target, "spc1");
    req.volume_context.remove(CTX_POD_NAMESPACE);
    assert_eq!(
        publish_err(&f, req).await,
        (
            Code::Unknown,
            "failed to get secretproviderclass spc1: pod name or namespace is not provided; set podInfoOnMount: \
             true on the CSIDriver object so that kubelet sends csi.storage.k8s.io/pod.name and \
             csi.storage.k8s.io/pod.namespace"
                .into()
        )
    );
    let req = request(&target, "../../api/v1/secrets");
    assert_eq!(
        publish_err(&f, req).await,
        (
            Code::Unknown,
            "failed to get secretproviderclass \"ns-a\"/\"../../api/v1/secrets\": not a valid Kubernetes object \
             name (lower-case letters, digits, '-' and '.')"
                .into()
        )
    );
    assert_nothing_left(&f);
}

#[tokio::test]
async fn readonly_is_checked_after_the_lookup() {
    let f = fixture();
    let target = f.dir.path().join("mount");
    f.store.insert(spc("ns-a", "spc1", &[("keyvaultName", "kv1")]));
    let req = NodePublishVolumeRequest {
        readonly: false,
        ..request(&target, "spc1")
    };
    assert_eq!(
        publish_err(&f, req).await,
        (Code::InvalidArgument, "Readonly is not true in request".into())
    );
    let missing = NodePublishVolumeRequest {
        readonly: false,
        ..request(&target, "nope")
    };
    assert_eq!(publish_err(&f, missing).await.0, Code::Unknown);
    assert_nothing_left(&f);
}

#[tokio::test]
async fn provider_errors_carry_pod_and_class() {
    let f = fixture();
    let target = f.dir.path().join("mount");
    f.store
        .insert(spc("ns-a", "spc1", &[("tenantID", "t1"), ("objects", OBJECTS)]));
    let (code, message) = publish_err(&f, request(&target, "spc1")).await;
    assert_eq!(code, Code::Unknown);
    assert_eq!(
        message,
        "failed to mount secrets store objects for pod ns-a/pod-a, err: SecretProviderClass ns-a/spc1: \
         keyvaultName is not provided; set parameters.keyvaultName to the name of the Key Vault"
    );

    // Volume attributes override parameters; workload identity needs the kubelet's token.
    f.store.insert(spc(
        "ns-a",
        "spc1",
        &[("keyvaultName", "kv1"), ("tenantID", "t1"), ("objects", OBJECTS)],
    ));
    let mut req = request(&target, "spc1");
    req.volume_context.insert("clientID".into(), "client-1".into());
    let (_, message) = publish_err(&f, req.clone()).await;
    assert_eq!(
        message,
        "failed to mount secrets store objects for pod ns-a/pod-a, err: SecretProviderClass ns-a/spc1: service \
         account tokens not found"
    );
    // Tokens in `secrets` win over the volume context.
    req.volume_context.insert(
        CTX_SERVICE_ACCOUNT_TOKENS.into(),
        r#"{"api://AzureADTokenExchange":{"token":"a"}}"#.into(),
    );
    req.secrets
        .insert(CTX_SERVICE_ACCOUNT_TOKENS.into(), r#"{"other":{"token":"b"}}"#.into());
    let (_, message) = publish_err(&f, req).await;
    assert_eq!(
        message,
        "failed to mount secrets store objects for pod ns-a/pod-a, err: SecretProviderClass ns-a/spc1: token for \
         audience api://AzureADTokenExchange not found"
    );
    assert_nothing_left(&f);
}

#[tokio::test]
async fn republish_of_a_populated_target_is_a_no_op() {
    let f = fixture();
    let target = f.dir.path().join("mount");
    std::fs::create_dir(&target).unwrap();
    std::os::unix::fs::symlink("..2026", target.join("..data")).unwrap();
    // No SecretProviderClass exists: success proves nothing was looked up.
    publish(&f, request(&target, "spc1")).await.unwrap();
}

#[tokio::test]
async fn unpublish_is_idempotent_and_validates() {
    let f = fixture();
    let target = f.dir.path().join("mount");
    std::fs::create_dir_all(target.join("..2026/sub")).unwrap();
    std::fs::write(target.join("..2026/sub/a"), b"x").unwrap();
    std::os::unix::fs::symlink("..2026", target.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/sub", target.join("sub")).unwrap();
    let req = NodeUnpublishVolumeRequest {
        volume_id: "v".into(),
        target_path: target.display().to_string(),
    };
    unpublish(&f, req.clone()).await.unwrap();
    assert!(!target.exists());
    unpublish(&f, req).await.unwrap();
    let status = unpublish(
        &f,
        NodeUnpublishVolumeRequest {
            volume_id: String::new(),
            target_path: "/x".into(),
        },
    )
    .await
    .unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (Code::InvalidArgument, "Volume ID missing in request")
    );
    let status = unpublish(
        &f,
        NodeUnpublishVolumeRequest {
            volume_id: "v".into(),
            target_path: String::new(),
        },
    )
    .await
    .unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (Code::InvalidArgument, "Target path missing in request")
    );
}

#[tokio::test]
async fn identity_and_node_info() {
    let f = fixture();
    let identity = IdentityService::new(f.driver.clone());
    let info = identity
        .get_plugin_info(Request::new(GetPluginInfoRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        info,
        GetPluginInfoResponse {
            name: "secrets-store.csi.k8s.io".into(),
            vendor_version: "0.1.0".into(),
            manifest: HashMap::new()
        }
    );
    let caps = identity
        .get_plugin_capabilities(Request::new(GetPluginCapabilitiesRequest {}))
        .await
        .unwrap();
    assert_eq!(
        caps.into_inner(),
        GetPluginCapabilitiesResponse { capabilities: vec![] }
    );
    let probe = identity
        .probe(Request::new(ProbeRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(probe, ProbeResponse { ready: Some(true) });
    let node = NodeService::new(f.driver.clone());
    let info = node
        .node_get_info(Request::new(NodeGetInfoRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        info,
        NodeGetInfoResponse {
            node_id: "node-1".into(),
            max_volumes_per_node: 0,
            accessible_topology: None
        }
    );
    let caps = node
        .node_get_capabilities(Request::new(NodeGetCapabilitiesRequest {}))
        .await
        .unwrap();
    assert_eq!(caps.into_inner(), NodeGetCapabilitiesResponse { capabilities: vec![] });
    let err = node
        .node_stage_volume(Request::new(NodeStageVolumeRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);
    let err = node
        .node_expand_volume(Request::new(NodeExpandVolumeRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::Unimplemented, "NodeExpandVolume is not implemented")
    );
}

#[test]
fn log_stripping() {
    let context = HashMap::from([
        (
            CTX_SERVICE_ACCOUNT_TOKENS.to_string(),
            "{\"aud\":{\"token\":\"jwt\"}}".to_string(),
        ),
        (CTX_POD_NAME.to_string(), "p".to_string()),
    ]);
    assert_eq!(
        loggable(&context),
        BTreeMap::from([(CTX_POD_NAME, "p"), (CTX_SERVICE_ACCOUNT_TOKENS, "***stripped***")])
    );
}
