use wisp_shared::contract::secrets_store::CTX_SERVICE_ACCOUNT_TOKENS;

use super::*;
use crate::content::ObjectVersion as Version;
use crate::content::RenderedFile;
use crate::provider::params::{ObjectEncoding, ObjectFormat, ObjectType};
use pretty_assertions::assert_eq;

fn request(attributes: &str, secrets: &str, permission: &str) -> MountRequest {
    MountRequest {
        attributes: attributes.into(),
        secrets: secrets.into(),
        target_path: "/var/lib/kubelet/pods/u/volumes/kubernetes.io~csi/v/mount".into(),
        permission: permission.into(),
        current_object_version: vec![],
    }
}

const POD: &str = r#"{"csi.storage.k8s.io/pod.name":"p","csi.storage.k8s.io/pod.namespace":"ns","keyvaultName":"kv1"}"#;

#[test]
fn request_errors_name_the_field_and_never_echo_content() {
    let cases = [
        (
            request("{not json", "null", "420"),
            "failed to unmarshal attributes, error: invalid JSON at line 1 column 2; MountRequest.attributes must \
             be a JSON object of strings",
        ),
        (
            request("", "null", "420"),
            "failed to unmarshal attributes, error: unexpected end of JSON input; MountRequest.attributes must \
             be a JSON object of strings",
        ),
        (
            request(r#""a-token-value""#, "null", "420"),
            "failed to unmarshal attributes, error: a value of the wrong JSON type at line 1 column 15; \
             MountRequest.attributes must be a JSON object of strings",
        ),
        (
            request(POD, r#"{"clientsecret": 12345}"#, "420"),
            "failed to unmarshal secrets, error: a value of the wrong JSON type at line 1 column 22; \
             MountRequest.secrets must be a JSON object of strings",
        ),
        (
            request(POD, r#""the-client-secret""#, "420"),
            "failed to unmarshal secrets, error: a value of the wrong JSON type at line 1 column 19; \
             MountRequest.secrets must be a JSON object of strings",
        ),
        (
            request(POD, "null", "\"0644\""),
            "failed to unmarshal file permission, error: \"\\\"0644\\\"\" is not a non-negative decimal number; \
             MountRequest.permission must be a decimal file mode from 0 to 511, e.g. \"420\" (0644)",
        ),
        (
            request(POD, "null", ""),
            "failed to unmarshal file permission, error: \"\" is not a non-negative decimal number; \
             MountRequest.permission must be a decimal file mode from 0 to 511, e.g. \"420\" (0644)",
        ),
        (
            request(POD, "null", "2048"),
            "failed to unmarshal file permission, error: 2048 is more than 511 (0777); MountRequest.permission \
             must be a decimal file mode from 0 to 511, e.g. \"420\" (0644)",
        ),
        (
            request(r#"{"csi.storage.k8s.io/pod.namespace":"ns"}"#, "null", "420"),
            "pod name is not provided; the driver sends csi.storage.k8s.io/pod.name when the CSIDriver sets \
             podInfoOnMount: true",
        ),
        (
            request(r#"{"csi.storage.k8s.io/pod.name":"p"}"#, "null", "420"),
            "pod namespace is not provided; the driver sends csi.storage.k8s.io/pod.namespace when the CSIDriver \
             sets podInfoOnMount: true",
        ),
    ];
    for (req, expected) in cases {
        let message = parse_mount_request(&req).unwrap_err().to_string();
        assert_eq!(message, expected);
        assert!(!message.contains("token-value") && !message.contains("the-client-secret"));
    }
}

#[test]
fn request_fields_are_read_as_the_driver_sends_them() {
    let tokens = r#"{"api://AzureADTokenExchange":{"token":"jwt","expirationTimestamp":"2026-01-01T00:00:00Z"}}"#;
    let attributes = serde_json::json!({
        "csi.storage.k8s.io/pod.name": "p",
        "csi.storage.k8s.io/pod.namespace": "ns",
        "csi.storage.k8s.io/serviceAccount.name": "sa",
        "csi.storage.k8s.io/serviceAccount.tokens": tokens,
        "keyvaultName": "kv",
    })
    .to_string();
    let parsed = parse_mount_request(&request(&attributes, "null", "420")).unwrap();
    assert_eq!(parsed.pod_name, "p");
    assert_eq!(parsed.default_mode, 0o644);
    assert!(parsed.data.secrets.is_empty());
    let input = parsed.data.input();
    assert_eq!(input.pod_namespace, "ns");
    assert_eq!(input.service_account_name, Some("sa"));
    assert_eq!(input.parameters.get("keyvaultName").map(String::as_str), Some("kv"));
    assert_eq!(
        input.parameters.get(CTX_SERVICE_ACCOUNT_TOKENS).map(String::as_str),
        Some(tokens)
    );

    // Secrets: an unset field is none; tokens there (kubelet >= 1.35) are not service-principal credentials.
    let secrets = format!(r#"{{"clientid":"c","clientsecret":"s","{CTX_SERVICE_ACCOUNT_TOKENS}":{tokens:?}}}"#);
    let parsed = parse_mount_request(&request(&attributes, &secrets, "384")).unwrap();
    assert_eq!(parsed.default_mode, 0o600);
    assert_eq!(
        parsed.data.secrets,
        BTreeMap::from([("clientid".into(), "c".into()), ("clientsecret".into(), "s".into())])
    );
    assert!(
        parse_mount_request(&request(&attributes, "", "420"))
            .unwrap()
            .data
            .secrets
            .is_empty()
    );
    let redacted = format!("{:?}", parsed.data);
    assert!(!redacted.contains("jwt") && !redacted.contains("\"s\""), "{redacted}");
}

fn spec(alias: &str, history: u32, permission: Option<u32>) -> ObjectSpec {
    ObjectSpec {
        index: 0,
        name: alias.trim_end_matches(".pem").into(),
        alias: alias.into(),
        object_type: ObjectType::Secret,
        version: None,
        version_history: history,
        format: ObjectFormat::Pem,
        encoding: ObjectEncoding::Utf8,
        file_permission: permission,
    }
}

fn rendered(path: &str, mode: u32) -> RenderedFile {
    RenderedFile {
        path: path.into(),
        contents: zeroize::Zeroizing::new(path.as_bytes().to_vec()),
        mode,
    }
}

#[test]
fn response_has_one_file_and_one_version_per_rendered_file_with_the_requests_default_mode() {
    let specs = [
        spec("a", 0, None),
        spec("tls/web.pem", 0, Some(0o640)),
        spec("hist", 3, None),
    ];
    let content = || MountContent {
        files: vec![
            rendered("a", 0o644),
            rendered("tls/web.pem.crt", 0o640),
            rendered("tls/web.pem.key", 0o640),
            rendered("tls/web.pem", 0o640),
            rendered("hist/0", 0o644),
            rendered("hist/1", 0o644),
        ],
        objects: [
            "secret/a",
            "secret/web",
            "secret/web",
            "secret/web",
            "secret/hist/0",
            "secret/hist/1",
        ]
        .iter()
        .map(|id| Version {
            id: id.to_string(),
            version: format!("v-{id}"),
        })
        .collect(),
    };
    let response = mount_response(content(), &specs, 0o600);
    let files: Vec<(&str, i32, &[u8])> = response
        .files
        .iter()
        .map(|f| (f.path.as_str(), f.mode, f.contents.as_slice()))
        .collect();
    assert_eq!(
        files,
        vec![
            ("a", 0o600, b"a".as_slice()),
            ("tls/web.pem.crt", 0o640, b"tls/web.pem.crt".as_slice()),
            ("tls/web.pem.key", 0o640, b"tls/web.pem.key".as_slice()),
            ("tls/web.pem", 0o640, b"tls/web.pem".as_slice()),
            ("hist/0", 0o600, b"hist/0".as_slice()),
            ("hist/1", 0o600, b"hist/1".as_slice()),
        ]
    );
    assert_eq!(response.object_version.len(), 6);
    assert_eq!(
        response.object_version[4],
        ObjectVersion {
            id: "secret/hist/0".into(),
            version: "v-secret/hist/0".into()
        }
    );
    assert_eq!(response.error, None);
    // The driver's 420 keeps the provider's modes.
    let modes: Vec<i32> = mount_response(content(), &specs, 0o644)
        .files
        .iter()
        .map(|f| f.mode)
        .collect();
    assert_eq!(modes, vec![0o644, 0o640, 0o640, 0o640, 0o644, 0o644]);
}

#[tokio::test]
async fn version_and_health() {
    let service = ProviderService::new(Arc::new(test_provider()), Arc::new(Metrics::new()));
    let version = CsiDriverProvider::version(
        &service,
        Request::new(VersionRequest {
            version: "v1alpha1".into(),
        }),
    )
    .await
    .unwrap()
    .into_inner();
    assert_eq!(
        (
            version.version.as_str(),
            version.runtime_name.as_str(),
            version.runtime_version.as_str()
        ),
        ("v1alpha1", "wisp-agent", env!("CARGO_PKG_VERSION"))
    );
    for name in ["", "v1alpha1.CSIDriverProvider", "anything"] {
        let health = AlwaysServing
            .check(Request::new(HealthCheckRequest { service: name.into() }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(health.status, ServingStatus::Serving as i32);
    }
}

#[tokio::test]
async fn provider_failures_are_unknown_with_provider_azures_prefix() {
    let service = ProviderService::new(Arc::new(test_provider()), Arc::new(Metrics::new()));
    let status = service.mount(request(POD, "null", "420"), None).await.unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (
            Code::Unknown,
            "failed to mount objects, error: tenantId is not provided; set parameters.tenantID to the Microsoft \
             Entra tenant ID of the Key Vault"
        )
    );
    let status = service.mount(request("[]", "null", "420"), None).await.unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (
            Code::Unknown,
            "failed to unmarshal attributes, error: a value of the wrong JSON type; MountRequest.attributes must \
             be a JSON object of strings"
        )
    );
}

fn test_provider() -> Provider {
    crate::test_support::install_crypto();
    crate::provider::build(
        crate::provider::ProviderConfig {
            default_cloud: "AzurePublicCloud".into(),
            render: crate::provider::render::RenderOptions::default(),
            max_parallel: 1,
            rotation_round: Duration::from_secs(120),
        },
        reqwest::Client::new(),
        "http://127.0.0.1:9",
        crate::provider::http::RetryPolicy::none(),
        Arc::new(Metrics::new()),
    )
}
