//! Keys, certificates and PFX files are generated here at test time; expectations are computed by other
//! implementations (rcgen/aws-lc for keys and SPKI, x509-parser to read certificates) wherever possible.

use der::Decode;
use pretty_assertions::assert_eq;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384,
    PKCS_ECDSA_P521_SHA512, PKCS_RSA_SHA256, PublicKeyData, RsaKeySize, SignatureAlgorithm, SigningKey,
};
use rstest::rstest;
use serde_json::json;

use super::*;
use crate::provider::params::{ObjectEncoding, ObjectFormat, ObjectSpec, ObjectType};

fn spec(object_type: ObjectType) -> ObjectSpec {
    ObjectSpec {
        index: 2,
        name: "obj".into(),
        alias: "obj".into(),
        object_type,
        version: None,
        version_history: 0,
        format: ObjectFormat::Pem,
        encoding: ObjectEncoding::Utf8,
        file_permission: None,
    }
}

fn secret(value: &str, content_type: Option<&str>, kid: Option<&str>) -> FetchedObject {
    FetchedObject::Secret {
        value: SecretString::from(value.to_string()),
        content_type: content_type.map(str::to_string),
        kid: kid.map(str::to_string),
    }
}

const KID: &str = "https://kv.vault.azure.net/keys/obj/v1";

fn files(rendered: &[RenderedFile]) -> Vec<(String, String, u32)> {
    rendered
        .iter()
        .map(|f| {
            (
                f.path.clone(),
                String::from_utf8_lossy(&f.contents).into_owned(),
                f.mode,
            )
        })
        .collect()
}

fn one(path: &str, contents: &str, mode: u32) -> Vec<(String, String, u32)> {
    vec![(path.to_string(), contents.to_string(), mode)]
}

fn render(spec: &ObjectSpec, object: &FetchedObject) -> Result<Vec<RenderedFile>, RenderError> {
    render_object(spec, &spec.alias, object, &RenderOptions::default())
}

fn pem(label: &str, der: &[u8]) -> String {
    String::from_utf8(pem_encode(label, der).to_vec()).unwrap()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

// ---- secrets and encodings ----

#[test]
fn plain_secret_is_written_as_is_with_default_mode() {
    let rendered = render(&spec(ObjectType::Secret), &secret("secret1value", None, None)).unwrap();
    assert_eq!(files(&rendered), one("obj", "secret1value", 0o644));
}

#[test]
fn file_permission_and_history_file_path_are_used() {
    let mut spec = spec(ObjectType::Secret);
    spec.file_permission = Some(0o600);
    let rendered = render_object(&spec, "obj/3", &secret("v", None, None), &RenderOptions::default()).unwrap();
    assert_eq!(files(&rendered), one("obj/3", "v", 0o600));
}

#[rstest]
#[case::utf8(ObjectEncoding::Utf8, "abcdefg", "abcdefg")]
#[case::base64(ObjectEncoding::Base64, "QmFzZTY0RW5jb2RlZFN0cmluZw==", "Base64EncodedString")]
#[case::base64_with_newlines(ObjectEncoding::Base64, "QmFzZTY0RW5j\r\nb2RlZFN0cmluZw==\n", "Base64EncodedString")]
#[case::hex_upper(ObjectEncoding::Hex, "486578456E636F646564537472696E67", "HexEncodedString")]
#[case::hex_lower(ObjectEncoding::Hex, "486578456e636f646564537472696e67", "HexEncodedString")]
fn encodings_decode_secret_values(#[case] encoding: ObjectEncoding, #[case] value: &str, #[case] expected: &str) {
    let mut spec = spec(ObjectType::Secret);
    spec.encoding = encoding;
    let rendered = render(&spec, &secret(value, None, None)).unwrap();
    assert_eq!(files(&rendered), one("obj", expected, 0o644));
}

#[test]
fn base64_encoding_gives_binary_bytes() {
    let mut spec = spec(ObjectType::Secret);
    spec.encoding = ObjectEncoding::Base64;
    let rendered = render(&spec, &secret("AP8Q", None, None)).unwrap();
    assert_eq!(rendered[0].contents.as_slice(), &[0x00, 0xff, 0x10]);
}

#[rstest]
#[case::base64_invalid_char(
    ObjectEncoding::Base64,
    "Not*Base64",
    "failed to decode the secret value as base64 (objectEncoding: base64): it is not padded standard base64"
)]
#[case::base64_unpadded(
    ObjectEncoding::Base64,
    "QQ",
    "failed to decode the secret value as base64 (objectEncoding: base64): it is not padded standard base64"
)]
#[case::hex_odd(
    ObjectEncoding::Hex,
    "abc",
    "failed to decode the secret value as hex (objectEncoding: hex): odd number of digits"
)]
#[case::hex_not_digit(
    ObjectEncoding::Hex,
    "zz",
    "failed to decode the secret value as hex (objectEncoding: hex): a character is not a hex digit"
)]
fn encoding_errors_name_the_object_and_never_the_value(
    #[case] encoding: ObjectEncoding,
    #[case] value: &str,
    #[case] problem: &str,
) {
    let mut spec = spec(ObjectType::Secret);
    spec.encoding = encoding;
    let error = render(&spec, &secret(value, None, None)).unwrap_err().to_string();
    assert_eq!(
        error,
        format!("objects array index 2 (objectName \"obj\", objectType secret): {problem}")
    );
}

