//! Access tokens for Key Vault, one identity per mount, chosen as provider-azure does: workload identity (the
//! pod's own service-account token as a client assertion), VM managed identity (IMDS) or a service principal
//! (client secret from `nodePublishSecretRef`).
//!
//! The HTTP is written here rather than through `azure_identity`'s credentials because:
//! - a credential's token cache is keyed by scope only, so a credential could never be shared between pods and
//!   would have to be rebuilt per mount, losing the cache; wisp keeps one cache keyed by the whole identity
//!   (tenant, client id and, for workload identity, the service account the kubelet vouched for);
//! - every failure shown to users must carry Entra's `AADSTS` code and description verbatim, and the retry
//!   budget is kubelet's deadline, not a fixed count;
//! - the tests' IMDS is plain HTTP on a local port, which the SDK's managed identity refuses to target.
//!   The wire formats are the documented ones the SDKs send (OAuth 2.0 client-credentials with a JWT bearer
//!   assertion or a client secret; IMDS `api-version=2018-02-01`).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use secrecy::{ExposeSecret, SecretString};
use tokio::time::Instant;
use wisp_shared::cloud::CloudEnvironment;
use wisp_shared::contract::workload_identity::DEFAULT_AUDIENCE;

use crate::error_text::{error_chain, json_problem, json_secret_fields, redact};
use crate::provider::http::{Outcome, RetryPolicy, send_with_retry};

const CLIENT_ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const IMDS_API_VERSION: &str = "2018-02-01";
/// Tokens are refreshed this long before they expire (or at half their lifetime, if that is shorter).
const REFRESH_MARGIN: Duration = Duration::from_secs(300);
/// The longest a token is trusted for: Entra's and IMDS's access tokens live at most a day (Entra's CAE tokens
/// up to 28 hours, refreshed early here at no cost), so a longer `expires_in` is wrong.
const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("service account tokens not found")]
    TokensMissing,
    #[error(
        "failed to unmarshal service account tokens, error: {0}; kubelet sends csi.storage.k8s.io/serviceAccount.tokens \
         as a JSON object of audience to {{\"token\", \"expirationTimestamp\"}}"
    )]
    TokensInvalid(String),
    #[error("token for audience {0} not found")]
    AudienceMissing(String),
    #[error(
        "csi.storage.k8s.io/serviceAccount.name is missing from the volume context; set podInfoOnMount: true on \
         the CSIDriver object so that kubelet sends it"
    )]
    ServiceAccountMissing,
    #[error("failed to get credentials, nodePublishSecretRef secret is not set")]
    NodePublishSecretMissing,
    #[error("could not find {0} in secrets")]
    NodePublishSecretKeyMissing(&'static str),
    #[error("tenant ID {0:?} is not a valid tenant: use the directory (tenant) ID GUID or domain name")]
    InvalidTenant(String),
    #[error(
        "Microsoft Entra ID refused a token for client ID {client_id} in tenant {tenant} (HTTP {status}{error}): \
         {description}"
    )]
    Entra {
        client_id: String,
        tenant: String,
        status: u16,
        error: String,
        description: String,
    },
    #[error("the managed identity endpoint (IMDS) refused a token{for_client} (HTTP {status}{error}): {description}")]
    Imds {
        for_client: String,
        status: u16,
        error: String,
        description: String,
    },
    #[error("requesting a token from {endpoint} failed: {reason}")]
    Transport { endpoint: String, reason: String },
    #[error("{endpoint} returned an unreadable token response (HTTP {status}): {reason}")]
    BadResponse {
        endpoint: String,
        status: u16,
        reason: String,
    },
}

/// The kubelet-requested token for `audience` from the `csi.storage.k8s.io/serviceAccount.tokens` JSON
/// (`{"<audience>":{"token":"<jwt>","expirationTimestamp":"<RFC3339>"}}`).
pub fn token_for_audience(tokens_json: &str, audience: &str) -> Result<SecretString, AuthError> {
    if tokens_json.trim().is_empty() {
        return Err(AuthError::TokensMissing);
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        #[serde(default)]
        token: String,
    }
    // By kind and position only: serde_json's own text quotes a value of the wrong type, which can be a token.
    let map: BTreeMap<String, Entry> =
        serde_json::from_str(tokens_json).map_err(|e| AuthError::TokensInvalid(json_problem(&e)))?;
    match map.get(audience) {
        Some(entry) if !entry.token.is_empty() => Ok(SecretString::from(entry.token.clone())),
        _ => Err(AuthError::AudienceMissing(audience.to_string())),
    }
}

