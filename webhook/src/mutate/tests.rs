//! Every case applies the produced patch to the input pod and compares the whole resulting pod, then mutates the
//! result again and expects an empty patch (reinvocation).

use super::*;
use pretty_assertions::assert_eq;
use rstest::rstest;
use serde_json::json;

const TOKEN_FILE: &str = "/var/run/secrets/azure/tokens/azure-identity-token";

// The mutation reads pods through the `Pod` view; these read a `Value` pod the same way.

fn pod_display_name(pod: &Value) -> String {
    Pod::from_value(pod).unwrap_or_default().display_name().to_string()
}

fn service_account_name(pod: &Value) -> String {
    Pod::from_value(pod)
        .unwrap_or_default()
        .service_account_name()
        .to_string()
}

fn is_opted_in(pod: &Value) -> bool {
    Pod::from_value(pod).is_some_and(|pod| pod.is_opted_in())
}

fn config() -> MutationConfig {
    MutationConfig {
        tenant_id: "webhook-tenant".to_string(),
        authority_host: "https://login.microsoftonline.com/".to_string(),
        audience: "api://AzureADTokenExchange".to_string(),
        proxy_image: "my.registry.io/azwi/proxy:v1.0.0".to_string(),
        proxy_init_image: "my.registry.io/azwi/proxy-init:v1.0.0".to_string(),
        native_sidecar: false,
        proxy_log_level: "info".to_string(),
    }
}

fn native() -> MutationConfig {
    MutationConfig {
        native_sidecar: true,
        ..config()
    }
}

fn sa() -> ServiceAccountInfo {
    ServiceAccountInfo {
        client_id: Some("client-id".to_string()),
        tenant_id: None,
        token_expiration: None,
    }
}

/// The four variables for `sa()` with the webhook's tenant.
fn env() -> Value {
    json!([
        {"name": "AZURE_CLIENT_ID", "value": "client-id"},
        {"name": "AZURE_TENANT_ID", "value": "webhook-tenant"},
        {"name": "AZURE_FEDERATED_TOKEN_FILE", "value": TOKEN_FILE},
        {"name": "AZURE_AUTHORITY_HOST", "value": "https://login.microsoftonline.com/"}
    ])
}

fn mount() -> Value {
    json!({"name": "azure-identity-token", "mountPath": "/var/run/secrets/azure/tokens", "readOnly": true})
}

fn volume(expiration: i64) -> Value {
    json!({
        "name": "azure-identity-token",
        "projected": {"sources": [{"serviceAccountToken": {
            "path": "azure-identity-token",
            "expirationSeconds": expiration,
            "audience": "api://AzureADTokenExchange"
        }}]}
    })
}

fn pod(annotations: Value, spec: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "pod",
            "namespace": "ns1",
            "labels": {"azure.workload.identity/use": "true"},
            "annotations": annotations
        },
        "spec": spec
    })
}

fn apply(input: &Value, patch: &Patch) -> Value {
    let mut doc = input.clone();
    json_patch::patch(&mut doc, patch).unwrap();
    doc
}

/// Mutates, checks that the patch only adds, applies it, and checks that a reinvocation adds nothing.
fn mutated(input: &Value, sa: &ServiceAccountInfo, config: &MutationConfig) -> Value {
    let patch = mutate(input, sa, config).unwrap();
    for op in &patch.0 {
        assert!(matches!(op, PatchOperation::Add(_)), "not an add: {op}");
    }
    let output = apply(input, &patch);
    let again = mutate(&output, sa, config).unwrap();
    assert_eq!(again, Patch(Vec::new()), "reinvocation must not add anything");
    output
}

#[test]
fn basic_pod_exact_patch() {
    let input = pod(json!({}), json!({"containers": [{"name": "app", "image": "app:1"}]}));
    let patch = mutate(&input, &sa(), &config()).unwrap();
    assert_eq!(
        serde_json::to_value(&patch).unwrap(),
        json!([
            {"op": "add", "path": "/spec/containers/0/env", "value": env()},
            {"op": "add", "path": "/spec/containers/0/volumeMounts", "value": [mount()]},
            {"op": "add", "path": "/spec/volumes", "value": [volume(3600)]}
        ])
    );
}

