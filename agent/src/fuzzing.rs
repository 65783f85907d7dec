//! What must hold for any input the agent reads from outside, checked by the fuzz targets (`fuzz/`) and by the
//! replay of their corpus in `cargo test` (`tests/fuzz_corpus.rs`): the one place these properties are written.
//! Each `check_*` takes the bytes of one input, runs them through the agent's own code and panics, naming the
//! property, when an outcome is wrong. A parse error is a right outcome when it names what is wrong; no input may
//! panic, and no error or log text may carry a token or secret value.
//!
//! | target | input | through |
//! |---|---|---|
//! | `spc_params` | `{"spc": <SecretProviderClass as the API serves it>, "attributes": {<volume attributes>}}` | `cluster::spc::from_dynamic`, `MountData::merge`, `params::parse_mount_params` |
//! | `volume_context` | a selector byte, then a protobuf `NodePublishVolumeRequest` (even) or provider `MountRequest` (odd) | `csi::node::publish_request` / `dropin::parse_mount_request`, the identity's inputs (`serviceAccount.tokens`, `nodePublishSecretRef`) |
//! | `keyvault_render` | a kind byte, a spec byte, then a Key Vault answer body (or the PFX, PEM, key or certificates inside one) | `keyvault::parse_object`, `render::render_object` |
//! | `state_file` | the bytes of the volume record | `StateFile::parse`, the rotation due check |
//! | `cloud_env` | a cloud environment file | `CloudEnvironment::from_json`, the vault and token URLs built from it |
//! | `token_response` | an endpoint byte, a status byte, then the body of Entra's or IMDS's token answer | `auth::token_answer`, `auth::refresh_after` |
//! | `keyvault_pages` | pages split by `0xFF`, each a status byte then the body of a version-list GET | `keyvault::read_version_page` (and `parse_object` for error answers), `render::select_history_versions` |

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use kube::api::DynamicObject;
use prost::Message;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use wisp_shared::cloud::CloudEnvironment;
use wisp_shared::contract::secrets_store::CTX_SERVICE_ACCOUNT_TOKENS;

use crate::cluster::spc::from_dynamic;
use crate::content::{RenderedFile, validate_file_path};
use crate::csi::node::publish_request;
use crate::driver::rotation::refresh_due;
use crate::dropin::parse_mount_request;
use crate::pem::{decode_go_base64, pem_blocks};
use crate::private_key::normalize_private_key;
use crate::proto::csi::NodePublishVolumeRequest;
use crate::proto::provider::MountRequest;
use crate::provider::auth::{
    AuthError, TokenEndpoint, refresh_after, service_principal_credentials, token_answer, token_for_audience,
    workload_identity_audience,
};
use crate::provider::input::MountData;
use crate::provider::keyvault::{KeyVaultError, VaultAccess, parse_object, read_version_page};
use crate::provider::params::{
    CloudSelection, IdentityMode, MountParams, ObjectEncoding, ObjectFormat, ObjectSpec, ObjectType, parse_mount_params,
};
use crate::provider::render::{
    FetchedObject, RenderOptions, VersionInfo, chain_order, render_object, select_history_versions,
};
use crate::volume::state::StateFile;

/// Whether a text found in a secret place is looked for in error and log texts: a value that could occur in any
/// message by chance (short, a word, a sentence) is not. Tokens and client secrets are long runs of letters and
/// digits.
fn looks_secret(text: &str) -> bool {
    text.len() >= 8
        && !text.chars().any(char::is_whitespace)
        && text.chars().any(|c| c.is_ascii_alphabetic())
        && text.chars().any(|c| c.is_ascii_digit())
}

/// Panics when `text` contains one of `secrets`, unless that value is also part of a `public` text (a pod
/// name the fuzzer made equal to a token is shown as the pod name).
fn assert_no_secret(what: &str, text: &str, secrets: &[String], public: &[&str]) {
    let leaked = secrets
        .iter()
        .find(|s| looks_secret(s) && text.contains(s.as_str()) && !public.iter().any(|p| p.contains(s.as_str())));
    if let Some(secret) = leaked {
        panic!("{what} shows a secret value {secret:?}: {text}");
    }
}

/// Every string in a JSON value, at any depth (keys are names, not values).
fn json_strings(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(s) => out.push(s.clone()),
        Value::Array(items) => items.iter().for_each(|v| json_strings(v, out)),
        Value::Object(map) => map.values().for_each(|v| json_strings(v, out)),
        _ => {}
    }
}

