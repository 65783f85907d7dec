//! A fake Microsoft Entra ID (HTTPS) and Azure Instance Metadata Service (plain HTTP), enforcing the rules
//! of the real services that wisp depends on.
//!
//! Entra: `POST /{tenant}/oauth2/v2.0/token` with `grant_type=client_credentials` and either a federated
//! `client_assertion` (verified against a trusted issuer's JWKS and the app's federated identity credentials)
//! or a `client_secret`; OIDC discovery; the JWKS of the key that signs its access tokens (v1.0 tokens, as
//! Entra issues for Key Vault). Errors carry Entra's JSON shape and AADSTS codes.
//!
//! IMDS: `GET /metadata/identity/oauth2/token` with `Metadata: true`. `azure_identity` 1.x's
//! `ManagedIdentityCredential` (VM source) always calls `http://169.254.169.254/metadata/identity/oauth2/token`
//! (no environment variable moves it; `IDENTITY_ENDPOINT` switches to the App Service protocol instead, and
//! `AZURE_POD_IDENTITY_AUTHORITY_HOST` is not read by the Rust SDK), so a client reaches this fake through an
//! HTTP proxy: the SDK's default `reqwest` transport honours `HTTP_PROXY`, so a process run with
//! `HTTP_PROXY=`[`FakeEntra::imds_proxy_url`] (and no `NO_PROXY` entry for 169.254.169.254) sends the
//! absolute-form request here; a custom transport does the same with `reqwest::Proxy::http(imds_proxy_url)`.
//! Only plain-http requests go to the proxy, so HTTPS calls to Entra and Key Vault are unaffected.

mod state;
mod wire;

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::StatusCode;
use jsonwebtoken::jwk::JwkSet;

use crate::https_server::{LoopbackServer, ServerError, ServerTls};
use crate::issuer::{IssuerError, RsaSigningKey};
use crate::traffic::{Fault, FaultAction, Traffic};
use state::{App, EntraState, ImdsNode, Service};
pub use state::{FederatedCredential, IMDS_API_VERSIONS, JWT_BEARER};
pub use wire::IMDS_TOKEN_PATH;

#[derive(Debug, thiserror::Error)]
pub enum EntraError {
    #[error(transparent)]
    Server(#[from] ServerError),
    #[error(transparent)]
    Issuer(#[from] IssuerError),
}

/// The running fake Entra + IMDS. Cheap to clone; the servers stop when the last clone is dropped.
#[derive(Clone)]
pub struct FakeEntra {
    inner: Arc<Service>,
    https: Arc<LoopbackServer>,
    imds: Arc<LoopbackServer>,
}

impl std::fmt::Debug for FakeEntra {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeEntra")
            .field("host", &self.inner.host)
            .field("https_addr", &self.https.addr())
            .field("imds_addr", &self.imds.addr())
            .finish()
    }
}

impl FakeEntra {
    /// Starts Entra on HTTPS (certificate from `tls`, which must name `host`) and IMDS on plain HTTP, both on
    /// 127.0.0.1 with ephemeral ports. `host` is the authority host name clients use, e.g. `login.wisp.test`.
    pub async fn start(host: &str, tls: &ServerTls) -> Result<Self, EntraError> {
        let inner = Arc::new(Service {
            host: host.to_ascii_lowercase(),
            key: RsaSigningKey::generate()?,
            state: Mutex::new(EntraState {
                token_lifetime: Duration::from_secs(3599),
                ..Default::default()
            }),
            traffic: Traffic::default(),
            trace_counter: AtomicU64::new(0),
        });
        let https = LoopbackServer::https_pem(wire::entra_router(inner.clone()), tls).await?;
        let imds = LoopbackServer::http(wire::imds_router(inner.clone()))?;
        Ok(Self {
            inner,
            https: Arc::new(https),
            imds: Arc::new(imds),
        })
    }

    pub fn host(&self) -> &str {
        &self.inner.host
    }

    pub fn https_addr(&self) -> SocketAddr {
        self.https.addr()
    }

    /// `https://{host}:{port}/`, the authority host to give `azure_identity` and `AZURE_AUTHORITY_HOST`.
    pub fn authority_host(&self) -> String {
        format!("https://{}:{}/", self.inner.host, self.https.port())
    }

    pub fn imds_addr(&self) -> SocketAddr {
        self.imds.addr()
    }

    /// `http://127.0.0.1:{port}`: use as an HTTP proxy for `http://169.254.169.254` requests.
    pub fn imds_proxy_url(&self) -> String {
        format!("http://{}", self.imds.addr())
    }

    /// The IMDS token endpoint on its real path, for direct calls.
    pub fn imds_token_url(&self) -> String {
        format!("http://{}{IMDS_TOKEN_PATH}", self.imds.addr())
    }

    /// The JWKS of the key that signs this fake's access tokens (what Key Vault uses to verify them).
    pub fn jwks(&self) -> JwkSet {
        self.inner.key.jwks()
    }

