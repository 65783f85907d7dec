//! A fake Azure Key Vault data plane (HTTPS): one server for many vaults, told apart by the `Host` header
//! `{vault}.{dns_suffix}`. It serves what wisp reads — secrets, keys and certificates by name and version, and
//! their version lists with `nextLink` paging — and enforces Key Vault's rules: `api-version`, a bearer token
//! signed by the fake Entra for the vault resource and the vault's tenant (401 with the real
//! `WWW-Authenticate` challenge otherwise), an access list per vault (403), disabled versions, Key Vault's
//! error bodies, and injected faults (429 with `Retry-After`, 500, latency, dropped connections).

pub mod material;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use crate::https_server::{LoopbackServer, ServerError, ServerTls};
use crate::issuer::{hex_lower, random_bytes, unverified_claims, unverified_header};
use crate::traffic::{self, Fault, FaultAction, Traffic, TrafficLayer};
pub use material::{CertContentType, CertificateSpec, EcCurve, KeyType, MaterialError};

/// The newest api-version the fake knows, named in Key Vault's "not recognized" error.
pub const LATEST_API_VERSION: &str = "2025-07-01";
/// api-versions accepted (7.4 and newer, as the brief of the fake requires).
pub const API_VERSIONS: &[&str] = &["7.4", "7.5", "7.6", LATEST_API_VERSION];
/// Key Vault's largest page for list operations.
pub const MAX_PAGE_SIZE: usize = 25;

#[derive(Debug, thiserror::Error)]
pub enum KeyVaultError {
    #[error(transparent)]
    Server(#[from] ServerError),
    #[error(transparent)]
    Material(#[from] MaterialError),
    #[error("vault {0:?} does not exist in the fake Key Vault; call add_vault first")]
    NoSuchVault(String),
    #[error("{kind} {name:?} version {version:?} does not exist in vault {vault:?}")]
    NoSuchVersion {
        vault: String,
        kind: &'static str,
        name: String,
        version: String,
    },
}

/// How the server is addressed and who it trusts.
#[derive(Debug, Clone)]
pub struct KeyVaultConfig {
    /// Vault hosts are `{vault}.{dns_suffix}`, e.g. `vault.wisp.test`.
    pub dns_suffix: String,
    /// The token audience, e.g. `https://vault.wisp.test` (the cloud's Key Vault resource).
    pub resource: String,
    /// Entra's authority host with a trailing `/`, put in the 401 challenge, e.g. `https://login.wisp.test:1234/`.
    pub authority_host: String,
    /// Largest page of version lists (1..=25); small values make clients follow `nextLink`.
    pub page_size: usize,
}

impl KeyVaultConfig {
    pub fn new(dns_suffix: &str, resource: &str, authority_host: &str) -> Self {
        let mut authority_host = authority_host.to_string();
        if !authority_host.ends_with('/') {
            authority_host.push('/');
        }
        Self {
            dns_suffix: dns_suffix.trim_start_matches('.').to_ascii_lowercase(),
            resource: resource.trim_end_matches('/').to_string(),
            authority_host,
            page_size: MAX_PAGE_SIZE,
        }
    }
}

/// Which collection an object lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ObjectKind {
    Secret,
    Key,
    Certificate,
}

impl ObjectKind {
    /// The URL collection segment.
    pub fn collection(self) -> &'static str {
        match self {
            ObjectKind::Secret => "secrets",
            ObjectKind::Key => "keys",
            ObjectKind::Certificate => "certificates",
        }
    }

    fn noun(self) -> &'static str {
        match self {
            ObjectKind::Secret => "secret",
            ObjectKind::Key => "key",
            ObjectKind::Certificate => "certificate",
        }
    }

    fn not_found_code(self) -> &'static str {
        match self {
            ObjectKind::Secret => "SecretNotFound",
            ObjectKind::Key => "KeyNotFound",
            ObjectKind::Certificate => "CertificateNotFound",
        }
    }
}

#[derive(Debug, Clone)]
struct Attributes {
    enabled: bool,
    created: i64,
    updated: i64,
    nbf: Option<i64>,
    exp: Option<i64>,
}

impl Attributes {
    fn now() -> Self {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        Self {
            enabled: true,
            created: now,
            updated: now,
            nbf: None,
            exp: None,
        }
    }

    fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("enabled".into(), json!(self.enabled));
        if let Some(nbf) = self.nbf {
            m.insert("nbf".into(), json!(nbf));
        }
        if let Some(exp) = self.exp {
            m.insert("exp".into(), json!(exp));
        }
        m.insert("created".into(), json!(self.created));
        m.insert("updated".into(), json!(self.updated));
        m.insert("recoveryLevel".into(), json!("Recoverable+Purgeable"));
        m.insert("recoverableDays".into(), json!(90));
        Value::Object(m)
    }
}

#[derive(Debug, Clone)]
struct SecretVersion {
    version: String,
    value: String,
    content_type: Option<String>,
    /// For certificate-backed secrets: the certificate's name (its key and secret share name and version).
    certificate: Option<String>,
    /// The PEM form of a PKCS#12 certificate secret, served for `outContentType=application/x-pem-file`.
    pem_form: Option<String>,
    attributes: Attributes,
}

#[derive(Debug, Clone)]
struct KeyVersion {
    version: String,
    jwk_fields: Map<String, Value>,
    key_ops: Vec<&'static str>,
    managed: bool,
    attributes: Attributes,
}