/// The workload-identity audience (`api://AzureADTokenExchange`).
pub fn workload_identity_audience() -> &'static str {
    DEFAULT_AUDIENCE
}

/// `clientid` / `clientsecret` from the `nodePublishSecretRef` data, keys matched case-insensitively.
pub fn service_principal_credentials(secrets: &BTreeMap<String, String>) -> Result<(String, SecretString), AuthError> {
    if secrets.is_empty() {
        return Err(AuthError::NodePublishSecretMissing);
    }
    let find = |wanted: &'static str| {
        secrets
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(wanted))
            .map(|(_, v)| v.clone())
            .ok_or(AuthError::NodePublishSecretKeyMissing(wanted))
    };
    let client_id = find("clientid")?;
    let secret = find("clientsecret")?;
    Ok((client_id, SecretString::from(secret)))
}

/// A service account as the kubelet identified it (pod namespace + `serviceAccount.name`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServiceAccountRef {
    pub namespace: String,
    pub name: String,
}

/// Who asks for a Key Vault token.
#[expect(
    clippy::enum_variant_names,
    reason = "the variants are Azure's names for the identity kinds"
)]
pub enum Identity {
    WorkloadIdentity {
        tenant_id: String,
        client_id: String,
        service_account: ServiceAccountRef,
        assertion: SecretString,
    },
    ManagedIdentity {
        client_id: Option<String>,
    },
    ServicePrincipal {
        tenant_id: String,
        client_id: String,
        client_secret: SecretString,
    },
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Identity::WorkloadIdentity {
                tenant_id,
                client_id,
                service_account,
                ..
            } => f
                .debug_struct("WorkloadIdentity")
                .field("tenant_id", tenant_id)
                .field("client_id", client_id)
                .field("service_account", service_account)
                .field("assertion", &"[redacted]")
                .finish(),
            Identity::ManagedIdentity { client_id } => {
                f.debug_struct("ManagedIdentity").field("client_id", client_id).finish()
            }
            Identity::ServicePrincipal {
                tenant_id, client_id, ..
            } => f
                .debug_struct("ServicePrincipal")
                .field("tenant_id", tenant_id)
                .field("client_id", client_id)
                .field("client_secret", &"[redacted]")
                .finish(),
        }
    }
}

/// Part of a cache key that must match exactly but never be printed.
#[derive(Clone)]
pub struct SecretKeyPart(SecretString);

impl PartialEq for SecretKeyPart {
    fn eq(&self, other: &Self) -> bool {
        self.0.expose_secret() == other.0.expose_secret()
    }
}
impl Eq for SecretKeyPart {}
impl std::hash::Hash for SecretKeyPart {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.expose_secret().hash(state);
    }
}
impl std::fmt::Debug for SecretKeyPart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// What a cached token is bound to. Two requests share a token only if every field is equal, so a pod never
/// receives a token another identity earned: for workload identity that includes the service account the kubelet
/// vouched for, for a service principal the client secret itself.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum IdentityKey {
    WorkloadIdentity {
        authority: String,
        tenant_id: String,
        client_id: String,
        service_account: ServiceAccountRef,
        scope: String,
    },
    ManagedIdentity {
        endpoint: String,
        client_id: Option<String>,
        resource: String,
    },
    ServicePrincipal {
        authority: String,
        tenant_id: String,
        client_id: String,
        secret: SecretKeyPart,
        scope: String,
    },
}

impl IdentityKey {
    pub fn new(identity: &Identity, cloud: &CloudEnvironment, imds_endpoint: &str) -> Self {
        match identity {
            Identity::WorkloadIdentity {
                tenant_id,
                client_id,
                service_account,
                ..
            } => IdentityKey::WorkloadIdentity {
                authority: cloud.active_directory_endpoint.clone(),
                tenant_id: tenant_id.clone(),
                client_id: client_id.clone(),
                service_account: service_account.clone(),
                scope: cloud.key_vault_scope(),
            },
            Identity::ManagedIdentity { client_id } => IdentityKey::ManagedIdentity {
                endpoint: imds_endpoint.to_string(),
                client_id: client_id.clone(),
                resource: cloud.key_vault_resource.clone(),
            },
            Identity::ServicePrincipal {
                tenant_id,
                client_id,
                client_secret,
            } => IdentityKey::ServicePrincipal {
                authority: cloud.active_directory_endpoint.clone(),
                tenant_id: tenant_id.clone(),
                client_id: client_id.clone(),
                secret: SecretKeyPart(client_secret.clone()),
                scope: cloud.key_vault_scope(),
            },
        }
    }
}

