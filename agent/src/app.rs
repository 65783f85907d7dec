//! Runtime wiring: the CSI gRPC server on its unix socket, the `/metrics` and `/healthz` HTTP endpoints, and
//! the Kubernetes-backed SecretProviderClass cache.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use tokio::net::UnixListener;

use crate::cli::Cli;
use crate::cluster::spc::{KubeSpcStore, SharedSpcStore};
use crate::cluster::{KubeCluster, SharedClusterSink};
use crate::csi::controller::ControllerService;
use crate::csi::health::{self, HealthCheck};
use crate::csi::identity::IdentityService;
use crate::csi::node::NodeService;
use crate::csi::registration::{RegistrationService, serve_registration};
use crate::driver::{Driver, DriverInfo, DriverOptions};
use crate::dropin::{self, ProviderService};
use crate::error_text::error_chain;
use crate::grpc_socket::{self, ServeError, SocketError, bind_socket};
use crate::http_endpoint::{openmetrics_router, spawn_http};
use crate::metrics::Metrics;
use crate::proto::csi::controller_server::ControllerServer;
use crate::proto::csi::identity_server::IdentityServer;
use crate::proto::csi::node_server::NodeServer;
use crate::provider::http::{RetryPolicy, build_client};
use crate::provider::{self, Provider};
use crate::volume::mount::Mounter;
use crate::volume::state::StateFile;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Http(#[from] crate::provider::http::HttpError),
    #[error("cannot reach the Kubernetes API (in-cluster config or KUBECONFIG)")]
    Kube(#[source] kube::Error),
    #[error(transparent)]
    Socket(#[from] SocketError),
    #[error("cannot listen on {addr}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Serve(#[from] ServeError),
}

/// Builds the driver from flags, with SecretProviderClasses from the Kubernetes API.
pub(crate) async fn driver_from_cli(
    cli: &Cli,
    metrics: Arc<Metrics>,
    provider: Arc<Provider>,
) -> Result<Arc<Driver>, RunError> {
    let client = kube::Client::try_default().await.map_err(RunError::Kube)?;
    let spcs: SharedSpcStore = Arc::new(KubeSpcStore::start(client.clone()));
    let cluster: SharedClusterSink = Arc::new(KubeCluster::new(client, &cli.nodeid, metrics.clone()));
    let driver = driver_with(cli, metrics, spcs, provider, Some(cluster))?;
    match driver.recover() {
        Ok(0) => {}
        Ok(count) => tracing::info!(volumes = count, "recovered the volumes of the previous run"),
        Err(e) => tracing::warn!(error = %e, "volumes of a previous run not recovered"),
    }
    Ok(driver)
}

/// The in-process provider from flags, shared by the CSI node service and the provider protocol endpoint.
pub(crate) fn provider_from_cli(cli: &Cli, metrics: Arc<Metrics>) -> Result<Arc<Provider>, RunError> {
    let http = build_client()?;
    Ok(Arc::new(provider::build(
        cli.provider.config(cli.rotation_poll_interval),
        http,
        &cli.provider.imds_endpoint,
        RetryPolicy::default(),
        metrics,
    )))
}

/// Builds the driver from flags with the given SecretProviderClass store, provider and cluster sink.
pub(crate) fn driver_with(
    cli: &Cli,
    metrics: Arc<Metrics>,
    spcs: SharedSpcStore,
    provider: Arc<Provider>,
    cluster: Option<SharedClusterSink>,
) -> Result<Arc<Driver>, RunError> {
    let socket = cli.socket_path().map_err(RunError::Config)?;
    let socket = socket.as_path();
    Ok(Arc::new(Driver::new(
        DriverInfo {
            name: cli.drivername.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            node_id: cli.nodeid.clone(),
        },
        spcs,
        provider,
        Mounter::new(cli.mount_mode),
        metrics,
        DriverOptions {
            rotation: cli.enable_secret_rotation.then_some(cli.rotation_poll_interval),
            state: (!cli.state_dir.as_os_str().is_empty())
                .then(|| StateFile::for_agent(&cli.state_dir, &cli.drivername, socket)),
            cluster,
            sync_secrets: cli.sync_secrets,
        },
    )))
}

/// Serves the CSI Identity, Node and Controller (capabilities only) services on `listener` until `shutdown` resolves.
pub(crate) async fn serve_csi(
    listener: UnixListener,
    driver: Arc<Driver>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let path = grpc_socket::bound_path(&listener);
    tonic::transport::Server::builder()
        .add_service(IdentityServer::new(IdentityService::new(driver.clone())))
        .add_service(NodeServer::new(NodeService::new(driver)))
        .add_service(ControllerServer::new(ControllerService))
        .serve_with_incoming_shutdown(grpc_socket::incoming(listener), shutdown)
        .await
        .map_err(|source| ServeError::Serve { path, source })
}

async fn serve_http(addr: SocketAddr, router: Router) -> Result<(), RunError> {
    spawn_http(addr, router)
        .await
        .map_err(|source| RunError::Listen { addr, source })
}

/// Runs the agent until SIGTERM/SIGINT.
pub async fn run(cli: Cli) -> Result<(), RunError> {
    let socket: PathBuf = cli.socket_path().map_err(RunError::Config)?;
    let metrics = Arc::new(Metrics::new());
    let provider = provider_from_cli(&cli, metrics.clone())?;
    if let Some(path) = cli.provider_socket_path().map_err(RunError::Config)? {
        dropin::spawn(&path, ProviderService::new(provider.clone(), metrics.clone()))?;
    }
    let driver = driver_from_cli(&cli, metrics.clone(), provider).await?;
    let listener = bind_socket(&socket)?;
    tracing::info!(
        socket = %socket.display(),
        driver = %cli.drivername,
        node = %cli.nodeid,
        mount_mode = ?cli.mount_mode,
        "CSI endpoint listening"
    );
    let registration = if cli.registration_socket.as_os_str().is_empty() {
        None
    } else {
        let reported = cli.kubelet_registration_path.clone().unwrap_or_else(|| socket.clone());
        let (service, health) = RegistrationService::new(&cli.drivername, &reported.display().to_string());
        let registration_listener = bind_socket(&cli.registration_socket)?;
        let path = cli.registration_socket.clone();
        tracing::info!(socket = %path.display(), endpoint = %reported.display(), "kubelet registration socket listening");
        let task = tokio::spawn(async move {
            serve_registration(
                registration_listener,
                &path,
                service,
                wisp_shared::runtime::shutdown_signal(),
            )
            .await
        });
        Some((task, health))
    };
    let health = health::router(Arc::new(HealthCheck::new(
        socket.clone(),
        registration.as_ref().map(|(_, health)| health.clone()),
        health::PROBE_TIMEOUT,
    )));
    if cli.metrics_addr == cli.health_addr {
        serve_http(
            cli.metrics_addr,
            openmetrics_router({
                let metrics = metrics.clone();
                move || metrics.encode()
            })
            .merge(health),
        )
        .await?;
    } else {
        serve_http(
            cli.metrics_addr,
            openmetrics_router({
                let metrics = metrics.clone();
                move || metrics.encode()
            }),
        )
        .await?;
        serve_http(cli.health_addr, health).await?;
    }

    driver.start_state_writer();
    let result = serve_csi(listener, driver.clone(), wisp_shared::runtime::shutdown_signal()).await;
    driver.flush_state();
    let _ = std::fs::remove_file(&socket);
    if let Some((task, _)) = registration {
        // Its socket is removed on the same signal, which is how kubelet learns the driver is gone.
        match task.await {
            Ok(Err(e)) => tracing::warn!(error = %error_chain(&e), "kubelet registration server"),
            Err(e) => tracing::warn!(error = %e, "kubelet registration task"),
            Ok(Ok(())) => {}
        }
    }
    result.map_err(RunError::from)
}