#[test]
fn init_containers_and_containers_are_mutated() {
    let input = pod(
        json!({}),
        json!({
            "serviceAccountName": "sa",
            "initContainers": [{"name": "init", "image": "init:1"}],
            "containers": [{"name": "app", "image": "app:1"}, {"name": "second", "image": "second:1"}]
        }),
    );
    let expected = pod(
        json!({}),
        json!({
            "serviceAccountName": "sa",
            "initContainers": [{"name": "init", "image": "init:1", "env": env(), "volumeMounts": [mount()]}],
            "containers": [
                {"name": "app", "image": "app:1", "env": env(), "volumeMounts": [mount()]},
                {"name": "second", "image": "second:1", "env": env(), "volumeMounts": [mount()]}
            ],
            "volumes": [volume(3600)]
        }),
    );
    assert_eq!(mutated(&input, &sa(), &config()), expected);
}

#[test]
fn existing_env_mounts_and_volumes_are_kept_and_appended_to() {
    let input = pod(
        json!({}),
        json!({
            "containers": [{
                "name": "app",
                "env": [
                    {"name": "MY_ENV", "value": "x"},
                    {"name": "AZURE_TENANT_ID", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "tenant"}}}
                ],
                "volumeMounts": [{"name": "data", "mountPath": "/data"}]
            }],
            "volumes": [{"name": "data", "emptyDir": {}}]
        }),
    );
    let expected = pod(
        json!({}),
        json!({
            "containers": [{
                "name": "app",
                "env": [
                    {"name": "MY_ENV", "value": "x"},
                    {"name": "AZURE_TENANT_ID", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "tenant"}}},
                    {"name": "AZURE_CLIENT_ID", "value": "client-id"},
                    {"name": "AZURE_FEDERATED_TOKEN_FILE", "value": TOKEN_FILE},
                    {"name": "AZURE_AUTHORITY_HOST", "value": "https://login.microsoftonline.com/"}
                ],
                "volumeMounts": [{"name": "data", "mountPath": "/data"}, mount()]
            }],
            "volumes": [{"name": "data", "emptyDir": {}}, volume(3600)]
        }),
    );
    assert_eq!(mutated(&input, &sa(), &config()), expected);
}

#[test]
fn existing_token_mount_and_projected_token_source_are_left_alone() {
    let user_mount = json!({"name": "azure-identity-token", "mountPath": "/custom", "subPath": "x"});
    let user_volume = json!({
        "name": "my-token",
        "projected": {"sources": [{"serviceAccountToken": {"path": "azure-identity-token", "audience": "aud"}}]}
    });
    let input = pod(
        json!({}),
        json!({
            "containers": [{"name": "app", "volumeMounts": [user_mount.clone()]}],
            "volumes": [user_volume.clone()]
        }),
    );
    let expected = pod(
        json!({}),
        json!({
            "containers": [{"name": "app", "volumeMounts": [user_mount], "env": env()}],
            "volumes": [user_volume]
        }),
    );
    assert_eq!(mutated(&input, &sa(), &config()), expected);
}

#[rstest]
#[case::no_client_id(ServiceAccountInfo::default(), json!([
    {"name": "AZURE_TENANT_ID", "value": "webhook-tenant"},
    {"name": "AZURE_FEDERATED_TOKEN_FILE", "value": TOKEN_FILE},
    {"name": "AZURE_AUTHORITY_HOST", "value": "https://login.microsoftonline.com/"}
]))]
#[case::sa_tenant_wins(ServiceAccountInfo { tenant_id: Some("sa-tenant".into()), ..sa() }, json!([
    {"name": "AZURE_CLIENT_ID", "value": "client-id"},
    {"name": "AZURE_TENANT_ID", "value": "sa-tenant"},
    {"name": "AZURE_FEDERATED_TOKEN_FILE", "value": TOKEN_FILE},
    {"name": "AZURE_AUTHORITY_HOST", "value": "https://login.microsoftonline.com/"}
]))]
#[case::empty_sa_tenant_suppresses(ServiceAccountInfo { tenant_id: Some(String::new()), client_id: Some(String::new()), ..sa() }, json!([
    {"name": "AZURE_FEDERATED_TOKEN_FILE", "value": TOKEN_FILE},
    {"name": "AZURE_AUTHORITY_HOST", "value": "https://login.microsoftonline.com/"}
]))]
fn env_values_from_service_account(#[case] sa: ServiceAccountInfo, #[case] expected_env: Value) {
    let input = pod(json!({}), json!({"containers": [{"name": "app"}]}));
    let expected = pod(
        json!({}),
        json!({
            "containers": [{"name": "app", "env": expected_env, "volumeMounts": [mount()]}],
            "volumes": [volume(3600)]
        }),
    );
    assert_eq!(mutated(&input, &sa, &config()), expected);
}

