//! The fake Entra's model and rules, with no HTTP: tenants, resources, app registrations with their secrets
//! and federated credentials, trusted issuers, the node IMDS runs on; how a client-credentials request is
//! judged (Entra's AADSTS errors), how a federated assertion is verified, which identity IMDS picks, and the
//! access tokens issued.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use http::StatusCode;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::issuer::{IssuerError, RsaSigningKey, random_uuid, unverified_claims, unverified_header};
use crate::traffic::Traffic;

/// The assertion type `azure_identity` and every MSAL send for federated credentials.
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
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
pub(super) struct App {
    pub(super) object_id: String,
    pub(super) secrets: Vec<String>,
    pub(super) federated: Vec<FederatedCredential>,
}

#[derive(Debug, Default)]
pub(super) struct ImdsNode {
    pub(super) tenant: String,
    pub(super) system_assigned: Option<String>,
    pub(super) user_assigned: Vec<String>,
}

#[derive(Debug, Default)]
pub(super) struct EntraState {
    pub(super) tenants: BTreeSet<String>,
    pub(super) resources: BTreeSet<String>,
    /// (tenant, client id) -> app
    pub(super) apps: BTreeMap<(String, String), App>,
    /// issuer URL -> its JWKS
    pub(super) issuers: BTreeMap<String, JwkSet>,
    pub(super) imds: ImdsNode,
    pub(super) token_lifetime: Duration,
}

impl EntraState {
    /// Registers an app (or user-assigned identity) in a tenant; returns its object id.
    pub(super) fn register_app(&mut self, tenant: &str, client_id: &str) -> String {
        self.tenants.insert(tenant.to_string());
        self.apps
            .entry((tenant.to_string(), client_id.to_string()))
            .or_insert_with(|| App {
                object_id: random_uuid(),
                secrets: Vec::new(),
                federated: Vec::new(),
            })
            .object_id
            .clone()
    }
}

/// The service behind the wire: its host name, signing key, model and traffic.
pub(super) struct Service {
    pub(super) host: String,
    pub(super) key: RsaSigningKey,
    pub(super) state: Mutex<EntraState>,
    pub(super) traffic: Traffic,
    pub(super) trace_counter: AtomicU64,
}