#[test]
fn certificate_backed_pem_secret_is_unchanged() {
    let value = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n\n-----BEGIN PRIVATE KEY-----\nBBBB\n-----END PRIVATE KEY-----\n";
    let rendered = render(
        &spec(ObjectType::Secret),
        &secret(value, Some("application/x-pem-file"), Some(KID)),
    )
    .unwrap();
    assert_eq!(files(&rendered), one("obj", value, 0o644));
}

#[test]
fn certificate_backed_pem_secret_split_into_crt_and_key() {
    let value = "-----BEGIN PRIVATE KEY-----\nBBBB\n-----END PRIVATE KEY-----\nnoise\n-----BEGIN CERTIFICATE-----\nProc-Type: 4,ENCRYPTED\n\nAAAA\n-----END CERTIFICATE-----\n-----BEGIN CERTIFICATE-----\nAQID\nBA==\n-----END CERTIFICATE-----\n";
    let opts = RenderOptions {
        construct_pem_chain: true,
        write_cert_and_key_in_separate_files: true,
    };
    let spec = spec(ObjectType::Secret);
    let rendered = render_object(
        &spec,
        "dir/obj",
        &secret(value, Some("application/x-pem-file"), Some(KID)),
        &opts,
    )
    .unwrap();
    assert_eq!(
        files(&rendered),
        vec![
            (
                "dir/obj.crt".to_string(),
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n-----BEGIN CERTIFICATE-----\nAQIDBA==\n-----END CERTIFICATE-----\n".to_string(),
                0o644
            ),
            (
                "dir/obj.key".to_string(),
                "-----BEGIN PRIVATE KEY-----\nBBBB\n-----END PRIVATE KEY-----\n".to_string(),
                0o644
            ),
            ("dir/obj".to_string(), value.to_string(), 0o644),
        ]
    );
}

#[test]
fn plain_secrets_are_not_split() {
    let opts = RenderOptions {
        construct_pem_chain: true,
        write_cert_and_key_in_separate_files: true,
    };
    let spec = spec(ObjectType::Secret);
    let rendered = render_object(&spec, "obj", &secret("v", Some("application/x-pem-file"), None), &opts).unwrap();
    assert_eq!(files(&rendered), one("obj", "v", 0o644));
}

#[rstest]
#[case::other(Some("text/plain"), "text/plain")]
#[case::missing(None, "")]
fn certificate_backed_secret_with_unknown_content_type_fails(#[case] content_type: Option<&str>, #[case] shown: &str) {
    let error = render(&spec(ObjectType::Secret), &secret("x", content_type, Some(KID))).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "objects array index 2 (objectName \"obj\", objectType secret): failed to get certificate. unknown \
             content type '{shown}'; a certificate's secret must be application/x-pem-file or application/x-pkcs12"
        )
    );
}

#[test]
fn wrong_object_kind_is_an_error() {
    let error = render(&spec(ObjectType::Key), &FetchedObject::Cert { cer: b"x".to_vec() }).unwrap_err();
    assert_eq!(
        error.to_string(),
        "objects array index 2 (objectName \"obj\", objectType key): Key Vault returned a certificate for it; this is \
         a bug in wisp's fetch"
    );
}

