//! Who a SecretSync acts as, as a pod of its ServiceAccount would: a token for the ServiceAccount from the
//! TokenRequest API (audience `api://AzureADTokenExchange`) with the ServiceAccount's
//! `azure.workload.identity/client-id` and `tenant-id` annotations (defaults for a class that names no clientID or
//! tenant), and, for the service principal mode, the `clientid`/`clientsecret` Secret the SecretSync names in its
//! [`NODE_PUBLISH_SECRET_REF_ANNOTATION`] (a mount's `nodePublishSecretRef`).
//!
//! Both are cached per object: a ServiceAccount until half of its token's life has passed, a credentials Secret for
//! [`CREDENTIALS_TTL`]. A sync the provider failed forgets what it used ([`Identities::forget`]), so a fixed annotation, a
//! rotated client secret or a revoked token is read again at the retry.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use serde_json::json;
use tokio::time::Instant;
use wisp_agent::library::{WorkloadIdentityDefaults, error_chain};
use wisp_shared::contract::workload_identity::{CLIENT_ID_ANNOTATION, DEFAULT_AUDIENCE, TENANT_ID_ANNOTATION};
use zeroize::{Zeroize, Zeroizing};

/// The SecretSync annotation naming, in its namespace, the Secret of a service principal's `clientid` and
/// `clientsecret` (what a pod's CSI volume names in `nodePublishSecretRef`).
pub const NODE_PUBLISH_SECRET_REF_ANNOTATION: &str = "sync.wisp.dev/node-publish-secret-ref";
/// The label a credentials Secret must carry, as the upstream driver asks of `nodePublishSecretRef` Secrets: an
/// explicit opt-in, so that a SecretSync cannot make wisp-sync read any Secret of its namespace.
pub const USED_SECRET_LABEL: (&str, &str) = ("secrets-store.csi.k8s.io/used", "true");
/// How long a credentials Secret is used before it is read again.
pub const CREDENTIALS_TTL: Duration = Duration::from_secs(300);
/// Lifetime asked of a service-account token (the API server's minimum is ten minutes).
const TOKEN_LIFETIME_SECONDS: i64 = 3600;

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error(
        "ServiceAccount {namespace}/{name} not found; create it or fix spec.serviceAccountName (a SecretSync acts as \
         its ServiceAccount)"
    )]
    ServiceAccountMissing { namespace: String, name: String },
    #[error("failed to read ServiceAccount {namespace}/{name}: {reason}; wisp-sync needs get on serviceaccounts")]
    ServiceAccountUnreadable {
        namespace: String,
        name: String,
        reason: String,
    },
    #[error(
        "failed to get a token for ServiceAccount {namespace}/{name} (TokenRequest, audience {DEFAULT_AUDIENCE}): \
         {reason}; the ServiceAccount must exist and wisp-sync needs create on serviceaccounts/token"
    )]
    Token {
        namespace: String,
        name: String,
        reason: String,
    },
    #[error(
        "Secret {namespace}/{name} named by annotation {NODE_PUBLISH_SECRET_REF_ANNOTATION} not found; create it with \
         the service principal's clientid and clientsecret, or remove the annotation"
    )]
    CredentialsMissing { namespace: String, name: String },
    #[error(
        "Secret {namespace}/{name} named by annotation {NODE_PUBLISH_SECRET_REF_ANNOTATION} is not labelled {}={}; \
         label it to let wisp-sync use it as service principal credentials",
        USED_SECRET_LABEL.0,
        USED_SECRET_LABEL.1
    )]
    CredentialsNotLabelled { namespace: String, name: String },
    #[error(
        "failed to read Secret {namespace}/{name} named by annotation {NODE_PUBLISH_SECRET_REF_ANNOTATION}: {reason}; \
         wisp-sync needs get on secrets"
    )]
    CredentialsUnreadable {
        namespace: String,
        name: String,
        reason: String,
    },
}

impl IdentityError {
    /// Whether the SecretSync's own references are wrong (rather than the API server failing or refusing).
    pub fn is_user_input(&self) -> bool {
        matches!(
            self,
            Self::ServiceAccountMissing { .. } | Self::CredentialsMissing { .. } | Self::CredentialsNotLabelled { .. }
        )
    }
}

/// A ServiceAccount as a sync uses it: its token (as kubelet would pass it to a mount) and annotations.
pub struct Account {
    /// The `csi.storage.k8s.io/serviceAccount.tokens` JSON.
    pub tokens_json: Zeroizing<String>,
    client_id: Option<String>,
    tenant_id: Option<String>,
    refresh_at: Instant,
}

impl Account {
    /// The annotations, as defaults for what the class leaves out.
    pub fn workload_identity_defaults(&self) -> WorkloadIdentityDefaults<'_> {
        WorkloadIdentityDefaults {
            client_id: self.client_id.as_deref(),
            tenant_id: self.tenant_id.as_deref(),
        }
    }
}

/// A credentials Secret's data as text (as kubelet passes `nodePublishSecretRef` data), wiped when dropped.
pub struct Credentials {
    pub data: BTreeMap<String, String>,
    read_at: Instant,
}

