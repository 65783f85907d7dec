//! Keys and certificates are generated at test time (rcgen); converted keys are checked by parsing them back
//! with other implementations (the pkcs1/sec1 crates, aws-lc-rs) and PEM is encoded independently
//! (pem-rfc7468 through `der::pem`).

use der::asn1::ObjectIdentifier;
use der::pem::LineEnding;
use pretty_assertions::assert_eq;
use rcgen::{
    CertificateParams, DnType, Issuer, KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384, PKCS_ED25519,
    PKCS_RSA_SHA256, RsaKeySize, SignatureAlgorithm,
};
use rstest::rstest;

use super::*;

const P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");

fn pem(label: &str, der: &[u8]) -> String {
    der::pem::encode_string(label, LineEnding::LF, der).unwrap()
}

fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

fn key_for(alg: &'static SignatureAlgorithm) -> KeyPair {
    if alg == &PKCS_RSA_SHA256 {
        KeyPair::generate_rsa_for(alg, RsaKeySize::_2048).unwrap()
    } else {
        KeyPair::generate_for(alg).unwrap()
    }
}

struct Tls {
    key: KeyPair,
    leaf: Vec<u8>,
    ca: Vec<u8>,
}

/// A CA and a leaf signed by it, both with keys of `alg`.
fn tls(alg: &'static SignatureAlgorithm) -> Tls {
    let ca_key = key_for(alg);
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.distinguished_name.push(DnType::CommonName, "ca");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap().der().to_vec();
    let issuer = Issuer::new(ca_params, &ca_key);
    let key = key_for(alg);
    let leaf = CertificateParams::new(vec!["app.example.com".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap()
        .der()
        .to_vec();
    Tls { key, leaf, ca }
}

fn object(secret_type: &str, data: &[(&str, &str)]) -> SecretObject {
    SecretObject {
        secret_name: "foosecret".into(),
        secret_type: secret_type.into(),
        data: data
            .iter()
            .map(|(object_name, key)| SecretObjectData {
                object_name: object_name.to_string(),
                key: key.to_string(),
            })
            .collect(),
        ..SecretObject::default()
    }
}

/// The decoded `data` of an apply body, as text.
fn data_of(apply: &SecretApply) -> BTreeMap<String, String> {
    apply.body["data"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(key, value)| {
            let bytes = STANDARD.decode(value.as_str().unwrap()).unwrap();
            (key.clone(), String::from_utf8(bytes).unwrap())
        })
        .collect()
}

fn tls_secret(file: &[u8]) -> Result<BTreeMap<String, String>, SecretObjectProblem> {
    let files = MountedFiles::from_files([("cert1", file.to_vec())]);
    let object = object("kubernetes.io/tls", &[("cert1", "tls.crt"), ("cert1", "tls.key")]);
    build_secret(&object, "default", &files).map(|apply| data_of(&apply))
}

fn single_pem(text: &str) -> (String, Vec<u8>) {
    let (label, der) = der::pem::decode_vec(text.as_bytes()).unwrap();
    (label.to_string(), der)
}

// ---- parsing ----

#[test]
fn secret_objects_parse_every_field_and_ignore_unknown_ones() {
    let value = json!([{
        "secretName": "foosecret",
        "type": "Opaque",
        "labels": {"environment": "test"},
        "annotations": {"note": "synced"},
        "data": [{"objectName": "secretalias", "key": "username"}, {"objectName": "history/0"}],
        "unknown": true,
    }, {}]);
    assert_eq!(
        parse_secret_objects("default", "azure-sync", Some(&value)).unwrap(),
        vec![
            SecretObject {
                secret_name: "foosecret".into(),
                secret_type: "Opaque".into(),
                labels: BTreeMap::from([("environment".into(), "test".into())]),
                annotations: BTreeMap::from([("note".into(), "synced".into())]),
                data: vec![
                    SecretObjectData {
                        object_name: "secretalias".into(),
                        key: "username".into(),
                    },
                    SecretObjectData {
                        object_name: "history/0".into(),
                        key: String::new(),
                    },
                ],
            },
            SecretObject::default(),
        ]
    );
}

#[test]
fn absent_secret_objects_mean_nothing_to_sync() {
    assert_eq!(parse_secret_objects("ns", "spc", None).unwrap(), Vec::new());
    assert_eq!(
        parse_secret_objects("ns", "spc", Some(&Value::Null)).unwrap(),
        Vec::new()
    );
}

#[test]
fn malformed_secret_objects_name_the_class() {
    let error = parse_secret_objects("default", "azure-sync", Some(&json!({"secretName": "x"}))).unwrap_err();
    assert_eq!(
        error.to_string(),
        "spec.secretObjects of SecretProviderClass default/azure-sync is not valid: invalid type: map, expected a \
         sequence; each entry needs secretName, type and data (a list of objectName/key pairs)"
    );
}

// ---- Secret bodies ----

#[test]
fn opaque_secret_apply_body() {
    let files = MountedFiles::from_files([
        ("secretalias", "user1"),
        ("history/0", "newest"),
        ("history/1", "older"),
    ]);
    let object = SecretObject {
        secret_name: " foosecret ".into(),
        secret_type: "Opaque".into(),
        labels: BTreeMap::from([
            ("environment".into(), "test".into()),
            // The driver's label always wins.
            ("secrets-store.csi.k8s.io/managed".into(), "false".into()),
        ]),
        annotations: BTreeMap::from([("note".into(), "synced".into())]),
        data: vec![
            SecretObjectData {
                object_name: " secretalias ".into(),
                key: " username ".into(),
            },
            SecretObjectData {
                object_name: "history/1".into(),
                key: "current".into(),
            },
            // A repeated key takes the later value.
            SecretObjectData {
                object_name: "history/0".into(),
                key: "current".into(),
            },
        ],
    };
    let apply = build_secret(&object, "default", &files).unwrap();
    assert_eq!(apply.name, "foosecret");
    assert_eq!(apply.namespace, "default");
    assert_eq!(
        apply.body,
        json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": "foosecret",
                "namespace": "default",
                "labels": {"environment": "test", "secrets-store.csi.k8s.io/managed": "true"},
                "annotations": {"note": "synced"},
            },
            "type": "Opaque",
            "data": {"current": "bmV3ZXN0", "username": "dXNlcjE="},
        })
    );
}

