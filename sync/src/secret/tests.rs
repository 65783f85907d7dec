use pretty_assertions::assert_eq;
use serde_json::json;
use wisp_agent::library::RenderedFile;

use serde_json::Value;

use super::*;

fn sync(spec: Value) -> SecretSync {
    serde_json::from_value(json!({
        "metadata": {"name": "app-secret", "namespace": "ns-a", "uid": "uid-1", "generation": 1},
        "spec": spec,
    }))
    .unwrap()
}

fn file(path: &str, contents: &str) -> RenderedFile {
    RenderedFile {
        path: path.to_string(),
        contents: Zeroizing::new(contents.as_bytes().to_vec()),
        mode: 0o644,
    }
}

fn basic_spec() -> Value {
    json!({
        "secretProviderClassName": "kv",
        "serviceAccountName": "sa-a",
        "secretObject": {
            "data": [{"sourcePath": "secret1", "targetKey": "password"},
                     {"sourcePath": "history/1", "targetKey": "previous"}],
            "labels": {"app": "web"},
            "annotations": {"team": "blue"},
        },
    })
}

#[test]
fn builds_the_whole_secret() {
    let sync = sync(basic_spec());
    validate(&sync).unwrap();
    let files = [
        file("secret1", "s3cr3t"),
        file("history/0", "new"),
        file("history/1", "old"),
    ];
    let data = data_of(&sync, &files).unwrap();
    let apply = build_secret(&sync, &data);
    assert_eq!((apply.name.as_str(), apply.namespace.as_str()), ("app-secret", "ns-a"));
    assert_eq!(
        apply.body,
        json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": "app-secret",
                "namespace": "ns-a",
                "labels": {"app": "web", "secrets-store.sync.x-k8s.io/secretsync": "app-secret"},
                "annotations": {"team": "blue"},
                "ownerReferences": [{
                    "apiVersion": "secret-sync.x-k8s.io/v1alpha1",
                    "kind": "SecretSync",
                    "name": "app-secret",
                    "uid": "uid-1",
                }],
            },
            "type": "Opaque",
            "data": {"password": "czNjcjN0", "previous": "b2xk"},
        })
    );
    assert_eq!(
        format!("{apply:?}"),
        "SecretApply { name: \"app-secret\", namespace: \"ns-a\", body: <redacted> }"
    );
}

#[test]
fn reserved_prefix_is_refused() {
    let mut spec = basic_spec();
    spec["secretObject"]["labels"]["secrets-store.sync.x-k8s.io/secretsync"] = json!("other");
    let error = validate(&sync(spec)).unwrap_err();
    assert_eq!(error.reason(), Reason::InvalidClusterSecretLabelError);
    assert_eq!(
        error.to_string(),
        "label secrets-store.sync.x-k8s.io/secretsync is reserved for use by the Secrets Store Sync Controller; \
         remove it from spec.secretObject.labels"
    );
    let mut spec = basic_spec();
    spec["secretObject"]["annotations"]["secrets-store.sync.x-k8s.io"] = json!("");
    let error = validate(&sync(spec)).unwrap_err();
    assert_eq!(error.reason(), Reason::InvalidClusterSecretAnnotationError);
    assert_eq!(
        error.to_string(),
        "annotation secrets-store.sync.x-k8s.io is reserved for use by the Secrets Store Sync Controller; remove \
         it from spec.secretObject.annotations"
    );
}