#[derive(Debug, Clone)]
struct CertVersion {
    version: String,
    cer: Vec<u8>,
    subject: String,
    dns_names: Vec<String>,
    key_type: KeyType,
    content_type: CertContentType,
    self_signed: bool,
    attributes: Attributes,
}

#[derive(Debug, Clone)]
struct Entry<T> {
    /// The name as created (Key Vault names are case-insensitive but keep their case in ids).
    name: String,
    versions: Vec<T>,
}

#[derive(Debug, Default)]
struct Vault {
    tenant: String,
    secrets: BTreeMap<String, Entry<SecretVersion>>,
    keys: BTreeMap<String, Entry<KeyVersion>>,
    certificates: BTreeMap<String, Entry<CertVersion>>,
    /// Client ids (appid) allowed to get and list everything.
    granted: BTreeSet<String>,
    /// The last `created` time handed out.
    last_created: i64,
}

impl Vault {
    /// Stamps a new version's `created`/`updated`: now, but strictly after the vault's previous version, so
    /// versions created within one second still sort by creation time as clients (provider-azure's
    /// `objectVersionHistory`) expect.
    fn stamp(&mut self, attributes: &mut Attributes) {
        let created = attributes.created.max(self.last_created + 1);
        self.last_created = created;
        attributes.created = created;
        attributes.updated = created;
    }
}

#[derive(Debug, Default)]
struct KvState {
    vaults: BTreeMap<String, Vault>,
}

struct Inner {
    config: KeyVaultConfig,
    entra_keys: JwkSet,
    state: Mutex<KvState>,
    traffic: Traffic,
    server: Mutex<Option<LoopbackServer>>,
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, KvState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What `add_rsa_key`/`add_ec_key` created.
#[derive(Debug, Clone)]
pub struct SeededKey {
    pub version: String,
    /// SubjectPublicKeyInfo DER of the key (what a PEM public key file holds).
    pub public_key_spki_der: Vec<u8>,
    /// The JWK fields without `kid`/`key_ops`.
    pub jwk_fields: Map<String, Value>,
}

/// What `add_certificate` created: the certificate, key and secret objects share name and version.
#[derive(Clone)]
pub struct SeededCertificate {
    pub version: String,
    /// Leaf first, then the issuing CA when the spec asked for one.
    pub chain_der: Vec<Vec<u8>>,
    pub private_key_pkcs8_der: Vec<u8>,
    pub public_key_spki_der: Vec<u8>,
    /// The certificate-backed secret's value as served.
    pub secret_value: String,
    pub pfx: Vec<u8>,
    pub pem_bundle: String,
    pub x5t: String,
    pub not_before: i64,
    pub not_after: i64,
}

impl std::fmt::Debug for SeededCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeededCertificate")
            .field("version", &self.version)
            .field("x5t", &self.x5t)
            .finish_non_exhaustive()
    }
}

/// A new Key Vault version id: 32 lower-case hex digits.
pub fn new_version() -> String {
    hex_lower(&random_bytes::<16>())
}

/// The running fake Key Vault. Cheap to clone; the server stops when the last clone is dropped.
#[derive(Clone)]
pub struct FakeKeyVault {
    inner: Arc<Inner>,
    addr: SocketAddr,
}

impl std::fmt::Debug for FakeKeyVault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeKeyVault")
            .field("config", &self.inner.config)
            .field("addr", &self.addr)
            .finish()
    }
}

fn traffic_key(headers: &HeaderMap, uri: &Uri) -> String {
    let host = traffic::host_without_port(headers, uri);
    let vault = host.split('.').next().unwrap_or_default().to_string();
    format!("{vault}{}", uri.path())
}

impl FakeKeyVault {
    /// Starts the server on 127.0.0.1 with an ephemeral port. `tls` must cover `*.{dns_suffix}`;
    /// `entra_keys` is the fake Entra's JWKS ([`crate::fake_entra::FakeEntra::jwks`]).
    pub async fn start(config: KeyVaultConfig, tls: &ServerTls, entra_keys: JwkSet) -> Result<Self, KeyVaultError> {
        let inner = Arc::new(Inner {
            config,
            entra_keys,
            state: Mutex::new(KvState::default()),
            traffic: Traffic::default(),
            server: Mutex::new(None),
        });
        let router = Router::new()
            .fallback(handler)
            .layer(axum::middleware::from_fn_with_state(
                TrafficLayer {
                    traffic: inner.traffic.clone(),
                    key: traffic_key,
                },
                traffic::traffic_middleware,
            ))
            .with_state(inner.clone());
        let running = LoopbackServer::https_pem(router, tls).await?;
        let addr = running.addr();
        *inner.server.lock().unwrap_or_else(|p| p.into_inner()) = Some(running);
        Ok(Self { inner, addr })
    }

