//! The Azure provider in-process: SecretProviderClass parameters → identity → Key Vault token → every object
//! fetched (in parallel, bounded, each distinct version once) → rendered files. Nothing here touches the mount;
//! the caller writes the files only once all of them exist.

pub(crate) mod auth;
pub(crate) mod http;
pub(crate) mod input;
pub(crate) mod keyvault;
pub(crate) mod params;
pub(crate) mod render;
pub(crate) mod round_cache;

use std::collections::HashMap;
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use tokio::time::Instant;
use wisp_shared::cloud::CloudEnvironment;
use wisp_shared::contract::secrets_store::CTX_SERVICE_ACCOUNT_TOKENS;

use crate::content::{ObjectVersion, RenderedFile};
use crate::provider::auth::{AuthError, Authenticator, Identity, IdentityKey, ServiceAccountRef};
use crate::provider::input::MountInput;
use crate::provider::keyvault::{Fetched, KeyVaultClient, KeyVaultError, VaultAccess};
use crate::provider::params::{CloudSelection, IdentityMode, MountParams, ObjectSpec, ObjectType, ParamError};
use crate::provider::render::{RenderError, RenderOptions, VersionInfo};
use crate::provider::round_cache::RoundCache;

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("{0}")]
    Params(#[from] ParamError),
    #[error("{0}")]
    Cloud(String),
    #[error("{0}")]
    Auth(#[from] AuthError),
    #[error("failed to get {object}: {source}")]
    KeyVault { object: String, source: KeyVaultError },
    #[error("failed to get {object}: {source}")]
    Render { object: String, source: RenderError },
}

/// The files of a mount and the versions they came from.
#[derive(Debug)]
pub struct MountContent {
    pub files: Vec<RenderedFile>,
    pub objects: Vec<ObjectVersion>,
}

#[derive(Debug, Clone)]
pub struct ProviderConfig {
    /// `--cloud-name`.
    pub default_cloud: String,
    pub render: RenderOptions,
    pub max_parallel: usize,
    /// The rotation poll interval: refreshes within one such window share their Key Vault reads.
    pub rotation_round: std::time::Duration,
}

/// Where a mount's Key Vault reads come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// Read everything now (a first mount: a new pod sees what Key Vault holds at this moment).
    Fresh,
    /// Reuse what this rotation round already read for the same identity (a refresh due at `due`: rounds are
    /// counted in due times, see `round_cache`).
    SharedRound { due: Instant },
}

/// One Key Vault read as seen by the round cache: who read (the token's identity key), from which vault, what.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ReadKey {
    identity: IdentityKey,
    vault: String,
    object_type: ObjectType,
    name: String,
    version: Option<String>,
}

pub struct Provider {
    config: ProviderConfig,
    auth: Authenticator,
    keyvault: KeyVaultClient,
    objects_read: RoundCache<ReadKey, Fetched>,
    versions_read: RoundCache<ReadKey, Vec<VersionInfo>>,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn describe(spec: &ObjectSpec, version: Option<&str>) -> String {
    format!(
        "objectType:{}, objectName:{}, objectVersion:{}",
        spec.object_type.as_str(),
        spec.name,
        version.or(spec.version.as_deref()).unwrap_or("")
    )
}

type FetchKey = (ObjectType, String, Option<String>);

/// What every read of one mount shares.
struct ReadContext<'a> {
    identity: IdentityKey,
    vault_url: &'a str,
    vault: &'a VaultAccess,
    deadline: Instant,
    freshness: Freshness,
}

impl ReadContext<'_> {
    fn key(&self, object_type: ObjectType, name: &str, version: Option<String>) -> ReadKey {
        ReadKey {
            identity: self.identity.clone(),
            vault: self.vault_url.to_string(),
            object_type,
            name: name.to_string(),
            version,
        }
    }
}

/// One file-producing fetch: which object, which version, which file path.
struct Job {
    spec: usize,
    file_path: String,
    version: Option<String>,
    /// `Some(i)` for the i-th history version.
    history_index: Option<usize>,
}

impl Provider {
    pub fn new(config: ProviderConfig, auth: Authenticator, keyvault: KeyVaultClient) -> Self {
        let round = config.rotation_round;
        Self {
            config,
            auth,
            keyvault,
            objects_read: RoundCache::new(round),
            versions_read: RoundCache::new(round),
        }
    }

