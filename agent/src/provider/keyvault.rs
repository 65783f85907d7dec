//! Key Vault REST client: get a secret, key or certificate (a version or the latest) and list versions.
//!
//! Written on reqwest rather than the `azure_security_keyvault_*` clients because the mount path needs what
//! those clients hide: one bearer token for the three object kinds (the SDK clients each run their own 401
//! challenge round trip, and the benchmark budget for a cold 10-object mount is three round trips), Key Vault's
//! error code and message verbatim in the error users read, retries bounded by kubelet's deadline, and
//! `nextLink` paging that never sends the token to a host other than the vault's. The requests are the
//! documented REST calls the SDKs make.

use std::sync::Arc;

use base64::Engine;
use reqwest::Url;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio::time::Instant;

use crate::error_text::{error_chain, json_problem, json_secret_fields, redact};
use crate::metrics::Metrics;
use crate::provider::http::{Outcome, RetryPolicy, send_with_retry};
use crate::provider::params::ObjectType;
use crate::provider::render::{FetchedObject, VersionInfo};

/// The Key Vault data-plane API version wisp speaks: the one upstream provider-azure's SDK clients send.
pub const API_VERSION: &str = "7.4";

/// Pages of a version list wisp follows before giving up (25 per page by default: 2,500 versions).
const MAX_PAGES: usize = 100;

#[derive(Debug, thiserror::Error)]
pub enum KeyVaultError {
    #[error("Key Vault {vault} answered HTTP {status} {code}: {message}")]
    Service {
        vault: String,
        status: u16,
        code: String,
        message: String,
    },
    #[error("Key Vault {vault} could not be reached: {reason}")]
    Transport { vault: String, reason: String },
    #[error("Key Vault {vault} returned an unreadable response (HTTP {status}): {reason}")]
    BadResponse { vault: String, status: u16, reason: String },
    #[error("vault URL {0:?} is not a valid https URL; check keyvaultName and the cloud's keyVaultDNSSuffix")]
    BadVaultUrl(String),
}

impl KeyVaultError {
    /// A short label for metrics: Key Vault's error code, or the failure kind.
    pub fn metric_code(&self) -> &str {
        match self {
            KeyVaultError::Service { code, .. } => code,
            KeyVaultError::Transport { .. } => "Transport",
            KeyVaultError::BadResponse { .. } => "BadResponse",
            KeyVaultError::BadVaultUrl(_) => "BadVaultUrl",
        }
    }
}

/// A vault and the bearer token used for it.
pub struct VaultAccess {
    base: Url,
    token: SecretString,
}

impl std::fmt::Debug for VaultAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultAccess")
            .field("base", &self.base.as_str())
            .field("token", &"[redacted]")
            .finish()
    }
}

impl VaultAccess {
    /// `vault_url` as `CloudEnvironment::vault_url` builds it (`https://{name}.{suffix}/`).
    pub fn new(vault_url: &str, token: SecretString) -> Result<Self, KeyVaultError> {
        let base = Url::parse(vault_url).map_err(|_| KeyVaultError::BadVaultUrl(vault_url.to_string()))?;
        if base.scheme() != "https" || base.host_str().is_none() || base.cannot_be_a_base() {
            return Err(KeyVaultError::BadVaultUrl(vault_url.to_string()));
        }
        Ok(Self { base, token })
    }

    fn host(&self) -> String {
        match (self.base.host_str(), self.base.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            _ => self.base.as_str().to_string(),
        }
    }

    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url.query_pairs_mut().append_pair("api-version", API_VERSION);
        url
    }

    /// Only links to the vault itself may carry the token; a link with a user name or password is not one
    /// (reqwest would send them as a second, Basic, `Authorization`).
    fn same_origin(&self, link: &Url) -> bool {
        link.scheme() == self.base.scheme()
            && link.host_str() == self.base.host_str()
            && link.port_or_known_default() == self.base.port_or_known_default()
            && link.username().is_empty()
            && link.password().is_none()
    }
}

pub fn collection(object_type: ObjectType) -> &'static str {
    match object_type {
        ObjectType::Secret => "secrets",
        ObjectType::Key => "keys",
        ObjectType::Cert => "certificates",
    }
}

/// One fetched version and its identifier.
#[derive(Debug)]
pub struct Fetched {
    pub object: FetchedObject,
    /// The version (last segment of the object id), e.g. for the SecretProviderClassPodStatus.
    pub version: String,
}