    /// Starts a Key Vault that trusts `entra`: its challenge names `entra`'s authority host, it accepts tokens
    /// signed by `entra`, and `resource` is registered in `entra` so tokens can be requested for it.
    pub async fn start_for(
        entra: &crate::fake_entra::FakeEntra,
        dns_suffix: &str,
        resource: &str,
        tls: &ServerTls,
    ) -> Result<Self, KeyVaultError> {
        entra.add_resource(resource);
        Self::start(
            KeyVaultConfig::new(dns_suffix, resource, &entra.authority_host()),
            tls,
            entra.jwks(),
        )
        .await
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn config(&self) -> &KeyVaultConfig {
        &self.inner.config
    }

    /// `https://{vault}.{dns_suffix}:{port}/`, the vault URL clients use.
    pub fn vault_url(&self, vault: &str) -> String {
        format!(
            "https://{}.{}:{}/",
            vault.to_ascii_lowercase(),
            self.inner.config.dns_suffix,
            self.addr.port()
        )
    }

    /// `{vault}.{dns_suffix}`, to map to 127.0.0.1.
    pub fn vault_host(&self, vault: &str) -> String {
        format!("{}.{}", vault.to_ascii_lowercase(), self.inner.config.dns_suffix)
    }

    /// A go-autorest environment document (the `cloudEnvFileName` / `AZURE_ENVIRONMENT_FILEPATH` file of an
    /// `AzureStackCloud`) pointing at the fake Entra (this server's `authority_host`) and this server's vaults,
    /// the port carried in `keyVaultDNSSuffix`.
    pub fn cloud_environment_json(&self) -> Value {
        let config = &self.inner.config;
        json!({
            "name": "AzureStackCloud",
            "activeDirectoryEndpoint": config.authority_host,
            "keyVaultEndpoint": format!("{}/", config.resource),
            "keyVaultDNSSuffix": format!("{}:{}", config.dns_suffix, self.addr.port()),
            "resourceIdentifiers": { "keyVault": config.resource },
        })
    }

    /// Creates a vault in `tenant` (the tenant named in its 401 challenge and required of tokens).
    pub fn add_vault(&self, vault: &str, tenant: &str) {
        self.inner
            .state()
            .vaults
            .entry(vault.to_ascii_lowercase())
            .or_insert_with(|| Vault {
                tenant: tenant.to_string(),
                ..Default::default()
            });
    }

    /// Gives the app or managed identity with client id `client_id` get and list on everything in `vault`.
    pub fn grant(&self, client_id: &str, vault: &str) -> Result<(), KeyVaultError> {
        self.with_vault(vault, |v| {
            v.granted.insert(client_id.to_string());
        })
    }

    pub fn revoke(&self, client_id: &str, vault: &str) -> Result<(), KeyVaultError> {
        self.with_vault(vault, |v| {
            v.granted.remove(client_id);
        })
    }

    fn with_vault<R>(&self, vault: &str, f: impl FnOnce(&mut Vault) -> R) -> Result<R, KeyVaultError> {
        let mut state = self.inner.state();
        let v = state
            .vaults
            .get_mut(&vault.to_ascii_lowercase())
            .ok_or_else(|| KeyVaultError::NoSuchVault(vault.to_string()))?;
        Ok(f(v))
    }

    /// Adds a new (now latest) version of a secret; returns its version id.
    pub fn add_secret(
        &self,
        vault: &str,
        name: &str,
        value: &str,
        content_type: Option<&str>,
    ) -> Result<String, KeyVaultError> {
        let version = new_version();
        let mut secret = SecretVersion {
            version: version.clone(),
            value: value.to_string(),
            content_type: content_type.map(str::to_string),
            certificate: None,
            pem_form: None,
            attributes: Attributes::now(),
        };
        self.with_vault(vault, |v| {
            v.stamp(&mut secret.attributes);
            push_version(&mut v.secrets, name, secret)
        })?;
        Ok(version)
    }

    pub fn add_rsa_key(&self, vault: &str, name: &str) -> Result<SeededKey, KeyVaultError> {
        self.add_key(vault, name, KeyType::Rsa2048)
    }

    pub fn add_ec_key(&self, vault: &str, name: &str, curve: EcCurve) -> Result<SeededKey, KeyVaultError> {
        self.add_key(vault, name, KeyType::Ec(curve))
    }

    fn add_key(&self, vault: &str, name: &str, key_type: KeyType) -> Result<SeededKey, KeyVaultError> {
        let generated = material::generate_key(key_type)?;
        let version = new_version();
        let mut key = KeyVersion {
            version: version.clone(),
            jwk_fields: generated.jwk_fields.clone(),
            key_ops: key_ops(key_type),
            managed: false,
            attributes: Attributes::now(),
        };
        self.with_vault(vault, |v| {
            v.stamp(&mut key.attributes);
            push_version(&mut v.keys, name, key)
        })?;
        Ok(SeededKey {
            version,
            public_key_spki_der: generated.public_key_spki_der(),
            jwk_fields: generated.jwk_fields,
        })
    }

    /// Creates a certificate the way Key Vault does: a certificate object, plus a managed key and a managed
    /// secret of the same name and version (the secret holds the key and chain as PKCS#12 or PEM).
    pub fn add_certificate(
        &self,
        vault: &str,
        name: &str,
        spec: &CertificateSpec,
    ) -> Result<SeededCertificate, KeyVaultError> {
        let generated = material::generate_certificate(spec)?;
        let version = new_version();
        let leaf = generated.chain_der.first().cloned().unwrap_or_default();
        let mut attributes = Attributes::now();
        attributes.nbf = Some(generated.not_before.unix_timestamp());
        attributes.exp = Some(generated.not_after.unix_timestamp());
        let cert = CertVersion {
            version: version.clone(),
            cer: leaf.clone(),
            subject: format!("CN={}", spec.subject_cn),
            dns_names: spec.dns_names.clone(),
            key_type: spec.key_type,
            content_type: spec.content_type,
            self_signed: !spec.issued_by_ca,
            attributes: attributes.clone(),
        };
        let key = KeyVersion {
            version: version.clone(),
            jwk_fields: generated.key.jwk_fields.clone(),
            key_ops: key_ops(spec.key_type),
            managed: true,
            attributes: attributes.clone(),
        };
        let secret = SecretVersion {
            version: version.clone(),
            value: generated.secret_value.clone(),
            content_type: Some(spec.content_type.mime().to_string()),
            certificate: Some(name.to_string()),
            pem_form: (spec.content_type == CertContentType::Pkcs12).then(|| generated.pem_bundle.clone()),
            attributes,
        };
        self.with_vault(vault, |v| {
            let (mut cert, mut key, mut secret) = (cert, key, secret);
            v.stamp(&mut cert.attributes);
            for a in [&mut key.attributes, &mut secret.attributes] {
                a.created = cert.attributes.created;
                a.updated = cert.attributes.updated;
            }
            push_version(&mut v.certificates, name, cert);
            push_version(&mut v.keys, name, key);
            push_version(&mut v.secrets, name, secret);
        })?;
        Ok(SeededCertificate {
            version,
            x5t: material::x5t(&leaf),
            chain_der: generated.chain_der.clone(),
            private_key_pkcs8_der: generated.key.private_key_pkcs8_der(),
            public_key_spki_der: generated.key.public_key_spki_der(),
            secret_value: generated.secret_value.clone(),
            pfx: generated.pfx.clone(),
            pem_bundle: generated.pem_bundle.clone(),
            not_before: generated.not_before.unix_timestamp(),
            not_after: generated.not_after.unix_timestamp(),
        })
    }

    /// Disables one version. Disabling a certificate version disables its key and secret too, as Key Vault does.
    pub fn disable_version(
        &self,
        vault: &str,
        kind: ObjectKind,
        name: &str,
        version: &str,
    ) -> Result<(), KeyVaultError> {
        let missing = || KeyVaultError::NoSuchVersion {
            vault: vault.to_string(),
            kind: kind.noun(),
            name: name.to_string(),
            version: version.to_string(),
        };
        let mut state = self.inner.state();
        let v = state
            .vaults
            .get_mut(&vault.to_ascii_lowercase())
            .ok_or_else(|| KeyVaultError::NoSuchVault(vault.to_string()))?;
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let disable = |a: &mut Attributes| {
            a.enabled = false;
            a.updated = now;
        };
        let lname = name.to_ascii_lowercase();
        let found = match kind {
            ObjectKind::Secret => {
                find_version_mut(&mut v.secrets, &lname, version, |s| &s.version).map(|s| disable(&mut s.attributes))
            }
            ObjectKind::Key => {
                find_version_mut(&mut v.keys, &lname, version, |k| &k.version).map(|k| disable(&mut k.attributes))
            }
            ObjectKind::Certificate => {
                let found = find_version_mut(&mut v.certificates, &lname, version, |c| &c.version)
                    .map(|c| disable(&mut c.attributes));
                if found.is_some() {
                    if let Some(s) = find_version_mut(&mut v.secrets, &lname, version, |s| &s.version) {
                        disable(&mut s.attributes);
                    }
                    if let Some(k) = find_version_mut(&mut v.keys, &lname, version, |k| &k.version) {
                        disable(&mut k.attributes);
                    }
                }
                found
            }
        };
        found.ok_or_else(missing)
    }

    /// Deletes an object with all its versions (a deleted and purged object: later reads get the NotFound error).
    /// Deleting a certificate deletes its key and secret too. Returns whether anything existed.
    pub fn delete_object(&self, vault: &str, kind: ObjectKind, name: &str) -> Result<bool, KeyVaultError> {
        let lname = name.to_ascii_lowercase();
        self.with_vault(vault, |v| match kind {
            ObjectKind::Secret => v.secrets.remove(&lname).is_some(),
            ObjectKind::Key => v.keys.remove(&lname).is_some(),
            ObjectKind::Certificate => {
                let existed = v.certificates.remove(&lname).is_some();
                if existed {
                    v.keys.remove(&lname);
                    v.secrets.remove(&lname);
                }
                existed
            }
        })
    }

    pub fn traffic(&self) -> &Traffic {
        &self.inner.traffic
    }

    /// Requests for exactly `path` (e.g. `/secrets/s1/` or `/secrets/s1/{version}`) on `vault`, including the
    /// unauthenticated first request of a challenge round-trip.
    pub fn request_count(&self, vault: &str, path: &str) -> u64 {
        self.inner
            .traffic
            .count(&format!("{}{path}", vault.to_ascii_lowercase()))
    }

    /// Requests for one object, any version or list, on `vault`.
    pub fn object_requests(&self, vault: &str, kind: ObjectKind, name: &str) -> u64 {
        let exact = format!("{}/{}/{}", vault.to_ascii_lowercase(), kind.collection(), name);
        let nested = format!("{exact}/");
        self.inner
            .traffic
            .counts()
            .iter()
            .filter(|(k, _)| **k == exact || k.starts_with(&nested))
            .map(|(_, v)| v)
            .sum()
    }

    /// Injects a fault for requests to `vault` whose path starts with `path_prefix` (`""`: every path).
    pub fn inject(&self, vault: &str, path_prefix: &str, action: FaultAction, times: Option<u32>) {
        self.inner.traffic.inject(Fault {
            key_prefix: format!("{}{path_prefix}", vault.to_ascii_lowercase()),
            action,
            times,
        });
    }

    /// The next `times` matching requests get Key Vault's 429 with `Retry-After: {retry_after_secs}`.
    pub fn throttle(&self, vault: &str, path_prefix: &str, times: u32, retry_after_secs: u32) {
        let body = error_json(
            "Throttled",
            "Request was not processed because too many requests were received. Reason: VaultRequestTypeLimitReached",
            None,
        );
        self.inject(
            vault,
            path_prefix,
            FaultAction::Respond {
                status: StatusCode::TOO_MANY_REQUESTS,
                headers: vec![
                    ("content-type".into(), "application/json; charset=utf-8".into()),
                    ("retry-after".into(), retry_after_secs.to_string()),
                ],
                body: body.to_string(),
            },
            Some(times),
        );
    }

    /// The next `times` matching requests get a 500 with Key Vault's `InternalServerError` body.
    pub fn fail_with_500(&self, vault: &str, path_prefix: &str, times: u32) {
        let body = error_json(
            "InternalServerError",
            "An unexpected error occurred while processing the request.",
            None,
        );
        self.inject(
            vault,
            path_prefix,
            FaultAction::Respond {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                headers: vec![("content-type".into(), "application/json; charset=utf-8".into())],
                body: body.to_string(),
            },
            Some(times),
        );
    }

    pub fn delay(&self, vault: &str, path_prefix: &str, latency: Duration, times: Option<u32>) {
        self.inject(vault, path_prefix, FaultAction::Delay(latency), times);
    }

    pub fn drop_connections(&self, vault: &str, path_prefix: &str, times: u32) {
        self.inject(vault, path_prefix, FaultAction::DropConnection, Some(times));
    }

    pub fn clear_faults(&self) {
        self.inner.traffic.clear_faults();
    }
}

fn key_ops(key_type: KeyType) -> Vec<&'static str> {
    match key_type {
        KeyType::Rsa2048 => vec!["encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey"],
        KeyType::Ec(_) => vec!["sign", "verify"],
    }
}