// ---- spc_params ----

#[derive(serde::Deserialize)]
struct SpcInput {
    spc: Value,
    #[serde(default)]
    attributes: BTreeMap<String, String>,
}

/// The names an error about the parameters may name: every parameter of provider-azure and every key of an
/// `objects` entry.
const PARAMETER_NAMES: &[&str] = &[
    "usePodIdentity",
    "useVMManagedIdentity",
    "useAzureTokenProxy",
    "userAssignedIdentityID",
    "clientID",
    "keyvaultName",
    "tenantId",
    "tenantID",
    "cloudName",
    "cloudEnvFileName",
    "objects",
    "keyVaultObjects",
    "objectName",
];

/// `{"spc": …, "attributes": …}`: the class as the agent reads it, merged with the attributes, parsed.
pub fn check_spc_params(bytes: &[u8]) {
    let Ok(input) = serde_json::from_slice::<SpcInput>(bytes) else {
        return;
    };
    // What the API server's JSON becomes before wisp reads it; an object kube cannot read never reaches wisp.
    let Ok(object) = serde_json::from_value::<DynamicObject>(input.spc) else {
        return;
    };
    let spc = match from_dynamic(&object) {
        Ok(spc) => spc,
        Err(e) => {
            let text = e.to_string();
            assert!(
                text.contains("spec.") || text.contains("metadata."),
                "a SecretProviderClass error must name the field: {text}"
            );
            return;
        }
    };
    let data = MountData::merge(&spc.parameters, &input.attributes, &BTreeMap::new());
    match parse_mount_params(&data.parameters) {
        Ok(params) => check_mount_params(&data.parameters, &params),
        Err(e) => {
            let text = e.to_string();
            assert!(
                PARAMETER_NAMES.iter().any(|name| text.contains(name)),
                "a parameter error must name the parameter: {text}"
            );
        }
    }
}

fn check_mount_params(parameters: &BTreeMap<String, String>, params: &MountParams) {
    let vault = &params.keyvault_name;
    assert!(
        (3..=24).contains(&vault.len()) && vault.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'),
        "accepted keyvaultName {vault:?}"
    );
    assert!(!params.tenant_id.is_empty() && params.tenant_id.trim() == params.tenant_id);
    match &params.cloud {
        CloudSelection::Named(name) => assert!(
            CloudEnvironment::builtin(name).is_ok(),
            "accepted cloudName {name:?} that resolves to no cloud"
        ),
        CloudSelection::EnvFile(path) => assert!(!path.as_os_str().is_empty()),
        CloudSelection::Default => {}
    }
    if let IdentityMode::WorkloadIdentity { client_id } = &params.identity {
        assert!(!client_id.is_empty());
    }
    assert!(!params.objects.is_empty(), "accepted an empty objects array");
    for (i, spec) in params.objects.iter().enumerate() {
        assert_eq!(spec.index, i);
        assert!(!spec.name.is_empty(), "accepted an empty objectName");
        assert!(
            validate_file_path(&spec.alias).is_ok() && !spec.alias.contains(".."),
            "accepted file path {:?}",
            spec.alias
        );
        assert!(spec.file_permission.is_none_or(|mode| mode <= 0o777));
        if spec.object_type != ObjectType::Secret {
            assert!(spec.format == ObjectFormat::Pem && spec.encoding == ObjectEncoding::Utf8);
        }
        for other in &params.objects[..i] {
            let nested = |outer: &str, inner: &str| inner.strip_prefix(outer).is_some_and(|r| r.starts_with('/'));
            assert!(
                other.alias != spec.alias && !nested(&other.alias, &spec.alias) && !nested(&spec.alias, &other.alias),
                "accepted objects {} and {} writing the same path",
                other.index,
                spec.index
            );
        }
    }
    // The same parameters read again give the same request: parsing is a function of its input.
    assert_eq!(parse_mount_params(parameters).as_ref(), Ok(params));
}

// ---- volume_context ----