#[test]
fn no_annotations_leaves_the_field_out_and_bytes_stay_binary() {
    let files = MountedFiles::from_files([("bin", vec![0u8, 159, 146, 150, 255])]);
    let apply = build_secret(
        &object("kubernetes.io/basic-auth", &[("bin", "password")]),
        "ns1",
        &files,
    )
    .unwrap();
    assert_eq!(
        apply.body,
        json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": "foosecret",
                "namespace": "ns1",
                "labels": {"secrets-store.csi.k8s.io/managed": "true"},
            },
            "type": "kubernetes.io/basic-auth",
            "data": {"password": "AJ+Slv8="},
        })
    );
}

#[rstest]
#[case::opaque("Opaque", "Opaque")]
#[case::trimmed(" kubernetes.io/tls ", "kubernetes.io/tls")]
#[case::basic_auth("kubernetes.io/basic-auth", "kubernetes.io/basic-auth")]
#[case::bootstrap("bootstrap.kubernetes.io/token", "bootstrap.kubernetes.io/token")]
#[case::dockerconfigjson("kubernetes.io/dockerconfigjson", "kubernetes.io/dockerconfigjson")]
#[case::dockercfg("kubernetes.io/dockercfg", "kubernetes.io/dockercfg")]
#[case::ssh("kubernetes.io/ssh-auth", "kubernetes.io/ssh-auth")]
#[case::service_account("kubernetes.io/service-account-token", "kubernetes.io/service-account-token")]
#[case::unknown("example.com/custom", "Opaque")]
#[case::wrong_case("opaque", "Opaque")]
#[case::blank("  ", "Opaque")]
fn secret_types(#[case] written: &str, #[case] expected: &str) {
    assert_eq!(secret_type(written), expected);
}

