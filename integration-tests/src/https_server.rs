//! The one loopback server of every fake: an axum router served over HTTPS (rustls, aws-lc-rs) or plain HTTP
//! on `127.0.0.1:<ephemeral port>`, stopped when dropped.
//!
//! Accepted sockets get `TCP_NODELAY`, as real front ends (the API server included) set it: without it, Nagle's
//! algorithm holds the second of two HTTP/2 responses in flight until the client's delayed ACK (40 ms on Linux),
//! so every mount that fetches objects in parallel measured ~45 ms more than its round trips.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use axum::Router;
use axum_server::Handle;
use axum_server::accept::NoDelayAcceptor;
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("binding 127.0.0.1:0 failed")]
    Bind(#[source] std::io::Error),
    #[error("loading the server certificate and key (PEM) failed; pass a leaf-first chain and a PKCS#8 key")]
    Tls(#[source] std::io::Error),
}

/// A server certificate chain (leaf first) and its private key, both PEM.
#[derive(Clone)]
pub struct ServerTls {
    pub cert_chain_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl From<wisp_certs::ServingCert> for ServerTls {
    fn from(cert: wisp_certs::ServingCert) -> Self {
        Self {
            cert_chain_pem: cert.cert_pem,
            key_pem: cert.key_pem,
        }
    }
}

/// A router served on a loopback port by a tokio task. Stops accepting connections and closes open ones when
/// dropped.
#[derive(Debug)]
pub struct LoopbackServer {
    addr: SocketAddr,
    handle: Handle<SocketAddr>,
}

impl LoopbackServer {
    /// Serves `router` over HTTPS with `config` (its ALPN decides HTTP/2). Returns once the socket is bound, so
    /// connections made afterwards are accepted. Must run inside a Tokio runtime, which then drives the server.
    pub fn https(router: Router, config: Arc<rustls::ServerConfig>) -> Result<Self, ServerError> {
        Self::serve(router, Some(RustlsConfig::from_config(config)))
    }

    /// As [`https`](Self::https), with a certificate and key in PEM (ALPN `h2` and `http/1.1`).
    pub async fn https_pem(router: Router, tls: &ServerTls) -> Result<Self, ServerError> {
        wisp_shared::runtime::install_crypto_provider();
        let config = RustlsConfig::from_pem(
            tls.cert_chain_pem.clone().into_bytes(),
            tls.key_pem.clone().into_bytes(),
        )
        .await
        .map_err(ServerError::Tls)?;
        Self::serve(router, Some(config))
    }

    /// Serves `router` over plain HTTP (the IMDS endpoint is plain HTTP on a link-local address in Azure).
    pub fn http(router: Router) -> Result<Self, ServerError> {
        Self::serve(router, None)
    }

    fn serve(router: Router, tls: Option<RustlsConfig>) -> Result<Self, ServerError> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).map_err(ServerError::Bind)?;
        // Tokio drives the socket: it must not block.
        listener.set_nonblocking(true).map_err(ServerError::Bind)?;
        let addr = listener.local_addr().map_err(ServerError::Bind)?;
        let handle = Handle::new();
        let server = axum_server::from_tcp(listener)
            .map_err(ServerError::Bind)?
            .handle(handle.clone());
        let service = router.into_make_service();
        match tls {
            Some(config) => {
                let server = server.acceptor(RustlsAcceptor::new(config).acceptor(NoDelayAcceptor::new()));
                tokio::spawn(async move {
                    if let Err(e) = server.serve(service).await {
                        tracing::error!(error = %e, %addr, "fake HTTPS server stopped");
                    }
                });
            }
            None => {
                let server = server.acceptor(NoDelayAcceptor::new());
                tokio::spawn(async move {
                    if let Err(e) = server.serve(service).await {
                        tracing::error!(error = %e, %addr, "fake HTTP server stopped");
                    }
                });
            }
        }
        Ok(Self { addr, handle })
    }

    /// The bound address (`127.0.0.1:port`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `https://127.0.0.1:{port}{path}`; `path` starts with `/` or is empty.
    pub fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }

    /// Stops the server now (also done on drop).
    pub fn shutdown(&self) {
        self.handle.shutdown();
    }
}

impl Drop for LoopbackServer {
    fn drop(&mut self) {
        self.handle.shutdown();
    }
}