fn push_version<T>(map: &mut BTreeMap<String, Entry<T>>, name: &str, version: T) {
    map.entry(name.to_ascii_lowercase())
        .or_insert_with(|| Entry {
            name: name.to_string(),
            versions: Vec::new(),
        })
        .versions
        .push(version);
}

fn find_version_mut<'a, T>(
    map: &'a mut BTreeMap<String, Entry<T>>,
    lname: &str,
    version: &str,
    id: impl Fn(&T) -> &str,
) -> Option<&'a mut T> {
    map.get_mut(lname)?
        .versions
        .iter_mut()
        .find(|v| id(v).eq_ignore_ascii_case(version))
}

fn error_json(code: &str, message: &str, inner: Option<&str>) -> Value {
    let mut error = json!({ "code": code, "message": message });
    if let Some(inner) = inner {
        error["innererror"] = json!({ "code": inner });
    }
    json!({ "error": error })
}

fn error_response(status: StatusCode, code: &str, message: &str, inner: Option<&str>) -> Response {
    (status, Json(error_json(code, message, inner))).into_response()
}

fn not_found(kind: ObjectKind, name_or_id: &str) -> Response {
    let noun = kind.noun();
    error_response(
        StatusCode::NOT_FOUND,
        kind.not_found_code(),
        &format!(
            "A {noun} with (name/id) {name_or_id} was not found in this key vault. If you recently deleted this {noun} \
             you may be able to recover it using the correct recovery command. For help resolving this issue, please \
             see https://go.microsoft.com/fwlink/?linkid=2125182"
        ),
        None,
    )
}