#[test]
fn rendered_file_debug_redacts_contents() {
    let file = RenderedFile {
        path: "a".into(),
        contents: Zeroizing::new(b"hunter2".to_vec()),
        mode: 0o640,
    };
    assert_eq!(
        format!("{file:?}"),
        "RenderedFile { path: \"a\", contents: <7 bytes redacted>, mode: 0o640 }"
    );
}

// ---- certificates ----

#[test]
fn cert_is_one_certificate_pem_block() {
    // provider-azure's TestGetCertificate vector.
    let rendered = render(&spec(ObjectType::Cert), &FetchedObject::Cert { cer: b"test".to_vec() }).unwrap();
    assert_eq!(
        files(&rendered),
        one(
            "obj",
            "-----BEGIN CERTIFICATE-----\ndGVzdA==\n-----END CERTIFICATE-----\n",
            0o644
        )
    );
}

#[test]
fn pem_lines_are_64_characters() {
    let encoded = pem("X", &[0u8; 60]);
    let body = "A".repeat(80);
    assert_eq!(
        encoded,
        format!("-----BEGIN X-----\n{}\n{}\n-----END X-----\n", &body[..64], &body[64..])
    );
}

// ---- PFX ----

struct Cert {
    der: Vec<u8>,
    key: KeyPair,
}

struct Chain {
    root: Cert,
    intermediate: Cert,
    leaf: Cert,
}

fn params(cn: &str, is_ca: IsCa) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.is_ca = is_ca;
    params.use_authority_key_identifier_extension = true;
    params
}

fn key_for(alg: &'static SignatureAlgorithm) -> KeyPair {
    if alg == &PKCS_RSA_SHA256 {
        KeyPair::generate_rsa_for(alg, RsaKeySize::_2048).unwrap()
    } else {
        KeyPair::generate_for(alg).unwrap()
    }
}

/// root -> intermediate -> leaf; the leaf has a subject key identifier unless `leaf_ski` is false.
fn chain(alg: &'static SignatureAlgorithm, leaf_ski: bool) -> Chain {
    let root_key = key_for(alg);
    let root_params = params("root-ca", IsCa::Ca(BasicConstraints::Unconstrained));
    let root_der = root_params.self_signed(&root_key).unwrap().der().to_vec();
    let root_issuer = Issuer::new(root_params, &root_key);

    let intermediate_key = key_for(alg);
    let intermediate_params = params("intermediate-ca", IsCa::Ca(BasicConstraints::Unconstrained));
    let intermediate_der = intermediate_params
        .signed_by(&intermediate_key, &root_issuer)
        .unwrap()
        .der()
        .to_vec();
    let intermediate_issuer = Issuer::new(intermediate_params, &intermediate_key);

    let leaf_key = key_for(alg);
    let leaf_params = params("foo", if leaf_ski { IsCa::ExplicitNoCa } else { IsCa::NoCa });
    let leaf_der = leaf_params
        .signed_by(&leaf_key, &intermediate_issuer)
        .unwrap()
        .der()
        .to_vec();
    drop(intermediate_issuer);
    drop(root_issuer);
    Chain {
        root: Cert {
            der: root_der,
            key: root_key,
        },
        intermediate: Cert {
            der: intermediate_der,
            key: intermediate_key,
        },
        leaf: Cert {
            der: leaf_der,
            key: leaf_key,
        },
    }
}

fn has_ski(der: &[u8]) -> bool {
    let (_, cert) = X509Certificate::from_der(der).unwrap();
    cert.extensions()
        .iter()
        .any(|e| matches!(e.parsed_extension(), ParsedExtension::SubjectKeyIdentifier(_)))
}

/// A password-less PFX holding `keys` (each with its local key id) and `certs` in this bag order.
fn pfx(keys: &[&[u8]], certs: &[&[u8]]) -> Vec<u8> {
    use p12_keystore::{Certificate, KeyStore, KeyStoreEntry, PrivateKey, PrivateKeyChain};
    let mut store = KeyStore::new();
    for (i, key) in keys.iter().enumerate() {
        // The writer puts a chain's certificates in its given order; only the first key carries them.
        let chain_certs: Vec<Certificate> = if i == 0 {
            certs.iter().map(|der| Certificate::from_der(der).unwrap()).collect()
        } else {
            Vec::new()
        };
        let chain = PrivateKeyChain::new(vec![i as u8 + 1], PrivateKey::from_der(key).unwrap(), chain_certs);
        store.add_entry(&format!("key{i}"), KeyStoreEntry::PrivateKeyChain(chain));
    }
    store.writer("").write().unwrap()
}

