//! Process-level helpers every binary calls from `main`: the TLS crypto provider, JSON logging, shutdown.

use std::sync::Once;

/// Installs aws-lc-rs as rustls' process-wide provider. Several dependencies enable rustls; with more than one
/// provider compiled in, `ServerConfig::builder()` panics unless one is installed first. Idempotent, so tests
/// call it freely.
pub fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Err only means another provider was installed first, which is equally fine.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    });
}

/// JSON logs on stderr. `level` is an env-filter directive (`info`, `debug`, `wisp_agent=trace`); empty means
/// `RUST_LOG` or `info`.
pub fn init_logging(level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = if level.trim().is_empty() {
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"))
    } else {
        EnvFilter::new(level.trim())
    };
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_current_span(false)
        .try_init();
}

/// Resolves when the process receives SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM; only SIGINT stops the process");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received, shutting down"),
    }
}