impl Service {
    pub(super) fn state(&self) -> MutexGuard<'_, EntraState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn next_trace_id(&self) -> String {
        // Deterministic ids make error bodies assertable byte for byte.
        let n = self.trace_counter.fetch_add(1, Ordering::Relaxed) + 1;
        format!("00000000-0000-0000-0000-{n:012x}")
    }

    /// A v1.0 access token for `resource`, as Entra issues for Key Vault.
    pub(super) fn access_token(
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

/// An Entra error: status, `error`, AADSTS code and message (without the trace suffix).
pub(super) struct EntraFailure {
    pub(super) status: StatusCode,
    pub(super) error: &'static str,
    pub(super) code: u32,
    pub(super) message: String,
}

pub(super) fn fail(status: StatusCode, error: &'static str, code: u32, message: impl Into<String>) -> EntraFailure {
    EntraFailure {
        status,
        error,
        code,
        message: message.into(),
    }
}

pub(super) struct IssuedToken {
    pub(super) token: String,
    pub(super) issued_at: i64,
    pub(super) lifetime: u64,
}

pub(super) type Params = Vec<(String, String)>;

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

pub(super) fn tenant_not_found(tenant: &str) -> EntraFailure {
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

pub(super) fn token(inner: &Service, tenant: &str, params: &Params) -> Result<Value, EntraFailure> {
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

fn resource_of_scope(inner: &Service, tenant: &str, scope: &str) -> Result<String, EntraFailure> {
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

fn verify_assertion(inner: &Service, app: &App, assertion: &str) -> Result<(), EntraFailure> {
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

fn assertion_time(t: OffsetDateTime) -> String {
    // The times inside AADSTS700024 messages: .NET round-trip format with 7 fractional digits.
    utc_time(t, 'T', ".0000000Z")
}

/// `t` as `YYYY-MM-DD{separator}hh:mm:ss{suffix}`, the shapes of Entra's times.
pub(super) fn utc_time(t: OffsetDateTime, separator: char, suffix: &str) -> String {
    format!(
        "{:04}-{:02}-{:02}{separator}{:02}:{:02}:{:02}{suffix}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Why IMDS refuses a token request: the status, `error` and `error_description` of its answer.
pub(super) struct ImdsRefusal {
    pub(super) status: StatusCode,
    pub(super) error: String,
    pub(super) description: String,
}

fn refusal(status: StatusCode, error: &str, description: &str) -> ImdsRefusal {
    ImdsRefusal {
        status,
        error: error.to_string(),
        description: description.to_string(),
    }
}

/// IMDS's answer to a token request with `query` (its `Metadata: true` header checked): the identity it picks
/// among the node's (by client id, object id, or the only or system-assigned one) and its token for the resource.
pub(super) fn imds_token(service: &Service, query: &Params) -> Result<Value, ImdsRefusal> {
    let Some(api_version) = param(query, "api-version") else {
        return Err(refusal(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Required query variable 'api-version' is missing",
        ));
    };
    if !IMDS_API_VERSIONS.contains(&api_version) {
        return Err(refusal(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Invalid api-version",
        ));
    }
    let Some(resource) = param(query, "resource") else {
        return Err(refusal(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Required audience parameter not specified",
        ));
    };
    let resource = resource.trim_end_matches('/').to_string();
    let (tenant, client_id, object_id) = {
        let state = service.state();
        let node = &state.imds;
        let object_of = |client: &str| {
            state
                .apps
                .get(&(node.tenant.clone(), client.to_string()))
                .map(|a| a.object_id.clone())
        };
        let all: Vec<&String> = node.system_assigned.iter().chain(node.user_assigned.iter()).collect();
        let chosen = if let Some(client) = param(query, "client_id") {
            all.into_iter().find(|c| c.as_str() == client).cloned()
        } else if let Some(object) = param(query, "object_id").or_else(|| param(query, "principal_id")) {
            all.into_iter()
                .find(|c| object_of(c).as_deref() == Some(object))
                .cloned()
        } else if param(query, "msi_res_id").is_some() || param(query, "mi_res_id").is_some() {
            None
        } else if let Some(system) = &node.system_assigned {
            Some(system.clone())
        } else if node.user_assigned.len() > 1 {
            return Err(refusal(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "Multiple user assigned identities exist, please specify the clientId / resourceId of the identity in the token request",
            ));
        } else {
            node.user_assigned.first().cloned()
        };
        let Some(client_id) = chosen else {
            return Err(refusal(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "Identity not found",
            ));
        };
        let Some(object_id) = object_of(&client_id) else {
            return Err(refusal(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "Identity not found",
            ));
        };
        if !state.resources.contains(&resource) {
            let failure = resource_not_found(&resource, &node.tenant);
            return Err(refusal(
                StatusCode::BAD_REQUEST,
                failure.error,
                &format!("AADSTS{}: {}", failure.code, failure.message),
            ));
        }
        (node.tenant.clone(), client_id, object_id)
    };
    match service.access_token(&tenant, &client_id, &object_id, &resource, "2") {
        // IMDS sends every number as a string.
        Ok(issued) => Ok(json!({
            "access_token": issued.token,
            "client_id": client_id,
            "expires_in": issued.lifetime.to_string(),
            "expires_on": issued.issued_at.saturating_add_unsigned(issued.lifetime).to_string(),
            "ext_expires_in": issued.lifetime.to_string(),
            "not_before": issued.issued_at.to_string(),
            "resource": resource,
            "token_type": "Bearer",
        })),
        Err(e) => Err(refusal(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            &e.to_string(),
        )),
    }
}