    pub fn add_tenant(&self, tenant: &str) {
        self.inner.state().tenants.insert(tenant.to_string());
    }

    /// Registers a resource (e.g. `https://vault.wisp.test`) that tokens may be requested for.
    pub fn add_resource(&self, resource: &str) {
        self.inner
            .state()
            .resources
            .insert(resource.trim_end_matches('/').to_string());
    }

    /// Registers an app (or user-assigned identity) in a tenant; returns its object id.
    pub fn register_app(&self, tenant: &str, client_id: &str) -> String {
        self.inner.state().register_app(tenant, client_id)
    }

    /// The object id of a registered app.
    pub fn object_id(&self, tenant: &str, client_id: &str) -> Option<String> {
        self.inner
            .state()
            .apps
            .get(&(tenant.to_string(), client_id.to_string()))
            .map(|a| a.object_id.clone())
    }

    pub fn add_client_secret(&self, tenant: &str, client_id: &str, secret: &str) {
        self.with_app(tenant, client_id, |app| app.secrets.push(secret.to_string()));
    }

    pub fn add_federated_credential(&self, tenant: &str, client_id: &str, credential: FederatedCredential) {
        self.with_app(tenant, client_id, |app| app.federated.push(credential));
    }

    /// Changes the app `client_id` of `tenant`, registering it first if needed.
    fn with_app(&self, tenant: &str, client_id: &str, change: impl FnOnce(&mut App)) {
        let mut state = self.inner.state();
        state.register_app(tenant, client_id);
        if let Some(app) = state.apps.get_mut(&(tenant.to_string(), client_id.to_string())) {
            change(app);
        }
    }

    /// Makes an OIDC issuer's keys known (Entra would fetch them from the issuer's discovery document).
    pub fn trust_issuer(&self, issuer: &str, jwks: JwkSet) {
        self.inner.state().issuers.insert(issuer.to_string(), jwks);
    }

    /// The node IMDS runs on: its tenant, system-assigned identity (client id) and user-assigned identities.
    /// Every identity is registered as an app in `tenant`.
    pub fn set_node_identities(&self, tenant: &str, system_assigned: Option<&str>, user_assigned: &[&str]) {
        for client_id in system_assigned.iter().chain(user_assigned) {
            self.register_app(tenant, client_id);
        }
        let mut state = self.inner.state();
        state.imds = ImdsNode {
            tenant: tenant.to_string(),
            system_assigned: system_assigned.map(str::to_string),
            user_assigned: user_assigned.iter().map(|s| s.to_string()).collect(),
        };
    }

    /// Lifetime of issued access tokens (default 3599 s, Entra's usual `expires_in`).
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        self.inner.state().token_lifetime = lifetime;
    }

    /// An access token exactly as the token endpoint would issue it to a registered app, without a request
    /// (for tests that only need a valid Key Vault token).
    pub fn mint_access_token(&self, tenant: &str, client_id: &str, resource: &str) -> Result<String, EntraError> {
        let object_id = self.register_app(tenant, client_id);
        Ok(self
            .inner
            .access_token(tenant, client_id, &object_id, resource.trim_end_matches('/'), "2")?
            .token)
    }

    pub fn traffic(&self) -> &Traffic {
        &self.inner.traffic
    }

    /// Token endpoint calls for a tenant.
    pub fn token_requests(&self, tenant: &str) -> u64 {
        self.inner.traffic.count(&format!("/{tenant}/oauth2/v2.0/token"))
    }

    pub fn imds_requests(&self) -> u64 {
        self.inner.traffic.count(&format!("imds:{IMDS_TOKEN_PATH}"))
    }

    /// Makes the next `times` token requests for `tenant` fail with `status` and an Entra-shaped body
    /// (`temporarily_unavailable`, AADSTS50196 for 429, AADSTS90033 otherwise), with `Retry-After` when given.
    pub fn fail_token_requests(&self, tenant: &str, times: u32, status: StatusCode, retry_after: Option<u32>) {
        let (code, text) = if status == StatusCode::TOO_MANY_REQUESTS {
            (
                50196,
                "The server terminated an operation because it encountered a client request loop.",
            )
        } else {
            (90033, "A transient error has occurred. Please try again.")
        };
        let body = wire::error_body(&self.inner, "temporarily_unavailable", code, text, None);
        let mut headers = vec![(
            "content-type".to_string(),
            "application/json; charset=utf-8".to_string(),
        )];
        if let Some(secs) = retry_after {
            headers.push(("retry-after".to_string(), secs.to_string()));
        }
        self.inner.traffic.inject(Fault {
            key_prefix: format!("/{tenant}/oauth2/v2.0/token"),
            action: FaultAction::Respond {
                status,
                headers,
                body: body.to_string(),
            },
            times: Some(times),
        });
    }
}
