//! The in-process Azure provider as a library for a second program: `wisp-sync` (the SecretSync controller) builds
//! a [`Provider`] with [`build_provider`], asks it for a mount's [`MountContent`] with the same parameters,
//! identities, token cache and round cache as a mount, and turns the rendered files into a Secret's `data` with
//! [`secret_data`] (the `secretObjects` rules: file lookup by path, `kubernetes.io/tls` conversions).
//!
//! Only re-exports and one constructor: the provider stays where it is (`provider/`), and nothing here is used by
//! the agent itself.

use std::collections::BTreeMap;
use std::sync::Arc;

use zeroize::Zeroizing;

pub use crate::cluster::secret_sync::{SecretApply, SecretObjectProblem};
pub use crate::content::RenderedFile;
pub use crate::error_text::error_chain;
pub use crate::http_endpoint::{openmetrics_router, spawn_http};
pub use crate::metrics::Metrics;
pub use crate::provider::http::HttpError;
pub use crate::provider::input::MountInput;
pub use crate::provider::params::{WorkloadIdentityDefaults, apply_workload_identity_defaults};
pub use crate::provider::render::RenderOptions;
pub use crate::provider::{Freshness, MountContent, Provider, ProviderConfig, ProviderError};

use crate::cluster::secret_sync::SecretObjectData;
use crate::provider::http::{RetryPolicy, build_client};
use crate::volume::mounted_files::MountedFiles;

/// A provider with the agent's HTTP client (system roots plus `SSL_CERT_FILE`) and retry policy; Key Vault
/// request metrics go to `metrics`.
pub fn build_provider(
    config: ProviderConfig,
    imds_endpoint: &str,
    metrics: Arc<Metrics>,
) -> Result<Provider, HttpError> {
    Ok(crate::provider::build(
        config,
        build_client()?,
        imds_endpoint,
        RetryPolicy::default(),
        metrics,
    ))
}

/// A Secret's `data` (raw bytes by key) from rendered files: `entries` are `(file path, key)` pairs, converted for
/// `kubernetes.io/tls` as `secretObjects` sync does. A key listed twice takes the later entry's value.
pub fn secret_data(
    entries: &[(String, String)],
    secret_type: &str,
    files: &[RenderedFile],
) -> Result<BTreeMap<String, Zeroizing<Vec<u8>>>, SecretObjectProblem> {
    let data: Vec<SecretObjectData> = entries
        .iter()
        .map(|(object_name, key)| SecretObjectData {
            object_name: object_name.clone(),
            key: key.clone(),
        })
        .collect();
    let files = MountedFiles::from_files(files.iter().map(|f| (f.path.clone(), f.contents.to_vec())));
    crate::cluster::secret_sync::secret_data(&data, secret_type, &files)
}