/// The authenticated caller.
struct Caller {
    appid: String,
    oid: String,
    tenant: String,
}

impl Inner {
    fn unauthorized(&self, tenant: &str, message: &str) -> Response {
        let mut response = error_response(StatusCode::UNAUTHORIZED, "Unauthorized", message, None);
        let challenge = format!(
            "Bearer authorization=\"{}{tenant}\", resource=\"{}\"",
            self.config.authority_host, self.config.resource
        );
        if let Ok(value) = HeaderValue::try_from(challenge) {
            response.headers_mut().insert(http::header::WWW_AUTHENTICATE, value);
        }
        response
    }

    fn authenticate(&self, headers: &HeaderMap, tenant: &str) -> Result<Caller, String> {
        let token = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim)
            .filter(|t| !t.is_empty());
        let Some(token) = token else {
            return Err("AKV10000: Request is missing a Bearer or PoP token.".to_string());
        };
        let invalid =
            || "AKV10000: Invalid token: the token is malformed or its signature does not verify.".to_string();
        let header = unverified_header(token).ok_or_else(invalid)?;
        let kid = header.get("kid").and_then(Value::as_str);
        let jwk = self
            .entra_keys
            .keys
            .iter()
            .find(|k| k.common.key_id.as_deref() == kid)
            .ok_or_else(invalid)?;
        let key = DecodingKey::from_jwk(jwk).map_err(|_| invalid())?;
        let mut validation = Validation::new(Algorithm::RS256);
        validation.validate_exp = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        jsonwebtoken::decode::<Value>(token, &key, &validation).map_err(|_| invalid())?;
        let claims = unverified_claims(token).ok_or_else(invalid)?;
        let text = |name: &str| claims.get(name).and_then(Value::as_str).unwrap_or_default().to_string();
        let aud = text("aud");
        if aud.trim_end_matches('/') != self.config.resource {
            return Err(format!(
                "AKV10022: Invalid audience. Expected {}, found: {aud}.",
                self.config.resource
            ));
        }
        let iss = text("iss");
        let token_tenant = text("tid");
        if token_tenant != tenant {
            return Err(format!(
                "AKV10032: Invalid issuer. Expected one of https://sts.windows.net/{tenant}/, \
                     https://login.microsoftonline.com/{tenant}/v2.0, found {iss}."
            ));
        }
        let exp = claims.get("exp").and_then(Value::as_i64).unwrap_or(0);
        if exp <= OffsetDateTime::now_utc().unix_timestamp() {
            return Err("AKV10000: Invalid token: the token is expired.".to_string());
        }
        Ok(Caller {
            appid: text("appid"),
            oid: text("oid"),
            tenant: token_tenant,
        })
    }
}

