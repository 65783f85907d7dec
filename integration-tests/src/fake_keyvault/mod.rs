//! A fake Azure Key Vault data plane (HTTPS): one server for many vaults, told apart by the `Host` header
//! `{vault}.{dns_suffix}`. It serves what wisp reads — secrets, keys and certificates by name and version, and
//! their version lists with `nextLink` paging — and enforces Key Vault's rules: `api-version`, a bearer token
//! signed by the fake Entra for the vault resource and the vault's tenant (401 with the real
//! `WWW-Authenticate` challenge otherwise), an access list per vault (403), disabled versions, Key Vault's
//! error bodies, and injected faults (429 with `Retry-After`, 500, latency, dropped connections).

pub mod material;
mod state;
mod wire;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::StatusCode;
use jsonwebtoken::jwk::JwkSet;
use serde_json::{Value, json};

use crate::https_server::{LoopbackServer, ServerError, ServerTls};
use crate::traffic::{Fault, FaultAction, Traffic};
pub use material::{CertContentType, CertificateSpec, EcCurve, KeyType, MaterialError};
pub use state::{
    API_VERSIONS, KeyVaultConfig, LATEST_API_VERSION, MAX_PAGE_SIZE, ObjectKind, SeededCertificate, SeededKey,
    new_version,
};
use state::{KvState, Service, Vault};

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

/// The running fake Key Vault. Cheap to clone; the server stops when the last clone is dropped.
#[derive(Clone)]
pub struct FakeKeyVault {
    inner: Arc<Service>,
    server: Arc<LoopbackServer>,
}

impl std::fmt::Debug for FakeKeyVault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeKeyVault")
            .field("config", &self.inner.config)
            .field("addr", &self.server.addr())
            .finish()
    }
}

impl FakeKeyVault {
    /// Starts the server on 127.0.0.1 with an ephemeral port. `tls` must cover `*.{dns_suffix}`;
    /// `entra_keys` is the fake Entra's JWKS ([`crate::fake_entra::FakeEntra::jwks`]).
    pub async fn start(config: KeyVaultConfig, tls: &ServerTls, entra_keys: JwkSet) -> Result<Self, KeyVaultError> {
        let inner = Arc::new(Service {
            config,
            entra_keys,
            state: Mutex::new(KvState::default()),
            traffic: Traffic::default(),
        });
        let server = LoopbackServer::https_pem(wire::router(inner.clone()), tls).await?;
        Ok(Self {
            inner,
            server: Arc::new(server),
        })
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
        self.server.addr()
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
            self.server.port()
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
            "keyVaultDNSSuffix": format!("{}:{}", config.dns_suffix, self.server.port()),
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
        self.with_vault(vault, |v| v.add_secret(name, value, content_type))
    }

    pub fn add_rsa_key(&self, vault: &str, name: &str) -> Result<SeededKey, KeyVaultError> {
        self.add_key(vault, name, KeyType::Rsa2048)
    }

    pub fn add_ec_key(&self, vault: &str, name: &str, curve: EcCurve) -> Result<SeededKey, KeyVaultError> {
        self.add_key(vault, name, KeyType::Ec(curve))
    }

    fn add_key(&self, vault: &str, name: &str, key_type: KeyType) -> Result<SeededKey, KeyVaultError> {
        let generated = material::generate_key(key_type)?;
        let version = self.with_vault(vault, |v| v.add_key(name, key_type, &generated))?;
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
        let version = self.with_vault(vault, |v| v.add_certificate(name, spec, &generated))?;
        let leaf = generated.chain_der.first().cloned().unwrap_or_default();
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
        if self.with_vault(vault, |v| v.disable_version(kind, name, version))? {
            Ok(())
        } else {
            Err(KeyVaultError::NoSuchVersion {
                vault: vault.to_string(),
                kind: kind.noun(),
                name: name.to_string(),
                version: version.to_string(),
            })
        }
    }

    /// Deletes an object with all its versions (a deleted and purged object: later reads get the NotFound error).
    /// Deleting a certificate deletes its key and secret too. Returns whether anything existed.
    pub fn delete_object(&self, vault: &str, kind: ObjectKind, name: &str) -> Result<bool, KeyVaultError> {
        self.with_vault(vault, |v| v.delete_object(kind, name))
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
        let body = wire::error_json(
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
        let body = wire::error_json(
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