fn pfx_secret(pfx: &[u8]) -> FetchedObject {
    secret(&b64(pfx), Some("application/x-pkcs12"), Some(KID))
}

#[rstest]
#[case::rsa(&PKCS_RSA_SHA256)]
#[case::ec_p256(&PKCS_ECDSA_P256_SHA256)]
#[case::ec_p384(&PKCS_ECDSA_P384_SHA384)]
fn pfx_becomes_key_then_chain_from_leaf_to_root(#[case] alg: &'static SignatureAlgorithm) {
    let chain = chain(alg, true);
    let key = chain.leaf.key.serialize_der();
    // Bag order root, leaf, intermediate: the output is ordered anyway.
    let pfx = pfx(&[&key], &[&chain.root.der, &chain.leaf.der, &chain.intermediate.der]);
    let rendered = render(&spec(ObjectType::Secret), &pfx_secret(&pfx)).unwrap();
    // aws-lc's PKCS#8 encoding is the one Go's MarshalPKCS8PrivateKey produces.
    let expected = [
        pem("PRIVATE KEY", &key),
        pem("CERTIFICATE", &chain.leaf.der),
        pem("CERTIFICATE", &chain.intermediate.der),
        pem("CERTIFICATE", &chain.root.der),
    ]
    .concat();
    assert_eq!(files(&rendered), one("obj", &expected, 0o644));

    // Independent route: the key block parses back to the leaf certificate's key.
    let text = String::from_utf8(rendered[0].contents.to_vec()).unwrap();
    let key_pem = &text[..text.find("-----BEGIN CERTIFICATE-----").unwrap()];
    let parsed = KeyPair::from_pem(key_pem).unwrap();
    let (_, leaf) = X509Certificate::from_der(&chain.leaf.der).unwrap();
    assert_eq!(parsed.subject_public_key_info(), leaf.public_key().raw.to_vec());
}

#[test]
fn pfx_self_signed_rsa_gives_key_and_the_one_certificate() {
    let key = key_for(&PKCS_RSA_SHA256);
    let mut params = params("demo.test.com", IsCa::ExplicitNoCa);
    params.distinguished_name.push(DnType::OrganizationName, "ingress-tls");
    let cert = params.self_signed(&key).unwrap().der().to_vec();
    let pfx = pfx(&[&key.serialize_der()], &[&cert]);
    let rendered = render(&spec(ObjectType::Secret), &pfx_secret(&pfx)).unwrap();
    let expected = [pem("PRIVATE KEY", &key.serialize_der()), pem("CERTIFICATE", &cert)].concat();
    assert_eq!(files(&rendered), one("obj", &expected, 0o644));
}

#[test]
fn pfx_with_two_keys_puts_both_keys_first() {
    let chain = chain(&PKCS_ECDSA_P256_SHA256, true);
    let second = key_for(&PKCS_ECDSA_P256_SHA256);
    let (k1, k2) = (chain.leaf.key.serialize_der(), second.serialize_der());
    let pfx = pfx(
        &[&k1, &k2],
        &[&chain.leaf.der, &chain.intermediate.der, &chain.root.der],
    );
    let rendered = render(&spec(ObjectType::Secret), &pfx_secret(&pfx)).unwrap();
    let expected = [
        pem("PRIVATE KEY", &k1),
        pem("PRIVATE KEY", &k2),
        pem("CERTIFICATE", &chain.leaf.der),
        pem("CERTIFICATE", &chain.intermediate.der),
        pem("CERTIFICATE", &chain.root.der),
    ]
    .concat();
    assert_eq!(files(&rendered), one("obj", &expected, 0o644));
}

#[test]
fn pfx_with_incomplete_chain_keeps_the_original_order() {
    let chain = chain(&PKCS_ECDSA_P256_SHA256, true);
    let key = chain.leaf.key.serialize_der();
    let pfx = pfx(&[&key], &[&chain.root.der, &chain.leaf.der]);
    let rendered = render(&spec(ObjectType::Secret), &pfx_secret(&pfx)).unwrap();
    let expected = [
        pem("PRIVATE KEY", &key),
        pem("CERTIFICATE", &chain.root.der),
        pem("CERTIFICATE", &chain.leaf.der),
    ]
    .concat();
    assert_eq!(files(&rendered), one("obj", &expected, 0o644));
}