#[test]
fn debug_of_an_apply_body_is_redacted() {
    let files = MountedFiles::from_files([("a", "topsecret")]);
    let apply = build_secret(&object("Opaque", &[("a", "k")]), "ns", &files).unwrap();
    assert_eq!(
        format!("{apply:?}"),
        "SecretApply { name: \"foosecret\", namespace: \"ns\", body: <redacted> }"
    );
}

// ---- errors ----

#[rstest]
#[case::name_empty(
    SecretObject { secret_name: " ".into(), ..object("Opaque", &[("a", "k")]) },
    "failed to validate secret object in spc default/azure-sync, err: secret name is empty"
)]
#[case::type_empty(
    object("", &[("a", "k")]),
    "failed to validate secret object in spc default/azure-sync, err: secret type is empty"
)]
#[case::data_empty(
    object("Opaque", &[]),
    "failed to validate secret object in spc default/azure-sync, err: data is empty"
)]
#[case::object_name_empty(
    object("Opaque", &[(" ", "k")]),
    "failed to get data in spc default/azure-sync for secret foosecret, err: object name in secretObjects.data is empty"
)]
#[case::key_empty(
    object("Opaque", &[("a", "")]),
    "failed to get data in spc default/azure-sync for secret foosecret, err: key in secretObjects.data is empty"
)]
#[case::file_missing(
    object("Opaque", &[("a", "k"), ("history/2", "old")]),
    "failed to get data in spc default/azure-sync for secret foosecret, err: file matching objectName history/2 not found in the pod"
)]
#[case::tls_other_key(
    object("kubernetes.io/tls", &[("a", "ca.crt")]),
    "failed to get data in spc default/azure-sync for secret foosecret, err: failed to get cert data from file a, err: \
     key 'ca.crt' is not supported. Only 'tls.key' and 'tls.crt' are supported"
)]
fn sync_errors_use_the_drivers_texts(#[case] object: SecretObject, #[case] expected: &str) {
    let files = MountedFiles::from_files([("a", "value")]);
    let results = build_secrets("default", "azure-sync", &[object], "default", &files);
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].as_ref().unwrap_err().to_string(), expected);
}

#[test]
fn one_bad_entry_does_not_stop_the_others() {
    let files = MountedFiles::from_files([("a", "value")]);
    let objects = [
        object("Opaque", &[("missing", "k")]),
        SecretObject {
            secret_name: "second".into(),
            ..object("Opaque", &[("a", "k")])
        },
    ];
    let results = build_secrets("default", "azure-sync", &objects, "pods-ns", &files);
    assert_eq!(
        results[0].as_ref().unwrap_err(),
        &SyncError::Data {
            spc_namespace: "default".into(),
            spc_name: "azure-sync".into(),
            secret_name: "foosecret".into(),
            problem: Box::new(SecretObjectProblem::FileNotFound("missing".into())),
        }
    );
    let second = results[1].as_ref().unwrap();
    assert_eq!((second.name.as_str(), second.namespace.as_str()), ("second", "pods-ns"));
    assert_eq!(
        data_of(second),
        BTreeMap::from([("k".to_string(), "value".to_string())])
    );
}

// ---- kubernetes.io/tls ----

