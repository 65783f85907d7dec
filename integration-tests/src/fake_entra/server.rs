//! What the fake Azure services share: serving a router over HTTPS (rustls) or plain HTTP on an ephemeral
//! loopback port, per-path request counters, and injected faults (latency, error statuses, dropped
//! connections).

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum_server::Handle;
use axum_server::accept::NoDelayAcceptor;
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};
use http::{HeaderMap, StatusCode};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("binding 127.0.0.1:0 failed: {0}")]
    Bind(std::io::Error),
    #[error("loading the server certificate and key (PEM) failed: {0}; pass a leaf-first chain and a PKCS#8 key")]
    Tls(std::io::Error),
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

/// A server running on a tokio task; shut down when dropped.
#[derive(Debug)]
pub struct RunningServer {
    addr: SocketAddr,
    handle: Handle<SocketAddr>,
}

impl RunningServer {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        self.handle.shutdown();
    }
}

fn bind_loopback() -> Result<TcpListener, ServerError> {
    TcpListener::bind(("127.0.0.1", 0)).map_err(ServerError::Bind)
}

/// Serves `router` over HTTPS on 127.0.0.1 with an ephemeral port. Must be called inside a tokio runtime.
///
/// Accepted sockets get `TCP_NODELAY`, as real front ends set it: without it, Nagle's algorithm holds the second
/// of two HTTP/2 responses in flight until the client's delayed ACK (40 ms on Linux), so every mount that fetches
/// objects in parallel measured ~45 ms more than its round trips.
pub async fn serve_https(router: Router, tls: &ServerTls) -> Result<RunningServer, ServerError> {
    wisp_shared::runtime::install_crypto_provider();
    let config = RustlsConfig::from_pem(
        tls.cert_chain_pem.clone().into_bytes(),
        tls.key_pem.clone().into_bytes(),
    )
    .await
    .map_err(ServerError::Tls)?;
    let listener = bind_loopback()?;
    let addr = listener.local_addr().map_err(ServerError::Bind)?;
    let handle = Handle::new();
    let acceptor = RustlsAcceptor::new(config).acceptor(NoDelayAcceptor::new());
    let server = axum_server::from_tcp(listener)
        .map_err(ServerError::Bind)?
        .acceptor(acceptor)
        .handle(handle.clone());
    tokio::spawn(async move {
        if let Err(e) = server.serve(router.into_make_service()).await {
            tracing::error!(error = %e, "fake HTTPS server stopped");
        }
    });
    Ok(RunningServer { addr, handle })
}

/// Serves `router` over plain HTTP (the IMDS endpoint is plain HTTP on a link-local address in Azure).
pub async fn serve_http(router: Router) -> Result<RunningServer, ServerError> {
    let listener = bind_loopback()?;
    let addr = listener.local_addr().map_err(ServerError::Bind)?;
    let handle = Handle::new();
    let server = axum_server::from_tcp(listener)
        .map_err(ServerError::Bind)?
        .acceptor(NoDelayAcceptor::new())
        .handle(handle.clone());
    tokio::spawn(async move {
        if let Err(e) = server.serve(router.into_make_service()).await {
            tracing::error!(error = %e, "fake HTTP server stopped");
        }
    });
    Ok(RunningServer { addr, handle })
}

/// What an injected fault does to a matching request.
#[derive(Debug, Clone)]
pub enum FaultAction {
    /// Wait, then handle the request normally.
    Delay(Duration),
    /// Answer with this status, headers and body instead of handling the request.
    Respond {
        status: StatusCode,
        headers: Vec<(String, String)>,
        body: String,
    },
    /// Send response headers, then abort the connection mid-body, as a reset connection looks to a client.
    DropConnection,
}

/// A fault applied to requests whose counter key starts with `key_prefix`, for the next `times` matching
/// requests (`None`: every one).
#[derive(Debug, Clone)]
pub struct Fault {
    pub key_prefix: String,
    pub action: FaultAction,
    pub times: Option<u32>,
}

#[derive(Debug, Default)]
struct TrafficState {
    counts: BTreeMap<String, u64>,
    faults: Vec<Fault>,
}

/// Request counters and fault rules, keyed by a string the service derives from each request (e.g.
/// `kv1/secrets/s1` for Key Vault, `/tenant/oauth2/v2.0/token` for Entra).
#[derive(Debug, Clone, Default)]
pub struct Traffic {
    inner: Arc<Mutex<TrafficState>>,
}

impl Traffic {
    fn lock(&self) -> MutexGuard<'_, TrafficState> {
        // A panicking test thread must not hide the counters from the others.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts the request and returns the fault to apply, if any.
    pub fn record(&self, key: &str) -> Option<FaultAction> {
        let mut state = self.lock();
        *state.counts.entry(key.to_string()).or_default() += 1;
        let index = state.faults.iter().position(|f| key.starts_with(&f.key_prefix))?;
        let fault = &mut state.faults[index];
        let action = fault.action.clone();
        if let Some(times) = fault.times.as_mut() {
            *times = times.saturating_sub(1);
            if *times == 0 {
                state.faults.remove(index);
            }
        }
        Some(action)
    }

