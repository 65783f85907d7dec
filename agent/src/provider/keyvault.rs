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

use crate::error_text::{error_chain, json_problem};
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

    /// Only links to the vault itself may carry the token.
    fn same_origin(&self, link: &Url) -> bool {
        link.scheme() == self.base.scheme()
            && link.host_str() == self.base.host_str()
            && link.port_or_known_default() == self.base.port_or_known_default()
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
        let mut url = vault.url(&[collection(object_type), name, "versions"]);
        let mut versions = Vec::new();
        for _ in 0..MAX_PAGES {
            let (status, body) = self.send(vault, url, deadline).await?;
            if !(200..300).contains(&status) {
                return Err(service_error(vault, status, &body));
            }
            let page: Page = serde_json::from_slice(&body).map_err(|e| KeyVaultError::BadResponse {
                vault: vault.host(),
                status,
                reason: format!("not a version list: {e}"),
            })?;
            for item in page.value {
                // Upstream skips entries without attributes; a version without `enabled` counts as disabled.
                let Some(attributes) = item.attributes else { continue };
                let Some(id) = item.id.or(item.kid) else { continue };
                versions.push(VersionInfo {
                    id: last_segment(&id).to_string(),
                    enabled: attributes.enabled.unwrap_or(false),
                    created: attributes.created.unwrap_or(0),
                });
            }
            match page.next_link.filter(|l| !l.is_empty()) {
                None => return Ok(versions),
                Some(link) => {
                    let next = Url::parse(&link).map_err(|e| KeyVaultError::BadResponse {
                        vault: vault.host(),
                        status,
                        reason: format!("nextLink is not a URL: {e}"),
                    })?;
                    if !vault.same_origin(&next) {
                        return Err(KeyVaultError::BadResponse {
                            vault: vault.host(),
                            status,
                            reason: format!("nextLink points outside the vault ({link}); not following it"),
                        });
                    }
                    url = next;
                }
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

fn last_segment(id: &str) -> &str {
    id.trim_end_matches('/').rsplit('/').next().unwrap_or(id)
}

/// Key Vault's error body: `{"error":{"code":"SecretNotFound","message":"..."}}`.
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
    let parsed = serde_json::from_slice::<Body>(body).ok().and_then(|b| b.error);
    let (code, message) = match parsed {
        Some(inner) => (
            inner.code.unwrap_or_else(|| "UnknownError".into()),
            inner.message.unwrap_or_else(|| "no error message".into()),
        ),
        None => {
            let text: String = String::from_utf8_lossy(body).chars().take(512).collect();
            let text = text.trim();
            (
                "UnknownError".into(),
                if text.is_empty() {
                    "empty response body".into()
                } else {
                    text.to_string()
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
}
