//! The three listeners (the admission endpoint over TLS, health and metrics over plain HTTP): binding them,
//! serving until shutdown, and letting in-flight admissions finish.

use std::future::Future;
use std::net::SocketAddr;

use axum::Router;
use axum_server::tls_rustls::RustlsConfig;

use crate::cli::Config;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr} ({flag}): {source}")]
    Bind {
        flag: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{what} server failed: {source}")]
    Serve { what: &'static str, source: std::io::Error },
}

/// What each listener serves.
pub(crate) struct Routers {
    pub(crate) webhook: Router,
    pub(crate) health: Router,
    pub(crate) metrics: Router,
}

/// Binds `addr`; the IPv6 wildcard (what ":PORT" means) accepts IPv4 too on a dual-stack host, and falls back to
/// the IPv4 wildcard where IPv6 is disabled, so IPv4-only, IPv6-only and dual-stack clusters all reach the webhook.
pub(crate) fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    match std::net::TcpListener::bind(addr) {
        Err(e) if addr.ip() == std::net::IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED) => {
            tracing::debug!(error = %e, "IPv6 wildcard unavailable, listening on IPv4 only");
            std::net::TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], addr.port())))
        }
        other => other,
    }
}

/// Serves `routers` on the addresses in `config` until `shutdown` resolves, then lets in-flight admissions finish
/// (up to `config.shutdown_timeout`) and stops health and metrics.
pub(crate) async fn serve(
    config: &Config,
    tls: RustlsConfig,
    routers: Routers,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let listen = |flag: &'static str, addr: SocketAddr| {
        let listener = bind(addr).map_err(|source| ServeError::Bind { flag, addr, source })?;
        listener
            .set_nonblocking(true)
            .map_err(|source| ServeError::Bind { flag, addr, source })?;
        Ok::<_, ServeError>(listener)
    };
    let listen_plain = |flag: &'static str, addr: SocketAddr| {
        tokio::net::TcpListener::from_std(listen(flag, addr)?).map_err(|source| ServeError::Bind { flag, addr, source })
    };

    let webhook_listener = listen("--port", config.webhook_addr)?;
    let health_listener = listen_plain("--health-addr", config.health_addr)?;
    let metrics_listener = listen_plain("--metrics-addr", config.metrics_addr)?;

    let handle = axum_server::Handle::new();
    let webhook = axum_server::from_tcp_rustls(webhook_listener, tls)
        .map_err(|source| ServeError::Bind {
            flag: "--port",
            addr: config.webhook_addr,
            source,
        })?
        .handle(handle.clone())
        .serve(routers.webhook.into_make_service());
    let mut webhook = tokio::spawn(webhook);

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let health = axum::serve(health_listener, routers.health).with_graceful_shutdown(stopped(stop_rx.clone()));
    let health = tokio::spawn(async move { health.await });
    let metrics_server = axum::serve(metrics_listener, routers.metrics).with_graceful_shutdown(stopped(stop_rx));
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
        Ok(Err(source)) => Err(ServeError::Serve {
            what: "webhook",
            source,
        }),
        Err(e) => Err(ServeError::Serve {
            what: "webhook",
            source: std::io::Error::other(e.to_string()),
        }),
    };
    for (what, task) in [("health", health), ("metrics", metrics_server)] {
        if let Ok(Err(e)) = task.await {
            tracing::warn!(error = %e, "{what} server stopped with an error");
        }
    }
    result
}

#[cfg(test)]
mod tests;