#[test]
fn tls_from_rsa_pkcs8_key_and_chain() {
    let tls = tls(&PKCS_RSA_SHA256);
    // The provider's layout for a certificate's secret: key first, then the chain from the leaf.
    let file = format!(
        "{}{}{}",
        tls.key.serialize_pem(),
        pem("CERTIFICATE", &tls.leaf),
        pem("CERTIFICATE", &tls.ca)
    );
    let data = tls_secret(file.as_bytes()).unwrap();
    let pkcs8 = tls.key.serialize_der();
    let pkcs1 = pkcs8::PrivateKeyInfo::from_der(&pkcs8).unwrap().private_key.to_vec();
    assert_eq!(
        data,
        BTreeMap::from([
            (
                "tls.crt".to_string(),
                format!("{}{}", pem("CERTIFICATE", &tls.leaf), pem("CERTIFICATE", &tls.ca))
            ),
            ("tls.key".to_string(), pem("RSA PRIVATE KEY", &pkcs1)),
        ])
    );
    let (_, key_der) = single_pem(&data["tls.key"]);
    let parsed = pkcs1::RsaPrivateKey::from_der(&key_der).unwrap();
    assert_eq!(parsed.public_exponent.as_bytes(), [1, 0, 1]);
    aws_lc_rs::rsa::KeyPair::from_der(&key_der).unwrap();
}

#[test]
fn tls_from_rsa_pkcs1_key_is_unchanged_in_substance() {
    let tls = tls(&PKCS_RSA_SHA256);
    let pkcs8 = tls.key.serialize_der();
    let pkcs1 = pkcs8::PrivateKeyInfo::from_der(&pkcs8).unwrap().private_key.to_vec();
    // Certificate before the key, and a traditional RSA key: the order and the form do not matter.
    let file = format!("{}{}", pem("CERTIFICATE", &tls.leaf), pem("RSA PRIVATE KEY", &pkcs1));
    let data = tls_secret(file.as_bytes()).unwrap();
    assert_eq!(data["tls.key"], pem("RSA PRIVATE KEY", &pkcs1));
    assert_eq!(data["tls.crt"], pem("CERTIFICATE", &tls.leaf));
}

#[rstest]
#[case::p256(&PKCS_ECDSA_P256_SHA256, P256, &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1_SIGNING)]
#[case::p384(&PKCS_ECDSA_P384_SHA384, P384, &aws_lc_rs::signature::ECDSA_P384_SHA384_ASN1_SIGNING)]
fn tls_from_ec_key_is_sec1_with_curve_and_public_key(
    #[case] alg: &'static SignatureAlgorithm,
    #[case] curve: ObjectIdentifier,
    #[case] signing: &'static aws_lc_rs::signature::EcdsaSigningAlgorithm,
) {
    use aws_lc_rs::signature::KeyPair as _;

    let tls = tls(alg);
    let from_pkcs8 =
        tls_secret(format!("{}{}", tls.key.serialize_pem(), pem("CERTIFICATE", &tls.leaf)).as_bytes()).unwrap();
    assert_eq!(from_pkcs8["tls.crt"], pem("CERTIFICATE", &tls.leaf));

    let (label, sec1_der) = single_pem(&from_pkcs8["tls.key"]);
    assert_eq!(label, "EC PRIVATE KEY");
    let parsed = sec1::EcPrivateKey::from_der(&sec1_der).unwrap();
    assert_eq!(parsed.parameters.and_then(|p| p.named_curve()), Some(curve));
    assert_eq!(parsed.public_key.unwrap(), tls.key.public_key_raw());
    // aws-lc-rs reads the SEC1 key back to the same key pair.
    let reread = aws_lc_rs::signature::EcdsaKeyPair::from_private_key_der(signing, &sec1_der).unwrap();
    assert_eq!(reread.public_key().as_ref(), tls.key.public_key_raw());

    // The same key given as SEC1 (as `openssl ec` writes it) comes out identical.
    let from_sec1 =
        tls_secret(format!("{}{}", pem("CERTIFICATE", &tls.leaf), from_pkcs8["tls.key"]).as_bytes()).unwrap();
    assert_eq!(from_sec1, from_pkcs8);
}