#[test]
fn authority_host_follows_the_cloud() {
    let config = MutationConfig {
        authority_host: "https://login.chinacloudapi.cn/".to_string(),
        ..config()
    };
    let input = pod(json!({}), json!({"containers": [{"name": "app"}]}));
    let output = mutated(&input, &sa(), &config);
    assert_eq!(
        output["spec"]["containers"][0]["env"][3],
        json!({"name": "AZURE_AUTHORITY_HOST", "value": "https://login.chinacloudapi.cn/"})
    );
}

#[rstest]
#[case::default(None, None, 3600)]
#[case::from_service_account(None, Some("4800"), 4800)]
#[case::pod_beats_service_account(Some("4000"), Some("4800"), 4000)]
#[case::empty_pod_falls_through(Some(""), Some("5000"), 5000)]
#[case::lower_bound(Some("3600"), None, 3600)]
#[case::upper_bound(Some("86400"), None, 86400)]
fn token_expiration_sources(#[case] pod_value: Option<&str>, #[case] sa_value: Option<&str>, #[case] expected: i64) {
    let annotations = match pod_value {
        Some(v) => json!({"azure.workload.identity/service-account-token-expiration": v}),
        None => json!({}),
    };
    let sa = ServiceAccountInfo {
        token_expiration: sa_value.map(str::to_string),
        ..sa()
    };
    let input = pod(annotations.clone(), json!({"containers": [{"name": "app"}]}));
    let expected_pod = pod(
        annotations,
        json!({
            "containers": [{"name": "app", "env": env(), "volumeMounts": [mount()]}],
            "volumes": [volume(expected)]
        }),
    );
    assert_eq!(mutated(&input, &sa, &config()), expected_pod);
}

#[test]
fn skip_containers_apply_to_init_and_regular_containers() {
    let annotations = json!({"azure.workload.identity/skip-containers": "skip-init; skip-app;"});
    let input = pod(
        annotations.clone(),
        json!({
            "initContainers": [{"name": "skip-init"}, {"name": "init"}],
            "containers": [{"name": "app"}, {"name": "skip-app"}]
        }),
    );
    let expected = pod(
        annotations,
        json!({
            "initContainers": [{"name": "skip-init"}, {"name": "init", "env": env(), "volumeMounts": [mount()]}],
            "containers": [{"name": "app", "env": env(), "volumeMounts": [mount()]}, {"name": "skip-app"}],
            "volumes": [volume(3600)]
        }),
    );
    assert_eq!(mutated(&input, &sa(), &config()), expected);
}

#[test]
fn ephemeral_containers_are_never_touched() {
    let debug = json!([{"name": "debugger", "image": "busybox", "targetContainerName": "app"}]);
    let input = pod(
        json!({}),
        json!({"containers": [{"name": "app"}], "ephemeralContainers": debug.clone()}),
    );
    let expected = pod(
        json!({}),
        json!({
            "containers": [{"name": "app", "env": env(), "volumeMounts": [mount()]}],
            "ephemeralContainers": debug,
            "volumes": [volume(3600)]
        }),
    );
    assert_eq!(mutated(&input, &sa(), &config()), expected);
}