pub struct KeyVaultClient {
    http: reqwest::Client,
    retry: RetryPolicy,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for KeyVaultClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyVaultClient")
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

impl KeyVaultClient {
    pub fn new(http: reqwest::Client, retry: RetryPolicy, metrics: Arc<Metrics>) -> Self {
        Self { http, retry, metrics }
    }

    /// `GET {vault}/{secrets|keys|certificates}/{name}[/{version}]`.
    pub async fn get(
        &self,
        vault: &VaultAccess,
        object_type: ObjectType,
        name: &str,
        version: Option<&str>,
        deadline: Instant,
    ) -> Result<Fetched, KeyVaultError> {
        let mut segments = vec![collection(object_type), name];
        if let Some(v) = version.filter(|v| !v.is_empty()) {
            segments.push(v);
        }
        let url = vault.url(&segments);
        let started = std::time::Instant::now();
        let result = async {
            let (status, body) = self.send(vault, url, deadline).await?;
            parse_object(vault, object_type, status, &body)
        }
        .await;
        let code = result.as_ref().err().map(KeyVaultError::metric_code).unwrap_or("");
        self.metrics
            .keyvault_request(object_type.as_str(), name, code, started.elapsed().as_secs_f64());
        result
    }

    /// Every version of an object, following `nextLink`.
    pub async fn list_versions(
        &self,
        vault: &VaultAccess,
        object_type: ObjectType,
        name: &str,
        deadline: Instant,
    ) -> Result<Vec<VersionInfo>, KeyVaultError> {
        let started = std::time::Instant::now();
        let result = self.list_pages(vault, object_type, name, deadline).await;
        let code = result.as_ref().err().map(KeyVaultError::metric_code).unwrap_or("");
        self.metrics
            .keyvault_request(object_type.as_str(), name, code, started.elapsed().as_secs_f64());
        result
    }

    async fn list_pages(
        &self,
        vault: &VaultAccess,
        object_type: ObjectType,
        name: &str,
        deadline: Instant,
    ) -> Result<Vec<VersionInfo>, KeyVaultError> {
        let mut url = vault.url(&[collection(object_type), name, "versions"]);
        let mut versions = Vec::new();
        for _ in 0..MAX_PAGES {
            let (status, body) = self.send(vault, url, deadline).await?;
            match read_version_page(vault, status, &body, &mut versions)? {
                None => return Ok(versions),
                Some(next) => url = next,
            }
        }
        Err(KeyVaultError::BadResponse {
            vault: vault.host(),
            status: 200,
            reason: format!("the version list has more than {MAX_PAGES} pages"),
        })
    }

    async fn send(&self, vault: &VaultAccess, url: Url, deadline: Instant) -> Result<(u16, Vec<u8>), KeyVaultError> {
        let outcome = send_with_retry(&self.retry, deadline, || {
            self.http
                .get(url.clone())
                .bearer_auth(vault.token.expose_secret())
                .header("Accept", "application/json")
        })
        .await;
        match outcome {
            Outcome::Transport(e) => Err(KeyVaultError::Transport {
                vault: vault.host(),
                reason: error_chain(&e),
            }),
            Outcome::Response(resp) => {
                let status = resp.status().as_u16();
                let body = resp.bytes().await.map_err(|e| KeyVaultError::Transport {
                    vault: vault.host(),
                    reason: error_chain(&e),
                })?;
                Ok((status, body.to_vec()))
            }
        }
    }
}

/// One page of a version list (`{"value":[…],"nextLink":…}`): its versions appended to `versions`, and the next
/// page's URL, which is only ever one on the vault itself (the token goes with it).
pub(crate) fn read_version_page(
    vault: &VaultAccess,
    status: u16,
    body: &[u8],
    versions: &mut Vec<VersionInfo>,
) -> Result<Option<Url>, KeyVaultError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Page {
        #[serde(default)]
        value: Vec<Item>,
        next_link: Option<String>,
    }
    #[derive(Deserialize)]
    struct Item {
        id: Option<String>,
        kid: Option<String>,
        attributes: Option<Attributes>,
    }
    #[derive(Deserialize)]
    struct Attributes {
        enabled: Option<bool>,
        created: Option<i64>,
    }
    if !(200..300).contains(&status) {
        return Err(service_error(vault, status, body));
    }
    // The reasons quote the page's links and ids: never with the token in them.
    let bad = |reason: String| KeyVaultError::BadResponse {
        vault: vault.host(),
        status,
        reason: redact(&reason, &[vault.token.expose_secret()]),
    };
    let page: Page =
        serde_json::from_slice(body).map_err(|e| bad(format!("not a version list: {}", json_problem(&e))))?;
    for (i, item) in page.value.into_iter().enumerate() {
        // Upstream skips entries without attributes; a version without `enabled` counts as disabled.
        let Some(attributes) = item.attributes else { continue };
        let (field, id) = match (item.id, item.kid) {
            (Some(id), _) => ("id", id),
            (None, Some(kid)) => ("kid", kid),
            (None, None) => continue,
        };
        // The version is fetched by this name and recorded in the pod's status: an empty one would fetch the
        // latest version under no name.
        let version = last_segment(&id);
        if version.is_empty() {
            return Err(bad(format!(
                "value[{i}].{field} {id:?} does not end with a version (…/{{name}}/{{version}})"
            )));
        }
        versions.push(VersionInfo {
            id: version.to_string(),
            enabled: attributes.enabled.unwrap_or(false),
            created: attributes.created.unwrap_or(0),
        });
    }
    let Some(link) = page.next_link.filter(|l| !l.is_empty()) else {
        return Ok(None);
    };
    let next = Url::parse(&link).map_err(|e| bad(format!("nextLink {link:?} is not a URL: {e}")))?;
    if !vault.same_origin(&next) {
        return Err(bad(format!(
            "nextLink {link:?} points outside the vault (https://{}/); not following it with the vault's token",
            vault.host()
        )));
    }
    Ok(Some(next))
}

