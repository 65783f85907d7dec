//! Leader election over a `coordination.k8s.io/v1` Lease, with kube-lease-manager: of the replicas, only the
//! Lease's holder runs the controller; a stand-by takes the Lease once the holder stops renewing it (at most one
//! lease duration after a crash; at once after a graceful stop, which releases it). A leader that loses the Lease
//! stops, as controller-runtime's managers do, so that two replicas never write at the same time.

use std::time::Duration;

use kube_lease_manager::{LeaseManagerBuilder, LeaseManagerError, LeaseParams};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How long a graceful stop waits for the Lease's release.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct LeaderConfig {
    /// The Lease's namespace and name.
    pub namespace: String,
    pub name: String,
    /// This replica's identity in `holderIdentity`.
    pub identity: String,
    /// How long a Lease not renewed stays held.
    pub lease_duration: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error(
        "leader election on Lease {namespace}/{name} failed; wisp-sync needs get, create and patch on \
         coordination.k8s.io leases in that namespace"
    )]
    Lease {
        namespace: String,
        name: String,
        #[source]
        source: LeaseManagerError,
    },
}

/// The Lease held by this replica.
pub struct Leadership {
    state: watch::Receiver<bool>,
    task: JoinHandle<Result<kube_lease_manager::LeaseManager, LeaseManagerError>>,
}

impl std::fmt::Debug for Leadership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leadership")
            .field("held", &*self.state.borrow())
            .finish()
    }
}

/// Seconds of the lease and of the grace before its end in which the holder renews it (a third, at least one).
fn lease_seconds(duration: Duration) -> (u64, u64) {
    let seconds = duration.as_secs().max(2);
    (seconds, (seconds / 3).max(1))
}

/// Waits until this replica holds the Lease.
pub async fn acquire(client: kube::Client, config: &LeaderConfig) -> Result<Leadership, LeaderError> {
    let error = |source| LeaderError::Lease {
        namespace: config.namespace.clone(),
        name: config.name.clone(),
        source,
    };
    let (duration, grace) = lease_seconds(config.lease_duration);
    let manager = LeaseManagerBuilder::new(client, &config.name)
        .with_namespace(&config.namespace)
        .with_parameters(LeaseParams::new(&config.identity, duration, grace))
        .build()
        .await
        .map_err(error)?;
    let (mut state, task) = manager.watch().await;
    tracing::info!(lease = %format!("{}/{}", config.namespace, config.name), identity = %config.identity, "waiting for leadership");
    while !*state.borrow_and_update() {
        if state.changed().await.is_err() {
            let source = match task.await {
                Ok(Err(e)) => e,
                Ok(Ok(_)) | Err(_) => LeaseManagerError::InconsistentState("the lease watcher stopped".into()),
            };
            return Err(error(source));
        }
    }
    tracing::info!(identity = %config.identity, "leading");
    Ok(Leadership { state, task })
}

impl Leadership {
    /// Resolves when the Lease is lost (or its watcher stopped).
    pub fn lost(&self) -> impl std::future::Future<Output = ()> + Send + Sync + 'static {
        let mut state = self.state.clone();
        async move {
            while *state.borrow_and_update() {
                if state.changed().await.is_err() {
                    return;
                }
            }
        }
    }

    pub fn held(&self) -> bool {
        *self.state.borrow()
    }

    /// Releases the Lease (the watcher does it when its last receiver is gone), waiting a few seconds at most.
    pub async fn release(self) {
        let Leadership { state, task } = self;
        drop(state);
        match tokio::time::timeout(RELEASE_TIMEOUT, task).await {
            Ok(Ok(Ok(_))) => tracing::info!("lease released"),
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "lease not released"),
            Ok(Err(e)) => tracing::warn!(error = %e, "lease watcher task failed"),
            Err(_) => tracing::warn!("lease not released in time; the stand-by takes it when it expires"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grace_is_a_third_of_the_lease() {
        assert_eq!(lease_seconds(Duration::from_secs(15)), (15, 5));
        assert_eq!(lease_seconds(Duration::from_secs(2)), (2, 1));
        assert_eq!(lease_seconds(Duration::from_millis(500)), (2, 1));
    }
}
