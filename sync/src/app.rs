//! Runtime wiring: the provider (with the agent's HTTP client, retries and Key Vault metrics), the Kubernetes
//! client and Event recorder, `/metrics`, `/healthz` and `/readyz`, and the controller until shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector;
use wisp_agent::library::{HttpError, Metrics, build_provider, openmetrics_router, spawn_http};

use crate::cli::Cli;
use crate::leader::{self, LeaderConfig};
use crate::metrics::SyncMetrics;
use crate::readiness::{Phase, Readiness};
use crate::reconcile::{Context, ReconcileConfig};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("building the HTTP client for Entra and Key Vault failed")]
    Http(#[from] HttpError),
    #[error("cannot reach the Kubernetes API (in-cluster config or KUBECONFIG)")]
    Kube(#[source] kube::Error),
    #[error(transparent)]
    Leader(#[from] crate::leader::LeaderError),
    #[error("lost the leader election Lease; stopping so that the new leader alone writes")]
    LeadershipLost,
    #[error("cannot listen on {addr}; choose another address with --metrics-addr or --health-addr")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

async fn serve_http(addr: SocketAddr, router: Router) -> Result<(), RunError> {
    spawn_http(addr, router)
        .await
        .map_err(|source| RunError::Listen { addr, source })
}

/// Runs the controller until `shutdown` resolves.
pub async fn run(cli: Cli, shutdown: impl Future<Output = ()> + Send + Sync + 'static) -> Result<(), RunError> {
    let metrics = Arc::new(Metrics::new());
    let provider = Arc::new(build_provider(
        cli.provider.config(cli.rotation_poll_interval),
        &cli.provider.imds_endpoint,
        metrics.clone(),
    )?);
    let client = kube::Client::try_default().await.map_err(RunError::Kube)?;
    let metrics = Arc::new(SyncMetrics::new(metrics));
    let readiness = Readiness::default();
    if cli.metrics_addr == cli.health_addr {
        serve_http(
            cli.metrics_addr,
            openmetrics_router({
                let metrics = metrics.clone();
                move || metrics.encode()
            })
            .merge(readiness.router()),
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
        serve_http(cli.health_addr, readiness.router()).await?;
    }
    let reporter = Reporter {
        controller: cli.controller_name.clone(),
        instance: (!cli.pod_name.is_empty()).then(|| cli.pod_name.clone()),
    };
    let (classes, class_writer) = reflector::store();
    let ctx = Arc::new(Context::new(
        client.clone(),
        provider,
        Recorder::new(client, reporter),
        ReconcileConfig {
            interval: cli.rotation_poll_interval,
            controller_name: cli.controller_name.clone(),
            pod_name: cli.pod_name.clone(),
            pod_uid: cli.pod_uid.clone(),
        },
        metrics,
        classes,
    ));
    // The shutdown signal, seen by the wait for leadership and by the controller.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop.send(true);
    });
    let wait_stop = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    };
    let leadership = if cli.leader_elect {
        readiness.set(Phase::StandBy);
        let config = LeaderConfig {
            namespace: cli.leader_election_namespace.clone(),
            name: cli.leader_election_id.clone(),
            identity: identity(&cli),
            lease_duration: cli.leader_election_lease_duration,
        };
        tokio::select! {
            acquired = leader::acquire(ctx.client.clone(), &config) => Some(acquired?),
            () = wait_stop(stopped.clone()) => return Ok(()),
        }
    } else {
        None
    };
    tracing::info!(
        interval = ?cli.rotation_poll_interval,
        controller = %cli.controller_name,
        "watching SecretSyncs"
    );
    let lost = leadership.as_ref().map(|l| l.lost());
    let controller_stop = async move {
        match lost {
            Some(lost) => tokio::select! {
                () = lost => {}
                () = wait_stop(stopped) => {}
            },
            None => wait_stop(stopped).await,
        }
    };
    crate::controller::run(ctx, class_writer, readiness, controller_stop).await;
    match leadership {
        Some(leadership) if !leadership.held() => Err(RunError::LeadershipLost),
        Some(leadership) => {
            leadership.release().await;
            Ok(())
        }
        None => Ok(()),
    }
}

/// This replica's `holderIdentity`: its pod name, else the host name and process id.
fn identity(cli: &Cli) -> String {
    if !cli.pod_name.is_empty() {
        return cli.pod_name.clone();
    }
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "wisp-sync".to_string());
    format!("{host}-{}", std::process::id())
}