/// The version of an object id (`https://{vault}/secrets/{name}/{version}`): its last path segment, as upstream
/// reads it. An id ending in `/` has none (trimming the slash would take the object's name for its version).
fn last_segment(id: &str) -> &str {
    id.rsplit('/').next().unwrap_or(id)
}

/// Key Vault's error body: `{"error":{"code":"SecretNotFound","message":"..."}}`. Neither the vault's token nor a
/// secret bundle's `value` shows in the error, even if the body quotes or carries them.
fn service_error(vault: &VaultAccess, status: u16, body: &[u8]) -> KeyVaultError {
    #[derive(Deserialize)]
    struct Body {
        error: Option<Inner>,
    }
    #[derive(Deserialize)]
    struct Inner {
        code: Option<String>,
        message: Option<String>,
    }
    let carried = json_secret_fields(body, &["value"]);
    let mut secrets = vec![vault.token.expose_secret()];
    secrets.extend(carried.iter().map(String::as_str));
    let clean = |text: &str| redact(text.trim(), &secrets);
    let parsed = serde_json::from_slice::<Body>(body).ok().and_then(|b| b.error);
    let (code, message) = match parsed {
        Some(inner) => (
            inner
                .code
                .map(|c| clean(&c))
                .filter(|c| !c.is_empty())
                .unwrap_or_else(|| "UnknownError".into()),
            inner
                .message
                .map(|m| clean(&m))
                .filter(|m| !m.is_empty())
                .unwrap_or_else(|| "no error message".into()),
        ),
        None => {
            // Redacted before the cut, so that the cut cannot leave part of a secret; the cut can end on a space.
            let text: String = clean(&String::from_utf8_lossy(body)).chars().take(512).collect();
            let text = text.trim_end().to_string();
            (
                "UnknownError".into(),
                if text.is_empty() {
                    "empty response body".into()
                } else {
                    text
                },
            )
        }
    };
    KeyVaultError::Service {
        vault: vault.host(),
        status,
        code,
        message,
    }
}

