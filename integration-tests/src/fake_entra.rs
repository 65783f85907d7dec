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

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Form, Json};
use http::{HeaderMap, Method, StatusCode, Uri};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::https_server::{LoopbackServer, ServerError, ServerTls};
use crate::issuer::{IssuerError, RsaSigningKey, random_uuid, unverified_claims, unverified_header};
use crate::traffic::{self, Fault, FaultAction, Traffic, TrafficLayer, traffic_middleware};

/// The assertion type `azure_identity` and every MSAL send for federated credentials.
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// Path of the token endpoint on IMDS.
pub const IMDS_TOKEN_PATH: &str = "/metadata/identity/oauth2/token";
/// IMDS api-versions the fake accepts for the identity endpoint.
pub const IMDS_API_VERSIONS: &[&str] = &[
    "2018-02-01",
    "2018-04-02",
    "2018-10-01",
    "2019-03-11",
    "2019-08-01",
    "2019-11-01",
    "2020-06-01",
    "2021-02-01",
];

#[derive(Debug, thiserror::Error)]
pub enum EntraError {
    #[error(transparent)]
    Server(#[from] ServerError),
    #[error(transparent)]
    Issuer(#[from] IssuerError),
}

/// A federated identity credential on an app registration (or user-assigned identity).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FederatedCredential {
    pub issuer: String,
    pub subject: String,
    pub audiences: Vec<String>,
}

impl FederatedCredential {
    /// A credential for a Kubernetes service account with the default audience `api://AzureADTokenExchange`.
    pub fn for_service_account(issuer: &str, namespace: &str, service_account: &str) -> Self {
        Self {
            issuer: issuer.to_string(),
            subject: format!("system:serviceaccount:{namespace}:{service_account}"),
            audiences: vec![wisp_shared::contract::workload_identity::DEFAULT_AUDIENCE.to_string()],
        }
    }
}

#[derive(Debug, Clone)]
struct App {
    object_id: String,
    secrets: Vec<String>,
    federated: Vec<FederatedCredential>,
}

#[derive(Debug, Default)]
struct ImdsNode {
    tenant: String,
    system_assigned: Option<String>,
    user_assigned: Vec<String>,
}

#[derive(Debug, Default)]
struct EntraState {
    tenants: BTreeSet<String>,
    resources: BTreeSet<String>,
    /// (tenant, client id) -> app
    apps: BTreeMap<(String, String), App>,
    /// issuer URL -> its JWKS
    issuers: BTreeMap<String, JwkSet>,
    imds: ImdsNode,
    token_lifetime: Duration,
}

struct Inner {
    host: String,
    key: RsaSigningKey,
    state: Mutex<EntraState>,
    traffic: Traffic,
    trace_counter: AtomicU64,
    https: Mutex<Option<LoopbackServer>>,
    imds: Mutex<Option<LoopbackServer>>,
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, EntraState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The running fake Entra + IMDS. Cheap to clone; the servers stop when the last clone is dropped.
#[derive(Clone)]
pub struct FakeEntra {
    inner: Arc<Inner>,
    https_addr: SocketAddr,
    imds_addr: SocketAddr,
}

impl std::fmt::Debug for FakeEntra {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeEntra")
            .field("host", &self.inner.host)
            .field("https_addr", &self.https_addr)
            .field("imds_addr", &self.imds_addr)
            .finish()
    }
}

impl FakeEntra {
    /// Starts Entra on HTTPS (certificate from `tls`, which must name `host`) and IMDS on plain HTTP, both on
    /// 127.0.0.1 with ephemeral ports. `host` is the authority host name clients use, e.g. `login.wisp.test`.
    pub async fn start(host: &str, tls: &ServerTls) -> Result<Self, EntraError> {
        let inner = Arc::new(Inner {
            host: host.to_ascii_lowercase(),
            key: RsaSigningKey::generate()?,
            state: Mutex::new(EntraState {
                token_lifetime: Duration::from_secs(3599),
                ..Default::default()
            }),
            traffic: Traffic::default(),
            trace_counter: AtomicU64::new(0),
            https: Mutex::new(None),
            imds: Mutex::new(None),
        });
        let entra_router = Router::new()
            .fallback(entra_handler)
            .layer(axum::middleware::from_fn_with_state(
                TrafficLayer {
                    traffic: inner.traffic.clone(),
                    key: |_, uri| uri.path().to_string(),
                },
                traffic_middleware,
            ))
            .with_state(inner.clone());
        let imds_router = Router::new()
            .route(IMDS_TOKEN_PATH, get(imds_handler))
            .layer(axum::middleware::from_fn_with_state(
                TrafficLayer {
                    traffic: inner.traffic.clone(),
                    key: |_, uri| format!("imds:{}", uri.path()),
                },
                traffic_middleware,
            ))
            .with_state(inner.clone());
        let https = LoopbackServer::https_pem(entra_router, tls).await?;
        let imds = LoopbackServer::http(imds_router)?;
        let (https_addr, imds_addr) = (https.addr(), imds.addr());
        *inner.https.lock().unwrap_or_else(|p| p.into_inner()) = Some(https);
        *inner.imds.lock().unwrap_or_else(|p| p.into_inner()) = Some(imds);
        Ok(Self {
            inner,
            https_addr,
            imds_addr,
        })
    }

