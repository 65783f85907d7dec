//! The fakes started together as one local "cloud": a test PKI, the fake Kubernetes API, Entra (with IMDS) and
//! Key Vault serving HTTPS certificates of that PKI, and a service account token issuer; plus the files a program
//! needs to reach them (CA bundle, kubeconfig, cloud environment file).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::fake_entra::{EntraError, FakeEntra};
use crate::fake_keyvault::{FakeKeyVault, KeyVaultConfig, KeyVaultError};
use crate::fake_kube::FakeKube;
use crate::https_server::ServerTls;
use crate::issuer::{IssuerError, TestIssuer};
use crate::pki::TestPki;
use crate::process::{CloudEndpoints, write_cloud_env_file};
use crate::traffic::{Fault, FaultAction};

#[derive(Debug, thiserror::Error)]
pub enum LocalCloudError {
    #[error("starting fake Entra: {0}")]
    Entra(#[from] EntraError),
    #[error("starting fake Key Vault: {0}")]
    KeyVault(#[from] KeyVaultError),
    #[error("creating the service account token issuer: {0}")]
    Issuer(#[from] IssuerError),
}

/// Entra's authority host in every local stack of this crate.
pub const LOGIN_HOST: &str = "login.wisp.test";
/// The DNS suffix of every local stack's vaults.
pub const VAULT_DNS_SUFFIX: &str = "vault.wisp.test";
/// Key Vault's token audience in every local stack.
pub const VAULT_RESOURCE: &str = "https://vault.wisp.test";

/// The names the fakes answer to.
#[derive(Debug, Clone, Copy)]
pub struct CloudNames<'a> {
    /// Entra's authority host, e.g. `login.wisp.test`.
    pub login_host: &'a str,
    /// Vaults are `{name}.{vault_dns_suffix}`, e.g. `vault.wisp.test`.
    pub vault_dns_suffix: &'a str,
    /// Key Vault's token audience, e.g. `https://vault.wisp.test`.
    pub vault_resource: &'a str,
    /// The cluster's service account issuer URL.
    pub oidc_issuer: &'a str,
}

impl<'a> CloudNames<'a> {
    /// [`LOGIN_HOST`], [`VAULT_DNS_SUFFIX`] and [`VAULT_RESOURCE`], with the cluster's service account issuer
    /// `oidc_issuer`.
    pub const fn wisp_test(oidc_issuer: &'a str) -> Self {
        Self {
            login_host: LOGIN_HOST,
            vault_dns_suffix: VAULT_DNS_SUFFIX,
            vault_resource: VAULT_RESOURCE,
            oidc_issuer,
        }
    }
}

/// Files that point a program at a [`LocalCloud`].
#[derive(Debug, Clone)]
pub struct ClientFiles {
    /// The test CA (PEM), for `SSL_CERT_FILE`.
    pub ca_file: PathBuf,
    pub kubeconfig: PathBuf,
    /// A custom cloud's environment file naming the fakes' endpoints, ports included.
    pub cloud_env: PathBuf,
}

/// Requests the fakes have seen so far; a benchmark subtracts two readings to count a phase's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestCounts {
    pub entra: u64,
    pub key_vault: u64,
    /// Every request to the API server but watches (whose count says nothing of the work done).
    pub kube: u64,
}

impl std::ops::Sub for RequestCounts {
    type Output = RequestCounts;
    fn sub(self, before: RequestCounts) -> RequestCounts {
        RequestCounts {
            entra: self.entra - before.entra,
            key_vault: self.key_vault - before.key_vault,
            kube: self.kube - before.kube,
        }
    }
}

/// The running fakes. Dropping it stops them.
pub struct LocalCloud {
    pub pki: TestPki,
    pub kube: FakeKube,
    pub entra: FakeEntra,
    pub vault: FakeKeyVault,
    pub issuer: TestIssuer,
    vault_dns_suffix: String,
    vault_resource: String,
}

impl LocalCloud {
    /// Starts every fake on loopback. `configure` may adjust the Key Vault configuration (e.g. its page size).
    pub async fn start(
        names: &CloudNames<'_>,
        configure: impl FnOnce(KeyVaultConfig) -> KeyVaultConfig,
    ) -> Result<Self, LocalCloudError> {
        let pki = TestPki::new();
        let wildcard = format!("*.{}", names.vault_dns_suffix);
        let tls = ServerTls::from(pki.server_cert(&[names.login_host, &wildcard]));
        let entra = FakeEntra::start(names.login_host, &tls).await?;
        let config = configure(KeyVaultConfig::new(
            names.vault_dns_suffix,
            names.vault_resource,
            &entra.authority_host(),
        ));
        let vault = FakeKeyVault::start(config, &tls, entra.jwks()).await?;
        let kube = FakeKube::start(&pki).await;
        let issuer = TestIssuer::new(names.oidc_issuer)?;
        kube.serve_issuer_discovery(&issuer);
        kube.serve_token_requests(issuer.clone());
        Ok(Self {
            pki,
            kube,
            entra,
            vault,
            issuer,
            vault_dns_suffix: names.vault_dns_suffix.to_string(),
            vault_resource: names.vault_resource.to_string(),
        })
    }

    /// Seeds `tenant`, trusting the cluster's service account issuer and issuing tokens for Key Vault, with
    /// `vault` in it readable by `client_id`: where each benchmark starts (its workload identities are then
    /// federated with the ServiceAccounts it uses).
    pub fn add_tenant_with_vault(&self, tenant: &str, vault: &str, client_id: &str) -> Result<(), KeyVaultError> {
        self.entra.add_tenant(tenant);
        self.entra.add_resource(&self.vault_resource);
        self.entra.trust_issuer(self.issuer.issuer(), self.issuer.jwks());
        self.vault.add_vault(vault, tenant);
        self.vault.grant(client_id, vault)
    }

    pub fn request_counts(&self) -> RequestCounts {
        RequestCounts {
            entra: self.entra.traffic().count_prefix(""),
            key_vault: self.vault.traffic().count_prefix(""),
            kube: self
                .kube
                .count_requests(|r| r.query.get("watch").is_none_or(|w| w != "true")) as u64,
        }
    }

    /// Replaces every fault injected at Entra and Key Vault with `latency` before each of their responses (on
    /// `vault`'s requests at Key Vault); zero: none. What a benchmark sets to count the round trips a program
    /// waits for, as a cloud region away would make them cost.
    pub fn set_azure_latency(&self, vault: &str, latency: Duration) {
        self.entra.traffic().clear_faults();
        self.vault.clear_faults();
        if !latency.is_zero() {
            self.entra.traffic().inject(Fault {
                key_prefix: String::new(),
                action: FaultAction::Delay(latency),
                times: None,
            });
            self.vault.delay(vault, "", latency, None);
        }
    }

    /// Writes the CA bundle, a kubeconfig and the cloud environment file into `dir`.
    pub fn write_client_files(&self, dir: &Path) -> ClientFiles {
        let cloud_env = write_cloud_env_file(
            dir,
            &CloudEndpoints {
                active_directory_endpoint: self.entra.authority_host(),
                key_vault_dns_suffix: format!("{}:{}", self.vault_dns_suffix, self.vault.addr().port()),
                key_vault_resource: self.vault_resource.clone(),
            },
        );
        ClientFiles {
            ca_file: self.pki.write_ca_cert(dir),
            kubeconfig: self.kube.write_kubeconfig(dir),
            cloud_env,
        }
    }
}