/// A bearer token and when it must be refreshed.
#[derive(Clone)]
pub struct AccessToken {
    pub token: SecretString,
    pub expires_in: Duration,
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessToken")
            .field("token", &"[redacted]")
            .field("expires_in", &self.expires_in)
            .finish()
    }
}

struct CachedToken {
    token: SecretString,
    refresh_at: Instant,
}

type Slot = Arc<tokio::sync::Mutex<Option<CachedToken>>>;

/// Tokens per [`IdentityKey`], valid until shortly before expiry. Concurrent requests for the same identity wait
/// for one fetch instead of each asking Entra.
#[derive(Default)]
pub struct TokenCache {
    slots: Mutex<HashMap<IdentityKey, Slot>>,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache").finish_non_exhaustive()
    }
}

impl TokenCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// The cached token for `key`, or the result of `fetch` (cached when it succeeds).
    pub async fn get_or_fetch<F, Fut>(&self, key: IdentityKey, fetch: F) -> Result<SecretString, AuthError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<AccessToken, AuthError>>,
    {
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            // Forget identities whose tokens have run out, so the map does not grow with every pod ever seen.
            slots.retain(|_, s| {
                s.try_lock()
                    .map(|g| g.as_ref().is_none_or(|t| t.refresh_at > now))
                    .unwrap_or(true)
            });
            slots.entry(key).or_default().clone()
        };
        let mut guard = slot.lock().await;
        if let Some(cached) = guard.as_ref()
            && Instant::now() < cached.refresh_at
        {
            return Ok(cached.token.clone());
        }
        let fresh = fetch().await?;
        *guard = Some(CachedToken {
            token: fresh.token.clone(),
            refresh_at: Instant::now() + refresh_after(fresh.expires_in),
        });
        Ok(fresh.token)
    }
}

/// Gets Key Vault tokens for mounts.
pub struct Authenticator {
    http: reqwest::Client,
    cache: TokenCache,
    imds_endpoint: String,
    retry: RetryPolicy,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("imds_endpoint", &self.imds_endpoint)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    pub fn new(http: reqwest::Client, imds_endpoint: &str, retry: RetryPolicy) -> Self {
        Self {
            http,
            cache: TokenCache::new(),
            imds_endpoint: imds_endpoint.trim_end_matches('/').to_string(),
            retry,
        }
    }

    /// What a token for `identity` in `cloud` is bound to: reads made with that token are shared only under it.
    pub fn identity_key(&self, identity: &Identity, cloud: &CloudEnvironment) -> IdentityKey {
        IdentityKey::new(identity, cloud, &self.imds_endpoint)
    }

    /// A bearer token for Key Vault in `cloud` as `identity`.
    pub async fn key_vault_token(
        &self,
        identity: &Identity,
        cloud: &CloudEnvironment,
        deadline: Instant,
    ) -> Result<SecretString, AuthError> {
        let key = self.identity_key(identity, cloud);
        self.cache
            .get_or_fetch(key, || self.fetch(identity, cloud, deadline))
            .await
    }

    async fn fetch(
        &self,
        identity: &Identity,
        cloud: &CloudEnvironment,
        deadline: Instant,
    ) -> Result<AccessToken, AuthError> {
        match identity {
            Identity::WorkloadIdentity {
                tenant_id,
                client_id,
                assertion,
                ..
            } => {
                let form = vec![
                    ("grant_type", "client_credentials".to_string()),
                    ("client_id", client_id.clone()),
                    ("client_assertion_type", CLIENT_ASSERTION_TYPE.to_string()),
                    ("client_assertion", assertion.expose_secret().to_string()),
                    ("scope", cloud.key_vault_scope()),
                ];
                self.entra_token(cloud, tenant_id, client_id, form, deadline).await
            }
            Identity::ServicePrincipal {
                tenant_id,
                client_id,
                client_secret,
            } => {
                let form = vec![
                    ("grant_type", "client_credentials".to_string()),
                    ("client_id", client_id.clone()),
                    ("client_secret", client_secret.expose_secret().to_string()),
                    ("scope", cloud.key_vault_scope()),
                ];
                self.entra_token(cloud, tenant_id, client_id, form, deadline).await
            }
            Identity::ManagedIdentity { client_id } => self.imds_token(cloud, client_id.as_deref(), deadline).await,
        }
    }

