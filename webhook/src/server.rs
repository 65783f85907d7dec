//! Runtime wiring: Kubernetes client, ServiceAccount watch, certificate reload, the three listeners and graceful
//! shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum_server::tls_rustls::RustlsConfig;
use prometheus_client::registry::Registry;

use crate::api::{self, AppState, Readiness};
use crate::cert_rotation::CertRotator;
use crate::cli::{Config, NativeSidecar};
use crate::metrics::Metrics;
use crate::sa_cache::{KubeServiceAccountSource, ServiceAccountIndex, ServiceAccountLookup, run_watcher};
use crate::tls::{CertReloader, CertResolver, TlsError, server_config};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot build a Kubernetes client from KUBECONFIG or the in-cluster service account: {0}")]
    KubeClient(#[source] kube::Error),
    #[error(
        "cannot read the API server version to decide on native sidecars (or pass --native-sidecar=true|false): {0}"
    )]
    ServerVersion(#[source] kube::Error),
    #[error("cannot listen on {addr} ({flag}): {source}")]
    Bind {
        flag: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("{what} server failed: {source}")]
    Serve { what: &'static str, source: std::io::Error },
}

/// Native sidecars (restartPolicy on init containers) exist from Kubernetes 1.32 on, as upstream checks.
pub fn supports_native_sidecar(major: &str, minor: &str) -> bool {
    // Managed clusters report minors like "32+".
    let number = |s: &str| s.trim_end_matches(|c: char| !c.is_ascii_digit()).parse::<u32>().ok();
    match (number(major), number(minor)) {
        (Some(major), Some(minor)) => (major, minor) >= (1, 32),
        _ => false,
    }
}

/// Binds `addr`; the IPv6 wildcard (what ":PORT" means) accepts IPv4 too on a dual-stack host, and falls back to
/// the IPv4 wildcard where IPv6 is disabled, so IPv4-only, IPv6-only and dual-stack clusters all reach the webhook.
pub fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    match std::net::TcpListener::bind(addr) {
        Err(e) if addr.ip() == std::net::IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED) => {
            tracing::debug!(error = %e, "IPv6 wildcard unavailable, listening on IPv4 only");
            std::net::TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], addr.port())))
        }
        other => other,
    }
}

/// Runs until `shutdown` resolves, then lets in-flight admissions finish (up to `config.shutdown_timeout`).
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
    let client = kube::Client::try_default().await.map_err(ServerError::KubeClient)?;
    let mut mutation = config.mutation.clone();
    if config.native_sidecar == NativeSidecar::Auto {
        let version = client.apiserver_version().await.map_err(ServerError::ServerVersion)?;
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

    let listen = |flag: &'static str, addr: SocketAddr| {
        let listener = bind(addr).map_err(|source| ServerError::Bind { flag, addr, source })?;
        listener
            .set_nonblocking(true)
            .map_err(|source| ServerError::Bind { flag, addr, source })?;
        Ok::<_, ServerError>(listener)
    };

    let webhook_listener = listen("--port", config.webhook_addr)?;
    let health_listener =
        tokio::net::TcpListener::from_std(listen("--health-addr", config.health_addr)?).map_err(|source| {
            ServerError::Bind {
                flag: "--health-addr",
                addr: config.health_addr,
                source,
            }
        })?;
    let metrics_listener =
        tokio::net::TcpListener::from_std(listen("--metrics-addr", config.metrics_addr)?).map_err(|source| {
            ServerError::Bind {
                flag: "--metrics-addr",
                addr: config.metrics_addr,
                source,
            }
        })?;

    let state = Arc::new(AppState {
        mutation,
        service_accounts: service_accounts.clone(),
        metrics,
    });
    let handle = axum_server::Handle::new();
    let webhook = axum_server::from_tcp_rustls(webhook_listener, tls)
        .map_err(|source| ServerError::Bind {
            flag: "--port",
            addr: config.webhook_addr,
            source,
        })?
        .handle(handle.clone())
        .serve(api::router(state).into_make_service());
    let mut webhook = tokio::spawn(webhook);

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let health = axum::serve(
        health_listener,
        api::health_router(Readiness {
            certs,
            service_accounts,
        }),
    )
    .with_graceful_shutdown(stopped(stop_rx.clone()));
    let health = tokio::spawn(async move { health.await });
    let metrics_server =
        axum::serve(metrics_listener, api::metrics_router(Arc::new(registry))).with_graceful_shutdown(stopped(stop_rx));
    let metrics_server = tokio::spawn(async move { metrics_server.await });
    tracing::info!(
        webhook = %config.webhook_addr,
        health = %config.health_addr,
        metrics = %config.metrics_addr,
        "listening"
    );

    let finished = tokio::select! {
        () = shutdown => {
            handle.graceful_shutdown(Some(config.shutdown_timeout));
            webhook.await
        }
        // The webhook server only returns on its own when it failed.
        finished = &mut webhook => finished,
    };
    let _ = stop_tx.send(true);
    let result = match finished {
        Ok(Ok(())) => Ok(()),
        Ok(Err(source)) => Err(ServerError::Serve {
            what: "webhook",
            source,
        }),
        Err(e) => Err(ServerError::Serve {
            what: "webhook",
            source: std::io::Error::other(e.to_string()),
        }),
    };
    for (what, task) in [("health", health), ("metrics", metrics_server)] {
        if let Ok(Err(e)) = task.await {
            tracing::warn!(error = %e, "{what} server stopped with an error");
        }
    }
    watcher.abort();
    cert_task.abort();
    tracing::info!("shut down");
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[test]
    fn wildcard_listens_on_ipv4_too() {
        let listener = bind("[::]:0".parse().unwrap()).unwrap();
        let port = listener.local_addr().unwrap().port();
        std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    }

    #[rstest]
    #[case("1", "32", true)]
    #[case("1", "33+", true)]
    #[case("1", "31", false)]
    #[case("1", "31+", false)]
    #[case("2", "0", true)]
    #[case("0", "40", false)]
    #[case("", "", false)]
    fn native_sidecar_from_version(#[case] major: &str, #[case] minor: &str, #[case] expected: bool) {
        assert_eq!(supports_native_sidecar(major, minor), expected);
    }
}
