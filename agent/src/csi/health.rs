//! `/healthz`, answered as the livenessprobe sidecar of the upstream driver answers it: by calling the CSI
//! `Probe` over the agent's own socket (so a wedged gRPC server or a vanished socket fails the check), and,
//! when the agent registers itself with kubelet, by kubelet's verdict on that registration (a refusal fails
//! the check so that the pod is restarted and registers afresh, as node-driver-registrar's exit would).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::csi::registration::{RegistrationHealth, RegistrationState};
use crate::proto::csi::ProbeRequest;
use crate::proto::csi::identity_client::IdentityClient;

/// livenessprobe's default `--probe-timeout`.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug)]
pub struct HealthCheck {
    csi_socket: PathBuf,
    registration: Option<RegistrationHealth>,
    timeout: Duration,
}

impl HealthCheck {
    pub fn new(csi_socket: PathBuf, registration: Option<RegistrationHealth>, timeout: Duration) -> Self {
        Self {
            csi_socket,
            registration,
            timeout,
        }
    }

    /// `Ok` when healthy, else why not.
    pub async fn check(&self) -> Result<(), String> {
        if let Some(registration) = &self.registration
            && let RegistrationState::Failed(reason) = registration.state()
        {
            return Err(format!("kubelet refused to register the CSI driver: {reason}"));
        }
        match tokio::time::timeout(self.timeout, self.probe()).await {
            Ok(result) => result,
            Err(_) => Err(format!(
                "the CSI Probe on {} did not answer within {:?}",
                self.csi_socket.display(),
                self.timeout
            )),
        }
    }

    async fn probe(&self) -> Result<(), String> {
        let socket = self.csi_socket.clone();
        let failed = |e: &dyn std::fmt::Display| format!("the CSI Probe on {} failed: {e}", socket.display());
        let channel = unix_channel(self.csi_socket.clone()).await.map_err(|e| failed(&e))?;
        let response = IdentityClient::new(channel)
            .probe(ProbeRequest {})
            .await
            .map_err(|e| failed(&e.message()))?;
        match response.into_inner().ready {
            Some(false) => Err(format!("the CSI Probe on {} answered not ready", socket.display())),
            _ => Ok(()),
        }
    }
}

/// A gRPC channel to the unix socket at `path`, as kubelet dials a plugin.
pub async fn unix_channel(path: PathBuf) -> Result<Channel, tonic::transport::Error> {
    // The URI is required by tonic but unused: the connector dials the unix socket.
    Endpoint::from_static("http://[::]:50051")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(path).await?,
                ))
            }
        }))
        .await
}

/// `GET /healthz`: `200 ok`, or `500` with the reason.
pub fn router(check: Arc<HealthCheck>) -> Router {
    Router::new().route(
        "/healthz",
        get(move || {
            let check = check.clone();
            async move {
                match check.check().await {
                    Ok(()) => (StatusCode::OK, "ok".to_string()),
                    Err(reason) => {
                        tracing::warn!(%reason, "health check failed");
                        (StatusCode::INTERNAL_SERVER_ERROR, reason)
                    }
                }
            }
        }),
    )
}