/// A selector byte, then kubelet's `NodePublishVolumeRequest` (even) or the upstream driver's `MountRequest`
/// (odd), as protobuf.
pub fn check_volume_context(data: &[u8]) {
    let Some((selector, message)) = data.split_first() else {
        return;
    };
    if selector % 2 == 0 {
        let Ok(request) = NodePublishVolumeRequest::decode(message) else {
            return;
        };
        let mut secrets: Vec<String> = request.secrets.values().cloned().collect();
        let tokens = request.volume_context.get(CTX_SERVICE_ACCOUNT_TOKENS);
        if let Some(tokens) = tokens {
            secrets.extend(token_texts(tokens));
            secrets.push(tokens.clone());
        }
        // What kubelet sends that is not secret, and so may be shown.
        let mut public: Vec<String> = vec![request.volume_id.clone(), request.target_path.clone()];
        public.extend(request.secrets.keys().cloned());
        for (key, value) in &request.volume_context {
            public.push(key.clone());
            if key != CTX_SERVICE_ACCOUNT_TOKENS {
                public.push(value.clone());
            }
        }
        let public: Vec<&str> = public.iter().map(String::as_str).collect();
        match publish_request(request, None) {
            Ok(publish) => {
                assert_no_secret("the PublishRequest's Debug", &format!("{publish:?}"), &secrets, &public);
                let data = MountData::merge(&BTreeMap::new(), &publish.attributes, &publish.secrets);
                check_identity_inputs(&data, &secrets, &public);
            }
            Err(failure) => {
                assert!(!failure.message.is_empty());
                assert_no_secret("a NodePublishVolume error", &failure.message, &secrets, &public);
            }
        }
    } else {
        let Ok(request) = MountRequest::decode(message) else {
            return;
        };
        // Every value of both maps may be secret: the attributes carry the tokens, the secrets client secrets.
        let mut secrets = Vec::new();
        let mut public = vec![request.permission.clone(), request.target_path.clone()];
        for text in [&request.attributes, &request.secrets] {
            if let Ok(Value::Object(map)) = serde_json::from_str::<Value>(text) {
                public.extend(map.keys().cloned());
                map.values().for_each(|v| json_strings(v, &mut secrets));
                if let Some(tokens) = map.get(CTX_SERVICE_ACCOUNT_TOKENS).and_then(Value::as_str) {
                    secrets.extend(token_texts(tokens));
                }
            }
        }
        let public: Vec<&str> = public.iter().map(String::as_str).collect();
        match parse_mount_request(&request) {
            Ok(parsed) => {
                assert!(parsed.default_mode <= 0o777);
                assert!(!parsed.pod_name.is_empty() && !parsed.data.pod_namespace().is_empty());
                assert_no_secret(
                    "the MountData's Debug",
                    &format!("{:?}", parsed.data),
                    &secrets,
                    &public,
                );
                check_identity_inputs(&parsed.data, &secrets, &public);
            }
            Err(e) => assert_no_secret("a MountRequest error", &e.to_string(), &secrets, &public),
        }
    }
}

/// The strings inside a `serviceAccount.tokens` value (the tokens), when it is JSON.
fn token_texts(tokens: &str) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(value) = serde_json::from_str::<Value>(tokens) {
        json_strings(&value, &mut out);
    }
    out
}

/// What the provider reads to choose and prove an identity: the workload-identity token for Entra's audience,
/// or the service principal of `nodePublishSecretRef`.
fn check_identity_inputs(data: &MountData, secrets: &[String], public: &[&str]) {
    let input = data.input();
    let tokens = input
        .parameters
        .get(CTX_SERVICE_ACCOUNT_TOKENS)
        .map(String::as_str)
        .unwrap_or("");
    match token_for_audience(tokens, workload_identity_audience()) {
        Ok(token) => {
            let expected = serde_json::from_str::<Value>(tokens)
                .ok()
                .and_then(|v| v[workload_identity_audience()]["token"].as_str().map(str::to_string));
            assert_eq!(
                Some(token.expose_secret()),
                expected.as_deref(),
                "the token is not the audience's"
            );
        }
        Err(e) => assert_no_secret("a service account token error", &e.to_string(), secrets, public),
    }
    match service_principal_credentials(input.secrets) {
        Ok((client_id, secret)) => assert!(
            input.secrets.values().any(|v| v == &client_id)
                && input.secrets.values().any(|v| v.as_str() == secret.expose_secret())
        ),
        Err(e) => assert_no_secret("a nodePublishSecretRef error", &e.to_string(), secrets, public),
    }
}

// ---- keyvault_render ----

