//! Runtime wiring: Kubernetes client, ServiceAccount watch, certificate reload or rotation, the routers, and the
//! listeners until shutdown.

use std::future::Future;
use std::sync::Arc;

use axum_server::tls_rustls::RustlsConfig;
use prometheus_client::registry::Registry;

use crate::api::{self, AppState, Readiness};
use crate::cert_rotation::CertRotator;
use crate::cli::{Config, NativeSidecar};
use crate::metrics::Metrics;
use crate::sa_cache::{KubeServiceAccountSource, ServiceAccountIndex, ServiceAccountLookup, run_watcher};
use crate::serve::{Routers, ServeError, serve};
use crate::tls::{CertReloader, CertResolver, TlsError, server_config};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot build a Kubernetes client from KUBECONFIG or the in-cluster service account: {0}")]
    KubeClient(#[source] kube::Error),
    #[error(
        "cannot read the API server version to decide on native sidecars (or pass --native-sidecar=true|false): {0}"
    )]
    ServerVersion(#[source] kube::Error),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Serve(#[from] ServeError),
}

/// Native sidecars (restartPolicy on init containers) exist from Kubernetes 1.32 on, as upstream checks.
fn supports_native_sidecar(major: &str, minor: &str) -> bool {
    // Managed clusters report minors like "32+".
    let number = |s: &str| s.trim_end_matches(|c: char| !c.is_ascii_digit()).parse::<u32>().ok();
    match (number(major), number(minor)) {
        (Some(major), Some(minor)) => (major, minor) >= (1, 32),
        _ => false,
    }
}

/// Runs until `shutdown` resolves, then lets in-flight admissions finish (up to `config.shutdown_timeout`).
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
    let client = kube::Client::try_default().await.map_err(RunError::KubeClient)?;
    let mut mutation = config.mutation.clone();
    if config.native_sidecar == NativeSidecar::Auto {
        let version = client.apiserver_version().await.map_err(RunError::ServerVersion)?;
        mutation.native_sidecar = supports_native_sidecar(&version.major, &version.minor);
        tracing::info!(
            git_version = %version.git_version,
            native_sidecar = mutation.native_sidecar,
            "API server version read"
        );
    }

    let index = Arc::new(ServiceAccountIndex::new());
    let service_accounts =
        ServiceAccountLookup::new(index.clone(), Arc::new(KubeServiceAccountSource::new(client.clone())));
    let watcher = tokio::spawn(run_watcher(client.clone(), index));

    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);

    // Either source feeds the same resolver; /readyz waits until it holds a certificate.
    let certs = Arc::new(CertResolver::default());
    let cert_task = match &config.cert_rotation {
        Some(rotation) => {
            tracing::info!(
                secret = %format!("{}/{}", rotation.secret_namespace, rotation.secret_name),
                mutating_webhook_configuration = %rotation.webhook_config_name,
                dns_names = ?rotation.bundle.dns_names,
                "managing the serving certificate (--cert-rotation)"
            );
            tokio::spawn(CertRotator::new(client, rotation.clone(), certs.clone()).run())
        }
        None => {
            let reloader = CertReloader::new(&config.cert_dir, certs.clone());
            if let Err(e) = reloader.reload() {
                tracing::warn!(error = %e, "no serving certificate yet; handshakes fail until one is loaded");
            }
            tokio::spawn(reloader.run(config.cert_reload_interval))
        }
    };
    let tls = RustlsConfig::from_config(server_config(certs.clone(), config.tls_min_version)?);

    let state = Arc::new(AppState {
        mutation,
        service_accounts: service_accounts.clone(),
        metrics,
    });
    let routers = Routers {
        webhook: api::router(state),
        health: api::health_router(Readiness {
            certs,
            service_accounts,
        }),
        metrics: api::metrics_router(Arc::new(registry)),
    };
    let result = serve(&config, tls, routers, shutdown).await;
    watcher.abort();
    cert_task.abort();
    tracing::info!("shut down");
    result.map_err(RunError::Serve)
}

#[cfg(test)]
mod tests;