fn pfx(key: &KeyPair, certs: &[&[u8]]) -> Vec<u8> {
    use p12_keystore::{Certificate, KeyStore, KeyStoreEntry, PrivateKey, PrivateKeyChain};
    let chain = PrivateKeyChain::new(
        vec![1],
        PrivateKey::from_der(&key.serialize_der()).unwrap(),
        certs.iter().map(|der| Certificate::from_der(der).unwrap()),
    );
    let mut store = KeyStore::new();
    store.add_entry("key", KeyStoreEntry::PrivateKeyChain(chain));
    store.writer("").write().unwrap()
}

#[rstest]
#[case::binary(false)]
#[case::base64_text(true)]
fn tls_from_a_password_less_pfx(#[case] as_text: bool) {
    let tls = tls(&PKCS_ECDSA_P256_SHA256);
    let archive = pfx(&tls.key, &[&tls.leaf, &tls.ca]);
    let file = if as_text { b64(&archive).into_bytes() } else { archive };
    let data = tls_secret(&file).unwrap();
    assert_eq!(
        data["tls.crt"],
        format!("{}{}", pem("CERTIFICATE", &tls.leaf), pem("CERTIFICATE", &tls.ca))
    );
    let from_pem =
        tls_secret(format!("{}{}", tls.key.serialize_pem(), pem("CERTIFICATE", &tls.leaf)).as_bytes()).unwrap();
    assert_eq!(data["tls.key"], from_pem["tls.key"]);
}

#[test]
fn tls_key_errors_name_the_file_and_the_fix() {
    let tls = tls(&PKCS_RSA_SHA256);
    let only_certs = pem("CERTIFICATE", &tls.leaf);
    let files = MountedFiles::from_files([("certonly", only_certs)]);
    let error = build_secret(&object("kubernetes.io/tls", &[("certonly", "tls.key")]), "ns", &files).unwrap_err();
    assert_eq!(
        error.to_string(),
        "failed to get cert data from file certonly, err: no private key found: the file has no PEM block other \
         than CERTIFICATE, and is not a PFX without password (the PEM blocks are all certificates); mount the \
         certificate's secret (objectType secret), which holds the key"
    );

    let ed25519 = key_for(&PKCS_ED25519);
    let files = MountedFiles::from_files([("ed", ed25519.serialize_pem())]);
    let error = build_secret(&object("kubernetes.io/tls", &[("ed", "tls.key")]), "ns", &files).unwrap_err();
    assert_eq!(
        error.to_string(),
        "failed to get cert data from file ed, err: unknown private key type found while getting key. Only rsa and \
         ecdsa are supported (found 1.3.101.112)"
    );

    let files = MountedFiles::from_files([("junk", pem("PRIVATE KEY", b"not a key"))]);
    let error = build_secret(&object("kubernetes.io/tls", &[("junk", "tls.key")]), "ns", &files).unwrap_err();
    assert!(
        matches!(&error, SecretObjectProblem::Tls { object_name, problem: TlsProblem::InvalidPrivateKey(_) } if object_name == "junk"),
        "{error:?}"
    );
}

#[test]
fn tls_certificate_errors() {
    let tls = tls(&PKCS_RSA_SHA256);
    let files = MountedFiles::from_files([("keyonly", tls.key.serialize_pem())]);
    let error = build_secret(&object("kubernetes.io/tls", &[("keyonly", "tls.crt")]), "ns", &files).unwrap_err();
    assert_eq!(
        error.to_string(),
        "failed to get cert data from file keyonly, err: no CERTIFICATE PEM block found, and the file is not a PFX \
         without password (it holds no certificate); mount the certificate (objectType cert, or its secret) under \
         this objectName"
    );

    let files = MountedFiles::from_files([("plain", "not pem, not pfx")]);
    let error = build_secret(&object("kubernetes.io/tls", &[("plain", "tls.crt")]), "ns", &files).unwrap_err();
    assert!(
        matches!(&error, SecretObjectProblem::Tls { object_name, problem: TlsProblem::NoCertificate(_) } if object_name == "plain"),
        "{error:?}"
    );
    // Nothing of the file's content is repeated in the message.
    assert!(!error.to_string().contains("not pem"), "{error}");
}