#[test]
fn pfx_without_chain_construction_keeps_the_original_order() {
    let chain = chain(&PKCS_ECDSA_P256_SHA256, true);
    let key = chain.leaf.key.serialize_der();
    let pfx = pfx(&[&key], &[&chain.root.der, &chain.leaf.der, &chain.intermediate.der]);
    let opts = RenderOptions {
        construct_pem_chain: false,
        write_cert_and_key_in_separate_files: false,
    };
    let spec = spec(ObjectType::Secret);
    let rendered = render_object(&spec, "obj", &pfx_secret(&pfx), &opts).unwrap();
    let expected = [
        pem("PRIVATE KEY", &key),
        pem("CERTIFICATE", &chain.root.der),
        pem("CERTIFICATE", &chain.leaf.der),
        pem("CERTIFICATE", &chain.intermediate.der),
    ]
    .concat();
    assert_eq!(files(&rendered), one("obj", &expected, 0o644));
}

#[test]
fn pfx_split_into_crt_key_and_combined() {
    let chain = chain(&PKCS_ECDSA_P256_SHA256, true);
    let key = chain.leaf.key.serialize_der();
    let pfx = pfx(&[&key], &[&chain.intermediate.der, &chain.leaf.der, &chain.root.der]);
    let opts = RenderOptions {
        construct_pem_chain: true,
        write_cert_and_key_in_separate_files: true,
    };
    let spec = spec(ObjectType::Secret);
    let rendered = render_object(&spec, "tls", &pfx_secret(&pfx), &opts).unwrap();
    let certs = [
        pem("CERTIFICATE", &chain.leaf.der),
        pem("CERTIFICATE", &chain.intermediate.der),
        pem("CERTIFICATE", &chain.root.der),
    ]
    .concat();
    let key_pem = pem("PRIVATE KEY", &key);
    assert_eq!(
        files(&rendered),
        vec![
            ("tls.crt".to_string(), certs.clone(), 0o644),
            ("tls.key".to_string(), key_pem.clone(), 0o644),
            ("tls".to_string(), format!("{key_pem}{certs}"), 0o644),
        ]
    );
}

#[test]
fn pfx_format_keeps_the_base64_text_and_base64_encoding_gives_the_pfx_file() {
    let chain = chain(&PKCS_ECDSA_P256_SHA256, true);
    let pfx = pfx(&[&chain.leaf.key.serialize_der()], &[&chain.leaf.der]);
    let mut spec = spec(ObjectType::Secret);
    spec.format = ObjectFormat::Pfx;
    let rendered = render(&spec, &pfx_secret(&pfx)).unwrap();
    assert_eq!(files(&rendered), one("obj", &b64(&pfx), 0o644));

    spec.encoding = ObjectEncoding::Base64;
    let rendered = render(&spec, &pfx_secret(&pfx)).unwrap();
    assert_eq!(rendered[0].contents.as_slice(), pfx.as_slice());
}

#[test]
fn pfx_errors_name_the_object() {
    let spec = spec(ObjectType::Secret);
    let error = render(&spec, &secret("***", Some("application/x-pkcs12"), Some(KID))).unwrap_err();
    assert_eq!(
        error.to_string(),
        "objects array index 2 (objectName \"obj\", objectType secret): failed to decode the certificate's PFX: the \
         secret value is not padded standard base64"
    );
    let error = render(
        &spec,
        &secret(&b64(b"not a pfx"), Some("application/x-pkcs12"), Some(KID)),
    )
    .unwrap_err();
    let RenderError::Object {
        problem: RenderProblem::Pfx(_),
        index: 2,
        ..
    } = error
    else {
        panic!("unexpected error {error:?}");
    };
}

#[test]
fn pfx_with_a_password_is_refused() {
    let chain = chain(&PKCS_ECDSA_P256_SHA256, true);
    let mut store = p12_keystore::KeyStore::new();
    let key = p12_keystore::PrivateKey::from_der(&chain.leaf.key.serialize_der()).unwrap();
    let cert = p12_keystore::Certificate::from_der(&chain.leaf.der).unwrap();
    store.add_entry(
        "k",
        p12_keystore::KeyStoreEntry::PrivateKeyChain(p12_keystore::PrivateKeyChain::new(vec![1], key, [cert])),
    );
    let pfx = store.writer("secret").write().unwrap();
    let error = render(&spec(ObjectType::Secret), &pfx_secret(&pfx)).unwrap_err();
    assert!(
        matches!(
            error,
            RenderError::Object {
                problem: RenderProblem::Pfx(_),
                ..
            }
        ),
        "{error:?}"
    );
}