const SECRET_ID: &str = "https://kv1.vault.azure.net/secrets/obj/0123456789abcdef0123456789abcdef";
const KEY_ID: &str = "https://kv1.vault.azure.net/keys/obj/0123456789abcdef0123456789abcdef";

/// One Key Vault answer: the first byte chooses what the rest is, the second the object's spec and the render
/// options.
///
/// | first byte % 7 | the rest is |
/// |---|---|
/// | 0, 1, 2 | the JSON body of a secret, key or certificate GET |
/// | 3 | the bytes of a PFX, as a certificate-backed secret's value (base64) |
/// | 4 | the text of a PEM certificate-backed secret |
/// | 5 | a DER private key from a PFX |
/// | 6 | DER certificates from a PFX, each after its length (2 bytes, big-endian), for the chain order |
pub fn check_keyvault_render(data: &[u8]) {
    let [kind, spec_byte, body @ ..] = data else {
        return;
    };
    match kind % 7 {
        0 => render_answer(ObjectType::Secret, *spec_byte, body),
        1 => render_answer(ObjectType::Key, *spec_byte, body),
        2 => render_answer(ObjectType::Cert, *spec_byte, body),
        3 => {
            let bundle = serde_json::json!({
                "value": base64::engine::general_purpose::STANDARD.encode(body),
                "id": SECRET_ID,
                "contentType": "application/x-pkcs12",
                "kid": KEY_ID,
            });
            render_answer(ObjectType::Secret, *spec_byte, bundle.to_string().as_bytes());
        }
        4 => {
            let bundle = serde_json::json!({
                "value": String::from_utf8_lossy(body),
                "id": SECRET_ID,
                "contentType": "application/x-pem-file",
                "kid": KEY_ID,
            });
            render_answer(ObjectType::Secret, *spec_byte, bundle.to_string().as_bytes());
        }
        5 => {
            if let Ok(normalized) = normalize_private_key(body) {
                assert_eq!(
                    normalize_private_key(&normalized).map(|again| again.to_vec()),
                    Ok(normalized.to_vec()),
                    "a normalized key must stay as it is when normalized again"
                );
            }
        }
        _ => {
            let mut certs = Vec::new();
            let mut rest = body;
            while let [high, low, tail @ ..] = rest {
                let len = usize::from(u16::from_be_bytes([*high, *low])).min(tail.len());
                certs.push(&tail[..len]);
                rest = &tail[len..];
            }
            if let Ok(order) = chain_order(&certs) {
                let mut sorted = order.clone();
                sorted.sort_unstable();
                assert_eq!(
                    sorted,
                    (0..certs.len()).collect::<Vec<_>>(),
                    "the chain order is not a permutation"
                );
            }
        }
    }
}

/// The spec of the object an answer is for: bit 0 PFX, bits 1-2 the encoding (secrets only, as the parameters
/// allow), bit 3 a file permission, bits 4-5 the render options.
fn spec_for(object_type: ObjectType, byte: u8) -> (ObjectSpec, RenderOptions) {
    let secret = object_type == ObjectType::Secret;
    let spec = ObjectSpec {
        index: 0,
        name: "obj".to_string(),
        alias: "obj".to_string(),
        object_type,
        version: None,
        version_history: 0,
        format: if secret && byte & 1 != 0 {
            ObjectFormat::Pfx
        } else {
            ObjectFormat::Pem
        },
        encoding: match (secret, (byte >> 1) & 3) {
            (true, 1) => ObjectEncoding::Hex,
            (true, 2) => ObjectEncoding::Base64,
            _ => ObjectEncoding::Utf8,
        },
        file_permission: (byte & 8 != 0).then_some(0o600),
    };
    let options = RenderOptions {
        construct_pem_chain: byte & 16 == 0,
        write_cert_and_key_in_separate_files: byte & 32 != 0,
    };
    (spec, options)
}