    pub fn count(&self, key: &str) -> u64 {
        self.lock().counts.get(key).copied().unwrap_or(0)
    }

    /// Sum over keys starting with `prefix`.
    pub fn count_prefix(&self, prefix: &str) -> u64 {
        self.lock()
            .counts
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v)
            .sum()
    }

    pub fn counts(&self) -> BTreeMap<String, u64> {
        self.lock().counts.clone()
    }

    pub fn reset_counts(&self) {
        self.lock().counts.clear();
    }

    pub fn inject(&self, fault: Fault) {
        if fault.times != Some(0) {
            self.lock().faults.push(fault);
        }
    }

    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }
}

/// Middleware state: how to key a request, and where to count it.
#[derive(Clone)]
pub(crate) struct TrafficLayer {
    pub traffic: Traffic,
    pub key: fn(&HeaderMap, &http::Uri) -> String,
}

pub(crate) async fn traffic_middleware(State(layer): State<TrafficLayer>, request: Request, next: Next) -> Response {
    let key = (layer.key)(request.headers(), request.uri());
    match layer.traffic.record(&key) {
        None => next.run(request).await,
        Some(FaultAction::Delay(d)) => {
            tokio::time::sleep(d).await;
            next.run(request).await
        }
        Some(FaultAction::Respond { status, headers, body }) => {
            let mut response = (status, body).into_response();
            for (name, value) in headers {
                if let (Ok(n), Ok(v)) = (
                    http::HeaderName::try_from(name.as_str()),
                    http::HeaderValue::try_from(value.as_str()),
                ) {
                    response.headers_mut().insert(n, v);
                }
            }
            response
        }
        Some(FaultAction::DropConnection) => {
            let failing = futures::stream::once(async {
                Err::<axum::body::Bytes, _>(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "fault: drop"))
            });
            Response::builder()
                .status(StatusCode::OK)
                .header(http::header::CONTENT_LENGTH, "1024")
                .body(Body::from_stream(failing))
                .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
        }
    }
}

/// The host part of a `Host` header, without the port, lower-cased.
pub(crate) fn host_without_port(headers: &HeaderMap, uri: &http::Uri) -> String {
    let raw = headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| uri.authority().map(|a| a.as_str().to_string()))
        .unwrap_or_default();
    let host = match raw.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h.to_string(),
        _ => raw,
    };
    host.to_ascii_lowercase()
}

/// The `Host` header verbatim (with port), for building absolute URLs the way the client addressed us.
pub(crate) fn host_with_port(headers: &HeaderMap, uri: &http::Uri) -> String {
    headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| uri.authority().map(|a| a.as_str().to_string()))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn respond(code: u16) -> FaultAction {
        FaultAction::Respond {
            status: StatusCode::from_u16(code).unwrap(),
            headers: Vec::new(),
            body: String::new(),
        }
    }

    fn status_of(action: Option<FaultAction>) -> Option<u16> {
        match action {
            Some(FaultAction::Respond { status, .. }) => Some(status.as_u16()),
            Some(FaultAction::Delay(_)) => Some(0),
            Some(FaultAction::DropConnection) => Some(1),
            None => None,
        }
    }

    #[test]
    fn faults_apply_to_matching_keys_the_given_number_of_times() {
        let traffic = Traffic::default();
        traffic.inject(Fault {
            key_prefix: "kv1/secrets/a".into(),
            action: respond(429),
            times: Some(2),
        });
        traffic.inject(Fault {
            key_prefix: "kv1/".into(),
            action: respond(500),
            times: None,
        });
        traffic.inject(Fault {
            key_prefix: "".into(),
            action: respond(503),
            times: Some(0),
        });
        let seen: Vec<Option<u16>> = [
            "kv1/secrets/a",
            "kv2/secrets/a",
            "kv1/secrets/a",
            "kv1/secrets/a",
            "kv1/keys/k",
        ]
        .iter()
        .map(|k| status_of(traffic.record(k)))
        .collect();
        assert_eq!(seen, vec![Some(429), None, Some(429), Some(500), Some(500)]);
        assert_eq!(traffic.count("kv1/secrets/a"), 3);
        assert_eq!(traffic.count_prefix("kv1/"), 4);
        assert_eq!(traffic.count("nothing"), 0);
        traffic.clear_faults();
        assert_eq!(status_of(traffic.record("kv1/keys/k")), None);
        traffic.reset_counts();
        assert!(traffic.counts().is_empty());
    }

    #[test]
    fn host_is_taken_from_the_host_header_without_port() {
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::HOST,
            http::HeaderValue::from_static("KV1.vault.wisp.test:8443"),
        );
        let uri: http::Uri = "/secrets/a".parse().unwrap();
        assert_eq!(host_without_port(&headers, &uri), "kv1.vault.wisp.test");
        assert_eq!(host_with_port(&headers, &uri), "KV1.vault.wisp.test:8443");
        let absolute: http::Uri = "http://169.254.169.254/metadata".parse().unwrap();
        assert_eq!(host_without_port(&HeaderMap::new(), &absolute), "169.254.169.254");
    }
}