#[rstest]
#[case::p256(&PKCS_ECDSA_P256_SHA256)]
#[case::p384(&PKCS_ECDSA_P384_SHA384)]
#[case::p521(&PKCS_ECDSA_P521_SHA512)]
fn ec_private_key_is_normalized_to_go_encoding(#[case] alg: &'static SignatureAlgorithm) {
    let key = key_for(alg);
    let canonical = key.serialize_der();
    let info = pkcs8::PrivateKeyInfo::from_der(&canonical).unwrap();
    let inner = sec1::EcPrivateKey::try_from(info.private_key).unwrap();
    let curve = info.algorithm.parameters_oid().unwrap();
    // Same key, but with the curve inside the SEC1 structure and without the public key.
    let unusual_inner = sec1::EcPrivateKey {
        private_key: inner.private_key,
        parameters: Some(sec1::EcParameters::NamedCurve(curve)),
        public_key: None,
    }
    .to_der()
    .unwrap();
    let unusual = pkcs8::PrivateKeyInfo::new(info.algorithm, &unusual_inner)
        .to_der()
        .unwrap();
    assert_ne!(unusual, canonical);
    assert_eq!(normalize_private_key(&unusual).unwrap().to_vec(), canonical);
    assert_eq!(normalize_private_key(&canonical).unwrap().to_vec(), canonical);
}

#[test]
fn unsupported_private_key_algorithm_is_named() {
    let ed25519 = key_for(&rcgen::PKCS_ED25519).serialize_der();
    assert_eq!(
        normalize_private_key(&ed25519).unwrap_err().to_string(),
        "the certificate's PFX holds a private key of algorithm 1.3.101.112; only RSA and EC keys are supported"
    );
}

// ---- chain ordering ----

fn permutations(n: usize) -> Vec<Vec<usize>> {
    if n == 0 {
        return vec![vec![]];
    }
    let mut out = Vec::new();
    for smaller in permutations(n - 1) {
        for position in 0..=smaller.len() {
            let mut p = smaller.clone();
            p.insert(position, n - 1);
            out.push(p);
        }
    }
    out
}

#[rstest]
#[case::leaf_with_ski(true)]
#[case::leaf_without_ski(false)]
fn chain_is_ordered_leaf_intermediate_root_for_every_input_order(#[case] leaf_ski: bool) {
    let chain = chain(&PKCS_ECDSA_P256_SHA256, leaf_ski);
    assert_eq!(has_ski(&chain.leaf.der), leaf_ski);
    let ders = [
        chain.leaf.der.as_slice(),
        chain.intermediate.der.as_slice(),
        chain.root.der.as_slice(),
    ];
    let orders = permutations(3);
    assert_eq!(orders.len(), 6);
    for order in orders {
        let input: Vec<&[u8]> = order.iter().map(|i| ders[*i]).collect();
        let result: Vec<&[u8]> = chain_order(&input).unwrap().into_iter().map(|i| input[i]).collect();
        assert_eq!(result, ders.to_vec(), "input order {order:?}");
    }
}

#[test]
fn incomplete_chain_keeps_every_input_order() {
    let chain = chain(&PKCS_ECDSA_P256_SHA256, true);
    let ders = [chain.leaf.der.as_slice(), chain.root.der.as_slice()];
    for order in permutations(2) {
        let input: Vec<&[u8]> = order.iter().map(|i| ders[*i]).collect();
        assert_eq!(chain_order(&input).unwrap(), vec![0, 1], "input order {order:?}");
    }
}

#[test]
fn two_unrelated_certificates_keep_their_order() {
    let a = chain(&PKCS_ECDSA_P256_SHA256, true);
    let b = chain(&PKCS_ECDSA_P256_SHA256, true);
    assert_eq!(chain_order(&[&a.root.der, &b.leaf.der]).unwrap(), vec![0, 1]);
}

#[test]
fn chain_errors() {
    assert_eq!(chain_order(&[]).unwrap_err().to_string(), "no leaf found");
    assert!(matches!(
        chain_order(&[b"junk"]).unwrap_err(),
        RenderProblem::Certificate(_)
    ));
}