fn render_answer(object_type: ObjectType, spec_byte: u8, body: &[u8]) {
    let (spec, options) = spec_for(object_type, spec_byte);
    // The secret value, if the body has one, must not show in any error; the bundle's other members may.
    let (secrets, public) = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(bundle)) => {
            let mut public = Vec::new();
            for (key, value) in &bundle {
                if key != "value" {
                    json_strings(value, &mut public);
                }
            }
            let secret = bundle.get("value").and_then(Value::as_str).map(str::to_string);
            (secret.into_iter().collect(), public)
        }
        _ => (Vec::new(), Vec::new()),
    };
    let public: Vec<&str> = public.iter().map(String::as_str).collect();
    let vault = VaultAccess::new("https://kv1.vault.azure.net/", SecretString::from("token".to_string()))
        .expect("a fixed https vault URL");
    let fetched = match parse_object(&vault, object_type, 200, body) {
        Ok(fetched) => fetched,
        Err(e) => return assert_no_secret("a Key Vault answer error", &e.to_string(), &secrets, &public),
    };
    let files = match render_object(&spec, "obj", &fetched.object, &options) {
        Ok(files) => files,
        Err(e) => {
            let text = e.to_string();
            assert!(
                text.starts_with("objects array index 0 (objectName \"obj\""),
                "a render error must name the object: {text}"
            );
            return assert_no_secret("a render error", &text, &secrets, &public);
        }
    };
    check_files(&spec, &options, &fetched.object, &files);
}

fn check_files(spec: &ObjectSpec, options: &RenderOptions, object: &FetchedObject, files: &[RenderedFile]) {
    let mode = spec.file_permission.unwrap_or(0o644);
    assert!(
        files.iter().all(|f| f.mode == mode),
        "a file's mode is not the object's"
    );
    let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
    let Some(last) = files.last() else {
        panic!("an object rendered to no file");
    };
    match object {
        FetchedObject::Secret { value, kid, .. } => {
            let split = kid.is_some() && options.write_cert_and_key_in_separate_files;
            let expected: &[&str] = if split {
                &["obj.crt", "obj.key", "obj"]
            } else {
                &["obj"]
            };
            assert_eq!(paths, expected);
            if kid.is_none() {
                let value = value.expose_secret().as_bytes();
                let decoded = match spec.encoding {
                    ObjectEncoding::Utf8 => Some(value.to_vec()),
                    ObjectEncoding::Base64 => decode_go_base64(value).map(|d| d.to_vec()),
                    ObjectEncoding::Hex => hex::decode(value).ok(),
                };
                assert_eq!(
                    decoded.as_deref(),
                    Some(last.contents.as_slice()),
                    "a secret's file is not its value"
                );
            }
        }
        FetchedObject::Key { .. } => {
            assert_eq!(paths, ["obj"]);
            let blocks = pem_blocks(&last.contents);
            assert!(
                matches!(blocks.as_slice(), [(label, der)] if label == "PUBLIC KEY"
                    && spki::SubjectPublicKeyInfoRef::try_from(der.as_slice()).is_ok()),
                "a key's file is not one PEM public key"
            );
        }
        FetchedObject::Cert { cer } => {
            assert_eq!(paths, ["obj"]);
            assert!(
                matches!(pem_blocks(&last.contents).as_slice(), [(label, der)] if label == "CERTIFICATE" && der.as_slice() == cer.as_slice()),
                "a certificate's file is not its DER as one PEM block"
            );
        }
    }
}

// ---- state_file ----

/// The bytes of the volume record, as a restarted agent reads them.
pub fn check_state_file(data: &[u8]) {
    let state = StateFile::for_agent(
        Path::new("/var/run/wisp"),
        "secrets-store.csi.k8s.io",
        Path::new("/csi/csi.sock"),
    );
    let volumes = match state.parse(data) {
        Ok(volumes) => volumes,
        Err(e) => {
            let text = e.to_string();
            assert!(
                text.contains("/var/run/wisp/volumes-") && text.contains("remove it"),
                "a record error must name the file and the fix: {text}"
            );
            return;
        }
    };
    // What a restarted agent does with each volume on kubelet's next republish: is it due for a refresh?
    let now = SystemTime::now();
    for volume in &volumes {
        for interval in [
            Duration::ZERO,
            Duration::from_secs(120),
            Duration::from_secs(u64::from(u32::MAX)),
        ] {
            let _ = refresh_due(volume.refreshed_at, interval, now);
        }
    }
}

// ---- cloud_env ----