    pub fn host(&self) -> &str {
        &self.inner.host
    }

    pub fn https_addr(&self) -> SocketAddr {
        self.https_addr
    }

    /// `https://{host}:{port}/`, the authority host to give `azure_identity` and `AZURE_AUTHORITY_HOST`.
    pub fn authority_host(&self) -> String {
        format!("https://{}:{}/", self.inner.host, self.https_addr.port())
    }

    pub fn imds_addr(&self) -> SocketAddr {
        self.imds_addr
    }

    /// `http://127.0.0.1:{port}`: use as an HTTP proxy for `http://169.254.169.254` requests.
    pub fn imds_proxy_url(&self) -> String {
        format!("http://{}", self.imds_addr)
    }

    /// The IMDS token endpoint on its real path, for direct calls.
    pub fn imds_token_url(&self) -> String {
        format!("http://{}{IMDS_TOKEN_PATH}", self.imds_addr)
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
        let mut state = self.inner.state();
        state.tenants.insert(tenant.to_string());
        state
            .apps
            .entry((tenant.to_string(), client_id.to_string()))
            .or_insert_with(|| App {
                object_id: random_uuid(),
                secrets: Vec::new(),
                federated: Vec::new(),
            })
            .object_id
            .clone()
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
        self.register_app(tenant, client_id);
        if let Some(app) = self
            .inner
            .state()
            .apps
            .get_mut(&(tenant.to_string(), client_id.to_string()))
        {
            app.secrets.push(secret.to_string());
        }
    }