enum Op<'a> {
    Get { name: &'a str, version: Option<&'a str> },
    Versions { name: &'a str },
}

async fn handler(
    State(inner): State<Arc<Inner>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    let host = traffic::host_without_port(&headers, &uri);
    let suffix = format!(".{}", inner.config.dns_suffix);
    let Some(vault_name) = host.strip_suffix(&suffix).filter(|v| !v.is_empty() && !v.contains('.')) else {
        // A real client would fail name resolution; say which host was unexpected.
        return (
            StatusCode::NOT_FOUND,
            format!("the fake Key Vault serves *{suffix}, not {host}"),
        )
            .into_response();
    };
    let tenant = match inner.state().vaults.get(vault_name) {
        Some(v) => v.tenant.clone(),
        None => {
            return (
                StatusCode::NOT_FOUND,
                format!("vault {vault_name} does not exist in the fake Key Vault"),
            )
                .into_response();
        }
    };
    let caller = match inner.authenticate(&headers, &tenant) {
        Ok(c) => c,
        Err(message) => return inner.unauthorized(&tenant, &message),
    };
    let q = |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    match q("api-version") {
        None => {
            return error_response(
                StatusCode::BAD_REQUEST,
                "BadParameter",
                "The 'api-version' query parameter is missing.",
                None,
            );
        }
        Some(v) if !API_VERSIONS.contains(&v) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                "BadParameter",
                &format!(
                    "The specified version ({v}) is not recognized. Consider using the latest supported version ({LATEST_API_VERSION})."
                ),
                None,
            );
        }
        Some(_) => {}
    }
    if method != Method::GET {
        return error_response(
            StatusCode::METHOD_NOT_ALLOWED,
            "BadParameter",
            &format!("The fake Key Vault only serves GET, not {method}."),
            None,
        );
    }
    let segments: Vec<&str> = uri.path().trim_start_matches('/').split('/').collect();
    let (kind, op) = match segments.as_slice() {
        [collection, rest @ ..] => {
            let kind = match *collection {
                "secrets" => ObjectKind::Secret,
                "keys" => ObjectKind::Key,
                "certificates" => ObjectKind::Certificate,
                _ => {
                    return error_response(
                        StatusCode::NOT_FOUND,
                        "NotFound",
                        &format!("Path {} was not found.", uri.path()),
                        None,
                    );
                }
            };
            match rest {
                [name] | [name, ""] if !name.is_empty() => (kind, Op::Get { name, version: None }),
                [name, "versions"] if !name.is_empty() => (kind, Op::Versions { name }),
                [name, version] if !name.is_empty() => (
                    kind,
                    Op::Get {
                        name,
                        version: Some(version),
                    },
                ),
                _ => {
                    return error_response(
                        StatusCode::NOT_FOUND,
                        "NotFound",
                        &format!("Path {} was not found.", uri.path()),
                        None,
                    );
                }
            }
        }
        _ => {
            return error_response(
                StatusCode::NOT_FOUND,
                "NotFound",
                &format!("Path {} was not found.", uri.path()),
                None,
            );
        }
    };
    let state = inner.state();
    let Some(vault) = state.vaults.get(vault_name) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if !vault.granted.contains(&caller.appid) {
        let action = if matches!(op, Op::Versions { .. }) {
            "list"
        } else {
            "get"
        };
        return error_response(
            StatusCode::FORBIDDEN,
            "Forbidden",
            &format!(
                "The user, group or application 'appid={};oid={};iss=https://sts.windows.net/{}/' does not have {} {action} \
                 permission on key vault '{vault_name};location=eastus'. For help resolving this issue, please see \
                 https://go.microsoft.com/fwlink/?linkid=2125287",
                caller.appid,
                caller.oid,
                caller.tenant,
                kind.collection()
            ),
            Some("AccessDenied"),
        );
    }
    let base = format!("https://{}", traffic::host_with_port(&headers, &uri));
    let api_version = q("api-version").unwrap_or(LATEST_API_VERSION);
    match op {
        Op::Get { name, version } => get_object(vault, &base, kind, name, version, q("outContentType")),
        Op::Versions { name } => {
            let page = PageRequest {
                base: &base,
                api_version,
                maxresults: q("maxresults"),
                skiptoken: q("$skiptoken"),
                page_size: inner.config.page_size.clamp(1, MAX_PAGE_SIZE),
            };
            list_versions(vault, kind, name, &page)
        }
    }
}

fn pick<'a, T>(
    entry: Option<&'a Entry<T>>,
    version: Option<&str>,
    id: impl Fn(&T) -> &str,
) -> Option<(&'a str, &'a T)> {
    let entry = entry?;
    let found = match version {
        None => entry.versions.last(),
        Some(v) => entry.versions.iter().find(|x| id(x).eq_ignore_ascii_case(v)),
    }?;
    Some((entry.name.as_str(), found))
}