// ---- owners ----

#[test]
fn owners_are_the_pods_owners_without_controller_flags() {
    let pod_owners = [OwnerReference {
        api_version: "apps/v1".into(),
        kind: "ReplicaSet".into(),
        name: "web-7d9f8".into(),
        uid: "rs-uid".into(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }];
    let owners = secret_owner_references(&pod_owners, "web-7d9f8-abc-default-spc", "spcps-uid");
    assert_eq!(
        owner_references_patch(&owners),
        json!({"metadata": {"ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d9f8", "uid": "rs-uid"},
        ]}})
    );
}

#[test]
fn ownerless_pods_hang_the_secret_on_their_pod_status() {
    let owners = secret_owner_references(&[], "busybox-default-spc", "spcps-uid");
    assert_eq!(
        owner_references_patch(&owners),
        json!({"metadata": {"ownerReferences": [{
            "apiVersion": "secrets-store.csi.x-k8s.io/v1",
            "kind": "SecretProviderClassPodStatus",
            "name": "busybox-default-spc",
            "uid": "spcps-uid",
        }]}})
    );
}

// ---- which pods ----

fn pod(volumes: serde_json::Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"containers": [{"name": "app"}], "volumes": volumes},
    }))
    .unwrap()
}

#[test]
fn the_pods_volume_for_the_class() {
    let pod = pod(json!([
        {"name": "config", "configMap": {"name": "cm"}},
        {"name": "other-driver", "csi": {"driver": "example.csi.k8s.io", "volumeAttributes": {"secretProviderClass": "spc"}}},
        {"name": "other-class", "csi": {"driver": "secrets-store.csi.k8s.io", "volumeAttributes": {"secretProviderClass": "spc2"}}},
        {"name": "no-attributes", "csi": {"driver": "secrets-store.csi.k8s.io"}},
        {"name": "secrets-store-inline", "csi": {"driver": "secrets-store.csi.k8s.io", "readOnly": true, "volumeAttributes": {"secretProviderClass": "spc"}}},
    ]));
    assert_eq!(secrets_store_volume(&pod, "spc"), Some("secrets-store-inline"));
    assert_eq!(secrets_store_volume(&pod, "spc2"), Some("other-class"));
    assert_eq!(secrets_store_volume(&pod, "missing"), None);
    assert_eq!(secrets_store_volume(&Pod::default(), "spc"), None);
}

#[rstest]
#[case::kubelet("/var/lib/kubelet/pods/uid-1/volumes/kubernetes.io~csi/vol/mount", true)]
#[case::doubled_separators("//var/lib/kubelet//pods//uid-1/volumes/kubernetes.io~csi/vol/mount/", true)]
#[case::windows("c:\\var\\lib\\kubelet\\pods\\uid-1\\volumes\\kubernetes.io~csi\\vol\\mount", true)]
#[case::other_pod("/var/lib/kubelet/pods/uid-2/volumes/kubernetes.io~csi/vol/mount", false)]
#[case::other_volume("/var/lib/kubelet/pods/uid-1/volumes/kubernetes.io~csi/vol2/mount", false)]
#[case::not_mount("/var/lib/kubelet/pods/uid-1/volumes/kubernetes.io~csi/vol/mount/x", false)]
#[case::other_plugin("/var/lib/kubelet/pods/uid-1/volumes/kubernetes.io~secret/vol/mount", false)]
#[case::short("pods/uid-1/volumes", false)]
fn target_paths(#[case] path: &str, #[case] expected: bool) {
    assert_eq!(target_path_belongs_to(path, "uid-1", "vol"), expected);
}