    pub fn add_federated_credential(&self, tenant: &str, client_id: &str, credential: FederatedCredential) {
        self.register_app(tenant, client_id);
        if let Some(app) = self
            .inner
            .state()
            .apps
            .get_mut(&(tenant.to_string(), client_id.to_string()))
        {
            app.federated.push(credential);
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
        let body = self.inner.error_body("temporarily_unavailable", code, text, None);
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

/// An Entra error: status, `error`, AADSTS code and message (without the trace suffix).
struct EntraFailure {
    status: StatusCode,
    error: &'static str,
    code: u32,
    message: String,
}

fn fail(status: StatusCode, error: &'static str, code: u32, message: impl Into<String>) -> EntraFailure {
    EntraFailure {
        status,
        error,
        code,
        message: message.into(),
    }
}

fn entra_time(t: OffsetDateTime) -> String {
    // Entra's `timestamp` field: `2026-01-02 03:04:05Z`.
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

fn assertion_time(t: OffsetDateTime) -> String {
    // The times inside AADSTS700024 messages: .NET round-trip format with 7 fractional digits.
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.0000000Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

impl Inner {
    fn next_trace_id(&self) -> String {
        // Deterministic ids make error bodies assertable byte for byte.
        let n = self.trace_counter.fetch_add(1, Ordering::Relaxed) + 1;
        format!("00000000-0000-0000-0000-{n:012x}")
    }

    fn error_body(&self, error: &str, code: u32, message: &str, correlation: Option<&str>) -> Value {
        let now = entra_time(OffsetDateTime::now_utc());
        let trace_id = self.next_trace_id();
        let correlation_id = correlation.map(str::to_string).unwrap_or_else(|| trace_id.clone());
        json!({
            "error": error,
            "error_description": format!(
                "AADSTS{code}: {message} Trace ID: {trace_id} Correlation ID: {correlation_id} Timestamp: {now}"
            ),
            "error_codes": [code],
            "timestamp": now,
            "trace_id": trace_id,
            "correlation_id": correlation_id,
            "error_uri": format!("https://{}/error?code={code}", self.host),
        })
    }

    fn respond(&self, failure: EntraFailure, headers: &HeaderMap) -> Response {
        let correlation = headers.get("client-request-id").and_then(|v| v.to_str().ok());
        let body = self.error_body(failure.error, failure.code, &failure.message, correlation);
        (failure.status, Json(body)).into_response()
    }

    /// A v1.0 access token for `resource`, as Entra issues for Key Vault.
    fn access_token(
        &self,
        tenant: &str,
        client_id: &str,
        object_id: &str,
        resource: &str,
        appidacr: &str,
    ) -> Result<IssuedToken, IssuerError> {
        let lifetime = self.state().token_lifetime.as_secs();
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let sts = format!("https://sts.windows.net/{tenant}/");
        let claims = json!({
            "aud": resource,
            "iss": sts,
            "iat": now,
            "nbf": now,
            "exp": now.saturating_add_unsigned(lifetime),
            "appid": client_id,
            "appidacr": appidacr,
            "idp": sts,
            "oid": object_id,
            "sub": object_id,
            "tid": tenant,
            "uti": random_uuid(),
            "ver": "1.0",
        });
        Ok(IssuedToken {
            token: self.key.sign(&claims, Some("JWT"))?,
            issued_at: now,
            lifetime,
        })
    }
}

struct IssuedToken {
    token: String,
    issued_at: i64,
    lifetime: u64,
}

type Params = Vec<(String, String)>;

fn param<'a>(params: &'a Params, name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

fn missing(name: &str) -> EntraFailure {
    fail(
        StatusCode::BAD_REQUEST,
        "invalid_request",
        900144,
        format!("The request body must contain the following parameter: '{name}'."),
    )
}

async fn entra_handler(
    State(inner): State<Arc<Inner>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    form: Result<Form<Params>, axum::extract::rejection::FormRejection>,
) -> Response {
    let segments: Vec<&str> = uri.path().trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        [tenant, "oauth2", "v2.0", "token"] => {
            if method != Method::POST {
                let failure = fail(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    900561,
                    "The endpoint only accepts POST requests. Received a GET request.",
                );
                return inner.respond(failure, &headers);
            }
            let params = form.map(|Form(p)| p).unwrap_or_default();
            match token(&inner, tenant, &params) {
                Ok(body) => (StatusCode::OK, Json(body)).into_response(),
                Err(failure) => inner.respond(failure, &headers),
            }
        }
        [tenant, "v2.0", ".well-known", "openid-configuration"] if method == Method::GET => {
            if !inner.state().tenants.contains(*tenant) {
                return inner.respond(tenant_not_found(tenant), &headers);
            }
            let base = format!("https://{}", traffic::host_with_port(&headers, &uri));
            Json(json!({
                "token_endpoint": format!("{base}/{tenant}/oauth2/v2.0/token"),
                "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
                "jwks_uri": format!("{base}/{tenant}/discovery/v2.0/keys"),
                "response_modes_supported": ["query", "fragment", "form_post"],
                "subject_types_supported": ["pairwise"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
                "scopes_supported": ["openid", "profile", "email", "offline_access"],
                "issuer": format!("{base}/{tenant}/v2.0"),
                "request_uri_parameter_supported": false,
                "authorization_endpoint": format!("{base}/{tenant}/oauth2/v2.0/authorize"),
                "tenant_region_scope": null,
            }))
            .into_response()
        }
        [_, "discovery", "v2.0", "keys"] | ["common", "discovery", "keys"] if method == Method::GET => {
            Json(inner.key.jwks()).into_response()
        }
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

fn tenant_not_found(tenant: &str) -> EntraFailure {
    fail(
        StatusCode::BAD_REQUEST,
        "invalid_request",
        90002,
        format!(
            "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the \
             correct cloud. Check with your subscription administrator, this may happen if there are no active \
             subscriptions for the tenant."
        ),
    )
}

fn token(inner: &Inner, tenant: &str, params: &Params) -> Result<Value, EntraFailure> {
    let grant_type = param(params, "grant_type").ok_or_else(|| missing("grant_type"))?;
    if !inner.state().tenants.contains(tenant) {
        return Err(tenant_not_found(tenant));
    }
    let client_id = param(params, "client_id").ok_or_else(|| missing("client_id"))?;
    if grant_type != "client_credentials" {
        return Err(fail(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            70003,
            format!("The app requested an unsupported grant type '{grant_type}'."),
        ));
    }
    let scope = param(params, "scope").ok_or_else(|| missing("scope"))?;
    let resource = resource_of_scope(inner, tenant, scope)?;
    let app = inner.state().apps.get(&(tenant.to_string(), client_id.to_string())).cloned().ok_or_else(|| {
        fail(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700016,
            format!(
                "Application with identifier '{client_id}' was not found in the directory '{tenant}'. This can happen \
                 if the application has not been installed by the administrator of the tenant or consented to by any \
                 user in the tenant. You may have sent your authentication request to the wrong tenant."
            ),
        )
    })?;
    let appidacr = match (param(params, "client_assertion"), param(params, "client_secret")) {
        (Some(assertion), _) => {
            if param(params, "client_assertion_type") != Some(JWT_BEARER) {
                return Err(fail(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    900144,
                    "The request body must contain the following parameter: 'client_assertion_type'.",
                ));
            }
            verify_assertion(inner, &app, assertion)?;
            "2"
        }
        (None, Some(secret)) => {
            if !app.secrets.iter().any(|s| s == secret) {
                return Err(fail(
                    StatusCode::UNAUTHORIZED,
                    "invalid_client",
                    7000215,
                    format!(
                        "Invalid client secret provided. Ensure the secret being sent in the request is the client \
                         secret value, not the client secret ID, for a secret added to app '{client_id}'."
                    ),
                ));
            }
            "1"
        }
        (None, None) => {
            return Err(fail(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                7000218,
                "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
            ));
        }
    };
    let issued = inner
        .access_token(tenant, client_id, &app.object_id, &resource, appidacr)
        .map_err(|e| fail(StatusCode::INTERNAL_SERVER_ERROR, "server_error", 50000, e.to_string()))?;
    Ok(json!({
        "token_type": "Bearer",
        "expires_in": issued.lifetime,
        "ext_expires_in": issued.lifetime,
        "access_token": issued.token,
    }))
}

fn resource_of_scope(inner: &Inner, tenant: &str, scope: &str) -> Result<String, EntraFailure> {
    let Some(resource) = scope
        .strip_suffix("/.default")
        .filter(|r| !r.is_empty() && !scope.contains(' '))
    else {
        return Err(fail(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            1002012,
            format!(
                "The provided value for scope {scope} is not valid. Client credential flows must have a scope value \
                 with /.default suffixed to the resource identifier (application ID URI)."
            ),
        ));
    };
    let resource = resource.trim_end_matches('/').to_string();
    if !inner.state().resources.contains(&resource) {
        return Err(resource_not_found(&resource, tenant));
    }
    Ok(resource)
}

fn resource_not_found(resource: &str, tenant: &str) -> EntraFailure {
    fail(
        StatusCode::BAD_REQUEST,
        "invalid_resource",
        500011,
        format!(
            "The resource principal named {resource} was not found in the tenant named {tenant}. This can happen if \
             the application has not been installed by the administrator of the tenant or consented to by any user \
             in the tenant. You might have sent your authentication request to the wrong tenant."
        ),
    )
}

fn invalid_client(code: u32, message: String) -> EntraFailure {
    fail(StatusCode::UNAUTHORIZED, "invalid_client", code, message)
}

const FIC_HINT: &str = "Please check your federated identity credential Subject, Audience and Issuer against the \
                        presented assertion. https://learn.microsoft.com/entra/workload-id/workload-identity-federation";

fn verify_assertion(inner: &Inner, app: &App, assertion: &str) -> Result<(), EntraFailure> {
    let malformed = || invalid_client(50027, "JWT token is invalid or malformed.".to_string());
    let header = unverified_header(assertion).ok_or_else(malformed)?;
    let claims = unverified_claims(assertion).ok_or_else(malformed)?;
    let issuer = claims
        .get("iss")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let subject = claims
        .get("sub")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let audiences: Vec<String> = match claims.get("aud") {
        Some(Value::String(a)) => vec![a.clone()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).map(str::to_string).collect(),
        _ => Vec::new(),
    };
    let by_issuer: Vec<&FederatedCredential> = app.federated.iter().filter(|f| f.issuer == issuer).collect();
    if by_issuer.is_empty() {
        return Err(invalid_client(
            700211,
            format!(
                "No matching federated identity record found for presented assertion issuer '{issuer}'. {FIC_HINT}"
            ),
        ));
    }
    // Entra compares subjects case-sensitively.
    let by_subject: Vec<&&FederatedCredential> = by_issuer.iter().filter(|f| f.subject == subject).collect();
    if by_subject.is_empty() {
        return Err(invalid_client(
            700213,
            format!(
                "No matching federated identity record found for presented assertion subject '{subject}'. Please note \
                 that the matching is done using a case-sensitive comparison. {FIC_HINT}"
            ),
        ));
    }
    if !by_subject
        .iter()
        .any(|f| f.audiences.iter().any(|a| audiences.contains(a)))
    {
        return Err(invalid_client(
            700212,
            format!(
                "No matching federated identity record found for presented assertion audience '{}'. {FIC_HINT}",
                audiences.join(",")
            ),
        ));
    }
    let jwks = inner.state().issuers.get(&issuer).cloned().ok_or_else(|| {
        invalid_client(
            50166,
            format!("Request to External OIDC endpoint failed. Issuer '{issuer}' has no reachable JWKS."),
        )
    })?;
    let kid = header.get("kid").and_then(Value::as_str);
    if header.get("alg").and_then(Value::as_str) != Some("RS256") {
        return Err(malformed());
    }
    let jwk = jwks.keys.iter().find(|k| k.common.key_id.as_deref() == kid).ok_or_else(|| {
        invalid_client(
            700027,
            format!(
                "The certificate with identifier used to sign the client assertion is not registered on application. \
                 [Reason - The key was not found., Thumbprint of key used by client: '{}', Please visit the Azure \
                 Portal, Graph Explorer or directly use MS Graph to see configured keys for app Id '{}'.]",
                kid.unwrap_or_default(),
                issuer
            ),
        )
    })?;
    let key = DecodingKey::from_jwk(jwk).map_err(|_| malformed())?;
    let mut validation = Validation::new(Algorithm::RS256);
    // Times are checked below with Entra's own message; audience and issuer were matched above.
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    jsonwebtoken::decode::<Value>(assertion, &key, &validation).map_err(|_| {
        invalid_client(
            7000274,
            "Key was found, but use of the key to verify the signature failed.".to_string(),
        )
    })?;
    let now = OffsetDateTime::now_utc();
    let time = |name: &str| {
        claims
            .get(name)
            .and_then(Value::as_i64)
            .and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok())
    };
    let exp = time("exp").ok_or_else(malformed)?;
    let nbf = time("nbf").or_else(|| time("iat")).unwrap_or(exp);
    // Entra allows five minutes of clock skew on both ends.
    let skew = time::Duration::minutes(5);
    if exp + skew <= now || nbf - skew > now {
        return Err(invalid_client(
            700024,
            format!(
                "Client assertion is not within its valid time range. Current time: {}, assertion valid from {}, \
                 expiry time of assertion {}. Review the documentation at \
                 https://learn.microsoft.com/entra/identity-platform/certificate-credentials .",
                assertion_time(now),
                assertion_time(nbf),
                assertion_time(exp)
            ),
        ));
    }
    Ok(())
}

fn imds_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        Json(json!({ "error": error, "error_description": description })),
    )
        .into_response()
}

async fn imds_handler(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    let metadata = headers.get("metadata").and_then(|v| v.to_str().ok());
    if !metadata.is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return imds_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Required metadata header not specified",
        );
    }
    let Some(api_version) = param(&query, "api-version") else {
        return imds_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Required query variable 'api-version' is missing",
        );
    };
    if !IMDS_API_VERSIONS.contains(&api_version) {
        return imds_error(StatusCode::BAD_REQUEST, "invalid_request", "Invalid api-version");
    }
    let Some(resource) = param(&query, "resource") else {
        return imds_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Required audience parameter not specified",
        );
    };
    let resource = resource.trim_end_matches('/').to_string();
    let (tenant, client_id, object_id) = {
        let state = inner.state();
        let node = &state.imds;
        let object_of = |client: &str| {
            state
                .apps
                .get(&(node.tenant.clone(), client.to_string()))
                .map(|a| a.object_id.clone())
        };
        let all: Vec<&String> = node.system_assigned.iter().chain(node.user_assigned.iter()).collect();
        let chosen = if let Some(client) = param(&query, "client_id") {
            all.into_iter().find(|c| c.as_str() == client).cloned()
        } else if let Some(object) = param(&query, "object_id").or_else(|| param(&query, "principal_id")) {
            all.into_iter()
                .find(|c| object_of(c).as_deref() == Some(object))
                .cloned()
        } else if param(&query, "msi_res_id").is_some() || param(&query, "mi_res_id").is_some() {
            None
        } else if let Some(system) = &node.system_assigned {
            Some(system.clone())
        } else if node.user_assigned.len() > 1 {
            return imds_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "Multiple user assigned identities exist, please specify the clientId / resourceId of the identity in the token request",
            );
        } else {
            node.user_assigned.first().cloned()
        };
        let Some(client_id) = chosen else {
            return imds_error(StatusCode::BAD_REQUEST, "invalid_request", "Identity not found");
        };
        let Some(object_id) = object_of(&client_id) else {
            return imds_error(StatusCode::BAD_REQUEST, "invalid_request", "Identity not found");
        };
        if !state.resources.contains(&resource) {
            let failure = resource_not_found(&resource, &node.tenant);
            return imds_error(
                StatusCode::BAD_REQUEST,
                failure.error,
                &format!("AADSTS{}: {}", failure.code, failure.message),
            );
        }
        (node.tenant.clone(), client_id, object_id)
    };
    match inner.access_token(&tenant, &client_id, &object_id, &resource, "2") {
        // IMDS sends every number as a string.
        Ok(issued) => Json(json!({
            "access_token": issued.token,
            "client_id": client_id,
            "expires_in": issued.lifetime.to_string(),
            "expires_on": issued.issued_at.saturating_add_unsigned(issued.lifetime).to_string(),
            "ext_expires_in": issued.lifetime.to_string(),
            "not_before": issued.issued_at.to_string(),
            "resource": resource,
            "token_type": "Bearer",
        }))
        .into_response(),
        Err(e) => imds_error(StatusCode::INTERNAL_SERVER_ERROR, "server_error", &e.to_string()),
    }
}