#[test]
fn unknown_fields_survive() {
    // restartPolicy on init containers is what upstream #1312 stripped; the other fields stand for anything newer.
    let input = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "pod", "creationTimestamp": null, "futureMeta": {"a": 1}, "labels": {"azure.workload.identity/use": "true"}},
        "spec": {
            "futureSpec": [1, 2, 3],
            "initContainers": [{"name": "sidecar", "image": "s", "restartPolicy": "Always", "futureField": true}],
            "containers": [{"name": "app", "image": "a", "resources": {}}]
        },
        "status": {}
    });
    let expected = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "pod", "creationTimestamp": null, "futureMeta": {"a": 1}, "labels": {"azure.workload.identity/use": "true"}},
        "spec": {
            "futureSpec": [1, 2, 3],
            "initContainers": [{
                "name": "sidecar", "image": "s", "restartPolicy": "Always", "futureField": true,
                "env": env(), "volumeMounts": [mount()]
            }],
            "containers": [{"name": "app", "image": "a", "resources": {}, "env": env(), "volumeMounts": [mount()]}],
            "volumes": [volume(3600)]
        },
        "status": {}
    });
    assert_eq!(mutated(&input, &sa(), &config()), expected);
}

#[test]
fn generate_name_pods_are_mutated() {
    let input = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "mydeploy-7d9f8c6b5d-", "labels": {"azure.workload.identity/use": "true"}},
        "spec": {"containers": [{"name": "app"}]}
    });
    let expected = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "mydeploy-7d9f8c6b5d-", "labels": {"azure.workload.identity/use": "true"}},
        "spec": {"containers": [{"name": "app", "env": env(), "volumeMounts": [mount()]}], "volumes": [volume(3600)]}
    });
    assert_eq!(mutated(&input, &sa(), &config()), expected);
    assert_eq!(pod_display_name(&input), "mydeploy-7d9f8c6b5d- (prefix)");
    assert_eq!(pod_display_name(&expected), "mydeploy-7d9f8c6b5d- (prefix)");
}

#[rstest]
#[case(json!({"containers": []}), "default")]
#[case(json!({"serviceAccountName": ""}), "default")]
#[case(json!({"serviceAccountName": "sa", "serviceAccount": "other"}), "sa")]
#[case(json!({"serviceAccount": "deprecated"}), "default")]
fn service_account_name_rules(#[case] spec: Value, #[case] expected: &str) {
    assert_eq!(service_account_name(&pod(json!({}), spec)), expected);
}

fn proxy_init(port: &str, mutated: bool) -> Value {
    let mut env = vec![json!({"name": "PROXY_PORT", "value": port})];
    let mut c = json!({
        "name": "azwi-proxy-init",
        "image": "my.registry.io/azwi/proxy-init:v1.0.0",
        "imagePullPolicy": "IfNotPresent",
        "securityContext": {
            "capabilities": {"add": ["NET_ADMIN"], "drop": ["ALL"]},
            "privileged": true,
            "runAsNonRoot": false,
            "runAsUser": 0
        }
    });
    if mutated {
        env.extend(env_list());
        c["volumeMounts"] = json!([mount()]);
    }
    c["env"] = Value::Array(env);
    c
}

fn env_list() -> Vec<Value> {
    match env() {
        Value::Array(list) => list,
        _ => Vec::new(),
    }
}

fn proxy_sidecar(port: u16, native: bool, mutated: bool) -> Value {
    let mut c = json!({
        "name": "azwi-proxy",
        "image": "my.registry.io/azwi/proxy:v1.0.0",
        "imagePullPolicy": "IfNotPresent",
        "args": [format!("--proxy-port={port}"), "--log-level=info"],
        "ports": [{"containerPort": port}],
        "lifecycle": {"postStart": {"exec": {"command": ["/proxy", format!("--proxy-port={port}"), "--probe", "--log-level=info"]}}},
        "securityContext": {
            "allowPrivilegeEscalation": false,
            "capabilities": {"drop": ["ALL"]},
            "privileged": false,
            "readOnlyRootFilesystem": true,
            "runAsNonRoot": true
        }
    });
    if native {
        c["restartPolicy"] = json!("Always");
    }
    if mutated {
        c["env"] = env();
        c["volumeMounts"] = json!([mount()]);
    }
    c
}