// ---- keys ----

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn strip_zeros(mut bytes: &[u8]) -> &[u8] {
    while bytes.len() > 1 && bytes[0] == 0 {
        bytes = &bytes[1..];
    }
    bytes
}

/// The JWK Key Vault would return for `key`, built from rcgen's SPKI as read by x509-parser.
fn jwk_of(key: &KeyPair, kty: &str, crv: Option<&str>) -> serde_json::Value {
    let spki_der = key.subject_public_key_info();
    let (_, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(&spki_der).unwrap();
    match spki.parsed().unwrap() {
        x509_parser::public_key::PublicKey::RSA(rsa) => json!({
            "kid": "https://kv.vault.azure.net/keys/k/v1",
            "kty": kty,
            "key_ops": ["sign", "verify"],
            "n": b64url(strip_zeros(rsa.modulus)),
            "e": b64url(strip_zeros(rsa.exponent)),
        }),
        x509_parser::public_key::PublicKey::EC(point) => {
            let data = point.data();
            let size = (data.len() - 1) / 2;
            json!({
                "kid": "https://kv.vault.azure.net/keys/k/v1",
                "kty": kty,
                "crv": crv.unwrap(),
                "x": b64url(&data[1..1 + size]),
                "y": b64url(&data[1 + size..]),
            })
        }
        other => panic!("unexpected key {other:?}"),
    }
}

#[rstest]
#[case::rsa(&PKCS_RSA_SHA256, "RSA", None, &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256)]
#[case::rsa_hsm(&PKCS_RSA_SHA256, "RSA-HSM", None, &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256)]
#[case::p256(&PKCS_ECDSA_P256_SHA256, "EC", Some("P-256"), &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1)]
#[case::p384(&PKCS_ECDSA_P384_SHA384, "EC-HSM", Some("P-384"), &aws_lc_rs::signature::ECDSA_P384_SHA384_ASN1)]
#[case::p521(&PKCS_ECDSA_P521_SHA512, "EC", Some("P-521"), &aws_lc_rs::signature::ECDSA_P521_SHA512_ASN1)]
fn key_is_its_public_key_as_spki_pem(
    #[case] alg: &'static SignatureAlgorithm,
    #[case] kty: &str,
    #[case] crv: Option<&str>,
    #[case] verify_alg: &'static dyn aws_lc_rs::signature::VerificationAlgorithm,
) {
    let key = key_for(alg);
    let rendered = render(
        &spec(ObjectType::Key),
        &FetchedObject::Key {
            jwk: jwk_of(&key, kty, crv),
        },
    )
    .unwrap();
    assert_eq!(files(&rendered), one("obj", &key.public_key_pem(), 0o644));

    // Independent route: a signature by the private key verifies against the key read back from the file.
    let text = String::from_utf8(rendered[0].contents.to_vec()).unwrap();
    let der = pem_blocks(text.as_bytes()).remove(0).1;
    let (_, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(&der).unwrap();
    let signature = key.sign(b"message").unwrap();
    aws_lc_rs::signature::UnparsedPublicKey::new(verify_alg, spki.subject_public_key.data.as_ref())
        .verify(b"message", &signature)
        .unwrap();
}

#[test]
fn jwk_members_with_leading_zeros_or_padding_are_accepted() {
    let key = key_for(&PKCS_ECDSA_P256_SHA256);
    let jwk = jwk_of(&key, "EC", Some("P-256"));
    let x = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(jwk["x"].as_str().unwrap())
        .unwrap();
    let y = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(jwk["y"].as_str().unwrap())
        .unwrap();
    let mut padded_x = vec![0u8];
    padded_x.extend_from_slice(&x);
    let jwk = json!({
        "kty": "EC",
        "crv": "P-256",
        "x": base64::engine::general_purpose::URL_SAFE.encode(&padded_x),
        "y": base64::engine::general_purpose::URL_SAFE.encode(&y),
    });
    let rendered = render(&spec(ObjectType::Key), &FetchedObject::Key { jwk }).unwrap();
    assert_eq!(files(&rendered), one("obj", &key.public_key_pem(), 0o644));
}

#[rstest]
#[case::oct(json!({"kty": "oct", "k": "AAAA"}), "failed to get key. key type 'oct' currently not supported; use an RSA or EC key")]
#[case::secp256k1(
    json!({"kty": "EC", "crv": "P-256K", "x": "AA", "y": "AA"}),
    "curve P-256K is not supported; use P-256, P-384 or P-521"
)]
#[case::no_kty(json!({"n": "AQAB"}), "the key's JWK member \"kty\" is missing or not a string")]
#[case::no_n(json!({"kty": "RSA", "e": "AQAB"}), "the key's JWK member \"n\" is missing or not a string")]
#[case::bad_e(json!({"kty": "RSA", "n": "AQAB", "e": "*"}), "the key's JWK member \"e\" is not base64url")]
#[case::empty_x(json!({"kty": "EC", "crv": "P-256", "x": "", "y": "AQ"}), "the key's JWK member \"x\" is empty")]
#[case::off_curve(
    json!({"kty": "EC", "crv": "P-256", "x": "AQ", "y": "AQ"}),
    "the key's JWK x and y are not a point on curve P-256"
)]
fn key_errors(#[case] jwk: serde_json::Value, #[case] problem: &str) {
    let error = render(&spec(ObjectType::Key), &FetchedObject::Key { jwk }).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!("objects array index 2 (objectName \"obj\", objectType key): {problem}")
    );
}