fn get_object(
    vault: &Vault,
    base: &str,
    kind: ObjectKind,
    name: &str,
    version: Option<&str>,
    out_content_type: Option<&str>,
) -> Response {
    let lname = name.to_ascii_lowercase();
    let shown = match version {
        Some(v) => format!("{name}/{v}"),
        None => name.to_string(),
    };
    match kind {
        ObjectKind::Secret => {
            let Some((stored_name, s)) = pick(vault.secrets.get(&lname), version, |s| &s.version) else {
                return not_found(kind, &shown);
            };
            if !s.attributes.enabled {
                return error_response(
                    StatusCode::FORBIDDEN,
                    "Forbidden",
                    "Operation get is not allowed on a disabled secret.",
                    Some("SecretDisabled"),
                );
            }
            let (value, content_type) = match out_content_type {
                None => (s.value.clone(), s.content_type.clone()),
                Some("application/x-pem-file") if s.content_type.as_deref() == Some("application/x-pem-file") => {
                    (s.value.clone(), s.content_type.clone())
                }
                Some("application/x-pem-file") if s.pem_form.is_some() => (
                    s.pem_form.clone().unwrap_or_default(),
                    Some("application/x-pem-file".to_string()),
                ),
                Some(other) => {
                    return error_response(
                        StatusCode::BAD_REQUEST,
                        "BadParameter",
                        &format!("The outContentType {other} is not supported for this secret."),
                        None,
                    );
                }
            };
            let mut body = json!({
                "value": value,
                "id": format!("{base}/secrets/{stored_name}/{}", s.version),
                "attributes": s.attributes.to_json(),
                "tags": {},
            });
            if let Some(ct) = content_type {
                body["contentType"] = json!(ct);
            }
            if s.certificate.is_some() {
                body["kid"] = json!(format!("{base}/keys/{stored_name}/{}", s.version));
                body["managed"] = json!(true);
            }
            Json(body).into_response()
        }
        ObjectKind::Key => {
            let Some((stored_name, k)) = pick(vault.keys.get(&lname), version, |k| &k.version) else {
                return not_found(kind, &shown);
            };
            Json(key_bundle(base, stored_name, k)).into_response()
        }
        ObjectKind::Certificate => {
            let Some((stored_name, c)) = pick(vault.certificates.get(&lname), version, |c| &c.version) else {
                return not_found(kind, &shown);
            };
            Json(certificate_bundle(base, stored_name, c)).into_response()
        }
    }
}

fn key_bundle(base: &str, name: &str, k: &KeyVersion) -> Value {
    let mut jwk = Map::new();
    jwk.insert("kid".into(), json!(format!("{base}/keys/{name}/{}", k.version)));
    jwk.insert("key_ops".into(), json!(k.key_ops));
    for (field, value) in &k.jwk_fields {
        jwk.insert(field.clone(), value.clone());
    }
    let mut body = json!({ "key": Value::Object(jwk), "attributes": k.attributes.to_json(), "tags": {} });
    if k.managed {
        body["managed"] = json!(true);
    }
    body
}

fn certificate_bundle(base: &str, name: &str, c: &CertVersion) -> Value {
    let key_props = match c.key_type {
        KeyType::Rsa2048 => json!({ "exportable": true, "kty": "RSA", "key_size": 2048, "reuse_key": false }),
        KeyType::Ec(curve) => json!({ "exportable": true, "kty": "EC", "crv": curve.jwk_name(), "reuse_key": false }),
    };
    json!({
        "id": format!("{base}/certificates/{name}/{}", c.version),
        "kid": format!("{base}/keys/{name}/{}", c.version),
        "sid": format!("{base}/secrets/{name}/{}", c.version),
        "x5t": material::x5t(&c.cer),
        "cer": STANDARD.encode(&c.cer),
        "attributes": c.attributes.to_json(),
        "tags": {},
        "policy": {
            "id": format!("{base}/certificates/{name}/policy"),
            "key_props": key_props,
            "secret_props": { "contentType": c.content_type.mime() },
            "x509_props": {
                "subject": c.subject,
                "sans": { "dns_names": c.dns_names },
                "ekus": ["1.3.6.1.5.5.7.3.1", "1.3.6.1.5.5.7.3.2"],
                "key_usage": ["digitalSignature", "keyEncipherment"],
                "validity_months": 12,
            },
            "lifetime_actions": [{ "trigger": { "lifetime_percentage": 80 }, "action": { "action_type": "AutoRenew" } }],
            "issuer": { "name": if c.self_signed { "Self" } else { "Unknown" } },
            "attributes": { "enabled": true, "created": c.attributes.created, "updated": c.attributes.created },
        },
    })
}

struct PageRequest<'a> {
    base: &'a str,
    api_version: &'a str,
    maxresults: Option<&'a str>,
    skiptoken: Option<&'a str>,
    page_size: usize,
}