    async fn entra_token(
        &self,
        cloud: &CloudEnvironment,
        tenant: &str,
        client_id: &str,
        form: Vec<(&'static str, String)>,
        deadline: Instant,
    ) -> Result<AccessToken, AuthError> {
        if tenant.is_empty()
            || !tenant
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
        {
            return Err(AuthError::InvalidTenant(tenant.to_string()));
        }
        let url = format!("{}{}/oauth2/v2.0/token", cloud.active_directory_endpoint, tenant);
        let outcome = send_with_retry(&self.retry, deadline, || self.http.post(&url).form(&form)).await;
        let (status, body) = read(outcome, &url).await?;
        // What the request proved itself with: Entra (or whatever answers in its place) may quote it back.
        let sent: Vec<&str> = form
            .iter()
            .filter(|(name, _)| matches!(*name, "client_assertion" | "client_secret"))
            .map(|(_, value)| value.as_str())
            .collect();
        let endpoint = TokenEndpoint::Entra {
            url: &url,
            tenant,
            client_id,
        };
        token_answer(&endpoint, status, &body, &sent, SystemTime::now())
    }

    async fn imds_token(
        &self,
        cloud: &CloudEnvironment,
        client_id: Option<&str>,
        deadline: Instant,
    ) -> Result<AccessToken, AuthError> {
        let url = format!("{}/metadata/identity/oauth2/token", self.imds_endpoint);
        let mut query = vec![
            ("api-version", IMDS_API_VERSION.to_string()),
            ("resource", cloud.key_vault_resource.clone()),
        ];
        if let Some(id) = client_id {
            query.push(("client_id", id.to_string()));
        }
        let outcome = send_with_retry(&self.retry, deadline, || {
            self.http.get(&url).query(&query).header("Metadata", "true")
        })
        .await;
        let (status, body) = read(outcome, &url).await?;
        token_answer(
            &TokenEndpoint::Imds { url: &url, client_id },
            status,
            &body,
            &[],
            SystemTime::now(),
        )
    }
}

async fn read(outcome: Outcome, url: &str) -> Result<(u16, Vec<u8>), AuthError> {
    match outcome {
        Outcome::Transport(e) => Err(AuthError::Transport {
            endpoint: url.to_string(),
            reason: error_chain(&e),
        }),
        Outcome::Response(resp) => {
            let status = resp.status().as_u16();
            let body = resp.bytes().await.map_err(|e| AuthError::Transport {
                endpoint: url.to_string(),
                reason: error_chain(&e),
            })?;
            Ok((status, body.to_vec()))
        }
    }
}

/// Who answered a token request, for the error that names them.
#[derive(Debug, Clone, Copy)]
pub(crate) enum TokenEndpoint<'a> {
    /// Entra's `{authority}{tenant}/oauth2/v2.0/token`.
    Entra {
        url: &'a str,
        tenant: &'a str,
        client_id: &'a str,
    },
    /// IMDS's `/metadata/identity/oauth2/token`.
    Imds { url: &'a str, client_id: Option<&'a str> },
}

/// Members of a token answer that are secret wherever they appear (an OAuth error body should carry none, but
/// whatever answers may put one there).
const ANSWER_SECRETS: &[&str] = &["access_token", "refresh_token", "id_token"];

/// What a token endpoint's answer (`status`, `body`) means: a token, or an error naming what is wrong. No error
/// text shows `sent` (the client assertion or client secret of the request) or a token of the body, even when
/// the server quotes them back; `now` places an `expires_on`.
pub(crate) fn token_answer(
    endpoint: &TokenEndpoint<'_>,
    status: u16,
    body: &[u8],
    sent: &[&str],
    now: SystemTime,
) -> Result<AccessToken, AuthError> {
    let url = match endpoint {
        TokenEndpoint::Entra { url, .. } | TokenEndpoint::Imds { url, .. } => *url,
    };
    if (200..300).contains(&status) {
        return parse_token(url, status, body, now);
    }
    let answered = json_secret_fields(body, ANSWER_SECRETS);
    let mut secrets: Vec<&str> = sent.to_vec();
    secrets.extend(answered.iter().map(String::as_str));
    let (error, description) = oauth_error(body, &secrets);
    Err(match endpoint {
        TokenEndpoint::Entra { tenant, client_id, .. } => AuthError::Entra {
            client_id: client_id.to_string(),
            tenant: tenant.to_string(),
            status,
            error,
            description,
        },
        TokenEndpoint::Imds { client_id, .. } => AuthError::Imds {
            for_client: client_id.map(|id| format!(" for client ID {id}")).unwrap_or_default(),
            status,
            error,
            description,
        },
    })
}