// ---- version history ----

fn versions(list: &[(&str, bool, i64)]) -> Vec<VersionInfo> {
    list.iter()
        .map(|(id, enabled, created)| VersionInfo {
            id: id.to_string(),
            enabled: *enabled,
            created: *created,
        })
        .collect()
}

#[rstest]
#[case::newest_first(&[("a", true, 1), ("c", true, 3), ("b", true, 2)], None, 3, &["c", "b", "a"])]
#[case::exactly_n_when_more_exist(&[("a", true, 1), ("b", true, 2), ("c", true, 3), ("d", true, 4)], None, 2, &["d", "c"])]
#[case::fewer_than_n_gives_all(&[("a", true, 1), ("b", true, 2)], None, 5, &["b", "a"])]
#[case::latest_is_newest(&[("a", true, 1), ("b", true, 2)], Some("latest"), 2, &["b", "a"])]
#[case::start_at_version(
    &[("a", true, 5), ("b", true, 4), ("c", true, 3), ("d", true, 2), ("e", true, 1)],
    Some("c"),
    5,
    &["c", "d", "e"]
)]
#[case::disabled_skipped(&[("a", true, 1), ("b", false, 2), ("c", true, 3)], None, 2, &["c", "a"])]
#[case::ties_keep_key_vault_order(&[("x", true, 0), ("y", true, 0), ("z", true, 7)], None, 3, &["z", "x", "y"])]
#[case::count_below_two_gives_one(&[("a", true, 1), ("b", true, 2)], None, 0, &["b"])]
fn history_selection(
    #[case] list: &[(&str, bool, i64)],
    #[case] start: Option<&str>,
    #[case] count: u32,
    #[case] expected: &[&str],
) {
    assert_eq!(
        select_history_versions(&versions(list), start, count).unwrap(),
        expected
    );
}

#[test]
fn history_selection_errors() {
    let list = versions(&[("a", true, 1), ("b", false, 2)]);
    assert_eq!(
        select_history_versions(&list, Some("b"), 2).unwrap_err().to_string(),
        "objectVersion b is not an enabled version of this object; set objectVersion to an enabled version or remove it"
    );
    assert_eq!(
        select_history_versions(&versions(&[("b", false, 2)]), None, 2)
            .unwrap_err()
            .to_string(),
        "the object has no enabled versions"
    );
    assert_eq!(
        select_history_versions(&[], None, 2).unwrap_err().to_string(),
        "the object has no enabled versions"
    );
}

// ---- PEM parsing ----

#[test]
fn pem_blocks_skip_headers_garbage_and_broken_blocks() {
    let text = b"junk\n-----BEGIN A-----\nK: v\n\nAQ==\n-----END A-----\n-----BEGIN B-----\n!!!\n-----END B-----\n-----BEGIN C-----\r\nAg==\r\n-----END C-----\r\n-----BEGIN D-----\nAw==\n";
    let blocks: Vec<(String, Vec<u8>)> = pem_blocks(text).into_iter().map(|(l, d)| (l, d.to_vec())).collect();
    assert_eq!(blocks, vec![("A".to_string(), vec![1]), ("C".to_string(), vec![2])]);
}