fn list_versions(vault: &Vault, kind: ObjectKind, name: &str, page: &PageRequest<'_>) -> Response {
    let lname = name.to_ascii_lowercase();
    let max = match page.maxresults {
        None => page.page_size,
        Some(raw) => match raw.parse::<usize>() {
            Ok(n) if (1..=MAX_PAGE_SIZE).contains(&n) => n.min(page.page_size),
            _ => {
                return error_response(
                    StatusCode::BAD_REQUEST,
                    "BadParameter",
                    &format!(
                        "The value '{raw}' of parameter maxresults is out of range: it must be between 1 and {MAX_PAGE_SIZE}."
                    ),
                    None,
                );
            }
        },
    };
    let offset = match page.skiptoken {
        None => 0,
        Some(token) => match decode_skiptoken(token) {
            Some(n) => n,
            None => {
                return error_response(
                    StatusCode::BAD_REQUEST,
                    "BadParameter",
                    "The $skiptoken is invalid.",
                    None,
                );
            }
        },
    };
    let (stored_name, items): (String, Vec<Value>) = match kind {
        ObjectKind::Secret => match vault.secrets.get(&lname) {
            None => return not_found(kind, name),
            Some(e) => (
                e.name.clone(),
                e.versions
                    .iter()
                    .map(|s| {
                        let mut item = json!({
                            "id": format!("{}/secrets/{}/{}", page.base, e.name, s.version),
                            "attributes": s.attributes.to_json(),
                            "tags": {},
                        });
                        if let Some(ct) = &s.content_type {
                            item["contentType"] = json!(ct);
                        }
                        if s.certificate.is_some() {
                            item["managed"] = json!(true);
                        }
                        item
                    })
                    .collect(),
            ),
        },
        ObjectKind::Key => match vault.keys.get(&lname) {
            None => return not_found(kind, name),
            Some(e) => (
                e.name.clone(),
                e.versions
                    .iter()
                    .map(|k| {
                        let mut item = json!({
                            "kid": format!("{}/keys/{}/{}", page.base, e.name, k.version),
                            "attributes": k.attributes.to_json(),
                            "tags": {},
                        });
                        if k.managed {
                            item["managed"] = json!(true);
                        }
                        item
                    })
                    .collect(),
            ),
        },
        ObjectKind::Certificate => match vault.certificates.get(&lname) {
            None => return not_found(kind, name),
            Some(e) => (
                e.name.clone(),
                e.versions
                    .iter()
                    .map(|c| {
                        json!({
                            "id": format!("{}/certificates/{}/{}", page.base, e.name, c.version),
                            "x5t": material::x5t(&c.cer),
                            "attributes": c.attributes.to_json(),
                            "tags": {},
                        })
                    })
                    .collect(),
            ),
        },
    };
    let end = (offset + max).min(items.len());
    let value: Vec<Value> = items
        .get(offset.min(items.len())..end)
        .map(<[Value]>::to_vec)
        .unwrap_or_default();
    let next_link = (end < items.len()).then(|| {
        format!(
            "{}/{}/{}/versions?api-version={}&$skiptoken={}&maxresults={max}",
            page.base,
            kind.collection(),
            stored_name,
            page.api_version,
            encode_skiptoken(end)
        )
    });
    Json(json!({ "value": value, "nextLink": next_link })).into_response()
}

fn encode_skiptoken(offset: usize) -> String {
    URL_SAFE_NO_PAD.encode(format!("offset:{offset}"))
}

fn decode_skiptoken(token: &str) -> Option<usize> {
    let raw = URL_SAFE_NO_PAD.decode(token).ok()?;
    std::str::from_utf8(&raw).ok()?.strip_prefix("offset:")?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skiptokens_round_trip_and_reject_garbage() {
        assert_eq!(decode_skiptoken(&encode_skiptoken(0)), Some(0));
        assert_eq!(decode_skiptoken(&encode_skiptoken(25)), Some(25));
        assert_eq!(decode_skiptoken("not base64!"), None);
        assert_eq!(decode_skiptoken(&URL_SAFE_NO_PAD.encode("offset:x")), None);
        assert_eq!(decode_skiptoken(&URL_SAFE_NO_PAD.encode("limit:3")), None);
    }

    #[test]
    fn versions_are_32_lowercase_hex_digits() {
        let v = new_version();
        assert_eq!(v.len(), 32);
        assert!(
            v.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()),
            "{v}"
        );
        assert_ne!(v, new_version());
    }

    #[test]
    fn attributes_serialize_like_key_vault() {
        let attributes = Attributes {
            enabled: false,
            created: 10,
            updated: 20,
            nbf: Some(5),
            exp: None,
        };
        assert_eq!(
            attributes.to_json(),
            json!({"enabled": false, "nbf": 5, "created": 10, "updated": 20,
                   "recoveryLevel": "Recoverable+Purgeable", "recoverableDays": 90})
        );
    }

    #[test]
    fn names_are_case_insensitive_but_keep_their_case() {
        let mut map: BTreeMap<String, Entry<SecretVersion>> = BTreeMap::new();
        let version = |v: &str| SecretVersion {
            version: v.into(),
            value: v.into(),
            content_type: None,
            certificate: None,
            pem_form: None,
            attributes: Attributes::now(),
        };
        push_version(&mut map, "MySecret", version("aa"));
        push_version(&mut map, "mysecret", version("bb"));
        let (name, latest) = pick(map.get("mysecret"), None, |s| &s.version).unwrap();
        assert_eq!((name, latest.value.as_str()), ("MySecret", "bb"));
        let (_, first) = pick(map.get("mysecret"), Some("AA"), |s| &s.version).unwrap();
        assert_eq!(first.value, "aa");
        assert!(pick(map.get("mysecret"), Some("cc"), |s| &s.version).is_none());
    }
}