/// A cloud environment file (`cloudEnvFileName`, `AZURE_ENVIRONMENT_FILEPATH`).
pub fn check_cloud_env(data: &[u8]) {
    const PATH: &str = "/etc/kubernetes/custom-cloud.json";
    let cloud = match CloudEnvironment::from_json(PATH, data) {
        Ok(cloud) => cloud,
        Err(e) => {
            let text = e.to_string();
            assert!(
                text.starts_with(&format!("cloud environment file {PATH}: ")),
                "a cloud file error must name the file: {text}"
            );
            return;
        }
    };
    assert!(cloud.active_directory_endpoint.ends_with('/'));
    assert!(!cloud.key_vault_dns_suffix.is_empty() && !cloud.key_vault_resource.is_empty());
    // The vault's URL as a mount builds it: the suffix may only make the host (and port), never move the token
    // to another host, path, user or query.
    let vault_url = cloud.vault_url("kv-1");
    if let Ok(vault) = reqwest::Url::parse(&vault_url)
        && VaultAccess::new(&vault_url, SecretString::from("token".to_string())).is_ok()
    {
        assert!(
            vault.username().is_empty()
                && vault.password().is_none()
                && vault.path() == "/"
                && vault.query().is_none()
                && vault.fragment().is_none()
                && vault.host_str().is_some_and(|h| h.starts_with("kv-1.")),
            "keyVaultDNSSuffix {:?} makes the vault URL {vault}",
            cloud.key_vault_dns_suffix
        );
    }
    // Entra's token endpoint as auth builds it, for a valid tenant: the authority may not move the tenant out of
    // the path.
    let token_url = format!(
        "{}contoso.onmicrosoft.com/oauth2/v2.0/token",
        cloud.active_directory_endpoint
    );
    if let Ok(url) = reqwest::Url::parse(&token_url) {
        assert!(
            url.path().ends_with("/contoso.onmicrosoft.com/oauth2/v2.0/token")
                && url.query().is_none()
                && url.fragment().is_none(),
            "activeDirectoryEndpoint {:?} makes the token URL {url}",
            cloud.active_directory_endpoint
        );
    }
}

// ---- token_response ----

const FUZZ_TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const FUZZ_CLIENT_ID: &str = "2f0f7b58-4b0e-4c4a-9e36-5d1f3c1a7e21";
/// What the token requests prove themselves with, planted so that every error can be searched for them (the
/// dictionary `fuzz/dicts/token_response.dict` offers them to libFuzzer, to quote back in answers).
const FUZZ_CLIENT_ASSERTION: &str = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW0ifQ.wisp-fuzz-assertion-9f3c";
const FUZZ_CLIENT_SECRET: &str = "wisp~fuzz~client~secret~7Q2x";
/// The time the check takes as now (2026-12-02T00:00:00Z), for `expires_on`.
const FUZZ_NOW: u64 = 1_796_169_600;
/// The longest lifetime a token may be given (auth's `MAX_TOKEN_LIFETIME`).
const DAY: Duration = Duration::from_secs(24 * 3600);
/// The statuses a token endpoint answers with, by the status byte.
const TOKEN_STATUSES: [u16; 16] = [
    200, 200, 200, 201, 204, 400, 401, 403, 404, 429, 500, 502, 503, 504, 302, 307,
];