    pub fn resolve_cloud(&self, selection: &CloudSelection) -> Result<CloudEnvironment, ProviderError> {
        match selection {
            CloudSelection::Named(name) => CloudEnvironment::builtin(name)
                .map_err(|e| ProviderError::Cloud(format!("cloudName {name} is not valid, error: {e}"))),
            CloudSelection::EnvFile(path) => CloudEnvironment::from_file(path).map_err(|e| {
                ProviderError::Cloud(format!(
                    "cloudEnvFileName {}: {e}; the file must exist on the node and hold a go-autorest environment",
                    path.display()
                ))
            }),
            CloudSelection::Default => CloudEnvironment::builtin(&self.config.default_cloud).map_err(|e| {
                ProviderError::Cloud(format!(
                    "the agent's --cloud-name {} is not valid, error: {e}; set cloudName in the SecretProviderClass",
                    self.config.default_cloud
                ))
            }),
        }
    }

    fn identity(&self, params: &MountParams, input: &MountInput<'_>) -> Result<Identity, ProviderError> {
        Ok(match &params.identity {
            IdentityMode::WorkloadIdentity { client_id } => {
                let tokens = input
                    .parameters
                    .get(CTX_SERVICE_ACCOUNT_TOKENS)
                    .map(String::as_str)
                    .unwrap_or("");
                let assertion = auth::token_for_audience(tokens, auth::workload_identity_audience())?;
                let name = input
                    .service_account_name
                    .filter(|n| !n.is_empty())
                    .ok_or(AuthError::ServiceAccountMissing)?;
                Identity::WorkloadIdentity {
                    tenant_id: params.tenant_id.clone(),
                    client_id: client_id.clone(),
                    service_account: ServiceAccountRef {
                        namespace: input.pod_namespace.to_string(),
                        name: name.to_string(),
                    },
                    assertion,
                }
            }
            IdentityMode::VmManagedIdentity {
                user_assigned_identity_id,
            } => Identity::ManagedIdentity {
                client_id: user_assigned_identity_id.clone(),
            },
            IdentityMode::ServicePrincipal => {
                let (client_id, client_secret) = auth::service_principal_credentials(input.secrets)?;
                Identity::ServicePrincipal {
                    tenant_id: params.tenant_id.clone(),
                    client_id,
                    client_secret,
                }
            }
        })
    }

    async fn history(
        &self,
        index: usize,
        spec: &ObjectSpec,
        read: &ReadContext<'_>,
    ) -> Result<(usize, Vec<String>), ProviderError> {
        let key = read.key(spec.object_type, &spec.name, None);
        let list = || async {
            self.keyvault
                .list_versions(read.vault, spec.object_type, &spec.name, read.deadline)
                .await
        };
        let versions = match read.freshness {
            Freshness::SharedRound { due } => self.versions_read.get_or_read(&key, due, list).await,
            Freshness::Fresh => list().await.map(Arc::new),
        }
        .map_err(|source| ProviderError::KeyVault {
            object: describe(spec, None),
            source,
        })?;
        let ids = render::select_history_versions(&versions, spec.version.as_deref(), spec.version_history).map_err(
            |source| ProviderError::Render {
                object: describe(spec, None),
                source,
            },
        )?;
        Ok((index, ids))
    }

    async fn fetch(
        &self,
        key: FetchKey,
        spec: &ObjectSpec,
        read: &ReadContext<'_>,
    ) -> Result<(FetchKey, Arc<Fetched>), ProviderError> {
        let read_key = read.key(key.0, &key.1, key.2.clone());
        let get = || async {
            self.keyvault
                .get(read.vault, key.0, &key.1, key.2.as_deref(), read.deadline)
                .await
        };
        let fetched = match read.freshness {
            Freshness::SharedRound { due } => self.objects_read.get_or_read(&read_key, due, get).await,
            Freshness::Fresh => get().await.map(Arc::new),
        }
        .map_err(|source| ProviderError::KeyVault {
            object: describe(spec, key.2.as_deref()),
            source,
        })?;
        Ok((key, fetched))
    }