impl Drop for Credentials {
    fn drop(&mut self) {
        self.data.values_mut().for_each(Zeroize::zeroize);
    }
}

type ObjectKey = (String, String);

/// The caches of ServiceAccounts and credentials Secrets.
pub struct Identities {
    client: kube::Client,
    accounts: Mutex<HashMap<ObjectKey, Arc<Account>>>,
    credentials: Mutex<HashMap<ObjectKey, Arc<Credentials>>>,
}

impl Identities {
    pub fn new(client: kube::Client) -> Self {
        Self {
            client,
            accounts: Mutex::new(HashMap::new()),
            credentials: Mutex::new(HashMap::new()),
        }
    }

    /// `namespace/name`'s annotations and a token, from the cache while at least half of the token's life remains.
    pub async fn account(&self, namespace: &str, name: &str) -> Result<Arc<Account>, IdentityError> {
        let key = (namespace.to_string(), name.to_string());
        let now = Instant::now();
        if let Some(cached) = lock(&self.accounts).get(&key).filter(|a| a.refresh_at > now) {
            return Ok(cached.clone());
        }
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), namespace);
        let account = match api.get_opt(name).await {
            Ok(Some(account)) => account,
            Ok(None) => {
                return Err(IdentityError::ServiceAccountMissing {
                    namespace: namespace.to_string(),
                    name: name.to_string(),
                });
            }
            Err(e) => {
                return Err(IdentityError::ServiceAccountUnreadable {
                    namespace: namespace.to_string(),
                    name: name.to_string(),
                    reason: error_chain(&e),
                });
            }
        };
        let annotation = |key: &str| {
            account
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(key))
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let (client_id, tenant_id) = (annotation(CLIENT_ID_ANNOTATION), annotation(TENANT_ID_ANNOTATION));
        let token_error = |reason: String| IdentityError::Token {
            namespace: namespace.to_string(),
            name: name.to_string(),
            reason,
        };
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: vec![DEFAULT_AUDIENCE.to_string()],
                expiration_seconds: Some(TOKEN_LIFETIME_SECONDS),
                bound_object_ref: None,
            },
            ..TokenRequest::default()
        };
        let issued = api
            .create_token_request(name, &PostParams::default(), &request)
            .await
            .map_err(|e| token_error(error_chain(&e)))?;
        let mut status = issued
            .status
            .ok_or_else(|| token_error("the TokenRequest answer has no status".to_string()))?;
        // An expiry already past (a skewed clock) means: ask again next time.
        let remaining =
            Duration::try_from(status.expiration_timestamp.0.duration_since(Timestamp::now())).unwrap_or_default();
        let tokens_json = Zeroizing::new(
            json!({ DEFAULT_AUDIENCE: {
                "token": status.token,
                "expirationTimestamp": status.expiration_timestamp,
            }})
            .to_string(),
        );
        status.token.zeroize();
        let cached = Arc::new(Account {
            tokens_json,
            client_id,
            tenant_id,
            refresh_at: now + remaining / 2,
        });
        lock(&self.accounts).insert(key, cached.clone());
        Ok(cached)
    }

    /// The data of the credentials Secret `namespace/name`, from the cache for [`CREDENTIALS_TTL`].
    pub async fn credentials(&self, namespace: &str, name: &str) -> Result<Arc<Credentials>, IdentityError> {
        let key = (namespace.to_string(), name.to_string());
        let now = Instant::now();
        if let Some(cached) = lock(&self.credentials)
            .get(&key)
            .filter(|c| now.duration_since(c.read_at) < CREDENTIALS_TTL)
        {
            return Ok(cached.clone());
        }
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        let secret = match api.get_opt(name).await {
            Ok(Some(secret)) => secret,
            Ok(None) => {
                return Err(IdentityError::CredentialsMissing {
                    namespace: namespace.to_string(),
                    name: name.to_string(),
                });
            }
            Err(e) => {
                return Err(IdentityError::CredentialsUnreadable {
                    namespace: namespace.to_string(),
                    name: name.to_string(),
                    reason: error_chain(&e),
                });
            }
        };
        let labelled = secret
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(USED_SECRET_LABEL.0))
            .is_some_and(|v| v == USED_SECRET_LABEL.1);
        if !labelled {
            return Err(IdentityError::CredentialsNotLabelled {
                namespace: namespace.to_string(),
                name: name.to_string(),
            });
        }
        let data = secret
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(key, mut value)| {
                let text = String::from_utf8_lossy(&value.0).into_owned();
                value.0.zeroize();
                (key, text)
            })
            .collect();
        let cached = Arc::new(Credentials { data, read_at: now });
        lock(&self.credentials).insert(key, cached.clone());
        Ok(cached)
    }

    /// Drops what a failed sync used, so that its retry reads the ServiceAccount, a new token and the
    /// credentials Secret again.
    pub fn forget(&self, namespace: &str, service_account: &str, credentials: Option<&str>) {
        lock(&self.accounts).remove(&(namespace.to_string(), service_account.to_string()));
        if let Some(secret) = credentials {
            lock(&self.credentials).remove(&(namespace.to_string(), secret.to_string()));
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