/// One token answer: the first byte chooses who answered (Entra to a client assertion, Entra to a client secret,
/// IMDS for the node's identity, IMDS for a user-assigned one), the second the HTTP status, the rest is the body.
pub fn check_token_response(data: &[u8]) {
    let [kind, status_byte, body @ ..] = data else {
        return;
    };
    let status = TOKEN_STATUSES[usize::from(*status_byte) % TOKEN_STATUSES.len()];
    let entra_url = format!("https://login.microsoftonline.com/{FUZZ_TENANT}/oauth2/v2.0/token");
    let imds_url = "http://169.254.169.254/metadata/identity/oauth2/token";
    let entra = TokenEndpoint::Entra {
        url: &entra_url,
        tenant: FUZZ_TENANT,
        client_id: FUZZ_CLIENT_ID,
    };
    let (endpoint, sent): (TokenEndpoint<'_>, &[&str]) = match kind % 4 {
        0 => (entra, &[FUZZ_CLIENT_ASSERTION]),
        1 => (entra, &[FUZZ_CLIENT_SECRET]),
        2 => (
            TokenEndpoint::Imds {
                url: imds_url,
                client_id: None,
            },
            &[],
        ),
        _ => (
            TokenEndpoint::Imds {
                url: imds_url,
                client_id: Some(FUZZ_CLIENT_ID),
            },
            &[],
        ),
    };
    let answer = serde_json::from_slice::<Value>(body).ok();
    let member = |name: &str| answer.as_ref().and_then(|a| a.get(name));
    // Secret: what the request sent, and every token the answer carries, wherever it carries it.
    let mut secrets: Vec<String> = sent.iter().map(|s| s.to_string()).collect();
    for name in ["access_token", "refresh_token", "id_token"] {
        secrets.extend(member(name).and_then(Value::as_str).map(str::to_string));
    }
    // Shown by design: a token the fuzzer made equal to one of these is shown as that.
    let public = [entra_url.as_str(), imds_url, FUZZ_TENANT, FUZZ_CLIENT_ID];
    let now = UNIX_EPOCH + Duration::from_secs(FUZZ_NOW);
    match token_answer(&endpoint, status, body, sent, now) {
        Ok(token) => {
            assert!((200..300).contains(&status), "a token from an HTTP {status} answer");
            assert_eq!(
                Some(token.token.expose_secret()),
                member("access_token").and_then(Value::as_str),
                "the token is not the answer's access_token"
            );
            // The lifetime, from the answer as the documentation describes it: expires_in (seconds, a number
            // or a string), else expires_on (Unix seconds), at most a day.
            let seconds = |v: Option<&Value>| match v? {
                Value::Number(n) => n.as_u64(),
                Value::String(s) => s.trim().parse::<u64>().ok(),
                _ => None,
            };
            let expected = match seconds(member("expires_in")) {
                Some(secs) => Duration::from_secs(secs),
                None => Duration::from_secs(
                    seconds(member("expires_on"))
                        .and_then(|at| at.checked_sub(FUZZ_NOW))
                        .expect("a token without expires_in or expires_on"),
                ),
            };
            assert!(
                !token.expires_in.is_zero() && token.expires_in == expected.min(DAY),
                "a token living {:?} from an answer that says {expected:?}",
                token.expires_in
            );
            assert_no_secret("an AccessToken's Debug", &format!("{token:?}"), &secrets, &public);
            // What the cache does with it: a refresh before expiry, at an instant that exists.
            let refresh = refresh_after(token.expires_in);
            assert!(refresh < token.expires_in, "refreshed at {refresh:?}, after the expiry");
            assert!(
                tokio::time::Instant::now().checked_add(refresh).is_some(),
                "the refresh time overflows"
            );
        }
        Err(e) => {
            let text = e.to_string();
            assert_no_secret("a token answer error", &text, &secrets, &public);
            assert_no_secret("a token answer error's Debug", &format!("{e:?}"), &secrets, &public);
            match (&e, (200..300).contains(&status)) {
                (AuthError::BadResponse { reason, .. }, true) => assert!(
                    [
                        "access_token",
                        "expires_in",
                        "expires_on",
                        "not an OAuth token response"
                    ]
                    .iter()
                    .any(|field| reason.contains(field)),
                    "an unreadable token answer's error must name the member: {text}"
                ),
                (AuthError::Entra { description, .. } | AuthError::Imds { description, .. }, false) => assert!(
                    text.contains(&format!("(HTTP {status}"))
                        && !description.is_empty()
                        && description.trim() == description,
                    "a refusal must give the status and a description: {text}"
                ),
                _ => panic!("HTTP {status} gave {e:?}"),
            }
        }
    }
}

// ---- keyvault_pages ----

const FUZZ_VAULT: &str = "https://kv1.vault.azure.net/";
/// The vault's bearer token, planted so that every error can be searched for it.
const FUZZ_VAULT_TOKEN: &str = "eyJ0eXAiOiJKV1QifQ.eyJhdWQiOiJodHRwczovL3ZhdWx0In0.wisp-fuzz-vault-token-4k8";
/// The statuses Key Vault answers with, by the status byte.
const VAULT_STATUSES: [u16; 8] = [200, 200, 200, 200, 403, 404, 429, 500];