pub(crate) fn parse_object(
    vault: &VaultAccess,
    object_type: ObjectType,
    status: u16,
    body: &[u8],
) -> Result<Fetched, KeyVaultError> {
    if !(200..300).contains(&status) {
        return Err(service_error(vault, status, body));
    }
    let bad = |reason: String| KeyVaultError::BadResponse {
        vault: vault.host(),
        status,
        reason,
    };
    match object_type {
        ObjectType::Secret => {
            #[derive(Deserialize)]
            #[serde(rename_all = "camelCase")]
            struct SecretBundle {
                value: Option<String>,
                id: Option<String>,
                content_type: Option<String>,
                kid: Option<String>,
            }
            // By kind and position only: serde_json's own text quotes a value of the wrong type.
            let bundle: SecretBundle =
                serde_json::from_slice(body).map_err(|e| bad(format!("not a secret bundle: {}", json_problem(&e))))?;
            let value = bundle.value.ok_or_else(|| bad("secret value is nil".into()))?;
            let id = bundle.id.ok_or_else(|| bad("secret id is nil".into()))?;
            Ok(Fetched {
                version: last_segment(&id).to_string(),
                object: FetchedObject::Secret {
                    value: SecretString::from(value),
                    content_type: bundle.content_type,
                    kid: bundle.kid.filter(|k| !k.is_empty()),
                },
            })
        }
        ObjectType::Key => {
            #[derive(Deserialize)]
            struct KeyBundle {
                key: Option<serde_json::Value>,
            }
            let bundle: KeyBundle =
                serde_json::from_slice(body).map_err(|e| bad(format!("not a key bundle: {}", json_problem(&e))))?;
            let jwk = bundle
                .key
                .filter(|k| k.is_object())
                .ok_or_else(|| bad("key value is nil".into()))?;
            let kid = jwk
                .get("kid")
                .and_then(|k| k.as_str())
                .ok_or_else(|| bad("key id is nil".into()))?;
            Ok(Fetched {
                version: last_segment(kid).to_string(),
                object: FetchedObject::Key { jwk },
            })
        }
        ObjectType::Cert => {
            #[derive(Deserialize)]
            struct CertificateBundle {
                id: Option<String>,
                cer: Option<String>,
            }
            let bundle: CertificateBundle = serde_json::from_slice(body)
                .map_err(|e| bad(format!("not a certificate bundle: {}", json_problem(&e))))?;
            let cer = bundle.cer.ok_or_else(|| bad("certificate value is nil".into()))?;
            let id = bundle.id.ok_or_else(|| bad("certificate id is nil".into()))?;
            let der = base64::engine::general_purpose::STANDARD
                .decode(cer.trim())
                .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(cer.trim()))
                .map_err(|e| bad(format!("certificate cer is not base64: {e}")))?;
            Ok(Fetched {
                version: last_segment(&id).to_string(),
                object: FetchedObject::Cert { cer: der },
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vault() -> VaultAccess {
        VaultAccess::new("https://kv1.vault.azure.net/", SecretString::from("t")).unwrap()
    }

    #[test]
    fn urls_are_built_with_encoded_segments() {
        let v = vault();
        assert_eq!(
            v.url(&["secrets", "s1", "abc"]).as_str(),
            "https://kv1.vault.azure.net/secrets/s1/abc?api-version=7.4"
        );
        assert_eq!(
            v.url(&["keys", "a/b?c"]).as_str(),
            "https://kv1.vault.azure.net/keys/a%2Fb%3Fc?api-version=7.4"
        );
        let custom = VaultAccess::new("https://kv.vault.local:9443/", SecretString::from("t")).unwrap();
        assert_eq!(custom.host(), "kv.vault.local:9443");
        assert!(VaultAccess::new("http://kv.vault.local/", SecretString::from("t")).is_err());
    }

    #[test]
    fn next_links_must_stay_on_the_vault() {
        let v = vault();
        assert!(v.same_origin(&Url::parse("https://kv1.vault.azure.net/secrets/s/versions?$skiptoken=x").unwrap()));
        assert!(v.same_origin(&Url::parse("https://kv1.vault.azure.net:443/x").unwrap()));
        assert!(!v.same_origin(&Url::parse("https://evil.example/secrets").unwrap()));
        assert!(!v.same_origin(&Url::parse("http://kv1.vault.azure.net/x").unwrap()));
    }

    #[test]
    fn parses_bundles() {
        let v = vault();
        let secret = parse_object(
            &v,
            ObjectType::Secret,
            200,
            br#"{"value":"s3cr3t","id":"https://kv1.vault.azure.net/secrets/s1/v1","contentType":"text/plain","attributes":{}}"#,
        )
        .unwrap();
        assert_eq!(secret.version, "v1");
        match secret.object {
            FetchedObject::Secret {
                value,
                content_type,
                kid,
            } => {
                assert_eq!(value.expose_secret(), "s3cr3t");
                assert_eq!(content_type.as_deref(), Some("text/plain"));
                assert_eq!(kid, None);
            }
            other => panic!("unexpected {other:?}"),
        }
        let key = parse_object(
            &v,
            ObjectType::Key,
            200,
            br#"{"key":{"kid":"https://kv1.vault.azure.net/keys/k1/kv2","kty":"RSA","n":"AQAB","e":"AQAB"}}"#,
        )
        .unwrap();
        assert_eq!(key.version, "kv2");
        assert!(matches!(key.object, FetchedObject::Key { ref jwk } if jwk["kty"] == "RSA"));
        let cert = parse_object(
            &v,
            ObjectType::Cert,
            200,
            br#"{"id":"https://kv1.vault.azure.net/certificates/c/cv","cer":"dGVzdA=="}"#,
        )
        .unwrap();
        assert_eq!(cert.version, "cv");
        assert!(matches!(cert.object, FetchedObject::Cert { ref cer } if cer == b"test"));
    }

    #[test]
    fn service_errors_carry_code_and_message() {
        let v = vault();
        let err = parse_object(
            &v,
            ObjectType::Secret,
            404,
            br#"{"error":{"code":"SecretNotFound","message":"A secret with (name/id) nope was not found in this key vault."}}"#,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "Key Vault kv1.vault.azure.net answered HTTP 404 SecretNotFound: A secret with (name/id) nope was not found in this key vault."
        );
        assert_eq!(err.metric_code(), "SecretNotFound");
        let err = parse_object(&v, ObjectType::Cert, 502, b"").unwrap_err();
        assert_eq!(
            err.to_string(),
            "Key Vault kv1.vault.azure.net answered HTTP 502 UnknownError: empty response body"
        );
        let err = parse_object(&v, ObjectType::Secret, 200, br#"{"id":"https://kv1/secrets/s/v"}"#).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Key Vault kv1.vault.azure.net returned an unreadable response (HTTP 200): secret value is nil"
        );
    }

    fn page(v: &VaultAccess, body: &str) -> Result<(Vec<VersionInfo>, Option<Url>), String> {
        let mut versions = Vec::new();
        read_version_page(v, 200, body.as_bytes(), &mut versions)
            .map(|next| (versions, next))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn version_pages_follow_next_links_on_the_vault_only() {
        let v = vault();
        let (versions, next) = page(
            &v,
            r#"{"value":[{"id":"https://kv1.vault.azure.net/secrets/s/v1","attributes":{"enabled":true,"created":1700000000}},
                         {"kid":"https://kv1.vault.azure.net/keys/s/v2","attributes":{"created":1700000001}},
                         {"id":"https://kv1.vault.azure.net/secrets/s/v3"}],
                "nextLink":"https://kv1.vault.azure.net:443/secrets/s/versions?api-version=7.4&$skiptoken=abc"}"#,
        )
        .unwrap();
        assert_eq!(
            versions,
            [
                VersionInfo {
                    id: "v1".into(),
                    enabled: true,
                    created: 1_700_000_000
                },
                VersionInfo {
                    id: "v2".into(),
                    enabled: false,
                    created: 1_700_000_001
                },
            ]
        );
        assert_eq!(
            next.unwrap().as_str(),
            "https://kv1.vault.azure.net/secrets/s/versions?api-version=7.4&$skiptoken=abc"
        );
        assert_eq!(page(&v, r#"{"value":[],"nextLink":null}"#).unwrap(), (vec![], None));
        // Another host, scheme, port or a user: the token would leave the vault, or go with a second credential.
        for link in [
            "https://evil.example/secrets/s/versions",
            "http://kv1.vault.azure.net/secrets/s/versions",
            "https://kv1.vault.azure.net:8443/secrets/s/versions",
            "https://kv1.vault.azure.net.evil.example/secrets/s/versions",
            "https://user:pw@kv1.vault.azure.net/secrets/s/versions",
        ] {
            assert_eq!(
                page(&v, &format!(r#"{{"value":[],"nextLink":"{link}"}}"#)).unwrap_err(),
                format!(
                    "Key Vault kv1.vault.azure.net returned an unreadable response (HTTP 200): nextLink \"{link}\" \
                     points outside the vault (https://kv1.vault.azure.net/); not following it with the vault's token"
                )
            );
        }
        assert_eq!(
            page(&v, r#"{"nextLink":"/secrets/s/versions?$skiptoken=abc"}"#).unwrap_err(),
            "Key Vault kv1.vault.azure.net returned an unreadable response (HTTP 200): nextLink \
             \"/secrets/s/versions?$skiptoken=abc\" is not a URL: relative URL without a base"
        );
    }

    #[test]
    fn unreadable_version_pages_name_the_member() {
        let v = vault();
        assert_eq!(
            page(
                &v,
                r#"{"value":[{"id":"https://kv1.vault.azure.net/secrets/s/v1","attributes":{"enabled":"yes"}}]}"#
            )
            .unwrap_err(),
            "Key Vault kv1.vault.azure.net returned an unreadable response (HTTP 200): not a version list: a value of \
             the wrong JSON type at line 1 column 88"
        );
        // An id with nothing after its last slash would fetch the latest version under no version name.
        assert_eq!(
            page(&v, r#"{"value":[{"id":"https://kv1.vault.azure.net/secrets/s/v1","attributes":{}},{"id":"","attributes":{}}]}"#)
                .unwrap_err(),
            "Key Vault kv1.vault.azure.net returned an unreadable response (HTTP 200): value[1].id \"\" does not \
             end with a version (…/{name}/{version})"
        );
        // Nor may one ending in a slash stand for the object's name as its version.
        assert_eq!(
            page(
                &v,
                r#"{"value":[{"id":"https://kv1.vault.azure.net/secrets/s/","attributes":{}}]}"#
            )
            .unwrap_err(),
            "Key Vault kv1.vault.azure.net returned an unreadable response (HTTP 200): value[0].id \
             \"https://kv1.vault.azure.net/secrets/s/\" does not end with a version (…/{name}/{version})"
        );
        let mut versions = Vec::new();
        assert_eq!(
            read_version_page(
                &v,
                403,
                br#"{"error":{"code":"Forbidden","message":"no list permission"}}"#,
                &mut versions
            )
            .unwrap_err()
            .to_string(),
            "Key Vault kv1.vault.azure.net answered HTTP 403 Forbidden: no list permission"
        );
    }

    #[test]
    fn service_errors_never_show_the_token_or_a_secret_value() {
        let token = "eyJ0eXAiOiJKV1QifQ.e30.sig";
        let v = VaultAccess::new("https://kv1.vault.azure.net/", SecretString::from(token)).unwrap();
        let body = format!(r#"{{"error":{{"code":"Unauthorized","message":"AKV10032: Invalid issuer in {token}"}}}}"#);
        assert_eq!(
            parse_object(&v, ObjectType::Secret, 401, body.as_bytes())
                .unwrap_err()
                .to_string(),
            "Key Vault kv1.vault.azure.net answered HTTP 401 Unauthorized: AKV10032: Invalid issuer in [redacted]"
        );
        // Not Key Vault's error shape: shown as it came, without a secret bundle's value.
        assert_eq!(
            parse_object(
                &v,
                ObjectType::Secret,
                500,
                br#"{"value":"s3cr3t-value-42","error":"boom"}"#
            )
            .unwrap_err()
            .to_string(),
            r#"Key Vault kv1.vault.azure.net answered HTTP 500 UnknownError: {"value":"[redacted]","error":"boom"}"#
        );
        let link = format!("https://kv1.vault.azure.net/secrets/s/versions?t={token}");
        let mut versions = Vec::new();
        let next = read_version_page(&v, 200, format!(r#"{{"nextLink":"{link}"}}"#).as_bytes(), &mut versions).unwrap();
        assert_eq!(next.map(String::from), Some(link.clone()));
        let err = read_version_page(
            &v,
            200,
            format!(r#"{{"nextLink":"http{}"}}"#, &link[5..]).as_bytes(),
            &mut versions,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "Key Vault kv1.vault.azure.net returned an unreadable response (HTTP 200): nextLink \
             \"http://kv1.vault.azure.net/secrets/s/versions?t=[redacted]\" points outside the vault \
             (https://kv1.vault.azure.net/); not following it with the vault's token"
        );
    }

    #[test]
    fn blank_codes_and_messages_read_as_missing() {
        let v = vault();
        assert_eq!(
            parse_object(&v, ObjectType::Secret, 429, br#"{"error":{"code":" ","message":"\n"}}"#)
                .unwrap_err()
                .to_string(),
            "Key Vault kv1.vault.azure.net answered HTTP 429 UnknownError: no error message"
        );
        let body = format!("{} more", "x".repeat(511));
        assert_eq!(
            parse_object(&v, ObjectType::Secret, 500, body.as_bytes())
                .unwrap_err()
                .to_string(),
            format!(
                "Key Vault kv1.vault.azure.net answered HTTP 500 UnknownError: {}",
                "x".repeat(511)
            )
        );
    }
}