#[test]
fn proxy_sidecar_as_regular_container() {
    let annotations = json!({"azure.workload.identity/inject-proxy-sidecar": "true"});
    let input = pod(
        annotations.clone(),
        json!({"initContainers": [{"name": "init"}], "containers": [{"name": "app"}]}),
    );
    let expected = pod(
        annotations,
        json!({
            "initContainers": [{"name": "init", "env": env(), "volumeMounts": [mount()]}, proxy_init("8000", true)],
            "containers": [proxy_sidecar(8000, false, true), {"name": "app", "env": env(), "volumeMounts": [mount()]}],
            "volumes": [volume(3600)]
        }),
    );
    assert_eq!(mutated(&input, &sa(), &config()), expected);
}

#[test]
fn proxy_native_sidecar_goes_first_in_init_containers() {
    let annotations = json!({
        "azure.workload.identity/inject-proxy-sidecar": "true",
        "azure.workload.identity/proxy-sidecar-port": "8081"
    });
    let input = pod(
        annotations.clone(),
        json!({"initContainers": [{"name": "init"}], "containers": [{"name": "app"}]}),
    );
    let expected = pod(
        annotations,
        json!({
            "initContainers": [
                proxy_sidecar(8081, true, true),
                {"name": "init", "env": env(), "volumeMounts": [mount()]},
                proxy_init("8081", true)
            ],
            "containers": [{"name": "app", "env": env(), "volumeMounts": [mount()]}],
            "volumes": [volume(3600)]
        }),
    );
    assert_eq!(mutated(&input, &sa(), &native()), expected);
}

#[test]
fn proxy_native_sidecar_without_init_containers_and_skipped_proxy() {
    let annotations = json!({
        "azure.workload.identity/inject-proxy-sidecar": "true",
        "azure.workload.identity/skip-containers": "azwi-proxy-init"
    });
    let input = pod(annotations.clone(), json!({"containers": [{"name": "app"}]}));
    let expected = pod(
        annotations,
        json!({
            "initContainers": [proxy_sidecar(8000, true, true), proxy_init("8000", false)],
            "containers": [{"name": "app", "env": env(), "volumeMounts": [mount()]}],
            "volumes": [volume(3600)]
        }),
    );
    assert_eq!(mutated(&input, &sa(), &native()), expected);
}

#[rstest]
#[case::false_means_no("false")]
#[case::anything_else_means_no("yes")]
fn proxy_annotation_other_than_true_injects_nothing(#[case] value: &str) {
    let annotations = json!({"azure.workload.identity/inject-proxy-sidecar": value, "azure.workload.identity/proxy-sidecar-port": "bad"});
    let input = pod(
        annotations.clone(),
        json!({"hostNetwork": true, "containers": [{"name": "app"}]}),
    );
    let expected = pod(
        annotations,
        json!({
            "hostNetwork": true,
            "containers": [{"name": "app", "env": env(), "volumeMounts": [mount()]}],
            "volumes": [volume(3600)]
        }),
    );
    assert_eq!(mutated(&input, &sa(), &config()), expected);
}

#[test]
fn manually_added_proxy_containers_are_not_duplicated() {
    let annotations = json!({"azure.workload.identity/inject-proxy-sidecar": "true"});
    let init = json!({"name": "azwi-proxy-init", "image": "mine"});
    let sidecar = json!({"name": "azwi-proxy", "image": "mine"});
    let input = pod(
        annotations.clone(),
        json!({"initContainers": [init.clone()], "containers": [sidecar.clone(), {"name": "app"}]}),
    );
    let with = |mut c: Value| {
        c["env"] = env();
        c["volumeMounts"] = json!([mount()]);
        c
    };
    let expected = pod(
        annotations,
        json!({
            "initContainers": [with(init)],
            "containers": [with(sidecar), {"name": "app", "env": env(), "volumeMounts": [mount()]}],
            "volumes": [volume(3600)]
        }),
    );
    assert_eq!(mutated(&input, &sa(), &config()), expected);
}

fn csi_volume(class: &str) -> Value {
    json!({
        "name": "secrets-store-inline",
        "csi": {"driver": "secrets-store.csi.k8s.io", "readOnly": true, "volumeAttributes": {"secretProviderClass": class}}
    })
}

fn csi_mount(path: &str) -> Value {
    json!({"name": "secrets-store-inline", "mountPath": path, "readOnly": true})
}