/// A successful token answer: `access_token` and its lifetime, from `expires_in` (seconds; Entra sends a number,
/// IMDS a string) or else `expires_on` (Unix seconds, a number or a string, as IMDS and Azure Arc send it).
fn parse_token(url: &str, status: u16, body: &[u8], now: SystemTime) -> Result<AccessToken, AuthError> {
    let bad = |reason: String| AuthError::BadResponse {
        endpoint: url.to_string(),
        status,
        reason,
    };
    // Members by name and kind only, never by value: the values are tokens, or sit beside one.
    let parsed: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| bad(format!("not an OAuth token response: {}", json_problem(&e))))?;
    let Some(answer) = parsed.as_object() else {
        return Err(bad(
            "not an OAuth token response: the body is JSON but not an object".into()
        ));
    };
    let token = match answer.get("access_token") {
        None => return Err(bad("access_token is missing".into())),
        Some(serde_json::Value::String(token)) if token.is_empty() => {
            return Err(bad("access_token is empty".into()));
        }
        Some(serde_json::Value::String(token)) => token,
        Some(_) => return Err(bad("access_token is not a string".into())),
    };
    let seconds = |member: &str| match answer.get(member) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::Number(n)) => n.as_u64().map(Some).ok_or(()),
        Some(serde_json::Value::String(s)) => s.trim().parse::<u64>().map(Some).map_err(|_| ()),
        Some(_) => Err(()),
    };
    let lifetime = match seconds("expires_in") {
        Ok(Some(0)) => return Err(bad("expires_in is 0: the token has already expired".into())),
        Ok(Some(secs)) => Duration::from_secs(secs),
        Err(()) => {
            return Err(bad(
                "expires_in is not a whole number of seconds (a number or a string of digits)".into(),
            ));
        }
        Ok(None) => match seconds("expires_on") {
            Ok(Some(at)) => {
                let now_secs = now.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
                match at.checked_sub(now_secs).filter(|left| *left > 0) {
                    Some(left) => Duration::from_secs(left),
                    None => {
                        return Err(bad(format!(
                            "expires_on {at} is not in the future (now is {now_secs}): the token has already expired"
                        )));
                    }
                }
            }
            Ok(None) => return Err(bad("neither expires_in nor expires_on is present".into())),
            Err(()) => {
                return Err(bad(
                    "expires_on is not a Unix time in whole seconds (a number or a string of digits)".into(),
                ));
            }
        },
    };
    Ok(AccessToken {
        token: SecretString::from(token.clone()),
        // A longer lifetime than any Entra or IMDS token has is wrong: trusting it would keep the token
        // past its real expiry (and a large one would overflow the refresh time).
        expires_in: lifetime.min(MAX_TOKEN_LIFETIME),
    })
}

/// `error` and `error_description` of an OAuth error body; the description carries Entra's `AADSTS` code. A body
/// that is not an OAuth error is shown as it came (its first 512 characters), for a proxy's or gateway's page.
/// Every one of `secrets` is redacted from both.
fn oauth_error(body: &[u8], secrets: &[&str]) -> (String, String) {
    #[derive(serde::Deserialize)]
    struct OAuthError {
        error: Option<String>,
        error_description: Option<String>,
    }
    // Redacted before whitespace is joined and the text cut, so that neither can split a secret and show part.
    let clean = |text: &str| {
        redact(
            &redact(text, secrets).split_whitespace().collect::<Vec<_>>().join(" "),
            secrets,
        )
    };
    match serde_json::from_slice::<OAuthError>(body) {
        Ok(e) => (
            e.error
                .map(|c| clean(&c))
                .filter(|c| !c.is_empty())
                .map(|c| format!(", {c}"))
                .unwrap_or_default(),
            e.error_description
                .map(|d| clean(&d))
                .filter(|d| !d.is_empty())
                .unwrap_or_else(|| "no error description".into()),
        ),
        Err(_) => {
            let text = clean(&String::from_utf8_lossy(body));
            // The cut can end on the space between two words.
            let text = text.chars().take(512).collect::<String>().trim_end().to_string();
            (
                String::new(),
                if text.is_empty() {
                    "empty response body".into()
                } else {
                    text
                },
            )
        }
    }
}

/// How long before its expiry a token of `lifetime` is refreshed: [`REFRESH_MARGIN`] before, or at half its
/// lifetime if that is sooner, and never later than [`MAX_TOKEN_LIFETIME`] (which also keeps the refresh
/// instant representable).
pub(crate) fn refresh_after(lifetime: Duration) -> Duration {
    let lifetime = lifetime.min(MAX_TOKEN_LIFETIME);
    lifetime.saturating_sub(REFRESH_MARGIN.min(lifetime / 2))
}

#[cfg(test)]
mod tests;
