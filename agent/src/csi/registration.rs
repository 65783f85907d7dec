//! Kubelet plugin registration (`pluginregistration.v1`), served by the agent itself so the DaemonSet needs no
//! node-driver-registrar sidecar. kubelet watches its `plugins_registry` directory, calls `GetInfo` on each new
//! socket there, registers the CSI driver at the endpoint it is told, and reports the outcome with
//! `NotifyRegistrationStatus`. Removing the socket is how a plugin deregisters, so it is removed at shutdown.

use std::future::Future;
use std::path::Path;

use tokio::net::UnixListener;
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use crate::grpc_socket::{self, ServeError, SocketError};

use crate::proto::registration::registration_server::{Registration, RegistrationServer};
use crate::proto::registration::{InfoRequest, PluginInfo, RegistrationStatus, RegistrationStatusResponse};

/// The plugin type kubelet hands to its CSI plugin handler.
pub const CSI_PLUGIN_TYPE: &str = "CSIPlugin";
/// CSI spec versions served on the endpoint; kubelet refuses a driver that lists none it knows.
pub const SUPPORTED_VERSIONS: [&str; 1] = ["1.0.0"];
/// What kubelet last said about the registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistrationState {
    /// kubelet has not reported yet (it may not have found the socket yet).
    Pending,
    Registered,
    /// kubelet refused the registration, with its reason.
    Failed(String),
}

/// A read handle on the registration state, for `/healthz`.
#[derive(Debug, Clone)]
pub struct RegistrationHealth {
    state: watch::Receiver<RegistrationState>,
}

impl RegistrationHealth {
    pub fn state(&self) -> RegistrationState {
        self.state.borrow().clone()
    }
}

/// The `Registration` service of one CSI driver.
#[derive(Debug)]
pub struct RegistrationService {
    driver_name: String,
    endpoint: String,
    state: watch::Sender<RegistrationState>,
}

impl RegistrationService {
    /// `csi_endpoint` is the CSI socket's path as kubelet sees it on the node (e.g.
    /// `/var/lib/kubelet/plugins/csi-secrets-store/csi.sock`), not as the agent's container sees it; a `unix://`
    /// prefix is dropped because kubelet wants a plain path.
    pub fn new(driver_name: impl Into<String>, csi_endpoint: &str) -> (Self, RegistrationHealth) {
        let (state, receiver) = watch::channel(RegistrationState::Pending);
        let endpoint = csi_endpoint.strip_prefix("unix://").unwrap_or(csi_endpoint);
        (
            RegistrationService {
                driver_name: driver_name.into(),
                endpoint: endpoint.to_string(),
                state,
            },
            RegistrationHealth { state: receiver },
        )
    }

    pub fn into_server(self) -> RegistrationServer<Self> {
        RegistrationServer::new(self)
    }
}

#[tonic::async_trait]
impl Registration for RegistrationService {
    async fn get_info(&self, _request: Request<InfoRequest>) -> Result<Response<PluginInfo>, Status> {
        tracing::info!(driver = %self.driver_name, endpoint = %self.endpoint, "kubelet asked for the plugin info");
        Ok(Response::new(PluginInfo {
            r#type: CSI_PLUGIN_TYPE.to_string(),
            name: self.driver_name.clone(),
            endpoint: self.endpoint.clone(),
            supported_versions: SUPPORTED_VERSIONS.iter().map(|v| v.to_string()).collect(),
        }))
    }

    async fn notify_registration_status(
        &self,
        request: Request<RegistrationStatus>,
    ) -> Result<Response<RegistrationStatusResponse>, Status> {
        let status = request.into_inner();
        let state = if status.plugin_registered {
            tracing::info!(driver = %self.driver_name, "registered with kubelet");
            RegistrationState::Registered
        } else {
            tracing::error!(
                driver = %self.driver_name,
                error = %status.error,
                "kubelet refused to register the CSI driver; /healthz now fails so the agent is restarted"
            );
            RegistrationState::Failed(status.error)
        };
        self.state.send_replace(state);
        Ok(Response::new(RegistrationStatusResponse {}))
    }
}

/// Serves `service` on `listener`, bound at `socket_path`, until `shutdown` resolves, then removes the socket so
/// kubelet deregisters the driver.
pub async fn serve_registration(
    listener: UnixListener,
    socket_path: &Path,
    service: RegistrationService,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let served = tonic::transport::Server::builder()
        .add_service(service.into_server())
        .serve_with_incoming_shutdown(grpc_socket::incoming(listener), shutdown)
        .await
        .map_err(|source| ServeError::Serve {
            path: socket_path.to_path_buf(),
            source,
        });
    let removed = match std::fs::remove_file(socket_path) {
        Err(source) if source.kind() != std::io::ErrorKind::NotFound => Err(ServeError::Socket(SocketError::Remove {
            path: socket_path.to_path_buf(),
            source,
        })),
        _ => Ok(()),
    };
    served.and(removed)
}

#[cfg(test)]
mod tests;