#[test]
fn fields_are_validated() {
    let cases = [
        (
            json!({"serviceAccountName": "sa", "secretObject": {"data": [{"sourcePath": "a", "targetKey": "b"}]}}),
            "spec.secretProviderClassName is not valid: it is required: name a SecretProviderClass of this namespace",
        ),
        (
            json!({"secretProviderClassName": "kv", "secretObject": {"data": [{"sourcePath": "a", "targetKey": "b"}]}}),
            "spec.serviceAccountName is not valid: it is required: name the ServiceAccount whose identity reads the \
             vault",
        ),
        (
            json!({"secretProviderClassName": "kv", "serviceAccountName": "sa", "secretObject": {"data": []}}),
            "spec.secretObject.data is not valid: it needs at least one entry of sourcePath (a file of the class) \
             and targetKey (a key of the Secret)",
        ),
        (
            json!({"secretProviderClassName": "kv", "serviceAccountName": "sa",
                   "secretObject": {"type": "kubernetes.io/ tls", "data": [{"sourcePath": "a", "targetKey": "b"}]}}),
            "spec.secretObject.type is not valid: it must not contain whitespace, e.g. Opaque or kubernetes.io/tls",
        ),
        (
            json!({"secretProviderClassName": "kv", "serviceAccountName": "sa",
                   "secretObject": {"type": "kubernetes.io/service-account-token",
                                    "data": [{"sourcePath": "a", "targetKey": "b"}]}}),
            "spec.secretObject.type is not valid: kubernetes.io/service-account-token Secrets are issued by \
             Kubernetes for a ServiceAccount and not written by wisp-sync; use another type, e.g. Opaque",
        ),
        (
            json!({"secretProviderClassName": "kv", "serviceAccountName": "sa",
                   "secretObject": {"data": [{"sourcePath": "a", "targetKey": "k"}, {"sourcePath": "b", "targetKey": "k"}]}}),
            "spec.secretObject.data is not valid: targetKey \"k\" is listed twice; each key of the Secret once",
        ),
        (
            json!({"secretProviderClassName": "kv", "serviceAccountName": "sa",
                   "secretObject": {"data": [{"sourcePath": "", "targetKey": "k"}]}}),
            "spec.secretObject.data is not valid: entry 0: sourcePath must be 1 to 253 characters",
        ),
    ];
    for (spec, text) in cases {
        let error = validate(&sync(spec)).unwrap_err();
        assert_eq!(error.reason(), Reason::UserInputValidationFailed);
        assert_eq!(error.to_string(), text);
    }
}

#[test]
fn a_name_longer_than_a_label_value_is_refused_before_anything_is_fetched() {
    let mut long = sync(basic_spec());
    long.metadata.name = Some("n".repeat(63));
    assert_eq!(validate(&long), Ok(()));
    long.metadata.name = Some("n".repeat(64));
    let error = validate(&long).unwrap_err();
    assert_eq!(error.reason(), Reason::UserInputValidationFailed);
    assert_eq!(
        error.to_string(),
        "metadata.name is 64 characters long; the Secret's label secrets-store.sync.x-k8s.io/secretsync holds it \
         and a label value has at most 63: give the SecretSync a shorter name"
    );
}

#[test]
fn missing_source_and_tls_problems() {
    let sync_value = sync(basic_spec());
    let error = data_of(&sync_value, &[file("secret1", "x")]).unwrap_err();
    assert_eq!(error.reason(), Reason::UserInputValidationFailed);
    assert_eq!(
        error.to_string(),
        "spec.secretObject.data[1].sourcePath \"history/1\" is not a file the SecretProviderClass writes (it \
         writes: secret1); use an objectAlias or objectName, or <alias>/<n> for version history"
    );
    let tls = sync(json!({
        "secretProviderClassName": "kv", "serviceAccountName": "sa",
        "secretObject": {"type": "kubernetes.io/tls", "data": [{"sourcePath": "cert", "targetKey": "tls.crt"}]},
    }));
    let error = data_of(&tls, &[file("cert", "not a certificate")]).unwrap_err();
    assert_eq!(error.reason(), Reason::UserInputValidationFailed);
    assert!(
        error
            .to_string()
            .starts_with("spec.secretObject.data cannot become a kubernetes.io/tls Secret: "),
        "{error}"
    );
    // Any type is written as given, as upstream's sync controller does; an empty type is the CRD's default.
    let custom = sync(json!({"secretProviderClassName": "kv", "serviceAccountName": "sa",
        "secretObject": {"type": "example.com/custom", "data": [{"sourcePath": "a", "targetKey": "b"}]}}));
    assert_eq!(secret_type_of(&custom), "example.com/custom");
    let data = data_of(&custom, &[file("a", "value")]).unwrap();
    assert_eq!(build_secret(&custom, &data).body["type"], "example.com/custom");
    let default = sync(json!({"secretProviderClassName": "kv", "serviceAccountName": "sa",
        "secretObject": {"data": [{"sourcePath": "a", "targetKey": "b"}]}}));
    assert_eq!(secret_type_of(&default), "Opaque");
}