#[rstest]
#[case::default_path(json!({"azure.workload.identity/secret-provider-class": "my-spc"}), "/mnt/secrets-store")]
#[case::custom_path(json!({
    "azure.workload.identity/secret-provider-class": "my-spc",
    "azure.workload.identity/secrets-mount-path": "/etc/secrets"
}), "/etc/secrets")]
fn secret_provider_class_extension(#[case] annotations: Value, #[case] path: &str) {
    let input = pod(
        annotations.clone(),
        json!({"initContainers": [{"name": "init"}], "containers": [{"name": "app"}]}),
    );
    let expected = pod(
        annotations,
        json!({
            "initContainers": [{"name": "init", "env": env(), "volumeMounts": [mount(), csi_mount(path)]}],
            "containers": [{"name": "app", "env": env(), "volumeMounts": [mount(), csi_mount(path)]}],
            "volumes": [volume(3600), csi_volume("my-spc")]
        }),
    );
    assert_eq!(mutated(&input, &sa(), &config()), expected);
}

#[test]
fn secret_provider_class_with_existing_csi_volume_and_skipped_container() {
    let annotations = json!({
        "azure.workload.identity/secret-provider-class": "my-spc",
        "azure.workload.identity/skip-containers": "tool"
    });
    let existing = json!({"name": "secrets-store-inline", "csi": {"driver": "secrets-store.csi.k8s.io", "volumeAttributes": {"secretProviderClass": "other"}}});
    let input = pod(
        annotations.clone(),
        json!({"containers": [{"name": "app"}, {"name": "tool"}], "volumes": [existing.clone()]}),
    );
    let expected = pod(
        annotations,
        json!({
            "containers": [
                {"name": "app", "env": env(), "volumeMounts": [mount(), csi_mount("/mnt/secrets-store")]},
                {"name": "tool"}
            ],
            "volumes": [existing, volume(3600)]
        }),
    );
    assert_eq!(mutated(&input, &sa(), &config()), expected);
}

#[rstest]
#[case::pod_expiration_syntax(
    json!({"azure.workload.identity/service-account-token-expiration": "3600s"}), json!({}), sa(),
    "pod annotation azure.workload.identity/service-account-token-expiration: parsing \"3600s\": invalid syntax; set a whole number of seconds between 3600 and 86400"
)]
#[case::sa_expiration_syntax(
    json!({}), json!({}), ServiceAccountInfo { token_expiration: Some("invalid".into()), ..sa() },
    "ServiceAccount annotation azure.workload.identity/service-account-token-expiration: parsing \"invalid\": invalid syntax; set a whole number of seconds between 3600 and 86400"
)]
#[case::expiration_too_small(
    json!({"azure.workload.identity/service-account-token-expiration": "3599"}), json!({}), sa(),
    "token expiration 3599 not valid. Expected value to be between 3600 and 86400 (pod annotation azure.workload.identity/service-account-token-expiration)"
)]
#[case::expiration_too_large(
    json!({}), json!({}), ServiceAccountInfo { token_expiration: Some("86401".into()), ..sa() },
    "token expiration 86401 not valid. Expected value to be between 3600 and 86400 (ServiceAccount annotation azure.workload.identity/service-account-token-expiration)"
)]
#[case::proxy_with_host_network(
    json!({"azure.workload.identity/inject-proxy-sidecar": "true"}), json!({"hostNetwork": true}), sa(),
    "hostNetwork is set to true, cannot inject proxy sidecar; remove the pod annotation azure.workload.identity/inject-proxy-sidecar or spec.hostNetwork"
)]
#[case::proxy_port_syntax(
    json!({"azure.workload.identity/inject-proxy-sidecar": "true", "azure.workload.identity/proxy-sidecar-port": "invalid"}), json!({}), sa(),
    "failed to parse proxy sidecar port: pod annotation azure.workload.identity/proxy-sidecar-port: parsing \"invalid\": invalid port; set an integer between 1 and 65535"
)]
#[case::proxy_port_zero(
    json!({"azure.workload.identity/inject-proxy-sidecar": "true", "azure.workload.identity/proxy-sidecar-port": "0"}), json!({}), sa(),
    "failed to parse proxy sidecar port: pod annotation azure.workload.identity/proxy-sidecar-port: parsing \"0\": invalid port; set an integer between 1 and 65535"
)]
#[case::proxy_port_too_large(
    json!({"azure.workload.identity/inject-proxy-sidecar": "true", "azure.workload.identity/proxy-sidecar-port": "70000"}), json!({}), sa(),
    "failed to parse proxy sidecar port: pod annotation azure.workload.identity/proxy-sidecar-port: parsing \"70000\": invalid port; set an integer between 1 and 65535"
)]
#[case::empty_secret_provider_class(
    json!({"azure.workload.identity/secret-provider-class": " "}), json!({}), sa(),
    "pod annotation azure.workload.identity/secret-provider-class is empty; set it to the name of a SecretProviderClass in the pod's namespace"
)]
#[case::relative_secrets_mount_path(
    json!({"azure.workload.identity/secret-provider-class": "spc", "azure.workload.identity/secrets-mount-path": "mnt"}), json!({}), sa(),
    "pod annotation azure.workload.identity/secrets-mount-path: \"mnt\" is not an absolute path; set a path starting with /"
)]
#[case::containers_not_a_list(
    json!({}), json!({"containers": {"name": "app"}}), sa(),
    "pod field spec.containers is not an array; the object is not a valid Pod"
)]
#[case::env_not_a_list(
    json!({}), json!({"containers": [{"name": "app", "env": "X=1"}]}), sa(),
    "pod field spec.containers[0].env is not an array; the object is not a valid Pod"
)]
#[case::volumes_not_a_list(
    json!({}), json!({"volumes": {}}), sa(),
    "pod field spec.volumes is not an array; the object is not a valid Pod"
)]
fn denials(#[case] annotations: Value, #[case] spec: Value, #[case] sa: ServiceAccountInfo, #[case] message: &str) {
    let denial = mutate(&pod(annotations, spec), &sa, &config()).unwrap_err();
    assert_eq!(denial.to_string(), message);
    assert_eq!(denial.code(), 400);
}