/// The pages of one version list, split by `0xFF` (which UTF-8 never holds): each is a status byte, then the
/// body. Pages are read as the client reads them, while each says there is a next one.
pub fn check_keyvault_pages(data: &[u8]) {
    let vault = VaultAccess::new(FUZZ_VAULT, SecretString::from(FUZZ_VAULT_TOKEN)).expect("a fixed https vault URL");
    let mut versions: Vec<VersionInfo> = Vec::new();
    for page in data.split(|b| *b == 0xFF) {
        let [status_byte, body @ ..] = page else {
            return;
        };
        let status = VAULT_STATUSES[usize::from(*status_byte) % VAULT_STATUSES.len()];
        // Secret: the token, and a secret bundle's value if an answer carries one.
        let mut secrets = vec![FUZZ_VAULT_TOKEN.to_string()];
        if let Ok(Value::Object(answer)) = serde_json::from_slice::<Value>(body) {
            secrets.extend(answer.get("value").and_then(Value::as_str).map(str::to_string));
        }
        let read_before = versions.len();
        let next = match read_version_page(&vault, status, body, &mut versions) {
            Ok(next) => next,
            Err(e) => {
                check_vault_error(&e, status, &secrets, &["not a version list", "value[", "nextLink"]);
                // The same answer to a GET of one object: Key Vault's error bodies are the same.
                if let Err(e) = parse_object(&vault, ObjectType::Secret, status, body) {
                    check_vault_error(
                        &e,
                        status,
                        &secrets,
                        &["not a secret bundle", "secret value is nil", "secret id is nil"],
                    );
                }
                return;
            }
        };
        assert!(
            (200..300).contains(&status),
            "a version list from an HTTP {status} answer"
        );
        for version in &versions[read_before..] {
            assert!(
                !version.id.is_empty() && !version.id.contains('/'),
                "a version id {:?} that is not one path segment",
                version.id
            );
        }
        let Some(next) = next else {
            break;
        };
        // The token goes with the next request: only to the vault itself.
        assert!(
            next.scheme() == "https"
                && next.host_str() == Some("kv1.vault.azure.net")
                && next.port_or_known_default() == Some(443)
                && next.username().is_empty()
                && next.password().is_none(),
            "followed nextLink {next} away from the vault"
        );
    }
    check_history(&versions);
}

/// A Key Vault error: no secret in its text or Debug; a refusal gives the status, an unreadable answer names
/// the member (one of `members`).
fn check_vault_error(e: &KeyVaultError, status: u16, secrets: &[String], members: &[&str]) {
    let text = e.to_string();
    assert_no_secret("a Key Vault error", &text, secrets, &[FUZZ_VAULT]);
    assert_no_secret("a Key Vault error's Debug", &format!("{e:?}"), secrets, &[FUZZ_VAULT]);
    match (e, (200..300).contains(&status)) {
        (KeyVaultError::Service { code, message, .. }, false) => assert!(
            text.starts_with(&format!("Key Vault kv1.vault.azure.net answered HTTP {status} "))
                && !code.is_empty()
                && !message.is_empty()
                && message.trim() == message,
            "a refusal must give the status, a code and a message: {text}"
        ),
        (KeyVaultError::BadResponse { reason, .. }, true) => assert!(
            members.iter().any(|m| reason.contains(m)),
            "an unreadable answer's error must name the member: {text}"
        ),
        _ => panic!("HTTP {status} gave {e:?}"),
    }
}

/// `objectVersionHistory` on the versions read: enabled versions of the list, newest first, as many as asked.
fn check_history(versions: &[VersionInfo]) {
    let enabled: Vec<&VersionInfo> = versions.iter().filter(|v| v.enabled).collect();
    let unique = {
        let mut ids: Vec<&str> = versions.iter().map(|v| v.id.as_str()).collect();
        ids.sort_unstable();
        ids.windows(2).all(|w| w[0] != w[1])
    };
    for count in [1u32, 3] {
        for start in [None, enabled.last().map(|v| v.id.as_str())] {
            let ids = match select_history_versions(versions, start, count) {
                Ok(ids) => ids,
                Err(e) => {
                    assert!(enabled.is_empty(), "no versions chosen from {versions:?}: {e}");
                    continue;
                }
            };
            assert!(
                !ids.is_empty() && ids.len() <= count as usize,
                "{} versions chosen for {count}",
                ids.len()
            );
            if !unique {
                continue;
            }
            let created: Vec<i64> = ids
                .iter()
                .map(|id| {
                    enabled
                        .iter()
                        .find(|v| &v.id == id)
                        .map(|v| v.created)
                        .unwrap_or_else(|| panic!("version {id:?} chosen, which is not an enabled one"))
                })
                .collect();
            assert!(
                created.windows(2).all(|w| w[0] >= w[1]),
                "versions chosen out of order: {created:?}"
            );
            if start.is_none() {
                assert_eq!(
                    created.first().copied(),
                    enabled.iter().map(|v| v.created).max(),
                    "the newest enabled version is not the first"
                );
            }
        }
    }
}