    /// Everything a mount shows, with reads from `freshness`, or the first error.
    pub async fn content(
        &self,
        input: MountInput<'_>,
        deadline: Instant,
        freshness: Freshness,
    ) -> Result<MountContent, ProviderError> {
        let params = params::parse_mount_params(input.parameters)?;
        let cloud = self.resolve_cloud(&params.cloud)?;
        let identity = self.identity(&params, &input)?;
        let vault_url = cloud.vault_url(&params.keyvault_name);
        let token = self.auth.key_vault_token(&identity, &cloud, deadline).await?;
        let vault = VaultAccess::new(&vault_url, token).map_err(|source| ProviderError::KeyVault {
            object: format!("vault {}", params.keyvault_name),
            source,
        })?;
        let read = ReadContext {
            identity: self.auth.identity_key(&identity, &cloud),
            vault_url: &vault_url,
            vault: &vault,
            deadline,
            freshness,
        };
        let parallel = self.config.max_parallel.max(1);

        // Version lists first (only objects with history), then one fetch per distinct (type, name, version).
        // Futures are collected before streaming them: closures inside the stream trip the compiler's
        // higher-ranked Send check for tonic's handler futures.
        let list_futures: Vec<_> = params
            .objects
            .iter()
            .enumerate()
            .filter(|(_, s)| s.version_history > 1)
            .map(|(i, spec)| self.history(i, spec, &read))
            .collect();
        let histories: Vec<(usize, Vec<String>)> = futures::stream::iter(list_futures)
            .buffered(parallel)
            .try_collect()
            .await?;
        let histories: HashMap<usize, Vec<String>> = histories.into_iter().collect();

        let mut jobs = Vec::new();
        for (i, spec) in params.objects.iter().enumerate() {
            match histories.get(&i) {
                Some(ids) => {
                    for (n, id) in ids.iter().enumerate() {
                        jobs.push(Job {
                            spec: i,
                            file_path: format!("{}/{n}", spec.alias),
                            version: Some(id.clone()),
                            history_index: Some(n),
                        });
                    }
                }
                None => jobs.push(Job {
                    spec: i,
                    file_path: spec.alias.clone(),
                    version: spec.version.clone(),
                    history_index: None,
                }),
            }
        }
        let mut distinct: Vec<(FetchKey, usize)> = Vec::new();
        for job in &jobs {
            let spec = &params.objects[job.spec];
            let key = (spec.object_type, spec.name.clone(), job.version.clone());
            if !distinct.iter().any(|(k, _)| *k == key) {
                distinct.push((key, job.spec));
            }
        }
        let fetch_futures: Vec<_> = distinct
            .into_iter()
            .map(|(key, spec_index)| self.fetch(key, &params.objects[spec_index], &read))
            .collect();
        let fetched: Vec<(FetchKey, Arc<Fetched>)> = futures::stream::iter(fetch_futures)
            .buffered(parallel)
            .try_collect()
            .await?;

        let mut files = Vec::new();
        let mut objects = Vec::new();
        for job in &jobs {
            let spec = &params.objects[job.spec];
            let key = (spec.object_type, spec.name.clone(), job.version.clone());
            let Some((_, got)) = fetched.iter().find(|(k, _)| *k == key) else {
                // Every job's key was fetched above; reaching this is a bug, reported rather than panicking.
                return Err(ProviderError::Cloud(format!(
                    "internal error: {} was not fetched",
                    describe(spec, None)
                )));
            };
            let rendered =
                render::render_object(spec, &job.file_path, &got.object, &self.config.render).map_err(|source| {
                    ProviderError::Render {
                        object: describe(spec, job.version.as_deref()),
                        source,
                    }
                })?;
            let id = match job.history_index {
                Some(n) => format!("{}/{}/{n}", spec.object_type.as_str(), spec.name),
                None => format!("{}/{}", spec.object_type.as_str(), spec.name),
            };
            for _ in &rendered {
                objects.push(ObjectVersion {
                    id: id.clone(),
                    version: got.version.clone(),
                });
            }
            files.extend(rendered);
        }
        Ok(MountContent { files, objects })
    }
}

/// Convenience for wiring: the provider and its clients from one HTTP client.
pub fn build(
    config: ProviderConfig,
    http: reqwest::Client,
    imds_endpoint: &str,
    retry: crate::provider::http::RetryPolicy,
    metrics: Arc<crate::metrics::Metrics>,
) -> Provider {
    let auth = Authenticator::new(http.clone(), imds_endpoint, retry.clone());
    let keyvault = KeyVaultClient::new(http, retry, metrics);
    Provider::new(config, auth, keyvault)
}