#[test]
fn pod_without_spec_is_denied() {
    let input = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": {"azure.workload.identity/use": "true"}}});
    assert_eq!(
        mutate(&input, &sa(), &config()).unwrap_err().to_string(),
        "pod field spec is not an object; the object is not a valid Pod"
    );
}

#[test]
fn proxy_checks_come_before_expiration_as_upstream() {
    let input = pod(
        json!({
            "azure.workload.identity/inject-proxy-sidecar": "true",
            "azure.workload.identity/service-account-token-expiration": "1"
        }),
        json!({"hostNetwork": true}),
    );
    assert_eq!(
        mutate(&input, &sa(), &config()).unwrap_err(),
        Denial::ProxyWithHostNetwork
    );
}

#[test]
fn host_network_without_proxy_is_mutated() {
    let input = pod(json!({}), json!({"hostNetwork": true, "containers": [{"name": "app"}]}));
    let expected = pod(
        json!({}),
        json!({
            "hostNetwork": true,
            "containers": [{"name": "app", "env": env(), "volumeMounts": [mount()]}],
            "volumes": [volume(3600)]
        }),
    );
    assert_eq!(mutated(&input, &sa(), &config()), expected);
}

#[rstest]
#[case::no_labels(json!(null))]
#[case::other_labels(json!({"app": "x"}))]
#[case::capitalised(json!({"azure.workload.identity/use": "True"}))]
#[case::false_value(json!({"azure.workload.identity/use": "false"}))]
fn pods_not_opted_in_are_left_alone(#[case] labels: Value) {
    // Even annotations that would be denied do not matter for a pod the webhook does not own.
    let input = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "pod", "labels": labels, "annotations": {
            "azure.workload.identity/service-account-token-expiration": "1",
            "azure.workload.identity/inject-proxy-sidecar": "true"
        }},
        "spec": {"hostNetwork": true, "containers": [{"name": "app"}]}
    });
    assert!(!is_opted_in(&input));
    assert_eq!(mutate(&input, &sa(), &config()).unwrap(), Patch(Vec::new()));
}
